//! The segment log: an append-only sequence of checksummed frames in numbered files.
//!
//! A segment log is a directory of segment files, `{first_index:020}.seg`, each a 32-byte
//! header followed by frames. Every frame carries a dense, gapless index, so the log can answer
//! "where is entry N" without a side table once a segment has been scanned. It knows nothing of
//! events: the event store keeps one frame per event (frame index = position), and the
//! replication log will keep one frame per Raft entry. `docs/FORMAT.md` gives the bytes.
//!
//! Invariants:
//! - Indexes are dense: the first entry of a segment has the index in its file name, and each
//!   later entry has the previous entry's index plus one. A mark ([`FLAG_MARK`]) takes no
//!   index: it carries the index the next entry will take.
//! - Batches are atomic: the last frame of each batch carries [`FLAG_BATCH_END`]; recovery drops
//!   a batch whose end marker never reached the disk. A batch never spans two segments.
//! - Only the last segment (the active one) is ever written; earlier ones are sealed. A sealed
//!   segment is never changed in place (a checkpoint may hard-link it): [`SegmentLog::purge_through`]
//!   removes whole sealed segments from the front, and [`SegmentLog::truncate_after`] rewrites
//!   one it cuts into through a new file.
//! - The active segment's space is reserved when it is created (fallocate of the segment size,
//!   best effort), so appending to it changes no file size and most fdatasyncs commit no
//!   metadata. The reserved space reads as zeros, which mark the end of the frames; sealing
//!   cuts a segment to its last frame, so only the active segment is ever longer than its
//!   frames.
//! - Recovery truncates only a tail: a bad frame with no valid frame after it in the last
//!   segment. A bad frame followed by a valid one, or a bad frame in a sealed segment, is
//!   corruption and is reported with the file and offset, never skipped. What recovery cuts is
//!   first copied to `quarantine/` and is never called unacknowledged unless it lies past the
//!   length a clean close recorded as synced (`SYNCED`): a crash's torn write and damage to
//!   acknowledged frames look alike on disk. Whole frames that end inside that length are
//!   corruption too (synced frames damaged or gone): open refuses, and only a repair cuts.
//! - Writes are buffered until [`SegmentLog::flush`]; nothing is readable through a
//!   [`SegmentReader`] before the caller has flushed it and chosen to publish it.
//! - Every write, sync and directory change goes through the log's [`Disk`] (reads do not), and
//!   each name it creates, renames or removes is made durable by syncing its directory,
//!   including the log's own directory in its parent when `open` creates it.
//!
//! Files: this one holds the log (open, append, roll, flush, cut, purge); `segment/frame.rs`
//! the frame format and the iterator over a segment's frames; `segment/reader.rs` reads by
//! location; `segment/tail.rs` recovers the active segment's tail; `segment/repair.rs` cuts
//! the active segment at a damaged frame when an operator asks for it.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::disk::{self, Disk, OsDisk};
use crate::error::{Error, Result};

mod frame;
mod reader;
mod repair;
mod tail;

pub use frame::{Frame, FrameLoc};
use frame::{FrameIter, encode_frame};
pub use reader::SegmentReader;
pub use repair::{RepairPlan, plan_repair, repair};
use tail::scan_tail;

/// The eight bytes every segment file starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CWAYSEG\0";
/// The segment format version this build writes and reads.
pub const SEGMENT_FORMAT_VERSION: u16 = 1;
/// Bytes in a segment header: magic, format version, reserved, first index, reserved, CRC.
pub const SEGMENT_HEADER_BYTES: u64 = 32;
/// Bytes in a frame header: CRC, body length, index, flags.
pub const FRAME_HEADER_BYTES: u64 = 17;
/// The largest frame body the log accepts. Larger bodies are refused on write, and a length
/// field above it on read is treated as damage rather than trusted for an allocation.
pub const FRAME_BODY_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Flag bit set on the last frame of each batch; recovery keeps only whole batches.
pub const FLAG_BATCH_END: u8 = 0b0000_0001;
/// Flag bit of a mark: a frame that is not an entry of the log and takes no index (its index
/// field is the index the next entry will take). A mark is a batch of its own. The log's owner
/// keeps bookkeeping in marks (the event store: the last replicated entry applied when it wrote
/// no event); readers by index never see them, and a scan yields them with this flag set.
pub const FLAG_MARK: u8 = 0b0000_0010;

const SEGMENT_EXTENSION: &str = "seg";
/// Bytes read at a time when recovery looks past the last whole batch of the active segment.
const SCAN_PIECE_BYTES: u64 = 1024 * 1024;
/// Bytes a reader reads with one system call when the frames it wants lie end to end (a single
/// larger frame is read alone, whole).
const READ_RUN_BYTES: u64 = 256 * 1024;

