//! Hybrid timestamps on the wire and as milliseconds.
//!
//! The wire carries a `HybridTimestamp` as a `google.protobuf.Timestamp` (`wall`) plus a
//! logical counter; the server's clock keeps whole milliseconds, and a receipt's canonical
//! bytes pack `wall_ms << 16 | logical`. This module is the one place that converts between
//! the two, so every caller agrees on what counts as a valid wall time:
//! - `seconds` is not negative, `nanos` is whole milliseconds (a multiple of 1,000,000 below
//!   1,000,000,000), and the time is at most [`WALL_MS_MAX`] milliseconds after the epoch;
//! - nothing is rounded: a wall time outside that is an error, as the server refuses it;
//! - an absent `wall` is the epoch, as protobuf defaults a missing message.

use crate::pb;

/// The latest wall time a timestamp can carry, in milliseconds since the epoch: the core packs
/// a timestamp as `wall_ms << 16 | logical` into 64 bits.
pub const WALL_MS_MAX: u64 = (1 << 48) - 1;
/// Nanoseconds in one millisecond.
const NANOS_PER_MS: i32 = 1_000_000;

/// Why a wall time does not convert to milliseconds; the message names the part at fault
/// (`seconds`, `nanos`) and its value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidWall(pub String);

/// A hybrid timestamp from wall milliseconds since the epoch and a logical counter. Exact for
/// any value; one over [`WALL_MS_MAX`] (or a counter over 65,535) is sent as given, and the
/// server refuses it naming the field.
pub fn hybrid(wall_ms: u64, logical: u32) -> pb::HybridTimestamp {
    pb::HybridTimestamp {
        logical,
        wall: Some(wall(wall_ms)),
    }
}

/// A wall time in milliseconds as a protobuf Timestamp (exact for any `u64`).
pub fn wall(wall_ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(wall_ms / 1000).expect("u64 / 1000 fits i64"),
        nanos: i32::try_from(wall_ms % 1000).expect("below 1000") * NANOS_PER_MS,
    }
}

/// A timestamp's wall time in milliseconds since the epoch; the epoch when `wall` is absent.
pub fn wall_ms(timestamp: &pb::HybridTimestamp) -> Result<u64, InvalidWall> {
    let Some(wall) = timestamp.wall else {
        return Ok(0);
    };
    let seconds = u64::try_from(wall.seconds)
        .map_err(|_| InvalidWall(format!("seconds: {} is before the epoch", wall.seconds)))?;
    if !(0..1_000_000_000).contains(&wall.nanos) || wall.nanos % NANOS_PER_MS != 0 {
        return Err(InvalidWall(format!(
            "nanos: {} is not whole milliseconds below one second",
            wall.nanos
        )));
    }
    let millis = u64::try_from(wall.nanos / NANOS_PER_MS).expect("checked non-negative");
    match seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(millis))
    {
        Some(wall_ms) if wall_ms <= WALL_MS_MAX => Ok(wall_ms),
        _ => Err(InvalidWall(format!(
            "seconds: {} is past the latest wall time, {WALL_MS_MAX} ms",
            wall.seconds
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_through_the_wire() {
        for millis in [0, 1, 999, 1000, 1_700_000_000_123, WALL_MS_MAX] {
            let timestamp = hybrid(millis, 7);
            assert_eq!(wall_ms(&timestamp), Ok(millis));
            assert_eq!(timestamp.logical, 7);
        }
        let wire = wall(1_700_000_000_123);
        assert_eq!((wire.seconds, wire.nanos), (1_700_000_000, 123_000_000));
    }

    #[test]
    fn an_absent_wall_is_the_epoch() {
        assert_eq!(wall_ms(&pb::HybridTimestamp::default()), Ok(0));
    }

    #[test]
    fn invalid_walls_are_refused_not_rounded() {
        let at = |seconds, nanos| {
            wall_ms(&pb::HybridTimestamp {
                logical: 0,
                wall: Some(prost_types::Timestamp { seconds, nanos }),
            })
        };
        assert!(at(-1, 0).expect_err("refused").0.starts_with("seconds:"));
        assert!(at(1, 1).expect_err("refused").0.starts_with("nanos:"));
        assert!(
            at(1, -1_000_000)
                .expect_err("refused")
                .0
                .starts_with("nanos:")
        );
        assert!(
            at(1, 1_000_000_000)
                .expect_err("refused")
                .0
                .starts_with("nanos:")
        );
        assert!(
            at(i64::MAX, 0)
                .expect_err("refused")
                .0
                .starts_with("seconds:")
        );
        let past = i64::try_from(WALL_MS_MAX / 1000 + 1).expect("fits");
        assert!(at(past, 0).is_err());
    }
}
