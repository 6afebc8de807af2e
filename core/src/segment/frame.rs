//! Frames: the unit a segment holds. A frame is a 17-byte header (CRC32, body length, index,
//! flags) and a body; the CRC covers everything after itself, so a frame read back whole and
//! matching its CRC is exactly what was written. [`FrameIter`] walks a segment's frames in
//! order and stops at the first bad one; it is how recovery, scans and cuts read a segment.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{FLAG_MARK, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use crate::error::{Error, Result};

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
    /// The frame's flags (`FLAG_BATCH_END`, `FLAG_MARK`).
    pub flags: u8,
    /// Where the frame lives.
    pub loc: FrameLoc,
    /// The frame body.
    pub body: Vec<u8>,
}

pub(super) fn encode_frame(out: &mut Vec<u8>, index: u64, flags: u8, body: &[u8]) {
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
pub(super) fn frame_crc(frame: &[u8]) -> u32 {
    crc32fast::hash(&frame[4..])
}

pub(super) struct FrameHeader {
    pub(super) crc: u32,
    pub(super) body_len: u32,
    pub(super) index: u64,
    pub(super) flags: u8,
}

pub(super) fn parse_frame_header(bytes: &[u8]) -> FrameHeader {
    FrameHeader {
        crc: u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")),
        body_len: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
        index: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        flags: bytes[16],
    }
}

/// Reads frames from a segment file in order, stopping with an error at the first bad one.
pub(super) struct FrameIter<'a> {
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
    pub(super) fn new(
        file: &'a File,
        path: &'a Path,
        segment: u64,
        frames_end: u64,
    ) -> FrameIter<'a> {
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
pub(super) fn read_frame_at(
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
