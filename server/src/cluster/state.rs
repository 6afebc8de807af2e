//! The state machine: openraft's [`RaftStateMachine`] on the core [`Store`], plus snapshots
//! built from [`Store::checkpoint`] and installed by switching store generations.
//!
//! Directory (`<data>/raft/state/`):
//! - `CURRENT`: a metafile naming the live generation `G`. Replacing it is the one atomic step
//!   of a snapshot install.
//! - `{G:020}/store/`: the event store of generation `G`; `{G:020}/MEMBERSHIP`: a metafile with
//!   the last two memberships applied (previous and current), each with its log id.
//! - `snapshots/{S:020}/`: the newest snapshot: a store checkpoint (`events/`, `CHECKPOINT`
//!   with every file's blake3) and `SNAPSHOT` (a metafile: last log id and membership), written
//!   under `{S}.tmp` and renamed when whole.
//!
//! Invariants:
//! - Every entry goes through [`Store::apply_at`] (a blank or membership entry as a no-op), or
//!   with a few small ones before and after it through [`Store::apply_group_at`], which decides
//!   them the same way; so the store records the last applied log id with what it writes. The
//!   store runs with [`Durability::Relaxed`]: the Raft log is the durable copy, and a crash only
//!   takes back applies that are re-applied from it.
//! - A refusal ([`causeway_core::Error::is_deterministic`]) is the entry's [`Response`]; any
//!   other error from apply is returned as an I/O error, which stops the Raft node: a replica
//!   that cannot apply must not carry on and diverge.
//! - `applied_state` syncs the store and reports its durable watermark, never more.
//! - Before a membership entry at `M` is applied, the store is synced (everything before `M` is
//!   durable) and `MEMBERSHIP` becomes {previous: old, current: new}. The reported membership is
//!   `current` when its log id is within the durable watermark, else `previous`: a crash between
//!   the two writes cannot report a membership ahead of the applied state, nor lose one behind it.
//! - A received snapshot is verified once, as it arrives ([`check_received`]); its install
//!   copies the checkpoint into generation `G + 1`, writes its `MEMBERSHIP`, opens the new store
//!   and checks it holds what the snapshot says, and only then replaces `CURRENT`; a crash or a
//!   failed check before that leaves generation `G` live, and open removes every other one.
//!
//! Snapshot data is a directory on local disk ([`SnapshotDir`]): the checkpoint is already a
//! set of files with checksums, so the network layer ships those files and hands the receiving
//! state machine the directory it wrote them to.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use causeway_core::disk::{Disk, OsDisk};
use causeway_core::store::{Config, Durability};
use causeway_core::{Command, EntryId, Grouped, Signer, Store, metafile};
use futures_util::FutureExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::oneshot;
use tokio_stream::{Stream, StreamExt};

use super::codec::{self, Reader, get_log_id, get_stored_membership, put_log_id};
use super::core_error;
use super::types::{LogId, Response, SnapshotMeta, StoredMembership, TypeConfig, entry_id, log_id};
use crate::checkpoint::copy_checkpoint;
use crate::live::LiveStore;

/// A snapshot as openraft handles it: metadata and the directory holding the data.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotDir>;

/// Magic of the file naming the live store generation.
pub const CURRENT_MAGIC: [u8; 8] = *b"CWRCURR\0";
/// Magic of the membership file.
pub const MEMBERSHIP_MAGIC: [u8; 8] = *b"CWRMEMB\0";
/// Magic of a snapshot's metadata file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"CWRSNAP\0";

const CURRENT_FILE: &str = "CURRENT";
const MEMBERSHIP_FILE: &str = "MEMBERSHIP";
const SNAPSHOT_FILE: &str = "SNAPSHOT";
const SNAPSHOTS_DIR: &str = "snapshots";
/// The store's directory inside a generation.
pub const STORE_DIR: &str = "store";

/// A snapshot's bytes: a directory on local disk holding a store checkpoint and its `SNAPSHOT`
/// metadata file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDir(pub PathBuf);

/// The state machine. Clones of its [`SnapshotBuilder`] share its state.
pub struct StateMachine {
    machine: Arc<Mutex<Machine>>,
    /// Held through a whole snapshot build or install, so one never runs beside the other.
    snapshots: Arc<Mutex<()>>,
}

