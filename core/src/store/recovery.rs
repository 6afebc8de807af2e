//! Opening a store: the directory lock, the sidecar segment indexes, and rebuilding the
//! in-memory state (indexes, idempotency keys) from the log.
//!
//! Everything here runs before the writer starts, on one thread. The log is the only source of
//! truth: a missing or damaged `.idx` costs a scan, never data, and every event read from disk
//! is checked for the position and version the index expects before it is indexed, so a damaged
//! log is an error naming the file and offset, not a panic.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use crate::codec::{self, EventRecord, TrailerRef};
use crate::command::EntryId;
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::event::Hash;
use crate::index::Index;
use crate::limits::IDEMPOTENCY_KEYS_MAX;
use crate::segment::{self, FrameLoc, SegmentLog};

const IDX_MAGIC: [u8; 8] = *b"CWAYIDX\0";
const IDX_FORMAT_VERSION: u16 = 1;
/// Bytes of a sidecar written between two syncs (see [`IdxBuffer::write`]).
const IDX_WRITE_PIECE_BYTES: usize = 1 << 18;

/// What a keyed append committed, kept so a retry gets the same receipt.
#[derive(Clone, Debug)]
pub(super) struct KeyEntry {
    pub(super) first: u64,
    pub(super) n_events: u64,
    pub(super) request_hash: Hash,
    pub(super) gates: Vec<(String, u64)>,
    pub(super) digest: Hash,
}

/// The idempotency window: the last [`IDEMPOTENCY_KEYS_MAX`] keys, oldest forgotten first.
#[derive(Debug, Default)]
pub(super) struct Keys {
    by_key: HashMap<String, KeyEntry>,
    order: VecDeque<String>,
}

impl Keys {
    pub(super) fn get(&self, key: &str) -> Option<&KeyEntry> {
        self.by_key.get(key)
    }

    pub(super) fn insert(&mut self, key: String, entry: KeyEntry) {
        if self.order.len() == IDEMPOTENCY_KEYS_MAX
            && let Some(oldest) = self.order.pop_front()
        {
            self.by_key.remove(&oldest);
        }
        self.order.push_back(key.clone());
        self.by_key.insert(key, entry);
    }
}

/// Collects keyed appends while the log is replayed: the trailer opens an entry on the first
/// event of an append, and the digest is taken when its last event has been indexed.
#[derive(Default)]
struct KeysBuilder {
    keys: Keys,
    open: Option<(String, KeyEntry)>,
    /// The last replicated log entry recorded in a trailer.
    applied: Option<EntryId>,
}

impl KeysBuilder {
    /// Notes the event at `position`, with its append trailer if it is the first of its append.
    fn observe(&mut self, index: &Index, position: u64, trailer: Option<TrailerRef<'_>>) {
        if let Some(entry) = trailer.and_then(|trailer| trailer.entry) {
            self.applied = Some(entry);
        }
        if let Some(trailer) = trailer
            && !trailer.idempotency_key.is_empty()
        {
            let entry = KeyEntry {
                first: position,
                n_events: u64::from(trailer.n_events),
                request_hash: *trailer.request_hash,
                gates: trailer
                    .gates
                    .map(|(name, version)| (name.to_string(), version))
                    .collect(),
                digest: [0; 32],
            };
            self.open = Some((trailer.idempotency_key.to_string(), entry));
        }
        if let Some((_, entry)) = &self.open
            && position == entry.first + entry.n_events - 1
        {
            let (key, mut entry) = self.open.take().expect("checked above");
            entry.digest = index.digest();
            self.keys.insert(key, entry);
        }
    }
}

