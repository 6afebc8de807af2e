//! Tail recovery: finding where the active segment's whole batches end after a crash, telling
//! a torn tail (cut, with nothing valid after it) from corruption (a bad frame followed by a
//! whole one), and skipping reserved space without reading it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::frame::{FrameLoc, parse_frame_header, read_frame_at};
use super::{
    FLAG_BATCH_END, FLAG_MARK, FRAME_HEADER_BYTES, SCAN_PIECE_BYTES, SEGMENT_HEADER_BYTES, file_len,
};
use crate::error::{Error, Result};

/// The valid prefix of the active segment: where its last whole batch ends.
pub(super) struct Tail {
    pub(super) end: u64,
    pub(super) next_index: u64,
    /// The end of the last byte after `end` that is not zero: `end` itself unless a batch was
    /// cut short. Zeros after the frames are reserved space, not damage.
    pub(super) dirty_end: u64,
    /// Bytes of written zeros read after the frames, where reserved space should have been.
    pub(super) zeros_read: u64,
}

/// What [`inspect_tail`] found: the valid prefix, where the frames stop being whole, and
/// whether a whole frame lies after that.
pub(super) struct Inspection {
    pub(super) tail: Tail,
    /// Where the walk of whole frames stopped: the first frame that is damaged, cut short or
    /// the zeros of reserved space.
    pub(super) bad_offset: u64,
    /// The index the frame at `bad_offset` should have.
    pub(super) bad_index: u64,
    /// The offset of a whole frame after `bad_offset`, if there is one.
    pub(super) whole_frame: Option<u64>,
}

/// Finds the end of the last whole batch in the active segment. A bad frame is a torn tail only
/// if no valid frame follows it; otherwise acknowledged data after it would be lost, so it is
/// reported as corruption. The zeros of reserved space are a bad frame with nothing after it.
pub(super) fn scan_tail(file: &File, path: &Path, first_index: u64) -> Result<Tail> {
    let inspection = inspect_tail(file, path, first_index, false)?;
    if let Some(later) = inspection.whole_frame {
        let detail = format!(
            "frame {} is damaged but frame {} at offset {later} after it is whole",
            inspection.bad_index,
            next_index_at(file, later)
        );
        return Err(Error::corrupt(path, inspection.bad_offset, detail));
    }
    Ok(inspection.tail)
}

/// Walks the active segment's whole frames and looks at what lies after them. With `to_end`,
/// the look goes on past a whole frame after the bad one to the last byte that is not zero
/// (what a repair would cut); without, it stops at that frame (open refuses anyway).
pub(super) fn inspect_tail(
    file: &File,
    path: &Path,
    first_index: u64,
    to_end: bool,
) -> Result<Inspection> {
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
    let after = scan_after(
        file,
        path,
        file_len,
        end,
        offset,
        first_index,
        next_index,
        to_end,
    )?;
    Ok(Inspection {
        tail: Tail {
            end,
            next_index: tail_index,
            dirty_end: after.dirty_end,
            zeros_read: after.zeros_read,
        },
        bad_offset: offset,
        bad_index: next_index,
        whole_frame: after.whole_frame,
    })
}

/// What lies after the last whole batch of the active segment.
pub(super) struct After {
    /// See [`Tail::dirty_end`].
    pub(super) dirty_end: u64,
    /// The offset of a whole frame after the bad one, if there is any.
    whole_frame: Option<u64>,
    /// Bytes read that were written zeros, not reserved space: after a copy that did not keep
    /// the file sparse, say. See [`Tail::zeros_read`].
    pub(super) zeros_read: u64,
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
///
/// The walk stops at the first whole frame unless `to_end` is set; then it goes on reading to
/// the last byte that is not zero, looking for no further frame.
#[allow(clippy::too_many_arguments)] // one private call site each; a struct would only rename them
pub(super) fn scan_after(
    file: &File,
    path: &Path,
    file_len: u64,
    tail_end: u64,
    bad_offset: u64,
    segment: u64,
    min_index: u64,
    to_end: bool,
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
            let candidates = if after.whole_frame.is_some() {
                0
            } else if min_index == 0 {
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
                    if !to_end {
                        return Ok(after);
                    }
                    break;
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
pub(super) fn written_ranges(file: &File, from: u64, to: u64) -> Vec<(u64, u64)> {
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

pub(super) fn next_index_at(file: &File, offset: u64) -> u64 {
    let mut index_bytes = [0u8; 8];
    file.read_exact_at(&mut index_bytes, offset + 8)
        .map(|()| u64::from_le_bytes(index_bytes))
        .unwrap_or(0)
}
