//! The event store: a segment log of events, in-memory indexes over it, and one writer thread.
//!
//! # Writes
//!
//! Every append goes through one writer thread behind a bounded queue ([`WRITE_QUEUE_MAX`]).
//! The writer takes everything that is waiting (up to [`GROUP_APPENDS_MAX`] appends), checks and
//! encodes each append as one atomic batch of frames, writes the whole group with one `write`,
//! and waits for one `fdatasync` before it answers any of them: concurrent appenders share the
//! cost of one disk flush (group commit). Only then does the committed head move, so readers
//! never see an event that a crash could take back. With [`Durability::Relaxed`] the writer
//! answers after the `write` alone: the events survive a process crash (they are in the kernel's
//! page cache) but not a power loss or kernel crash.
//!
//! If a write or fsync fails the store is poisoned: the failed group is answered with the error
//! and every later append with [`Error::Poisoned`]. Retrying an fsync after a failure is unsound
//! on Linux (the kernel may have dropped the dirty pages and cleared the error), so the only way
//! forward is to reopen, which re-reads what is really on disk.
//!
//! # Determinism
//!
//! [`Store::append`] is [`Store::stamp`] (which fixes event ids and the timestamp from the
//! store's clock) followed by [`Store::apply`]. `apply` assigns everything else from the log
//! alone: positions, versions, the timestamp of each event (the command's, raised above the
//! previous event's when needed, so timestamps strictly increase along positions), correlation
//! ids and hashes. Two stores fed the same commands in the same order write byte-identical
//! segment files, which is what replication relies on: a Raft leader stamps, every replica
//! applies.
//!
//! # Recovery
//!
//! Each sealed segment has a sidecar index file (`.idx`: the header bytes of its events, without
//! payloads, and a CRC) written when it was sealed, so opening the store reads headers, not the
//! whole log. The active segment is scanned frame by frame and a torn tail is truncated (see
//! `segment.rs`). A sealed segment whose `.idx` is missing or damaged is scanned instead, and its
//! `.idx` rewritten. Frame checksums are verified on every read, so damage to a sealed segment
//! after it was indexed surfaces as [`Error::Corrupt`] naming the file and offset, never as
//! wrong data.
//!
//! # Layout
//!
//! `LOCK` (an exclusive `flock` held while open) and `events/` (segments and their `.idx`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::{Clock, Hlc, NonDecreasing, SystemClock, Timestamp};
use crate::codec;
use crate::error::{Error, Result};
use crate::event::{Direction, Event, EventId, Hash, NewEvent, Position, Version};
use crate::index::Index;
use crate::limits::*;
use crate::query::Filter;
use crate::segment::{self, FrameLoc, SegmentLog, SegmentReader};

const IDX_MAGIC: [u8; 8] = *b"CWAYIDX\0";
const IDX_FORMAT_VERSION: u16 = 1;

/// When an append is answered relative to the disk.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Answer after `fdatasync`: an acknowledged event survives power loss. The default.
    #[default]
    Fsync,
    /// Answer after `write`, before `fdatasync`: an acknowledged event survives a process crash
    /// but may be lost on power loss or a kernel crash. Segments are still synced when they are
    /// sealed and when the store closes.
    Relaxed,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct Config {
    /// When appends are answered; see [`Durability`].
    pub durability: Durability,
    /// The size at which the active segment is sealed and a new one started, between
    /// [`SEGMENT_BYTES_MIN`] and [`SEGMENT_BYTES_MAX`]. Smaller segments make sealed-segment
    /// transfer finer-grained; larger ones mean fewer files.
    pub segment_bytes: u64,
    /// The source of every timestamp and generated id. Tests inject their own.
    pub clock: Arc<dyn Clock>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            durability: Durability::Fsync,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            clock: Arc::new(NonDecreasing::new(SystemClock::new())),
        }
    }
}

/// A proposal: one or more events, appended atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Append {
    /// The events, in the order they get positions.
    pub events: Vec<NewEvent>,
}

/// An append whose ids and timestamp are fixed, ready for deterministic apply. A replication
/// leader produces these with [`Store::stamp`] and every replica applies the same ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The proposal's timestamp; each event gets this or the smallest value above the previous
    /// event's timestamp, whichever is larger.
    pub timestamp: Timestamp,
    /// The events; every `id` is `Some`.
    pub events: Vec<NewEvent>,
}

