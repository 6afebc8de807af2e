//! Repair: cutting the active segment at a damaged frame that open refuses to cut.
//!
//! Open refuses two such segments:
//! - a damaged frame with whole frames after it (`frame N is damaged but frame M at offset O
//!   after it is whole`): cutting there would drop whole frames, and open cannot tell a power
//!   cut that wrote pages out of order (the frames after the hole were never acknowledged,
//!   since everything acknowledged was synced before the hole's write began) from damage to
//!   acknowledged frames;
//! - whole frames that end inside the length the last clean close recorded as synced
//!   (`frame N is damaged or missing, inside the length the last clean close synced`): the
//!   frames lost were synced, so may have been acknowledged (a file cut short, a bad sector).
//!
//! An operator who knows what was lost (or who has the events on a peer or in a backup) asks
//! for the cut.
//!
//! Invariants:
//! - Nothing changes without a plan the caller has seen: [`plan_repair`] only reads, and
//!   [`repair`] refuses unless the segment still yields the same plan.
//! - The cut goes between batches (the end of the last whole batch before the damage), as
//!   recovery's does: batches stay atomic.
//! - Every byte cut is first copied, durably, to the log's `quarantine/` directory.
//! - Only the active segment is repaired: damage in a sealed segment is not a torn write, and
//!   cutting it would leave later segments after a gap.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::frame::read_frame_at;
use super::tail::{inspect_tail, next_index_at};
use super::{
    FLAG_MARK, SYNCED_FILE, check_header, file_len, file_name_of, quarantine, read_synced,
    segment_path, sync_dir,
};
use crate::disk::Disk;
use crate::error::{Error, Result};

/// What [`repair`] would cut from the active segment of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairPlan {
    /// The active segment's file name (`{first:020}.seg`).
    pub file_name: String,
    /// The active segment's first index.
    pub segment: u64,
    /// Where the file is cut: the end of the last whole batch before the damage.
    pub offset: u64,
    /// Bytes cut: from `offset` to the last byte that is not zero.
    pub bytes: u64,
    /// The first index the cut removes (the first frame of the batch the damage is in).
    pub first_index: u64,
    /// The index of the damaged frame (the `N` of the refusal).
    pub damaged_index: u64,
    /// Where the damaged frame starts.
    pub damaged_offset: u64,
    /// The first and last index of the whole frames found after the damage, which the cut
    /// removes too; `None` when there are none.
    pub whole_after: Option<(u64, u64)>,
    /// The length the last clean close synced, when the whole frames end inside it; `None`
    /// when the segment does not end short of it.
    pub synced_end: Option<u64>,
}

/// Reads the active segment of the log in `dir` and says what a repair would cut, or `None`
/// when there is nothing to repair (open handles a torn tail past the synced length by
/// itself). Changes nothing.
pub fn plan_repair(dir: &Path) -> Result<Option<RepairPlan>> {
    let Some(active_first) = newest_segment(dir)? else {
        return Ok(None);
    };
    let path = segment_path(dir, active_first);
    let file = File::open(&path).map_err(|err| Error::io(&path, err))?;
    check_header(&file, &path, active_first)?;
    let inspection = inspect_tail(&file, &path, active_first, true)?;
    let synced_end = read_synced(dir, active_first).filter(|&end| inspection.tail.end < end);
    let whole_after = match inspection.whole_frame {
        Some(later) => {
            let file_len = file_len(&file, &path)?;
            let first_after = next_index_at(&file, later);
            let mut last_after = first_after;
            let (mut offset, mut index) = (later, first_after);
            while let Some(frame) = read_frame_at(&file, file_len, offset, active_first, index) {
                offset = frame.loc.end();
                if frame.flags & FLAG_MARK == 0 {
                    last_after = index;
                    index += 1;
                }
            }
            Some((first_after, last_after))
        }
        None => None,
    };
    if whole_after.is_none() && synced_end.is_none() {
        return Ok(None);
    }
    Ok(Some(RepairPlan {
        file_name: file_name_of(&path),
        segment: active_first,
        offset: inspection.tail.end,
        bytes: inspection.tail.dirty_end - inspection.tail.end,
        first_index: inspection.tail.next_index,
        damaged_index: inspection.bad_index,
        damaged_offset: inspection.bad_offset,
        whole_after,
        synced_end,
    }))
}

/// Carries out `plan` on the log in `dir`: copies the bytes it names to `quarantine/`, removes
/// a `SYNCED` record (it describes the bytes before the cut), then cuts the active segment at
/// `plan.offset` and syncs it. Returns the quarantine file. Refused, with nothing changed, unless
/// [`plan_repair`] still gives `plan`. The caller holds the data directory's lock.
pub fn repair(disk: &dyn Disk, dir: &Path, plan: &RepairPlan) -> Result<PathBuf> {
    let current = plan_repair(dir)?;
    if current.as_ref() != Some(plan) {
        return Err(Error::InvalidInput(format!(
            "the log changed since the repair was planned (now: {current:?}); plan it again"
        )));
    }
    let path = segment_path(dir, plan.segment);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|err| Error::io(&path, err))?;
    let kept = quarantine(
        disk,
        dir,
        plan.segment,
        &file,
        &path,
        plan.offset..plan.offset + plan.bytes,
    )?;
    // The record goes before the cut: a repair stopped between the two leaves a log that open
    // cuts the same way by itself (or, with whole frames after the damage, refuses again for
    // the repair to be run again), never an intact log refused for a record it outlived.
    let synced = dir.join(SYNCED_FILE);
    if synced.exists() {
        disk.remove_file(&synced)
            .map_err(|err| Error::io(&synced, err))?;
        sync_dir(disk, dir)?;
    }
    disk.set_len(&file, &path, plan.offset)
        .and_then(|()| disk.sync_all(&file, &path))
        .map_err(|err| Error::io(&path, err))?;
    Ok(kept)
}

/// The first index of the newest segment in `dir`, read without changing anything.
fn newest_segment(dir: &Path) -> Result<Option<u64>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::io(dir, err)),
    };
    let mut newest = None;
    for entry in entries {
        let path = entry.map_err(|err| Error::io(dir, err))?.path();
        if path.extension().and_then(|ext| ext.to_str()) != Some(super::SEGMENT_EXTENSION) {
            continue;
        }
        let first = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok());
        newest = newest.max(first);
    }
    Ok(newest)
}
