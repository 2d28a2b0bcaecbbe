//! Where attach time goes: offsets (tracefs + BTF) vs load + attach.
fn main() {
    let t = std::time::Instant::now();
    let o = gwtrace::capture::offsets(gwtrace::capture::Hooks::Full);
    println!("offsets: {:?} ok={}", t.elapsed(), o.is_ok());
    let t = std::time::Instant::now();
    let c = gwtrace::capture::Capture::start(gwtrace::capture::Hooks::Full);
    println!(
        "start (offsets+load+attach): {:?} ok={}",
        t.elapsed(),
        c.is_ok()
    );
}
