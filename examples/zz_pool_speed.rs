use std::time::Instant;
fn sq(x: u64) -> u64 { x.wrapping_mul(x) }
fn main() -> shmwire::Result<()> {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let procs: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let pool = shmwire::Pool::new(procs)?;
    pool.map(sq, 0..1000u64)?;
    for _ in 0..std::env::var("REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(3) {
        let t = Instant::now();
        let r = pool.map(sq, 0..n)?;
        let s = t.elapsed().as_secs_f64();
        assert_eq!(r.len() as u64, n);
        println!("map default {n}: {:.3}s = {:.2} M/s", s, n as f64 / s / 1e6);
    }
    if std::env::var("ONLY_MAP").is_ok() { return Ok(()); }
    let m = n / 10;
    let t = Instant::now();
    let r = pool.map_chunked(sq, 0..m, 1)?;
    let s = t.elapsed().as_secs_f64();
    assert_eq!(r.len() as u64, m);
    println!("map cs1 {m}: {:.3}s = {:.0} k/s", s, m as f64 / s / 1e3);
    let t = Instant::now();
    let rs: Vec<_> = (0..m).map(|i| pool.apply_async(sq, i).unwrap()).collect();
    for r in rs { r.get()?; }
    let s = t.elapsed().as_secs_f64();
    println!("apply_async {m}: {:.3}s = {:.0} k/s", s, m as f64 / s / 1e3);
    let t = Instant::now();
    for i in 0..10000u64 { pool.apply(sq, i)?; }
    let s = t.elapsed().as_secs_f64();
    println!("apply round trip: {:.1} us", s / 10000.0 * 1e6);
    Ok(())
}
