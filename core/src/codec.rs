//! The event record: the canonical bytes of one committed event, as stored in a frame body.
//!
//! The encoding is hand-written, little-endian and length-prefixed, so that it is canonical (one
//! event has exactly one encoding) and the hash can be taken over the same bytes that are stored.
//! `docs/FORMAT.md` lays it out byte by byte; the golden test in `tests/format.rs` pins it.
//!
//! A record is a 6-byte prefix (record version, kind, header length), the header, then the
//! payload. The header holds everything but the payload and ends with the 32-byte hash, so the
//! index can be rebuilt from headers alone without touching payloads.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::event::{Event, EventId, Hash, Position, Version};

/// The record format version this build writes.
pub const RECORD_VERSION: u8 = 1;
/// The record kind of an event. Other kinds are refused as unknown.
pub const KIND_EVENT: u8 = 1;
/// Bytes before the header: record version, kind, header length.
pub const RECORD_PREFIX_BYTES: usize = 6;
const HASH_BYTES: usize = 32;

/// Encodes `event` (whose `hash` field is ignored) and returns the record bytes with the hash
/// computed over them and `prev_hash` written into place.
pub fn encode(event: &Event, prev_hash: &Hash) -> (Vec<u8>, Hash) {
    let mut out = Vec::with_capacity(128 + event.payload.len());
    out.push(RECORD_VERSION);
    out.push(KIND_EVENT);
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&event.position.0.to_le_bytes());
    out.extend_from_slice(&event.version.0.to_le_bytes());
    out.extend_from_slice(&event.timestamp.to_u64().to_le_bytes());
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(event.correlation_id.as_bytes());
    put_str(&mut out, &event.scope);
    put_str(&mut out, &event.entity);
    put_str(&mut out, &event.event_type);
    put_str(&mut out, &event.content_type);
    put_len(&mut out, event.tags.len());
    for tag in &event.tags {
        put_str(&mut out, tag);
    }
    put_len(&mut out, event.metadata.len());
    for (key, value) in &event.metadata {
        put_str(&mut out, key);
        put_str(&mut out, value);
    }
    put_len(&mut out, event.causation.len());
    for parent in &event.causation {
        out.extend_from_slice(parent.as_bytes());
    }
    let hash_start = out.len();
    let header_len = u32::try_from(hash_start + HASH_BYTES - RECORD_PREFIX_BYTES)
        .expect("headers are bounded by limits.rs");
    out[2..6].copy_from_slice(&header_len.to_le_bytes());
    let hash = chain_hash(prev_hash, &out[..hash_start], &event.payload);
    out.extend_from_slice(&hash);
    out.extend_from_slice(&event.payload);
    (out, hash)
}

/// The hash of one event: blake3 over the previous hash of its entity, the record bytes before
/// the hash field (prefix and header), and the payload.
pub fn chain_hash(prev_hash: &Hash, head: &[u8], payload: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prev_hash);
    hasher.update(head);
    hasher.update(payload);
    *hasher.finalize().as_bytes()
}

/// The running log digest after one more event: blake3 over the previous digest and its hash.
pub fn next_digest(digest: &Hash, event_hash: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(digest);
    hasher.update(event_hash);
    *hasher.finalize().as_bytes()
}

/// The prefix and header of a record: what the index keeps for rebuilding without payloads.
pub fn header_bytes(record: &[u8]) -> Result<&[u8], String> {
    let header_len = prefix(record)?;
    Ok(&record[..RECORD_PREFIX_BYTES + header_len])
}

/// Decodes a whole record. With a record cut after its header (see [`header_bytes`]), the
/// payload comes back empty.
pub fn decode(record: &[u8]) -> Result<Event, String> {
    let header_len = prefix(record)?;
    let mut reader = Reader {
        bytes: &record[RECORD_PREFIX_BYTES..RECORD_PREFIX_BYTES + header_len],
    };
    let position = Position(reader.u64()?);
    let version = Version(reader.u64()?);
    let timestamp = Timestamp::from_u64(reader.u64()?);
    let id = reader.id()?;
    let correlation_id = reader.id()?;
    let scope = reader.string()?;
    let entity = reader.string()?;
    let event_type = reader.string()?;
    let content_type = reader.string()?;
    let n_tags = reader.len()?;
    let tags = (0..n_tags)
        .map(|_| reader.string())
        .collect::<Result<Vec<_>, _>>()?;
    let n_entries = reader.len()?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_entries {
        let key = reader.string()?;
        metadata.insert(key, reader.string()?);
    }
    let n_parents = reader.len()?;
    let causation = (0..n_parents)
        .map(|_| reader.id())
        .collect::<Result<Vec<_>, _>>()?;
    let hash: Hash = reader.take(HASH_BYTES)?.try_into().expect("took 32 bytes");
    if !reader.bytes.is_empty() {
        return Err(format!(
            "{} unread bytes after the header",
            reader.bytes.len()
        ));
    }
    let payload = record[RECORD_PREFIX_BYTES + header_len..].to_vec();
    Ok(Event {
        position,
        version,
        timestamp,
        id,
        scope,
        entity,
        event_type,
        tags,
        content_type,
        metadata,
        causation,
        correlation_id,
        hash,
        payload,
    })
}

fn prefix(record: &[u8]) -> Result<usize, String> {
    if record.len() < RECORD_PREFIX_BYTES {
        return Err("record is shorter than its prefix".to_string());
    }
    if record[0] != RECORD_VERSION {
        return Err(format!("record version {} is not supported", record[0]));
    }
    if record[1] != KIND_EVENT {
        return Err(format!("record kind {} is unknown", record[1]));
    }
    let header_len = u32::from_le_bytes(record[2..6].try_into().expect("4 bytes")) as usize;
    if record.len() < RECORD_PREFIX_BYTES + header_len || header_len < HASH_BYTES {
        return Err(format!(
            "header length {header_len} does not fit a {}-byte record",
            record.len()
        ));
    }
    Ok(header_len)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(
        &u16::try_from(len)
            .expect("counts and names are bounded below 64 KiB")
            .to_le_bytes(),
    );
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    put_len(out, value.len());
    out.extend_from_slice(value.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n_bytes: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n_bytes {
            return Err(format!(
                "header ends {} bytes early",
                n_bytes - self.bytes.len()
            ));
        }
        let (taken, rest) = self.bytes.split_at(n_bytes);
        self.bytes = rest;
        Ok(taken)
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("took 8 bytes"),
        ))
    }

    fn len(&mut self) -> Result<usize, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("took 2 bytes")) as usize)
    }

    fn id(&mut self) -> Result<EventId, String> {
        let bytes: [u8; 16] = self.take(16)?.try_into().expect("took 16 bytes");
        Ok(EventId(uuid::Uuid::from_bytes(bytes)))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.len()?;
        String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| "a name is not valid utf-8".to_string())
    }
}
