//! Tamper evidence and receipts: the hash chain catches what the frame checksum cannot, and a
//! receipt proves what was written to anyone holding only the receipt, the events and a key.
//!
//! The tamper tests edit a segment file behind the store's back (one byte of one record) and
//! then rewrite the frame's CRC32, so the frame is whole and decodes and open succeeds: only the
//! chain can tell. Invariants checked: `Store::verify` reports the exact tampered position as
//! the first break (and the digest of the events before it); an untouched log verifies with
//! `events == head` and the digest the store reports, which is also recomputed here from the
//! documented formula; a forger who also rewrites the hash passes `verify` but changes the
//! digest, so only a digest or receipt held outside the store catches that. Receipt
//! invariants: a receipt verifies offline with `receipt::verify`; every forged field, altered
//! event, wrong or missing key and count mismatch is refused with the matching `ReceiptError`;
//! `prev_hash` links an entity's events; an idempotent retry (also after a reopen) returns the
//! original signed receipt.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use causeway_core::receipt::{self, ReceiptError};
use causeway_core::store::Break;
use causeway_core::*;

/// Events written by [`populate`]; event `i` (from 0) lands at position `i + 1`.
const N_EVENTS: usize = 30;
const SCOPE: &str = "bank";
const ENTITIES: [&str; 4] = ["acct-north", "acct-south", "acct-east", "acct-west"];
/// The event index that goes to an entity of its own, so renaming it keeps versions dense.
const SOLO_IDX: usize = 17;
const SOLO_ENTITY: &str = "solo-entity";
const METADATA_KEY: &str = "memo";
const SEGMENT_HEADER_BYTES: usize = 32;
const FRAME_HEADER_BYTES: usize = 17;

fn payload_marker(event_idx: usize) -> String {
    format!("payload-marker-{event_idx:03}")
}

fn metadata_marker(event_idx: usize) -> String {
    format!("meta-value-{event_idx:03}")
}

fn event_type(event_idx: usize) -> &'static str {
    if event_idx.is_multiple_of(2) {
        "Deposited"
    } else {
        "Withdrawn"
    }
}

/// Event `event_idx` of the tamper log: its payload, metadata value and (for the solo event)
/// entity name hold strings found nowhere else in its record.
fn new_event(event_idx: usize, padding_bytes: usize) -> NewEvent {
    let entity = if event_idx == SOLO_IDX {
        SOLO_ENTITY
    } else {
        ENTITIES[event_idx % ENTITIES.len()]
    };
    let mut payload = payload_marker(event_idx).into_bytes();
    payload.resize(payload.len() + padding_bytes, b'.');
    NewEvent {
        metadata: BTreeMap::from([(METADATA_KEY.to_string(), metadata_marker(event_idx))]),
        ..NewEvent::new(SCOPE, entity, event_type(event_idx), payload)
    }
}

/// Appends [`N_EVENTS`] events in appends of 1, 2 and 3 events, and returns them as read back,
/// in position order.
fn populate(store: &Store, padding_bytes: usize) -> Vec<Event> {
    let mut event_idx = 0;
    let mut batch_len = 1;
    while event_idx < N_EVENTS {
        let n_batch = batch_len.min(N_EVENTS - event_idx);
        let events = (event_idx..event_idx + n_batch)
            .map(|idx| new_event(idx, padding_bytes))
            .collect();
        store.append(Append::new(events)).unwrap();
        event_idx += n_batch;
        batch_len = batch_len % 3 + 1;
    }
    let batch = store
        .read_log(Position(1), Direction::Forward, 1000, &Filter::default())
        .unwrap();
    assert!(batch.end);
    assert_eq!(batch.events.len(), N_EVENTS);
    for (event_idx, event) in batch.events.iter().enumerate() {
        assert_eq!(event.position, Position(event_idx as u64 + 1));
        assert!(
            event
                .payload
                .starts_with(payload_marker(event_idx).as_bytes())
        );
    }
    batch.events
}

/// The log digest of `events`, from `docs/FORMAT.md`: `d(0) = 0`, `d(p) = blake3(d(p-1) || hash(p))`.
fn digest_of(events: &[Event]) -> Hash {
    events.iter().fold([0u8; 32], |digest, event| {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&digest);
        hasher.update(&event.hash);
        *hasher.finalize().as_bytes()
    })
}

