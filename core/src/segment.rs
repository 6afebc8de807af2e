//! The segment log: an append-only sequence of checksummed frames in numbered files.
//!
//! A segment log is a directory of segment files, `{first_index:020}.seg`, each a 32-byte
//! header followed by frames. Every frame carries a dense, gapless index, so the log can answer
//! "where is entry N" without a side table once a segment has been scanned. It knows nothing of
//! events: the event store keeps one frame per event (frame index = position), and the
//! replication log will keep one frame per Raft entry. `docs/FORMAT.md` gives the bytes.
//!
//! Invariants:
//! - Indexes are dense: the first frame of a segment has the index in its file name, and each
//!   later frame has the previous frame's index plus one.
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
//! - Recovery truncates only a torn tail: a bad frame with no valid frame after it in the last
//!   segment. A bad frame followed by a valid one, or a bad frame in a sealed segment, is
//!   corruption and is reported with the file and offset, never skipped.
//! - Writes are buffered until [`SegmentLog::flush`]; nothing is readable through a
//!   [`SegmentReader`] before the caller has flushed it and chosen to publish it.
//! - Every write, sync and directory change goes through the log's [`Disk`] (reads do not), and
//!   each name it creates, renames or removes is made durable by syncing its directory,
//!   including the log's own directory in its parent when `open` creates it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::disk::{self, Disk, OsDisk};
use crate::error::{Error, Result};

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

/// Where a frame lives on disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FrameLoc {
    /// The first index of the segment that holds the frame (its file name).
    pub segment: u64,
    /// Byte offset of the frame header within the segment file.
    pub offset: u64,
    /// Bytes of the frame body (without the header).
    pub body_len: u32,
}

impl FrameLoc {
    /// The offset just past the frame.
    pub fn end(&self) -> u64 {
        self.offset + FRAME_HEADER_BYTES + u64::from(self.body_len)
    }
}

/// One frame as read back from disk, its checksum verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's index in the log.
    pub index: u64,
    /// The frame's flags ([`FLAG_BATCH_END`], [`FLAG_MARK`]).
    pub flags: u8,
    /// Where the frame lives.
    pub loc: FrameLoc,
    /// The frame body.
    pub body: Vec<u8>,
}

/// What [`SegmentLog::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// A torn tail that was truncated: the file, the offset it was cut at, and the bytes dropped.
    pub truncated: Option<(PathBuf, u64, u64)>,
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

/// A cheap, cloneable handle that reads frames while the log is being appended to.
#[derive(Clone, Debug)]
pub struct SegmentReader {
    dir: PathBuf,
    files: Arc<RwLock<BTreeMap<u64, Arc<File>>>>,
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
        let tail = scan_tail(&active, &path, active_first)?;
        let cut = tail.dirty_end > tail.end || tail.zeros_read > SCAN_PIECE_BYTES;
        if tail.dirty_end > tail.end {
            tracing::warn!(
                file = %path.display(),
                offset = tail.end,
                bytes = tail.dirty_end - tail.end,
                "truncating a torn tail that was never acknowledged"
            );
            recovery.truncated = Some((path.clone(), tail.end, tail.dirty_end - tail.end));
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
    /// it. Everything is durable (files and directory synced) when this returns.
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
        // Drop whole segments that start after the cut, newest first.
        let n_segments = self.firsts.len();
        while self.firsts.len() > 1 && *self.firsts.last().expect("non-empty") > index + 1 {
            let first = self.firsts.pop().expect("non-empty");
            let path = segment_path(&self.dir, first);
            self.reader.remove(first);
            self.disk
                .remove_file(&path)
                .map_err(|err| Error::io(&path, err))?;
        }
        // The removals are made durable before the cut: otherwise a power loss could bring a
        // removed segment back after a segment that now ends in reserved zeros.
        if self.firsts.len() < n_segments {
            sync_dir(&*self.disk, &self.dir)?;
        }
        let first = *self.firsts.last().expect("a log has at least one segment");
        let path = segment_path(&self.dir, first);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|err| Error::io(&path, err))?;
        let frames_end = self.frames_end(first, active_first, &file, &path)?;
        let mut cut = SEGMENT_HEADER_BYTES;
        for frame in FrameIter::new(&file, &path, first, frames_end) {
            let frame = frame?;
            // Marks written after entry `index` and before the next entry stay with it.
            if frame.index > index && frame.flags & FLAG_MARK == 0 {
                break;
            }
            cut = frame.loc.end();
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

impl SegmentReader {
    /// Reads and verifies the frame at `loc`. A checksum failure, a short read or an index other
    /// than `index` is [`Error::Corrupt`] naming the file and offset.
    pub fn read(&self, index: u64, loc: FrameLoc) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        self.read_each(&[(index, loc)], |_, _, bytes| {
            body = bytes.to_vec();
            Ok(())
        })?;
        Ok(body)
    }

    /// Reads and verifies the frames `frames` names, each an index and where it lives, and
    /// hands each body to `each` in order; the first error stops the walk, after the frames
    /// before it were handed over. Frames that lie end to end in one segment, as a page of the
    /// log does (forward or backward), are read with one system call per `READ_RUN_BYTES`
    /// (256 KiB) into one buffer, so a page of small events costs a few reads rather than one
    /// per event. Errors are those of [`SegmentReader::read`], naming the frame at fault.
    pub fn read_each(
        &self,
        frames: &[(u64, FrameLoc)],
        mut each: impl FnMut(u64, FrameLoc, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut buffer = Vec::new();
        let mut open: Option<(u64, Arc<File>)> = None;
        let mut start = 0;
        while start < frames.len() {
            let (end, from, to) = read_run(frames, start);
            let segment = frames[start].1.segment;
            let path = || segment_path(&self.dir, segment);
            let file = match &open {
                Some((open_segment, file)) if *open_segment == segment => Arc::clone(file),
                _ => {
                    let file = self.file(segment)?;
                    open = Some((segment, Arc::clone(&file)));
                    file
                }
            };
            let run_len = (to - from) as usize;
            if buffer.len() < run_len {
                buffer.resize(run_len, 0);
            }
            let run = &mut buffer[..run_len];
            // A run that ends past the file is read again frame by frame, to hand over the
            // frames before the one cut short and to name it.
            let cut_short = match file.read_exact_at(run, from) {
                Ok(()) => false,
                Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => true,
                Err(err) => return Err(Error::io(&path(), err)),
            };
            for &(index, loc) in &frames[start..end] {
                let at = (loc.offset - from) as usize;
                let bytes = &mut run[at..at + (loc.end() - loc.offset) as usize];
                if cut_short {
                    file.read_exact_at(bytes, loc.offset)
                        .map_err(|err| match err.kind() {
                            std::io::ErrorKind::UnexpectedEof => {
                                Error::corrupt(&path(), loc.offset, "frame is cut short")
                            }
                            _ => Error::io(&path(), err),
                        })?;
                }
                let header = parse_frame_header(bytes);
                if header.body_len != loc.body_len
                    || header.index != index
                    || frame_crc(bytes) != header.crc
                {
                    return Err(Error::corrupt(
                        &path(),
                        loc.offset,
                        format!("frame {index} fails its checksum"),
                    ));
                }
                each(index, loc, &bytes[FRAME_HEADER_BYTES as usize..])?;
            }
            start = end;
        }
        Ok(())
    }

    /// The open file of the segment whose first index is `first`.
    fn file(&self, first: u64) -> Result<Arc<File>> {
        let files = self.files.read().expect("segment file map lock poisoned");
        files.get(&first).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "segment {} is not open",
                segment_path(&self.dir, first).display()
            ))
        })
    }

    fn insert(&self, first: u64, file: File) {
        self.files
            .write()
            .expect("segment file map lock poisoned")
            .insert(first, Arc::new(file));
    }

    fn remove(&self, first: u64) {
        self.files
            .write()
            .expect("segment file map lock poisoned")
            .remove(&first);
    }
}

