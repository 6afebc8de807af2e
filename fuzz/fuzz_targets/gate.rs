//! CEL gate definitions: an expression, a NUL byte, and the JSON payload of the event it judges.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    causeway_core::fuzzing::gate(data);
});