/// The file in a log's directory that a clean close writes: how far the active segment was
/// synced. Open reads it (to tell a torn tail from damage) and removes it once it accepts the
/// tail; a refused open leaves it for the repair.
pub const SYNCED_FILE: &str = "SYNCED";
const SYNCED_MAGIC: [u8; 8] = *b"CWSYNCED";
/// The directory inside a log's directory where recovery and repair keep the bytes they cut,
/// one file per cut: `{segment first index:020}-{offset:020}.cut` (`.1`, `.2`, ... appended
/// when that name is taken).
pub const QUARANTINE_DIR: &str = "quarantine";

/// What [`SegmentLog::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// A tail that was truncated: the file, the offset it was cut at, and the bytes dropped.
    pub truncated: Option<(PathBuf, u64, u64)>,
    /// The same cut, with what is known of it; `None` when nothing was cut.
    pub cut: Option<Cut>,
}

/// Whether the bytes a recovery cut had been synced, as far as the log knows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Synced {
    /// The cut starts at or past the length the last clean close synced: a torn write that
    /// was never synced, so never acknowledged under fsync durability. (A cut that would start
    /// inside that length is not made: open refuses the log, and only a repair cuts it.)
    Beyond,
    /// The log does not know (it did not close cleanly): a torn write and damage to
    /// acknowledged frames look the same, so the frames may have been acknowledged.
    Unknown,
}

/// A cut recovery made at the end of the active segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The segment's file name (`{first:020}.seg`), never a path.
    pub file_name: String,
    /// Where the file was cut: the end of its last whole batch.
    pub offset: u64,
    /// Bytes cut, up to the last byte that was not zero.
    pub bytes: u64,
    /// The index the first frame cut would have had: the log's next index after the cut.
    pub first_index: u64,
    /// Whether the cut bytes had been synced.
    pub synced: Synced,
    /// The file in `quarantine/` that holds the cut bytes.
    pub quarantine: PathBuf,
}

/// A sealed or active segment, as listed by [`SegmentLog::segments`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The index of the segment's first frame (also its file name).
    pub first_index: u64,
    /// The segment file.
    pub path: PathBuf,
    /// True for every segment but the last, which is the only one ever written.
    pub sealed: bool,
}

/// Injected disk failures, the seam through which tests check what happens when an fsync
/// fails. Production code never sets one.
#[derive(Debug, Default)]
pub struct Faults {
    /// Syncs that still succeed; the one after them fails, and every later one too.
    syncs_left: Mutex<Option<u64>>,
}

impl Faults {
    /// Lets `n_syncs` syncs succeed, then fails every later one with an I/O error.
    pub fn fail_syncs_after(n_syncs: u64) -> Arc<Faults> {
        Arc::new(Faults {
            syncs_left: Mutex::new(Some(n_syncs)),
        })
    }

