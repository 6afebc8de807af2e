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
//! - Only the last segment (the active one) is ever written; earlier ones are sealed.
//! - Recovery truncates only a torn tail: a bad frame with no valid frame after it in the last
//!   segment. A bad frame followed by a valid one, or a bad frame in a sealed segment, is
//!   corruption and is reported with the file and offset, never skipped.
//! - Writes are buffered until [`SegmentLog::flush`]; nothing is readable through a
//!   [`SegmentReader`] before the caller has flushed it and chosen to publish it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

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

const SEGMENT_EXTENSION: &str = "seg";

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

/// One frame as read back from disk, its checksum verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's index in the log.
    pub index: u64,
    /// The frame's flags ([`FLAG_BATCH_END`]).
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
    /// Bytes of the active segment on disk plus those in `buffer`.
    active_len: u64,
    /// Frames written by `append` but not yet handed to the file.
    buffer: Vec<u8>,
    next_index: u64,
    reader: SegmentReader,
    faults: Option<Arc<Faults>>,
}

/// Syncs one segment file's written bytes to the disk (fdatasync); see
/// [`SegmentLog::sync_handle`].
#[derive(Clone, Debug)]
pub struct SyncHandle {
    file: Arc<File>,
    path: PathBuf,
    faults: Option<Arc<Faults>>,
}

impl SyncHandle {
    /// Waits until every byte written to the file before this call is on the disk.
    pub fn sync(&self) -> Result<()> {
        if let Some(faults) = &self.faults {
            faults
                .before_sync()
                .map_err(|err| Error::io(&self.path, err))?;
        }
        self.file
            .sync_data()
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
    /// [`Error::Corrupt`]. Sealed segments are not scanned here; see [`SegmentLog::scan`].
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        first_index: u64,
    ) -> Result<(SegmentLog, Recovery)> {
        fs::create_dir_all(dir).map_err(|err| Error::io(dir, err))?;
        let mut firsts = list_segments(dir)?;
        let mut recovery = Recovery::default();
        let reader = SegmentReader {
            dir: dir.to_path_buf(),
            files: Arc::default(),
        };
        if firsts.is_empty() {
            create_segment(dir, first_index)?;
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
            .append(true)
            .open(&path)
            .map_err(|err| Error::io(&path, err))?;
        let tail = scan_tail(&active, &path, active_first)?;
        let file_len = active
            .metadata()
            .map_err(|err| Error::io(&path, err))?
            .len();
        if tail.end < file_len {
            tracing::warn!(
                file = %path.display(),
                offset = tail.end,
                bytes = file_len - tail.end,
                "truncating a torn tail that was never acknowledged"
            );
            active
                .set_len(tail.end)
                .map_err(|err| Error::io(&path, err))?;
            active.sync_all().map_err(|err| Error::io(&path, err))?;
            recovery.truncated = Some((path.clone(), tail.end, file_len - tail.end));
        }
        let log = SegmentLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            firsts,
            active: Arc::new(active),
            active_len: tail.end,
            buffer: Vec::new(),
            next_index: tail.next_index,
            reader,
            faults: None,
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
        let has_frames = self.active_len > SEGMENT_HEADER_BYTES;
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

    /// Writes buffered frames to the active file and, if `durable`, waits for them to reach the
    /// disk (fdatasync). Without `durable` the bytes survive a process crash but not a power loss.
    pub fn flush(&mut self, durable: bool) -> Result<()> {
        if !self.buffer.is_empty() {
            (&*self.active)
                .write_all(&self.buffer)
                .map_err(|err| Error::io(&self.active_path(), err))?;
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
            path: self.active_path(),
            faults: self.faults.clone(),
        }
    }

    /// Injects disk failures (tests only).
    pub fn set_faults(&mut self, faults: Option<Arc<Faults>>) {
        self.faults = faults;
    }

    /// Removes every frame after `index` (keeping `index` itself), deleting later segments whole.
    /// Only an unsealed tail may be cut: the target must lie in the last two segments' range or
    /// later, since sealed history is immutable except by this call during replication repair.
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
        // Drop whole segments that start after the cut, newest first.
        while self.firsts.len() > 1 && *self.firsts.last().expect("non-empty") > index + 1 {
            let first = self.firsts.pop().expect("non-empty");
            let path = segment_path(&self.dir, first);
            self.reader.remove(first);
            fs::remove_file(&path).map_err(|err| Error::io(&path, err))?;
        }
        let first = *self.firsts.last().expect("a log has at least one segment");
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|err| Error::io(&path, err))?;
        let mut cut = SEGMENT_HEADER_BYTES;
        for frame in FrameIter::new(&file, &path, first) {
            let frame = frame?;
            if frame.index > index {
                break;
            }
            cut = frame.loc.offset + FRAME_HEADER_BYTES + u64::from(frame.loc.body_len);
        }
        file.set_len(cut).map_err(|err| Error::io(&path, err))?;
        file.sync_all().map_err(|err| Error::io(&path, err))?;
        sync_dir(&self.dir)?;
        self.active = Arc::new(file);
        self.active_len = cut;
        self.next_index = index + 1;
        Ok(())
    }

