//! The audit (test hook): the allocator's heap checked block by block, and the blocks in use matched
//! against what the containers reach, so a test can say "nothing leaked, nothing freed twice" after
//! killing writers at random points.

use super::arena::{Arena, Ref};
use super::slot::{self, Container, DICT, LIST, REF_MASK};
use crate::wait::Deadline;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Settles every container (taking each one's lock repairs what a dead writer left), then checks the
/// heap and the reach of every container under the allocator's lock. Call it while nobody else
/// changes the arena. Returns the number of live containers.
pub(crate) fn audit(arena: &Arc<Arena>, timeout: Option<Duration>) -> Result<usize, String> {
    let e = |what: &str, err: crate::Error| format!("{what}: {err}");
    for (index, id, ..) in slot::live_slots(arena).map_err(|x| e("slots", x))? {
        let c = Container::attach_any(arena.clone(), index, id).map_err(|x| e("attach", x))?;
        drop(c.lock().map_err(|x| e("lock", x))?);
    }
    let me = arena.me().map_err(|x| e("me", x))?;
    let g = arena
        .lock_alloc(
            me,
            Deadline::after(Some(timeout.unwrap_or(Duration::from_secs(10)))),
        )
        .map_err(|x| e("allocator", x))?;
    let mut allocated = g.audit()?;
    allocated.sort_by_key(|r| r.0);
    let mut reached: HashMap<u64, String> = HashMap::new();
    let mut reach = |r: Ref, what: String| -> Result<(), String> {
        // A block is reached through its payload, or (a slot page) through a position within its
        // first 64 bytes.
        let i = allocated.partition_point(|p| p.0 <= r.0);
        let p = i
            .checked_sub(1)
            .map(|i| allocated[i])
            .filter(|p| p.chunk() == r.chunk() && r.offset() - p.offset() < 64)
            .ok_or_else(|| format!("{what} at {r:?} is not an allocated block"))?;
        if let Some(other) = reached.insert(p.0, what.clone()) {
            return Err(format!("{what} and {other} share the block {p:?}"));
        }
        Ok(())
    };
    for p in slot::heap_pages(arena) {
        reach(p, "a slot page".into())?;
    }
    let slots = slot::live_slots(arena).map_err(|x| e("slots", x))?;
    let load = |r: Ref| arena.load(r).map_err(|x| e("load", x));
    for &(index, _, kind, root, len) in &slots {
        if root.is_null() {
            continue;
        }
        reach(root, format!("container {index}'s root"))?;
        let cap = load(root)?;
        match kind {
            DICT => {
                for i in 0..cap {
                    let w = load(root.add(8 + 8 * i))?;
                    if w > 1 {
                        reach(Ref(w & REF_MASK), format!("dict {index}'s bucket {i}"))?;
                    }
                }
            }
            LIST => {
                for i in 0..len {
                    reach(
                        Ref(load(root.add(8 + 8 * i))?),
                        format!("list {index}'s element {i}"),
                    )?;
                }
            }
            k => return Err(format!("slot {index} holds kind {k}")),
        }
    }
    if reached.len() != allocated.len() {
        let leaked: Vec<Ref> = allocated
            .iter()
            .filter(|p| !reached.contains_key(&p.0))
            .take(8)
            .copied()
            .collect();
        return Err(format!(
            "{} blocks allocated, {} reached (leaked, first few: {leaked:?})",
            allocated.len(),
            reached.len()
        ));
    }
    Ok(slots.len())
}
