//! An echo server on the socket transports, for any Python 3 user to try:
//!
//! ```text
//! cargo run --example echo_server -- tcp://127.0.0.1:5000 secret
//! cargo run --example echo_server --features pickle -- tcp://127.0.0.1:5000 secret --objects
//! ```
//!
//! It listens at ADDRESS (`tcp://HOST:PORT`, `unix:/path`) with the authkey AUTHKEY, prints
//! `listening on ADDRESS` once it can accept, and echoes every message of every client back as it
//! came, serving clients one after another until it is killed. With `--objects` (feature `pickle`)
//! it decodes each message as a pickled Python object and answers the 2-tuple
//! `(obj, type_name)`, `type_name` being the Python type name of what it decoded, so a Python
//! client sees that Rust understood it:
//!
//! ```text
//! >>> from multiprocessing.connection import Client
//! >>> c = Client(("127.0.0.1", 5000), authkey=b"secret")
//! >>> c.send((1, [2.5, None], {"k": b"v"})); c.recv()
//! ((1, [2.5, None], {'k': b'v'}), 'tuple')
//! ```

use shmwire::{Connection, Error, Listener};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (address, authkey, objects) = match args.as_slice() {
        [a, k] => (a, k, false),
        [a, k, flag] if flag == "--objects" => (a, k, true),
        _ => {
            eprintln!("usage: echo_server ADDRESS AUTHKEY [--objects]");
            eprintln!(
                "  ADDRESS: tcp://HOST:PORT or unix:/path; --objects needs --features pickle"
            );
            std::process::exit(2);
        }
    };
    if objects && !cfg!(feature = "pickle") {
        eprintln!(
            "--objects needs the pickle feature: cargo run --example echo_server --features pickle -- ..."
        );
        std::process::exit(2);
    }
    let listener = match Listener::bind_with_authkey(address, authkey.as_bytes()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen at {address}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on {}", listener.address());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("a client was not accepted: {e}");
                continue;
            }
        };
        if let Err(e) = serve(&conn, objects) {
            eprintln!("client ended with an error: {e}");
        }
    }
}

/// Echoes the client's messages until it closes.
fn serve(conn: &Connection, objects: bool) -> shmwire::Result<()> {
    loop {
        let reply = if objects {
            match object_reply(conn) {
                Err(Error::Eof) => return Ok(()),
                r => r?,
            }
        } else {
            match conn.recv_bytes() {
                Err(Error::Eof) => return Ok(()),
                r => r?,
            }
        };
        conn.send_bytes(&reply)?;
    }
}

/// The next message decoded as a Python object, answered as `(obj, type_name)`, pickled.
#[cfg(feature = "pickle")]
fn object_reply(conn: &Connection) -> shmwire::Result<Vec<u8>> {
    use shmwire::transport::pickle::{Value, dumps, type_name};
    let v = conn.recv_py()?;
    let name = Value::String(type_name(&v).to_string());
    dumps(&Value::Tuple(vec![v, name]))
}

#[cfg(not(feature = "pickle"))]
fn object_reply(_: &Connection) -> shmwire::Result<Vec<u8>> {
    unreachable!("--objects is refused without the pickle feature")
}