    fn before_sync(&self) -> std::io::Result<()> {
        let mut syncs_left = self.syncs_left.lock().expect("fault lock poisoned");
        match syncs_left.as_mut() {
            Some(0) => Err(std::io::Error::other("injected fsync failure")),
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

/// The write side of a segment log. One owner appends; any number of [`SegmentReader`]s read.
#[derive(Debug)]
pub struct SegmentLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// First indexes of all segments, in order; the last one is active.
    firsts: Vec<u64>,
    /// Shared with [`SyncHandle`]s, which sync it from another thread.
    active: Arc<File>,
    /// The active segment's path, shared with [`SyncHandle`]s and named in every write.
    active_path: Arc<Path>,
    /// Bytes of the active segment's frames on disk plus those in `buffer`; the file itself is
    /// longer while its reserved space lasts.
    active_len: u64,
    /// Frames written by `append` but not yet handed to the file.
    buffer: Vec<u8>,
    next_index: u64,
    reader: SegmentReader,
    faults: Option<Arc<Faults>>,
    /// Every write, sync and directory change goes through it.
    disk: Arc<dyn Disk>,
}

/// Syncs one segment file's written bytes to the disk (fdatasync); see
/// [`SegmentLog::sync_handle`].
#[derive(Clone, Debug)]
pub struct SyncHandle {
    file: Arc<File>,
    path: Arc<Path>,
    faults: Option<Arc<Faults>>,
    disk: Arc<dyn Disk>,
}

impl SyncHandle {
    /// Waits until every byte written to the file before this call is on the disk.
    pub fn sync(&self) -> Result<()> {
        if let Some(faults) = &self.faults {
            faults
                .before_sync()
                .map_err(|err| Error::io(&self.path, err))?;
        }
        self.disk
            .sync_data(&self.file, &self.path)
            .map_err(|err| Error::io(&self.path, err))
    }
}

/// The result of [`SegmentLog::append`].
#[derive(Clone, Debug, Default)]
pub struct Appended {
    /// Where each frame of the batch landed, in order.
    pub locs: Vec<FrameLoc>,
    /// The first index of a segment that this append sealed by rolling to a new one.
    pub sealed: Option<u64>,
}

impl SegmentLog {
    /// Opens the log in `dir`, creating it (with `first_index` as its first index) if empty.
    ///
    /// Scans the last segment: a torn tail is truncated (and logged), corruption elsewhere is an
    /// [`Error::Corrupt`]. Sealed segments are not scanned here; see [`SegmentLog::scan`]. The
    /// last segment's space is reserved up to `segment_bytes` (again, after a cut).
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        first_index: u64,
    ) -> Result<(SegmentLog, Recovery)> {
        SegmentLog::open_on(Arc::new(OsDisk), dir, segment_bytes, first_index)
    }

    /// [`SegmentLog::open`] with every write, sync and directory change made through `disk`.
    /// A directory it creates (`dir`, and any missing parent) is made durable in its parent
    /// before the first segment is created in it.
    pub fn open_on(
        disk: Arc<dyn Disk>,
        dir: &Path,
        segment_bytes: u64,
        first_index: u64,
    ) -> Result<(SegmentLog, Recovery)> {
        disk::create_dir_all(&*disk, dir).map_err(|err| Error::io(dir, err))?;
        let mut firsts = list_segments(&*disk, dir)?;
        let mut recovery = Recovery::default();
        let reader = SegmentReader {
            dir: dir.to_path_buf(),
            files: Arc::default(),
        };
        if firsts.is_empty() {
            create_segment(&*disk, dir, first_index, segment_bytes)?;
            firsts.push(first_index);
        }
        for &first in &firsts {
            let path = segment_path(dir, first);
            let file = File::open(&path).map_err(|err| Error::io(&path, err))?;
            check_header(&file, &path, first)?;
            reader.insert(first, file);
        }
        let active_first = *firsts.last().expect("a log has at least one segment");
        let path = segment_path(dir, active_first);
        let active = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|err| Error::io(&path, err))?;
        let synced_end = read_synced(dir, active_first);
        let tail = scan_tail(&active, &path, active_first)?;
        if let Some(synced_end) = synced_end
            && tail.end < synced_end
        {
            return Err(short_of_synced(&active, &path, active_first, synced_end));
        }
        // Removed before the log is written again, so a record never describes bytes written
        // after it.
        remove_synced(&*disk, dir)?;
        let cut = tail.dirty_end > tail.end || tail.zeros_read > SCAN_PIECE_BYTES;
        if tail.dirty_end > tail.end {
            let bytes = tail.dirty_end - tail.end;
            let synced = match synced_end {
                None => Synced::Unknown,
                Some(_) => Synced::Beyond,
            };
            // Kept before anything is cut: the bytes may hold acknowledged events, and an
            // operator (or a peer's copy) may need them to tell.
            let quarantine = quarantine(
                &*disk,
                dir,
                active_first,
                &active,
                &path,
                tail.end..tail.dirty_end,
            )?;
            let file_name = file_name_of(&path);
            let quarantine_name = file_name_of(&quarantine);
            match synced {
                Synced::Beyond => tracing::warn!(
                    file = %file_name,
                    offset = tail.end,
                    position = tail.next_index,
                    bytes,
                    quarantine = %quarantine_name,
                    "cutting a torn tail past the length synced at the last clean close: it was never synced"
                ),
                Synced::Unknown => tracing::warn!(
                    file = %file_name,
                    offset = tail.end,
                    position = tail.next_index,
                    bytes,
                    quarantine = %quarantine_name,
                    "cutting a damaged or torn tail from position {} on: a write a crash cut short was never acknowledged, but damage to acknowledged frames looks the same, so these may have been acknowledged",
                    tail.next_index
                ),
            }
            recovery.truncated = Some((path.clone(), tail.end, bytes));
            recovery.cut = Some(Cut {
                file_name,
                offset: tail.end,
                bytes,
                first_index: tail.next_index,
                synced,
                quarantine,
            });
        } else if tail.zeros_read > SCAN_PIECE_BYTES {
            // Written zeros where reserved space should be (a copy that did not keep the file
            // sparse): every open would read them, so they are cut and reserved again.
            tracing::info!(
                file = %path.display(),
                bytes = tail.zeros_read,
                "turning written zeros after the last frame back into reserved space"
            );
        }
        if cut {
            disk.set_len(&active, &path, tail.end)
                .map_err(|err| Error::io(&path, err))?;
        }
        // A no-op when the space is still reserved; after a cut, or for a segment written
        // before segments reserved their space, it reserves it now. One sync covers both.
        reserve(&*disk, &active, &path, segment_bytes);
        disk.sync_all(&active, &path)
            .map_err(|err| Error::io(&path, err))?;
        let log = SegmentLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            firsts,
            active: Arc::new(active),
            active_path: Arc::from(path.as_path()),
            active_len: tail.end,
            buffer: Vec::new(),
            next_index: tail.next_index,
            reader,
            faults: None,
            disk,
        };
        Ok((log, recovery))
    }

    /// The index of the first frame the log holds (or would hold, if empty).
    pub fn first_index(&self) -> u64 {
        self.firsts[0]
    }

    /// The index of the last frame, or `first_index() - 1` when the log is empty.
    pub fn last_index(&self) -> u64 {
        self.next_index - 1
    }

    /// The segments in order; the last is active.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let n_segments = self.firsts.len();
        self.firsts
            .iter()
            .enumerate()
            .map(|(segment_idx, &first)| SegmentInfo {
                first_index: first,
                path: segment_path(&self.dir, first),
                sealed: segment_idx + 1 < n_segments,
            })
            .collect()
    }

    /// A reader that shares this log's files.
    pub fn reader(&self) -> SegmentReader {
        self.reader.clone()
    }

    /// Buffers one batch of frames, rolling to a new segment first when the active one would pass
    /// the configured size. Nothing reaches the file until [`SegmentLog::flush`].
    pub fn append(&mut self, bodies: &[Vec<u8>]) -> Result<Appended> {
        assert!(!bodies.is_empty(), "a batch has at least one frame");
        let mut batch_bytes = 0u64;
        for body in bodies {
            let body_len = u32::try_from(body.len())
                .ok()
                .filter(|&len| len <= FRAME_BODY_BYTES_MAX);
            if body_len.is_none() {
                return Err(Error::InvalidInput(format!(
                    "frame body of {} bytes exceeds FRAME_BODY_BYTES_MAX ({FRAME_BODY_BYTES_MAX})",
                    body.len()
                )));
            }
            batch_bytes += FRAME_HEADER_BYTES + body.len() as u64;
        }
        let mut appended = Appended::default();
        // Marks take no index, so a segment that holds only marks must not be sealed: the next
        // one would start at the same index, under the same name.
        let active_first = *self.firsts.last().expect("a log has at least one segment");
        let has_frames = self.next_index > active_first;
        if has_frames && self.active_len + batch_bytes > self.segment_bytes {
            appended.sealed = Some(self.roll()?);
        }
        let segment = *self.firsts.last().expect("a log has at least one segment");
        for (body_idx, body) in bodies.iter().enumerate() {
            let flags = if body_idx + 1 == bodies.len() {
                FLAG_BATCH_END
            } else {
                0
            };
            let offset = self.active_len;
            encode_frame(&mut self.buffer, self.next_index, flags, body);
            let body_len =
                u32::try_from(body.len()).expect("checked against FRAME_BODY_BYTES_MAX above");
            appended.locs.push(FrameLoc {
                segment,
                offset,
                body_len,
            });
            self.active_len += FRAME_HEADER_BYTES + body.len() as u64;
            self.next_index += 1;
        }
        Ok(appended)
    }

    /// Buffers a mark ([`FLAG_MARK`]): a frame that takes no index, in the active segment
    /// (it never rolls the log). Nothing reaches the file until [`SegmentLog::flush`].
    pub fn append_mark(&mut self, body: &[u8]) -> Result<FrameLoc> {
        let body_len = u32::try_from(body.len())
            .ok()
            .filter(|&len| len <= FRAME_BODY_BYTES_MAX)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "mark body of {} bytes exceeds FRAME_BODY_BYTES_MAX ({FRAME_BODY_BYTES_MAX})",
                    body.len()
                ))
            })?;
        let loc = FrameLoc {
            segment: *self.firsts.last().expect("a log has at least one segment"),
            offset: self.active_len,
            body_len,
        };
        encode_frame(
            &mut self.buffer,
            self.next_index,
            FLAG_BATCH_END | FLAG_MARK,
            body,
        );
        self.active_len = loc.end();
        Ok(loc)
    }

    /// The segment the next frame goes to, and where the flushed frames end in it.
    pub fn end(&self) -> (u64, u64) {
        (
            *self.firsts.last().expect("a log has at least one segment"),
            self.active_len - self.buffer.len() as u64,
        )
    }

    /// Writes buffered frames to the active file and, if `durable`, waits for them to reach the
    /// disk (fdatasync). Without `durable` the bytes survive a process crash but not a power loss.
    pub fn flush(&mut self, durable: bool) -> Result<()> {
        if !self.buffer.is_empty() {
            // Positional: the file is longer than its frames while its reserved space lasts.
            let at = self.active_len - self.buffer.len() as u64;
            self.disk
                .write_at(&self.active, &self.active_path, &self.buffer, at)
                .map_err(|err| Error::io(&self.active_path, err))?;
            self.buffer.clear();
        }
        if durable {
            self.sync_handle().sync()?;
        }
        Ok(())
    }

    /// Flushes and syncs everything written, then records in `SYNCED` how far the active
    /// segment is synced, so that the next open can tell a torn tail (past it) from damage to
    /// synced frames (inside it). For a clean close: the next open removes the record, so it
    /// never outlives the bytes it describes.
    pub fn record_synced(&mut self) -> Result<()> {
        self.flush(true)?;
        let active_first = *self.firsts.last().expect("a log has at least one segment");
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&active_first.to_le_bytes());
        payload.extend_from_slice(&self.active_len.to_le_bytes());
        crate::metafile::write(
            &*self.disk,
            &self.dir.join(SYNCED_FILE),
            SYNCED_MAGIC,
            &payload,
        )
    }

    /// A handle that makes what has been flushed to the active segment durable, from any
    /// thread, so the owner can go on appending while the disk works. Once the log rolls, a
    /// handle taken before covers a sealed segment, which the roll itself synced.
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            file: self.active.clone(),
            path: self.active_path.clone(),
            faults: self.faults.clone(),
            disk: self.disk.clone(),
        }
    }

    /// The disk every write, sync and directory change of this log goes through, for files
    /// kept beside the segments.
    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    /// Injects disk failures (tests only).
    pub fn set_faults(&mut self, faults: Option<Arc<Faults>>) {
        self.faults = faults;
    }

    /// Removes every entry after `index` (keeping `index` itself, and the marks written before
    /// the next entry), deleting later segments whole;
    /// `index` may be as low as `first_index() - 1` (keep nothing). The cut may reach into a
    /// sealed segment (a replica dropping entries a new leader does not have), which then
    /// becomes the active one. A sealed segment is never cut in place: a checkpoint may share
    /// its file through a hard link, so the kept prefix goes to a new file that is renamed over
    /// it. A cut inside a batch is refused ([`Error::InvalidInput`]): batches are atomic.
    /// Everything is durable (files and directory synced) when this returns.
    pub fn truncate_after(&mut self, index: u64) -> Result<()> {
        if index + 1 < self.first_index() {
            return Err(Error::InvalidInput(format!(
                "cannot truncate after index {index}: the log starts at {}",
                self.first_index()
            )));
        }
        if index >= self.last_index() {
            return Ok(());
        }
        self.flush(false)?;
        let active_first = *self.firsts.last().expect("a log has at least one segment");
        // The segment the cut falls in: the last one that starts at or before `index + 1`.
        // It is scanned first, so that a cut inside a batch is refused before anything changes.
        let first = *self
            .firsts
            .iter()
            .rev()
            .find(|&&first| first <= index + 1)
            .expect("index + 1 >= first_index(), checked above");
        let path = segment_path(&self.dir, first);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|err| Error::io(&path, err))?;
        let frames_end = self.frames_end(first, active_first, &file, &path)?;
        let mut cut = SEGMENT_HEADER_BYTES;
        let mut cut_ends_batch = true;
        for frame in FrameIter::new(&file, &path, first, frames_end) {
            let frame = frame?;
            // Marks written after entry `index` and before the next entry stay with it.
            if frame.index > index && frame.flags & FLAG_MARK == 0 {
                break;
            }
            cut = frame.loc.end();
            cut_ends_batch = frame.flags & FLAG_BATCH_END != 0;
        }
        if !cut_ends_batch {
            // The kept frames would end in a batch without its end marker, which the next open
            // drops as a torn tail: batches are atomic, so a cut goes between them.
            return Err(Error::InvalidInput(format!(
                "cannot truncate after index {index}: it is inside a batch"
            )));
        }
        // Drop whole segments that start after the cut, newest first.
        let n_segments = self.firsts.len();
        while self.firsts.len() > 1 && *self.firsts.last().expect("non-empty") > first {
            let later = self.firsts.pop().expect("non-empty");
            let later_path = segment_path(&self.dir, later);
            self.reader.remove(later);
            self.disk
                .remove_file(&later_path)
                .map_err(|err| Error::io(&later_path, err))?;
        }
        // The removals are made durable before the cut: otherwise a power loss could bring a
        // removed segment back after a segment that now ends in reserved zeros.
        if self.firsts.len() < n_segments {
            sync_dir(&*self.disk, &self.dir)?;
        }
        if first == active_first {
            self.disk
                .set_len(&file, &path, cut)
                .map_err(|err| Error::io(&path, err))?;
        } else {
            file = self.rewrite_prefix(&file, &path, cut)?;
            let reader_file = File::open(&path).map_err(|err| Error::io(&path, err))?;
            self.reader.insert(first, reader_file);
        }
        reserve(&*self.disk, &file, &path, self.segment_bytes);
        self.disk
            .sync_all(&file, &path)
            .map_err(|err| Error::io(&path, err))?;
        sync_dir(&*self.disk, &self.dir)?;
        self.active = Arc::new(file);
        self.active_path = Arc::from(path.as_path());
        self.active_len = cut;
        self.next_index = index + 1;
        Ok(())
    }

    /// Replaces the segment at `path` with a new file holding its first `cut` bytes (through a
    /// temporary name, synced, renamed), and returns the new file open for writing.
    fn rewrite_prefix(&self, old: &File, path: &Path, cut: u64) -> Result<File> {
        let mut prefix = vec![0u8; usize::try_from(cut).expect("segments fit in memory bounds")];
        old.read_exact_at(&mut prefix, 0)
            .map_err(|err| Error::io(path, err))?;
        let tmp = path.with_extension("seg.tmp");
        let new = self
            .disk
            .create(&tmp, true)
            .map_err(|err| Error::io(&tmp, err))?;
        self.disk
            .write_at(&new, &tmp, &prefix, 0)
            .and_then(|()| self.disk.sync_all(&new, &tmp))
            .map_err(|err| Error::io(&tmp, err))?;
        self.disk
            .rename(&tmp, path)
            .map_err(|err| Error::io(path, err))?;
        sync_dir(&*self.disk, &self.dir)?;
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|err| Error::io(path, err))
    }

    /// Removes the sealed segments whose frames all lie at or before `index`, oldest first,
    /// and returns the log's first index after it. The active segment is never removed, so a
    /// log keeps at least its newest frames. Each removal is made durable before the next, so a
    /// crash leaves a log that starts later, never one with a hole.
    pub fn purge_through(&mut self, index: u64) -> Result<u64> {
        while self.firsts.len() > 1 && self.firsts[1] - 1 <= index {
            let first = self.firsts[0];
            let path = segment_path(&self.dir, first);
            self.disk
                .remove_file(&path)
                .map_err(|err| Error::io(&path, err))?;
            sync_dir(&*self.disk, &self.dir)?;
            self.firsts.remove(0);
            self.reader.remove(first);
        }
        Ok(self.first_index())
    }

    /// Reads every frame of one segment in order, verifying each checksum. Used to rebuild
    /// indexes for a segment that has no saved index; any bad frame is [`Error::Corrupt`].
    pub fn scan(&self, first_index: u64) -> Result<Vec<Frame>> {
        let path = segment_path(&self.dir, first_index);
        let file = File::open(&path).map_err(|err| Error::io(&path, err))?;
        let active_first = *self.firsts.last().expect("a log has at least one segment");
        let frames_end = self.frames_end(first_index, active_first, &file, &path)?;
        FrameIter::new(&file, &path, first_index, frames_end).collect()
    }

    /// Where the frames of segment `first` end: the flushed end of the active segment (which
    /// is longer while its reserved space lasts), the file's length for a sealed one.
    fn frames_end(&self, first: u64, active_first: u64, file: &File, path: &Path) -> Result<u64> {
        if first == active_first {
            Ok(self.active_len - self.buffer.len() as u64)
        } else {
            file_len(file, path)
        }
    }

    /// Seals the active segment (flushed, cut to its last frame and synced) and starts a new one
    /// at the next index.
    fn roll(&mut self) -> Result<u64> {
        self.flush(false)?;
        let sealed_path = self.active_path.clone();
        let faults = self.faults.as_deref().map_or(Ok(()), Faults::before_sync);
        faults
            .and_then(|()| {
                self.disk
                    .set_len(&self.active, &sealed_path, self.active_len)
            })
            .and_then(|()| self.disk.sync_all(&self.active, &sealed_path))
            .map_err(|err| Error::io(&sealed_path, err))?;
        let sealed = *self.firsts.last().expect("a log has at least one segment");
        let first = self.next_index;
        let path = create_segment(&*self.disk, &self.dir, first, self.segment_bytes)?;
        self.active = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|err| Error::io(&path, err))?,
        );
        self.active_path = Arc::from(path.as_path());
        let reader_file = File::open(&path).map_err(|err| Error::io(&path, err))?;
        self.reader.insert(first, reader_file);
        self.firsts.push(first);
        self.active_len = SEGMENT_HEADER_BYTES;
        Ok(sealed)
    }
}

