//! Helpers shared by the integration tests of `causeway-core`: reading a store's files for
//! byte-for-byte comparison, and printing bytes for golden files.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code, clippy::unwrap_used)]

use std::fmt::Write;
use std::path::Path;

/// The files of a store's `events/` directory (segments and sidecar indexes), by name, with
/// their bytes: what two replicas that applied the same commands must agree on.
pub fn event_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.join("events"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Bytes as lines of 16 in hex, each headed by its offset: the form of the golden files.
pub fn hex_lines(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (line_idx, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|byte| format!("{byte:02x}")).collect();
        writeln!(out, "{:08x}  {}", line_idx * 16, hex.join(" ")).unwrap();
    }
    out
}