/// Where one frame lives on disk.
struct FrameAt {
    path: PathBuf,
    offset: usize,
    body_len: usize,
}

/// Every frame of every segment in `dir/events`, by its index (the event's position).
fn frames(dir: &Path) -> BTreeMap<u64, FrameAt> {
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.join("events"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    let mut found = BTreeMap::new();
    for path in segments {
        let bytes = fs::read(&path).unwrap();
        let mut offset = SEGMENT_HEADER_BYTES;
        // A frame header of zeros starts the reserved space of the active segment.
        while let Some(header) = bytes.get(offset..offset + FRAME_HEADER_BYTES)
            && header.iter().any(|&byte| byte != 0)
        {
            let body_len =
                u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
            let index = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
            assert_eq!(
                index,
                found.len() as u64 + 1,
                "frames are numbered densely from 1"
            );
            found.insert(
                index,
                FrameAt {
                    path: path.clone(),
                    offset,
                    body_len,
                },
            );
            offset += FRAME_HEADER_BYTES + body_len;
        }
        assert!(
            bytes[offset..].iter().all(|&byte| byte == 0),
            "{} ends with a whole frame, then only reserved zeros",
            path.display()
        );
    }
    found
}

/// Applies `edit` to the body of the frame at `position`, then rewrites the frame's CRC32 so
/// that the frame itself is valid again. The store must be closed.
fn edit_frame(dir: &Path, position: u64, edit: impl FnOnce(&mut [u8])) {
    let frames = frames(dir);
    let frame = &frames[&position];
    let mut bytes = fs::read(&frame.path).unwrap();
    let body_start = frame.offset + FRAME_HEADER_BYTES;
    let frame_end = body_start + frame.body_len;
    edit(&mut bytes[body_start..frame_end]);
    let crc = crc32fast::hash(&bytes[frame.offset + 4..frame_end]);
    bytes[frame.offset..frame.offset + 4].copy_from_slice(&crc.to_le_bytes());
    fs::write(&frame.path, &bytes).unwrap();
}

/// Where `needle` starts in `haystack`, which must hold it exactly once.
fn find_once(haystack: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, window)| *window == needle)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{needle:?} must occur exactly once in the frame body"
    );
    hits[0]
}

/// Flips the case of the first byte of `marker` inside the record at `position` (so the
/// record keeps its length and stays UTF-8) and makes the frame's CRC match again.
fn tamper(dir: &Path, position: u64, marker: &str) {
    edit_frame(dir, position, |body| {
        let at = find_once(body, marker.as_bytes());
        assert!(
            body[at].is_ascii_alphabetic(),
            "the tampered byte must be a letter"
        );
        body[at] ^= 0x20;
    });
}

/// Like [`tamper`] on a payload marker, and also replaces the stored hash with the one the
/// altered record hashes to (the formula of `docs/FORMAT.md`), as a forger who knows the
/// format would. Only safe for an entity's last event: no later hash chains from it.
fn tamper_and_rehash(dir: &Path, position: u64, marker: &str, old_hash: &Hash, prev_hash: &Hash) {
    edit_frame(dir, position, |body| {
        let at = find_once(body, marker.as_bytes());
        body[at] ^= 0x20;
        let header_len = u32::from_le_bytes(body[2..6].try_into().unwrap()) as usize;
        let hash_at = find_once(&body[..6 + header_len], old_hash);
        let mut hasher = blake3::Hasher::new();
        hasher.update(prev_hash);
        hasher.update(&body[..2]);
        hasher.update(&body[6..hash_at]);
        hasher.update(&body[6 + header_len..]);
        let new_hash = *hasher.finalize().as_bytes();
        body[hash_at..hash_at + 32].copy_from_slice(&new_hash);
    });
}

fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    fs::read_dir(dir.join("events"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect()
}

/// Asserts that `verify` reports `position` as the first break, having checked exactly the
/// events before it, whose digest it reports.
fn assert_breaks_at(store: &Store, original: &[Event], position: u64) {
    let report = store.verify().unwrap();
    let (break_position, reason) = report
        .first_break
        .clone()
        .unwrap_or_else(|| panic!("no break found: {report:?}"));
    assert_eq!(break_position, Position(position), "{reason}");
    assert!(!reason.is_empty());
    assert_eq!(report.events, position - 1);
    assert_eq!(report.digest, digest_of(&original[..position as usize - 1]));

    // The bounded check (the Verify RPC's and the scrubber's) names the same position, from
    // the start or from just before it, in pages of one chunk: the segment by file name, the
    // frame's offset, and what differs.
    let frame = &frames(store.dir())[&position];
    for from in [1, position.saturating_sub(2).max(1), position] {
        let (checked, found) = verify_in_pages(store, from);
        let found = found.unwrap_or_else(|| panic!("no break from {from}"));
        assert_eq!(found.position, Position(position), "{found:?}");
        assert_eq!(
            checked,
            position - from,
            "events found whole before the break"
        );
        assert_eq!(
            found.segment,
            frame.path.file_name().unwrap().to_string_lossy()
        );
        assert_eq!(found.offset, frame.offset as u64);
        assert!(found.detail.contains("hash"), "{}", found.detail);
    }
}

/// A frame that fails its CRC in a later segment is named by its own position, not by that of
/// the frame at the same offset of an earlier segment: segments of equal events share their
/// offsets. Catches a break matched to its position by offset alone.
#[test]
fn a_damaged_frame_in_a_later_segment_is_named_by_its_own_position() {
    let config = || Config {
        segment_bytes: 4096,
        ..Config::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    for event_idx in 0..60 {
        let payload = format!("{event_idx:04}").repeat(50).into_bytes();
        store
            .append(Append::new(vec![NewEvent::new(
                SCOPE, "order-1", "Placed", payload,
            )]))
            .unwrap();
    }
    drop(store);
    let frames = frames(dir.path());
    let (first_path, later) = {
        let first = &frames[&1].path;
        let later = frames
            .iter()
            .filter(|(_, frame)| &frame.path != first)
            .find(|(_, frame)| {
                frames
                    .values()
                    .any(|earlier| &earlier.path == first && earlier.offset == frame.offset)
            })
            .map(|(position, _)| *position)
            .expect("a frame of a later segment at an offset the first segment also uses");
        (first.clone(), later)
    };
    let frame = &frames[&later];
    assert_ne!(frame.path, first_path);
    let mut bytes = fs::read(&frame.path).unwrap();
    bytes[frame.offset + FRAME_HEADER_BYTES + frame.body_len / 2] ^= 0x01;
    fs::write(&frame.path, &bytes).unwrap();

    let store = Store::open(dir.path(), config()).unwrap();
    let page = store
        .verify_range(Position(1), Position(u64::MAX), u64::MAX, &mut |_| {})
        .unwrap();
    let found = page.first_break.expect("the damaged frame is found");
    assert_eq!(found.position, Position(later), "{found:?}");
    assert_eq!(page.events, later - 1, "events found whole before it");
    assert_eq!(
        found.segment,
        frame.path.file_name().unwrap().to_string_lossy()
    );
    assert_eq!(
        verify_in_pages(&store, 1).1.map(|found| found.position),
        Some(Position(later))
    );
}

/// Runs `verify_range` from `from` to the head in pages as small as it allows, as a client of
/// the Verify RPC does, and returns the events found whole and the first break.
fn verify_in_pages(store: &Store, from: u64) -> (u64, Option<Break>) {
    let mut next = Position(from);
    let mut checked = 0;
    loop {
        let page = store
            .verify_range(next, Position(u64::MAX), 1, &mut |_| {})
            .unwrap();
        checked += page.events;
        if page.first_break.is_some() || page.end {
            return (checked, page.first_break);
        }
        assert!(page.next > next, "every page makes progress");
        next = page.next;
    }
}

/// Writes the tamper log with default (64 MiB) segments, so every frame is in the one active
/// segment and no `.idx` exists: open rebuilds the index by scanning the tampered frames.
fn write_active_log(dir: &Path) -> Vec<Event> {
    let store = Store::open(dir, Config::default()).unwrap();
    let events = populate(&store, 0);
    drop(store);
    assert_eq!(files_with_extension(dir, "seg").len(), 1);
    assert!(files_with_extension(dir, "idx").is_empty());
    events
}

#[test]
fn untampered_log_verifies_with_the_digest_of_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let empty = store.verify().unwrap();
    assert_eq!(
        (empty.events, empty.digest, empty.first_break),
        (0, [0; 32], None)
    );

    let events = populate(&store, 0);
    let report = store.verify().unwrap();
    assert_eq!(report.first_break, None);
    assert_eq!(report.events, store.head().0);
    assert_eq!(report.events, N_EVENTS as u64);
    assert_eq!(report.digest, store.digest());
    assert_eq!(report.digest, digest_of(&events));
    for from in [1, 7, N_EVENTS as u64] {
        assert_eq!(
            verify_in_pages(&store, from),
            (N_EVENTS as u64 - from + 1, None)
        );
    }
    let past_head = store
        .verify_range(
            Position(N_EVENTS as u64 + 1),
            Position(u64::MAX),
            1,
            &mut |_| {},
        )
        .unwrap();
    assert!(past_head.end && past_head.events == 0 && past_head.first_break.is_none());
    drop(store);

    // The digest is not stored: a reopen recomputes it and gets the same one.
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.verify().unwrap(), report);
    assert_eq!(store.digest(), report.digest);
}

