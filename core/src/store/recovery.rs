//! Opening a store: the directory lock, the sidecar segment indexes, and rebuilding the
//! in-memory state (indexes, idempotency keys) from the log.
//!
//! Everything here runs before the writer starts, on one thread. The log is the only source of
//! truth: a missing or damaged `.idx` costs a scan, never data, and every event read from disk
//! is checked for the position and version the index expects before it is indexed, so a damaged
//! log is an error naming the file and offset, not a panic.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::codec::{self, Trailer};
use crate::error::{Error, Result};
use crate::event::{Event, Hash};
use crate::index::Index;
use crate::limits::IDEMPOTENCY_KEYS_MAX;
use crate::segment::{self, FrameLoc, SegmentLog};

const IDX_MAGIC: [u8; 8] = *b"CWAYIDX\0";
const IDX_FORMAT_VERSION: u16 = 1;

/// What a keyed append committed, kept so a retry gets the same receipt.
#[derive(Clone, Debug)]
pub(super) struct KeyEntry {
    pub(super) first: u64,
    pub(super) n_events: u64,
    pub(super) request_hash: Hash,
    pub(super) gates: Vec<(String, u64)>,
    pub(super) digest: Hash,
}

/// The idempotency window: the last [`IDEMPOTENCY_KEYS_MAX`] keys, oldest forgotten first.
#[derive(Debug, Default)]
pub(super) struct Keys {
    by_key: HashMap<String, KeyEntry>,
    order: VecDeque<String>,
}

impl Keys {
    pub(super) fn get(&self, key: &str) -> Option<&KeyEntry> {
        self.by_key.get(key)
    }

    pub(super) fn insert(&mut self, key: String, entry: KeyEntry) {
        if self.order.len() == IDEMPOTENCY_KEYS_MAX
            && let Some(oldest) = self.order.pop_front()
        {
            self.by_key.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.by_key.insert(key, entry);
    }
}

/// Collects keyed appends while the log is replayed: the trailer opens an entry on the first
/// event of an append, and the digest is taken when its last event has been indexed.
#[derive(Default)]
struct KeysBuilder {
    keys: Keys,
    open: Option<(String, KeyEntry)>,
}

impl KeysBuilder {
    fn observe(&mut self, index: &Index, event: &Event, trailer: Option<Trailer>) {
        if let Some(trailer) = trailer
            && !trailer.idempotency_key.is_empty()
        {
            let entry = KeyEntry {
                first: event.position.0,
                n_events: u64::from(trailer.n_events),
                request_hash: trailer.request_hash,
                gates: trailer.gates,
                digest: [0; 32],
            };
            self.open = Some((trailer.idempotency_key, entry));
        }
        if let Some((_, entry)) = &self.open
            && event.position.0 == entry.first + entry.n_events - 1
        {
            let (key, mut entry) = self.open.take().expect("checked above");
            entry.digest = index.digest();
            self.keys.insert(key, entry);
        }
    }
}

pub(super) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|err| Error::io(&path, err))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(err)) => Err(Error::io(&path, err)),
    }
}

/// The `.idx` entries of the active segment, kept by the writer until the segment is sealed.
#[derive(Debug, Default)]
pub(super) struct IdxBuffer {
    /// First position of the segment.
    pub(super) first: u64,
    n_entries: u64,
    bytes: Vec<u8>,
}

impl IdxBuffer {
    /// An empty buffer for the segment starting at `first`.
    pub(super) fn starting_at(first: u64) -> IdxBuffer {
        IdxBuffer {
            first,
            ..IdxBuffer::default()
        }
    }

    pub(super) fn push(&mut self, loc: FrameLoc, header: &[u8]) {
        self.bytes
            .extend_from_slice(&(loc.offset as u32).to_le_bytes());
        self.bytes.extend_from_slice(&loc.body_len.to_le_bytes());
        self.bytes
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(header);
        self.n_entries += 1;
    }

    /// Writes the sidecar index of a sealed segment: to a temporary file, fsync'd, renamed into
    /// place, and the directory fsync'd, so a crash leaves either no `.idx` or a whole one.
    pub(super) fn write(&self, dir: &Path) -> Result<()> {
        let mut out = Vec::with_capacity(32 + self.bytes.len());
        out.extend_from_slice(&IDX_MAGIC);
        out.extend_from_slice(&IDX_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&[0u8; 6]);
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.n_entries.to_le_bytes());
        out.extend_from_slice(&self.bytes);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let path = idx_path(dir, self.first);
        let tmp = path.with_extension("idx.tmp");
        fs::write(&tmp, &out).map_err(|err| Error::io(&tmp, err))?;
        File::open(&tmp)
            .and_then(|file| file.sync_all())
            .map_err(|err| Error::io(&tmp, err))?;
        fs::rename(&tmp, &path).map_err(|err| Error::io(&path, err))?;
        segment::sync_dir(dir)
    }
}

