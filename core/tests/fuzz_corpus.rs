//! The fuzz corpora of the core's targets, replayed through the same entry points the fuzz
//! targets call (`causeway_core::fuzzing`), so every seed and every crash input kept in
//! `fuzz/corpus/` is checked by the ordinary test run, without cargo-fuzz.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read a corpus input"))
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "the {target} corpus has seeds");
    inputs
}

#[test]
fn record_corpus_holds() {
    for (_name, bytes) in corpus("record") {
        causeway_core::fuzzing::record(&bytes);
    }
}

#[test]
fn command_corpus_decodes_and_round_trips() {
    for (name, bytes) in corpus("command") {
        causeway_core::fuzzing::command(&bytes);
        if name.starts_with("golden-") {
            assert!(
                causeway_core::Command::decode(&bytes).is_ok(),
                "{name} decodes"
            );
        }
    }
}

#[test]
fn segment_corpus_recovers() {
    for (name, bytes) in corpus("segment") {
        let dir = tempfile::tempdir().expect("a temporary directory");
        causeway_core::fuzzing::segment(dir.path(), &bytes);
        // The valid seeds must open: a refusal would skip every property after it.
        let log = causeway_core::segment::SegmentLog::open(dir.path(), 64 * 1024, 1);
        assert!(log.is_ok(), "{name}: {:?}", log.err());
    }
}

#[test]
fn gate_corpus_holds() {
    for (_name, bytes) in corpus("gate") {
        causeway_core::fuzzing::gate(&bytes);
    }
}