#[test]
fn altered_payload_byte_breaks_the_chain_at_exactly_that_position() {
    let dir = tempfile::tempdir().unwrap();
    let original = write_active_log(dir.path());
    let tampered_idx = 12;
    let position = tampered_idx as u64 + 1;
    tamper(dir.path(), position, &payload_marker(tampered_idx));

    // Open succeeds and the altered bytes are served: the frame checksum cannot see the change.
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.head(), Position(N_EVENTS as u64));
    let served = store.get(original[tampered_idx].id).unwrap();
    assert_ne!(served.payload, original[tampered_idx].payload);
    assert!(served.payload.starts_with(b"Payload-marker-012"));
    assert_eq!(
        served.hash, original[tampered_idx].hash,
        "the stored hash is untouched"
    );

    assert_breaks_at(&store, &original, position);
}

#[test]
fn altered_header_field_breaks_the_chain_at_exactly_that_position() {
    // Each case changes one byte of one header string in place; the entity case renames the
    // only event of its entity to a fresh entity, so the reopened index still finds dense
    // versions and only the chain objects.
    let cases: [(&str, usize, String); 3] = [
        ("event type", 8, event_type(8).to_string()),
        ("metadata value", 21, metadata_marker(21)),
        ("entity name", SOLO_IDX, SOLO_ENTITY.to_string()),
    ];
    for (field, tampered_idx, marker) in cases {
        let dir = tempfile::tempdir().unwrap();
        let original = write_active_log(dir.path());
        let position = tampered_idx as u64 + 1;
        tamper(dir.path(), position, &marker);

        let store = Store::open(dir.path(), Config::default())
            .unwrap_or_else(|err| panic!("{field}: open failed: {err}"));
        let served = store.get(original[tampered_idx].id).unwrap();
        assert_ne!(
            served, original[tampered_idx],
            "{field}: the altered header is served"
        );
        assert_eq!(served.payload, original[tampered_idx].payload, "{field}");
        let report = store.verify().unwrap();
        assert_eq!(
            report.first_break.as_ref().map(|(at, _)| *at),
            Some(Position(position)),
            "{field}: {report:?}"
        );
        assert_breaks_at(&store, &original, position);
    }
}

#[test]
fn first_break_is_the_earliest_of_several_tampered_events() {
    let dir = tempfile::tempdir().unwrap();
    let original = write_active_log(dir.path());
    tamper(dir.path(), 24, &payload_marker(23));
    tamper(dir.path(), 6, &metadata_marker(5));
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_breaks_at(&store, &original, 6);
}

