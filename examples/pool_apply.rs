//! Seed 002's synchronous and asynchronous pool: `apply` in a loop prints the squares 0..81 one by
//! one, then `apply_async` starts them all and collects the results.

use std::time::Duration;

fn square(i: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(10));
    i * i
}

fn main() -> shmwire::Result<()> {
    let pool = shmwire::Pool::new(4)?;
    // Synchronous: each call waits for its worker.
    for i in 0..10u64 {
        let res = pool.apply(square, i)?;
        println!("{res}");
    }
    // Asynchronous: all ten run at once on the four workers; `get` collects them in order.
    let results: Vec<_> = (0..10u64)
        .map(|i| pool.apply_async(square, i))
        .collect::<shmwire::Result<_>>()?;
    for r in &results {
        println!("{}", r.get()?);
    }
    pool.close();
    pool.join()?;
    Ok(())
}