/// What an accepted append proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// One entry per event, in order.
    pub events: Vec<Committed>,
    /// The log digest after the last event of this append.
    pub digest: Hash,
}

/// The fields assigned to one event on commit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The event's id.
    pub id: EventId,
    /// Its global position.
    pub position: Position,
    /// Its version within its entity.
    pub version: Version,
    /// Its timestamp.
    pub timestamp: Timestamp,
    /// Its chain hash.
    pub hash: Hash,
}

/// A page of a log read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBatch {
    /// The matching events, in the direction read.
    pub events: Vec<Event>,
    /// Where to continue: the next position to examine. A subscription that gets no events can
    /// still report this as progress.
    pub next: Position,
    /// True when the read reached the end (the committed head forward, position 1 backward).
    pub end: bool,
}

/// An open event store. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    sender: Mutex<Option<SyncSender<Request>>>,
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
    _lock: File,
}

#[derive(Debug)]
struct Shared {
    index: RwLock<Index>,
    reader: SegmentReader,
    /// The committed head and the digest at it; readers see positions up to here.
    committed: Mutex<(u64, Hash)>,
    head_moved: Condvar,
    closed: AtomicBool,
    clock: Arc<dyn Clock>,
    hlc: Hlc,
    durability: Durability,
    events_dir: PathBuf,
}

