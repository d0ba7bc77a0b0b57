//! A hostile peer's stores into a pipe's SPSC ring (frames, wrap fillers, split messages,
//! positions, claims): the honest reader and writer get results or errors, never a panic or a hang.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmwire::fuzz::__fuzz_spsc(data);
});
