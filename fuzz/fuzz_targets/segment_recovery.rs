//! Arbitrary bytes as a segment file after a crash: recovery must not panic, and everything the
//! recovered log serves must be valid batches at rising offsets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fjord_log::sim::fuzz_recovery(data);
});
