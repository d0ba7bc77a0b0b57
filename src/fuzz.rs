//! Fuzz entry points (feature `test-hooks`): every parser of bytes that another process wrote into
//! shared memory, run on bytes chosen by a fuzzer. The targets in `fuzz/fuzz_targets/` call these,
//! and `tests/transport.rs` replays the kept corpus through them in CI.
//!
//! The shared-memory targets build a real object (anonymous, a sealed memfd), put honest traffic
//! into it, then write the fuzzer's bytes into the segment file as a hostile peer could: records of
//! `[word: u16][value: u64]`, each a store of `value` at byte `8 * word` (modulo a window that covers
//! the header, the participant table, the control blocks and the first slots). Then the honest side
//! calls every non-blocking operation a bounded number of times. The contract is the crate's: any
//! result, `Error::Corrupt` included, but never a panic, an access out of bounds, an allocation of
//! the bytes' choosing or a call that does not return.

use crate::error::Result;
use std::os::fd::RawFd;
use std::time::Duration;

/// Writes the records of `patch` into the file `fd` within its first `window` bytes. Returns how
/// many were written.
fn scribble(fd: RawFd, window: usize, patch: &[u8]) -> usize {
    // SAFETY: `fd` is the live descriptor of an object the caller holds, borrowed for these calls.
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
    let Ok(st) = rustix::fs::fstat(fd) else {
        return 0;
    };
    let window = window.min(st.st_size as usize) / 8;
    if window == 0 {
        return 0;
    }
    let mut n = 0;
    for rec in patch.chunks_exact(10) {
        let word = u16::from_le_bytes([rec[0], rec[1]]) as usize % window;
        if rustix::io::pwrite(fd, &rec[2..10], (word * 8) as u64).is_ok() {
            n += 1;
        }
    }
    n
}

/// The first byte picks variants; the rest is the patch.
fn split(bytes: &[u8]) -> (u8, &[u8]) {
    match bytes.split_first() {
        Some((&k, rest)) => (k, rest),
        None => (0, &[]),
    }
}

/// A segment handed over as a descriptor (a received or inherited one): `bytes` are the whole file
/// (its header, participant table and kind area), adopted as each kind. Returns how many kinds
/// accepted it.
pub fn __fuzz_segment(bytes: &[u8]) -> usize {
    use crate::segment::{Kind, Segment};
    use rustix::fs::{MemfdFlags, SealFlags};
    let (k, body) = split(bytes);
    let Ok(fd) = rustix::fs::memfd_create(
        "shmwire-fuzz",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    ) else {
        return 0;
    };
    // A whole number of pages, at least one, at most 4 (the header's `size` says what it says).
    let pages = 1 + (k as usize % 4);
    if rustix::fs::ftruncate(&fd, (pages * 4096) as u64).is_err()
        || rustix::io::pwrite(&fd, &body[..body.len().min(pages * 4096)], 0).is_err()
        || rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).is_err()
    {
        return 0;
    }
    // The fingerprint the bytes claim (at offset 24), so that the checks after it are reached.
    let fp = body
        .get(24..32)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let mut ok = 0;
    for kind in [
        Kind::Pipe,
        Kind::Queue,
        Kind::Sync,
        Kind::Manager,
        Kind::Pool,
    ] {
        let Ok(dup) = rustix::io::dup(&fd) else {
            return ok;
        };
        if let Ok(seg) = Segment::adopt(dup, None, kind, fp, |_, _| {}, Vec::new()) {
            let _ = seg.kind_area();
            ok += 1;
        }
    }
    ok
}

/// A pipe's SPSC ring (frames, wrap fillers, split messages, positions, claims): honest messages
/// of several sizes, the patch, then the reader takes what it can and the writer sends.
pub fn __fuzz_spsc(bytes: &[u8]) -> usize {
    let (k, patch) = split(bytes);
    let Ok((r, w)) = crate::Pipe::builder()
        .duplex(k & 1 == 1)
        .capacity(4096)
        .build()
    else {
        return 0;
    };
    let (r, w) = if r.readable() { (r, w) } else { (w, r) };
    let sizes = [0usize, 5, 100, 1500, 3000];
    for i in 0..(k as usize >> 1) % 6 {
        let _ = w.try_send(&vec![i as u8; sizes[i % sizes.len()]]);
    }
    if k & 2 != 0 {
        // A message larger than the ring: the reader sees its head frame only.
        let _ = w.send_bytes_timeout(&[7u8; 6000], Duration::ZERO);
    }
    let Some(fd) = r.__segment_fd() else {
        return 0;
    };
    scribble(fd, 1 << 16, patch);
    let mut got = 0;
    let mut buf = [0u8; 64];
    for i in 0..16 {
        let out: Result<usize> = match i % 3 {
            0 => r.recv_bytes_timeout(Duration::ZERO).map(|v| v.len()),
            1 => r.recv_bytes_into_timeout(&mut buf, Duration::ZERO),
            _ => r.try_recv::<Vec<u8>>().map(|v| v.len()),
        };
        if out.is_ok() {
            got += 1;
        }
        let _ = r.poll(Duration::ZERO);
        let _ = w.try_send(&vec![i as u8; 40]);
    }
    got
}

