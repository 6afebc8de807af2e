//! The Raft log: openraft's [`RaftLogStorage`] on the core's segment log, one frame per entry.
//!
//! Directory (`<data>/raft/`): `log/` holds the segments; `VOTE` and `PURGED` are metafiles
//! (replaced atomically, CRC'd) holding the vote and the last purged log id. A frame's index is
//! the Raft index plus one: Raft counts from 0 (the initial membership) and the segment log
//! reserves `first_index - 1` for "empty".
//!
//! Invariants:
//! - `append` reports an entry flushed to openraft only after the fsync that covers it: the
//!   frames are written at once, and the [`Syncer`] thread syncs and then calls back, in order.
//! - `save_vote` returns only once the vote file is durable, and it first makes every entry
//!   appended before it durable, so a vote and the log writes before it are never reordered.
//! - No holes: an append must start right after the last entry. The one exception is a log with
//!   no live entry (all purged, or never written), which restarts at the appended index (after
//!   a snapshot install the next entry is far past anything this node had).
//! - Purge writes `PURGED` first, then removes whole sealed segments: entries at or below it
//!   are never read again, even while their segment is still on disk, and a crash between the
//!   two leaves a log that starts later, never one with a hole.
//! - Truncate cuts through the segment log (copy-on-cut of a sealed segment), durable when it
//!   returns. Every entry is a segment batch of its own, so any cut leaves whole batches.
//!
//! The disk work runs on the caller's task; only the fsync of appends is moved to a thread.
//! openraft calls storage from one task at a time, and these calls are short (a buffered
//! write, or a rare metafile), so the runtime thread is held briefly.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use causeway_core::disk::{self, Disk, OsDisk};
use causeway_core::metafile;
use causeway_core::segment::{FLAG_MARK, FrameLoc, SegmentLog, SegmentReader, sync_dir};
use causeway_core::syncer::{Group, Syncer};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::codec::{self, Reader, decode_entry, decode_entry_id, encode_entry, invalid};
use super::core_error;
use super::types::{Entry, LogId, TypeConfig, Vote};
use crate::limits::{
    RAFT_LOG_CACHE_BYTES_MAX, RAFT_LOG_CACHE_ENTRIES_MAX, RAFT_SEGMENT_BYTES, RAFT_SYNC_DEPTH_MAX,
};

/// Magic of the vote file.
pub const VOTE_MAGIC: [u8; 8] = *b"CWRVOTE\0";
/// Magic of the last-purged file.
pub const PURGED_MAGIC: [u8; 8] = *b"CWRPURGE";
/// The vote file's name in the Raft directory.
pub const VOTE_FILE: &str = "VOTE";
/// The last-purged file's name in the Raft directory.
pub const PURGED_FILE: &str = "PURGED";
/// The segment directory's name in the Raft directory.
pub const LOG_DIR: &str = "log";

/// The Raft log store. Clones of its [`LogReader`] share its state.
pub struct LogStore {
    log: Arc<Mutex<Log>>,
}

/// Reads entries and the vote; any number may exist beside the [`LogStore`].
#[derive(Clone)]
pub struct LogReader {
    log: Arc<Mutex<Log>>,
}

/// The state behind the store and its readers.
///
/// - `live` holds the location and term of every entry after `purged` that is on disk (or
///   written and waiting for its fsync), from Raft index `live_first` on, gapless.
/// - Frames before `live_first` may still be on disk (purge removes whole sealed segments
///   only); they are never read.
/// - `recent` holds the newest live entries themselves (each with its encoded size), at most
///   `RAFT_LOG_CACHE_ENTRIES_MAX` of them and `RAFT_LOG_CACHE_BYTES_MAX` bytes: the last
///   `recent.len()` entries of `live`. Replication reads them from here instead of decoding
///   them again from disk for every follower.
struct Log {
    recent: VecDeque<(Entry, usize)>,
    recent_bytes: usize,
    dir: PathBuf,
    segments: SegmentLog,
    reader: SegmentReader,
    live_first: u64,
    live: VecDeque<(u64, FrameLoc)>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    syncer: Syncer<IOFlushed<TypeConfig>>,
    disk: Arc<dyn Disk>,
}

