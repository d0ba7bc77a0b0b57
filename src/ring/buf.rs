//! The byte storage under a ring: raw shared memory normally, loom-tracked cells under `--cfg loom`
//! (so the model also catches a reader touching bytes the writer has not published).
//!
//! Callers pass offsets and lengths they have already bounds-checked against the ring's capacity; the
//! functions re-check with `debug_assert!` only.

#[cfg(not(loom))]
mod imp {
    /// `copy_nonoverlapping`, inlined for the small messages of latency-bound traffic (a call to
    /// `memcpy` costs more than moving 16 bytes).
    ///
    /// # Safety
    /// As `copy_nonoverlapping`.
    #[inline(always)]
    unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
        // SAFETY: forwarded contract; the small cases read and write exactly `len` bytes.
        unsafe {
            match len {
                8 => std::ptr::write_unaligned(
                    dst as *mut u64,
                    std::ptr::read_unaligned(src as *const u64),
                ),
                0..=16 => {
                    for i in 0..len {
                        *dst.add(i) = *src.add(i);
                    }
                }
                _ => std::ptr::copy_nonoverlapping(src, dst, len),
            }
        }
    }

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
            unsafe { copy(src.as_ptr(), self.ptr.add(off), src.len()) };
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

        /// Copies `len` bytes from offset `off` to `dst`, through raw pointers only (no reference to
        /// the shared bytes is formed, so a peer writing them meanwhile cannot break what our own
        /// code assumes of a `&[u8]`: the copy is private, whatever it holds).
        ///
        /// # Safety
        /// `off + len <= len`, and `dst` is valid for `len` bytes of writes.
        #[inline]
        pub(crate) unsafe fn read_raw(&self, off: usize, dst: *mut u8, len: usize) {
            debug_assert!(off + len <= self.len);
            // SAFETY: in bounds per the caller; `dst` is private memory the caller owns.
            unsafe { copy(self.ptr.add(off), dst, len) };
        }

        /// A raw pointer to offset `off`, for writes of up to `len` bytes by the writer that owns them.
        ///
        /// # Safety
        /// `off + len <= len` of the window.
        #[inline]
        pub(crate) unsafe fn ptr_at(&self, off: usize, len: usize) -> *mut u8 {
            debug_assert!(off + len <= self.len);
            // SAFETY: in bounds per the caller.
            unsafe { self.ptr.add(off) }
        }

        /// The 8-byte word at `off`, as an atomic (frame headers are published and polled through it).
        ///
        /// # Safety
        /// `off + 8 <= len` and `off` is 8-aligned.
        #[inline]
        pub(crate) unsafe fn word(&self, off: usize) -> &crate::loom::AtomicU64 {
            debug_assert!(off + 8 <= self.len && off % 8 == 0);
            // SAFETY: in bounds and aligned per the caller; an `AtomicU64` may alias shared memory
            // (any bit pattern is a valid value).
            unsafe { &*(self.ptr.add(off) as *const crate::loom::AtomicU64) }
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
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicU64, Ordering::Relaxed};

    /// Heap words whose every access loom models (payload bytes travel in relaxed word stores, so a
    /// reader that is not properly synchronised may read stale bytes, and the model's assertions catch
    /// it).
    #[derive(Clone, Debug)]
    pub(crate) struct RingBuf {
        words: Arc<Vec<AtomicU64>>,
    }

    impl RingBuf {
        pub(crate) fn new_heap(len: usize) -> Self {
            RingBuf {
                words: Arc::new((0..len / 8).map(|_| AtomicU64::new(0)).collect()),
            }
        }

        /// Offsets and lengths are multiples of 8 in the models.
        pub(crate) unsafe fn write(&self, off: usize, src: &[u8]) {
            assert!(off % 8 == 0 && src.len() % 8 == 0);
            for (i, c) in src.chunks(8).enumerate() {
                self.words[off / 8 + i].store(u64::from_ne_bytes(c.try_into().unwrap()), Relaxed);
            }
        }

        pub(crate) unsafe fn read(&self, off: usize, dst: &mut [u8]) {
            assert!(off % 8 == 0 && dst.len() % 8 == 0);
            for (i, c) in dst.chunks_mut(8).enumerate() {
                c.copy_from_slice(&self.words[off / 8 + i].load(Relaxed).to_ne_bytes());
            }
        }

        pub(crate) unsafe fn word(&self, off: usize) -> &AtomicU64 {
            &self.words[off / 8]
        }
    }
}

pub(crate) use imp::RingBuf;