/// A queue's MPMC slots (control words, lengths, positions) and, with `spill`, its spill area
/// (bitmap, block headers, the mutex and its redo record): honest items, the patch, then gets and
/// puts.
fn queue(bytes: &[u8], spill: bool) -> usize {
    let (k, patch) = split(bytes);
    let Ok(q) = crate::Queue::<Vec<u8>>::builder()
        .maxsize(8)
        .item_size(64)
        .spill_size(if spill { 64 << 10 } else { 0 })
        .build()
    else {
        return 0;
    };
    let big = if spill { 1000 } else { 50 };
    for i in 0..(k as usize % 8) {
        let _ = q.put_nowait(vec![i as u8; if i % 2 == 0 { 10 } else { big }]);
    }
    // The window: header, participants and the control block, the slots, and with a spill area its
    // bitmap and first blocks.
    scribble(
        q.__segment_fd(),
        if spill { 1 << 17 } else { 1 << 15 },
        patch,
    );
    let mut got = 0;
    for i in 0..12 {
        if q.get_nowait().is_ok() {
            got += 1;
        }
        let _ = q.put_nowait(vec![i as u8; if i % 3 == 0 { big } else { 8 }]);
        let _ = (q.qsize(), q.is_empty());
    }
    got
}

/// A queue's slots only (see `queue`).
pub fn __fuzz_mpmc(bytes: &[u8]) -> usize {
    queue(bytes, false)
}

/// A queue's slots and spill area (see `queue`).
pub fn __fuzz_spill(bytes: &[u8]) -> usize {
    queue(bytes, true)
}

/// A manager's arena (allocator words and free lists, block headers, the directory and namespace,
/// dict buckets and entries, list elements): honest containers, the patch, then every call, each
/// bounded by a short timeout.
pub fn __fuzz_arena(bytes: &[u8]) -> usize {
    let (k, patch) = split(bytes);
    let Ok(m) = crate::Manager::new() else {
        return 0;
    };
    let m = m.with_timeout(Duration::from_millis(1));
    let (Ok(d), Ok(l)) = (m.dict::<u32, Vec<u8>>(), m.list::<Vec<u8>>()) else {
        return 0;
    };
    for i in 0..(k as u32 % 16) {
        let _ = d.insert(i, vec![i as u8; 8 + 30 * i as usize]);
        let _ = l.push(vec![i as u8; 4 + i as usize]);
    }
    scribble(m.__segment_fd(), 1 << 16, patch);
    let mut ok = 0;
    for i in 0..4u32 {
        ok += d.get(&i).is_ok() as usize;
        ok += d.insert(100 + i, vec![1; 20]).is_ok() as usize;
        ok += d.remove(&(i * 3)).is_ok() as usize;
        ok += d.items().is_ok() as usize;
        ok += l.get(i as usize).is_ok() as usize;
        ok += l.push(vec![2; 10]).is_ok() as usize;
        ok += l.pop().is_ok() as usize;
        ok += l.to_vec().is_ok() as usize;
    }
    ok += m.stats().is_ok() as usize;
    ok += m.__audit().is_ok() as usize;
    ok
}

/// A pickle received from a peer: decoded (bounded before decoding), and what decodes is encoded
/// and decoded again. Any panic is a finding (`loads` catches none: a set whose keys have no total
/// order is refused before decoding).
#[cfg(feature = "pickle")]
pub fn __fuzz_pickle(bytes: &[u8]) -> bool {
    use crate::transport::pickle::{dumps, loads};
    match loads(bytes) {
        Ok(v) => {
            let again = dumps(&v).expect("a decoded value encodes");
            loads(&again).is_ok()
        }
        Err(_) => false,
    }
}
