//! A hostile peer's stores into a manager's arena (allocator, block headers, directory, dict
//! buckets and entries, list elements): every call returns (bounded), never a panic or a hang.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmwire::fuzz::__fuzz_arena(data);
});
