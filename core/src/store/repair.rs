//! An operator's repair of a data directory that open refuses because a damaged frame of the
//! active segment has whole frames after it, or its frames end inside the length the last
//! clean close synced (`segment/repair.rs` says why open cannot decide these itself). Both
//! calls take the directory's lock, so neither runs beside an open store.
//!
//! A replica decides it by itself ([`open_replica`]): when its events are derived from a
//! durable log kept beside it (a cluster member's Raft log), nothing the cut removes is lost,
//! since the replica re-applies it from that log (or from a peer's snapshot). So the cut that
//! an operator must ask for on a single node is made at open, with the same quarantine, and
//! one WARN says what was cut and where it will come from again.

use std::path::{Path, PathBuf};

use crate::disk::OsDisk;
use crate::error::{Error, Result};
use crate::segment::{self, RepairPlan};
use crate::store::{Config, Store};

/// Opens the store in `dir` as a replica of `source` (named in the log, `the Raft log`): as
/// [`Store::open`], except that a damaged frame of the active segment that open refuses to cut
/// (whole frames after it, or inside the synced length) is cut as [`repair`] would (the bytes
/// quarantined first) and the store opened again. What the cut removes is applied again from `source`, which the caller
/// guarantees holds it. Any other refusal is returned as it is.
pub fn open_replica(dir: &Path, config: Config, source: &str) -> Result<Store> {
    let refusal = match Store::open(dir, config.clone()) {
        Err(refusal @ Error::Corrupt { .. }) => refusal,
        opened => return opened,
    };
    let Some(plan) = plan_repair(dir)? else {
        return Err(refusal);
    };
    let quarantine = repair(dir, &plan)?;
    let quarantine_name = quarantine
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let what = match plan.whole_after {
        Some((first_after, last_after)) => format!(
            "positions {} to {last_after} (whole frames {first_after}..={last_after} after the \
             damage included)",
            plan.first_index
        ),
        None => format!(
            "from position {} on (frames the last clean close synced)",
            plan.first_index
        ),
    };
    tracing::warn!(
        file = %plan.file_name,
        offset = plan.offset,
        bytes = plan.bytes,
        quarantine = %quarantine_name,
        "frame {} is damaged: cut {what}, {} bytes from offset {} of {}, into quarantine file \
         {}; they will be refilled from {source}",
        plan.damaged_index,
        plan.bytes,
        plan.offset,
        plan.file_name,
        quarantine_name,
    );
    Store::open(dir, config)
}

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
