//! A parent with 8 children, each sending at random times; the parent serves whichever is ready with
//! `shmwire::wait`, as `multiprocessing.connection.wait` does, without a thread per child.
//!
//! Run: `cargo run --example wait_many`

use shmwire::{Connection, Pipe, Process, Waitable, wait};
use std::time::Duration;

fn main() -> shmwire::Result<()> {
    let mut conns: Vec<Connection> = Vec::new();
    let mut kids: Vec<Process> = Vec::new();
    for k in 0..8u64 {
        let (mine, theirs) = Pipe::new()?;
        conns.push(mine);
        kids.push(Process::fork(move || {
            let mut x = k * 7919 + 1;
            for n in 0..3 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                std::thread::sleep(Duration::from_millis(x % 200));
                theirs.send(&format!("child {k} message {n}")).unwrap();
            }
        })?);
    }
    let mut open: Vec<bool> = vec![true; conns.len()];
    while open.iter().any(|&o| o) {
        let live: Vec<usize> = (0..conns.len()).filter(|&i| open[i]).collect();
        let objs: Vec<&dyn Waitable> = live.iter().map(|&i| &conns[i] as &dyn Waitable).collect();
        for r in wait(&objs, None)? {
            let i = live[r];
            match conns[i].recv::<String>() {
                Ok(msg) => println!("{msg}"),
                Err(_) => {
                    println!("child {i} is done");
                    open[i] = false;
                }
            }
        }
    }
    for k in kids {
        k.join()?;
    }
    Ok(())
}
