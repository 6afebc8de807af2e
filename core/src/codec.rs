//! The event record: the canonical bytes of one committed event, as stored in a frame body.
//!
//! The encoding is hand-written, little-endian and length-prefixed, so that it is canonical (one
//! event has exactly one encoding) and the hash can be taken over the same bytes that are stored.
//! `docs/FORMAT.md` lays it out byte by byte; the golden test in `tests/format.rs` pins it.
//!
//! A record is a 6-byte prefix (record version, kind, header length), the header, then the
//! payload. The header holds everything but the payload, so the index can be rebuilt from
//! headers alone without touching payloads. It ends with the 32-byte hash and the append
//! trailer: on the first event of each append, what the append carried beyond its events (the
//! idempotency key, the request digest, the gates it passed). The trailer is bookkeeping for
//! retries and receipts; it is covered by the frame CRC and the signed receipt, not by the
//! hash, so an event's hash can be recomputed from the event alone.

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

/// What the first event of an append records about the append as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    /// Events in the append.
    pub n_events: u16,
    /// The idempotency key, empty when none was given.
    pub idempotency_key: String,
    /// blake3 of the append's content as the client sent it (see `Append::request_hash`).
    pub request_hash: Hash,
    /// The gates the append passed: name and definition version.
    pub gates: Vec<(String, u64)>,
}

/// Encodes `event` (whose `hash` field is ignored) with an optional append trailer, and returns
/// the record bytes and the event's hash.
pub fn encode(event: &Event, prev_hash: &Hash, trailer: Option<&Trailer>) -> (Vec<u8>, Hash) {
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
    let hash = chain_hash(
        prev_hash,
        &out[..2],
        &out[RECORD_PREFIX_BYTES..],
        &event.payload,
    );
    out.extend_from_slice(&hash);
    match trailer {
        None => out.extend_from_slice(&0u16.to_le_bytes()),
        Some(trailer) => {
            out.extend_from_slice(&trailer.n_events.to_le_bytes());
            put_str(&mut out, &trailer.idempotency_key);
            out.extend_from_slice(&trailer.request_hash);
            put_len(&mut out, trailer.gates.len());
            for (name, version) in &trailer.gates {
                put_str(&mut out, name);
                out.extend_from_slice(&version.to_le_bytes());
            }
        }
    }
    let header_len =
        u32::try_from(out.len() - RECORD_PREFIX_BYTES).expect("headers are bounded by limits.rs");
    out[2..6].copy_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&event.payload);
    (out, hash)
}

/// The hash of one event: blake3 over the previous hash of its entity, the record version and
/// kind, the header fields before the hash, and the payload. The header length is left out so
/// that the trailer after the hash cannot change it.
pub fn chain_hash(prev_hash: &Hash, version_kind: &[u8], fields: &[u8], payload: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prev_hash);
    hasher.update(version_kind);
    hasher.update(fields);
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
    decode_with_trailer(record).map(|(event, _)| event)
}

/// Decodes a record and its append trailer, if it has one.
pub fn decode_with_trailer(record: &[u8]) -> Result<(Event, Option<Trailer>), String> {
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
    let n_events = reader.len()?;
    let trailer = if n_events == 0 {
        None
    } else {
        let idempotency_key = reader.string()?;
        let request_hash: Hash = reader.take(HASH_BYTES)?.try_into().expect("took 32 bytes");
        let n_gates = reader.len()?;
        let mut gates = Vec::with_capacity(n_gates);
        for _ in 0..n_gates {
            let name = reader.string()?;
            gates.push((name, reader.u64()?));
        }
        Some(Trailer {
            n_events: n_events as u16,
            idempotency_key,
            request_hash,
            gates,
        })
    };
    if !reader.bytes.is_empty() {
        return Err(format!(
            "{} unread bytes after the header",
            reader.bytes.len()
        ));
    }
    let payload = record[RECORD_PREFIX_BYTES + header_len..].to_vec();
    let event = Event {
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
    };
    Ok((event, trailer))
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
    if record.len() < RECORD_PREFIX_BYTES + header_len || header_len < HASH_BYTES + 2 {
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