struct Request {
    command: Command,
    reply: SyncSender<Result<Receipt>>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, taking an exclusive lock on it: a second open, from
    /// this process or another, fails with [`Error::Locked`] until this store is dropped.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        let dir = dir.as_ref();
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&config.segment_bytes) {
            return Err(Error::InvalidInput(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                config.segment_bytes
            )));
        }
        fs::create_dir_all(dir).map_err(|err| Error::io(dir, err))?;
        let lock = lock_dir(dir)?;
        let started = Instant::now();
        let events_dir = dir.join("events");
        let (log, recovery) = SegmentLog::open(&events_dir, config.segment_bytes, 1)?;
        let (index, active_idx) = rebuild_index(&log)?;
        let head = index.last();
        let digest = index.digest();
        tracing::info!(
            dir = %dir.display(),
            head,
            segments = log.segments().len(),
            truncated = recovery.truncated.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened event store"
        );
        let hlc = Hlc::new(config.clock.clone());
        hlc.observe(index.last_timestamp());
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            reader: log.reader(),
            committed: Mutex::new((head, digest)),
            head_moved: Condvar::new(),
            closed: AtomicBool::new(false),
            clock: config.clock.clone(),
            hlc,
            durability: config.durability,
            events_dir,
        });
        let (sender, receiver) = sync_channel(WRITE_QUEUE_MAX);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("causeway-writer".to_string())
            .spawn(move || {
                Writer {
                    shared: writer_shared,
                    log,
                    active_idx,
                    poisoned: None,
                    group_correlations: HashMap::new(),
                }
                .run(receiver)
            })
            .map_err(|err| Error::io(dir, err))?;
        Ok(Store {
            shared,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            _lock: lock,
        })
    }

    /// Appends events atomically and returns once they are durable (per [`Durability`]).
    pub fn append(&self, append: Append) -> Result<Receipt> {
        let command = self.stamp(append)?;
        self.apply(command)
    }

    /// Validates a proposal and fixes what must come from this node: missing event ids (UUIDv7
    /// from the clock) and the proposal's hybrid logical timestamp.
    pub fn stamp(&self, append: Append) -> Result<Command> {
        validate_events(&append.events)?;
        let timestamp = self.shared.hlc.now()?;
        let mut events = append.events;
        for event in &mut events {
            if event.id.is_none() {
                event.id = Some(self.new_id()?);
            }
        }
        Ok(Command { timestamp, events })
    }

    /// Applies a stamped command: the deterministic write path. Refuses a command whose events
    /// lack ids or whose ids already exist.
    pub fn apply(&self, command: Command) -> Result<Receipt> {
        validate_events(&command.events)?;
        if let Some(event_idx) = command.events.iter().position(|event| event.id.is_none()) {
            return Err(Error::InvalidInput(format!(
                "event {event_idx} has no id; stamp the command first"
            )));
        }
        let sender = self
            .sender
            .lock()
            .expect("sender lock poisoned")
            .clone()
            .ok_or(Error::Closed)?;
        let (reply, answer) = sync_channel(1);
        sender
            .send(Request { command, reply })
            .map_err(|_| Error::Closed)?;
        answer
            .recv()
            .map_err(|_| Error::Poisoned("the writer thread stopped".to_string()))?
    }

    /// The committed head: the position of the last durable event, 0 when empty.
    pub fn head(&self) -> Position {
        Position(self.committed().0)
    }

    /// The log digest at the committed head.
    pub fn digest(&self) -> Hash {
        self.committed().1
    }

    /// The event with this id.
    pub fn get(&self, id: EventId) -> Result<Event> {
        let head = self.committed().0;
        let found = {
            let index = self.shared.index.read().expect("index lock poisoned");
            index
                .position_of(&id)
                .filter(|&p| p <= head)
                .map(|p| (p, index.loc(p)))
        };
        let (position, loc) = found.ok_or_else(|| Error::NotFound(format!("event {id}")))?;
        self.read_event(position, loc)
    }

    /// The current version of an entity; `Version(0)` when it has no events.
    pub fn version(&self, scope: &str, entity: &str) -> Version {
        let head = self.committed().0;
        self.shared
            .index
            .read()
            .expect("index lock poisoned")
            .version_at(scope, entity, head)
    }

    /// Reads up to `limit` events of one entity, starting at version `from` (inclusive) and going
    /// in `direction`. Backward from a version past the end starts at the last event.
    pub fn read_entity(
        &self,
        scope: &str,
        entity: &str,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Event>> {
        check_limit(limit)?;
        let head = self.committed().0;
        let locs: Vec<(u64, FrameLoc)> = {
            let index = self.shared.index.read().expect("index lock poisoned");
            let positions = index.entity_positions(scope, entity, from, direction, limit, head);
            positions.into_iter().map(|p| (p, index.loc(p))).collect()
        };
        locs.into_iter()
            .map(|(position, loc)| self.read_event(position, loc))
            .collect()
    }

    /// Reads up to `limit` events of the log that match `filter`, starting at `from` (inclusive)
    /// and going in `direction`. Backward from `Position(0)` or past the head starts at the head.
    /// A sparse filter returns early after examining [`READ_SCAN_MAX`] candidates; continue
    /// from [`ReadBatch::next`].
    pub fn read_log(
        &self,
        from: Position,
        direction: Direction,
        limit: usize,
        filter: &Filter,
    ) -> Result<ReadBatch> {
        check_limit(limit)?;
        filter.validate()?;
        let head = self.committed().0;
        let mut cursor = match direction {
            Direction::Forward => from.0.max(1),
            Direction::Backward if from.0 == 0 || from.0 > head => head,
            Direction::Backward => from.0,
        };
        let mut locs = Vec::new();
        let mut end = false;
        {
            let index = self.shared.index.read().expect("index lock poisoned");
            if let (Direction::Forward, Some(since)) = (direction, filter.since) {
                cursor = cursor.max(index.first_at_or_after(since));
            }
            match index.resolve(filter) {
                None => {
                    end = true;
                    cursor = match direction {
                        Direction::Forward => head.max(cursor - 1) + 1,
                        Direction::Backward => 0,
                    };
                }
                Some(resolved) => {
                    let mut budget = READ_SCAN_MAX;
                    while locs.len() < limit {
                        let (found, examined) =
                            index.next_match(&resolved, cursor, direction, head, budget);
                        budget -= examined;
                        let Some(position) = found else {
                            if budget > 0 {
                                end = true;
                                cursor = match direction {
                                    Direction::Forward => head.max(cursor - 1) + 1,
                                    Direction::Backward => 0,
                                };
                            }
                            break;
                        };
                        locs.push((position, index.loc(position)));
                        cursor = match direction {
                            Direction::Forward => position + 1,
                            Direction::Backward => position - 1,
                        };
                    }
                }
            }
        }
        let end = end
            || (direction == Direction::Forward && cursor > head)
            || (direction == Direction::Backward && cursor == 0);
        let events = locs
            .into_iter()
            .map(|(position, loc)| self.read_event(position, loc))
            .collect::<Result<_>>()?;
        Ok(ReadBatch {
            events,
            next: Position(cursor),
            end,
        })
    }

    /// Blocks until the committed head reaches `position` or `timeout` passes, and returns the
    /// head then. Returns [`Error::Closed`] if the store closes while waiting.
    pub fn wait_for(&self, position: Position, timeout: Duration) -> Result<Position> {
        let deadline_ns = self
            .shared
            .clock
            .now_mono_ns()
            .saturating_add(timeout.as_nanos() as u64);
        let mut committed = self.shared.committed.lock().expect("commit lock poisoned");
        loop {
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if committed.0 >= position.0 {
                return Ok(Position(committed.0));
            }
            let now_ns = self.shared.clock.now_mono_ns();
            if now_ns >= deadline_ns {
                return Ok(Position(committed.0));
            }
            let wait = Duration::from_nanos(deadline_ns - now_ns);
            committed = self
                .shared
                .head_moved
                .wait_timeout(committed, wait)
                .expect("commit lock poisoned")
                .0;
        }
    }

    /// Approximate bytes of memory held by the indexes.
    pub fn index_heap_bytes(&self) -> usize {
        self.shared
            .index
            .read()
            .expect("index lock poisoned")
            .heap_bytes()
    }

    /// Stops accepting appends, lets the writer finish and sync what it has, and wakes every
    /// waiter with [`Error::Closed`]. Idempotent; dropping the store does the same.
    pub fn close(&self) -> Result<()> {
        self.sender.lock().expect("sender lock poisoned").take();
        let writer = self.writer.lock().expect("writer lock poisoned").take();
        let result = match writer {
            Some(writer) => writer
                .join()
                .unwrap_or_else(|_| Err(Error::Poisoned("the writer thread panicked".to_string()))),
            None => Ok(()),
        };
        self.shared.closed.store(true, Ordering::Release);
        let _committed = self.shared.committed.lock().expect("commit lock poisoned");
        self.shared.head_moved.notify_all();
        result
    }

    fn committed(&self) -> (u64, Hash) {
        *self.shared.committed.lock().expect("commit lock poisoned")
    }

    fn new_id(&self) -> Result<EventId> {
        let wall_ns = self.shared.clock.now_wall_ns()?;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            wall_ns / 1_000_000_000,
            (wall_ns % 1_000_000_000) as u32,
        );
        Ok(EventId(uuid::Uuid::new_v7(ts)))
    }

    fn read_event(&self, position: u64, loc: FrameLoc) -> Result<Event> {
        let record = self.shared.reader.read(position, loc)?;
        let path = segment::segment_path(&self.shared.events_dir, loc.segment);
        let event =
            codec::decode(&record).map_err(|detail| Error::corrupt(&path, loc.offset, detail))?;
        if event.position.0 != position {
            return Err(Error::corrupt(
                &path,
                loc.offset,
                format!("frame {position} holds position {}", event.position),
            ));
        }
        Ok(event)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(err) = self.close() {
            tracing::error!(%err, "closing the event store failed");
        }
    }
}

fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 {
        return Err(Error::InvalidInput("limit must be at least 1".to_string()));
    }
    if limit > READ_EVENTS_MAX {
        return Err(Error::LimitExceeded {
            limit: "READ_EVENTS_MAX",
            max: READ_EVENTS_MAX as u64,
            actual: limit as u64,
            what: "read limit".to_string(),
        });
    }
    Ok(())
}

fn validate_events(events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Err(Error::InvalidInput(
            "an append needs at least one event".to_string(),
        ));
    }
    if events.len() > APPEND_EVENTS_MAX {
        return Err(Error::LimitExceeded {
            limit: "APPEND_EVENTS_MAX",
            max: APPEND_EVENTS_MAX as u64,
            actual: events.len() as u64,
            what: "events in the append".to_string(),
        });
    }
    let mut append_bytes = 0;
    for (event_idx, event) in events.iter().enumerate() {
        event.validate(event_idx)?;
        append_bytes += event.size_bytes();
        if let Some(id) = event.id
            && events[..event_idx]
                .iter()
                .any(|earlier| earlier.id == Some(id))
        {
            return Err(Error::InvalidInput(format!(
                "event {event_idx} id {id} appears twice in the append"
            )));
        }
    }
    if append_bytes > APPEND_BYTES_MAX {
        return Err(Error::LimitExceeded {
            limit: "APPEND_BYTES_MAX",
            max: APPEND_BYTES_MAX as u64,
            actual: append_bytes as u64,
            what: "append bytes".to_string(),
        });
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|err| Error::io(&path, err))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(err)) => Err(Error::io(&path, err)),
    }
}