/// Builds a snapshot of the state machine it came from.
pub struct SnapshotBuilder {
    machine: Arc<Mutex<Machine>>,
    snapshots: Arc<Mutex<()>>,
}

/// The last two memberships applied; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Memberships {
    previous: StoredMembership,
    current: StoredMembership,
}

impl Memberships {
    /// The membership in effect at `applied`: the newest one applied at or before it.
    fn at(&self, applied: Option<&LogId>) -> StoredMembership {
        let applied_index = applied.map(|applied| applied.index);
        let current_index = self.current.log_id().as_ref().map(|id| id.index);
        if current_index <= applied_index {
            self.current.clone()
        } else {
            self.previous.clone()
        }
    }
}

pub(super) struct Machine {
    dir: PathBuf,
    generation: u64,
    store: Arc<Store>,
    /// The server's handle on `store`, switched with it when a snapshot is installed.
    live: LiveStore,
    /// The key receipts are signed with, for every store generation.
    signer: Option<Signer>,
    memberships: Memberships,
    /// The newest snapshot: its sequence number (directory name) and metadata.
    snapshot: Option<(u64, SnapshotMeta)>,
    disk: Arc<dyn Disk>,
}

impl StateMachine {
    /// Opens (or creates) the state machine in `dir`, removing what a crash left half done: a
    /// store generation other than the live one, a snapshot still under its temporary name,
    /// and snapshots older than the newest.
    pub fn open(dir: &Path) -> io::Result<StateMachine> {
        StateMachine::open_signed(dir, None)
    }

    /// Opens the state machine with a store that signs receipts with `signer` (receipts are
    /// answers, never written, so each node may sign with its own key).
    pub fn open_signed(dir: &Path, signer: Option<Signer>) -> io::Result<StateMachine> {
        let disk: Arc<dyn Disk> = Arc::new(OsDisk);
        causeway_core::disk::create_dir_all(&*disk, dir)?;
        let generation =
            match metafile::read(&dir.join(CURRENT_FILE), CURRENT_MAGIC).map_err(core_error)? {
                Some(bytes) => {
                    let mut reader = Reader::new(&bytes, "raft state generation");
                    let generation = reader.u64()?;
                    reader.finish()?;
                    generation
                }
                None => 0,
            };
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_generation = name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit());
            if is_generation && name != generation_name(generation) {
                fs::remove_dir_all(entry.path())?;
            }
        }
        let snapshots_dir = dir.join(SNAPSHOTS_DIR);
        causeway_core::disk::create_dir_all(&*disk, &snapshots_dir)?;
        let mut newest: Option<u64> = None;
        let mut stale = Vec::new();
        for entry in fs::read_dir(&snapshots_dir)? {
            let entry = entry?;
            match entry.file_name().to_string_lossy().parse::<u64>() {
                Ok(seq) => {
                    if let Some(older) = newest.filter(|&newest| newest < seq) {
                        stale.push(snapshots_dir.join(generation_name(older)));
                    }
                    if newest.is_none_or(|newest| newest < seq) {
                        newest = Some(seq);
                    } else {
                        stale.push(entry.path());
                    }
                }
                // A temporary directory of a build or install that did not finish.
                Err(_) => stale.push(entry.path()),
            }
        }
        for path in stale {
            fs::remove_dir_all(path)?;
        }
        let snapshot = match newest {
            Some(seq) => Some((
                seq,
                read_snapshot_meta(&snapshots_dir.join(generation_name(seq)))?,
            )),
            None => None,
        };
        let generation_dir = dir.join(generation_name(generation));
        let store = Arc::new(open_store(&generation_dir, signer.clone())?);
        let memberships = read_memberships(&generation_dir)?;
        Ok(StateMachine {
            machine: Arc::new(Mutex::new(Machine {
                dir: dir.to_path_buf(),
                generation,
                live: LiveStore::new(store.clone()),
                store,
                signer,
                memberships,
                snapshot,
                disk,
            })),
            snapshots: Arc::new(Mutex::new(())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        lock(&self.machine)
    }

    /// The server's handle on the store, which follows snapshot installs.
    pub fn live(&self) -> LiveStore {
        self.lock().live.clone()
    }

    /// The directory incoming snapshots are received into (under the snapshots directory, with
    /// a name that open removes if a transfer is cut short).
    pub fn incoming_dir(&self, transfer: u64) -> PathBuf {
        self.lock()
            .snapshots_dir()
            .join(format!("incoming-{transfer}.tmp"))
    }

    /// Closes the store, which syncs what it has applied.
    pub fn close(&self) -> io::Result<()> {
        self.lock().store.close().map_err(core_error)
    }

    /// The machine itself, so a test can see the response an entry got.
    #[cfg(test)]
    pub(super) fn machine_for_tests(&self) -> MutexGuard<'_, Machine> {
        self.lock()
    }
}

