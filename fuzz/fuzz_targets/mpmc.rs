//! A hostile peer's stores into a queue's MPMC slots (control words, lengths, positions): the
//! honest side's gets and puts return, with items or errors, never a panic or a hang.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmwire::fuzz::__fuzz_mpmc(data);
});
