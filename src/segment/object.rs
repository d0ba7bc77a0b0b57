//! A shared object: a control block of atomics (and, for arrays and queues, a data area after it) in a
//! segment of its own, shared with forked children (an anonymous sealed memfd) or by name.
//!
//! Every handle is `Clone + Send + Sync` (an `Arc` over the mapping); the control block is all
//! atomics, so any bytes another process wrote are a valid value, and whatever the kind reads from it
//! that indexes memory is checked before use.

use crate::error::{Error, Result};
use crate::segment::{Kind, Segment, Spec, names};
use std::marker::PhantomData;
use std::sync::Arc;

/// Control blocks that may live in shared memory.
///
/// # Safety
/// The type must be `repr(C)`, valid for every bit pattern (only atomics and plain integers), and
/// not need dropping.
pub(crate) unsafe trait SharedBlock: Sized {}

/// Participants a shared object accepts (a lock used by a hundred processes at once, for example).
pub(crate) const OBJECT_SLOTS: u32 = 256;

fn no_roles(_: &Segment, _: usize) {}

/// Test hooks (`test-hooks` feature).
#[cfg(feature = "test-hooks")]
pub(crate) mod hooks {
    use std::sync::atomic::{AtomicI32, Ordering};

    /// A signal to raise in this process right after the next object is published (`READY`).
    static RAISE_AFTER_PUBLISH: AtomicI32 = AtomicI32::new(0);

    /// Arms [`after_publish`] for the next object this process creates.
    pub(crate) fn raise_after_publish(signal: i32) {
        RAISE_AFTER_PUBLISH.store(signal, Ordering::SeqCst);
    }

    pub(super) fn after_publish() {
        let signal = RAISE_AFTER_PUBLISH.swap(0, Ordering::SeqCst);
        if signal != 0 {
            // SAFETY: plain syscall on ourselves.
            unsafe { libc::kill(libc::getpid(), signal) };
        }
    }
}

/// A control block `T` followed by `data_len` bytes, in a segment.
pub(crate) struct Object<T: SharedBlock> {
    seg: Arc<Segment>,
    data_len: usize,
    _t: PhantomData<T>,
}

impl<T: SharedBlock> Clone for Object<T> {
    fn clone(&self) -> Self {
        Object {
            seg: self.seg.clone(),
            data_len: self.data_len,
            _t: PhantomData,
        }
    }
}

// SAFETY: the control block is all atomics and the data area is accessed under the kind's protocol;
// the mapping lives as long as the `Arc`.
unsafe impl<T: SharedBlock> Send for Object<T> {}
// SAFETY: as above.
unsafe impl<T: SharedBlock> Sync for Object<T> {}

const fn data_offset<T>() -> usize {
    std::mem::size_of::<T>().div_ceil(128) * 128
}

impl<T: SharedBlock> Object<T> {
    /// Creates the object: anonymous (fork-shared) when `name` is `None`, else named. `params` are
    /// recorded in the header (validated by the kind on open); the control block starts zeroed.
    pub(crate) fn create(
        kind: Kind,
        fingerprint: u64,
        params: [u64; 6],
        data_len: usize,
        name: Option<&str>,
    ) -> Result<Self> {
        Self::create_growable(kind, fingerprint, params, data_len, name, false, 0)
    }

    /// [`create`](Self::create), with the kind's first state written by `init` (given the control
    /// block and the data area) before a named object can be opened: an opener never sees the zeroes
    /// that come before it.
    pub(crate) fn create_with(
        kind: Kind,
        fingerprint: u64,
        params: [u64; 6],
        data_len: usize,
        name: Option<&str>,
        init: &dyn Fn(&T, *mut u8),
    ) -> Result<Self> {
        Self::make(kind, fingerprint, params, data_len, name, false, 0, init)
    }

