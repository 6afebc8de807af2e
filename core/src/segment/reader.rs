//! Reading frames by location while the log is appended to: [`SegmentReader`] shares the
//! segment files with the writer and reads the frames the index points at, several adjacent
//! frames with one `pread`, checking each frame's CRC and index.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::frame::{FrameLoc, frame_crc, parse_frame_header};
use super::{FRAME_HEADER_BYTES, READ_RUN_BYTES, segment_path};
use crate::error::{Error, Result};

/// A cheap, cloneable handle that reads frames while the log is being appended to.
#[derive(Clone, Debug)]
pub struct SegmentReader {
    pub(super) dir: PathBuf,
    pub(super) files: Arc<RwLock<BTreeMap<u64, Arc<File>>>>,
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

    pub(super) fn insert(&self, first: u64, file: File) {
        self.files
            .write()
            .expect("segment file map lock poisoned")
            .insert(first, Arc::new(file));
    }

    pub(super) fn remove(&self, first: u64) {
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
pub(super) fn read_run(frames: &[(u64, FrameLoc)], start: usize) -> (usize, u64, u64) {
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
