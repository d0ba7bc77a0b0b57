//! Any bytes as a segment handed over as a descriptor (header, participant table, kind area),
//! adopted as each kind: no panic, no access outside the file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmwire::fuzz::__fuzz_segment(data);
});
