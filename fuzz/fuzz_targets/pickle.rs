//! Any bytes as a pickle from a peer (feature `pickle`): refused or decoded, never a panic, and
//! never an allocation beyond the bound checked before decoding; what decodes re-encodes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmwire::fuzz::__fuzz_pickle(data);
});
