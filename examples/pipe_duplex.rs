//! Seed 000, second program: the child sends `[42, None, 'hello from child']` twice, then receives a
//! string from the parent and prints it; the parent prints what it received.
//!
//! Run: `cargo run --example pipe_duplex`

use serde::{Deserialize, Serialize};
use shmwire::{Pipe, Process};
use std::fmt;

/// A Python-ish value, so the program prints what the Python one prints.
#[derive(Serialize, Deserialize)]
enum Value {
    Int(i64),
    None,
    Str(String),
}

struct List(Vec<Value>);

impl fmt::Display for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|v| match v {
                Value::Int(i) => i.to_string(),
                Value::None => "None".to_owned(),
                Value::Str(s) => format!("'{s}'"),
            })
            .collect();
        write!(f, "[{}]", items.join(", "))
    }
}

fn main() -> shmwire::Result<()> {
    let (parent_conn, child_conn) = Pipe::new()?;
    let p = Process::fork(move || {
        let msg = |s: &str| vec![Value::Int(42), Value::None, Value::Str(s.to_owned())];
        child_conn.send(&msg("hello from child")).unwrap();
        child_conn.send(&msg("hello from child2")).unwrap();
        let reply: String = child_conn.recv().unwrap();
        println!("from parent: {reply}");
    })?;
    println!("{}", List(parent_conn.recv()?));
    println!("{}", List(parent_conn.recv()?));
    parent_conn.send("范冰冰")?;
    p.join()?;
    Ok(())
}
