//! A tokio task awaits a `Connection` through `tokio::io::unix::AsyncFd`, with no thread blocked in
//! `recv`: `prepare_poll` says whether a message is ready now; if not, the task awaits the
//! connection's descriptor (readable when a message may have arrived, and at the latest one tick
//! later, so a peer that died is noticed too), then asks again.
//!
//! Run: `cargo run --example tokio_wait`.

use serde::de::DeserializeOwned;
use shmwire::{Connection, Error, Pipe, Process};
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Receives the next message, awaiting it without blocking the runtime's thread.
async fn recv<T: DeserializeOwned>(conn: &mut AsyncFd<Connection>) -> shmwire::Result<T> {
    loop {
        if conn.get_ref().prepare_poll()? {
            match conn.get_ref().try_recv::<T>() {
                Err(Error::Empty) => continue, // part of a large message so far: wait for the rest
                done => return done,           // a message, Eof, PeerDied, ...
            }
        }
        conn.readable_mut().await?.clear_ready();
    }
}

fn main() -> shmwire::Result<()> {
    let (parent, child) = Pipe::new()?;
    // Fork before the runtime starts any thread.
    let p = Process::fork(move || {
        for i in 1..=5u32 {
            std::thread::sleep(Duration::from_millis(20));
            child.send(&i).unwrap();
        }
    })?; // the child's end closes when it exits
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let sum = rt.block_on(async move {
        let task = tokio::spawn(async move {
            // SAFETY: a `Connection`'s descriptor stays open, and the same, as long as it lives.
            let mut conn = unsafe { AsyncFd::register_with_interest(parent, Interest::READABLE) }
                .map_err(std::io::Error::from)?;
            let mut sum = 0;
            loop {
                match recv::<u32>(&mut conn).await {
                    Ok(n) => {
                        println!("task: got {n}");
                        sum += n;
                    }
                    Err(Error::Eof) => return Ok::<_, Error>(sum),
                    Err(e) => return Err(e),
                }
            }
        });
        task.await.expect("the task panicked")
    })?;
    assert_eq!(sum, 15);
    assert!(p.join()?.success());
    println!("sum {sum}; the child exited and the task saw the end of the stream");
    Ok(())
}
