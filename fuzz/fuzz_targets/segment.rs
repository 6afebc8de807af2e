//! A segment file as found on disk: opened (recovery), scanned, appended to and reopened. Each
//! input gets a fresh directory under one temporary directory per process.
#![no_main]

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;

static ROOT: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("a temporary directory"));
static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let dir = ROOT
        .path()
        .join(RUN.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir(&dir).expect("a directory per input");
    causeway_core::fuzzing::segment(&dir, data);
    std::fs::remove_dir_all(&dir).expect("remove the input's directory");
});
