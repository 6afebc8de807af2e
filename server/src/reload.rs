//! Files that reload without a restart (the TLS material, the auth policy): on SIGHUP, and when
//! a poll sees one of them change (its modification time or its length).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What a file looked like when last polled; `None` while it cannot be read.
type Stamp = Option<(SystemTime, u64)>;

/// Waits for the next reason to reload a set of files.
pub struct Trigger<F> {
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
    poll: tokio::time::Interval,
    /// The files to watch, asked at every poll (the set may change with what was loaded).
    files: F,
    seen: Vec<Stamp>,
}

impl<F: FnMut() -> Vec<PathBuf>> Trigger<F> {
    /// Watches `files()` every `poll_interval`, and SIGHUP; `what` names the files in the one
    /// error logged when SIGHUP cannot be listened for.
    pub fn new(what: &str, poll_interval: Duration, mut files: F) -> Trigger<F> {
        #[cfg(unix)]
        let hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGHUP; {what}: reloaded on change only");
                None
            }
        };
        let seen = stamps(&files());
        Trigger {
            #[cfg(unix)]
            hangup,
            poll: tokio::time::interval(poll_interval),
            files,
            seen,
        }
    }

    /// Returns why to reload now: `"SIGHUP"`, or `"a file changed"` once a poll sees a change.
    pub async fn next(&mut self) -> &'static str {
        let Trigger {
            #[cfg(unix)]
            hangup,
            poll,
            files,
            seen,
        } = self;
        loop {
            #[cfg(unix)]
            let hangup_received = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup_received = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = hangup_received => return "SIGHUP",
                _ = poll.tick() => {
                    let now = stamps(&files());
                    if now != *seen {
                        *seen = now;
                        return "a file changed";
                    }
                }
            }
        }
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|path| stamp(path)).collect()
}

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .and_then(|meta| Ok((meta.modified()?, meta.len())))
        .ok()
}