/// The path of the segment whose first index is `first_index`.
pub fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.{SEGMENT_EXTENSION}"))
}

/// Fsyncs a directory so that files created, renamed or removed in it survive a crash.
pub fn sync_dir(disk: &dyn Disk, dir: &Path) -> Result<()> {
    disk.sync_dir(dir).map_err(|err| Error::io(dir, err))
}

/// Whether `dir` holds at least one segment file; false if it does not exist.
pub fn has_segments(dir: &Path) -> Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(Error::io(dir, err)),
    };
    for entry in entries {
        let path = entry.map_err(|err| Error::io(dir, err))?.path();
        if path.extension().and_then(|ext| ext.to_str()) == Some(SEGMENT_EXTENSION) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How many segment files `dir` holds and their bytes on disk (reserved space included), for
/// an operator's metrics; 0 and 0 if it does not exist.
pub fn disk_usage(dir: &Path) -> Result<(u64, u64)> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(err) => return Err(Error::io(dir, err)),
    };
    let (mut n_segments, mut bytes) = (0, 0);
    for entry in entries {
        let entry = entry.map_err(|err| Error::io(dir, err))?;
        let path = entry.path();
        if path.extension().and_then(|ext| ext.to_str()) == Some(SEGMENT_EXTENSION) {
            n_segments += 1;
            // A segment removed between listing and stat counts as gone.
            bytes += entry.metadata().map_or(0, |meta| meta.len());
        }
    }
    Ok((n_segments, bytes))
}

