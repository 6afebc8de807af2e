//! Damage at the end of the log, as a bad disk (not a crash) leaves it: what recovery says and
//! keeps when it cuts, and the operator's repair of a log that open refuses.
//!
//! Invariants checked: after a crash a damaged last frame is cut as unknown (it may have been
//! acknowledged), its bytes in `events/quarantine/` before the cut; after a clean close, frames
//! lost inside the length it synced (damaged, or the file cut short) are refused at open until
//! an operator repairs them. A log whose damaged frame has a whole frame after it is refused
//! at open; `plan_repair` names the cut
//! (positions, offset, bytes) and changes nothing; `repair` quarantines exactly those bytes,
//! refuses a plan that no longer holds, and the store then opens at the position before it.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use causeway_core::segment::{QUARANTINE_DIR, SYNCED_FILE, SegmentLog, Synced};
use causeway_core::store::{plan_repair, repair};
use causeway_core::*;

const SEGMENT_HEADER_BYTES: usize = 32;
const FRAME_HEADER_BYTES: usize = 17;

/// A store with `n_appends` appends of one event each, closed cleanly.
fn write_log(dir: &Path, n_appends: usize) {
    let store = Store::open(dir, Config::default()).unwrap();
    for append_idx in 0..n_appends {
        let payload = format!("payload-{append_idx:03}").into_bytes();
        store
            .append(Append::new(vec![NewEvent::new(
                "acme", "order-1", "Placed", payload,
            )]))
            .unwrap();
    }
}

fn segment(dir: &Path) -> PathBuf {
    dir.join("events").join(format!("{:020}.seg", 1))
}

/// The offset and length (header included) of every frame of the one segment, in order.
fn frames(dir: &Path) -> Vec<(usize, usize)> {
    let bytes = fs::read(segment(dir)).unwrap();
    let mut found = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Some(header) = bytes.get(offset..offset + FRAME_HEADER_BYTES)
        && header.iter().any(|&byte| byte != 0)
    {
        let body_len = u32::from_le_bytes(header[4..8].try_into().unwrap()) as usize;
        found.push((offset, FRAME_HEADER_BYTES + body_len));
        offset += FRAME_HEADER_BYTES + body_len;
    }
    found
}

/// Flips a byte of the last payload byte of frame `frame_idx` (from 0), leaving its CRC wrong,
/// as bit rot would; returns the segment's bytes after the flip.
fn damage(dir: &Path, frame_idx: usize) -> Vec<u8> {
    let (offset, len) = frames(dir)[frame_idx];
    let mut bytes = fs::read(segment(dir)).unwrap();
    bytes[offset + len - 1] ^= 0x01;
    fs::write(segment(dir), &bytes).unwrap();
    bytes
}

fn quarantined(dir: &Path) -> Vec<PathBuf> {
    let quarantine = dir.join("events").join(QUARANTINE_DIR);
    let mut files: Vec<PathBuf> = fs::read_dir(quarantine)
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn after_a_crash_a_damaged_last_frame_is_cut_as_maybe_acknowledged_and_kept_in_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3);
    // What a crash leaves: nothing says how far the segment was synced.
    fs::remove_file(dir.path().join("events").join(SYNCED_FILE)).unwrap();
    let (offset, len) = frames(dir.path())[2];
    let damaged = damage(dir.path(), 2);

    let (log, recovery) = SegmentLog::open(&dir.path().join("events"), 64 << 20, 1).unwrap();
    assert_eq!(log.last_index(), 2);
    drop(log);
    let cut = recovery.cut.expect("the damaged frame was cut");
    assert_eq!(cut.synced, Synced::Unknown);
    assert_eq!(
        (cut.offset, cut.bytes, cut.first_index),
        (offset as u64, len as u64, 3)
    );
    assert_eq!(cut.file_name, "00000000000000000001.seg");

    let kept = quarantined(dir.path());
    assert_eq!(kept, vec![cut.quarantine.clone()]);
    assert_eq!(fs::read(&kept[0]).unwrap(), damaged[offset..offset + len]);

    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.head(), Position(2));
    assert_eq!(store.verify().unwrap().first_break, None);
}

