//! Events written to the wire straight from their stored records.
//!
//! A read that streams the log (a subscription catching up, a scan of millions of events) spent
//! most of its server CPU turning each record into owned strings (`Event`), those into a prost
//! message (`pb::Event`), and then walking that message twice to size and encode it. Here a
//! record borrowed from the store ([`EventRecord`]) is encoded once, on the thread that read it,
//! into exactly the bytes prost would have produced for the same `pb::Event`: field by field in
//! tag order, proto3 defaults left out, map entries without their empty key or value. The tests
//! hold the two encodings equal.
//!
//! [`EventBatch`] is `causeway.v1.EventBatch`, and [`EventPage`] both `causeway.v1.ReadLogResponse`
//! and `causeway.v1.ReadEntityResponse`, for the server (the build maps the messages here):
//! their events are kept encoded, and writing one to the wire is one copy.

use bytes::{Buf, BufMut};
use causeway_core::EventRecord;
use prost::DecodeError;
use prost::encoding::{
    DecodeContext, WireType, bool, encode_key, encode_varint, encoded_len_varint, skip_field,
    uint64,
};

/// Bytes of an event id as text: a hyphenated UUID.
const ID_TEXT_BYTES: usize = 36;
/// Bytes of an event's hash.
const HASH_BYTES: usize = 32;
/// The tag of `events`, the repeated field of `EventBatch` and of both read responses.
const EVENTS_TAG: u32 = 1;

/// `causeway.v1.EventBatch` with its events already encoded: what a subscription sends.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    /// Each event as its field: key, length, `causeway.v1.Event` bytes.
    encoded: Vec<u8>,
    n_events: usize,
}

impl EventBatch {
    /// An empty batch.
    pub fn new() -> EventBatch {
        EventBatch::default()
    }

    /// Appends one event, encoded from its stored record.
    pub fn push(&mut self, record: &EventRecord<'_>) {
        let len = event_len(record);
        self.encoded.reserve(delimited_len(len));
        encode_key(EVENTS_TAG, WireType::LengthDelimited, &mut self.encoded);
        encode_varint(len as u64, &mut self.encoded);
        let start = self.encoded.len();
        put_event(record, &mut self.encoded);
        debug_assert_eq!(
            self.encoded.len() - start,
            len,
            "event_len matches put_event"
        );
        self.n_events += 1;
    }

    /// The batch's bytes on the wire with `record` pushed too.
    pub fn len_with(&self, record: &EventRecord<'_>) -> usize {
        self.encoded.len() + delimited_len(event_len(record))
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.n_events
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.n_events == 0
    }
}

impl std::fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBatch")
            .field("events", &self.n_events)
            .field("bytes", &self.encoded.len())
            .finish()
    }
}

impl prost::Message for EventBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.encoded);
    }

    /// Keeps each event's field as it came, so a decoded batch encodes to the same bytes.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != EVENTS_TAG {
            return skip_field(wire_type, tag, buf, ctx);
        }
        // Only tests and tools decode a batch: the copy through `event` costs nothing that
        // matters, and prost checks the wire type and the length.
        let mut event = Vec::new();
        prost::encoding::bytes::merge(wire_type, &mut event, buf, ctx)?;
        put_delimited(EVENTS_TAG, &event, &mut self.encoded);
        self.n_events += 1;
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    fn clear(&mut self) {
        self.encoded.clear();
        self.n_events = 0;
    }
}

/// `causeway.v1.ReadLogResponse` and `causeway.v1.ReadEntityResponse`, whose fields are the
/// same on the wire, with their events already encoded: what `ReadLog` and `ReadEntity` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    /// The events (field 1, as in [`EventBatch`]).
    pub events: EventBatch,
    /// Where to continue reading (field 2): `next_position` of a log read, `next_version` of
    /// an entity's.
    pub next: u64,
    /// True when no events are left in the direction read (as of this read).
    pub end: bool,
    /// The head of the node that answered when it read.
    pub applied_position: u64,
}