    /// Reads every frame of one segment in order, verifying each checksum. Used to rebuild
    /// indexes for a segment that has no saved index; any bad frame is [`Error::Corrupt`].
    pub fn scan(&self, first_index: u64) -> Result<Vec<Frame>> {
        let path = segment_path(&self.dir, first_index);
        let file = File::open(&path).map_err(|err| Error::io(&path, err))?;
        FrameIter::new(&file, &path, first_index).collect()
    }

    fn active_path(&self) -> PathBuf {
        segment_path(
            &self.dir,
            *self.firsts.last().expect("a log has at least one segment"),
        )
    }

    /// Seals the active segment (flushed and synced) and starts a new one at the next index.
    fn roll(&mut self) -> Result<u64> {
        self.flush(true)?;
        let sealed = *self.firsts.last().expect("a log has at least one segment");
        let first = self.next_index;
        let path = create_segment(&self.dir, first)?;
        self.active = Arc::new(
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|err| Error::io(&path, err))?,
        );
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
        let file = {
            let files = self.files.read().expect("segment file map lock poisoned");
            files.get(&loc.segment).cloned()
        };
        let path = segment_path(&self.dir, loc.segment);
        let file =
            file.ok_or_else(|| Error::NotFound(format!("segment {} is not open", path.display())))?;
        let mut bytes = vec![0u8; FRAME_HEADER_BYTES as usize + loc.body_len as usize];
        file.read_exact_at(&mut bytes, loc.offset)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    Error::corrupt(&path, loc.offset, "frame is cut short")
                }
                _ => Error::io(&path, err),
            })?;
        let header = parse_frame_header(&bytes);
        if header.body_len != loc.body_len
            || header.index != index
            || frame_crc(&bytes) != header.crc
        {
            return Err(Error::corrupt(
                &path,
                loc.offset,
                format!("frame {index} fails its checksum"),
            ));
        }
        bytes.drain(..FRAME_HEADER_BYTES as usize);
        Ok(bytes)
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

/// The path of the segment whose first index is `first_index`.
pub fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.{SEGMENT_EXTENSION}"))
}

/// Fsyncs a directory so that files created or renamed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(|err| Error::io(dir, err))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir).map_err(|err| Error::io(dir, err))? {
        let path = entry.map_err(|err| Error::io(dir, err))?.path();
        let extension = path.extension().and_then(|ext| ext.to_str());
        if extension == Some("tmp") {
            // A file a crash interrupted before it was renamed into place: never part of the log.
            fs::remove_file(&path).map_err(|err| Error::io(&path, err))?;
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

fn create_segment(dir: &Path, first_index: u64) -> Result<PathBuf> {
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
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|err| Error::io(&tmp, err))?;
    file.write_all(&header)
        .and_then(|()| file.sync_all())
        .map_err(|err| Error::io(&tmp, err))?;
    fs::rename(&tmp, &path).map_err(|err| Error::io(&path, err))?;
    sync_dir(dir)?;
    Ok(path)
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
    file_len: u64,
    offset: u64,
    next_index: u64,
    failed: bool,
}