/// The `.idx` entries of the active segment, kept by the writer until the segment is sealed.
#[derive(Debug, Default)]
struct IdxBuffer {
    first: u64,
    n_entries: u64,
    bytes: Vec<u8>,
}

impl IdxBuffer {
    fn push(&mut self, loc: FrameLoc, header: &[u8]) {
        self.bytes
            .extend_from_slice(&(loc.offset as u32).to_le_bytes());
        self.bytes.extend_from_slice(&loc.body_len.to_le_bytes());
        self.bytes
            .extend_from_slice(&(header.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(header);
        self.n_entries += 1;
    }

    /// Writes the sidecar index of a sealed segment: to a temporary file, fsync'd, renamed into
    /// place, and the directory fsync'd, so a crash leaves either no `.idx` or a whole one.
    fn write(&self, dir: &Path) -> Result<()> {
        let mut out = Vec::with_capacity(32 + self.bytes.len());
        out.extend_from_slice(&IDX_MAGIC);
        out.extend_from_slice(&IDX_FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&[0u8; 6]);
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.n_entries.to_le_bytes());
        out.extend_from_slice(&self.bytes);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let path = idx_path(dir, self.first);
        let tmp = path.with_extension("idx.tmp");
        fs::write(&tmp, &out).map_err(|err| Error::io(&tmp, err))?;
        File::open(&tmp)
            .and_then(|file| file.sync_all())
            .map_err(|err| Error::io(&tmp, err))?;
        fs::rename(&tmp, &path).map_err(|err| Error::io(&path, err))?;
        segment::sync_dir(dir)
    }
}

fn idx_path(dir: &Path, first: u64) -> PathBuf {
    segment::segment_path(dir, first).with_extension("idx")
}

/// Reads a sealed segment's `.idx`; `None` if it is missing or fails any check (the segment is
/// then scanned instead, so a bad `.idx` costs time, never data).
fn load_idx(dir: &Path, first: u64, n_expected: u64) -> Option<Vec<(FrameLoc, Event)>> {
    let path = idx_path(dir, first);
    let bytes = fs::read(&path).ok()?;
    let fail = |why: &str| {
        tracing::warn!(file = %path.display(), why, "ignoring a damaged segment index; scanning the segment");
        None
    };
    if bytes.len() < 36 {
        return fail("too short");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return fail("checksum mismatch");
    }
    let n_entries = u64::from_le_bytes(body[24..32].try_into().expect("8 bytes"));
    if body[..8] != IDX_MAGIC
        || u64::from_le_bytes(body[16..24].try_into().expect("8 bytes")) != first
        || n_entries != n_expected
    {
        return fail("header does not match the segment");
    }
    let mut entries = Vec::with_capacity(n_entries as usize);
    let mut rest = &body[32..];
    while !rest.is_empty() {
        if rest.len() < 12 {
            return fail("entry cut short");
        }
        let word = |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
        let (offset, body_len, header_len) = (word(0), word(4), word(8) as usize);
        if rest.len() < 12 + header_len {
            return fail("entry cut short");
        }
        let Ok(event) = codec::decode(&rest[12..12 + header_len]) else {
            return fail("entry does not decode");
        };
        entries.push((
            FrameLoc {
                segment: first,
                offset: u64::from(offset),
                body_len,
            },
            event,
        ));
        rest = &rest[12 + header_len..];
    }
    if entries.len() as u64 != n_entries {
        return fail("entry count mismatch");
    }
    Some(entries)
}

/// Builds the indexes from the segments: `.idx` files for sealed segments, a scan for the rest.
/// Returns the index and the `.idx` buffer of the active segment.
fn rebuild_index(log: &SegmentLog) -> Result<(Index, IdxBuffer)> {
    let mut index = Index::default();
    let segments = log.segments();
    let dir = segments[0]
        .path
        .parent()
        .expect("segments live in a directory")
        .to_path_buf();
    let mut active_idx = IdxBuffer::default();
    for (segment_idx, info) in segments.iter().enumerate() {
        index.add_segment(info.first_index);
        let next_first = segments
            .get(segment_idx + 1)
            .map_or(log.last_index() + 1, |next| next.first_index);
        if info.sealed
            && let Some(entries) = load_idx(&dir, info.first_index, next_first - info.first_index)
        {
            for (loc, event) in entries {
                insert_checked(&mut index, &event, loc, &info.path)?;
            }
            continue;
        }
        let mut idx = IdxBuffer {
            first: info.first_index,
            ..IdxBuffer::default()
        };
        for frame in log.scan(info.first_index)? {
            let event = codec::decode(&frame.body)
                .map_err(|detail| Error::corrupt(&info.path, frame.loc.offset, detail))?;
            let header = codec::header_bytes(&frame.body).expect("decoded above");
            insert_checked(&mut index, &event, frame.loc, &info.path)?;
            idx.push(frame.loc, header);
        }
        if info.sealed {
            if idx.n_entries != next_first - info.first_index {
                let detail = format!(
                    "sealed segment holds {} events, expected {}",
                    idx.n_entries,
                    next_first - info.first_index
                );
                return Err(Error::corrupt(&info.path, 0, detail));
            }
            idx.write(&dir)?;
        } else {
            active_idx = idx;
        }
    }
    Ok((index, active_idx))
}

/// Inserts an event read from disk after checking what the index would otherwise assert, so a
/// damaged log is an error, not a panic.
fn insert_checked(index: &mut Index, event: &Event, loc: FrameLoc, path: &Path) -> Result<()> {
    let expected_position = index.last() + 1;
    let expected_version = index
        .entity(&event.scope, &event.entity)
        .map_or(0, |state| state.positions.len() as u64)
        + 1;
    if event.position.0 != expected_position || event.version.0 != expected_version {
        let detail = format!(
            "event at position {} version {} where position {expected_position} version {expected_version} was expected",
            event.position, event.version
        );
        return Err(Error::corrupt(path, loc.offset, detail));
    }
    index.insert(event, loc);
    Ok(())
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    log: SegmentLog,
    active_idx: IdxBuffer,
    poisoned: Option<String>,
    /// Correlation ids of the events in the group being committed, which are not yet readable
    /// from the segment files.
    group_correlations: HashMap<EventId, EventId>,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Request>) -> Result<()> {
        while let Ok(first) = receiver.recv() {
            let mut group = vec![first];
            while group.len() < GROUP_APPENDS_MAX {
                match receiver.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
        // Closing: make sure everything written is on disk, whatever the durability mode.
        if self.poisoned.is_none() {
            self.log.flush(true)?;
        }
        Ok(())
    }

    fn commit_group(&mut self, group: Vec<Request>) {
        let mut answers: Vec<Result<Receipt>> = Vec::with_capacity(group.len());
        for request in &group {
            let answer = match &self.poisoned {
                Some(why) => Err(Error::Poisoned(why.clone())),
                None => self.commit_one(&request.command),
            };
            answers.push(answer);
        }
        let any_written = answers.iter().any(Result::is_ok);
        if any_written && self.poisoned.is_none() {
            let durable = self.shared.durability == Durability::Fsync;
            if let Err(err) = self.log.flush(durable) {
                self.poison(&err);
                for answer in &mut answers {
                    if answer.is_ok() {
                        *answer = Err(Error::Poisoned(err.to_string()));
                    }
                }
            } else {
                let index = self.shared.index.read().expect("index lock poisoned");
                let mut committed = self.shared.committed.lock().expect("commit lock poisoned");
                *committed = (index.last(), index.digest());
                self.shared.head_moved.notify_all();
            }
        }
        self.group_correlations.clear();
        for (request, answer) in group.into_iter().zip(answers) {
            // The appender may have given up waiting; that is not the writer's concern.
            let _ = request.reply.send(answer);
        }
    }

    fn poison(&mut self, err: &Error) {
        tracing::error!(%err, "write failed; the store refuses further writes until reopened");
        self.poisoned = Some(err.to_string());
    }

    /// Checks, encodes and buffers one command as one batch, and indexes it. Deterministic
    /// errors leave nothing behind; an I/O error poisons the store.
    fn commit_one(&mut self, command: &Command) -> Result<Receipt> {
        let shared = self.shared.clone();
        let mut index = shared.index.write().expect("index lock poisoned");
        for (event_idx, event) in command.events.iter().enumerate() {
            let id = event.id.expect("apply checks that every event has an id");
            if index.position_of(&id).is_some() {
                return Err(Error::InvalidInput(format!(
                    "event {event_idx} id {id} already exists"
                )));
            }
        }
        let mut events = Vec::with_capacity(command.events.len());
        let mut records = Vec::with_capacity(command.events.len());
        let mut chain: HashMap<(&str, &str), (u64, Hash)> = HashMap::new();
        let mut timestamp = index.last_timestamp();
        let mut pending_correlations = Vec::with_capacity(command.events.len());
        for (event_idx, proposed) in command.events.iter().enumerate() {
            let id = proposed
                .id
                .expect("apply checks that every event has an id");
            let key = (proposed.scope.as_str(), proposed.entity.as_str());
            let (prev_version, prev_hash) =
                *chain
                    .entry(key)
                    .or_insert_with(|| match index.entity(key.0, key.1) {
                        Some(state) => (state.positions.len() as u64, state.last_hash),
                        None => (0, [0; 32]),
                    });
            timestamp = command.timestamp.max(timestamp.next());
            let correlation_id = match (proposed.correlation_id, proposed.causation.first()) {
                (Some(correlation_id), _) => correlation_id,
                (None, Some(parent)) => {
                    let in_batch = pending_correlations.iter().find(|(earlier, _)| earlier == parent).map(|&(_, correlation_id)| correlation_id);
                    match in_batch.or_else(|| self.group_correlations.get(parent).copied()) {
                        Some(correlation_id) => correlation_id,
                        None => self.correlation_of(&index, parent)?.unwrap_or(id),
                    }
                }
                (None, None) => id,
            };
            pending_correlations.push((id, correlation_id));
            let mut event = Event {
                position: Position(index.last() + 1 + event_idx as u64),
                version: Version(prev_version + 1),
                timestamp,
                id,
                scope: proposed.scope.clone(),
                entity: proposed.entity.clone(),
                event_type: proposed.event_type.clone(),
                tags: proposed.tags.clone(),
                content_type: proposed.content_type.clone(),
                metadata: proposed.metadata.clone(),
                causation: proposed.causation.clone(),
                correlation_id,
                hash: [0; 32],
                payload: Vec::new(),
            };
            let (record, hash) = {
                let with_payload = Event {
                    payload: proposed.payload.clone(),
                    ..event.clone()
                };
                codec::encode(&with_payload, &prev_hash)
            };
            event.hash = hash;
            chain.insert(key, (prev_version + 1, hash));
            events.push(event);
            records.push(record);
        }
        let appended = match self.log.append(&records) {
            Ok(appended) => appended,
            Err(err) => {
                self.poison(&err);
                return Err(err);
            }
        };
        if let Some(sealed_first) = appended.sealed {
            let sealed = std::mem::replace(
                &mut self.active_idx,
                IdxBuffer {
                    first: self.log.last_index() + 1 - records.len() as u64,
                    ..IdxBuffer::default()
                },
            );
            debug_assert_eq!(sealed.first, sealed_first);
            if let Err(err) = sealed.write(&self.shared.events_dir) {
                // The segment itself is durable; only the fast-open sidecar is missing, and
                // open rebuilds it by scanning.
                tracing::warn!(%err, "could not write a segment index");
            }
            index.add_segment(appended.locs[0].segment);
        }
        let mut receipt = Receipt {
            events: Vec::with_capacity(events.len()),
            digest: [0; 32],
        };
        for ((event, record), loc) in events.iter().zip(&records).zip(&appended.locs) {
            self.active_idx
                .push(*loc, codec::header_bytes(record).expect("encoded above"));
            index.insert(event, *loc);
            receipt.events.push(Committed {
                id: event.id,
                position: event.position,
                version: event.version,
                timestamp: event.timestamp,
                hash: event.hash,
            });
        }
        receipt.digest = index.digest();
        self.group_correlations.extend(pending_correlations);
        Ok(receipt)
    }

    /// The correlation id of an event written by an earlier group, read from its frame; `None`
    /// when no such event exists. Events of the current group are in `group_correlations`.
    fn correlation_of(&self, index: &Index, id: &EventId) -> Result<Option<EventId>> {
        let Some(position) = index.position_of(id) else {
            return Ok(None);
        };
        let loc = index.loc(position);
        let record = self.shared.reader.read(position, loc)?;
        let path = segment::segment_path(&self.shared.events_dir, loc.segment);
        let event =
            codec::decode(&record).map_err(|detail| Error::corrupt(&path, loc.offset, detail))?;
        Ok(Some(event.correlation_id))
    }
}
