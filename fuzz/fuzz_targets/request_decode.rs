//! Arbitrary bytes as a request frame: header checks and decoding of every supported API and
//! version. Nothing may panic or abort (e.g. by allocating for a forged element count).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fjord_broker::handlers::fuzz_decode(data);
});
