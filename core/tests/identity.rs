//! The identity file `STORE`: a data directory that once held a store refuses to open when its
//! log is gone, rather than starting over empty without a word; a new directory gets an identity
//! that stays; a log from before the file existed is given one. Each test names the bug it
//! catches.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use causeway_core::{Append, Config, Error, NewEvent, Position, Store};

fn append_one(store: &Store, n: u8) {
    let event = NewEvent::new("acme", "order-1", "Placed", vec![n; 10]);
    store.append(Append::new(vec![event])).unwrap();
}

/// The error a directory with an identity and no log gets; checks it names `STORE` and says
/// what is missing.
fn assert_log_gone(dir: &Path) {
    match Store::open(dir, Config::default()) {
        Err(Error::Corrupt { file, detail, .. }) => {
            assert_eq!(file, dir.join("STORE"));
            assert!(detail.contains("log is gone"), "{detail}");
            assert!(detail.contains("events"), "{detail}");
        }
        Err(other) => panic!("expected the log to be reported gone, got {other}"),
        Ok(store) => panic!("opened as a store with head {}", store.head()),
    }
}

/// Catches a store that opens empty when `events/` is gone (a power cut that lost the data
/// directory's entry for it, or an operator's mistake) or holds no segment.
#[test]
fn a_store_whose_log_is_gone_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    append_one(&store, 1);
    drop(store);

    let events = dir.path().join("events");
    let moved = dir.path().join("events-moved");
    fs::rename(&events, &moved).unwrap();
    assert_log_gone(dir.path());
    assert!(!events.exists(), "a refused open creates no log");

    fs::create_dir(&events).unwrap();
    assert_log_gone(dir.path());

    // Sidecars alone are no log either.
    for entry in fs::read_dir(&moved).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "idx") {
            fs::copy(&path, events.join(path.file_name().unwrap())).unwrap();
        }
    }
    assert_log_gone(dir.path());

    fs::remove_dir_all(&events).unwrap();
    fs::rename(&moved, &events).unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.head(), Position(1), "the log back, the store opens");
}

/// Catches an identity that is not written for a new store, or not kept across opens.
#[test]
fn a_new_store_gets_an_identity_that_stays() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let id = store.id();
    drop(store);
    let text = fs::read_to_string(dir.path().join("STORE")).unwrap();
    assert!(text.starts_with("format=1\n"), "{text}");
    assert!(text.contains(&format!("store_id={id}\n")), "{text}");
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.id(), id);

    let other = tempfile::tempdir().unwrap();
    let other_store = Store::open(other.path(), Config::default()).unwrap();
    assert_ne!(other_store.id(), id, "each store has its own id");
}

/// Catches refusing a store written before `STORE` existed: its log is there, so it opens, keeps
/// its events and is given an identity, which then stays.
#[test]
fn a_log_without_an_identity_is_given_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    append_one(&store, 1);
    append_one(&store, 2);
    let (head, digest) = store.head_and_digest();
    drop(store);
    fs::remove_file(dir.path().join("STORE")).unwrap();

    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.head_and_digest(), (head, digest));
    let id = store.id();
    drop(store);
    assert!(dir.path().join("STORE").exists());
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.id(), id);
}

/// Catches an identity file that is trusted though damaged.
#[test]
fn a_damaged_identity_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), Config::default()).unwrap());
    let path = dir.path().join("STORE");
    let mut bytes = fs::read(&path).unwrap();
    bytes[12] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    match Store::open(dir.path(), Config::default()) {
        Err(Error::Corrupt { file, detail, .. }) => {
            assert_eq!(file, path);
            assert!(detail.contains("checksum"), "{detail}");
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("a damaged identity was accepted"),
    }
}

/// Catches a store that opens without its newest segment: it would report a shorter log, lose
/// the acknowledged events in it, and write new events at their positions. The segment before
/// it has a sidecar index (it was sealed), which says a later segment existed.
#[test]
fn a_store_whose_newest_segment_is_gone_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        segment_bytes: causeway_core::limits::SEGMENT_BYTES_MIN,
        ..Config::default()
    };
    let store = Store::open(dir.path(), config()).unwrap();
    for n in 0..200 {
        append_one(&store, n);
    }
    drop(store);
    let events = dir.path().join("events");
    let mut segments: Vec<_> = fs::read_dir(&events)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() > 2, "the test needs sealed segments");
    let newest = segments.pop().unwrap();
    let kept = dir.path().join("newest-kept");
    fs::rename(&newest, &kept).unwrap();
    match Store::open(dir.path(), config()) {
        Err(Error::Corrupt { file, detail, .. }) => {
            assert_eq!(&file, segments.last().unwrap());
            assert!(detail.contains("missing"), "{detail}");
        }
        Err(other) => panic!("expected the missing segment to be reported, got {other}"),
        Ok(store) => panic!("opened with head {}", store.head()),
    }
    // Put back, it opens with every event.
    fs::rename(&kept, &newest).unwrap();
    assert_eq!(
        Store::open(dir.path(), config()).unwrap().head(),
        Position(200)
    );
}