/// After a clean close the log knows how far its active segment was synced; frames inside
/// that length that are damaged (the last one) or gone (the file cut short, at a frame's end or
/// inside one) were synced, so may have been acknowledged. Open refuses to cut them, naming the
/// first frame lost, and leaves the record of the synced length for the repair; the repair
/// cuts there, keeping what is left in quarantine, and the store opens before it. Catches an
/// open that cuts synced frames by itself, or says nothing when a file lost whole frames.
#[test]
fn after_a_clean_close_frames_lost_inside_the_synced_length_are_refused_until_repaired() {
    enum Loss {
        DamagedLast,
        CutAtFrameEnd,
        CutInsideFrame,
    }
    for loss in [Loss::DamagedLast, Loss::CutAtFrameEnd, Loss::CutInsideFrame] {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 3);
        let synced_record = dir.path().join("events").join(SYNCED_FILE);
        assert!(
            synced_record.exists(),
            "a clean close records the synced length"
        );
        let frames = frames(dir.path());
        let (first_lost, kept_bytes) = match loss {
            Loss::DamagedLast => {
                let (offset, len) = frames[2];
                let damaged = damage(dir.path(), 2);
                (3, damaged[offset..offset + len].to_vec())
            }
            Loss::CutAtFrameEnd => {
                let (offset, len) = frames[0];
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(segment(dir.path()))
                    .unwrap();
                file.set_len((offset + len) as u64).unwrap();
                (2, Vec::new())
            }
            Loss::CutInsideFrame => {
                let (offset, len) = frames[1];
                let bytes = fs::read(segment(dir.path())).unwrap();
                let file = fs::OpenOptions::new()
                    .write(true)
                    .open(segment(dir.path()))
                    .unwrap();
                file.set_len((offset + len / 2) as u64).unwrap();
                // The cut runs to the last byte that is not zero.
                let mut left = bytes[offset..offset + len / 2].to_vec();
                while left.last() == Some(&0) {
                    left.pop();
                }
                (2, left)
            }
        };
        let before = fs::read(segment(dir.path())).unwrap();

        let refused = Store::open(dir.path(), Config::default()).unwrap_err();
        let message = refused.to_string();
        assert!(matches!(refused, Error::Corrupt { .. }), "{refused:?}");
        assert!(
            message.contains(&format!("frame {first_lost} is damaged or missing"))
                && message.contains("synced"),
            "{message}"
        );
        assert!(synced_record.exists(), "a refused open keeps the record");
        assert_eq!(
            fs::read(segment(dir.path())).unwrap(),
            before,
            "nothing cut"
        );

        let plan = plan_repair(dir.path()).unwrap().expect("a plan");
        assert_eq!(plan.damaged_index, first_lost);
        assert_eq!(plan.first_index, first_lost);
        assert_eq!(plan.whole_after, None);
        assert!(
            plan.synced_end.is_some_and(|end| end > plan.offset),
            "{plan:?}"
        );
        assert_eq!(plan.bytes, kept_bytes.len() as u64);

        let kept = repair(dir.path(), &plan).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), kept_bytes);
        assert!(!synced_record.exists(), "the repair removes the record");
        let store = Store::open(dir.path(), Config::default()).unwrap();
        assert_eq!(store.head(), Position(first_lost - 1));
        assert_eq!(store.verify().unwrap().first_break, None);
    }
}

#[test]
fn repair_cuts_what_it_planned_and_the_store_then_opens() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 4);
    assert_eq!(
        plan_repair(dir.path()).unwrap(),
        None,
        "a healthy log needs none"
    );
    let frames = frames(dir.path());
    let damaged = damage(dir.path(), 1);

    let refused = Store::open(dir.path(), Config::default()).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("frame 2 is damaged but frame 3"),
        "{refused}"
    );

    let plan = plan_repair(dir.path()).unwrap().expect("a plan");
    let cut_from = frames[1].0;
    let cut_to = frames[3].0 + frames[3].1;
    assert_eq!(plan.damaged_index, 2);
    assert_eq!(plan.damaged_offset, cut_from as u64);
    assert_eq!(plan.first_index, 2);
    assert_eq!(plan.whole_after, Some((3, 4)));
    assert_eq!(plan.offset, cut_from as u64);
    assert_eq!(plan.bytes, (cut_to - cut_from) as u64);
    assert_eq!(
        fs::read(segment(dir.path())).unwrap(),
        damaged,
        "planning changes nothing"
    );

    // A plan that no longer holds is refused with nothing changed.
    let stale = segment::RepairPlan {
        bytes: plan.bytes - 1,
        ..plan.clone()
    };
    assert!(repair(dir.path(), &stale).is_err());
    assert_eq!(fs::read(segment(dir.path())).unwrap(), damaged);

    let kept = repair(dir.path(), &plan).unwrap();
    assert_eq!(fs::read(&kept).unwrap(), damaged[cut_from..cut_to]);
    assert_eq!(quarantined(dir.path()), vec![kept]);

    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert_eq!(store.head(), Position(1));
    assert_eq!(store.verify().unwrap().first_break, None);
    store
        .append(Append::new(vec![NewEvent::new(
            "acme",
            "order-1",
            "Placed",
            b"again".to_vec(),
        )]))
        .unwrap();
    assert_eq!(store.head(), Position(2));
    // Never beside an open store: the directory's lock is taken.
    let locked = plan_repair(dir.path());
    assert!(matches!(locked, Err(Error::Locked { .. })), "{locked:?}");
}
