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
//!
//! Decoding goes through [`EventRecord`], a view that borrows from the record and allocates
//! nothing: opening a store indexes millions of headers this way, and a server encodes log and
//! entity reads for the wire from it (`Store::read_log_records`); only reads that return
//! [`Event`]s make owned copies.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::command::EntryId;
use crate::event::{Event, EventId, Hash, Position, Version};

/// The record format version this build writes.
pub const RECORD_VERSION: u8 = 1;
/// The record kind of an event. Other kinds are refused as unknown by [`decode`].
pub const KIND_EVENT: u8 = 1;
/// The record kind of an applied mark: the body of a segment mark frame that records the last
/// replicated log entry applied when the entries after the last event wrote nothing.
pub const KIND_APPLIED: u8 = 2;
/// Bytes of an applied mark record: version, kind, term, index.
const APPLIED_RECORD_BYTES: usize = 2 + 16;
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
    /// The replicated log entry the append was applied from (`Store::apply_at`).
    pub entry: Option<EntryId>,
}

/// Encodes `event` (whose `hash` field is ignored) with an optional append trailer, and returns
/// the record bytes and the event's hash.
pub fn encode(event: &Event, prev_hash: &Hash, trailer: Option<&Trailer>) -> (Vec<u8>, Hash) {
    let mut out = Vec::with_capacity(record_len(event, trailer));
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
            match trailer.entry {
                None => out.push(0),
                Some(entry) => {
                    out.push(1);
                    out.extend_from_slice(&entry.term.to_le_bytes());
                    out.extend_from_slice(&entry.index.to_le_bytes());
                }
            }
        }
    }
    let header_len =
        u32::try_from(out.len() - RECORD_PREFIX_BYTES).expect("headers are bounded by limits.rs");
    out[2..6].copy_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&event.payload);
    debug_assert_eq!(
        out.len(),
        out.capacity(),
        "record_len matches what encode writes"
    );
    (out, hash)
}

/// The record of an applied mark.
pub fn encode_applied(entry: EntryId) -> Vec<u8> {
    let mut out = Vec::with_capacity(APPLIED_RECORD_BYTES);
    out.push(RECORD_VERSION);
    out.push(KIND_APPLIED);
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out
}

/// Decodes what [`encode_applied`] wrote.
pub fn decode_applied(record: &[u8]) -> Result<EntryId, String> {
    if record.len() != APPLIED_RECORD_BYTES
        || record[0] != RECORD_VERSION
        || record[1] != KIND_APPLIED
    {
        return Err(format!(
            "a mark of {} bytes is not an applied record",
            record.len()
        ));
    }
    Ok(EntryId {
        term: u64::from_le_bytes(record[2..10].try_into().expect("8 bytes")),
        index: u64::from_le_bytes(record[10..18].try_into().expect("8 bytes")),
    })
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
    Ok(EventRecord::parse(record)?.to_event())
}

/// A record decoded in place: the fixed-size fields read out, every name borrowed from the
/// record's bytes, and the lists (tags, metadata, causation, gates) left encoded behind
/// iterators. It allocates nothing, which matters when the store opens and reads the headers of
/// millions of events only to index them, and when a reader turns stored events straight into
/// another encoding ([`Store::read_log_records`](crate::Store::read_log_records));
/// [`EventRecord::to_event`] makes the owned [`Event`].
///
/// [`EventRecord::parse`] checks the whole record as `decode` does (every length fits, every
/// string is UTF-8, no byte is left over), so the iterators cannot fail.
#[derive(Clone, Copy, Debug)]
pub struct EventRecord<'a> {
    /// The event's position.
    pub position: Position,
    /// The event's version within its entity.
    pub version: Version,
    /// The event's timestamp.
    pub timestamp: Timestamp,
    /// The event's id.
    pub id: EventId,
    /// The event's correlation id.
    pub correlation_id: EventId,
    /// The event's scope.
    pub scope: &'a str,
    /// The event's entity.
    pub entity: &'a str,
    /// The event's type.
    pub event_type: &'a str,
    /// The payload's content type, possibly empty.
    pub content_type: &'a str,
    /// The tags, in the order given.
    pub tags: Strs<'a>,
    /// The metadata as key, value, key, value, ..., sorted by key.
    pub metadata: Strs<'a>,
    /// The causation parents.
    pub causation: Ids<'a>,
    /// The event's hash.
    pub hash: &'a Hash,
    /// The append trailer, on the first event of an append.
    pub trailer: Option<TrailerRef<'a>>,
    /// The payload: empty when the record was cut after its header.
    pub payload: &'a [u8],
}