fn list_segments(disk: &dyn Disk, dir: &Path) -> Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir).map_err(|err| Error::io(dir, err))? {
        let path = entry.map_err(|err| Error::io(dir, err))?.path();
        let extension = path.extension().and_then(|ext| ext.to_str());
        if extension == Some("tmp") {
            // A file a crash interrupted before it was renamed into place: never part of the log.
            // Its removal needs no sync: should it come back, the next open removes it again.
            disk.remove_file(&path)
                .map_err(|err| Error::io(&path, err))?;
            continue;
        }
        if extension != Some(SEGMENT_EXTENSION) {
            continue;
        }
        let first = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok())
            .ok_or_else(|| Error::corrupt(&path, 0, "segment file name is not a first index"))?;
        firsts.push(first);
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Creates the segment starting at `first_index`, its space reserved up to `segment_bytes`.
fn create_segment(
    disk: &dyn Disk,
    dir: &Path,
    first_index: u64,
    segment_bytes: u64,
) -> Result<PathBuf> {
    let path = segment_path(dir, first_index);
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    header.extend_from_slice(&SEGMENT_MAGIC);
    header.extend_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&[0u8; 6]);
    header.extend_from_slice(&first_index.to_le_bytes());
    header.extend_from_slice(&[0u8; 4]);
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(header.len() as u64, SEGMENT_HEADER_BYTES);
    // Written under a temporary name and renamed into place, so a crash can never leave a
    // segment without its whole header (which open would have to call corruption).
    let tmp = path.with_extension("seg.tmp");
    let file = disk
        .create(&tmp, true)
        .map_err(|err| Error::io(&tmp, err))?;
    if let Err(err) = disk.write_at(&file, &tmp, &header, 0).and_then(|()| {
        reserve(disk, &file, &tmp, segment_bytes);
        disk.sync_all(&file, &tmp)
    }) {
        // Whatever was reserved would otherwise hold its space until the next open.
        let _ = disk.remove_file(&tmp);
        return Err(Error::io(&tmp, err));
    }
    disk.rename(&tmp, &path)
        .map_err(|err| Error::io(&path, err))?;
    sync_dir(disk, dir)?;
    Ok(path)
}

