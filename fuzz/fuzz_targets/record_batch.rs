//! Arbitrary bytes through every record-batch decoder: header parse, framing, CRC validation,
//! record iteration with decompression, and in-place patching. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fjord_record::fuzz_decode(data);
});