/// The run of `frames` that one read covers, starting at `start`: where it ends (exclusive)
/// and the bytes `from..to` it spans. The frames after the first join it while each lies end to
/// end with the one before, in the same segment and the same direction (a backward page asks
/// for them newest first), and the run stays within `READ_RUN_BYTES`. A run holds at least one
/// frame, however large.
fn read_run(frames: &[(u64, FrameLoc)], start: usize) -> (usize, u64, u64) {
    let first = frames[start].1;
    let (mut from, mut to) = (first.offset, first.end());
    let mut forward = None;
    let mut end = start + 1;
    while let Some(&(_, loc)) = frames.get(end) {
        let prev = frames[end - 1].1;
        let direction = if loc.segment != prev.segment {
            None
        } else if loc.offset == prev.end() {
            Some(true)
        } else if loc.end() == prev.offset {
            Some(false)
        } else {
            None
        };
        if direction.is_none() || (forward.is_some() && forward != direction) {
            break;
        }
        let (run_from, run_to) = (from.min(loc.offset), to.max(loc.end()));
        if run_to - run_from > READ_RUN_BYTES {
            break;
        }
        (forward, from, to) = (direction, run_from, run_to);
        end += 1;
    }
    (end, from, to)
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

fn encode_frame(out: &mut Vec<u8>, index: u64, flags: u8, body: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(
        &u32::try_from(body.len())
            .expect("checked by the caller")
            .to_le_bytes(),
    );
    out.extend_from_slice(&index.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(body);
    let crc = frame_crc(&out[start..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC32 of a frame: everything after the CRC field (length, index, flags, body).
fn frame_crc(frame: &[u8]) -> u32 {
    crc32fast::hash(&frame[4..])
}

struct FrameHeader {
    crc: u32,
    body_len: u32,
    index: u64,
    flags: u8,
}

fn parse_frame_header(bytes: &[u8]) -> FrameHeader {
    FrameHeader {
        crc: u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")),
        body_len: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
        index: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        flags: bytes[16],
    }
}

/// Reads frames from a segment file in order, stopping with an error at the first bad one.
struct FrameIter<'a> {
    file: &'a File,
    path: &'a Path,
    segment: u64,
    /// Where the frames end: the file's length, or less for the active segment.
    frames_end: u64,
    offset: u64,
    next_index: u64,
    failed: bool,
}

impl<'a> FrameIter<'a> {
    fn new(file: &'a File, path: &'a Path, segment: u64, frames_end: u64) -> FrameIter<'a> {
        FrameIter {
            file,
            path,
            segment,
            frames_end,
            offset: SEGMENT_HEADER_BYTES,
            next_index: segment,
            failed: false,
        }
    }
}

impl Iterator for FrameIter<'_> {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Result<Frame>> {
        if self.failed || self.offset >= self.frames_end {
            return None;
        }
        let frame = read_frame_at(
            self.file,
            self.frames_end,
            self.offset,
            self.segment,
            self.next_index,
        );
        match frame {
            Some(frame) => {
                self.offset = frame.loc.end();
                if frame.flags & FLAG_MARK == 0 {
                    self.next_index += 1;
                }
                Some(Ok(frame))
            }
            None => {
                self.failed = true;
                let detail = format!("frame {} is damaged or cut short", self.next_index);
                Some(Err(Error::corrupt(self.path, self.offset, detail)))
            }
        }
    }
}

/// Reads the frame at `offset` if it is whole, has index `expected_index` and passes its CRC.
fn read_frame_at(
    file: &File,
    file_len: u64,
    offset: u64,
    segment: u64,
    expected_index: u64,
) -> Option<Frame> {
    if file_len.saturating_sub(offset) < FRAME_HEADER_BYTES {
        return None;
    }
    let mut header = [0u8; FRAME_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, offset).ok()?;
    let parsed = parse_frame_header(&header);
    if parsed.index != expected_index || parsed.body_len > FRAME_BODY_BYTES_MAX {
        return None;
    }
    let frame_end = offset + FRAME_HEADER_BYTES + u64::from(parsed.body_len);
    if frame_end > file_len {
        return None;
    }
    let mut bytes = header.to_vec();
    bytes.resize(FRAME_HEADER_BYTES as usize + parsed.body_len as usize, 0);
    file.read_exact_at(
        &mut bytes[FRAME_HEADER_BYTES as usize..],
        offset + FRAME_HEADER_BYTES,
    )
    .ok()?;
    if frame_crc(&bytes) != parsed.crc {
        return None;
    }
    bytes.drain(..FRAME_HEADER_BYTES as usize);
    let loc = FrameLoc {
        segment,
        offset,
        body_len: parsed.body_len,
    };
    Some(Frame {
        index: parsed.index,
        flags: parsed.flags,
        loc,
        body: bytes,
    })
}

/// The valid prefix of the active segment: where its last whole batch ends.
struct Tail {
    end: u64,
    next_index: u64,
    /// The end of the last byte after `end` that is not zero: `end` itself unless a batch was
    /// cut short. Zeros after the frames are reserved space, not damage.
    dirty_end: u64,
    /// Bytes of written zeros read after the frames, where reserved space should have been.
    zeros_read: u64,
}

/// Finds the end of the last whole batch in the active segment. A bad frame is a torn tail only
/// if no valid frame follows it; otherwise acknowledged data after it would be lost, so it is
/// reported as corruption. The zeros of reserved space are a bad frame with nothing after it.
fn scan_tail(file: &File, path: &Path, first_index: u64) -> Result<Tail> {
    let file_len = file_len(file, path)?;
    let mut end = SEGMENT_HEADER_BYTES;
    let mut tail_index = first_index;
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut next_index = first_index;
    while let Some(frame) = read_frame_at(file, file_len, offset, first_index, next_index) {
        offset = frame.loc.end();
        if frame.flags & FLAG_MARK == 0 {
            next_index += 1;
        }
        if frame.flags & FLAG_BATCH_END != 0 {
            end = offset;
            tail_index = next_index;
        }
    }
    let after = scan_after(file, path, file_len, end, offset, first_index, next_index)?;
    if let Some(later) = after.whole_frame {
        let detail = format!(
            "frame {next_index} is damaged but frame {} at offset {later} after it is whole",
            next_index_at(file, later)
        );
        return Err(Error::corrupt(path, offset, detail));
    }
    Ok(Tail {
        end,
        next_index: tail_index,
        dirty_end: after.dirty_end,
        zeros_read: after.zeros_read,
    })
}

/// What lies after the last whole batch of the active segment.
struct After {
    /// See [`Tail::dirty_end`].
    dirty_end: u64,
    /// The offset of a whole frame after the bad one, if there is any.
    whole_frame: Option<u64>,
    /// Bytes read that were written zeros, not reserved space: after a copy that did not keep
    /// the file sparse, say. See [`Tail::zeros_read`].
    zeros_read: u64,
}

/// Reads the file from `tail_end` to its end, in pieces, for bytes that are not zero and for a
/// whole frame with an index of at least `min_index` starting after `bad_offset`. Ranges the
/// file system reports as holes or unwritten space read as zeros and are skipped, so a segment
/// that has used little of its reserved space is not read through to its end.
///
/// A candidate frame is read (and its CRC computed) only if its header could be that of a
/// whole frame after the bad one: an index no higher than the frames that fit between them
/// allow, known flags, and a body that ends within the written range, since every byte of a
/// whole frame was written. So garbage in a torn batch costs a few compares per byte.
fn scan_after(
    file: &File,
    path: &Path,
    file_len: u64,
    tail_end: u64,
    bad_offset: u64,
    segment: u64,
    min_index: u64,
) -> Result<After> {
    let mut after = After {
        dirty_end: tail_end,
        whole_frame: None,
        zeros_read: 0,
    };
    let mut piece = Vec::new();
    for (start, end) in written_ranges(file, tail_end, file_len) {
        let mut at = start;
        while at < end {
            let piece_end = (at + SCAN_PIECE_BYTES).min(end);
            // A frame header that starts near the piece's end is read whole with it.
            let read_end = (piece_end + FRAME_HEADER_BYTES).min(file_len);
            piece.resize(
                usize::try_from(read_end - at).expect("a piece fits in memory"),
                0,
            );
            file.read_exact_at(&mut piece, at)
                .map_err(|err| Error::io(path, err))?;
            let Some(last) = piece.iter().rposition(|&byte| byte != 0) else {
                after.zeros_read += piece_end - at;
                at = piece_end;
                continue;
            };
            after.dirty_end = after.dirty_end.max(at + last as u64 + 1);
            // A whole frame's index (bytes 8..16 of its header) is at least `min_index`, so
            // unless that is 0, a header starts at least 8 bytes before a byte that is not zero.
            let own = usize::try_from(piece_end - at).expect("a piece fits in memory");
            let candidates = if min_index == 0 {
                own
            } else {
                own.min(last.saturating_sub(7))
            };
            for rel in 0..candidates {
                let candidate = at + rel as u64;
                if candidate <= bad_offset {
                    continue;
                }
                let Some(header) = piece.get(rel..rel + FRAME_HEADER_BYTES as usize) else {
                    break;
                };
                let header = parse_frame_header(header);
                // The frames from the bad one to this one take 17 bytes each at least.
                let max_index =
                    min_index.saturating_add((candidate - bad_offset) / FRAME_HEADER_BYTES);
                let frame_end = FrameLoc {
                    segment,
                    offset: candidate,
                    body_len: header.body_len,
                }
                .end();
                if (min_index..=max_index).contains(&header.index)
                    && header.flags & !(FLAG_BATCH_END | FLAG_MARK) == 0
                    && frame_end <= end
                    && read_frame_at(file, end, candidate, segment, header.index).is_some()
                {
                    after.whole_frame = Some(candidate);
                    return Ok(after);
                }
            }
            at = piece_end;
        }
    }
    Ok(after)
}

/// The ranges of `from..to` that may hold bytes other than zero: everything but what the file
/// system reports as holes (lseek `SEEK_DATA` / `SEEK_HOLE`; unwritten reserved space counts as
/// a hole on ext4 and XFS). Where the file system cannot tell, the whole range.
fn written_ranges(file: &File, from: u64, to: u64) -> Vec<(u64, u64)> {
    use rustix::fs::{SeekFrom, seek};
    let mut ranges = Vec::new();
    let mut at = from;
    while at < to {
        let start = match seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            // No data from `at` to the end of the file.
            Err(rustix::io::Errno::NXIO) => break,
            Err(_) => {
                ranges.push((at, to));
                break;
            }
        };
        // A file system that answers out of order is read from `at` to the end instead.
        if start < at {
            ranges.push((at, to));
            break;
        }
        if start >= to {
            break;
        }
        let end = seek(file, SeekFrom::Hole(start)).map_or(to, |hole| hole.min(to));
        if end <= start {
            ranges.push((start, to));
            break;
        }
        ranges.push((start, end));
        at = end;
    }
    ranges
}