    /// [`create`](Self::create), in a segment that may grow past its first size when `growable`,
    /// and, if named, whose last `lazy_tail` data bytes are allocated as the kind first uses them.
    pub(crate) fn create_growable(
        kind: Kind,
        fingerprint: u64,
        params: [u64; 6],
        data_len: usize,
        name: Option<&str>,
        growable: bool,
        lazy_tail: usize,
    ) -> Result<Self> {
        let no_init = |_: &T, _: *mut u8| {};
        Self::make(
            kind,
            fingerprint,
            params,
            data_len,
            name,
            growable,
            lazy_tail,
            &no_init,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        kind: Kind,
        fingerprint: u64,
        params: [u64; 6],
        data_len: usize,
        name: Option<&str>,
        growable: bool,
        lazy_tail: usize,
        init: &dyn Fn(&T, *mut u8),
    ) -> Result<Self> {
        let mut p = [0u64; 8];
        p[..6].copy_from_slice(&params);
        p[7] = data_len as u64;
        let spec = Spec {
            kind,
            fingerprint,
            params: p,
            kind_size: data_offset::<T>() + data_len,
            n_slots: OBJECT_SLOTS,
            on_role_closed: no_roles,
            growable,
            lazy_tail,
        };
        let fill = |seg: &Segment| {
            let base = seg.kind_area().0;
            // SAFETY: the kind area starts page-aligned and holds the block and `data_len` bytes
            // after it (sized by `spec`); `T` is valid for any bytes (`SharedBlock`).
            init(unsafe { &*(base as *const T) }, unsafe {
                base.add(data_offset::<T>())
            });
        };
        let seg = match name {
            None => {
                // Nobody else can see an anonymous segment before it is returned.
                let seg = Segment::create_anonymous(&spec, Vec::new())?;
                fill(&seg);
                seg
            }
            Some(n) => Segment::create_named_with(&names::user_name(n)?, &spec, &fill)?,
        };
        #[cfg(feature = "test-hooks")]
        hooks::after_publish();
        Ok(Object {
            seg,
            data_len,
            _t: PhantomData,
        })
    }

    /// Opens the named object, which must be a `kind` made for `fingerprint`.
    pub(crate) fn open(kind: Kind, fingerprint: u64, name: &str) -> Result<Self> {
        let seg = Segment::open_named(&names::user_name(name)?, kind, fingerprint, no_roles)?;
        let data_len = seg.header().params[7];
        if data_offset::<T>() as u64 + data_len > seg.kind_area().1 as u64 {
            return Err(Error::Corrupt);
        }
        Ok(Object {
            seg,
            data_len: data_len as usize,
            _t: PhantomData,
        })
    }

    /// Maps an object received as a descriptor (a spawned child's inherited one, shared with its
    /// sender: this process opens a description of its own and takes a slot), which must be a
    /// `kind` made for `fingerprint`.
    pub(crate) fn adopt(fd: std::os::fd::OwnedFd, kind: Kind, fingerprint: u64) -> Result<Self> {
        let seg = Segment::adopt(fd, None, kind, fingerprint, no_roles, Vec::new())?;
        let data_len = seg.header().params[7];
        if data_offset::<T>() as u64 + data_len > seg.kind_area().1 as u64 {
            return Err(Error::Corrupt);
        }
        Ok(Object {
            seg,
            data_len: data_len as usize,
            _t: PhantomData,
        })
    }

    /// The control block.
    #[inline]
    pub(crate) fn block(&self) -> &T {
        // SAFETY: the kind area starts page-aligned and holds `size_of::<T>()` bytes (checked on
        // open, sized on create); `T` is valid for any bytes (`SharedBlock`).
        unsafe { &*(self.seg.kind_area().0 as *const T) }
    }

    /// The data area after the control block.
    #[inline]
    pub(crate) fn data(&self) -> (*mut u8, usize) {
        // SAFETY: `data_offset + data_len` lies within the kind area (checked on open).
        (
            unsafe { self.seg.kind_area().0.add(data_offset::<T>()) },
            self.data_len,
        )
    }

    /// The parameters recorded at creation.
    pub(crate) fn params(&self) -> [u64; 6] {
        let mut p = [0u64; 6];
        p.copy_from_slice(&self.seg.header().params[..6]);
        p
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    /// Checks this process's ownership of its slot (after a fork behind our back) and returns its
    /// claim id.
    #[inline]
    pub(crate) fn me(&self) -> Result<u32> {
        self.seg.ensure_owner()?;
        Ok(self.seg.claim_id())
    }
}

impl<T: SharedBlock> Drop for Object<T> {
    fn drop(&mut self) {
        // Dropped with a closure just forked: the child owns this handle (see `segment::registry`).
        crate::segment::moving::note_segment_moved(&self.seg);
    }
}
