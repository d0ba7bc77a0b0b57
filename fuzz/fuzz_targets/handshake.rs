//! Any bytes as an authkey handshake message (a challenge to answer, an answer to check): no
//! panic, and every answer we make passes our own check.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmwire::transport::__fuzz_handshake(data);
});