/// `causeway.v1.ReadLogResponse`; see [`EventPage`].
pub type ReadLogResponse = EventPage;
/// `causeway.v1.ReadEntityResponse`; see [`EventPage`].
pub type ReadEntityResponse = EventPage;

impl prost::Message for EventPage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.events.encode_raw(buf);
        if self.next != 0 {
            uint64::encode(2, &self.next, buf);
        }
        if self.end {
            bool::encode(3, &self.end, buf);
        }
        if self.applied_position != 0 {
            uint64::encode(4, &self.applied_position, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            EVENTS_TAG => self.events.merge_field(tag, wire_type, buf, ctx),
            2 => uint64::merge(wire_type, &mut self.next, buf, ctx),
            3 => bool::merge(wire_type, &mut self.end, buf, ctx),
            4 => uint64::merge(wire_type, &mut self.applied_position, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        self.events.encoded_len()
            + varint_field_len(self.next)
            + if self.end { 2 } else { 0 }
            + varint_field_len(self.applied_position)
    }

    fn clear(&mut self) {
        *self = EventPage::default();
    }
}

/// The length of a length-delimited field of `len` bytes with a tag below 16.
fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A proto3 scalar string or bytes field: left out when empty.
fn optional_len(len: usize) -> usize {
    if len == 0 { 0 } else { delimited_len(len) }
}

/// A proto3 `uint64` (or non-negative `int64`, `int32`) field: left out when zero.
fn varint_field_len(value: u64) -> usize {
    if value == 0 {
        0
    } else {
        1 + encoded_len_varint(value)
    }
}

/// The wall time as `google.protobuf.Timestamp` fields: whole seconds and nanoseconds.
fn wall(record: &EventRecord<'_>) -> (u64, u64) {
    let wall_ms = record.timestamp.wall_ms();
    (wall_ms / 1000, wall_ms % 1000 * 1_000_000)
}

fn wall_len(record: &EventRecord<'_>) -> usize {
    let (seconds, nanos) = wall(record);
    varint_field_len(seconds) + varint_field_len(nanos)
}

fn timestamp_len(record: &EventRecord<'_>) -> usize {
    varint_field_len(u64::from(record.timestamp.logical())) + delimited_len(wall_len(record))
}

/// Bytes of `causeway.v1.Event` for the record, without its own key and length.
fn event_len(record: &EventRecord<'_>) -> usize {
    let id = delimited_len(ID_TEXT_BYTES);
    let tags: usize = record
        .tags
        .bytes()
        .map(|tag| delimited_len(tag.len()))
        .sum();
    let mut metadata = 0;
    let mut keys_values = record.metadata.bytes();
    while let (Some(key), Some(value)) = (keys_values.next(), keys_values.next()) {
        metadata += delimited_len(optional_len(key.len()) + optional_len(value.len()));
    }
    varint_field_len(record.position.0)
        + varint_field_len(record.version.0)
        + delimited_len(timestamp_len(record))
        + id
        + optional_len(record.scope.len())
        + optional_len(record.entity.len())
        + optional_len(record.event_type.len())
        + tags
        + optional_len(record.payload.len())
        + optional_len(record.content_type.len())
        + metadata
        + record.causation.len() * id
        + id
        + delimited_len(HASH_BYTES)
}

fn put_varint(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

/// A length-delimited field, written even when empty (a repeated element, a message).
fn put_delimited(tag: u32, value: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// A proto3 scalar string or bytes field: left out when empty.
fn put_optional(tag: u32, value: &[u8], out: &mut Vec<u8>) {
    if !value.is_empty() {
        put_delimited(tag, value, out);
    }
}

fn put_id(tag: u32, id: uuid::Uuid, out: &mut Vec<u8>) {
    let mut text = [0u8; ID_TEXT_BYTES];
    put_delimited(tag, id.hyphenated().encode_lower(&mut text).as_bytes(), out);
}

fn put_event(record: &EventRecord<'_>, out: &mut Vec<u8>) {
    put_varint(1, record.position.0, out);
    put_varint(2, record.version.0, out);
    // HybridTimestamp { logical = 2, wall = 3 }, the wall a Timestamp { seconds = 1, nanos = 2 }.
    encode_key(3, WireType::LengthDelimited, out);
    encode_varint(timestamp_len(record) as u64, out);
    put_varint(2, u64::from(record.timestamp.logical()), out);
    encode_key(3, WireType::LengthDelimited, out);
    encode_varint(wall_len(record) as u64, out);
    let (seconds, nanos) = wall(record);
    put_varint(1, seconds, out);
    put_varint(2, nanos, out);
    put_id(4, record.id.0, out);
    put_optional(5, record.scope.as_bytes(), out);
    put_optional(6, record.entity.as_bytes(), out);
    put_optional(7, record.event_type.as_bytes(), out);
    for tag in record.tags.bytes() {
        put_delimited(8, tag, out);
    }
    put_optional(9, record.payload, out);
    put_optional(10, record.content_type.as_bytes(), out);
    let mut keys_values = record.metadata.bytes();
    while let (Some(key), Some(value)) = (keys_values.next(), keys_values.next()) {
        encode_key(11, WireType::LengthDelimited, out);
        encode_varint(
            (optional_len(key.len()) + optional_len(value.len())) as u64,
            out,
        );
        put_optional(1, key, out);
        put_optional(2, value, out);
    }
    for parent in record.causation {
        put_id(12, parent.0, out);
    }
    put_id(13, record.correlation_id.0, out);
    put_delimited(14, record.hash, out);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The encoding from records against prost's encoding of the same events made the owned way
    //! (`convert::event`), on events a store really wrote: equal bytes, so every client decodes
    //! one as it decodes the other.

    use std::collections::BTreeMap;

    use causeway_core::{Append, Config, Direction, EventId, Filter, NewEvent, Position, Store};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::{convert, pb};

    fn new_event() -> impl Strategy<Value = NewEvent> {
        let name = "[a-zA-Z0-9:_-]{1,12}";
        (
            (name, name, name),
            proptest::collection::vec("[a-z0-9:]{1,10}", 0..4),
            proptest::collection::vec(any::<u8>(), 0..300),
            prop_oneof![Just(String::new()), Just("application/json".to_string())],
            proptest::collection::btree_map("[a-zé_]{1,8}", "[a-zé ]{0,8}", 0..4),
            any::<bool>(),
        )
            .prop_map(
                |((scope, entity, event_type), tags, payload, content_type, metadata, caused)| {
                    let mut tags = tags;
                    tags.sort();
                    tags.dedup();
                    NewEvent {
                        id: None,
                        scope,
                        entity,
                        event_type,
                        tags,
                        payload: payload.into(),
                        content_type,
                        metadata,
                        causation: Vec::new(),
                        correlation_id: caused.then(|| EventId(uuid::Uuid::from_u128(7))),
                    }
                },
            )
    }

    /// Appends `events` as one append (the first caused by every event before it) and reads
    /// the whole log back both ways: prost's bytes of each owned event, and the batch.
    fn both_ways(events: Vec<NewEvent>) -> (Vec<u8>, EventBatch) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Config::default()).unwrap();
        let earlier = store
            .append(Append::new(vec![NewEvent::new("s", "e", "Earlier", "")]))
            .unwrap();
        let mut events = events;
        events[0].causation = earlier.events.iter().map(|event| event.id).collect();
        store.append(Append::new(events)).unwrap();
        let filter = Filter::default();
        let owned = store
            .read_log(Position(1), Direction::Forward, 100, &filter)
            .unwrap();
        let mut expected = Vec::new();
        for event in owned.events {
            prost::encoding::message::encode(EVENTS_TAG, &convert::event(event), &mut expected);
        }
        let mut batch = EventBatch::new();
        store
            .read_log_records(
                Position(1),
                Direction::Forward,
                100,
                1 << 20,
                &filter,
                |record| {
                    let len_with = batch.len_with(record);
                    batch.push(record);
                    assert_eq!(
                        batch.encoded_len(),
                        len_with,
                        "len_with says what push adds"
                    );
                    Ok(())
                },
            )
            .unwrap();
        (expected, batch)
    }

    /// Encodes a `SubscribeResponse` carrying `batch` and decodes it again.
    fn round_trip(batch: &EventBatch) -> EventBatch {
        let response = pb::SubscribeResponse {
            message: Some(pb::subscribe_response::Message::Events(batch.clone())),
        };
        match pb::SubscribeResponse::decode(&response.encode_to_vec()[..])
            .unwrap()
            .message
        {
            Some(pb::subscribe_response::Message::Events(decoded)) => decoded,
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn every_field_is_encoded_as_prost_encodes_the_owned_event() {
        let mut full = NewEvent::new("acme", "order-7", "OrderPaid", &br#"{"amount": 5}"#[..]);
        full.tags = vec!["customer:1".to_string(), "région:été".to_string()];
        full.content_type = "application/json".to_string();
        full.metadata = BTreeMap::from([
            ("empty".to_string(), String::new()),
            ("source".to_string(), "web".to_string()),
        ]);
        // No payload, content type, tags or metadata: every optional field left out.
        let bare = NewEvent::new("acme", "order-7", "OrderOpened", Vec::new());
        let (expected, batch) = both_ways(vec![full, bare]);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.encoded, expected);
        assert_eq!(batch.encoded_len(), expected.len());
        assert_eq!(round_trip(&batch), batch);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn records_encode_as_their_owned_events_do(
            events in proptest::collection::vec(new_event(), 1..5)
        ) {
            let n_events = events.len() + 1;
            let (expected, batch) = both_ways(events);
            prop_assert_eq!(batch.len(), n_events);
            prop_assert_eq!(&batch.encoded, &expected);
            prop_assert_eq!(round_trip(&batch), batch);
        }
    }

    /// `causeway.v1.ReadLogResponse` as prost generates it (`ReadEntityResponse` is the same
    /// on the wire, with `next_version` as field 2).
    #[derive(Clone, PartialEq, prost::Message)]
    struct ProstReadLogResponse {
        #[prost(message, repeated, tag = "1")]
        events: Vec<pb::Event>,
        #[prost(uint64, tag = "2")]
        next_position: u64,
        #[prost(bool, tag = "3")]
        end: bool,
        #[prost(uint64, tag = "4")]
        applied_position: u64,
    }

    #[test]
    fn a_page_is_encoded_and_decoded_as_prost_does() {
        let (expected_events, events) = both_ways(vec![NewEvent::new("s", "e", "T", "payload")]);
        let prost_events: Vec<pb::Event> = ProstReadLogResponse::decode(&expected_events[..])
            .unwrap()
            .events;
        assert_eq!(prost_events.len(), 2);
        for (next_position, end, applied_position) in
            [(3, true, 2), (0, false, 0), (1 << 40, false, 7)]
        {
            let ours = EventPage {
                events: events.clone(),
                next: next_position,
                end,
                applied_position,
            };
            let theirs = ProstReadLogResponse {
                events: prost_events.clone(),
                next_position,
                end,
                applied_position,
            };
            let bytes = ours.encode_to_vec();
            assert_eq!(bytes, theirs.encode_to_vec());
            assert_eq!(ours.encoded_len(), bytes.len());
            assert_eq!(EventPage::decode(&bytes[..]).unwrap(), ours);
        }
    }

    #[test]
    fn a_batch_that_does_not_decode_is_refused() {
        let (_, batch) = both_ways(vec![NewEvent::new("s", "e", "T", "payload")]);
        let mut bytes = pb::SubscribeResponse {
            message: Some(pb::subscribe_response::Message::Events(batch)),
        }
        .encode_to_vec();
        bytes.truncate(bytes.len() - 1);
        assert!(pb::SubscribeResponse::decode(&bytes[..]).is_err());
    }
}