/// An append trailer borrowed from a record; see `Trailer`.
#[derive(Clone, Copy, Debug)]
pub struct TrailerRef<'a> {
    /// Events in the append.
    pub n_events: u16,
    /// The idempotency key, empty when none was given.
    pub idempotency_key: &'a str,
    /// blake3 of the append's content as the client sent it.
    pub request_hash: &'a Hash,
    /// The gates the append passed: name and definition version.
    pub gates: Gates<'a>,
    /// The replicated log entry the append was applied from, when recorded.
    pub entry: Option<EntryId>,
}

impl<'a> EventRecord<'a> {
    /// Decodes the prefix and header of a record, checking all of it; what follows the header
    /// is the payload.
    pub fn parse(record: &'a [u8]) -> Result<EventRecord<'a>, String> {
        let header_len = prefix(record)?;
        let mut reader = Reader {
            bytes: &record[RECORD_PREFIX_BYTES..RECORD_PREFIX_BYTES + header_len],
        };
        let position = Position(reader.u64()?);
        let version = Version(reader.u64()?);
        let timestamp = Timestamp::from_u64(reader.u64()?);
        let id = reader.id()?;
        let correlation_id = reader.id()?;
        let scope = reader.str()?;
        let entity = reader.str()?;
        let event_type = reader.str()?;
        let content_type = reader.str()?;
        let n_tags = reader.len()?;
        let tags = reader.strs(n_tags)?;
        let n_entries = reader.len()?;
        let metadata = reader.strs(2 * n_entries)?;
        check_keys_ascend(metadata)?;
        let n_parents = reader.len()?;
        let causation = Ids {
            bytes: reader.take(16 * n_parents)?,
        };
        let hash = reader.hash()?;
        let n_events = reader.len()?;
        let trailer = if n_events == 0 {
            None
        } else {
            let idempotency_key = reader.str()?;
            let request_hash = reader.hash()?;
            let n_gates = reader.len()?;
            let gates_start = reader.bytes;
            for _ in 0..n_gates {
                reader.str()?;
                reader.u64()?;
            }
            let gates_bytes = gates_start.len() - reader.bytes.len();
            // A trailer written before entries were recorded ends after its gates.
            let entry = if reader.bytes.is_empty() {
                None
            } else {
                match reader.take(1)?[0] {
                    0 => None,
                    1 => Some(EntryId {
                        term: reader.u64()?,
                        index: reader.u64()?,
                    }),
                    other => return Err(format!("trailer entry flag is {other}")),
                }
            };
            Some(TrailerRef {
                entry,
                n_events: n_events as u16,
                idempotency_key,
                request_hash,
                gates: Gates {
                    n_left: n_gates,
                    bytes: &gates_start[..gates_bytes],
                },
            })
        };
        if !reader.bytes.is_empty() {
            return Err(format!(
                "{} unread bytes after the header",
                reader.bytes.len()
            ));
        }
        Ok(EventRecord {
            position,
            version,
            timestamp,
            id,
            correlation_id,
            scope,
            entity,
            event_type,
            content_type,
            tags,
            metadata,
            causation,
            hash,
            trailer,
            payload: &record[RECORD_PREFIX_BYTES + header_len..],
        })
    }

    /// The owned event, payload included.
    pub fn to_event(self) -> Event {
        let mut metadata = BTreeMap::new();
        let mut keys_values = self.metadata;
        while let (Some(key), Some(value)) = (keys_values.next(), keys_values.next()) {
            metadata.insert(key.to_string(), value.to_string());
        }
        Event {
            position: self.position,
            version: self.version,
            timestamp: self.timestamp,
            id: self.id,
            scope: self.scope.to_string(),
            entity: self.entity.to_string(),
            event_type: self.event_type.to_string(),
            tags: self.tags.map(str::to_string).collect(),
            content_type: self.content_type.to_string(),
            metadata,
            causation: self.causation.collect(),
            correlation_id: self.correlation_id,
            hash: *self.hash,
            payload: bytes::Bytes::copy_from_slice(self.payload),
        }
    }
}

/// Strings encoded back to back as u16 length and UTF-8 bytes, checked by [`EventRecord::parse`].
#[derive(Clone, Copy, Debug)]
pub struct Strs<'a> {
    n_left: usize,
    bytes: &'a [u8],
}