impl<'a> FrameIter<'a> {
    fn new(file: &'a File, path: &'a Path, segment: u64) -> FrameIter<'a> {
        let file_len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        FrameIter {
            file,
            path,
            segment,
            file_len,
            offset: SEGMENT_HEADER_BYTES,
            next_index: segment,
            failed: false,
        }
    }
}

impl Iterator for FrameIter<'_> {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Result<Frame>> {
        if self.failed || self.offset >= self.file_len {
            return None;
        }
        let frame = read_frame_at(
            self.file,
            self.file_len,
            self.offset,
            self.segment,
            self.next_index,
        );
        match frame {
            Some(frame) => {
                self.offset += FRAME_HEADER_BYTES + u64::from(frame.loc.body_len);
                self.next_index += 1;
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
}

/// Finds the end of the last whole batch in the active segment. A bad frame is a torn tail only
/// if no valid frame follows it; otherwise acknowledged data after it would be lost, so it is
/// reported as corruption.
fn scan_tail(file: &File, path: &Path, first_index: u64) -> Result<Tail> {
    let file_len = file.metadata().map_err(|err| Error::io(path, err))?.len();
    let mut tail = Tail {
        end: SEGMENT_HEADER_BYTES,
        next_index: first_index,
    };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut next_index = first_index;
    while offset < file_len {
        let Some(frame) = read_frame_at(file, file_len, offset, first_index, next_index) else {
            if let Some(later) =
                find_valid_frame_after(file, file_len, offset, first_index, next_index)
            {
                let detail = format!(
                    "frame {next_index} is damaged but frame {} at offset {later} after it is whole",
                    next_index_at(file, later)
                );
                return Err(Error::corrupt(path, offset, detail));
            }
            break;
        };
        offset += FRAME_HEADER_BYTES + u64::from(frame.loc.body_len);
        next_index += 1;
        if frame.flags & FLAG_BATCH_END != 0 {
            tail = Tail {
                end: offset,
                next_index,
            };
        }
    }
    Ok(tail)
}

/// Looks for any whole frame with an index of at least `min_index` starting after `bad_offset`.
fn find_valid_frame_after(
    file: &File,
    file_len: u64,
    bad_offset: u64,
    segment: u64,
    min_index: u64,
) -> Option<u64> {
    let max_index = min_index + file_len / FRAME_HEADER_BYTES;
    let mut candidate = bad_offset + 1;
    while candidate + FRAME_HEADER_BYTES <= file_len {
        let mut index_bytes = [0u8; 8];
        if file.read_exact_at(&mut index_bytes, candidate + 8).is_ok() {
            let index = u64::from_le_bytes(index_bytes);
            if (min_index..=max_index).contains(&index)
                && read_frame_at(file, file_len, candidate, segment, index).is_some()
            {
                return Some(candidate);
            }
        }
        candidate += 1;
    }
    None
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

    #[test]
    fn torn_batch_is_dropped_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentLog::open(dir.path(), 1 << 20, 1).unwrap();
        log.append(&bodies(2, 1)).unwrap();
        log.flush(true).unwrap();
        let end_of_first = fs::metadata(segment_path(dir.path(), 1)).unwrap().len();
        log.append(&bodies(3, 2)).unwrap();
        log.flush(true).unwrap();
        drop(log);
        // Cut inside the third frame of the second batch: its first two frames are whole.
        let path = segment_path(dir.path(), 1);
        let full_len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full_len - 3)
            .unwrap();
        let (log, recovery) = SegmentLog::open(dir.path(), 1 << 20, 1).unwrap();
        assert_eq!(
            log.last_index(),
            2,
            "the partial batch is gone, the whole one stays"
        );
        assert_eq!(recovery.truncated.unwrap().1, end_of_first);
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
        let mut bytes = fs::read(&path).unwrap();
        let flip_at = SEGMENT_HEADER_BYTES as usize + FRAME_HEADER_BYTES as usize + 2;
        bytes[flip_at] ^= 0x10;
        fs::write(&path, &bytes).unwrap();
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
}
