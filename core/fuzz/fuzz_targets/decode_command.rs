//! Fuzzes `Command::decode`: any bytes must decode to a command or to `InvalidInput`, never a
//! panic, a hang or a large allocation; and a command that decodes must encode back to the
//! same bytes (one encoding per command).
//!
//! Run (about a minute): `cd core/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run decode_command
//! corpus/decode_command -- -max_total_time=60`. The seed corpus in `corpus/decode_command`
//! holds one command of every kind (`cargo test -p causeway-core --test command` pins the
//! same bytes in `tests/golden/command-v1.hex`).

#![no_main]

use causeway_core::{Command, Error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    match Command::decode(bytes) {
        Ok(command) => assert_eq!(command.encode(), bytes, "a second encoding of {command:?}"),
        Err(Error::InvalidInput(_)) => {}
        Err(other) => panic!("decode failed with {other:?}"),
    }
});
