//! Helpers shared by the CLI test binaries (`cli.rs`, `bench.rs`, `cluster.rs`): finding the
//! server binary, reading a child's pipes, and waiting for a CLI run to finish.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The `causewayd` binary, built by `cargo test --workspace` beside the `causeway` binary
/// (or next to this test's directory, where a build without a separate build directory
/// puts both).
pub fn causewayd() -> PathBuf {
    let name = format!("causewayd{}", std::env::consts::EXE_SUFFIX);
    let exe = std::env::current_exe().expect("the test executable's path");
    let candidates = [
        Path::new(env!("CARGO_BIN_EXE_causeway")).parent(),
        exe.parent().and_then(Path::parent),
    ];
    let found = candidates
        .into_iter()
        .flatten()
        .map(|dir| dir.join(&name))
        .find(|binary| binary.exists());
    found.unwrap_or_else(|| {
        panic!(
            "no {name} beside the causeway binary or the test: run `cargo test --workspace` \
             (or `cargo build -p causeway-server`) so the server binary is built"
        )
    })
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

/// What a finished CLI run printed and how it exited.
pub struct Run {
    pub args: String,
    pub success: bool,
    /// The exit status, `None` when a signal ended it. Read by `cli.rs`, not by every test
    /// binary that shares this module.
    #[allow(dead_code)]
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child`, the CLI run with `args`, up to `deadline` (then kills it and fails the
/// test), and collects what it printed. A caller may have taken a pipe to read it itself; that
/// output is then empty here.
pub fn finish(mut child: Child, args: &[&str], deadline: Duration) -> Run {
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the CLI") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!(
                "`causeway {}` did not finish in {deadline:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        args: args.join(" "),
        success: status.success(),
        code: status.code(),
        stdout: stdout.map_or_else(String::new, |reader| reader.join().expect("stdout reader")),
        stderr: stderr.map_or_else(String::new, |reader| reader.join().expect("stderr reader")),
    }
}
