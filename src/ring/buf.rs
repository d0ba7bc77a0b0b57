//! The byte storage under a ring: raw shared memory normally, loom-tracked cells under `--cfg loom`
//! (so the model also catches a reader touching bytes the writer has not published).
//!
//! Callers pass offsets and lengths they have already bounds-checked against the ring's capacity; the
//! functions re-check with `debug_assert!` only.

#[cfg(not(loom))]
mod imp {
    /// A window of shared memory `len` bytes long.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct RingBuf {
        ptr: *mut u8,
        len: usize,
    }

    impl RingBuf {
        /// # Safety
        /// `ptr..ptr+len` must stay mapped, readable and writable for as long as this value is used.
        pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Self {
            RingBuf { ptr, len }
        }

        /// Copies `src` to offset `off`.
        ///
        /// # Safety
        /// `off + src.len() <= len`, and no one reads these bytes until they are published.
        #[inline]
        pub(crate) unsafe fn write(&self, off: usize, src: &[u8]) {
            debug_assert!(off + src.len() <= self.len);
            // SAFETY: in bounds per the caller; the region is ours until published.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.add(off), src.len()) };
        }

        /// Copies `dst.len()` bytes from offset `off`.
        ///
        /// # Safety
        /// `off + dst.len() <= len`, and the bytes were published to us.
        #[inline]
        pub(crate) unsafe fn read(&self, off: usize, dst: &mut [u8]) {
            debug_assert!(off + dst.len() <= self.len);
            // SAFETY: in bounds per the caller.
            unsafe {
                std::ptr::copy_nonoverlapping(self.ptr.add(off), dst.as_mut_ptr(), dst.len())
            };
        }

        /// Reads the 8-byte word at `off` exactly once (frame headers: copy, then validate).
        ///
        /// # Safety
        /// `off + 8 <= len` and `off` is 8-aligned.
        #[inline]
        pub(crate) unsafe fn read_u64(&self, off: usize) -> u64 {
            debug_assert!(off + 8 <= self.len && off % 8 == 0);
            // SAFETY: in bounds and aligned per the caller; volatile so the value is fetched once.
            unsafe { std::ptr::read_volatile(self.ptr.add(off) as *const u64) }
        }

        /// # Safety
        /// As [`write`](Self::write), with `off` 8-aligned.
        #[inline]
        pub(crate) unsafe fn write_u64(&self, off: usize, v: u64) {
            debug_assert!(off + 8 <= self.len && off % 8 == 0);
            // SAFETY: in bounds and aligned per the caller.
            unsafe { std::ptr::write_volatile(self.ptr.add(off) as *mut u64, v) };
        }

        /// A borrowed view of `len` bytes at `off`.
        ///
        /// # Safety
        /// In bounds, published to the caller, and not reused by the writer while the slice lives.
        #[inline]
        pub(crate) unsafe fn slice<'a>(&self, off: usize, len: usize) -> &'a [u8] {
            debug_assert!(off + len <= self.len);
            // SAFETY: per the caller.
            unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) }
        }

        /// A writable view of `len` bytes at `off`.
        ///
        /// # Safety
        /// In bounds, owned by the writer (not yet published), and unique while the slice lives.
        #[inline]
        #[allow(clippy::mut_from_ref)]
        pub(crate) unsafe fn slice_mut<'a>(&self, off: usize, len: usize) -> &'a mut [u8] {
            debug_assert!(off + len <= self.len);
            // SAFETY: per the caller.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.add(off), len) }
        }
    }
}

#[cfg(loom)]
mod imp {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// Heap bytes whose every access loom checks for causality.
    #[derive(Clone, Debug)]
    pub(crate) struct RingBuf {
        cells: Arc<Vec<UnsafeCell<u8>>>,
    }

    impl RingBuf {
        pub(crate) fn new_heap(len: usize) -> Self {
            RingBuf {
                cells: Arc::new((0..len).map(|_| UnsafeCell::new(0)).collect()),
            }
        }

        pub(crate) unsafe fn write(&self, off: usize, src: &[u8]) {
            for (i, &b) in src.iter().enumerate() {
                // SAFETY: loom checks that no one else accesses the cell concurrently.
                self.cells[off + i].with_mut(|p| unsafe { *p = b });
            }
        }

        pub(crate) unsafe fn read(&self, off: usize, dst: &mut [u8]) {
            for (i, d) in dst.iter_mut().enumerate() {
                // SAFETY: as above.
                *d = self.cells[off + i].with(|p| unsafe { *p });
            }
        }

        pub(crate) unsafe fn read_u64(&self, off: usize) -> u64 {
            let mut b = [0u8; 8];
            // SAFETY: forwarded contract.
            unsafe { self.read(off, &mut b) };
            u64::from_ne_bytes(b)
        }

        pub(crate) unsafe fn write_u64(&self, off: usize, v: u64) {
            // SAFETY: forwarded contract.
            unsafe { self.write(off, &v.to_ne_bytes()) }
        }
    }
}

pub(crate) use imp::RingBuf;
