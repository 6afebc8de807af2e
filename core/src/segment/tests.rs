//! The segment log through its API: round trips across rolls, reads of runs, recovery of
//! torn tails and corruption, cuts, purges and marks.

#![allow(clippy::unwrap_used)]

use super::reader::read_run;
use super::tail::written_ranges;
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
    let at =
        |locs: &[FrameLoc]| -> Vec<(u64, FrameLoc)> { locs.iter().map(|loc| (0, *loc)).collect() };
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

/// A cut inside a batch is refused and changes nothing: the kept frames would lack their
/// batch's end marker, and the next open would drop them as a torn tail.
#[test]
fn truncate_after_refuses_a_cut_inside_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = SegmentLog::open(dir.path(), 4096, 1).unwrap();
    log.append(&bodies(3, 1)).unwrap();
    log.append(&bodies(2, 2)).unwrap();
    log.flush(true).unwrap();
    assert!(matches!(
        log.truncate_after(2),
        Err(Error::InvalidInput(message)) if message.contains("inside a batch")
    ));
    assert_eq!(log.last_index(), 5);
    log.truncate_after(3).unwrap();
    assert_eq!(log.last_index(), 3);
    drop(log);
    let (log, recovery) = SegmentLog::open(dir.path(), 4096, 1).unwrap();
    assert_eq!(recovery, Recovery::default());
    assert_eq!(log.last_index(), 3);
}
