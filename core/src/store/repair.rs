//! An operator's repair of a data directory that open refuses because a damaged frame of the
//! active segment has whole frames after it (`segment/repair.rs` says why open cannot decide
//! this itself). Both calls take the directory's lock, so neither runs beside an open store.

use std::path::{Path, PathBuf};

use crate::disk::OsDisk;
use crate::error::{Error, Result};
use crate::segment::{self, RepairPlan};

/// What a repair of the store in `dir` would cut, or `None` when open needs none. Changes
/// nothing; fails with [`Error::Locked`] while a store is open on `dir`.
pub fn plan_repair(dir: &Path) -> Result<Option<RepairPlan>> {
    let events_dir = events_dir(dir)?;
    let _lock = super::recovery::lock_dir(&OsDisk, dir)?;
    segment::plan_repair(&events_dir)
}

/// Carries out `plan` (from [`plan_repair`]) on the store in `dir`: the cut bytes go to
/// `events/quarantine/` first, then the active segment is cut. Returns the quarantine file.
/// Refused, with nothing changed, if the log no longer gives the same plan.
pub fn repair(dir: &Path, plan: &RepairPlan) -> Result<PathBuf> {
    let events_dir = events_dir(dir)?;
    let _lock = super::recovery::lock_dir(&OsDisk, dir)?;
    segment::repair(&OsDisk, &events_dir, plan)
}

fn events_dir(dir: &Path) -> Result<PathBuf> {
    let events_dir = dir.join("events");
    if !segment::has_segments(&events_dir)? {
        return Err(Error::NotFound(
            "the directory holds no event log (no segment in events/)".to_string(),
        ));
    }
    Ok(events_dir)
}
