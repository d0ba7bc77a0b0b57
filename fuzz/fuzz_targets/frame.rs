//! Any byte stream, arriving in pieces of any sizes, through the frame reader of a socket
//! Connection: no panic, no allocation past what arrived (doubling), every frame its length.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmwire::transport::__fuzz_frames(data);
});