/// Takes the exclusive lock on `dir`, creating its `LOCK` file if there is none. The file
/// holds nothing, so a new one is not synced into the directory here: should a power cut lose
/// it, the next open creates it again.
/// Refuses a log whose newest segment is gone: the newest segment left has a `.idx` sidecar,
/// which is written only for a segment that was sealed, after the segment that follows it was
/// created and made durable. Opening such a log would drop the missing events without a word
/// and write new ones at their positions; so it is [`Error::Corrupt`], naming the file.
pub(super) fn check_newest_segment(events_dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(events_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io(events_dir, err)),
    };
    let mut newest: Option<u64> = None;
    for entry in entries {
        let path = entry.map_err(|err| Error::io(events_dir, err))?.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some("seg") {
            continue;
        }
        if let Some(first) = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            newest = newest.max(Some(first));
        }
    }
    let Some(newest) = newest else {
        return Ok(());
    };
    let idx = idx_path(events_dir, newest);
    if idx.exists() {
        let detail = "the newest segment has a sidecar index, so it was sealed and a later \
                      segment existed; that segment is missing, and opening would lose its events";
        return Err(Error::corrupt(
            &segment::segment_path(events_dir, newest),
            0,
            detail,
        ));
    }
    Ok(())
}

pub(super) fn lock_dir(disk: &dyn Disk, dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = disk
        .create(&path, false)
        .map_err(|err| Error::io(&path, err))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(err)) => Err(Error::io(&path, err)),
    }
}

/// The `.idx` entries of the active segment, kept by the writer until the segment is sealed.
#[derive(Debug, Default)]
pub(super) struct IdxBuffer {
    /// First position of the segment.
    pub(super) first: u64,
    n_entries: u64,
    /// The entries' bytes in pieces of [`IDX_WRITE_PIECE_BYTES`], each allocated whole and
    /// written as one piece. A full segment's headers are tens of megabytes: one growing vector
    /// copied them at every doubling and faulted its new pages in, which was about a tenth of
    /// the writer's time at 100 events per append (docs/BENCHMARKS.md, "Buffers that grow without
    /// copying").
    pieces: Vec<Vec<u8>>,
}

impl IdxBuffer {
    /// An empty buffer for the segment starting at `first`.
    pub(super) fn starting_at(first: u64) -> IdxBuffer {
        IdxBuffer {
            first,
            ..IdxBuffer::default()
        }
    }

    pub(super) fn push(&mut self, loc: FrameLoc, header: &[u8]) {
        let mut lengths = [0u8; 12];
        lengths[..4].copy_from_slice(&(loc.offset as u32).to_le_bytes());
        lengths[4..8].copy_from_slice(&loc.body_len.to_le_bytes());
        lengths[8..].copy_from_slice(&(header.len() as u32).to_le_bytes());
        self.extend(&lengths);
        self.extend(header);
        self.n_entries += 1;
    }

    /// Appends bytes, spilling into a new piece where the last one is full.
    fn extend(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self
                .pieces
                .last()
                .is_none_or(|piece| piece.len() == IDX_WRITE_PIECE_BYTES)
            {
                self.pieces.push(Vec::with_capacity(IDX_WRITE_PIECE_BYTES));
            }
            let piece = self.pieces.last_mut().expect("a piece with room");
            let n_taken = bytes.len().min(IDX_WRITE_PIECE_BYTES - piece.len());
            piece.extend_from_slice(&bytes[..n_taken]);
            bytes = &bytes[n_taken..];
        }
    }

    /// Writes the sidecar index of a sealed segment: to a temporary file, fsync'd, renamed into
    /// place, and the directory fsync'd, so a crash leaves either no `.idx` or a whole one.
    pub(super) fn write(&self, disk: &dyn Disk, dir: &Path) -> Result<()> {
        let mut head = Vec::with_capacity(32);
        head.extend_from_slice(&IDX_MAGIC);
        head.extend_from_slice(&IDX_FORMAT_VERSION.to_le_bytes());
        head.extend_from_slice(&[0u8; 6]);
        head.extend_from_slice(&self.first.to_le_bytes());
        head.extend_from_slice(&self.n_entries.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        for piece in &self.pieces {
            crc.update(piece);
        }
        let path = idx_path(dir, self.first);
        let tmp = path.with_extension("idx.tmp");
        // In pieces, each synced before the next is written. Tens of megabytes written at once
        // sit dirty in the page cache until the final sync, and every append's fdatasync that
        // the journal ties to them waits for all of it: p99 of 100-event appends went from 12
        // to 20 ms. A piece at a time, an append waits for at most one piece.
        //
        // Each piece, once synced, also leaves the page cache: nothing reads a sidecar until the
        // next open, and the pages freed are the ones the next piece (or the segment) is
        // written into, where new pages would each cost a fault on a VM that hands freed memory
        // back to its host (see docs/BENCHMARKS.md, fifth pass). Best effort.
        disk.create(&tmp, true)
            .and_then(|file| {
                disk.write_at(&file, &tmp, &head, 0)?;
                let mut at = head.len() as u64;
                for piece in &self.pieces {
                    disk.write_at(&file, &tmp, piece, at)?;
                    at += piece.len() as u64;
                    disk.sync_data(&file, &tmp)?;
                    // The whole file so far: pieces do not end on page boundaries, and the
                    // kernel drops only whole pages of a range.
                    let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed);
                }
                disk.write_at(&file, &tmp, &crc.finalize().to_le_bytes(), at)?;
                disk.sync_all(&file, &tmp)
            })
            .map_err(|err| Error::io(&tmp, err))?;
        disk.rename(&tmp, &path)
            .map_err(|err| Error::io(&path, err))?;
        segment::sync_dir(disk, dir)
    }
}

