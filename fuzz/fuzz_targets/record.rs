//! The event record codec (a frame body of the event log) and the applied-mark record.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    causeway_core::fuzzing::record(data);
});
