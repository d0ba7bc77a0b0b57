//! Seed 002's callback: the task runs in a worker and prints that worker's pid; the callback runs
//! in the parent (on the pool's result thread) and prints the parent's pid and the result, 100.

use std::sync::mpsc;

fn func1(n: u64) -> u64 {
    println!("func1>> {}", std::process::id());
    n * n
}

fn main() -> shmwire::Result<()> {
    println!("main process: {}", std::process::id());
    let pool = shmwire::Pool::new(5)?;
    let (done, finished) = mpsc::channel();
    let r = pool.apply_async_with(
        func1,
        10,
        move |nn: &u64| {
            println!("func2>> {}", std::process::id());
            println!("{nn}");
            let _ = done.send(());
        },
        |e| eprintln!("func1 failed: {e}"),
    )?;
    pool.close();
    pool.join()?;
    finished.recv().expect("the callback ran");
    assert_eq!(r.get()?, 100);
    Ok(())
}