/// Writes the `.idx` sidecars of sealed segments on a thread of its own. A full segment's
/// sidecar is tens of megabytes written and synced, which would stall every append behind a
/// roll for a quarter of a second if the writer did it. A sidecar only speeds up opening (a
/// missing one costs a scan), so nothing waits for it except closing, which joins the thread
/// so that a cleanly closed store opens fast.
pub(super) struct SidecarWriter {
    sender: Option<SyncSender<IdxBuffer>>,
    thread: Option<JoinHandle<()>>,
}

impl SidecarWriter {
    pub(super) fn start(disk: Arc<dyn Disk>, dir: &Path) -> Result<SidecarWriter> {
        // One sealed buffer may wait while another is written; a writer that rolls faster than
        // that blocks, which bounds the memory held to two segments' headers.
        let (sender, sealed) = sync_channel::<IdxBuffer>(1);
        let events_dir = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("causeway-idx".to_string())
            .spawn(move || {
                for idx in sealed {
                    if let Err(err) = idx.write(&*disk, &events_dir) {
                        // The segment itself is durable; open rebuilds the sidecar by scanning.
                        tracing::warn!(%err, "could not write a segment index");
                    }
                }
            })
            .map_err(|err| Error::io(dir, err))?;
        Ok(SidecarWriter {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Queues the sidecar of a segment just sealed.
    pub(super) fn write(&self, idx: IdxBuffer) {
        let first = idx.first;
        let sent = self.sender.as_ref().map(|sender| sender.send(idx));
        if !matches!(sent, Some(Ok(()))) {
            // Only if the thread died: the segment is durable, and open scans it instead.
            tracing::error!(
                first,
                "the segment index thread is gone; no .idx for this segment"
            );
        }
    }

    /// Waits until every queued sidecar is written. Dropping does the same.
    pub(super) fn finish(&mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the segment index thread panicked");
        }
    }
}

impl Drop for SidecarWriter {
    fn drop(&mut self) {
        self.join();
    }
}

pub(super) fn idx_path(dir: &Path, first: u64) -> PathBuf {
    segment::segment_path(dir, first).with_extension("idx")
}

/// Reads a sealed segment's `.idx` into `buf` and checks its CRC and header. Returns the
/// entries, to be walked with [`IdxEntries`], or `None` if the file is missing or fails a check:
/// the segment is then scanned instead, so a bad `.idx` costs time, never data.
fn load_idx<'b>(dir: &Path, first: u64, n_expected: u64, buf: &'b mut Vec<u8>) -> Option<&'b [u8]> {
    let path = idx_path(dir, first);
    // One buffer serves every segment, so its pages are faulted in once, not once per file.
    buf.clear();
    File::open(&path).ok()?.read_to_end(buf).ok()?;
    let fail = |why: &str| {
        warn_ignored_idx(&path, why);
        None
    };
    if buf.len() < 36 {
        return fail("too short");
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return fail("checksum mismatch");
    }
    if body[..8] != IDX_MAGIC
        || u64::from_le_bytes(body[16..24].try_into().expect("8 bytes")) != first
        || u64::from_le_bytes(body[24..32].try_into().expect("8 bytes")) != n_expected
    {
        return fail("header does not match the segment");
    }
    Some(&body[32..])
}

