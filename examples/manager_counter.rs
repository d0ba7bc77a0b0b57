//! Seeds 002 and 004: 100 processes each decrement `d["count"]` from 100 in a dict a `Manager`
//! shares; the parent prints `{"count": 0}`. Twice: once with `modify` (one race-free step), once
//! with an explicit `Lock` around a read and a write, as the seeds write it.
//!
//! Run: `cargo run --example manager_counter`

use shmwire::{Manager, Process};

fn main() -> shmwire::Result<()> {
    // `with Manager() as m:` — the manager is a scope.
    {
        let m = Manager::new()?;
        let dic = m.dict_from([("count".to_string(), 100i64)])?;
        let mut kids = Vec::new();
        for _ in 0..100 {
            let d = dic.clone();
            kids.push(Process::fork(move || {
                d.modify("count", |v| *v -= 1).unwrap(); // d['count'] -= 1, in one step
            })?);
        }
        for p in kids {
            assert!(p.join()?.success());
        }
        println!("{dic:?}");
    }
    {
        let m = Manager::new()?;
        let lock = m.lock()?;
        let dic = m.dict_from([("count".to_string(), 100i64)])?;
        let mut kids = Vec::new();
        for _ in 0..100 {
            let (d, lock) = (dic.clone(), lock.clone());
            kids.push(Process::fork(move || {
                let _with_lock = lock.acquire().unwrap();
                let v = d.get("count").unwrap().unwrap();
                d.insert("count".to_string(), v - 1).unwrap();
            })?);
        }
        for p in kids {
            assert!(p.join()?.success());
        }
        println!("{dic:?}");
    }
    Ok(())
}