fn next_index_at(file: &File, offset: u64) -> u64 {
    let mut index_bytes = [0u8; 8];
    file.read_exact_at(&mut index_bytes, offset + 8)
        .map(|()| u64::from_le_bytes(index_bytes))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bodies(n_frames: usize, tag: u8) -> Vec<Vec<u8>> {
        (0..n_frames)
            .map(|frame_idx| vec![tag; 10 + frame_idx])
            .collect()
    }

    #[test]
    fn frames_round_trip_across_rolls_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 200, 1).unwrap();
        let mut locs = Vec::new();
        for batch_idx in 0..10u8 {
            let appended = log.append(&bodies(3, batch_idx)).unwrap();
            locs.extend(appended.locs);
            log.flush(true).unwrap();
        }
        assert_eq!(log.last_index(), 30);
        assert!(
            log.segments().len() > 3,
            "a 200-byte segment size forces rolls"
        );
        let reader = log.reader();
        for (loc_idx, loc) in locs.iter().enumerate() {
            let body = reader.read(loc_idx as u64 + 1, *loc).unwrap();
            assert_eq!(body, vec![(loc_idx / 3) as u8; 10 + loc_idx % 3]);
        }
        drop(log);
        let (log, recovery) = SegmentLog::open(dir.path(), 200, 1).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(log.last_index(), 30);
        let scanned: Vec<u64> = log
            .segments()
            .iter()
            .flat_map(|seg| log.scan(seg.first_index).unwrap())
            .map(|f| f.index)
            .collect();
        assert_eq!(scanned, (1..=30).collect::<Vec<_>>());
    }

    /// Reads `frames` with [`SegmentReader::read_each`] and returns each index with its body.
    fn read_each_all(reader: &SegmentReader, frames: &[(u64, FrameLoc)]) -> Vec<(u64, Vec<u8>)> {
        let mut read = Vec::new();
        reader
            .read_each(frames, |index, _, body| {
                read.push((index, body.to_vec()));
                Ok(())
            })
            .unwrap();
        read
    }

    #[test]
    fn read_each_reads_runs_gaps_reversals_and_segment_ends() {
        let dir = tempfile::tempdir().unwrap();
        // 24 KiB frames in 1 MiB segments: a page of all of them spans segments and is longer
        // than one read run.
        let (mut log, _) = SegmentLog::open(dir.path(), 1024 * 1024, 1).unwrap();
        let mut frames = Vec::new();
        for batch_idx in 0..30u8 {
            let body = vec![batch_idx; 24 * 1024 + usize::from(batch_idx)];
            let appended = log.append(&[body.clone(), body]).unwrap();
            for loc in appended.locs {
                frames.push((frames.len() as u64 + 1, loc));
            }
            log.flush(true).unwrap();
        }
        assert!(log.segments().len() > 1, "the frames span segments");
        let expected =
            |index: u64| vec![((index - 1) / 2) as u8; 24 * 1024 + ((index - 1) / 2) as usize];
        let reader = log.reader();
        let check = |wanted: Vec<(u64, FrameLoc)>| {
            let read = read_each_all(&reader, &wanted);
            let indexes: Vec<u64> = read.iter().map(|(index, _)| *index).collect();
            assert_eq!(
                indexes,
                wanted.iter().map(|(index, _)| *index).collect::<Vec<_>>()
            );
            for (index, body) in read {
                assert_eq!(body, expected(index), "frame {index}");
            }
        };
        check(frames.clone());
        check(frames.iter().copied().step_by(3).collect());
        check(frames.iter().copied().rev().collect());
        check(frames[5..6].to_vec());
        check(Vec::new());
    }

    /// A log in `dir` holding one flushed batch of `n_frames` frames, with each frame's index.
    fn one_batch(dir: &Path, n_frames: usize) -> (SegmentLog, Vec<(u64, FrameLoc)>) {
        let (mut log, _) = SegmentLog::open(dir, 1024 * 1024, 1).unwrap();
        let appended = log.append(&bodies(n_frames, 7)).unwrap();
        log.flush(true).unwrap();
        let frames = appended
            .locs
            .iter()
            .enumerate()
            .map(|(loc_idx, loc)| (loc_idx as u64 + 1, *loc))
            .collect();
        (log, frames)
    }

    /// Reads `frames` until the error that must come, and checks that it is `Corrupt` at
    /// `offset` of `file` with `detail` in its message. Returns the indexes handed over first.
    fn read_until_corrupt(
        log: &SegmentLog,
        frames: &[(u64, FrameLoc)],
        file: &Path,
        offset: u64,
        detail: &str,
    ) -> Vec<u64> {
        let mut handed = Vec::new();
        let err = log
            .reader()
            .read_each(frames, |index, _, _| {
                handed.push(index);
                Ok(())
            })
            .unwrap_err();
        match err {
            Error::Corrupt {
                file: err_file,
                offset: err_offset,
                detail: err_detail,
            } => {
                assert_eq!((err_file.as_path(), err_offset), (file, offset));
                assert!(err_detail.contains(detail), "{err_detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        handed
    }

    #[test]
    fn read_each_stops_at_a_damaged_frame_inside_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let (log, frames) = one_batch(dir.path(), 8);
        let damaged = frames[5].1;
        let path = segment_path(dir.path(), damaged.segment);
        overwrite(&path, damaged.offset + FRAME_HEADER_BYTES + 3, &[0xFF]);
        let handed = read_until_corrupt(&log, &frames, &path, damaged.offset, "frame 6");
        assert_eq!(
            handed,
            vec![1, 2, 3, 4, 5],
            "frames before the damage come back"
        );
        // A frame asked for under another index is refused, though its bytes are whole.
        let err = log.reader().read(1, frames[1].1).unwrap_err();
        assert!(matches!(err, Error::Corrupt { offset, .. } if offset == frames[1].1.offset));
    }

    #[test]
    fn read_each_names_the_frame_a_short_file_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let (log, frames) = one_batch(dir.path(), 6);
        // Cut the file 3 bytes into the fifth frame, as a disk that lost its end would.
        let cut = frames[4].1;
        let path = segment_path(dir.path(), cut.segment);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(cut.offset + 3)
            .unwrap();
        let handed = read_until_corrupt(&log, &frames, &path, cut.offset, "cut short");
        assert_eq!(handed, vec![1, 2, 3, 4], "frames before the cut come back");
    }

    #[test]
    fn a_read_run_joins_only_frames_end_to_end_in_one_segment_and_direction() {
        let loc = |segment: u64, offset: u64, body_len: u32| FrameLoc {
            segment,
            offset,
            body_len,
        };
        let at = |locs: &[FrameLoc]| -> Vec<(u64, FrameLoc)> {
            locs.iter().map(|loc| (0, *loc)).collect()
        };
        let big = READ_RUN_BYTES as u32;
        // Forward, end to end: one run.
        let forward = at(&[loc(1, 32, 100), loc(1, 149, 100), loc(1, 266, 3)]);
        assert_eq!(read_run(&forward, 0), (3, 32, 286));
        // Backward, newest first: one run over the same bytes.
        let backward: Vec<_> = forward.iter().rev().copied().collect();
        assert_eq!(read_run(&backward, 0), (3, 32, 286));
        // A gap, a turn of direction, or the same offsets in another segment end the run.
        let gap = at(&[loc(1, 32, 100), loc(1, 150, 100)]);
        assert_eq!(read_run(&gap, 0), (1, 32, 149));
        let turn = at(&[loc(1, 149, 100), loc(1, 266, 3), loc(1, 32, 100)]);
        assert_eq!(read_run(&turn, 0), (2, 149, 286));
        let other_segment = at(&[loc(1, 32, 100), loc(2, 149, 100)]);
        assert_eq!(read_run(&other_segment, 0), (1, 32, 149));
        // A run stops before it would pass READ_RUN_BYTES; a larger frame is a run alone.
        let capped = at(&[
            loc(1, 32, big - 200),
            loc(1, u64::from(big) - 151, 100),
            loc(1, u64::from(big) - 34, 100),
        ]);
        assert_eq!(read_run(&capped, 0), (2, 32, u64::from(big) - 34));
        let large = at(&[
            loc(1, 32, 10),
            loc(1, 59, big),
            loc(1, u64::from(big) + 76, 10),
        ]);
        assert_eq!(read_run(&large, 0), (1, 32, 59));
        assert_eq!(read_run(&large, 1), (2, 59, u64::from(big) + 76));
        assert_eq!(
            read_run(&large, 2),
            (3, u64::from(big) + 76, u64::from(big) + 103)
        );
    }

    /// Writes `bytes` at `offset` in place, as a crash or a bad disk would leave them, without
    /// rewriting the rest of the file (which would turn reserved space into written zeros).
    fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .write_all_at(bytes, offset)
            .unwrap();
    }

    #[test]
    fn a_segment_reserves_its_space_and_sealing_cuts_it_to_its_frames() {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes = 4096;
        let (mut log, _) = SegmentLog::open(dir.path(), segment_bytes, 1).unwrap();
        let first_path = segment_path(dir.path(), 1);
        assert_eq!(fs::metadata(&first_path).unwrap().len(), segment_bytes);
        let mut locs = Vec::new();
        while log.segments().len() < 2 {
            let appended = log.append(&bodies(2, 7)).unwrap();
            log.flush(true).unwrap();
            locs.extend(appended.locs);
        }
        let sealed_end = locs
            .iter()
            .filter(|loc| loc.segment == 1)
            .map(FrameLoc::end)
            .max()
            .unwrap();
        assert_eq!(
            fs::metadata(&first_path).unwrap().len(),
            sealed_end,
            "a sealed segment ends at its last frame"
        );
        let active = log.segments()[1].clone();
        assert_eq!(fs::metadata(&active.path).unwrap().len(), segment_bytes);
        let last = log.last_index();
        let active_end = locs.last().unwrap().end();
        drop(log);
        let (log, recovery) = SegmentLog::open(dir.path(), segment_bytes, 1).unwrap();
        assert_eq!(
            recovery,
            Recovery::default(),
            "reserved zeros are not a torn tail"
        );
        drop(log);

        // As a version that did not reserve space left it: the file ends at its last frame.
        let file = OpenOptions::new().write(true).open(&active.path).unwrap();
        file.set_len(active_end).unwrap();
        let (mut log, recovery) = SegmentLog::open(dir.path(), segment_bytes, 1).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(log.last_index(), last);
        let appended = log.append(&bodies(1, 9)).unwrap();
        log.flush(true).unwrap();
        assert_eq!(
            appended.locs[0].offset, active_end,
            "the next frame follows the last"
        );
        assert_eq!(
            log.reader().read(last + 1, appended.locs[0]).unwrap(),
            vec![9; 10]
        );
        assert_eq!(fs::metadata(&active.path).unwrap().len(), segment_bytes);
    }

    #[test]
    fn torn_batch_is_dropped_whole() {
        // A crash leaves the unwritten part of a batch as reserved zeros, or, on a file system
        // without fallocate, a file that ends inside the batch.
        for cut_file in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let segment_bytes = 1 << 20;
            let (mut log, _) = SegmentLog::open(dir.path(), segment_bytes, 1).unwrap();
            let first = log.append(&bodies(2, 1)).unwrap();
            log.flush(true).unwrap();
            let second = log.append(&bodies(3, 2)).unwrap();
            log.flush(true).unwrap();
            drop(log);
            let end_of_first = first.locs[1].end();
            // Tear inside the third frame of the second batch: its first two frames are whole.
            let torn_at = second.locs[2].end() - 3;
            let path = segment_path(dir.path(), 1);
            if cut_file {
                let file = OpenOptions::new().write(true).open(&path).unwrap();
                file.set_len(torn_at).unwrap();
            } else {
                overwrite(&path, torn_at, &[0; 3]);
            }
            let (log, recovery) = SegmentLog::open(dir.path(), segment_bytes, 1).unwrap();
            assert_eq!(
                log.last_index(),
                2,
                "the partial batch is gone, the whole one stays (cut file: {cut_file})"
            );
            assert_eq!(
                recovery.truncated,
                Some((path.clone(), end_of_first, torn_at - end_of_first))
            );
            let mut rest = vec![0xff; usize::try_from(torn_at - end_of_first).unwrap()];
            File::open(&path)
                .unwrap()
                .read_exact_at(&mut rest, end_of_first)
                .unwrap();
            assert!(
                rest.iter().all(|&byte| byte == 0),
                "the torn bytes are gone"
            );
            assert_eq!(fs::metadata(&path).unwrap().len(), segment_bytes);
        }
    }

    #[test]
    fn damage_before_a_whole_frame_is_corruption_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 1 << 20, 1).unwrap();
        for batch_idx in 0..3 {
            log.append(&bodies(1, batch_idx)).unwrap();
            log.flush(true).unwrap();
        }
        drop(log);
        let path = segment_path(dir.path(), 1);
        let flip_at = SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 2;
        overwrite(&path, flip_at, &[0x10]);
        let err = SegmentLog::open(dir.path(), 1 << 20, 1).unwrap_err();
        match err {
            Error::Corrupt { file, offset, .. } => {
                assert_eq!(file, path);
                assert_eq!(offset, SEGMENT_HEADER_BYTES);
            }
            other => panic!("expected corruption, got {other}"),
        }
    }

    #[test]
    fn a_whole_frame_across_two_scan_pieces_is_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 4 << 20, 1).unwrap();
        // The second frame's header starts 8 bytes before the end of the first piece that
        // recovery reads after the damaged frame, so its index lies in the next piece.
        let first_body = SCAN_PIECE_BYTES - FRAME_HEADER_BYTES - 8;
        log.append(&[vec![1; usize::try_from(first_body).unwrap()]])
            .unwrap();
        let second = log.append(&bodies(1, 2)).unwrap();
        log.flush(true).unwrap();
        drop(log);
        assert_eq!(
            second.locs[0].offset,
            SEGMENT_HEADER_BYTES + SCAN_PIECE_BYTES - 8
        );
        let path = segment_path(dir.path(), 1);
        overwrite(&path, SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 100, &[0]);
        match SegmentLog::open(dir.path(), 4 << 20, 1).unwrap_err() {
            Error::Corrupt { offset, .. } => assert_eq!(offset, SEGMENT_HEADER_BYTES),
            other => panic!("expected corruption, got {other}"),
        }
    }

    /// A log in a 16 MiB segment holding frames 1 and 2 (one batch each); returns where the
    /// frames end.
    fn two_frames(dir: &Path) -> u64 {
        let (mut log, _) = SegmentLog::open(dir, 16 << 20, 1).unwrap();
        log.append(&bodies(1, 1)).unwrap();
        let second = log.append(&bodies(1, 2)).unwrap();
        log.flush(true).unwrap();
        second.locs[0].end()
    }

    /// Frame `index` with an empty body and no flags, as bytes.
    fn bare_frame(index: u64) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_frame(&mut frame, index, 0, &[]);
        frame
    }

    fn assert_corrupt_at(dir: &Path, offset: u64) {
        match SegmentLog::open(dir, 16 << 20, 1) {
            Err(Error::Corrupt { offset: at, .. }) => assert_eq!(at, offset),
            Err(other) => panic!("expected corruption at {offset}, got {other}"),
            Ok(_) => panic!("expected corruption at {offset}, the log opened"),
        }
    }

    #[test]
    fn a_whole_frame_far_past_the_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 16 << 20, 1).unwrap();
        log.append(&bodies(1, 1)).unwrap();
        let big = log.append(&[vec![5; 5 << 19]]).unwrap();
        log.append(&bodies(1, 3)).unwrap();
        log.flush(true).unwrap();
        drop(log);
        let path = segment_path(dir.path(), 1);
        // Frame 3 lies 2.5 MiB after the damaged frame 2: three scan pieces later.
        overwrite(&path, big.locs[0].offset + FRAME_HEADER_BYTES + 9, &[6]);
        assert_corrupt_at(dir.path(), big.locs[0].offset);
    }

    #[test]
    fn a_whole_frame_past_reserved_space_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let end = two_frames(dir.path());
        // Frame 3, whole, 8 MiB on, with unwritten reserved space between.
        overwrite(&segment_path(dir.path(), 1), 8 << 20, &bare_frame(3));
        assert_corrupt_at(dir.path(), end);
    }

    #[test]
    fn a_whole_frame_whose_index_is_the_last_byte_not_zero_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let end = two_frames(dir.path());
        let path = segment_path(dir.path(), 1);
        // A torn frame 3, then a whole frame 3: no body, no flags, so the low byte of its index
        // is the last byte that is not zero.
        overwrite(&path, end, &[0xff; 3]);
        let frame = bare_frame(3);
        assert_eq!(frame.iter().rposition(|&byte| byte != 0), Some(8));
        overwrite(&path, end + 40, &frame);
        assert_corrupt_at(dir.path(), end);
    }

    #[test]
    fn a_stray_byte_in_reserved_space_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let end = two_frames(dir.path());
        let path = segment_path(dir.path(), 1);
        let stray_at = (4 << 20) + 5;
        overwrite(&path, stray_at, &[1]);
        let (log, recovery) = SegmentLog::open(dir.path(), 16 << 20, 1).unwrap();
        assert_eq!(log.last_index(), 2);
        assert_eq!(
            recovery.truncated,
            Some((path.clone(), end, stray_at + 1 - end))
        );
        let mut byte = [1];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut byte, stray_at)
            .unwrap();
        assert_eq!(byte, [0]);
        assert_eq!(fs::metadata(&path).unwrap().len(), 16 << 20);
    }

    #[test]
    fn written_zeros_after_the_frames_become_reserved_space_again() {
        let dir = tempfile::tempdir().unwrap();
        let end = two_frames(dir.path());
        let path = segment_path(dir.path(), 1);
        // As a copy that does not keep files sparse leaves it.
        overwrite(&path, end, &vec![0; 3 << 20]);
        let written = |path: &Path| -> u64 {
            let file = File::open(path).unwrap();
            written_ranges(&file, end, 16 << 20)
                .iter()
                .map(|(start, end)| end - start)
                .sum()
        };
        assert!(written(&path) >= 3 << 20);
        let (log, recovery) = SegmentLog::open(dir.path(), 16 << 20, 1).unwrap();
        assert_eq!(
            (log.last_index(), recovery),
            (2, Recovery::default()),
            "zeros are no torn tail"
        );
        assert!(
            written(&path) < SCAN_PIECE_BYTES,
            "the zeros are reserved space again"
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), 16 << 20);
    }

    #[test]
    fn truncate_after_cuts_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 120, 5).unwrap();
        for batch_idx in 0..8 {
            log.append(&bodies(1, batch_idx)).unwrap();
        }
        log.flush(true).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (5, 12));
        log.truncate_after(6).unwrap();
        assert_eq!(log.last_index(), 6);
        let appended = log.append(&bodies(1, 99)).unwrap();
        log.flush(true).unwrap();
        assert_eq!(
            log.reader().read(7, appended.locs[0]).unwrap(),
            vec![99; 10]
        );
        drop(log);
        let (mut log, _) = SegmentLog::open(dir.path(), 120, 5).unwrap();
        assert_eq!(log.last_index(), 7);
        assert!(
            log.truncate_after(2).is_err(),
            "cannot cut below the first index"
        );
    }

    /// A cut into a sealed segment rewrites it through a new file: a hard link to the old file
    /// (a checkpoint's) keeps every byte it had.
    #[test]
    fn truncate_after_never_cuts_a_sealed_segment_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 120, 1).unwrap();
        for batch_idx in 0..8 {
            log.append(&bodies(1, batch_idx)).unwrap();
        }
        log.flush(true).unwrap();
        let sealed = log.segments()[0].clone();
        assert!(sealed.sealed);
        let linked = dir.path().join("linked");
        std::fs::hard_link(&sealed.path, &linked).unwrap();
        let before = std::fs::read(&linked).unwrap();
        log.truncate_after(sealed.first_index).unwrap();
        assert_eq!(std::fs::read(&linked).unwrap(), before);
        assert_eq!(log.segments().len(), 1);
        assert_eq!(log.last_index(), sealed.first_index);
        let appended = log.append(&bodies(1, 77)).unwrap();
        log.flush(true).unwrap();
        assert_eq!(
            log.reader().read(2, appended.locs[0]).unwrap(),
            vec![77; 10]
        );
        drop(log);
        let (log, recovery) = SegmentLog::open(dir.path(), 120, 1).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(log.last_index(), 2);
    }

    /// Purging removes whole sealed segments up to an index, never the active one, and the
    /// log reopens starting where the purge left it.
    #[test]
    fn purge_removes_whole_sealed_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 120, 1).unwrap();
        for batch_idx in 0..12 {
            log.append(&bodies(1, batch_idx)).unwrap();
        }
        log.flush(true).unwrap();
        let firsts: Vec<u64> = log.segments().iter().map(|seg| seg.first_index).collect();
        assert!(firsts.len() > 3, "{firsts:?}");
        // An index inside the second segment removes only the first.
        assert_eq!(log.purge_through(firsts[1]).unwrap(), firsts[1]);
        assert_eq!(log.purge_through(firsts[1]).unwrap(), firsts[1]);
        // Past the end: everything but the active segment.
        let active = *firsts.last().unwrap();
        assert_eq!(log.purge_through(u64::MAX - 1).unwrap(), active);
        assert_eq!(log.last_index(), 12);
        drop(log);
        let (log, _) = SegmentLog::open(dir.path(), 120, 1).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (active, 12));
        let scanned: Vec<u64> = log.scan(active).unwrap().iter().map(|f| f.index).collect();
        assert_eq!(scanned, (active..=12).collect::<Vec<_>>());
    }

    /// Marks take no index: entries around them are numbered as if they were not there, a
    /// scan yields them flagged, a log of marks alone never rolls, and a cut drops the marks
    /// after it.
    #[test]
    fn marks_take_no_index() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 120, 1).unwrap();
        for _ in 0..20 {
            log.append_mark(b"mark").unwrap();
        }
        log.flush(true).unwrap();
        assert_eq!(log.segments().len(), 1, "marks alone never roll");
        log.append(&bodies(1, 1)).unwrap();
        log.append_mark(b"after 1").unwrap();
        log.append(&bodies(1, 2)).unwrap();
        log.append_mark(b"after 2").unwrap();
        log.flush(true).unwrap();
        assert_eq!(log.last_index(), 2);
        drop(log);
        let (mut log, recovery) = SegmentLog::open(dir.path(), 120, 1).unwrap();
        assert_eq!(recovery, Recovery::default());
        assert_eq!(log.last_index(), 2);
        let frames: Vec<(u64, bool)> = log
            .segments()
            .iter()
            .flat_map(|seg| log.scan(seg.first_index).unwrap())
            .map(|frame| (frame.index, frame.flags & FLAG_MARK != 0))
            .filter(|(_, mark)| !mark)
            .collect();
        assert_eq!(frames, [(1, false), (2, false)]);
        // A cut keeps the entries up to the index and the marks written before the next entry;
        // the entries after it go, and the marks written after those.
        log.truncate_after(1).unwrap();
        assert_eq!(log.last_index(), 1);
        let bodies_left: Vec<Vec<u8>> = log
            .segments()
            .iter()
            .flat_map(|seg| log.scan(seg.first_index).unwrap())
            .map(|frame| frame.body)
            .collect();
        assert!(bodies_left.contains(&b"after 1".to_vec()));
        assert!(!bodies_left.contains(&b"after 2".to_vec()));
        assert!(!bodies_left.contains(&vec![2u8; 10]));
    }
}
