//! Seed 004: a producer makes ten buns (baozi) with random delays; a consumer eats them, and stops when
//! the queue is closed and drained (the seed's `None` sentinel, done the Rust way).
//!
//! Run: `cargo run --example queue_baozi`

use shmwire::{Process, Queue};
use std::time::Duration;

fn main() -> shmwire::Result<()> {
    let q = Queue::<String>::new(0)?;
    let eater = q.clone();
    let consumer = Process::fork(move || {
        while let Ok(baozi) = eater.get() {
            println!("c1 收到包子: {baozi}");
        }
        println!("c1: the queue is closed and empty, done");
    })?;
    let mut seed = std::process::id() as u64;
    for i in 0..10 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(20 + (seed >> 33) % 80));
        q.put(format!("包子 {i}"))?;
    }
    q.close()?;
    consumer.join()?;
    println!("进程间通信-队列-主进程");
    Ok(())
}
