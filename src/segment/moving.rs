//! Which handles a forked child owns: while the parent drops its copy of the closure it just forked,
//! every handle dropped with it notes itself here (a pipe end with its role, another handle's
//! segment, a listening socket); `registry` then tells the child to keep exactly those.

use super::Segment;
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::Arc;

/// What the handles dropped with a forked closure in the parent moved to the child.
#[derive(Default)]
pub(crate) struct Moved {
    /// (segment address, role) of the pipe ends.
    pub(crate) roles: Vec<(usize, usize)>,
    /// Addresses of the segments of other handles.
    pub(crate) segments: Vec<usize>,
    /// Listening sockets.
    pub(crate) listeners: Vec<RawFd>,
}

thread_local! {
    /// While the parent drops a forked closure: what moved to the child.
    static MOVING: RefCell<Option<Moved>> = const { RefCell::new(None) };
}

/// Runs `drop_closure` (the parent dropping its copy of a closure just forked) and returns what the
/// handles dropped meanwhile moved to the child, with `drop_closure`'s result.
pub(crate) fn collect<R>(drop_closure: impl FnOnce() -> R) -> (Moved, R) {
    let outer = MOVING.with(|m| m.replace(Some(Moved::default())));
    let r = drop_closure();
    let moved = MOVING.with(|m| m.replace(outer)).unwrap_or_default();
    (moved, r)
}

fn noting(f: impl FnOnce(&mut Moved)) -> bool {
    // `try_with`: a handle may be dropped by another thread-local's destructor.
    MOVING
        .try_with(|m| m.borrow_mut().as_mut().map(f).is_some())
        .unwrap_or(false)
}

/// Called by a pipe end on drop: if the parent is dropping a closure it just forked, this end went
/// to the child.
pub(crate) fn note_moved_to_child(seg: &Arc<Segment>, role: usize) {
    noting(|m| m.roles.push((Arc::as_ptr(seg) as usize, role)));
}

/// Called by other handles on drop: the same, for a handle without roles.
pub(crate) fn note_segment_moved(seg: &Arc<Segment>) {
    noting(|m| m.segments.push(Arc::as_ptr(seg) as usize));
}

/// Called by a `Listener` on drop: whether it is moving to a child (then its name is the child's).
pub(crate) fn note_listener_moved(fd: RawFd) -> bool {
    noting(|m| m.listeners.push(fd))
}
