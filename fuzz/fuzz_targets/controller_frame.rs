//! Arbitrary bytes as a message on the controller listener (Raft RPCs, forwarded writes,
//! heartbeats), decoded as a connection decodes them. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fjord_quorum::fuzz_decode(data);
});
