//! Seed 000: a child does `num[0] -= 1` on a managed list `[1, 2, 3]`; child and parent both print
//! the list, `[0, 2, 3]`.
//!
//! Run: `cargo run --example manager_list`

use shmwire::{Manager, Process, SharedList};

fn func(num: &SharedList<i64>) {
    num.modify(0, |v| *v -= 1).unwrap(); // num[0] -= 1
    println!("子进程中的num的值是 {num:?}");
}

fn main() -> shmwire::Result<()> {
    let m = Manager::new()?;
    let num = m.list_from([1, 2, 3])?;
    let child = num.clone();
    let p = Process::fork(move || func(&child))?;
    assert!(p.join()?.success());
    println!("父进程中的num的值是 {num:?}");
    Ok(())
}