impl Machine {
    /// Applies one entry; see the module documentation for what is an answer and what stops
    /// the node.
    pub(super) fn apply(&mut self, entry: super::types::Entry) -> io::Result<Response> {
        let id = entry_id(&entry.log_id);
        let command = match entry.payload {
            EntryPayload::Blank => Command::noop(),
            EntryPayload::Normal(proposal) => proposal.take_command().map_err(core_error)?,
            EntryPayload::Membership(membership) => {
                self.store.sync().map_err(core_error)?;
                let memberships = Memberships {
                    previous: self.memberships.current.clone(),
                    current: StoredMembership::new(Some(entry.log_id), membership),
                };
                write_memberships(
                    &*self.disk,
                    &self.dir.join(generation_name(self.generation)),
                    &memberships,
                )?;
                self.memberships = memberships;
                Command::noop()
            }
        };
        match self.store.apply_at(id, command) {
            Ok(receipt) => Ok(Response::Applied(receipt)),
            Err(err) if err.is_deterministic() => Ok(Response::Refused(err)),
            Err(err) => Err(core_error(err)),
        }
    }

    /// Queues a normal or blank entry's command for the store's writer; its answer arrives on
    /// the returned channel.
    fn enqueue(&mut self, id: EntryId, command: Command) -> io::Result<Answer> {
        let (reply, answer) = oneshot::channel();
        self.store
            .apply_at_with(id, command, move |result, _spent| {
                let _ = reply.send(result);
            })
            .map_err(core_error)?;
        Ok(answer)
    }

    /// The durable applied log id and the membership in effect at it.
    fn applied_state(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self.store.sync().map_err(core_error)?.map(to_log_id);
        let membership = self.memberships.at(applied.as_ref());
        Ok((applied, membership))
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.dir.join(SNAPSHOTS_DIR)
    }

    fn next_snapshot_seq(&self) -> u64 {
        self.snapshot.as_ref().map_or(1, |(seq, _)| seq + 1)
    }

