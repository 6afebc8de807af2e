//! The scrubber: a background thread that re-reads the store's sealed segments at a bounded
//! pace, checking every frame's CRC32 and every event's hash chain (`Store::verify_range`), so
//! that damage to data nobody reads is found by the node rather than by the next reader.
//!
//! - Paced: it sleeps after each chunk it reads for as long as `--scrub-bytes-per-sec` allows,
//!   so the disk keeps its bandwidth for appends and reads; `0` turns it off. It reads on the
//!   store's reading side and never waits for the writer.
//! - Passes: every sealed segment whose events are committed, oldest first, then a pause of
//!   `SCRUB_PASS_PAUSE`, then again. The active segment is left to open's recovery and to
//!   every read, which check its frames.
//! - What it finds, once per break: an ERROR log line (segment file name, position, offset,
//!   what differs), `causeway_scrub_breaks_total`, and a line in `/readyz`'s answer
//!   ([`Findings`]). Damage does not make the node not ready: reads of the damaged events
//!   already answer DATA_LOSS, and taking a single node out of service for them would turn a
//!   damaged event into an outage. The operator replaces the node's data (from a backup, or
//!   a cluster peer's snapshot); self-repair from peers is not done here.
//! - Stopped before the store closes ([`Scrubber::stop`]), within one chunk's read.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use causeway_core::Error as CoreError;

use crate::limits::{SCRUB_BREAKS_KEPT_MAX, SCRUB_PASS_PAUSE};
use crate::live::LiveStore;

/// The longest single sleep, so a stop is seen quickly.
const SLEEP_SLICE: Duration = Duration::from_millis(100);

/// What the scrubber has found, for `/readyz`.
#[derive(Debug, Default)]
pub struct Findings {
    /// Each break once, as a sentence, at most `SCRUB_BREAKS_KEPT_MAX`.
    breaks: Mutex<BTreeSet<String>>,
    /// Breaks found, all counted.
    n_breaks: AtomicU64,
}

impl Findings {
    /// Records a break; false when it was known already.
    fn record(&self, sentence: String) -> bool {
        let mut breaks = self.breaks.lock().expect("findings lock poisoned");
        if breaks.contains(&sentence) {
            return false;
        }
        self.n_breaks.fetch_add(1, Ordering::Relaxed);
        if breaks.len() < SCRUB_BREAKS_KEPT_MAX {
            breaks.insert(sentence);
        }
        true
    }

    /// One line per break found so far (and how many more there are), or `None`.
    pub fn summary(&self) -> Option<String> {
        let breaks = self.breaks.lock().expect("findings lock poisoned");
        let n_breaks = self.n_breaks.load(Ordering::Relaxed);
        if n_breaks == 0 {
            return None;
        }
        let mut summary = format!("scrub found {n_breaks} break(s) in sealed segments:");
        for sentence in breaks.iter() {
            summary.push_str("\n  ");
            summary.push_str(sentence);
        }
        if n_breaks > breaks.len() as u64 {
            summary.push_str(&format!(
                "\n  ... and {} more",
                n_breaks - breaks.len() as u64
            ));
        }
        Some(summary)
    }
}

/// The running scrubber.
#[derive(Debug)]
pub struct Scrubber {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scrubber {
    /// Starts the scrubber over `store` at `bytes_per_sec` (more than 0), reporting to
    /// `findings`.
    pub fn start(
        store: LiveStore,
        bytes_per_sec: u64,
        findings: Arc<Findings>,
    ) -> std::io::Result<Scrubber> {
        assert!(bytes_per_sec > 0, "a scrubber of 0 bytes/s is not started");
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("causeway-scrub".to_string())
            .spawn(move || run(&store, bytes_per_sec, &findings, &thread_stop))?;
        tracing::info!(bytes_per_sec, "scrubber started");
        Ok(Scrubber {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the scrubber and waits for its thread (at most one chunk's read and a short sleep).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(store: &LiveStore, bytes_per_sec: u64, findings: &Findings, stop: &AtomicBool) {
    let bytes_total = metrics::counter!("causeway_scrub_bytes_total");
    let segments_total = metrics::counter!("causeway_scrub_segments_total");
    let passes_total = metrics::counter!("causeway_scrub_passes_total");
    let breaks_total = metrics::counter!("causeway_scrub_breaks_total");
    let stopped = || stop.load(Ordering::Acquire);
    while !stopped() {
        // Taken per pass: a cluster node swaps its store when it installs a snapshot.
        let store = store.get();
        for (first, last) in store.sealed_segments() {
            if stopped() {
                return;
            }
            let mut pace = |bytes: u64| {
                bytes_total.increment(bytes);
                sleep(
                    Duration::from_secs_f64(bytes as f64 / bytes_per_sec as f64),
                    stop,
                );
            };
            match store.verify_range(first, last, u64::MAX, &mut pace) {
                Ok(page) => {
                    segments_total.increment(1);
                    let Some(found) = page.first_break else {
                        continue;
                    };
                    let sentence = format!(
                        "position {} in segment {} at offset {}: {}",
                        found.position.0, found.segment, found.offset, found.detail
                    );
                    if findings.record(sentence) {
                        breaks_total.increment(1);
                        crate::operations::log_break(
                            &found,
                            "scrub found damage in a sealed segment",
                        );
                    }
                }
                // Purged (a cluster node's snapshot) or closing: nothing to report.
                Err(CoreError::NotFound(_) | CoreError::Closed) => {}
                Err(err) => tracing::warn!(%err, "scrub could not read a sealed segment"),
            }
        }
        passes_total.increment(1);
        sleep(SCRUB_PASS_PAUSE, stop);
    }
}

/// Sleeps for `duration`, in slices, returning early once `stop` is set.
fn sleep(duration: Duration, stop: &AtomicBool) {
    let mut left = duration;
    while !left.is_zero() && !stop.load(Ordering::Acquire) {
        let slice = left.min(SLEEP_SLICE);
        std::thread::sleep(slice);
        left -= slice;
    }
}
