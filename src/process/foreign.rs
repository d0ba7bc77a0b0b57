//! Forks made by someone else (Python's `os.fork`, a C library's `fork()`): hooks that give the
//! child its own liveness tokens for everything the parent holds, as [`Process::fork`](super::Process::fork)
//! does for what its closure owns. A foreign fork copies the whole process, so the child keeps
//! every role the parent held (Python's semantics: the child has a copy of every object).
//!
//! Call [`__before_foreign_fork`] in the parent right before `fork()`, then
//! [`__after_foreign_fork_in_child`] in the child or [`__after_foreign_fork_in_parent`] in the parent,
//! on the same thread (Python's `os.register_at_fork` does exactly this). Without them a child forked
//! behind the crate's back still works (its handles take a slot of their own on first use), but holds
//! its parent's tokens until then, and an end its parent closes before that first use is closed for
//! it too.

use crate::error::Result;
use crate::segment::registry::{self, ForkPrep};
use std::cell::RefCell;

thread_local! {
    /// The preparation of the fork in progress on this thread.
    static PREP: RefCell<Option<ForkPrep>> = const { RefCell::new(None) };
}

/// In the parent, right before a foreign `fork()`: prepares a new description and participant slot,
/// with every role this process holds, in each segment it maps. Holds the registry's locks until one
/// of the `after` hooks runs on this thread (so no segment appears in between).
#[doc(hidden)]
pub fn __before_foreign_fork() -> Result<()> {
    let prep = registry::prepare_fork()?;
    PREP.with(|p| {
        if let Some(mut old) = p.borrow_mut().replace(prep) {
            old.abort(); // an `after` hook was never called: that fork got nothing prepared
        }
    });
    Ok(())
}

/// In the child of a foreign fork: switch to the prepared descriptions (dropping the copies of the
/// parent's tokens), keeping every role. Does nothing if nothing was prepared.
#[doc(hidden)]
pub fn __after_foreign_fork_in_child() {
    if let Some(prep) = PREP.with(|p| p.borrow_mut().take()) {
        prep.in_child(|| None);
    }
}

/// In the parent of a foreign fork (`child`: its pid, or `None` if the fork failed): give the prepared
/// slots to the child (with every role) and close this process's copies of them.
#[doc(hidden)]
pub fn __after_foreign_fork_in_parent(child: Option<u32>) {
    let Some(mut prep) = PREP.with(|p| p.borrow_mut().take()) else {
        return;
    };
    match child {
        None => prep.abort(),
        Some(pid) => {
            let half = prep.forked();
            crate::pipe::connection::note_fork();
            let _verdict = half.finish_keeping_all(pid);
        }
    }
}

/// For a process about to exit without dropping its handles (a child of Python's `multiprocessing`
/// ends in `os._exit`): gives up its roles and slots, and removes the names it was the last to
/// hold, as the handles' drops would. Handles used after this take a slot of their own again.
#[doc(hidden)]
pub fn __release_at_exit() {
    registry::release_at_exit();
}
