//! Golden test of the on-disk format: a fixed command written to a fresh store must produce
//! exactly the bytes in `tests/golden/segment-v1.hex`. A format change shows up here as a visible
//! diff; bless a deliberate one with `CAUSEWAY_BLESS=1 cargo test -p causeway-core --test format`
//! and describe it in `docs/FORMAT.md`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use causeway_core::clock::Timestamp;
use causeway_core::*;
use common::hex_lines;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/segment-v1.hex");

fn id(n: u8) -> EventId {
    EventId(uuid::Uuid::from_bytes([n; 16]))
}

/// Where the frames of a segment end: at the first frame header of zeros (reserved space) or
/// the end of the file, per `docs/FORMAT.md`.
fn frames_end(segment: &[u8]) -> usize {
    let mut offset = 32;
    while let Some(header) = segment.get(offset..offset + 17)
        && header.iter().any(|&byte| byte != 0)
    {
        let body_len = u32::from_le_bytes(header[4..8].try_into().unwrap());
        offset += 17 + body_len as usize;
    }
    offset
}

#[test]
fn segment_bytes_match_the_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let command = Command {
        timestamp: Timestamp::new(1_764_000_000_000, 0),
        action: Action::Append {
            request_hash: [7; 32],
            append: Append::new(vec![
                NewEvent {
                    id: Some(id(1)),
                    tags: vec!["customer:42".to_string()],
                    content_type: "application/json".to_string(),
                    metadata: BTreeMap::from([("source".to_string(), "golden".to_string())]),
                    ..NewEvent::new(
                        "acme",
                        "order-507",
                        "OrderPlaced",
                        br#"{"total":12}"#.to_vec(),
                    )
                },
                NewEvent {
                    id: Some(id(2)),
                    causation: vec![id(1)],
                    ..NewEvent::new("acme", "order-507", "OrderPaid", b"ok".to_vec())
                },
            ]),
        },
    };
    let receipt = store.apply(command).unwrap();
    assert_eq!(
        receipt.events[1].timestamp,
        Timestamp::new(1_764_000_000_000, 1)
    );
    drop(store);
    let file = std::fs::read(dir.path().join("events/00000000000000000001.seg")).unwrap();
    // The rest of the segment's reserved space reads as zeros, to the configured size.
    let (bytes, reserved) = file.split_at(frames_end(&file));
    assert!(reserved.iter().all(|&byte| byte == 0));
    assert_eq!(file.len() as u64, Config::default().segment_bytes);
    let actual = hex_lines(bytes);
    if std::env::var_os("CAUSEWAY_BLESS").is_some() {
        std::fs::write(GOLDEN, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(GOLDEN).unwrap_or_default();
    assert!(
        actual == expected,
        "segment bytes changed; expected:\n{expected}\nactual:\n{actual}"
    );
}
