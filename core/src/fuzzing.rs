//! Entry points for the fuzz targets in `fuzz/`: each takes arbitrary bytes, feeds them through
//! the real decoder or compiler, and asserts what must hold. Not an API: hidden from the docs,
//! and nothing here is a copy of the logic it drives (the record codec and the frame reader are
//! private to this crate, which is why these functions live inside it).
//!
//! Every function panics only when a property fails: a decoder that accepts bytes must give a
//! value that encodes to bytes decoding to the same value, a segment log that recovers from
//! damaged bytes must take an append and reopen to the same frames, and a gate must give the
//! same answer twice. Bad input itself must be an `Err`, never a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::codec::{self, EventRecord, Trailer, TrailerRef};
use crate::command::Command;
use crate::event::{Event, EventId, Position, Version};
use crate::gate::{Budget, GateDefinition, Proposal, Rule, Scan, View};
use crate::limits::GATE_EVAL_STEPS_MAX;
use crate::query::Filter;
use crate::segment::{self, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC};

/// An event record as stored in a frame body (and as the index keeps its header).
pub fn record(bytes: &[u8]) {
    let _ = codec::decode_applied(bytes).map(|entry| {
        assert_eq!(
            codec::encode_applied(entry),
            bytes,
            "applied mark re-encodes"
        );
    });
    let header_only = codec::header_bytes(bytes);
    let Ok(header) = EventRecord::parse(bytes) else {
        assert!(
            codec::decode(bytes).is_err(),
            "decode agrees with EventRecord::parse"
        );
        return;
    };
    // What the index keeps of a valid record must parse on its own, with an empty payload.
    let header_only = header_only.expect("a record that parses has header bytes");
    let cut = EventRecord::parse(header_only).expect("a record's header bytes parse alone");
    assert!(
        cut.payload.is_empty(),
        "a header cut off its payload has none"
    );
    let trailer = header.trailer.map(owned);
    let event = header.to_event();
    assert_eq!(
        codec::decode(bytes).expect("EventRecord::parse accepted it"),
        event,
        "decode agrees with EventRecord::parse"
    );
    // The hash is recomputed on encode, so the round trip holds for everything else.
    let prev_hash = [7u8; 32];
    let (encoded, hash) = codec::encode(&event, &prev_hash, trailer.as_ref());
    let again = EventRecord::parse(&encoded).expect("an encoded record decodes");
    let again_trailer = again.trailer.map(owned);
    assert_eq!(again_trailer, trailer, "the trailer round-trips");
    let again = again.to_event();
    assert_eq!(again.hash, hash, "the stored hash is the computed one");
    assert_eq!(Event { hash, ..event }, again, "the event round-trips");
    let (twice, _) = codec::encode(&again, &prev_hash, again_trailer.as_ref());
    assert_eq!(twice, encoded, "the encoding is canonical");
}

/// An owned copy of a borrowed trailer, to compare it with one decoded again.
fn owned(trailer: TrailerRef<'_>) -> Trailer {
    Trailer {
        n_events: trailer.n_events,
        idempotency_key: trailer.idempotency_key.to_string(),
        request_hash: *trailer.request_hash,
        gates: trailer
            .gates
            .map(|(name, version)| (name.to_string(), version))
            .collect(),
        entry: trailer.entry,
    }
}

/// A replicated command, as the Raft log entry's payload carries it: bad bytes are
/// `InvalidInput`, and a command that decodes encodes back to the same bytes (one encoding per
/// command).
pub fn command(bytes: &[u8]) {
    match Command::decode(bytes) {
        Ok(command) => assert_eq!(command.encode(), bytes, "a second encoding of {command:?}"),
        Err(crate::Error::InvalidInput(_)) => {}
        Err(other) => panic!("decode failed with {other:?}"),
    }
}

/// A segment file, written to `dir` (an empty directory) as the first segment of a log, which is
/// then opened (recovery), scanned, appended to and opened again. The first byte chooses
/// whether the file gets a valid segment header ahead of the rest (bit 0 clear), so the
/// fuzzer spends its time on frames, or is the raw bytes.
pub fn segment(dir: &Path, bytes: &[u8]) {
    const SEGMENT_BYTES: u64 = 64 * 1024;
    let Some((&mode, rest)) = bytes.split_first() else {
        return;
    };
    let mut file = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize + rest.len());
    if mode & 1 == 0 {
        file.extend_from_slice(&SEGMENT_MAGIC);
        file.extend_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        file.extend_from_slice(&[0u8; 6]);
        file.extend_from_slice(&1u64.to_le_bytes());
        file.extend_from_slice(&[0u8; 4]);
        let crc = crc32fast::hash(&file);
        file.extend_from_slice(&crc.to_le_bytes());
    }
    file.extend_from_slice(rest);
    std::fs::write(segment::segment_path(dir, 1), &file).expect("write the segment file");
    let Ok((mut log, _recovery)) = segment::SegmentLog::open(dir, SEGMENT_BYTES, 1) else {
        return;
    };
    let first = log.first_index();
    let Ok(frames) = log.scan(first) else {
        return;
    };
    let entries = frames
        .iter()
        .filter(|frame| frame.flags & segment::FLAG_MARK == 0);
    for (entry_idx, frame) in entries.enumerate() {
        assert_eq!(frame.index, first + entry_idx as u64, "indexes are dense");
        let body = log
            .reader()
            .read(frame.index, frame.loc)
            .expect("a scanned frame reads");
        assert_eq!(
            body, frame.body,
            "a read by location gives the scanned body"
        );
    }
    let next = log.last_index() + 1;
    log.append(&[b"after recovery".to_vec()])
        .expect("a recovered log takes an append");
    log.flush(true).expect("flush after recovery");
    drop(log);
    let (log, recovery) =
        segment::SegmentLog::open(dir, SEGMENT_BYTES, 1).expect("a recovered log reopens");
    assert_eq!(recovery.truncated, None, "a clean reopen cuts nothing");
    assert_eq!(log.last_index(), next, "the append survived the reopen");
    let mut after: Vec<segment::Frame> = Vec::new();
    for info in log.segments() {
        after.extend(log.scan(info.first_index).expect("a reopened log scans"));
    }
    let bodies = |frames: &[segment::Frame]| -> Vec<(u64, u8, Vec<u8>)> {
        frames
            .iter()
            .map(|frame| (frame.index, frame.flags, frame.body.clone()))
            .collect()
    };
    assert_eq!(
        bodies(&after[..frames.len()]),
        bodies(&frames),
        "recovered frames survive an append and a reopen"
    );
}

