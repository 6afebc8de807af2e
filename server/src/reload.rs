//! Files that reload without a restart (the TLS material, the auth policy): on SIGHUP, and when
//! a poll sees one of them change: its modification time or its length, and on Unix its inode
//! or its change time, so that a file renamed over it with the same length and modification
//! time (`cp -p`, `rsync -t`, a swapped symlink) is seen too.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What a file looked like when last polled: modification time, length, inode, change time
/// (seconds and nanoseconds; the last three 0 where not Unix); `None` while it cannot be read.
type Stamp = Option<(SystemTime, u64, u64, i64, i64)>;

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

/// Reads a file that reloads: a regular file of at most `max` bytes (`limit` names the bound
/// in the refusal). A FIFO or a device would block the open or the read, and with them reloads
/// and shutdown, so anything but a regular file is refused before it is opened.
pub fn read_bounded(path: &Path, max: u64, limit: &str) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let fail = |detail: String| format!("{}: {detail}", path.display());
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(fail("is not a regular file".to_string())),
        Ok(_) => {}
        Err(err) => return Err(fail(err.to_string())),
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(max + 1).read_to_end(&mut bytes))
        .map_err(|err| fail(err.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(fail(format!("over {limit} = {max} bytes")));
    }
    Ok(bytes)
}

fn stamps(files: &[PathBuf]) -> Vec<Stamp> {
    files.iter().map(|path| stamp(path)).collect()
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let (inode, changed_secs, changed_nanos) = {
        use std::os::unix::fs::MetadataExt;
        (meta.ino(), meta.ctime(), meta.ctime_nsec())
    };
    #[cfg(not(unix))]
    let (inode, changed_secs, changed_nanos) = (0, 0, 0);
    Some((
        meta.modified().ok()?,
        meta.len(),
        inode,
        changed_secs,
        changed_nanos,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::Trigger;

    /// A policy replaced by a rename of a file with the same length and modification time
    /// (what `cp -p` and `rsync -t` leave) is a change. Catches a poll that compares only the
    /// modification time and length, which kept a revoked token valid until a SIGHUP.
    #[tokio::test]
    async fn a_rename_with_the_same_length_and_time_is_a_change() {
        let dir = tempfile::tempdir().expect("a scratch folder");
        let path = dir.path().join("policy.toml");
        let replacement = dir.path().join("policy.toml.new");
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
        for (file, text) in [
            (&path, "token = \"aaaa\"\n"),
            (&replacement, "token = \"bbbb\"\n"),
        ] {
            std::fs::write(file, text).expect("write");
            std::fs::File::options()
                .write(true)
                .open(file)
                .and_then(|file| file.set_modified(when))
                .expect("set the modification time");
        }
        let watched = path.clone();
        let mut trigger = Trigger::new("the test file", Duration::from_millis(20), move || {
            vec![watched.clone()]
        });
        std::fs::rename(&replacement, &path).expect("rename over it");
        let why = tokio::time::timeout(Duration::from_secs(5), trigger.next())
            .await
            .expect("the rename is seen within 5 s");
        assert_eq!(why, "a file changed");
    }
}