impl<'a> Iterator for Strs<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.n_left == 0 {
            return None;
        }
        self.n_left -= 1;
        let mut reader = Reader { bytes: self.bytes };
        let value = reader.str().expect("checked when the header was parsed");
        self.bytes = reader.bytes;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.n_left, Some(self.n_left))
    }
}

impl ExactSizeIterator for Strs<'_> {}

impl<'a> Strs<'a> {
    /// The same strings as their UTF-8 bytes, without checking them again: for a reader that
    /// copies them into another encoding.
    pub fn bytes(self) -> StrBytes<'a> {
        StrBytes {
            n_left: self.n_left,
            bytes: self.bytes,
        }
    }
}

/// The strings of [`Strs`] as bytes; see [`Strs::bytes`].
#[derive(Clone, Copy, Debug)]
pub struct StrBytes<'a> {
    n_left: usize,
    bytes: &'a [u8],
}

impl<'a> Iterator for StrBytes<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.n_left == 0 {
            return None;
        }
        self.n_left -= 1;
        let mut reader = Reader { bytes: self.bytes };
        let len = reader.len().expect("checked when the header was parsed");
        let value = reader
            .take(len)
            .expect("checked when the header was parsed");
        self.bytes = reader.bytes;
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.n_left, Some(self.n_left))
    }
}

impl ExactSizeIterator for StrBytes<'_> {}

/// Event ids encoded back to back, 16 bytes each.
#[derive(Clone, Copy, Debug)]
pub struct Ids<'a> {
    bytes: &'a [u8],
}

impl Iterator for Ids<'_> {
    type Item = EventId;

    fn next(&mut self) -> Option<EventId> {
        let (id, rest) = self.bytes.split_first_chunk::<16>()?;
        self.bytes = rest;
        Some(EventId(uuid::Uuid::from_bytes(*id)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.bytes.len() / 16, Some(self.bytes.len() / 16))
    }
}

impl ExactSizeIterator for Ids<'_> {}

/// Gates of a trailer encoded back to back as name (u16 length and UTF-8) and version (u64),
/// checked by [`EventRecord::parse`].
#[derive(Clone, Copy, Debug)]
pub struct Gates<'a> {
    n_left: usize,
    bytes: &'a [u8],
}

impl<'a> Iterator for Gates<'a> {
    type Item = (&'a str, u64);

    fn next(&mut self) -> Option<(&'a str, u64)> {
        if self.n_left == 0 {
            return None;
        }
        self.n_left -= 1;
        let mut reader = Reader { bytes: self.bytes };
        let name = reader.str().expect("checked when the header was parsed");
        let version = reader.u64().expect("checked when the header was parsed");
        self.bytes = reader.bytes;
        Some((name, version))
    }
}

/// The metadata is written from a sorted map: its keys ascend strictly (by their bytes, which
/// is `String`'s order). A record whose keys do not is damaged, even if its checksum holds: a
/// reader that copies its entries as they are must not send a key twice or out of order.
fn check_keys_ascend(metadata: Strs<'_>) -> Result<(), String> {
    let mut keys_values = metadata.bytes();
    let mut previous: Option<&[u8]> = None;
    while let (Some(key), Some(_)) = (keys_values.next(), keys_values.next()) {
        if previous.is_some_and(|previous| previous >= key) {
            return Err(format!(
                "metadata key {:?} does not come after {:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(previous.unwrap_or_default())
            ));
        }
        previous = Some(key);
    }
    Ok(())
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

/// The length of the record [`encode`] writes, so that it allocates once: the writer encodes
/// every event, and growing the buffer part way cost a copy and a second allocation per event.
fn record_len(event: &Event, trailer: Option<&Trailer>) -> usize {
    const LEN: usize = 2;
    let str_len = |value: &str| LEN + value.len();
    let fixed = RECORD_PREFIX_BYTES + 3 * 8 + 2 * 16;
    let names = [
        &event.scope,
        &event.entity,
        &event.event_type,
        &event.content_type,
    ]
    .into_iter()
    .map(|name| str_len(name))
    .sum::<usize>();
    let tags = LEN + event.tags.iter().map(|tag| str_len(tag)).sum::<usize>();
    let metadata = LEN
        + event
            .metadata
            .iter()
            .map(|(key, value)| str_len(key) + str_len(value))
            .sum::<usize>();
    let causation = LEN + 16 * event.causation.len();
    let trailer = match trailer {
        None => 2,
        Some(trailer) => {
            2 + str_len(&trailer.idempotency_key)
                + HASH_BYTES
                + LEN
                + trailer
                    .gates
                    .iter()
                    .map(|(name, _)| str_len(name) + 8)
                    .sum::<usize>()
                + 1
                + trailer.entry.map_or(0, |_| 16)
        }
    };
    fixed + names + tags + metadata + causation + HASH_BYTES + trailer + event.payload.len()
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

    fn hash(&mut self) -> Result<&'a Hash, String> {
        Ok(self.take(HASH_BYTES)?.try_into().expect("took 32 bytes"))
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let len = self.len()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| "a name is not valid utf-8".to_string())
    }