#[test]
fn tampering_in_sealed_segments_is_caught_with_or_without_their_idx() {
    // Small segments and padded payloads spread the log over several sealed segments, each
    // with an `.idx` sidecar holding copies of its record headers. Three paths:
    // - payload byte, `.idx` kept: the sidecar has no payloads, so it cannot disagree;
    // - header byte, `.idx` deleted: open scans the tampered segment and rebuilds the sidecar;
    // - header byte, `.idx` kept: the index is built from the stale, untampered header copy,
    //   but every read (and so `verify`) goes to the segment's bytes.
    let config = || Config {
        segment_bytes: 4096,
        ..Config::default()
    };
    let cases: [(&str, usize, String, bool); 3] = [
        ("payload, idx kept", 4, payload_marker(4), false),
        (
            "event type, idx deleted",
            6,
            event_type(6).to_string(),
            true,
        ),
        ("metadata value, idx kept", 5, metadata_marker(5), false),
    ];
    for (case, tampered_idx, marker, delete_idx) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), config()).unwrap();
        let original = populate(&store, 600);
        drop(store);
        let position = tampered_idx as u64 + 1;
        let frames = frames(dir.path());
        let active = frames.values().map(|frame| &frame.path).max().unwrap();
        assert_ne!(
            &frames[&position].path, active,
            "{case}: the tampered frame is in a sealed segment"
        );
        assert!(
            files_with_extension(dir.path(), "idx").len() >= 2,
            "{case}: sealed segments have sidecars"
        );
        if delete_idx {
            for path in files_with_extension(dir.path(), "idx") {
                fs::remove_file(path).unwrap();
            }
        }
        tamper(dir.path(), position, &marker);

        let store = Store::open(dir.path(), config())
            .unwrap_or_else(|err| panic!("{case}: open failed: {err}"));
        assert_eq!(store.head(), Position(N_EVENTS as u64), "{case}");
        let report = store.verify().unwrap();
        assert_eq!(
            report.first_break.as_ref().map(|(at, _)| *at),
            Some(Position(position)),
            "{case}: {report:?}"
        );
        assert_breaks_at(&store, &original, position);

        // A scrub, segment by segment as the server's scrubber goes, finds it in the sealed
        // segment that holds it, and paces itself by every byte it read.
        let sealed = store.sealed_segments();
        assert!(sealed.len() >= 2, "{case}: {sealed:?}");
        let mut breaks = Vec::new();
        for (first, last) in sealed {
            let mut paced = 0;
            let page = store
                .verify_range(first, last, u64::MAX, &mut |bytes| paced += bytes)
                .unwrap();
            assert_eq!(paced, page.bytes, "{case}");
            assert!(page.end || page.first_break.is_some(), "{case}");
            breaks.extend(page.first_break.map(|found| (first, last, found.position)));
        }
        assert_eq!(breaks.len(), 1, "{case}: {breaks:?}");
        let (first, last, at) = breaks[0];
        assert!(first.0 <= position && position <= last.0, "{case}");
        assert_eq!(at, Position(position), "{case}");
    }
}

/// One forgery of a receipt, applied in place.
type ForgeReceipt = fn(&mut Receipt);
/// One alteration of an event, applied in place.
type AlterEvent = fn(&mut Event);

fn signer() -> Signer {
    Signer::new("k1", [7u8; 32])
}

fn signed_config() -> Config {
    Config {
        signer: Some(signer()),
        ..Config::default()
    }
}

fn read_back(store: &Store, receipt: &Receipt) -> Vec<Event> {
    receipt
        .events
        .iter()
        .map(|committed| store.get(committed.id).unwrap())
        .collect()
}

/// A store with a gate on [`SCOPE`] registered at position 1, so receipts list a gate pass.
fn gated_store(dir: &Path, config: Config) -> Store {
    let store = Store::open(dir, config).unwrap();
    let definition = GateDefinition {
        name: "payload-cap".to_string(),
        scopes: vec![SCOPE.to_string()],
        types: Vec::new(),
        rule: Rule::SizeLimit {
            max_payload_bytes: 1024,
        },
    };
    store.register_gate(definition).unwrap();
    store
}

fn deposit(entity: &str, payload: &str) -> NewEvent {
    NewEvent::new(SCOPE, entity, "Deposited", payload.as_bytes().to_vec())
}

