//! The replicated command codec: the payload of every normal Raft log entry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    causeway_core::fuzzing::command(data);
});