    /// Checks `n_strs` strings and returns them unread.
    fn strs(&mut self, n_strs: usize) -> Result<Strs<'a>, String> {
        let start = self.bytes;
        for _ in 0..n_strs {
            self.str()?;
        }
        Ok(Strs {
            n_left: n_strs,
            bytes: &start[..start.len() - self.bytes.len()],
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The in-place decoder against the encoder: every field comes back, on both the header-only
    //! records the `.idx` files hold and whole records, and what is not a valid record is refused.

    use super::*;

    fn id(n: u128) -> EventId {
        EventId(uuid::Uuid::from_u128(n))
    }

    fn event() -> Event {
        Event {
            position: Position(7),
            version: Version(3),
            timestamp: Timestamp::new(1_700_000_000_000, 4),
            id: id(1),
            scope: "acme".to_string(),
            entity: "order-7".to_string(),
            event_type: "OrderPaid".to_string(),
            tags: vec!["customer:1".to_string(), "région:été".to_string()],
            content_type: "application/json".to_string(),
            metadata: BTreeMap::from([
                ("a".to_string(), "1".to_string()),
                ("source".to_string(), "web".to_string()),
            ]),
            causation: vec![id(2), id(3)],
            correlation_id: id(2),
            hash: [0; 32],
            payload: bytes::Bytes::from_static(br#"{"amount": 5}"#),
        }
    }

    fn trailer() -> Trailer {
        Trailer {
            n_events: 2,
            idempotency_key: "key-1".to_string(),
            request_hash: [9; 32],
            gates: vec![("limit".to_string(), 12), ("unique".to_string(), 40)],
            entry: Some(EntryId { term: 3, index: 77 }),
        }
    }

    #[test]
    fn header_round_trips_every_field_and_the_trailer() {
        let original = event();
        let (record, hash) = encode(&original, &[5; 32], Some(&trailer()));
        let header = EventRecord::parse(&record).unwrap();
        assert_eq!(header.scope, "acme");
        assert_eq!(header.entity, "order-7");
        assert_eq!(header.event_type, "OrderPaid");
        assert_eq!(header.tags.len(), 2);
        let tag_bytes: Vec<&[u8]> = header.tags.bytes().collect();
        assert_eq!(
            tag_bytes,
            ["customer:1".as_bytes(), "région:été".as_bytes()]
        );
        assert_eq!(header.metadata.bytes().len(), 4);
        assert_eq!(header.causation.len(), 2);
        assert_eq!(*header.hash, hash);
        assert_eq!(header.payload, &original.payload[..]);
        let decoded = header.to_event();
        assert_eq!(decoded, Event { hash, ..original });

        let trailer_ref = header
            .trailer
            .expect("the first event of an append has one");
        let expected = trailer();
        assert_eq!(trailer_ref.n_events, expected.n_events);
        assert_eq!(trailer_ref.idempotency_key, expected.idempotency_key);
        assert_eq!(*trailer_ref.request_hash, expected.request_hash);
        let gates: Vec<(String, u64)> = trailer_ref
            .gates
            .map(|(name, version)| (name.to_string(), version))
            .collect();
        assert_eq!(gates, expected.gates);
        assert_eq!(trailer_ref.entry, expected.entry);
    }

    #[test]
    fn a_trailer_from_before_entries_were_recorded_decodes_without_one() {
        let trailer = Trailer {
            entry: None,
            ..trailer()
        };
        let (mut record, _) = encode(&event(), &[5; 32], Some(&trailer));
        // Cut the entry flag out, as a store of the first format wrote it.
        let header_len = u32::from_le_bytes(record[2..6].try_into().unwrap()) as usize;
        let flag_at = RECORD_PREFIX_BYTES + header_len - 1;
        assert_eq!(record[flag_at], 0);
        record.remove(flag_at);
        record[2..6].copy_from_slice(&(header_len as u32 - 1).to_le_bytes());
        let header = EventRecord::parse(&record).unwrap();
        let old = header.trailer.unwrap();
        assert_eq!(old.entry, None);
        assert_eq!(old.n_events, 2);
        assert_eq!(header.payload, &event().payload[..]);
    }

    #[test]
    fn a_record_is_allocated_once_at_its_exact_length() {
        let bare = Event {
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            causation: Vec::new(),
            content_type: String::new(),
            payload: bytes::Bytes::new(),
            ..event()
        };
        let cases = [
            (event(), None),
            (event(), Some(trailer())),
            (bare.clone(), None),
            (bare, Some(Trailer::default())),
        ];
        for (original, trailer) in cases {
            let (record, _) = encode(&original, &[0; 32], trailer.as_ref());
            assert_eq!(record.len(), record_len(&original, trailer.as_ref()));
            assert_eq!(record.capacity(), record.len(), "no growth, no spare room");
        }
    }

    #[test]
    fn a_header_cut_from_its_record_decodes_without_a_payload() {
        let (record, _) = encode(&event(), &[0; 32], None);
        let header_only = header_bytes(&record).unwrap();
        let header = EventRecord::parse(header_only).unwrap();
        assert!(header.trailer.is_none());
        assert!(header.payload.is_empty());
        assert_eq!(header.to_event().metadata, event().metadata);
    }

    #[test]
    fn metadata_keys_out_of_order_or_twice_are_refused() {
        let original = Event {
            metadata: BTreeMap::from([
                ("k1".to_string(), "v".to_string()),
                ("k2".to_string(), String::new()),
            ]),
            ..event()
        };
        let (record, _) = encode(&original, &[0; 32], None);
        assert!(EventRecord::parse(&record).is_ok());
        let k2_at = record
            .windows(2)
            .position(|window| window == b"k2")
            .expect("the key is in the record");
        for (renamed, refusal) in [
            (b"k1", r#"metadata key "k1" does not come after "k1""#),
            (b"k0", r#"metadata key "k0" does not come after "k1""#),
        ] {
            // The checksum of a frame would still hold: only the record's own rule catches it.
            let mut damaged = record.clone();
            damaged[k2_at..k2_at + 2].copy_from_slice(renamed);
            assert_eq!(EventRecord::parse(&damaged).unwrap_err(), refusal);
        }
    }

    #[test]
    fn what_is_not_a_whole_valid_header_is_refused() {
        let (record, _) = encode(&event(), &[0; 32], Some(&trailer()));
        let header_len = header_bytes(&record).unwrap().len();
        // A record cut anywhere inside its header.
        for cut in RECORD_PREFIX_BYTES..header_len {
            assert!(EventRecord::parse(&record[..cut]).is_err(), "cut at {cut}");
        }
        // A byte of the last metadata value that is not UTF-8.
        let value_at = record
            .windows(3)
            .position(|window| window == b"web")
            .expect("the value is in the record");
        let mut bad_utf8 = record.clone();
        bad_utf8[value_at] = 0xff;
        assert_eq!(
            EventRecord::parse(&bad_utf8).unwrap_err(),
            "a name is not valid utf-8"
        );
        // A declared header length one byte longer than the fields: one byte left over.
        let mut long = record.clone();
        let declared = u32::from_le_bytes(long[2..6].try_into().unwrap());
        long[2..6].copy_from_slice(&(declared + 1).to_le_bytes());
        assert_eq!(
            EventRecord::parse(&long).unwrap_err(),
            "1 unread bytes after the header"
        );
    }
}
