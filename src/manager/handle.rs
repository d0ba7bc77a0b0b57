//! Handles as data: `SharedDict`, `SharedList` and `Manager` are serde-serializable, so a handle sent
//! through a `Pipe` or `Queue`, passed to a spawned child, or stored in another container opens the
//! same arena (and container) wherever it is decoded.
//!
//! A handle names its arena: a named one by its name; an anonymous one (shared by forking) by the
//! file's device and inode, with the pid and descriptor of processes that hold it (the one that
//! encoded the handle, and the arena's creator). A process that maps the arena already (the encoder
//! itself, a forked child) uses its own mapping; another opens the file through `/proc/PID/fd/FD` of a
//! holder, checking it is the same file. A container is named by its slot and id: decoding checks that
//! it still lives and holds these types ([`Error::Closed`], [`Error::Incompatible`] as a decode error
//! otherwise). The handle's timeout is this process's choice and does not travel.

use super::arena::Arena;
use super::dict::SharedDict;
use super::list::SharedList;
use super::manager::Manager;
use super::slot::{Container, DICT, LIST};
use crate::error::{Error, Result};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How another process finds an arena.
#[derive(Serialize, Deserialize, Debug)]
enum ArenaRef {
    Named(String),
    Anonymous {
        file: (u64, u64),
        holders: Vec<(u32, i32)>,
    },
}

impl ArenaRef {
    fn of(a: &Arena) -> ArenaRef {
        if let Some(n) = a.os_name() {
            return ArenaRef::Named(n.to_owned());
        }
        let me = (std::process::id(), a.seg.descriptor());
        let c = a.ctl().creator.load(Ordering::Relaxed);
        let creator = ((c >> 32) as u32, c as u32 as i32);
        let mut holders = vec![me];
        if creator.0 != me.0 {
            holders.push(creator);
        }
        ArenaRef::Anonymous {
            file: a.file,
            holders,
        }
    }

    fn resolve(&self) -> Result<Arc<Arena>> {
        match self {
            ArenaRef::Named(os) => {
                // A name from another process: one of ours in /dev/shm, nothing else.
                let ok = os.strip_prefix('/').is_some_and(|rest| {
                    rest.starts_with("shmwire.")
                        && rest.len() <= 255
                        && rest
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                });
                if !ok {
                    return Err(Error::invalid(format!(
                        "{os:?} is not the name of a shmwire manager"
                    )));
                }
                Arena::open_os(os)
            }
            ArenaRef::Anonymous { file, holders } => {
                if let Some(a) = Arena::find(*file) {
                    return Ok(a);
                }
                for &(pid, fd) in holders.iter().take(8) {
                    use rustix::fs::{Mode, OFlags};
                    let Ok(f) = rustix::fs::open(
                        format!("/proc/{pid}/fd/{fd}"),
                        OFlags::RDWR | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) else {
                        continue;
                    };
                    let st = rustix::fs::fstat(&f)?;
                    if (st.st_dev, st.st_ino) != *file {
                        continue; // that descriptor names another file now
                    }
                    return Arena::adopt(f);
                }
                Err(Error::NotFound)
            }
        }
    }
}

/// A container handle as data.
#[derive(Serialize, Deserialize)]
struct ContainerRepr {
    arena: ArenaRef,
    slot: u32,
    id: u64,
}

fn repr(c: &Container) -> ContainerRepr {
    ContainerRepr {
        arena: ArenaRef::of(&c.arena),
        slot: c.index,
        id: c.id,
    }
}

fn open_container(r: ContainerRepr, kind: u64, fps: (u64, u64)) -> Result<Container> {
    Container::attach(r.arena.resolve()?, r.slot, r.id, kind, fps)
}

impl<K, V> Serialize for SharedDict<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        repr(&self.c).serialize(s)
    }
}

impl<'de, K, V> Deserialize<'de> for SharedDict<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = ContainerRepr::deserialize(d)?;
        open_container(r, DICT, Self::fingerprints())
            .map(SharedDict::attach)
            .map_err(|e| D::Error::custom(format!("cannot open the dict: {e}")))
    }
}

impl<T> Serialize for SharedList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        repr(&self.c).serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for SharedList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = ContainerRepr::deserialize(d)?;
        open_container(r, LIST, Self::fingerprints())
            .map(SharedList::attach)
            .map_err(|e| D::Error::custom(format!("cannot open the list: {e}")))
    }
}

impl Serialize for Manager {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ArenaRef::of(&self.arena).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Manager {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let r = ArenaRef::deserialize(d)?;
        r.resolve()
            .map(Manager::with)
            .map_err(|e| D::Error::custom(format!("cannot open the manager: {e}")))
    }
}