#[test]
fn unsigned_receipt_verifies_offline_without_a_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path(), Config::default());
    let receipt = store
        .append(Append::new(vec![
            deposit("acct-1", "10"),
            deposit("acct-2", "20"),
            deposit("acct-1", "30"),
        ]))
        .unwrap();
    assert_eq!(receipt.signature, None);
    assert_eq!(
        receipt.gates,
        [GatePass {
            name: "payload-cap".to_string(),
            version: 1
        }]
    );
    assert_eq!(receipt.digest, store.digest());
    let events = read_back(&store, &receipt);
    assert_eq!(receipt::verify(&receipt, &events, None), Ok(()));

    let key = signer().public_key();
    assert_eq!(
        receipt::verify(&receipt, &events, Some(&key)),
        Err(ReceiptError::Unsigned)
    );
    assert_eq!(
        receipt::verify(&receipt, &events[..2], None),
        Err(ReceiptError::Count {
            receipt: 3,
            given: 2
        })
    );
    let mut extra = events.clone();
    extra.push(events[0].clone());
    assert_eq!(
        receipt::verify(&receipt, &extra, None),
        Err(ReceiptError::Count {
            receipt: 3,
            given: 4
        })
    );
}

#[test]
fn signed_receipt_verifies_with_only_receipt_events_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path(), signed_config());
    let receipt = store
        .append(Append::new(vec![
            deposit("acct-1", "10"),
            deposit("acct-2", "20"),
        ]))
        .unwrap();
    assert_eq!(
        receipt
            .signature
            .as_ref()
            .map(|signature| signature.key_id.as_str()),
        Some("k1")
    );
    let events = read_back(&store, &receipt);
    let key = signer().public_key();
    assert_eq!(receipt::verify(&receipt, &events, Some(&key)), Ok(()));
    assert_eq!(receipt::verify(&receipt, &events, None), Ok(()));

    // Nothing of the store is needed: not the open store, not even its files.
    drop(store);
    drop(dir);
    assert_eq!(receipt::verify(&receipt, &events, Some(&key)), Ok(()));

    let wrong_key = Signer::new("k1", [8u8; 32]).public_key();
    let result = receipt::verify(&receipt, &events, Some(&wrong_key));
    assert!(
        matches!(result, Err(ReceiptError::BadSignature(_))),
        "{result:?}"
    );

    let mut stripped = receipt.clone();
    stripped.signature = None;
    assert_eq!(
        receipt::verify(&stripped, &events, Some(&key)),
        Err(ReceiptError::Unsigned)
    );
    assert_eq!(
        receipt::verify(&receipt, &events[..1], Some(&key)),
        Err(ReceiptError::Count {
            receipt: 2,
            given: 1
        })
    );
}

#[test]
fn forged_receipts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path(), signed_config());
    let first = store
        .append(Append::new(vec![deposit("acct-1", "10")]))
        .unwrap();
    let second = store
        .append(Append::new(vec![deposit("acct-2", "20")]))
        .unwrap();
    let first_events = read_back(&store, &first);
    let second_events = read_back(&store, &second);
    let key = signer().public_key();
    assert_eq!(receipt::verify(&first, &first_events, Some(&key)), Ok(()));
    assert_eq!(receipt::verify(&second, &second_events, Some(&key)), Ok(()));

    // Fields the events cannot vouch for: only the signature catches a change.
    let signature_only: [(&str, ForgeReceipt); 5] = [
        ("gate name", |forged| {
            forged.gates[0].name = "payload-cbp".to_string()
        }),
        ("gate version", |forged| forged.gates[0].version += 1),
        ("gate dropped", |forged| forged.gates.clear()),
        ("digest", |forged| forged.digest[0] ^= 1),
        ("signature bytes", |forged| {
            forged.signature.as_mut().unwrap().bytes[5] ^= 1
        }),
    ];
    for (what, forge) in signature_only {
        let mut forged = first.clone();
        forge(&mut forged);
        assert_ne!(forged, first, "{what}");
        assert_eq!(
            receipt::verify(&forged, &first_events, None),
            Ok(()),
            "{what}: the events alone agree"
        );
        let result = receipt::verify(&forged, &first_events, Some(&key));
        assert!(
            matches!(result, Err(ReceiptError::BadSignature(_))),
            "{what}: {result:?}"
        );
    }

    // Another position, hash, id and timestamp spliced in together with the event they belong
    // to: every event check passes, and the signature over the original still refuses it.
    let mut spliced = first.clone();
    spliced.events[0] = second.events[0];
    assert_ne!(spliced.events[0].position, first.events[0].position);
    assert_eq!(receipt::verify(&spliced, &second_events, None), Ok(()));
    let result = receipt::verify(&spliced, &second_events, Some(&key));
    assert!(
        matches!(result, Err(ReceiptError::BadSignature(_))),
        "{result:?}"
    );

    // Fields the events do vouch for: the event check refuses them before the signature is
    // looked at, with or without a key.
    let event_checked: [(&str, ForgeReceipt); 6] = [
        ("position", |forged| forged.events[0].position.0 += 1),
        ("version", |forged| forged.events[0].version.0 += 1),
        ("timestamp", |forged| {
            forged.events[0].timestamp = forged.events[0].timestamp.next()
        }),
        ("id", |forged| forged.events[0].id = EventId::default()),
        ("hash", |forged| forged.events[0].hash[31] ^= 1),
        ("prev_hash", |forged| forged.events[0].prev_hash[0] ^= 1),
    ];
    for (what, forge) in event_checked {
        let mut forged = first.clone();
        forge(&mut forged);
        for key in [None, Some(&key)] {
            let result = receipt::verify(&forged, &first_events, key);
            assert!(
                matches!(result, Err(ReceiptError::Event { index: 0, .. })),
                "{what}: {result:?}"
            );
        }
    }

    // A hash forged in both the receipt and the event still fails: the hash is recomputed.
    let mut forged = first.clone();
    forged.events[0].hash[0] ^= 1;
    let mut forged_events = first_events.clone();
    forged_events[0].hash = forged.events[0].hash;
    let result = receipt::verify(&forged, &forged_events, Some(&key));
    assert!(
        matches!(result, Err(ReceiptError::Event { index: 0, .. })),
        "{result:?}"
    );
}