/// A CEL gate definition and an event it judges: the input is the expression, a NUL byte, and
/// the event's JSON payload. The definition goes through the registration check and compile;
/// a gate that compiles is evaluated twice against the event, and must answer the same both
/// times (every replica evaluates it and must agree).
pub fn gate(bytes: &[u8]) {
    let (expression, payload) = match bytes.iter().position(|&byte| byte == 0) {
        Some(nul) => (&bytes[..nul], &bytes[nul + 1..]),
        None => (bytes, &[][..]),
    };
    let Ok(expression) = std::str::from_utf8(expression) else {
        return;
    };
    let definition = GateDefinition {
        name: "fuzz".to_string(),
        scopes: Vec::new(),
        types: Vec::new(),
        rule: Rule::Cel {
            expression: expression.to_string(),
        },
    };
    let checked = definition.check();
    let compiled = definition.compile();
    let Ok(gate) = checked else {
        return;
    };
    let compiled = compiled.expect("a definition that passes check compiles");
    let timestamp = Timestamp::new(1_700_000_000_000, 3);
    let event = Event {
        position: Position(5),
        version: Version(2),
        timestamp,
        id: EventId(uuid::Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0001,
        )),
        scope: "orders".to_string(),
        entity: "order-1".to_string(),
        event_type: "OrderPlaced".to_string(),
        tags: vec!["customer:42".to_string(), "region:eu".to_string()],
        content_type: "application/json".to_string(),
        metadata: BTreeMap::from([("source".to_string(), "fuzz".to_string())]),
        causation: vec![EventId(uuid::Uuid::from_u128(7))],
        correlation_id: EventId(uuid::Uuid::from_u128(9)),
        hash: [0u8; 32],
        payload: bytes::Bytes::copy_from_slice(payload),
    };
    let view: Arc<dyn View> = Arc::new(FixedView);
    let answer = |gate: &Arc<dyn crate::gate::Gate>| {
        let budget = Budget::new("GATE_EVAL_STEPS_MAX", GATE_EVAL_STEPS_MAX);
        let events = [&event];
        let proposal = Proposal {
            timestamp,
            events: &events,
            append: std::slice::from_ref(&event),
            budget: &budget,
        };
        (gate.check(&proposal, &view), budget.spent())
    };
    let first = answer(&gate);
    assert!(
        first.1 <= GATE_EVAL_STEPS_MAX + 1,
        "the budget bounds evaluation"
    );
    assert_eq!(answer(&gate), first, "a gate answers the same twice");
    assert_eq!(
        answer(&compiled),
        first,
        "check and compile give the same gate"
    );
}

/// A store as a gate sees it, with one entity at version 1 and nothing else.
struct FixedView;

impl View for FixedView {
    fn head(&self) -> Position {
        Position(4)
    }

    fn version(&self, scope: &str, entity: &str) -> Version {
        Version(u64::from(scope == "orders" && entity == "order-1"))
    }

    fn last_event(&self, _scope: &str, _entity: &str) -> crate::Result<Option<Event>> {
        Ok(None)
    }

    fn count_within(&self, _filter: &Filter, _after: Position, max: u64, _scan_max: u64) -> Scan {
        Scan {
            found: max.min(1),
            examined: 1,
            complete: true,
        }
    }

    fn event_exists(&self, id: EventId) -> bool {
        id == EventId(uuid::Uuid::from_u128(7))
    }

    fn entity_events_since(&self, _scope: &str, _entity: &str, _since: Timestamp) -> u64 {
        1
    }
}

/// Valid event records for the `record` target's seed corpus: an event alone, the first event of
/// an append with its trailer, and an applied mark.
pub fn record_seeds() -> Vec<Vec<u8>> {
    let event = Event {
        position: Position(1),
        version: Version(1),
        timestamp: Timestamp::new(1_700_000_000_000, 0),
        id: EventId(uuid::Uuid::from_u128(1)),
        scope: "orders".to_string(),
        entity: "order-1".to_string(),
        event_type: "OrderPlaced".to_string(),
        tags: vec!["customer:42".to_string()],
        content_type: "application/json".to_string(),
        metadata: BTreeMap::from([("source".to_string(), "seed".to_string())]),
        causation: vec![EventId(uuid::Uuid::from_u128(2))],
        correlation_id: EventId(uuid::Uuid::from_u128(1)),
        hash: [0u8; 32],
        payload: bytes::Bytes::from_static(br#"{"total":12}"#),
    };
    let trailer = Trailer {
        n_events: 2,
        idempotency_key: "key-1".to_string(),
        request_hash: [3u8; 32],
        gates: vec![("unique-email".to_string(), 4)],
        entry: Some(crate::command::EntryId { term: 2, index: 9 }),
    };
    vec![
        codec::encode(&event, &[0u8; 32], None).0,
        codec::encode(&event, &[5u8; 32], Some(&trailer)).0,
        codec::encode_applied(crate::command::EntryId { term: 1, index: 3 }),
    ]
}
