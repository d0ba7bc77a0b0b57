//! Seed 002: the same small function over 0..100, once with a pool of 4 long-lived workers and
//! once with 100 separate processes; both times are printed.

use shmwire::{Pool, Process};
use std::time::Instant;

/// The seed's `func`: a little arithmetic (its `print` is left out, so as to time the pool).
fn func(n: u64) -> u64 {
    let mut n = n;
    for i in 0..5 {
        n += i;
    }
    n
}

fn main() -> shmwire::Result<()> {
    let start = Instant::now();
    let pool = Pool::new(4)?;
    let results = pool.map(func, 0..100u64)?;
    let pool_time = start.elapsed();
    assert_eq!(results, (0..100).map(func).collect::<Vec<_>>());
    pool.close();
    pool.join()?;

    let start = Instant::now();
    let children = (0..100u64)
        .map(|i| {
            Process::fork(move || {
                func(i);
            })
        })
        .collect::<shmwire::Result<Vec<_>>>()?;
    for c in &children {
        assert!(c.join()?.success());
    }
    let process_time = start.elapsed();

    println!("pool time: {:.6} s", pool_time.as_secs_f64());
    println!("processes time: {:.6} s", process_time.as_secs_f64());
    Ok(())
}