/// Logs that an `.idx` is not used, and why.
fn warn_ignored_idx(path: &Path, why: &str) {
    tracing::warn!(file = %path.display(), why, "ignoring a damaged segment index; scanning the segment");
}

/// The entries of an `.idx` (after its 32-byte header, before its CRC): where each frame
/// lives and its record header, decoded in place. An entry that does not decode ends the walk.
struct IdxEntries<'a> {
    segment: u64,
    rest: &'a [u8],
}

impl<'a> IdxEntries<'a> {
    fn new(segment: u64, entries: &'a [u8]) -> IdxEntries<'a> {
        IdxEntries {
            segment,
            rest: entries,
        }
    }

    fn split_entry(&mut self) -> std::result::Result<(FrameLoc, EventRecord<'a>), &'static str> {
        let rest = self.rest;
        if rest.len() < 12 {
            return Err("entry cut short");
        }
        let word = |at: usize| u32::from_le_bytes(rest[at..at + 4].try_into().expect("4 bytes"));
        let (offset, body_len, header_len) = (word(0), word(4), word(8) as usize);
        if rest.len() < 12 + header_len {
            return Err("entry cut short");
        }
        let header =
            EventRecord::parse(&rest[12..12 + header_len]).map_err(|_| "entry does not decode")?;
        self.rest = &rest[12 + header_len..];
        let loc = FrameLoc {
            segment: self.segment,
            offset: u64::from(offset),
            body_len,
        };
        Ok((loc, header))
    }
}

impl<'a> Iterator for IdxEntries<'a> {
    type Item = std::result::Result<(FrameLoc, EventRecord<'a>), &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = self.split_entry();
        if entry.is_err() {
            self.rest = &[];
        }
        Some(entry)
    }
}

/// Builds the indexes from the segments: `.idx` files for sealed segments, a scan for the rest.
/// Returns the index, the idempotency keys, and the `.idx` buffer of the active segment.
///
/// Events are indexed from their headers decoded in place ([`EventRecord`]), as they are read, so
/// opening allocates nothing per event beyond what the index keeps. An index cannot take an
/// insert back, so when an `.idx` turns out bad halfway through (an entry that does not decode,
/// or the wrong number of them, though the file passed its CRC: a writer bug or a newer
/// format), the build starts over with that file ignored and its segment scanned.
pub(super) fn rebuild_index(log: &SegmentLog) -> Result<Rebuilt> {
    let mut ignored_idx = Vec::new();
    loop {
        match build_index(log, &ignored_idx)? {
            Attempt::Built(built) => return Ok(*built),
            Attempt::BadIdx(first) => ignored_idx.push(first),
        }
    }
}

/// The index, the idempotency keys, the `.idx` buffer of the active segment, and the last
/// replicated log entry applied.
pub(super) type Rebuilt = (Index, Keys, IdxBuffer, Option<EntryId>);

/// What one attempt at building the indexes came to.
enum Attempt {
    /// What was rebuilt.
    Built(Box<Rebuilt>),
    /// The `.idx` of the segment that starts at this position is bad; build without it.
    BadIdx(u64),
}

/// One attempt of [`rebuild_index`], using no `.idx` of the segments in `ignored_idx`.
fn build_index(log: &SegmentLog, ignored_idx: &[u64]) -> Result<Attempt> {
    let mut index = Index::default();
    index.reserve(usize::try_from(log.last_index() + 1 - log.first_index()).unwrap_or(0));
    let mut keys = KeysBuilder::default();
    let segments = log.segments();
    let dir = segments[0]
        .path
        .parent()
        .expect("segments live in a directory")
        .to_path_buf();
    let mut active_idx = IdxBuffer::default();
    let mut idx_bytes = Vec::new();
    for (segment_idx, info) in segments.iter().enumerate() {
        index.add_segment(info.first_index);
        let next_first = segments
            .get(segment_idx + 1)
            .map_or(log.last_index() + 1, |next| next.first_index);
        let n_expected = next_first - info.first_index;
        if info.sealed
            && !ignored_idx.contains(&info.first_index)
            && let Some(entries) = load_idx(&dir, info.first_index, n_expected, &mut idx_bytes)
        {
            let bad_idx = |why: &str| {
                warn_ignored_idx(&idx_path(&dir, info.first_index), why);
                Ok(Attempt::BadIdx(info.first_index))
            };
            let mut n_found = 0;
            for entry in IdxEntries::new(info.first_index, entries) {
                if n_found == n_expected {
                    return bad_idx("more entries than the segment has events");
                }
                let (loc, header) = match entry {
                    Ok(entry) => entry,
                    Err(why) => return bad_idx(why),
                };
                insert_checked(&mut index, &header, loc, &info.path)?;
                keys.observe(&index, header.position.0, header.trailer);
                n_found += 1;
            }
            if n_found != n_expected {
                return bad_idx("fewer entries than the segment has events");
            }
            continue;
        }
        let mut idx = IdxBuffer {
            first: info.first_index,
            ..IdxBuffer::default()
        };
        for frame in log.scan(info.first_index)? {
            if frame.flags & segment::FLAG_MARK != 0 {
                let entry = codec::decode_applied(&frame.body)
                    .map_err(|detail| Error::corrupt(&info.path, frame.loc.offset, detail))?;
                keys.applied = Some(entry);
                continue;
            }
            let header = EventRecord::parse(&frame.body)
                .map_err(|detail| Error::corrupt(&info.path, frame.loc.offset, detail))?;
            insert_checked(&mut index, &header, frame.loc, &info.path)?;
            keys.observe(&index, header.position.0, header.trailer);
            idx.push(
                frame.loc,
                codec::header_bytes(&frame.body).expect("decoded above"),
            );
        }
        if info.sealed {
            if idx.n_entries != n_expected {
                let detail = format!(
                    "sealed segment holds {} events, expected {n_expected}",
                    idx.n_entries,
                );
                return Err(Error::corrupt(&info.path, 0, detail));
            }
            idx.write(&**log.disk(), &dir)?;
        } else {
            active_idx = idx;
        }
    }
    index.finish_open();
    Ok(Attempt::Built(Box::new((
        index,
        keys.keys,
        active_idx,
        keys.applied,
    ))))
}

/// Inserts an event read from disk after checking what the index would otherwise assert, so a
/// damaged log is an error, not a panic.
fn insert_checked(
    index: &mut Index,
    header: &EventRecord<'_>,
    loc: FrameLoc,
    path: &Path,
) -> Result<()> {
    index
        .insert_header(header, loc)
        .map_err(|detail| Error::corrupt(path, loc.offset, detail))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Opening with an `.idx` that passes its CRC but is wrong inside: the segment is scanned
    //! instead and the `.idx` rewritten, even after entries of earlier files were indexed, which
    //! makes the build start over.

    use std::fs;

    use super::*;
    use crate::event::{Direction, Position};
    use crate::query::Filter;
    use crate::store::{Append, Config, Durability, Store};
    use crate::{Event, NewEvent};

    /// What is wrong with the `.idx`.
    #[derive(Clone, Copy, Debug)]
    enum Damage {
        /// An entry in the middle does not decode (its record version is unknown).
        Undecodable,
        /// The last entry appears twice.
        ExtraEntry,
        /// The last entry is missing.
        MissingEntry,
    }

    fn config() -> Config {
        Config {
            durability: Durability::Relaxed,
            segment_bytes: 4096,
            ..Config::default()
        }
    }

    fn all_events(store: &Store) -> Vec<Event> {
        store
            .read_log(Position(1), Direction::Forward, 1000, &Filter::default())
            .unwrap()
            .events
    }

    /// The byte ranges of the entries of an `.idx` file.
    fn entry_ranges(idx: &[u8]) -> Vec<std::ops::Range<usize>> {
        let end = idx.len() - 4;
        let mut ranges = Vec::new();
        let mut at = 32;
        while at < end {
            let header_len = u32::from_le_bytes(idx[at + 8..at + 12].try_into().unwrap());
            let next = at + 12 + header_len as usize;
            ranges.push(at..next);
            at = next;
        }
        assert_eq!(at, end, "entries fill the file up to its CRC");
        ranges
    }

    fn damage(idx: &[u8], damage: Damage) -> Vec<u8> {
        let ranges = entry_ranges(idx);
        let mut body = idx[..idx.len() - 4].to_vec();
        let last = ranges.last().unwrap().clone();
        match damage {
            Damage::Undecodable => body[ranges[ranges.len() / 2].start + 12] = 0xee,
            Damage::ExtraEntry => body.extend_from_slice(&idx[last]),
            Damage::MissingEntry => body.truncate(last.start),
        }
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    #[test]
    fn an_idx_that_passes_its_crc_but_is_wrong_inside_is_scanned_instead() {
        for kind in [
            Damage::Undecodable,
            Damage::ExtraEntry,
            Damage::MissingEntry,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), config()).unwrap();
            for batch_idx in 0..40 {
                let events = (0..5)
                    .map(|event_idx| {
                        let entity = format!("order-{}", (batch_idx * 5 + event_idx) % 7);
                        NewEvent::new("acme", entity, "OrderPlaced", vec![7; 40])
                    })
                    .collect();
                store.append(Append::new(events)).unwrap();
            }
            let (digest, events) = (store.digest(), all_events(&store));
            drop(store);

            let mut idx_paths: Vec<PathBuf> = fs::read_dir(dir.path().join("events"))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "idx"))
                .collect();
            idx_paths.sort();
            assert!(
                idx_paths.len() >= 3,
                "the log spans several sealed segments"
            );
            // The second file, so that the first one's entries are indexed before the damage
            // is found.
            let path = &idx_paths[1];
            let original = fs::read(path).unwrap();
            fs::write(path, damage(&original, kind)).unwrap();

            let store = Store::open(dir.path(), config()).unwrap();
            assert_eq!(store.digest(), digest, "{kind:?}: the same log after open");
            assert_eq!(all_events(&store), events, "{kind:?}: the same events");
            assert_eq!(
                fs::read(path).unwrap(),
                original,
                "{kind:?}: the scan rewrote the .idx as it was"
            );
        }
    }

    /// A segment's entries that span several pieces of the buffer are written as one run of
    /// entries, in order, under a CRC that `load_idx` accepts.
    #[test]
    fn entries_that_span_pieces_are_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let first = 501;
        let mut idx = IdxBuffer::starting_at(first);
        let mut expected = Vec::new();
        for entry_idx in 0..1_000u32 {
            let header: Vec<u8> = (0..300 + entry_idx % 601)
                .map(|n| (n ^ entry_idx) as u8)
                .collect();
            let loc = FrameLoc {
                segment: first,
                offset: u64::from(entry_idx) * 1024,
                body_len: 2000 + entry_idx,
            };
            idx.push(loc, &header);
            expected.push((loc, header));
        }
        assert!(
            idx.pieces.len() > 2,
            "the entries span {} pieces",
            idx.pieces.len()
        );
        idx.write(&crate::disk::OsDisk, dir.path()).unwrap();

        let file = fs::read(idx_path(dir.path(), first)).unwrap();
        let mut buf = Vec::new();
        assert!(
            load_idx(dir.path(), first, 1_000, &mut buf).is_some(),
            "CRC and header hold"
        );
        let ranges = entry_ranges(&file);
        assert_eq!(ranges.len(), expected.len());
        for (range, (loc, header)) in ranges.into_iter().zip(expected) {
            let entry = &file[range];
            assert_eq!(entry[..4], (loc.offset as u32).to_le_bytes());
            assert_eq!(entry[4..8], loc.body_len.to_le_bytes());
            assert_eq!(entry[8..12], (header.len() as u32).to_le_bytes());
            assert_eq!(entry[12..], header[..]);
        }
    }
}