impl LogStore {
    /// Opens (or creates) the Raft log in `dir` on the operating system's disk.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        LogStore::open_on(Arc::new(OsDisk), dir)
    }

    /// Opens (or creates) the Raft log in `dir`, every write, sync and directory change made
    /// through `disk`. Reads the vote and last purged id and scans every segment's frames (the
    /// log is kept short by purging, so this reads a bounded tail).
    pub fn open_on(disk: Arc<dyn Disk>, dir: &Path) -> io::Result<LogStore> {
        disk::create_dir_all(&*disk, dir)?;
        let vote = metafile::read(&dir.join(VOTE_FILE), VOTE_MAGIC)
            .map_err(core_error)?
            .map(|bytes| codec::decode_vote(&bytes))
            .transpose()?;
        let purged =
            match metafile::read(&dir.join(PURGED_FILE), PURGED_MAGIC).map_err(core_error)? {
                Some(bytes) => {
                    let mut reader = Reader::new(&bytes, "raft purged log id");
                    let purged = codec::get_log_id(&mut reader)?;
                    reader.finish()?;
                    purged
                }
                None => None,
            };
        let first_frame = purged.map_or(0, |purged| purged.index + 1) + 1;
        let (segments, _recovery) = SegmentLog::open_on(
            disk.clone(),
            &dir.join(LOG_DIR),
            RAFT_SEGMENT_BYTES,
            first_frame,
        )
        .map_err(core_error)?;
        let mut live = VecDeque::new();
        let mut live_first = None;
        for segment in segments.segments() {
            for frame in segments.scan(segment.first_index).map_err(core_error)? {
                if frame.flags & FLAG_MARK != 0 {
                    continue;
                }
                let index = frame.index - 1;
                let log_id = decode_entry_id(&frame.body)?;
                if log_id.index != index {
                    return Err(invalid(format!(
                        "raft log frame {} holds entry {}, expected {index}",
                        frame.index, log_id.index
                    )));
                }
                if purged.is_some_and(|purged| index <= purged.index) {
                    continue;
                }
                live_first.get_or_insert(index);
                live.push_back((log_id.leader_id.term, frame.loc));
            }
        }
        let live_first = live_first.unwrap_or_else(|| purged.map_or(0, |purged| purged.index + 1));
        let syncer = Syncer::start(
            "causeway-raft-sync",
            RAFT_SYNC_DEPTH_MAX,
            true,
            Box::new(|callbacks: Vec<IOFlushed<TypeConfig>>, synced| {
                for callback in callbacks {
                    let result = match &synced {
                        Ok(()) => Ok(()),
                        Err(err) => Err(io::Error::other(err.to_string())),
                    };
                    callback.io_completed(result);
                }
            }),
        )?;
        let reader = segments.reader();
        let log = Log {
            recent: VecDeque::new(),
            recent_bytes: 0,
            dir: dir.to_path_buf(),
            segments,
            reader,
            live_first,
            live,
            purged,
            vote,
            syncer,
            disk,
        };
        Ok(LogStore {
            log: Arc::new(Mutex::new(log)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().expect("raft log lock poisoned")
    }
}

impl Log {
    /// The Raft index of the first cached entry (the end of `live` when none is cached).
    fn recent_first(&self) -> u64 {
        self.live_first + (self.live.len() - self.recent.len()) as u64
    }

    /// Caches an entry just appended, dropping the oldest past the cache's bounds.
    fn remember(&mut self, entry: Entry, bytes: usize) {
        self.recent.push_back((entry, bytes));
        self.recent_bytes += bytes;
        while self.recent.len() > RAFT_LOG_CACHE_ENTRIES_MAX
            || (self.recent_bytes > RAFT_LOG_CACHE_BYTES_MAX && self.recent.len() > 1)
        {
            if let Some((_, bytes)) = self.recent.pop_front() {
                self.recent_bytes -= bytes;
            }
        }
    }

    /// Drops cached entries so the cache again matches the end of `live` (after a truncate
    /// shortened `live` at its end, or a purge at its front).
    fn trim_recent(&mut self) {
        while self.recent.len() > self.live.len() {
            if let Some((_, bytes)) = self.recent.pop_front() {
                self.recent_bytes -= bytes;
            }
        }
    }

    /// The last live entry's id, if any.
    fn last_live(&self) -> Option<LogId> {
        let (term, _) = self.live.back()?;
        Some(super::types::log_id(
            *term,
            self.live_first + self.live.len() as u64 - 1,
        ))
    }

    /// The Raft index the next frame written to the segment log gets.
    fn next_frame_index(&self) -> u64 {
        // Frame index = Raft index + 1, so the next Raft index is the last frame index.
        self.segments.last_index()
    }

    /// Restarts an empty log at Raft index `first`: removes every segment (oldest first, each
    /// removal durable) and creates a new one. Only for a log without live entries, so every
    /// frame removed is at or below `purged` (or there is none): a crash midway leaves a log
    /// that starts later, which the next append restarts again.
    fn restart_at(&mut self, first: u64) -> io::Result<()> {
        assert!(
            self.live.is_empty(),
            "only a log with no live entry restarts"
        );
        let log_dir = self.dir.join(LOG_DIR);
        for segment in self.segments.segments() {
            self.disk.remove_file(&segment.path)?;
            sync_dir(&*self.disk, &log_dir).map_err(core_error)?;
        }
        let (segments, _recovery) =
            SegmentLog::open_on(self.disk.clone(), &log_dir, RAFT_SEGMENT_BYTES, first + 1)
                .map_err(core_error)?;
        self.reader = segments.reader();
        self.segments = segments;
        self.live_first = first;
        self.recent.clear();
        self.recent_bytes = 0;
        Ok(())
    }

    fn read_range(&self, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry>> {
        let live_end = self.live_first + self.live.len() as u64;
        let start = match range.0 {
            Bound::Included(start) => start,
            Bound::Excluded(start) => start.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(self.live_first);
        let end = match range.1 {
            Bound::Included(end) => end.saturating_add(1),
            Bound::Excluded(end) => end,
            Bound::Unbounded => u64::MAX,
        }
        .min(live_end);
        let mut entries = Vec::with_capacity(end.saturating_sub(start) as usize);
        let recent_first = self.recent_first();
        for index in start..end {
            if index >= recent_first {
                entries.push(self.recent[(index - recent_first) as usize].0.clone());
                continue;
            }
            let (_, loc) = self.live[(index - self.live_first) as usize];
            let body = self.reader.read(index + 1, loc).map_err(core_error)?;
            let entry = decode_entry(&bytes::Bytes::from(body))?;
            if entry.log_id.index != index {
                return Err(invalid(format!(
                    "raft log frame {} holds entry {}, expected {index}",
                    index + 1,
                    entry.log_id.index
                )));
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.log
            .lock()
            .expect("raft log lock poisoned")
            .read_range(range)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.log.lock().expect("raft log lock poisoned").vote)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.lock().read_range(range)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let log = self.lock();
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: log.last_live().or(log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            log: self.log.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let mut log = self.lock();
        // Entries appended before this vote become durable first: a crash must not keep the
        // vote and lose log writes that came before it.
        log.segments.flush(true).map_err(core_error)?;
        let path = log.dir.join(VOTE_FILE);
        metafile::write(&*log.disk, &path, VOTE_MAGIC, &codec::encode_vote(vote))
            .map_err(core_error)?;
        log.vote = Some(*vote);
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut log = self.lock();
        let Some(first) = entries.first().map(|entry| entry.log_id.index) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        if first != log.next_frame_index() {
            let past_purged = log.purged.is_none_or(|purged| first > purged.index);
            if log.live.is_empty() && past_purged {
                log.restart_at(first)?;
            } else {
                return Err(invalid(format!(
                    "raft log append at index {first}, but the next index is {}: it would \
                     leave a hole or overwrite entries without a truncate",
                    log.next_frame_index()
                )));
            }
        }
        let mut bodies = Vec::with_capacity(entries.len());
        for (entry_idx, entry) in entries.iter().enumerate() {
            let index = entry.log_id.index;
            if index != first + entry_idx as u64 {
                return Err(invalid(format!(
                    "raft log append batch is not contiguous: entry {index} at position \
                     {entry_idx} after {first}"
                )));
            }
            bodies.push(encode_entry(entry));
        }
        // Each entry is a batch of its own: a truncate may cut between any two entries, and a
        // segment batch cut in two would read as a torn tail on the next open, dropping the
        // entries kept before the cut.
        for (entry, body) in entries.into_iter().zip(bodies) {
            let bytes = body.len();
            let appended = log.segments.append(&[body]).map_err(core_error)?;
            log.live
                .push_back((entry.log_id.leader_id.term, appended.locs[0]));
            log.remember(entry, bytes);
        }
        log.segments.flush(false).map_err(core_error)?;
        let sync = Some(log.segments.sync_handle());
        log.syncer.submit(Group {
            sync,
            payload: callback,
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let mut log = self.lock();
        // Frame index of the last entry kept; `first_index - 1` keeps nothing. An openraft
        // truncate never reaches below what it purged, so the clamp only matters for frames
        // that are already dead.
        let keep_frame = last_log_id
            .map_or(0, |last| last.index + 1)
            .max(log.segments.first_index() - 1);
        log.segments
            .truncate_after(keep_frame)
            .map_err(core_error)?;
        let keep_live = keep_frame.saturating_sub(log.live_first);
        // The cached entries past the cut go with it; those before stay the end of `live`.
        let recent_first = log.recent_first();
        let keep_recent = (log.live_first + keep_live).saturating_sub(recent_first);
        while log.recent.len() as u64 > keep_recent {
            if let Some((_, bytes)) = log.recent.pop_back() {
                log.recent_bytes -= bytes;
            }
        }
        log.live.truncate(keep_live as usize);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let mut log = self.lock();
        if log
            .purged
            .is_some_and(|purged| purged.index >= log_id.index)
        {
            return Ok(());
        }
        let mut payload = Vec::new();
        codec::put_log_id(&mut payload, Some(&log_id));
        let path = log.dir.join(PURGED_FILE);
        metafile::write(&*log.disk, &path, PURGED_MAGIC, &payload).map_err(core_error)?;
        log.purged = Some(log_id);
        let n_dead = (log_id.index + 1).saturating_sub(log.live_first);
        let n_dead = n_dead.min(log.live.len() as u64);
        log.live.drain(..n_dead as usize);
        log.trim_recent();
        log.live_first = log.live_first.max(log_id.index + 1);
        log.segments
            .purge_through(log_id.index + 1)
            .map_err(core_error)?;
        Ok(())
    }
}
