//! Two separately started programs meet by name: a server binds a `Listener`, a client connects with
//! `Client::connect`, and they exchange messages over shared memory.
//!
//! ```sh
//! cargo run --example pipe_rendezvous                 # a server that starts its client itself
//! cargo run --example pipe_rendezvous -- --server     # in one terminal ...
//! cargo run --example pipe_rendezvous -- --client     # ... and in another
//! ```

use shmwire::{Client, Listener};
use std::time::Duration;

const NAME: &str = "rendezvous-demo";

fn server(start_client: bool) -> shmwire::Result<()> {
    let listener = Listener::bind(NAME)?;
    println!("server: listening as {NAME:?} (pid {})", std::process::id());
    let mut child = if start_client {
        let exe = std::env::current_exe()?;
        Some(std::process::Command::new(exe).arg("--client").spawn()?)
    } else {
        None
    };
    let conn = listener.accept()?;
    let hello: String = conn.recv()?;
    println!("server: got {hello:?}");
    for i in 1..=3u32 {
        conn.send(&i)?;
        let squared: u32 = conn.recv()?;
        println!("server: {i} squared is {squared}");
    }
    drop(conn); // the client's loop ends
    if let Some(c) = child.as_mut() {
        c.wait()?;
    }
    Ok(())
}

fn client() -> shmwire::Result<()> {
    let conn = Client::connect_timeout(NAME, Duration::from_secs(30))?;
    conn.send(&format!(
        "hello from the client (pid {})",
        std::process::id()
    ))?;
    while let Ok(n) = conn.recv::<u32>() {
        conn.send(&(n * n))?;
    }
    println!("client: the server closed, bye");
    Ok(())
}

fn main() -> shmwire::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("--client") => client(),
        Some("--server") => server(false),
        _ => server(true),
    }
}
