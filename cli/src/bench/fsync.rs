//! `--fsync-probe DIR`: how long the disk under DIR takes to make 4 KiB of appended bytes
//! durable (`write` then `fdatasync`, the file growing as a segment does), measured in the
//! same run as the RPC figures so a durable append can be read against its disk.
//!
//! Point DIR at the file system of the server's data directory: fsync latency is a property
//! of the file system and of everything else writing to it at the time.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;

use crate::bench::load::{new_histogram, record_ns};

/// How long the probe writes and syncs.
pub const PROBE_TIME: Duration = Duration::from_secs(1);
/// Bytes written before each sync: one page.
pub const BLOCK_BYTES: usize = 4096;

/// What the probe measured.
#[derive(Clone, Debug)]
pub struct FsyncProbe {
    /// Syncs completed.
    pub syncs: u64,
    /// How long they took in all.
    pub elapsed: Duration,
    /// The latency of `write` plus `fdatasync`, in nanoseconds.
    pub latency: Histogram<u64>,
}

/// Appends and syncs 4 KiB blocks to a new file in `dir` for [`PROBE_TIME`], then removes the
/// file. Blocking: run it off the async workers.
pub fn probe(dir: &Path) -> Result<FsyncProbe> {
    let path = dir.join(format!(".causeway-bench-fsync-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("cannot create the fsync probe file {}", path.display()))?;
    let block = [0x5a_u8; BLOCK_BYTES];
    let mut latency = new_histogram();
    let mut syncs = 0;
    let start = Instant::now();
    let result = loop {
        let elapsed = start.elapsed();
        if elapsed >= PROBE_TIME {
            break Ok(elapsed);
        }
        let sync_start = Instant::now();
        if let Err(err) = file.write_all(&block).and_then(|()| file.sync_data()) {
            break Err(err);
        }
        record_ns(&mut latency, sync_start.elapsed());
        syncs += 1;
    };
    drop(file);
    let removed = std::fs::remove_file(&path);
    let elapsed =
        result.with_context(|| format!("the fsync probe failed on {}", path.display()))?;
    removed.with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(FsyncProbe {
        syncs,
        elapsed,
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_syncs_and_cleans_up() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let probe = probe(dir.path()).expect("the probe runs");
        assert!(probe.syncs > 0);
        assert_eq!(probe.latency.len(), probe.syncs);
        assert!(probe.elapsed >= PROBE_TIME);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list the directory")
            .collect();
        assert!(left.is_empty(), "the probe file is removed: {left:?}");
    }
}
