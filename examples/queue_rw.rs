//! Seed 001: a writer process puts A, B, C into a queue; a reader process gets and prints them.
//!
//! Run: `cargo run --example queue_rw`

use shmwire::{Process, Queue};
use std::time::Duration;

fn main() -> shmwire::Result<()> {
    let q = Queue::<String>::new(0)?;
    let qw = q.clone();
    let pw = Process::fork(move || {
        println!("Process to write: {}", std::process::id());
        for value in ["A", "B", "C"] {
            println!("Put {value} to queue...");
            qw.put(value.to_string()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    })?;
    let qr = q.clone();
    let pr = Process::fork(move || {
        println!("Process to read: {}", std::process::id());
        // The queue is closed once the writer is done, so this loop ends (Python's example had to
        // terminate its reader instead).
        while let Ok(value) = qr.get() {
            println!("Get {value} from queue.");
        }
    })?;
    pw.join()?;
    q.close()?;
    pr.join()?;
    Ok(())
}
