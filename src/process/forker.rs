//! Which thread forks: a child must live as long as its parent *process*.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process
//! (prctl(2)). A child forked by a short-lived thread (a worker, a thread that made a pool) would be
//! killed with that thread. So only threads that live as long as the process fork: the main thread
//! (whose end is the end of a Rust program) forks directly; any other thread hands the fork to the
//! *forker*, a thread this crate starts once per process and never stops, and waits for it.
//!
//! The child of a handed-over fork is a copy of the forker thread: it runs the closure (moved in
//! through the parent's memory, which the child has a copy of) on the forker's stack
//! (`FORKER_STACK` bytes, as much as a main thread gets), with the calling thread's signal mask,
//! and sees the forker's thread-locals, not those of the thread that called `fork`
//! (`std::thread::current()` is named `shmwire-forker`). In the parent, the forker touches nothing but
//! the `fork` call: the calling thread's data is used only by the child, which has no other thread.
//!
//! A forked child of ours starts its own forker when one of its threads forks (the parent's does not
//! exist in it: the fork generation tells them apart).

use crate::error::{Error, Result};
use crate::segment::registry;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::mpsc;

/// Stack of the forker thread, on which the children it forks run their closures.
pub(crate) const FORKER_STACK: usize = 8 << 20;

struct Job {
    run: *mut (dyn FnMut() + 'static),
    /// The submitting thread's signal mask, which the child inherits as from a fork of its own.
    mask: libc::sigset_t,
    done: mpsc::SyncSender<()>,
}

// SAFETY: the pointer is used by the forker thread only while the submitting thread waits for
// `done`, and the closure touches in this process only data that may be sent (see `run`).
unsafe impl Send for Job {}

struct Forker {
    generation: u64,
    jobs: mpsc::Sender<Job>,
}

static FORKER: AtomicPtr<Forker> = AtomicPtr::new(std::ptr::null_mut());

fn is_main_thread() -> bool {
    rustix::thread::gettid() == rustix::process::getpid()
}

/// Whether this process runs a forker thread now (started by a fork from another thread).
pub(crate) fn running() -> bool {
    let cur = FORKER.load(Ordering::Acquire);
    // SAFETY: a published forker is leaked (never freed), so the pointer stays valid.
    unsafe { cur.as_ref() }.is_some_and(|f| f.generation == registry::fork_generation())
}

/// This process's forker, started on first use.
fn forker() -> Result<&'static Forker> {
    registry::install_fork_handler(); // so a child never takes its parent's forker for its own
    let generation = registry::fork_generation();
    loop {
        let cur = FORKER.load(Ordering::Acquire);
        // SAFETY: a published forker is leaked (never freed), so the pointer stays valid.
        if let Some(f) = unsafe { cur.as_ref() } {
            if f.generation == generation {
                return Ok(f);
            }
        }
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("shmwire-forker".into())
            .stack_size(FORKER_STACK)
            .spawn(move || {
                for job in rx {
                    // SAFETY: see `Job`; the submitter waits until `done` is sent. The masks are
                    // valid sigsets (filled by pthread_sigmask).
                    unsafe {
                        let mut ours: libc::sigset_t = std::mem::zeroed();
                        libc::pthread_sigmask(libc::SIG_SETMASK, &job.mask, &mut ours);
                        (*job.run)();
                        libc::pthread_sigmask(libc::SIG_SETMASK, &ours, std::ptr::null_mut());
                    }
                    let _ = job.done.send(());
                }
            })?;
        let new = Box::into_raw(Box::new(Forker { generation, jobs }));
        // ORDERING: AcqRel publishes the new forker to the threads that load it with Acquire. A
        // parent's forker seen in a child is left as it is (its thread does not exist here).
        match FORKER.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: `new` was just published and is never freed.
            Ok(_) => return Ok(unsafe { &*new }),
            // SAFETY: `new` lost the race and was never published: ours to free (its thread ends
            // as its channel closes).
            Err(_) => drop(unsafe { Box::from_raw(new) }),
        }
    }
}

/// Runs `job` on a thread that lives as long as this process: here if this is the main thread,
/// else on the forker, waiting for it. `job` forks (or spawns); in a forked child it must never
/// return.
///
/// # Safety
/// `job` may run on another thread, although it need not be `Send`: in this process it must touch
/// only data that may be sent to another thread (what it does in a forked child, which has no other
/// thread, is not restricted).
pub(crate) unsafe fn run(job: &mut dyn FnMut()) -> Result<()> {
    if is_main_thread() {
        job();
        return Ok(());
    }
    let forker = forker()?;
    let (done, finished) = mpsc::sync_channel(1);
    // SAFETY: a zeroed sigset is valid; pthread_sigmask with no new set only reads the mask.
    let mask = unsafe {
        let mut m: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut m);
        m
    };
    let job: *mut (dyn FnMut() + '_) = job;
    // SAFETY: only the lifetime is erased; this thread waits below until the forker has run the job,
    // so the closure outlives every use of the pointer.
    let run: *mut (dyn FnMut() + 'static) = unsafe { std::mem::transmute(job) };
    let gone = || Error::io(std::io::ErrorKind::Other, "the forker thread is gone");
    forker
        .jobs
        .send(Job { run, mask, done })
        .map_err(|_| gone())?;
    finished.recv().map_err(|_| gone())
}