    /// Makes `tmp` (a whole snapshot directory) the newest snapshot, removing the one before.
    fn publish_snapshot(
        &mut self,
        seq: u64,
        tmp: &Path,
        meta: SnapshotMeta,
    ) -> io::Result<PathBuf> {
        let snapshots_dir = self.snapshots_dir();
        let path = snapshots_dir.join(generation_name(seq));
        fs::rename(tmp, &path)?;
        self.disk.sync_dir(&snapshots_dir)?;
        if let Some((old_seq, _)) = self.snapshot.replace((seq, meta)) {
            fs::remove_dir_all(snapshots_dir.join(generation_name(old_seq)))?;
        }
        Ok(path)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotDir;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        // A checkpoint reads every file of the store once: seconds for a large one, on a
        // blocking thread so the node keeps answering (heartbeats included) meanwhile.
        let machine = self.machine.clone();
        let snapshots = self.snapshots.clone();
        tokio::task::spawn_blocking(move || {
            let _alone = snapshots.lock().expect("snapshot lock poisoned");
            build(&machine)
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// The machine, locked.
fn lock(machine: &Mutex<Machine>) -> MutexGuard<'_, Machine> {
    machine.lock().expect("state machine lock poisoned")
}

/// Takes a checkpoint of the store as the newest snapshot. The machine is locked only to read
/// and publish, never through the checkpoint, so entries are applied meanwhile.
fn build(shared: &Mutex<Machine>) -> io::Result<Snapshot> {
    loop {
        let (store, memberships, seq, tmp, disk) = {
            let machine = lock(shared);
            let seq = machine.next_snapshot_seq();
            let tmp = machine
                .snapshots_dir()
                .join(format!("{}.tmp", generation_name(seq)));
            (
                machine.store.clone(),
                machine.memberships.clone(),
                seq,
                tmp,
                machine.disk.clone(),
            )
        };
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        let manifest = store.checkpoint(&tmp).map_err(core_error)?;
        let mut machine = lock(shared);
        // A membership entry applied during the checkpoint may lie inside it: the membership
        // in effect at its applied entry is then not known from the copy above. Rare; again.
        if machine.memberships != memberships {
            drop(machine);
            fs::remove_dir_all(&tmp)?;
            continue;
        }
        let last_log_id = manifest.applied.map(to_log_id);
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: memberships.at(last_log_id.as_ref()),
        };
        write_snapshot_meta(&*disk, &tmp, &meta)?;
        let path = machine.publish_snapshot(seq, &tmp, meta.clone())?;
        return Ok(Snapshot {
            meta,
            snapshot: SnapshotDir(path),
        });
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotDir;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        self.lock().applied_state()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        // Small entries are gathered while they come without waiting and applied here, on
        // this task, as one group: a hand-off to the store's writer thread and back costs more
        // than deciding a few events (docs/BENCHMARKS.md, "Small commit groups applied where
        // they commit"). From the first entry past the inline bounds on (or once the writer
        // was found busy with a client's dry run or a sync: this task never waits for it),
        // entries are handed to the writer as they come, so it writes them in groups beside
        // this thread, and are answered in order as its answers arrive; at most about
        // APPLY_PIPELINE_MAX wait at once (see there). A membership entry first waits for
        // everything before it (it syncs the store).
        let mut inline = Inline::default();
        let mut pending = Pending::new();
        loop {
            let next = match entries.next().now_or_never() {
                Some(next) => next,
                None => {
                    inline.apply(&self.machine, &mut pending)?;
                    entries.next().await
                }
            };
            let Some(item) = next else { break };
            let (entry, responder) = item?;
            if matches!(entry.payload, EntryPayload::Membership(_)) {
                inline.apply(&self.machine, &mut pending)?;
                answer_all(&mut pending).await?;
                let response = self.lock().apply(entry)?;
                if let Some(responder) = responder {
                    responder.send(response);
                }
                continue;
            }
            let bytes = match &entry.payload {
                EntryPayload::Normal(proposal) => proposal.encoded().len(),
                EntryPayload::Blank | EntryPayload::Membership(_) => 0,
            };
            let (id, command) = take_command(entry)?;
            if pending.is_empty() && inline.fits(&command, bytes, &self.lock().store) {
                inline.push(id, command, bytes, responder);
                continue;
            }
            inline.apply(&self.machine, &mut pending)?;
            let answer = self.lock().enqueue(id, command)?;
            pending.push_back((answer, responder));
            if pending.len() >= APPLY_PIPELINE_MAX {
                answer_one(&mut pending).await?;
            }
        }
        inline.apply(&self.machine, &mut pending)?;
        answer_all(&mut pending).await
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            machine: self.machine.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotDir,
    ) -> io::Result<()> {
        // Copying and opening a whole store takes seconds for a large one: on a blocking
        // thread, so the node keeps answering (heartbeats included) meanwhile. openraft applies
        // no entry until the install returns.
        let machine = self.machine.clone();
        let snapshots = self.snapshots.clone();
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || {
            let _alone = snapshots.lock().expect("snapshot lock poisoned");
            install(&machine, &meta, &snapshot.0)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let machine = self.lock();
        Ok(machine.snapshot.as_ref().map(|(seq, meta)| Snapshot {
            meta: meta.clone(),
            snapshot: SnapshotDir(machine.snapshots_dir().join(generation_name(*seq))),
        }))
    }
}

/// Installs the snapshot received into `source` as the next store generation. The machine is
/// locked only to read it and to switch to the new generation, never through the copies.
fn install(shared: &Mutex<Machine>, meta: &SnapshotMeta, source: &Path) -> io::Result<()> {
    // The service that received it ran `check_received` (blake3 of every file, the
    // metadata's last log id) before handing it over; only its file list is needed here.
    let manifest = causeway_core::store::Manifest::read(source).map_err(core_error)?;
    let (dir, generation, disk, signer) = {
        let machine = lock(shared);
        (
            machine.dir.clone(),
            machine.generation + 1,
            machine.disk.clone(),
            machine.signer.clone(),
        )
    };

    // Generation G + 1, whole and durable before CURRENT names it.
    let generation_dir = dir.join(generation_name(generation));
    if generation_dir.exists() {
        fs::remove_dir_all(&generation_dir)?;
    }
    copy_checkpoint(
        &*disk,
        source,
        &generation_dir.join(STORE_DIR),
        &manifest.files,
    )?;
    let memberships = Memberships {
        previous: meta.last_membership.clone(),
        current: meta.last_membership.clone(),
    };
    write_memberships(&*disk, &generation_dir, &memberships)?;
    // The new generation is opened and checked before CURRENT names it: a checkpoint that
    // does not open as the snapshot says leaves the old state in force.
    let store = Arc::new(open_store(&generation_dir, signer)?);
    let applied = store.applied().map(to_log_id);
    if applied != meta.last_log_id {
        let _ = store.close();
        let _ = fs::remove_dir_all(&generation_dir);
        return Err(codec::invalid(format!(
            "installed store has applied {applied:?}, the snapshot says {:?}",
            meta.last_log_id
        )));
    }
    disk.sync_dir(&dir)?;
    let (old_dir, seq, tmp) = {
        let mut machine = lock(shared);
        metafile::write(
            &*disk,
            &dir.join(CURRENT_FILE),
            CURRENT_MAGIC,
            &generation.to_le_bytes(),
        )
        .map_err(core_error)?;
        let old = std::mem::replace(&mut machine.store, store.clone());
        machine.live.replace(store);
        old.close().map_err(core_error)?;
        drop(old);
        let old_dir = dir.join(generation_name(machine.generation));
        machine.generation = generation;
        machine.memberships = memberships;
        let seq = machine.next_snapshot_seq();
        let tmp = machine
            .snapshots_dir()
            .join(format!("{}.tmp", generation_name(seq)));
        (old_dir, seq, tmp)
    };
    fs::remove_dir_all(old_dir)?;

    // Kept as this node's newest snapshot, so it can serve it in turn.
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    copy_checkpoint(&*disk, source, &tmp, &manifest.files)?;
    copy_file(
        &source.join(causeway_core::store::MANIFEST_FILE),
        &tmp.join(causeway_core::store::MANIFEST_FILE),
    )?;
    write_snapshot_meta(&*disk, &tmp, meta)?;
    lock(shared).publish_snapshot(seq, &tmp, meta.clone())?;
    Ok(())
}

/// The answer of an entry queued for the store's writer.
type Answer = oneshot::Receiver<causeway_core::Result<causeway_core::Receipt>>;

/// Entries queued for the store's writer, oldest first, each with whoever waits for its answer.
type Pending = VecDeque<(
    Answer,
    Option<openraft::storage::ApplyResponder<TypeConfig>>,
)>;

/// Entries handed to the store's writer and not yet answered, at most, plus one inline group
/// that a busy writer handed back (at most [`APPLY_INLINE_EVENTS_MAX`] entries).
const APPLY_PIPELINE_MAX: usize = 1024;

/// Events one group applied on the state machine's task may hold, at most. A group this
/// small takes tens of microseconds to decide and write, less than a hand-off to the store's
/// writer thread and back; a larger one is better written beside the task.
const APPLY_INLINE_EVENTS_MAX: usize = 64;

/// Encoded bytes of the entries of one group applied on the state machine's task, at most,
/// so that hashing and writing them holds the task for no longer than a small group.
const APPLY_INLINE_BYTES_MAX: usize = 256 * 1024;

/// The command of a normal or blank entry, with the entry's id.
fn take_command(entry: super::types::Entry) -> io::Result<(EntryId, Command)> {
    let id = entry_id(&entry.log_id);
    let command = match entry.payload {
        EntryPayload::Normal(proposal) => proposal.take_command().map_err(core_error)?,
        EntryPayload::Blank | EntryPayload::Membership(_) => Command::noop(),
    };
    Ok((id, command))
}

/// The events `command` counts for: an append's, one for a no-op; `None` for a command that
/// changes gates or settings, which is never applied on the state machine's task.
fn events_of(command: &Command) -> Option<usize> {
    match &command.action {
        causeway_core::Action::Append { append, .. } => Some(append.events.len()),
        causeway_core::Action::Noop => Some(1),
        _ => None,
    }
}

/// Entries gathered to be applied together on the state machine's task
/// ([`Store::apply_group_at`]), within [`APPLY_INLINE_EVENTS_MAX`] and
/// [`APPLY_INLINE_BYTES_MAX`].
#[derive(Default)]
struct Inline {
    entries: Vec<(EntryId, Command)>,
    responders: Vec<Option<openraft::storage::ApplyResponder<TypeConfig>>>,
    events: usize,
    bytes: usize,
}

impl Inline {
    /// Whether `command` (`bytes` encoded) still fits in the group. Never while a gate is
    /// registered: a gate may take milliseconds per append (`GATE_EVAL_STEPS_MAX`), and a group
    /// of them would hold the task that also sends heartbeats; the writer thread judges them.
    fn fits(&self, command: &Command, bytes: usize, store: &Store) -> bool {
        events_of(command).is_some_and(|events| {
            self.events + events <= APPLY_INLINE_EVENTS_MAX
                && self.bytes + bytes <= APPLY_INLINE_BYTES_MAX
                && !store.has_gates()
        })
    }

    fn push(
        &mut self,
        id: EntryId,
        command: Command,
        bytes: usize,
        responder: Option<openraft::storage::ApplyResponder<TypeConfig>>,
    ) {
        self.events += events_of(&command).unwrap_or(0);
        self.bytes += bytes;
        self.entries.push((id, command));
        self.responders.push(responder);
    }

    /// Applies the gathered entries as one group and answers them; a refusal is an answer,
    /// any other failure stops the node. While the store's writer thread is busy with
    /// requests of its own (a client's dry run, a sync), the entries are queued behind them
    /// into `pending` instead: this task never waits for the writer.
    fn apply(&mut self, machine: &Mutex<Machine>, pending: &mut Pending) -> io::Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.entries);
        self.events = 0;
        self.bytes = 0;
        let grouped = lock(machine)
            .store
            .apply_group_at(entries)
            .map_err(core_error)?;
        match grouped {
            Grouped::Applied(answers) => {
                for (answer, responder) in answers.into_iter().zip(self.responders.drain(..)) {
                    respond(answer, responder)?;
                }
            }
            Grouped::Busy(entries) => {
                let mut machine = lock(machine);
                for ((id, command), responder) in entries.into_iter().zip(self.responders.drain(..))
                {
                    pending.push_back((machine.enqueue(id, command)?, responder));
                }
            }
        }
        Ok(())
    }
}

/// Waits for the oldest queued entry's answer and sends it to its client: a refusal is an
/// answer; any other failure stops the node.
async fn answer_one(pending: &mut Pending) -> io::Result<()> {
    let Some((answer, responder)) = pending.pop_front() else {
        return Ok(());
    };
    let result = answer
        .await
        .map_err(|_| codec::invalid("the store's writer stopped before answering".to_string()))?;
    respond(result, responder)
}

/// Sends an applied entry's answer to its client: a refusal is an answer; any other failure
/// stops the node.
fn respond(
    answer: causeway_core::Result<causeway_core::Receipt>,
    responder: Option<openraft::storage::ApplyResponder<TypeConfig>>,
) -> io::Result<()> {
    let response = match answer {
        Ok(receipt) => Response::Applied(receipt),
        Err(err) if err.is_deterministic() => Response::Refused(err),
        Err(err) => return Err(core_error(err)),
    };
    if let Some(responder) = responder {
        responder.send(response);
    }
    Ok(())
}

async fn answer_all(pending: &mut Pending) -> io::Result<()> {
    while !pending.is_empty() {
        answer_one(pending).await?;
    }
    Ok(())
}

/// Checks a snapshot received into `dir` against its metadata before anything is installed:
/// the checkpoint's manifest parses, every file it names is there with its length and blake3
/// and nothing else is, and it holds entries exactly through the metadata's last log id.
pub fn check_received(dir: &Path, meta: &SnapshotMeta) -> io::Result<()> {
    let manifest = causeway_core::store::Manifest::read(dir).map_err(core_error)?;
    manifest.verify(dir).map_err(core_error)?;
    if manifest.applied.map(to_log_id) != meta.last_log_id {
        return Err(codec::invalid(format!(
            "snapshot checkpoint holds entries through {:?}, its metadata says {:?}",
            manifest.applied, meta.last_log_id
        )));
    }
    Ok(())
}

/// The directory name of store generation (or snapshot) `generation`.
pub fn generation_name(generation: u64) -> String {
    format!("{generation:020}")
}

fn to_log_id(entry: EntryId) -> LogId {
    log_id(entry.term, entry.index)
}

fn open_store(generation_dir: &Path, signer: Option<Signer>) -> io::Result<Store> {
    let config = Config {
        durability: Durability::Relaxed,
        signer,
        ..Config::default()
    };
    // The store is derived from the Raft log: a damaged tail is cut and re-applied from it.
    causeway_core::store::open_replica(&generation_dir.join(STORE_DIR), config, "the Raft log")
        .map_err(core_error)
}

fn read_memberships(generation_dir: &Path) -> io::Result<Memberships> {
    let Some(bytes) = metafile::read(&generation_dir.join(MEMBERSHIP_FILE), MEMBERSHIP_MAGIC)
        .map_err(core_error)?
    else {
        return Ok(Memberships::default());
    };
    let mut reader = Reader::new(&bytes, "raft membership file");
    let previous = get_stored_membership(&mut reader)?;
    let current = get_stored_membership(&mut reader)?;
    reader.finish()?;
    Ok(Memberships { previous, current })
}

fn write_memberships(
    disk: &dyn Disk,
    generation_dir: &Path,
    memberships: &Memberships,
) -> io::Result<()> {
    let mut payload = Vec::new();
    codec::put_stored_membership(&mut payload, &memberships.previous);
    codec::put_stored_membership(&mut payload, &memberships.current);
    metafile::write(
        disk,
        &generation_dir.join(MEMBERSHIP_FILE),
        MEMBERSHIP_MAGIC,
        &payload,
    )
    .map_err(core_error)
}

fn read_snapshot_meta(dir: &Path) -> io::Result<SnapshotMeta> {
    let bytes = metafile::read(&dir.join(SNAPSHOT_FILE), SNAPSHOT_MAGIC)
        .map_err(core_error)?
        .ok_or_else(|| {
            codec::invalid(format!("snapshot {} has no SNAPSHOT file", dir.display()))
        })?;
    decode_snapshot_meta(&bytes)
}

/// Decodes a snapshot's metadata (the payload of its `SNAPSHOT` file, and of the header of a
/// snapshot transfer).
pub fn decode_snapshot_meta(bytes: &[u8]) -> io::Result<SnapshotMeta> {
    let mut reader = Reader::new(bytes, "raft snapshot metadata");
    let last_log_id = get_log_id(&mut reader)?;
    let last_membership = get_stored_membership(&mut reader)?;
    reader.finish()?;
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
    })
}

/// Encodes a snapshot's metadata: its last log id and membership.
pub fn encode_snapshot_meta(meta: &SnapshotMeta) -> Vec<u8> {
    let mut payload = Vec::new();
    put_log_id(&mut payload, meta.last_log_id.as_ref());
    codec::put_stored_membership(&mut payload, &meta.last_membership);
    payload
}

fn write_snapshot_meta(disk: &dyn Disk, dir: &Path, meta: &SnapshotMeta) -> io::Result<()> {
    let payload = encode_snapshot_meta(meta);
    metafile::write(disk, &dir.join(SNAPSHOT_FILE), SNAPSHOT_MAGIC, &payload).map_err(core_error)
}

fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    fs::copy(from, to)?;
    fs::File::open(to)?.sync_all()
}
