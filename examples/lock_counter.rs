//! Seed 002's classic: 100 processes each take a lock and decrement a shared count of 100; the parent
//! prints 0.
//!
//! Run: `cargo run --example lock_counter`

use shmwire::{Lock, Process, Value};

fn main() -> shmwire::Result<()> {
    let lock = Lock::new()?;
    let count = Value::new(100i64)?;
    let mut kids = Vec::new();
    for _ in 0..100 {
        let (lock, count) = (lock.clone(), count.clone());
        kids.push(Process::fork(move || {
            let _guard = lock.acquire().unwrap();
            let v = count.get().unwrap();
            count.set(v - 1).unwrap();
        })?);
    }
    for k in kids {
        k.join()?;
    }
    println!("{{'count': {}}}", count.get()?);
    Ok(())
}
