use std::time::Instant;
fn main() {
    let (a, b) = shmwire::Pipe::new().unwrap();
    let n: u64 = std::env::args().nth(1).map_or(5_000_000, |s| s.parse().unwrap());
    let mut buf = [0u8; 8];
    let t = Instant::now();
    for i in 0..n { a.send_bytes(&i.to_le_bytes()).unwrap(); b.recv_bytes_into(&mut buf).unwrap(); }
    println!("send+recv same thread: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
    let t = Instant::now();
    for _ in 0..n { std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst); }
    println!("mfence: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
    let x = std::sync::atomic::AtomicU32::new(0);
    let t = Instant::now();
    for _ in 0..n { x.compare_exchange(0, 1, std::sync::atomic::Ordering::Acquire, std::sync::atomic::Ordering::Relaxed).unwrap(); x.store(0, std::sync::atomic::Ordering::Release); }
    println!("cas+store: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
    let t = Instant::now();
    for _ in 0..n { std::hint::black_box(Instant::now()); }
    println!("Instant::now: {:.1} ns", t.elapsed().as_nanos() as f64 / n as f64);
}
