//! Checkpoints and the durable watermark, through the public API.
//!
//! Invariants checked: a checkpoint taken while appends go on holds exactly the events up to
//! the committed head it names, opens as a store with that head and the digest the live store
//! had there (known from the receipts), verifies against its manifest, and carries the last
//! replicated entry applied; a changed or missing file fails `Manifest::verify`; a checkpoint
//! refuses a directory that is not empty; `Store::sync` returns the last entry applied and
//! leaves the store writable in either durability mode.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use causeway_core::clock::Timestamp;
use causeway_core::limits::SEGMENT_BYTES_MIN;
use causeway_core::store::Manifest;
use causeway_core::*;

fn config() -> Config {
    Config {
        segment_bytes: SEGMENT_BYTES_MIN,
        ..Config::default()
    }
}

/// Four writers append batches while the main thread takes checkpoints; every checkpoint must
/// open at its position with the digest the receipts reported there.
#[test]
fn a_checkpoint_taken_under_concurrent_appends_opens_with_the_digest_of_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), config()).unwrap());
    // The digest after every append, by the position of its last event.
    let digests: Arc<Mutex<BTreeMap<u64, Hash>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (store, digests, stop) = (store.clone(), digests.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) || seq < 20 {
                    let events = (0..1 + seq % 3)
                        .map(|event_idx| {
                            NewEvent::new(
                                "acme",
                                format!("w{writer}-{}", seq % 5),
                                "T",
                                format!("{writer}/{seq}/{event_idx}")
                                    .repeat(1 + seq % 40)
                                    .into_bytes(),
                            )
                        })
                        .collect();
                    let receipt = store.append(Append::new(events)).unwrap();
                    let last = receipt.events.last().unwrap().position.0;
                    digests.lock().unwrap().insert(last, receipt.digest);
                    seq += 1;
                }
            })
        })
        .collect();
    let checkpoints = tempfile::tempdir().unwrap();
    let mut taken = Vec::new();
    for checkpoint_idx in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(40));
        let target = checkpoints.path().join(format!("c{checkpoint_idx}"));
        taken.push((target.clone(), store.checkpoint(&target).unwrap()));
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().unwrap();
    }
    let digests = digests.lock().unwrap();
    let mut sealed_links = 0;
    for (target, manifest) in taken {
        manifest.verify(&target).unwrap();
        assert_eq!(Manifest::read(&target).unwrap(), manifest);
        sealed_links += manifest
            .files
            .iter()
            .filter(|file| file.name.ends_with(".seg"))
            .count()
            - 1;
        let copy = Store::open(&target, config()).unwrap();
        assert_eq!(copy.head(), manifest.position);
        assert_eq!(copy.digest(), manifest.digest);
        if manifest.position.0 > 0 {
            assert_eq!(digests[&manifest.position.0], manifest.digest);
        }
        assert_eq!(copy.verify().unwrap().first_break, None);
        // A copy is a store of its own: it takes appends.
        copy.append(Append::new(vec![NewEvent::new(
            "acme",
            "after",
            "T",
            vec![],
        )]))
        .unwrap();
    }
    assert!(
        sealed_links > 0,
        "the checkpoints must include sealed segments"
    );
    // The live store is untouched by the copies' appends.
    drop(Arc::into_inner(store).unwrap());
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.verify().unwrap().first_break, None);
    assert_eq!(store.version("acme", "after"), Version(0));
}

#[test]
fn a_changed_or_missing_file_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    for seq in 0..200u32 {
        store
            .append(Append::new(vec![NewEvent::new(
                "acme",
                "e",
                "T",
                seq.to_string().repeat(20).into_bytes(),
            )]))
            .unwrap();
    }
    let checkpoints = tempfile::tempdir().unwrap();
    let target = checkpoints.path().join("c");
    let manifest = store.checkpoint(&target).unwrap();
    manifest.verify(&target).unwrap();
    // Copied, not linked, so that changing it leaves the live store alone.
    let last = &manifest.files.last().unwrap().name;
    let path = target.join(last);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        manifest.verify(&target),
        Err(Error::Corrupt { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        manifest.verify(&target),
        Err(Error::Corrupt { .. })
    ));

    assert!(matches!(
        store.checkpoint(&target),
        Err(Error::InvalidInput(message)) if message.contains("not empty")
    ));
}

#[test]
fn the_manifest_names_the_last_entry_applied_and_sync_returns_it() {
    for durability in [Durability::Fsync, Durability::Relaxed] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Config {
                durability,
                ..config()
            },
        )
        .unwrap();
        assert_eq!(store.sync().unwrap(), None);
        for index in 1..=5u64 {
            let command = Command::append(
                Timestamp::new(1_764_000_000_000 + index, 0),
                Append::new(vec![NewEvent {
                    id: Some(EventId(uuid::Uuid::from_u128(u128::from(index)))),
                    ..NewEvent::new("acme", "e", "T", vec![])
                }]),
            );
            store.apply_at(EntryId { term: 2, index }, command).unwrap();
        }
        store
            .apply_at(EntryId { term: 2, index: 6 }, Command::noop())
            .unwrap();
        assert_eq!(
            store.sync().unwrap(),
            Some(EntryId { term: 2, index: 6 }),
            "{durability:?}"
        );
        let checkpoints = tempfile::tempdir().unwrap();
        let manifest = store.checkpoint(checkpoints.path().join("c")).unwrap();
        // The no-op wrote no event, but an applied mark records it, and the copy holds it.
        assert_eq!(manifest.applied, Some(EntryId { term: 2, index: 6 }));
        assert_eq!(manifest.position, Position(5));
        let copy = Store::open(checkpoints.path().join("c"), config()).unwrap();
        assert_eq!(copy.applied(), Some(EntryId { term: 2, index: 6 }));
    }
}
