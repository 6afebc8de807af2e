//! The identity file, `STORE`: which store a data directory holds. It lets a directory that
//! once held a store refuse to open when its log is gone, where it would otherwise start over
//! as an empty store without a word (a lost `events/` looks just like a new directory).
//!
//! Invariants:
//! - A store answers no append before its `STORE` file is durable: open writes it (temporary
//!   name, fsync, rename, fsync of the data directory) before it returns.
//! - It is written after the log's first segment is durable, never before: a crash between the
//!   two leaves a log without an identity, which the next open takes for a store from before
//!   this file existed and completes. The other order would leave an identity without a log,
//!   which open must refuse, for a store that never held an event.
//! - `STORE` present and no segment in `events/` is refused with [`Error::Corrupt`] naming
//!   `STORE` and the missing log.
//!
//! The file is `key=value` lines, so later versions can add keys (replication will record node
//! and cluster ids here); readers ignore keys they do not know. `docs/FORMAT.md` gives the bytes.

use std::fmt;
use std::path::Path;

use crate::clock::Clock;
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::segment;

/// The identity file's name in the data directory.
pub const IDENTITY_FILE: &str = "STORE";
/// The identity format version this build writes and reads.
const IDENTITY_FORMAT_VERSION: u32 = 1;
/// The largest identity file read; a longer one is damage.
const IDENTITY_BYTES_MAX: u64 = 64 * 1024;

/// A store's identity: a random id fixed when its data directory was created, kept in `STORE`.
/// Replicas of one log each have their own.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreId(pub uuid::Uuid);

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Reads the identity of the store in `dir`, if it has one, and checks that its log in
/// `events_dir` is there. `None` means a new directory, or one from before `STORE` existed.
pub(super) fn read(dir: &Path, events_dir: &Path) -> Result<Option<StoreId>> {
    let path = dir.join(IDENTITY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io(&path, err)),
    };
    if bytes.len() as u64 > IDENTITY_BYTES_MAX {
        return Err(Error::corrupt(&path, 0, "identity file is too long"));
    }
    let id = parse(&bytes).map_err(|(offset, detail)| Error::corrupt(&path, offset, detail))?;
    if !segment::has_segments(events_dir)? {
        let detail = format!(
            "this directory holds store {id}, but its log is gone: {} holds no segment; \
             refusing to open it as an empty store",
            events_dir.display()
        );
        return Err(Error::corrupt(&path, 0, detail));
    }
    Ok(Some(id))
}

/// Gives the store in `dir` a new random identity and makes the file durable.
pub(super) fn create(disk: &dyn Disk, dir: &Path, clock: &dyn Clock) -> Result<StoreId> {
    let wall_ns = clock.now_wall_ns()?;
    let (seconds, nanos) = (wall_ns / 1_000_000_000, (wall_ns % 1_000_000_000) as u32);
    // Version 7: the creation time, then 74 random bits.
    let id = StoreId(uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        seconds,
        nanos,
    )));
    let bytes = encode(id);
    crate::metafile::replace(disk, &dir.join(IDENTITY_FILE), &bytes)?;
    tracing::info!(dir = %dir.display(), store_id = %id, "wrote the store's identity file");
    Ok(id)
}

fn encode(id: StoreId) -> Vec<u8> {
    let mut text = format!("format={IDENTITY_FORMAT_VERSION}\nstore_id={id}\n");
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("crc32={crc:08x}\n"));
    text.into_bytes()
}

/// Parses an identity file; an error is the offset of the fault and what it is.
fn parse(bytes: &[u8]) -> std::result::Result<StoreId, (u64, String)> {
    let text = std::str::from_utf8(bytes).map_err(|err| {
        let offset = err.valid_up_to() as u64;
        (offset, "identity file is not UTF-8".to_string())
    })?;
    let crc_at = text
        .rfind("crc32=")
        .ok_or((0, "identity file has no crc32 line".to_string()))?;
    let stored = u32::from_str_radix(text[crc_at + 6..].trim_end(), 16).map_err(|_| {
        (
            crc_at as u64,
            "identity file's crc32 is not hex".to_string(),
        )
    })?;
    if crc32fast::hash(&bytes[..crc_at]) != stored {
        return Err((
            crc_at as u64,
            "identity file fails its checksum".to_string(),
        ));
    }
    let mut format = None;
    let mut store_id = None;
    for line in text[..crc_at].lines() {
        match line.split_once('=') {
            Some(("format", value)) => format = value.parse::<u32>().ok(),
            Some(("store_id", value)) => store_id = uuid::Uuid::parse_str(value).ok(),
            _ => {}
        }
    }
    match format {
        Some(IDENTITY_FORMAT_VERSION) => {}
        Some(version) => {
            return Err((0, format!("identity format {version} is not supported")));
        }
        None => return Err((0, "identity file has no format line".to_string())),
    }
    store_id
        .map(StoreId)
        .ok_or((0, "identity file has no valid store_id".to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_round_trips_and_keys_it_does_not_know_are_ignored() {
        let id = StoreId(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0001,
        ));
        let bytes = encode(id);
        let text = String::from_utf8(bytes.clone()).unwrap();
        let expected_crc =
            crc32fast::hash(b"format=1\nstore_id=01900000-0000-7000-8000-000000000001\n");
        assert_eq!(
            text,
            format!(
                "format=1\nstore_id=01900000-0000-7000-8000-000000000001\ncrc32={expected_crc:08x}\n"
            )
        );
        assert_eq!(parse(&bytes).unwrap(), id);

        let mut extended = format!("format=1\nstore_id={id}\nnode_id=7\n");
        let crc = crc32fast::hash(extended.as_bytes());
        extended.push_str(&format!("crc32={crc:08x}\n"));
        assert_eq!(parse(extended.as_bytes()).unwrap(), id);

        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(parse(&flipped).unwrap_err().1.contains("checksum"));
    }
}