/// Reserves a segment's disk space up to `segment_bytes` (fallocate; the file's length becomes
/// at least that). A write into reserved space changes no file size, and only the first write
/// into each block has metadata to commit (its extent becomes written), so most fdatasyncs
/// commit none (docs/BENCHMARKS.md, "Fourth pass", measures it).
///
/// Best effort: reserving is only faster, never needed. Where it fails (a full disk, a file
/// system without fallocate) the file grows as it is written, as it did before, and a full
/// disk shows as a failed write, as it always did. A store on a full disk still opens.
fn reserve(disk: &dyn Disk, file: &File, path: &Path, segment_bytes: u64) {
    let unsupported = [rustix::io::Errno::OPNOTSUPP, rustix::io::Errno::NOSYS]
        .map(|errno| Some(errno.raw_os_error()));
    match disk.reserve(file, path, segment_bytes) {
        Ok(()) => {}
        Err(err) if unsupported.contains(&err.raw_os_error()) => {}
        Err(err) => tracing::warn!(
            file = %path.display(),
            bytes = segment_bytes,
            error = %err,
            "cannot reserve the segment's space; it grows as it is written"
        ),
    }
}

fn file_len(file: &File, path: &Path) -> Result<u64> {
    file.metadata()
        .map(|meta| meta.len())
        .map_err(|err| Error::io(path, err))
}

