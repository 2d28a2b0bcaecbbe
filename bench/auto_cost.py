"""Kernel time per connect of gwtrace's programs (bench/README.md, "--hooks auto").

Usage (root, kernel.bpf_stats_enabled=1): python3 bench/auto_cost.py auto|full|sock [GWTRACE]
"""
import json, os, socket, subprocess, sys, time, tempfile, threading
mode = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))
gw = sys.argv[2] if len(sys.argv) > 2 else next(
    (p for p in (os.path.join(here, "..", "target", b, "gwtrace") for b in ("release", "debug")) if os.path.exists(p)),
    "gwtrace")
rec = tempfile.mkdtemp()
p = subprocess.Popen([gw, "record", "--hooks", mode, "--duration", "40", "-o", os.path.join(rec, "rec.jsonl"), "--force"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
# wait ready
t0 = time.time()
while time.time() - t0 < 20:
    line = p.stderr.readline().decode()
    if "recording" in line or "tracing" in line:
        break
time.sleep(1.0)
def progs():
    ids = set()
    for fd in os.listdir("/proc/%d/fdinfo" % p.pid):
        try:
            for l in open("/proc/%d/fdinfo/%s" % (p.pid, fd)):
                if l.startswith("prog_id:"):
                    ids.add(int(l.split()[1]))
        except OSError:
            pass
    allp = json.loads(subprocess.check_output(["bpftool", "-j", "prog", "show"]))
    return {x["name"]: (x.get("run_time_ns", 0), x.get("run_cnt", 0)) for x in allp if x["id"] in ids}
d = tempfile.mkdtemp()
path = os.path.join(d, "s.sock")
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(4096)
tsrv = socket.socket(); tsrv.bind(("127.0.0.1", 0)); tsrv.listen(4096)
port = tsrv.getsockname()[1]
stop = False
def acceptor(s):
    while not stop:
        try:
            c, _ = s.accept(); c.close()
        except OSError:
            return
for s in (srv, tsrv):
    threading.Thread(target=acceptor, args=(s,), daemon=True).start()
N = 20000
for kind in ("unix", "tcp"):
    before = progs()
    st0 = [int(x) for x in open("/proc/%d/stat" % p.pid).read().rsplit(")",1)[1].split()[11:13]]
    t = time.time()
    for _ in range(N):
        if kind == "unix":
            c = socket.socket(socket.AF_UNIX); c.connect(path)
        else:
            c = socket.socket(); c.connect(("127.0.0.1", port))
        c.close()
    el = time.time() - t
    st1 = [int(x) for x in open("/proc/%d/stat" % p.pid).read().rsplit(")",1)[1].split()[11:13]]
    print("   gwtrace cpu ticks during loop: %d" % (sum(st1) - sum(st0)))
    after = progs()
    print("%s mode=%s loop: %d connects in %.2fs (%.0f/s)" % (kind, mode, N, el, N / el))
    for name in sorted(after):
        dt = after[name][0] - before.get(name, (0, 0))[0]
        dc = after[name][1] - before.get(name, (0, 0))[1]
        if dc:
            print("   %-24s runs %7d  %6.0f ns/run  total %.2f ms" % (name, dc, dt / dc, dt / 1e6))
stop = True
p.send_signal(2); p.wait()
