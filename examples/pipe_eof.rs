//! Seed 000, first program: the parent sends 0..9 through a pipe and closes its end; the child prints
//! what it receives and stops at end-of-file (Python's `EOFError`).
//!
//! Run: `cargo run --example pipe_eof`

use shmwire::{Error, Pipe, Process};

fn main() -> shmwire::Result<()> {
    let (con1, con2) = Pipe::new()?;
    // The child takes con2; the parent keeps con1. (In Python the child also gets a copy of con1 and
    // must close it; here a child holds only what its closure owns.)
    let child = Process::fork(move || {
        loop {
            match con2.recv::<i32>() {
                Ok(x) => println!("{x}"),
                Err(Error::Eof) => break, // the parent closed its end and we read everything
                Err(e) => panic!("{e}"),
            }
        }
    })?;
    for i in 0..10 {
        con1.send(&i)?;
    }
    con1.close();
    child.join()?;
    Ok(())
}