fn idx_path(dir: &Path, first: u64) -> PathBuf {
    segment::segment_path(dir, first).with_extension("idx")
}

/// Reads a sealed segment's `.idx`; `None` if it is missing or fails any check (the segment is
/// then scanned instead, so a bad `.idx` costs time, never data).
fn load_idx(
    dir: &Path,
    first: u64,
    n_expected: u64,
) -> Option<Vec<(FrameLoc, Event, Option<Trailer>)>> {
    let path = idx_path(dir, first);
    let bytes = fs::read(&path).ok()?;
    let fail = |why: &str| {
        tracing::warn!(file = %path.display(), why, "ignoring a damaged segment index; scanning the segment");
        None
    };
    if bytes.len() < 36 {
        return fail("too short");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return fail("checksum mismatch");
    }
    let n_entries = u64::from_le_bytes(body[24..32].try_into().expect("8 bytes"));
    if body[..8] != IDX_MAGIC
        || u64::from_le_bytes(body[16..24].try_into().expect("8 bytes")) != first
        || n_entries != n_expected
    {
        return fail("header does not match the segment");
    }
    let mut entries = Vec::with_capacity(n_entries as usize);
    let mut rest = &body[32..];
    while !rest.is_empty() {
        if rest.len() < 12 {
            return fail("entry cut short");
        }
        let word = |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
        let (offset, body_len, header_len) = (word(0), word(4), word(8) as usize);
        if rest.len() < 12 + header_len {
            return fail("entry cut short");
        }
        let Ok((event, trailer)) = codec::decode_with_trailer(&rest[12..12 + header_len]) else {
            return fail("entry does not decode");
        };
        entries.push((
            FrameLoc {
                segment: first,
                offset: u64::from(offset),
                body_len,
            },
            event,
            trailer,
        ));
        rest = &rest[12 + header_len..];
    }
    if entries.len() as u64 != n_entries {
        return fail("entry count mismatch");
    }
    Some(entries)
}

/// Builds the indexes from the segments: `.idx` files for sealed segments, a scan for the rest.
/// Returns the index, the idempotency keys, and the `.idx` buffer of the active segment.
pub(super) fn rebuild_index(log: &SegmentLog) -> Result<(Index, Keys, IdxBuffer)> {
    let mut index = Index::default();
    index.reserve(usize::try_from(log.last_index() + 1 - log.first_index()).unwrap_or(0));
    let mut keys = KeysBuilder::default();
    let segments = log.segments();
    let dir = segments[0]
        .path
        .parent()
        .expect("segments live in a directory")
        .to_path_buf();
    let mut active_idx = IdxBuffer::default();
    for (segment_idx, info) in segments.iter().enumerate() {
        index.add_segment(info.first_index);
        let next_first = segments
            .get(segment_idx + 1)
            .map_or(log.last_index() + 1, |next| next.first_index);
        if info.sealed
            && let Some(entries) = load_idx(&dir, info.first_index, next_first - info.first_index)
        {
            for (loc, event, trailer) in entries {
                insert_checked(&mut index, &event, loc, &info.path)?;
                keys.observe(&index, &event, trailer);
            }
            continue;
        }
        let mut idx = IdxBuffer {
            first: info.first_index,
            ..IdxBuffer::default()
        };
        for frame in log.scan(info.first_index)? {
            let (event, trailer) = codec::decode_with_trailer(&frame.body)
                .map_err(|detail| Error::corrupt(&info.path, frame.loc.offset, detail))?;
            let header = codec::header_bytes(&frame.body).expect("decoded above");
            insert_checked(&mut index, &event, frame.loc, &info.path)?;
            keys.observe(&index, &event, trailer);
            idx.push(frame.loc, header);
        }
        if info.sealed {
            if idx.n_entries != next_first - info.first_index {
                let detail = format!(
                    "sealed segment holds {} events, expected {}",
                    idx.n_entries,
                    next_first - info.first_index
                );
                return Err(Error::corrupt(&info.path, 0, detail));
            }
            idx.write(&dir)?;
        } else {
            active_idx = idx;
        }
    }
    Ok((index, keys.keys, active_idx))
}

/// Inserts an event read from disk after checking what the index would otherwise assert, so a
/// damaged log is an error, not a panic.
fn insert_checked(index: &mut Index, event: &Event, loc: FrameLoc, path: &Path) -> Result<()> {
    index
        .insert(event, loc)
        .map_err(|detail| Error::corrupt(path, loc.offset, detail))
}
