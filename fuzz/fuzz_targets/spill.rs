//! A hostile peer's stores into a queue's spill area (bitmap, block headers, the allocator's
//! mutex and redo record) and slots: gets and puts of spilled items return, never panic or hang.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmwire::fuzz::__fuzz_spill(data);
});
