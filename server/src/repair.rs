//! `causewayd repair --data-dir DIR --truncate-at-frame N [--yes]`: the operator's way past a
//! store that open refuses because frame N of the active segment is damaged while a frame
//! after it is whole, or is damaged or missing inside the length the last clean close synced
//! (`docs/OPERATIONS.md`, "Repairing a damaged log").
//!
//! It plans first (`causeway_core::store::plan_repair`, which only reads) and prints exactly
//! what a cut would remove: the positions, the offset and the bytes. N must be the damaged
//! frame open named, so an operator cannot cut at a frame they did not read about. Without
//! `--yes` it changes nothing and exits 2; with it, the bytes go to `events/quarantine/`
//! first, then the segment is cut, and the store opens at the position before the cut. Both
//! steps take the data directory's lock, so the server must be stopped.
//!
//! A cluster member's data directory is refused: its store is rebuilt from its peers (remove
//! the node, clear its data, add it again); repairing it in place from its peers is not done.

use std::path::PathBuf;
use std::process::ExitCode;

use causeway_core::segment::RepairPlan;
use causeway_core::store::{plan_repair, repair};

/// Exit status when the plan was printed and nothing changed (no `--yes`).
const EXIT_PLANNED: u8 = 2;

/// What `causewayd repair` is asked to cut.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct RepairArgs {
    /// The data directory of a stopped single-node server.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The damaged frame (its position) that open named: "frame N is damaged ...".
    #[arg(long, value_name = "N")]
    pub truncate_at_frame: u64,
    /// Cut: without it, the plan is printed and nothing changes.
    #[arg(long)]
    pub yes: bool,
}

/// Runs `causewayd repair` if that is the command line, and returns its exit status.
pub fn run_if_requested() -> Option<ExitCode> {
    use clap::Parser as _;
    let Some(crate::restore::Command::Repair(args)) = crate::config::Args::parse().command else {
        return None;
    };
    Some(match run(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("causewayd repair: {err}");
            ExitCode::FAILURE
        }
    })
}

fn run(args: &RepairArgs) -> Result<ExitCode, String> {
    if args.data_dir.join("raft").exists() {
        return Err(format!(
            "{} is a cluster member's data directory; rebuild it from its peers instead \
             (remove the node, clear its data, add it again)",
            args.data_dir.display()
        ));
    }
    let plan = plan_repair(&args.data_dir)
        .map_err(|err| err.to_string())?
        .ok_or_else(|| {
            "nothing to repair: the event log's active segment has no damaged frame with a \
             whole frame after it, and its frames reach the length the last clean close \
             synced (a torn tail alone is cut and quarantined by open)"
                .to_string()
        })?;
    if plan.damaged_index != args.truncate_at_frame {
        return Err(format!(
            "frame {} is not the damaged frame: frame {} is (at offset {} of {}); nothing changed",
            args.truncate_at_frame, plan.damaged_index, plan.damaged_offset, plan.file_name
        ));
    }
    print!("{}", describe(&plan));
    if !args.yes {
        println!("nothing changed; run again with --yes to cut");
        return Ok(ExitCode::from(EXIT_PLANNED));
    }
    let kept = repair(&args.data_dir, &plan).map_err(|err| err.to_string())?;
    println!(
        "cut {} bytes at offset {} of events/{}; the bytes are in events/quarantine/{}; the \
         store now ends at position {}",
        plan.bytes,
        plan.offset,
        plan.file_name,
        causeway_core::segment::file_name_of(&kept),
        plan.first_index - 1
    );
    Ok(ExitCode::SUCCESS)
}

/// The plan, as the lines an operator reads before saying yes.
fn describe(plan: &RepairPlan) -> String {
    let synced = plan.synced_end.map_or(String::new(), |end| {
        format!(", inside the {end} bytes the last clean close synced")
    });
    let (found, cut) = match plan.whole_after {
        Some((first_after, last_after)) => (
            format!("is damaged; whole frames {first_after} to {last_after} follow it{synced}"),
            format!("positions {} to {last_after}", plan.first_index),
        ),
        None => (
            format!("is damaged or missing{synced}"),
            format!("from position {} on", plan.first_index),
        ),
    };
    format!(
        "events/{file}: frame {damaged} at offset {damaged_offset} {found}\n\
         will cut {cut}: {bytes} bytes from offset {offset} (the end of the last whole \
         batch), copied first to events/quarantine/\n\
         events at these positions may have been acknowledged: if another copy holds them (a \
         cluster peer, a backup), compare before cutting\n",
        file = plan.file_name,
        damaged = plan.damaged_index,
        damaged_offset = plan.damaged_offset,
        bytes = plan.bytes,
        offset = plan.offset,
    )
}
