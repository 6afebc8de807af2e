//! Helpers shared by the CLI test binaries (`cli.rs`, `bench.rs`): finding the server binary
//! and reading a child's pipes.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, channel};

/// The `causewayd` binary, built by `cargo test --workspace` next to this test's directory.
pub fn causewayd() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let debug_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let binary = debug_dir.join(format!("causewayd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "{} does not exist: run `cargo test --workspace` (or `cargo build -p causeway-server`) \
         so the server binary is built",
        binary.display()
    );
    binary
}

/// Everything a pipe prints, collected on a thread.
pub fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// The lines a pipe prints, as they come.
pub fn line_channel(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}