fn check_header(file: &File, path: &Path, first_index: u64) -> Result<()> {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| Error::corrupt(path, 0, "segment header is cut short"))?;
    if header[..8] != SEGMENT_MAGIC {
        return Err(Error::corrupt(
            path,
            0,
            "not a causeway segment (bad magic)",
        ));
    }
    let crc = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
    if crc32fast::hash(&header[..28]) != crc {
        return Err(Error::corrupt(path, 0, "segment header fails its checksum"));
    }
    let version = u16::from_le_bytes(header[8..10].try_into().expect("2 bytes"));
    if version != SEGMENT_FORMAT_VERSION {
        return Err(Error::corrupt(
            path,
            8,
            format!("segment format version {version} is not supported"),
        ));
    }
    let first = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    if first != first_index {
        return Err(Error::corrupt(
            path,
            16,
            format!("header says first index {first}, file name says {first_index}"),
        ));
    }
    Ok(())
}

/// Reads the `SYNCED` record of `dir`: how far segment `active_first` was synced at the last
/// clean close, if that is what it records. A damaged record is ignored with a warning: it
/// only ever makes recovery less sure. Changes nothing: a refused open leaves the record for
/// the repair, and [`remove_synced`] removes it once the log is accepted.
pub(super) fn read_synced(dir: &Path, active_first: u64) -> Option<u64> {
    let path = dir.join(SYNCED_FILE);
    let payload = match crate::metafile::read(&path, SYNCED_MAGIC) {
        Ok(payload) => payload?,
        Err(err) => {
            tracing::warn!(%err, "ignoring a damaged record of the synced length");
            return None;
        }
    };
    if payload.len() != 16 {
        return None;
    }
    let first = u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes"));
    let synced_end = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
    (first == active_first).then_some(synced_end)
}