#[test]
fn altered_events_fail_receipt_verification() {
    let dir = tempfile::tempdir().unwrap();
    let store = gated_store(dir.path(), signed_config());
    let receipt = store
        .append(Append::new(vec![
            deposit("acct-1", "10"),
            NewEvent {
                tags: vec!["customer:9".to_string()],
                ..deposit("acct-2", "20")
            },
        ]))
        .unwrap();
    let events = read_back(&store, &receipt);
    let key = signer().public_key();
    assert_eq!(receipt::verify(&receipt, &events, Some(&key)), Ok(()));

    let alterations: [(&str, AlterEvent); 6] = [
        ("payload", |event| {
            let mut payload = event.payload.to_vec();
            payload[0] ^= 1;
            event.payload = payload.into();
        }),
        ("payload extended", |event| {
            let mut payload = event.payload.to_vec();
            payload.push(b'0');
            event.payload = payload.into();
        }),
        ("entity", |event| event.entity.push('x')),
        ("event type", |event| {
            event.event_type = "Withdrawn".to_string()
        }),
        ("tag", |event| event.tags = vec!["customer:8".to_string()]),
        ("metadata", |event| {
            event.metadata.insert("memo".to_string(), "x".to_string());
        }),
    ];
    for (what, alter) in alterations {
        let mut altered = events.clone();
        alter(&mut altered[1]);
        for key in [None, Some(&key)] {
            let result = receipt::verify(&receipt, &altered, key);
            assert!(
                matches!(result, Err(ReceiptError::Event { index: 1, .. })),
                "{what}: {result:?}"
            );
        }
    }
    let mut swapped = events.clone();
    swapped.swap(0, 1);
    let result = receipt::verify(&receipt, &swapped, Some(&key));
    assert!(
        matches!(result, Err(ReceiptError::Event { index: 0, .. })),
        "{result:?}"
    );
}

#[test]
fn receipt_of_an_event_altered_on_disk_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), signed_config()).unwrap();
    let receipt = store
        .append(Append::new(vec![new_event(0, 0), new_event(1, 0)]))
        .unwrap();
    let key = signer().public_key();
    assert_eq!(
        receipt::verify(&receipt, &read_back(&store, &receipt), Some(&key)),
        Ok(())
    );
    drop(store);

    tamper(dir.path(), 2, &payload_marker(1));
    let store = Store::open(dir.path(), signed_config()).unwrap();
    let result = receipt::verify(&receipt, &read_back(&store, &receipt), Some(&key));
    assert!(
        matches!(result, Err(ReceiptError::Event { index: 1, .. })),
        "{result:?}"
    );
}

