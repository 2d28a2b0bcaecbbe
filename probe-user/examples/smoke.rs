fn main() {
    let mut c = gwtrace::capture::Capture::start(gwtrace::capture::Hooks::Full).unwrap();
    let _ = std::process::Command::new("sh").arg("-c").arg("/nonexistent/venv/bin/gunicorn; true; python3 -c \"import socket;s=socket.socket(socket.AF_UNIX);s.connect('/nonexistent/x.sock')\"; python3 -c \"import socket;s=socket.socket();s.connect(('127.0.0.1',1))\"; python3 -c \"import socket;s=socket.socket();s.setblocking(False);s.connect_ex(('127.0.0.1',2));import time;time.sleep(0.1)\"; sh -c 'exit 3'; sh -c 'kill -ABRT $$'").status();
    std::thread::sleep(std::time::Duration::from_millis(200));
    c.drain(|e| println!("{}", serde_json::to_string(&e).unwrap()));
    println!("{:?}", c.counters().counters);
}