/// Removes the `SYNCED` record of `dir`, if there is one, durably.
pub(super) fn remove_synced(disk: &dyn Disk, dir: &Path) -> Result<()> {
    let path = dir.join(SYNCED_FILE);
    match fs::symlink_metadata(&path) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io(&path, err)),
    }
    disk.remove_file(&path)
        .map_err(|err| Error::io(&path, err))?;
    sync_dir(disk, dir)
}

/// The refusal of an active segment whose whole frames end before the length the last clean
/// close synced: frames that were synced, so may have been acknowledged, are damaged or
/// missing. Names the first frame lost, as `causewayd repair --truncate-at-frame` takes it.
fn short_of_synced(file: &File, path: &Path, first_index: u64, synced_end: u64) -> Error {
    let (offset, index) = match tail::inspect_tail(file, path, first_index, false) {
        Ok(inspection) => (inspection.bad_offset, inspection.bad_index),
        Err(err) => return err,
    };
    Error::corrupt(
        path,
        offset,
        format!(
            "frame {index} is damaged or missing, inside the length the last clean close \
             synced ({synced_end} bytes): frames that were synced, so may have been \
             acknowledged, would be cut; open refuses to cut them (causewayd repair does, on \
             an operator's word)"
        ),
    )
}

/// Copies `range` of segment `segment` (`file`, at `path`) into a new file of `dir`'s
/// quarantine directory, durably (written, synced, named in a synced directory), and returns
/// its path. Nothing is cut before this returns.
fn quarantine(
    disk: &dyn Disk,
    dir: &Path,
    segment: u64,
    file: &File,
    path: &Path,
    range: std::ops::Range<u64>,
) -> Result<PathBuf> {
    let quarantine_dir = dir.join(QUARANTINE_DIR);
    disk::create_dir_all(disk, &quarantine_dir).map_err(|err| Error::io(&quarantine_dir, err))?;
    let stem = format!("{segment:020}-{:020}.cut", range.start);
    let mut target = quarantine_dir.join(&stem);
    let mut copy_idx = 0;
    while target.exists() {
        copy_idx += 1;
        target = quarantine_dir.join(format!("{stem}.{copy_idx}"));
    }
    let tmp = target.with_extension("tmp");
    let out = disk
        .create(&tmp, true)
        .map_err(|err| Error::io(&tmp, err))?;
    let mut piece = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let piece_end = (at + SCAN_PIECE_BYTES).min(range.end);
        piece.resize(
            usize::try_from(piece_end - at).expect("a piece fits in memory"),
            0,
        );
        file.read_exact_at(&mut piece, at)
            .map_err(|err| Error::io(path, err))?;
        disk.write_at(&out, &tmp, &piece, at - range.start)
            .map_err(|err| Error::io(&tmp, err))?;
        at = piece_end;
    }
    disk.sync_all(&out, &tmp)
        .map_err(|err| Error::io(&tmp, err))?;
    disk.rename(&tmp, &target)
        .map_err(|err| Error::io(&target, err))?;
    sync_dir(disk, &quarantine_dir)?;
    Ok(target)
}

/// The last component of `path` as text, for messages that must not name a machine's
/// directories.
pub fn file_name_of(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests;