#[test]
fn prev_hash_links_each_event_to_the_previous_one_of_its_entity() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), signed_config()).unwrap();
    let first = store
        .append(Append::new(vec![deposit("acct-1", "10")]))
        .unwrap();
    let other = store
        .append(Append::new(vec![deposit("acct-2", "20")]))
        .unwrap();
    let second = store
        .append(Append::new(vec![
            deposit("acct-1", "30"),
            deposit("acct-1", "40"),
        ]))
        .unwrap();

    assert_eq!(
        first.events[0].prev_hash, [0; 32],
        "an entity's first event links to zeros"
    );
    assert_eq!(
        other.events[0].prev_hash, [0; 32],
        "not to the previous event of the log"
    );
    assert_eq!(second.events[0].prev_hash, first.events[0].hash);
    assert_eq!(
        second.events[1].prev_hash, second.events[0].hash,
        "links within one append"
    );
    assert_eq!(
        store.get(second.events[0].id).unwrap().hash,
        second.events[0].hash
    );
    let key = signer().public_key();
    assert_eq!(
        receipt::verify(&second, &read_back(&store, &second), Some(&key)),
        Ok(())
    );
}

#[test]
fn idempotent_retry_returns_the_original_signed_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let keyed = || Append {
        idempotency_key: Some("deposit-42".to_string()),
        ..Append::new(vec![deposit("acct-1", "10"), deposit("acct-2", "20")])
    };
    let key = signer().public_key();
    let store = gated_store(dir.path(), signed_config());
    let original = store.append(keyed()).unwrap();
    let events = read_back(&store, &original);
    assert_eq!(receipt::verify(&original, &events, Some(&key)), Ok(()));
    store
        .append(Append::new(vec![deposit("acct-1", "30")]))
        .unwrap();
    let head = store.head();

    let retried = store.append(keyed()).unwrap();
    assert_eq!(store.head(), head, "a retry writes nothing");
    assert_eq!(
        retried, original,
        "same events, gates, digest at commit, and signature"
    );
    assert_eq!(receipt::verify(&retried, &events, Some(&key)), Ok(()));
    drop(store);

    // After a reopen the key is rebuilt from the log's append trailer.
    let store = Store::open(dir.path(), signed_config()).unwrap();
    let retried = store.append(keyed()).unwrap();
    assert_eq!(store.head(), head);
    assert_eq!(retried, original);
    assert_eq!(
        receipt::verify(&retried, &read_back(&store, &retried), Some(&key)),
        Ok(())
    );
}

#[test]
fn consistent_rewrite_passes_verify_but_changes_the_digest_and_fails_the_receipt() {
    // The chain is self-consistent evidence only: a forger who rewrites an entity's last event
    // and its hash leaves nothing for `verify` to find. What catches it is a digest or receipt
    // held outside the store, which is why receipts carry the digest.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), signed_config()).unwrap();
    let original = populate(&store, 0);
    let receipt = store
        .append(Append::new(vec![new_event(N_EVENTS, 0)]))
        .unwrap();
    let committed = receipt.events[0];
    assert_ne!(
        committed.prev_hash, [0; 32],
        "the rewritten event chains from an earlier one"
    );
    let digest_before = store.digest();
    assert_eq!(receipt.digest, digest_before);
    drop(store);

    tamper_and_rehash(
        dir.path(),
        committed.position.0,
        &payload_marker(N_EVENTS),
        &committed.hash,
        &committed.prev_hash,
    );
    let store = Store::open(dir.path(), signed_config()).unwrap();
    let rewritten = store.get(committed.id).unwrap();
    assert!(rewritten.payload.starts_with(b"Payload-marker-030"));
    assert_ne!(rewritten.hash, committed.hash);
    let report = store.verify().unwrap();
    assert_eq!(report.first_break, None, "{report:?}");
    assert_eq!(report.events, N_EVENTS as u64 + 1);
    assert_eq!(report.digest, store.digest());
    assert_ne!(
        report.digest, digest_before,
        "the digest exposes the rewrite"
    );
    let mut expected = original;
    expected.push(rewritten.clone());
    assert_eq!(report.digest, digest_of(&expected));

    let key = signer().public_key();
    let result = receipt::verify(&receipt, &[rewritten], Some(&key));
    assert!(
        matches!(result, Err(ReceiptError::Event { index: 0, .. })),
        "{result:?}"
    );
}
