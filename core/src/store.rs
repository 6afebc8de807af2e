//! The event store: a segment log of events, in-memory indexes over it, and one writer thread.
//!
//! # Writes
//!
//! Every append goes through one writer thread behind a bounded queue ([`WRITE_QUEUE_MAX`]).
//! The writer takes everything that is waiting (up to [`GROUP_APPENDS_MAX`] appends), checks and
//! encodes each append as one atomic batch of frames, writes the whole group with one `write`,
//! and waits for one `fdatasync` before it answers any of them: concurrent appenders share the
//! cost of one disk flush (group commit). Only then does the committed head move, so readers
//! never see an event that a crash could take back. With [`Durability::Relaxed`] the writer
//! answers after the `write` alone: the events survive a process crash (they are in the kernel's
//! page cache) but not a power loss or kernel crash. A relaxed store's replica may also apply a
//! few small entries as one group on its own thread ([`Store::apply_group_at`]): the writer's
//! state is behind a lock its thread holds for each group, so the two never interleave.
//!
//! If a write or fsync fails the store is poisoned: the failed group is answered with the error
//! and every later append with [`Error::Poisoned`]. Retrying an fsync after a failure is unsound
//! on Linux (the kernel may have dropped the dirty pages and cleared the error), so the only way
//! forward is to reopen, which re-reads what is really on disk.
//!
//! # Determinism
//!
//! [`Store::append`] is [`Store::stamp`] (which fixes event ids and the timestamp from the
//! store's clock) followed by [`Store::apply`]. `apply` assigns everything else from the log
//! alone: positions, versions, the timestamp of each event (the command's, raised above the
//! previous event's when needed, so timestamps strictly increase along positions), correlation
//! ids and hashes. Two stores fed the same commands in the same order write byte-identical
//! segment files, which is what replication relies on: a Raft leader stamps, every replica
//! applies.
//!
//! # Recovery
//!
//! Each sealed segment has a sidecar index file (`.idx`: the header bytes of its events, without
//! payloads, and a CRC) written when it was sealed, so opening the store reads headers, not the
//! whole log. The active segment is scanned frame by frame and a torn tail is truncated (see
//! `segment.rs`). A sealed segment whose `.idx` is missing or damaged is scanned instead, and its
//! `.idx` rewritten. Frame checksums are verified on every read, so damage to a sealed segment
//! after it was indexed surfaces as [`Error::Corrupt`] naming the file and offset, never as
//! wrong data.
//!
//! # Layout
//!
//! `LOCK` (an exclusive `flock` held while open), `STORE` (the store's identity; see
//! `identity.rs`) and `events/` (segments and their `.idx`). Every directory whose entries
//! change is fsynced before the change is relied on: the parent of a new data directory, the
//! data directory once `events/` and `STORE` are in it, `events/` after each segment or `.idx`
//! is created, renamed or removed. Every write, sync and directory change goes through
//! [`Config::disk`].

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::clock::{Clock, Hlc, NonDecreasing, SystemClock, Timestamp};
use crate::command;
use crate::disk::{self, Disk, OsDisk};
use crate::error::{Error, Result};
use crate::event::{Event, EventId, Hash};
use crate::gate::{Gate, GateDefinition};
use crate::index::Index;
use crate::limits::*;
use crate::receipt::{Receipt, Signer};
use crate::segment::{Faults, SegmentLog, SegmentReader};

pub use crate::command::{
    Action, Append, Command, DcbCondition, EntryId, Expected, ExpectedVersion, SYSTEM_SCOPE,
    Settings,
};

mod checkpoint;
mod identity;
mod reads;
mod recovery;
mod registry;
mod repair;
mod verify;
mod writer;

pub use checkpoint::{MANIFEST_FILE, Manifest, ManifestFile};
pub use identity::{IDENTITY_FILE, StoreId};
pub use reads::ReadBatch;
pub(crate) use reads::check_page_limit;

/// A function told every new committed head (see [`Store::set_head_listener`]).
pub type HeadListener = Arc<dyn Fn(crate::event::Position) + Send + Sync>;

/// A [`HeadListener`] as the store keeps it.
struct Listener(HeadListener);

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeadListener")
    }
}
pub use registry::RegisteredGate;
use registry::{COMPILED_WAITING_MAX, Compiled, Installed, load_gates, load_settings};
pub use repair::{open_replica, plan_repair, repair};
pub use verify::{Break, VerifyPage, VerifyReport};

/// When an append is answered relative to the disk.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Answer after `fdatasync`: an acknowledged event survives power loss. The default.
    #[default]
    Fsync,
    /// Answer after `write`, before `fdatasync`: an acknowledged event survives a process crash
    /// but may be lost on power loss or a kernel crash. Segments are still synced when they are
    /// sealed and when the store closes.
    Relaxed,
}

/// What [`Store::apply_group_at`] did with a group.
#[derive(Debug)]
pub enum Grouped {
    /// Applied: each entry's answer, in the group's order.
    Applied(Vec<Result<Receipt>>),
    /// Nothing applied, as the writer thread was busy: the entries, unchanged.
    Busy(Vec<(EntryId, Command)>),
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct Config {
    /// When appends are answered; see [`Durability`].
    pub durability: Durability,
    /// The size at which the active segment is sealed and a new one started, between
    /// [`SEGMENT_BYTES_MIN`] and [`SEGMENT_BYTES_MAX`]. Smaller segments make sealed-segment
    /// transfer finer-grained; larger ones mean fewer files.
    pub segment_bytes: u64,
    /// The source of every timestamp and generated id. Tests inject their own.
    pub clock: Arc<dyn Clock>,
    /// Gates written in Rust by the embedding program, with the scopes and types they judge.
    /// They run beside the gates registered through the log, in name order. Every replica must
    /// be configured with the same ones, or replicas would judge differently.
    pub gates: Vec<RustGate>,
    /// Signs every receipt with Ed25519 when set.
    pub signer: Option<Signer>,
    /// Injected disk failures, for tests of the failure paths. Always `None` in production.
    pub faults: Option<Arc<Faults>>,
    /// What every write, sync and directory change goes through. Always the operating system
    /// ([`OsDisk`]) in production; tests put a [`crate::disk::SimDisk`] here to cut the power.
    pub disk: Arc<dyn Disk>,
    /// How long the writer thread polls for the next append before it sleeps, when it has just
    /// synced alone an append from [`Store::append_in_sequence`] (a client appending in
    /// sequence over a stream, nothing else waiting). Its next append then finds the writer
    /// awake instead of waking it; on a machine whose idle CPUs wake slowly that halves the
    /// client's time per append, for up to this much CPU per append. It polls only while
    /// appends come back within the window, so a client that pauses longer costs one window,
    /// and never after a group handed to the sync thread. Zero turns it off. Default
    /// [`WRITER_SPIN_US_DEFAULT`] µs.
    pub writer_spin: Duration,
}

/// A gate implemented in Rust by an embedder.
#[derive(Clone, Debug)]
pub struct RustGate {
    /// The gate's name; a registered gate with the same name is refused.
    pub name: String,
    /// The scopes it judges; all when empty.
    pub scopes: Vec<String>,
    /// The event types it judges; all when empty.
    pub types: Vec<String>,
    /// The predicate.
    pub gate: Arc<dyn Gate>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            durability: Durability::Fsync,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            clock: Arc::new(NonDecreasing::new(SystemClock::new())),
            gates: Vec::new(),
            signer: None,
            faults: None,
            disk: Arc::new(OsDisk),
            writer_spin: Duration::from_micros(WRITER_SPIN_US_DEFAULT),
        }
    }
}

/// The type of the event that registers (or replaces) a gate; its payload is the JSON of a
/// [`GateDefinition`].
pub const GATE_EVENT_REGISTERED: &str = "GateRegistered";
/// The type of the event that removes a gate; its payload is `{"name": ...}`.
pub const GATE_EVENT_REMOVED: &str = "GateRemoved";
/// The type of the event that replaces the store's [`Settings`]; its payload is their JSON.
pub const SETTINGS_EVENT_CHANGED: &str = "SettingsChanged";
/// The entity in [`SYSTEM_SCOPE`] that holds the gate history.
pub const GATES_ENTITY: &str = "gates";
/// The entity in [`SYSTEM_SCOPE`] that holds the settings history.
pub const SETTINGS_ENTITY: &str = "settings";
/// The entity in [`SYSTEM_SCOPE`] that holds denial records.
pub const DENIALS_ENTITY: &str = "denials";
/// The type of a denial record.
pub const DENIAL_EVENT_TYPE: &str = "AppendDenied";

/// An open event store. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    /// The writer's state, shared by its thread and [`Store::apply_group_at`].
    inline: Arc<Mutex<writer::Writer>>,
    sender: Mutex<Option<SyncSender<Request>>>,
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
    id: StoreId,
    _lock: File,
}

#[derive(Debug)]
struct Shared {
    index: RwLock<Index>,
    reader: SegmentReader,
    /// The committed head and the digest at it; readers see positions up to here.
    committed: Mutex<Committed>,
    head_moved: Condvar,
    /// Told each new committed head, on the thread that publishes it (see
    /// [`Store::set_head_listener`]).
    head_listener: RwLock<Option<Listener>>,
    closed: AtomicBool,
    clock: Arc<dyn Clock>,
    hlc: Hlc,
    durability: Durability,
    events_dir: PathBuf,
    /// The gates in force, by name. Only the writer changes it.
    gates: RwLock<BTreeMap<String, Installed>>,
    /// Whether `Config::gates` named any gate: code on this node, not in the log, so the store
    /// refuses replicated apply. Fixed at open.
    has_rust_gates: bool,
    /// The settings in force, rebuilt from the log. Only the writer changes them.
    settings: RwLock<Settings>,
    /// The last replicated log entry applied (see [`Store::apply_at`]), durable or not.
    applied: Mutex<Option<EntryId>>,
    /// Gates that [`Store::register_gate`] compiled on its caller's thread, waiting for the
    /// writer to decide their registration, so the writer does not parse them again: a 4 KiB
    /// expression takes tens of milliseconds to parse, and every append waits for the writer.
    /// A command applied through replication finds none here and compiles on the writer. At
    /// most [`COMPILED_WAITING_MAX`] entries; the oldest is dropped first.
    compiled: Compiled,
    /// Why the store refuses writes, once a write or sync has failed.
    poisoned: Mutex<Option<String>>,
    /// `causeway_write_queue_depth`, taken once at open (a lookup per append otherwise).
    queue_depth: metrics::Gauge,
    /// The counter of the ids this store assigns, so that they ascend (see `Ids::get`).
    ids: Mutex<uuid::ContextV7>,
}

impl Shared {
    /// Refuses every later write: what a failed write or sync left on disk is unknown.
    fn poison(&self, err: &Error) {
        let mut poisoned = self.poisoned.lock().expect("poison lock poisoned");
        if poisoned.is_none() {
            tracing::error!(%err, "write failed; the store refuses further writes until reopened");
            *poisoned = Some(err.to_string());
        }
    }

    fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().expect("poison lock poisoned").clone()
    }
}

/// What readers may see: the committed head, the log digest at it, the last replicated log
/// entry recorded at or before it, and where its frames end on disk.
#[derive(Clone, Copy, Debug)]
struct Committed {
    head: u64,
    digest: Hash,
    entry: Option<EntryId>,
    /// The segment the group ended in and the offset its frames (marks included) end at.
    end: (u64, u64),
}

struct Request {
    command: Command,
    /// The replicated log entry the command comes from, for [`Store::apply_at`].
    entry: Option<EntryId>,
    mode: Mode,
    done: Done,
    /// Whether the caller sends its next append as soon as this one is answered (see
    /// [`Store::append_in_sequence`]): the writer then polls for it after syncing this one
    /// alone.
    next_soon: bool,
}

/// What the writer does with a request besides deciding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Decide and write.
    Write,
    /// Decide and answer with the receipt it would get; write nothing.
    DryRun,
    /// A no-op whose answer comes only once everything written before it is on disk, whatever
    /// the durability mode (see [`Store::sync`]).
    Sync,
}

/// What the store calls with a request's outcome, on one of its threads, once the outcome is
/// final: after its group's fsync (with fsync durability), refusals included, since a refusal
/// may rest on events written but not yet synced.
type Done = Box<dyn FnOnce(Result<Receipt>, Spent) + Send + 'static>;

/// An answered append's events, handed back with its outcome so that the caller frees them.
///
/// The events were built on the caller's thread (decoded from its request, for a server), so
/// that is where their memory is best freed: freed on the store's thread, every string went
/// back to the caller's allocator arena under its lock, while the caller was allocating the next
/// request's. Dropping a `Spent` frees the events. It holds the events the append wrote, and is
/// empty for one that wrote none: refused, replayed for its idempotency key, or a dry run.
#[derive(Debug, Default)]
pub struct Spent(Vec<Event>);

impl Spent {
    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether a full write queue makes the caller wait or refuses at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queueing {
    Wait,
    Refuse,
}

impl Store {
    /// Opens (or creates) the store in `dir`, taking an exclusive lock on it: a second open, from
    /// this process or another, fails with [`Error::Locked`] until this store is dropped.
    ///
    /// A directory whose `STORE` file says it holds a store but whose log is gone (no segment
    /// in `events/`) is refused with [`Error::Corrupt`] naming `STORE`, rather than opened as an
    /// empty store. A log without a `STORE` file (written before the file existed) is given one.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Store> {
        let dir = dir.as_ref();
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&config.segment_bytes) {
            return Err(Error::InvalidInput(format!(
                "segment_bytes {} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                config.segment_bytes
            )));
        }
        let disk = config.disk.clone();
        disk::create_dir_all(&*disk, dir).map_err(|err| Error::io(dir, err))?;
        let lock = recovery::lock_dir(&*disk, dir)?;
        let started = Instant::now();
        let events_dir = dir.join("events");
        let known_id = identity::read(dir, &events_dir)?;
        recovery::check_newest_segment(&events_dir)?;
        let (mut log, recovery) =
            SegmentLog::open_on(disk.clone(), &events_dir, config.segment_bytes, 1)?;
        log.set_faults(config.faults.clone());
        let id = match known_id {
            Some(id) => id,
            None => identity::create(&*disk, dir, &*config.clock)?,
        };
        let (index, keys, active_idx, applied) = recovery::rebuild_index(&log)?;
        let head = index.last();
        let digest = index.digest();
        tracing::info!(
            dir = %dir.display(),
            head,
            segments = log.segments().len(),
            truncated = recovery.truncated.is_some(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened event store"
        );
        let hlc = Hlc::new(config.clock.clone());
        hlc.observe(index.last_timestamp());
        let shared = Arc::new(Shared {
            index: RwLock::new(index),
            reader: log.reader(),
            committed: Mutex::new(Committed {
                head,
                digest,
                entry: applied,
                end: log.end(),
            }),
            head_moved: Condvar::new(),
            head_listener: RwLock::new(None),
            closed: AtomicBool::new(false),
            clock: config.clock.clone(),
            hlc,
            durability: config.durability,
            events_dir,
            gates: RwLock::new(BTreeMap::new()),
            has_rust_gates: !config.gates.is_empty(),
            settings: RwLock::new(Settings::default()),
            applied: Mutex::new(applied),
            compiled: Mutex::new(Vec::new()),
            poisoned: Mutex::new(None),
            queue_depth: metrics::gauge!("causeway_write_queue_depth"),
            ids: Mutex::new(uuid::ContextV7::new()),
        });
        load_gates(&shared, &config.gates)?;
        load_settings(&shared)?;
        let sidecars = recovery::SidecarWriter::start(disk, &shared.events_dir)?;
        let (sender, receiver) = sync_channel(WRITE_QUEUE_MAX);
        let inline = Arc::new(Mutex::new(writer::Writer {
            shared: shared.clone(),
            log,
            active_idx,
            sidecars,
            keys,
            signer: config.signer,
            last_entry: applied,
            answers: std::collections::VecDeque::new(),
            spent: Vec::new(),
            closed: false,
        }));
        let thread_writer = inline.clone();
        let writer_spin = config.writer_spin;
        let writer = std::thread::Builder::new()
            .name("causeway-writer".to_string())
            .spawn(move || writer::run(thread_writer, receiver, writer_spin))
            .map_err(|err| Error::io(dir, err))?;
        Ok(Store {
            shared,
            inline,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            id,
            _lock: lock,
        })
    }

    /// The store's identity, fixed when its data directory was created (kept in `STORE`).
    pub fn id(&self) -> StoreId {
        self.id
    }

    /// The directory the store was opened on (its data directory).
    pub fn dir(&self) -> &Path {
        crate::disk::parent_dir(&self.shared.events_dir)
    }

    /// Appends events atomically and returns once they are durable (per [`Durability`]).
    pub fn append(&self, append: Append) -> Result<Receipt> {
        let command = self.stamp(append)?;
        self.submit(command, None, Mode::Write)
    }

    /// Starts an append and returns without waiting for it: stamps it, queues it for the writer
    /// and returns. The store later calls `done` with exactly what [`Store::append`] would have
    /// returned, once that is final (after the group's fsync).
    ///
    /// This is the entry point for callers that must not block, such as an async server: it
    /// does no I/O and takes only short in-memory locks, and a full write queue is refused at
    /// once with [`Error::Overloaded`] rather than waited for. An error returned here means
    /// `done` is never called. `done` runs on a thread of the store, so it must be quick and
    /// must not block (send the result on a channel); every append behind it waits for it. It
    /// also gets the append's events back as [`Spent`], to be dropped on the caller's thread.
    pub fn append_with(
        &self,
        append: Append,
        done: impl FnOnce(Result<Receipt>, Spent) + Send + 'static,
    ) -> Result<()> {
        self.append_queued(append, Box::new(done), false)
    }

    /// [`Store::append_with`] for a caller that sends its next append as soon as this one is
    /// answered, such as a client's append stream. When the writer syncs such an append alone
    /// (nothing else waiting), it polls for the next one for up to [`Config::writer_spin`]
    /// instead of sleeping, and goes on doing so while they come back within it. A caller that
    /// may pause between appends, or that has other appends in flight beside this one, uses
    /// `append_with`: the polling would cost CPU and buy nothing, and beside other work on few
    /// CPUs it takes the CPU that work needs (the server passes a stream's append here only
    /// when it is the node's only one in flight).
    pub fn append_in_sequence(
        &self,
        append: Append,
        done: impl FnOnce(Result<Receipt>, Spent) + Send + 'static,
    ) -> Result<()> {
        self.append_queued(append, Box::new(done), true)
    }

    /// [`Store::append_with`] and [`Store::append_in_sequence`]: stamps the append and queues
    /// it for the writer, refused at once if the queue is full.
    fn append_queued(&self, append: Append, done: Done, next_soon: bool) -> Result<()> {
        let command = self.stamp(append)?;
        self.enqueue(
            command,
            None,
            Mode::Write,
            done,
            Queueing::Refuse,
            next_soon,
        )
    }

    /// Validates a proposal and fixes what must come from this node: missing event ids (UUIDv7
    /// from the clock) and the proposal's hybrid logical timestamp. Refuses events in reserved
    /// (`$`) scopes. The request hash of a keyed append is taken here, before ids are assigned,
    /// so a retry that leaves ids to the store matches its first send.
    pub fn stamp(&self, append: Append) -> Result<Command> {
        command::validate_append(&append)?;
        // Only a keyed append can be retried idempotently, so only it needs the hash (a blake3
        // of every byte of the request, a large share of an append's cost).
        let request_hash = match append.idempotency_key {
            Some(_) => command::request_hash(&append),
            None => [0; 32],
        };
        let timestamp = self.shared.hlc.now()?;
        let mut append = append;
        if append.events.iter().any(|event| event.id.is_none()) {
            // One clock reading for the whole append: the counter orders ids within it.
            let wall_ns = self.shared.clock.now_wall_ns()?;
            let (seconds, nanos) = (wall_ns / 1_000_000_000, (wall_ns % 1_000_000_000) as u32);
            let context = self.shared.ids.lock().expect("id counter lock poisoned");
            for event in append.events.iter_mut().filter(|event| event.id.is_none()) {
                let ts = uuid::Timestamp::from_unix(&*context, seconds, nanos);
                event.id = Some(EventId(uuid::Uuid::new_v7(ts)));
            }
        }
        Ok(Command {
            timestamp,
            action: Action::Append {
                append,
                request_hash,
            },
        })
    }

    /// Stamps a gate registration: the id of the event it will write and the timestamp. The
    /// definition is checked (name, [`GATES_MAX`], compile) when the command is applied, by the
    /// writer, so that the decision is the same on every replica.
    pub fn stamp_gate(&self, definition: GateDefinition) -> Result<Command> {
        let (timestamp, id) = self.stamp_one()?;
        Ok(Command {
            timestamp,
            action: Action::RegisterGate { id, definition },
        })
    }

    /// Stamps a gate removal.
    pub fn stamp_gate_removal(&self, name: &str) -> Result<Command> {
        crate::gate::check_gate_name(name)?;
        let (timestamp, id) = self.stamp_one()?;
        Ok(Command {
            timestamp,
            action: Action::RemoveGate {
                id,
                name: name.to_string(),
            },
        })
    }

    /// Stamps a change of the store's [`Settings`].
    pub fn stamp_settings(&self, settings: Settings) -> Result<Command> {
        let (timestamp, id) = self.stamp_one()?;
        Ok(Command {
            timestamp,
            action: Action::Configure { id, settings },
        })
    }

    /// Applies a stamped command: the deterministic write path. Refuses a command whose events
    /// lack ids; checks every condition and gate in the writer, atomically with the write. Waits
    /// when the write queue is full; never refuses for it.
    pub fn apply(&self, command: Command) -> Result<Receipt> {
        self.check_command(&command)?;
        self.submit(command, None, Mode::Write)
    }

    /// Applies the command of replicated log entry `entry`, and records `entry` with what it
    /// writes (in the append trailer of its first event), so that [`Store::applied`] names the
    /// last entry applied after a restart.
    ///
    /// Entries must come in increasing `index` order. An entry at or below the last one applied
    /// writes nothing: it gets its original answer (the same receipt, or the same refusal)
    /// while it is among the last [`APPLIED_ANSWERS_MAX`] entries applied since the store
    /// opened, and [`Error::AlreadyApplied`] after that. Both are deterministic; a replica that
    /// replays its log after a crash starts after [`Store::applied`] and meets neither. Every other
    /// error returned is either deterministic (a refusal: an answer for the client, the same on
    /// every replica) or not (I/O, a poisoned store, a closed store): then the caller must stop
    /// applying, since this replica can no longer be trusted to match the others.
    ///
    /// A store with [`Config::gates`] refuses this with [`Error::Unreplicable`]: Rust gates are
    /// code on one node, not in the log, so replicas could judge differently.
    pub fn apply_at(&self, entry: EntryId, command: Command) -> Result<Receipt> {
        self.check_replicated(&command)?;
        self.submit(command, Some(entry), Mode::Write)
    }

    /// [`Store::apply_at`] without waiting for the answer: queues the command (waiting only
    /// while the write queue is full) and calls `done` with the answer once the writer has
    /// decided and written it. Commands queued one after another from one thread are applied
    /// in that order, so a replica can hand the writer a whole run of committed entries and
    /// let it write them in groups, instead of one round trip per entry. `done` runs on a
    /// thread of the store, under the same rules as for [`Store::append_with`]; an error
    /// returned here means `done` is never called.
    pub fn apply_at_with(
        &self,
        entry: EntryId,
        command: Command,
        done: impl FnOnce(Result<Receipt>, Spent) + Send + 'static,
    ) -> Result<()> {
        self.check_replicated(&command)?;
        self.enqueue(
            command,
            Some(entry),
            Mode::Write,
            Box::new(done),
            Queueing::Wait,
            false,
        )
    }

    /// [`Store::apply_at`] for a run of entries, decided, written and answered as one group
    /// on the caller's thread, without the hand-off to the writer thread and back that
    /// [`Store::apply_at_with`] makes: for a few small entries that hand-off costs more than
    /// deciding them. The answers come in the entries' order, under the same rules as
    /// [`Store::apply_at`]'s. Entries queued before with [`Store::apply_at_with`] must have
    /// been answered first, or this group could be decided before them.
    ///
    /// It never waits for the writer: while the writer thread is busy with requests of its
    /// own (a dry run, a sync), it applies nothing and hands the entries back as
    /// [`Grouped::Busy`], for the caller to queue behind them with [`Store::apply_at_with`].
    /// So a caller on an async runtime is never held by another client's long dry run.
    ///
    /// Only for a store without durability at ack ([`Durability::Relaxed`], a replica whose
    /// replicated log is the durable copy): with [`Durability::Fsync`] the answers would wait
    /// for the writer's sync, and this refuses with [`Error::InvalidInput`]. An error means
    /// nothing was applied.
    pub fn apply_group_at(&self, entries: Vec<(EntryId, Command)>) -> Result<Grouped> {
        if self.shared.durability != Durability::Relaxed {
            return Err(Error::InvalidInput(
                "a group is applied on the caller's thread only with relaxed durability"
                    .to_string(),
            ));
        }
        for (_, command) in &entries {
            self.check_replicated(command)?;
        }
        let Some(mut writer) = writer::try_lock(&self.inline)? else {
            return Ok(Grouped::Busy(entries));
        };
        let answers = Arc::new(Mutex::new(Vec::with_capacity(entries.len())));
        let group = entries
            .into_iter()
            .map(|(entry, command)| {
                let answers = answers.clone();
                Request {
                    command,
                    entry: Some(entry),
                    mode: Mode::Write,
                    done: Box::new(move |result, _spent| {
                        answers.lock().expect("answers lock poisoned").push(result);
                    }),
                    next_soon: false,
                }
            })
            .collect();
        writer.commit_now(group)?;
        drop(writer);
        // `commit_now` answered every request, in order, before it returned.
        let answers = std::mem::take(&mut *answers.lock().expect("answers lock poisoned"));
        Ok(Grouped::Applied(answers))
    }

    /// The last replicated log entry applied with [`Store::apply_at`], `None` before the first.
    /// After a restart it is the last one on disk: an entry that wrote events is recorded in
    /// the trailer of its first one; when the last entries of a write group wrote nothing (a
    /// refusal, a no-op), an applied mark (a frame that takes no position) records the last of
    /// them with the group. What a crash takes back was not yet durable, so `applied` may then
    /// name an earlier entry, and re-applying the entries after it reaches the same state and
    /// answers (each is decided on the same log).
    pub fn applied(&self) -> Option<EntryId> {
        *self.shared.applied.lock().expect("applied lock poisoned")
    }

    /// Makes everything applied so far durable, whatever the [`Durability`] mode, and returns
    /// the last replicated log entry applied before the call: the durable watermark. A caller
    /// that applies with [`Durability::Relaxed`] (a replica whose replicated log is the durable
    /// copy) calls this before it drops entries of that log up to the watermark. Every entry
    /// applied before the call is on disk when it returns, the ones that wrote nothing included
    /// (their effect, none, is decided by the log before them).
    pub fn sync(&self) -> Result<Option<EntryId>> {
        // Every apply_at that has returned was decided before this request is queued, so the
        // sync below covers it.
        let applied = self.applied();
        self.submit(Command::noop(), None, Mode::Sync)?;
        Ok(applied)
    }

    /// Checks an append's conditions and gates exactly as an append would, and returns the
    /// receipt it would get, without writing anything. The answer holds for the current head
    /// only: a later append may change it.
    pub fn dry_run(&self, append: Append) -> Result<Receipt> {
        let command = self.stamp(append)?;
        self.submit(command, None, Mode::DryRun)
    }

    /// Registers a gate (or replaces the one with the same name) by appending its definition to
    /// the log, so it is audited, survives restarts, and is enforced by every replica from the
    /// same position. A definition that does not compile is refused with the reason; past
    /// [`GATES_MAX`] gates, with [`Error::LimitExceeded`]. Both are decided by the writer, so
    /// racing registrations cannot pass the bound.
    pub fn register_gate(&self, definition: GateDefinition) -> Result<Receipt> {
        // Compiled here, on the caller's thread, so a definition that does not compile is
        // refused without queueing, and the writer (which every append waits for) need not
        // parse it again. The writer still decides the registration.
        let gate = definition.check()?;
        {
            let mut compiled = self.shared.compiled.lock().expect("compiled lock poisoned");
            if compiled.len() >= COMPILED_WAITING_MAX {
                compiled.remove(0);
            }
            compiled.push((definition.clone(), gate));
        }
        let command = self.stamp_gate(definition)?;
        self.submit(command, None, Mode::Write)
    }

    /// Removes a registered gate by appending a removal to the log.
    pub fn remove_gate(&self, name: &str) -> Result<Receipt> {
        let command = self.stamp_gate_removal(name)?;
        self.submit(command, None, Mode::Write)
    }

    /// Replaces the store's [`Settings`] by appending them to the log, so every replica applies
    /// the same settings from the same position.
    pub fn configure(&self, settings: Settings) -> Result<Receipt> {
        let command = self.stamp_settings(settings)?;
        self.submit(command, None, Mode::Write)
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        *self.shared.settings.read().expect("settings lock poisoned")
    }

    /// A timestamp and a fresh id for a command that writes one system event.
    fn stamp_one(&self) -> Result<(Timestamp, EventId)> {
        let timestamp = self.shared.hlc.now()?;
        let wall_ns = self.shared.clock.now_wall_ns()?;
        let (seconds, nanos) = (wall_ns / 1_000_000_000, (wall_ns % 1_000_000_000) as u32);
        let context = self.shared.ids.lock().expect("id counter lock poisoned");
        let ts = uuid::Timestamp::from_unix(&*context, seconds, nanos);
        Ok((timestamp, EventId(uuid::Uuid::new_v7(ts))))
    }

    /// Checks a replicated log entry's command before it is applied: refused with
    /// [`Error::Unreplicable`] by a store with Rust gates, which are not in the log; an append
    /// as [`Store::check_command`] checks it.
    fn check_replicated(&self, command: &Command) -> Result<()> {
        if self.shared.has_rust_gates {
            return Err(Error::Unreplicable(
                "the store has gates from Config::gates, which are not in the log".to_string(),
            ));
        }
        if let Action::Append { .. } = command.action {
            self.check_command(command)?;
        }
        Ok(())
    }

    /// Checks an append command built outside this store (by a replication leader) before it
    /// is queued.
    fn check_command(&self, command: &Command) -> Result<()> {
        if let Action::Append { append, .. } = &command.action {
            command::validate_append(append)?;
            if let Some(event_idx) = append.events.iter().position(|event| event.id.is_none()) {
                return Err(Error::InvalidInput(format!(
                    "event {event_idx} has no id; stamp the command first"
                )));
            }
        }
        // A command stamped elsewhere (by a leader) raises this node's clock, so timestamps this
        // node stamps later stay above it.
        self.shared.hlc.observe(command.timestamp);
        Ok(())
    }

    /// Queues a stamped command and waits for the writer's answer.
    fn submit(&self, command: Command, entry: Option<EntryId>, mode: Mode) -> Result<Receipt> {
        let (reply, answer) = sync_channel(1);
        let done: Done = Box::new(move |result, spent| {
            // The caller waits on `answer` until this runs, so the send cannot fail.
            let _ = reply.send((result, spent));
        });
        self.enqueue(command, entry, mode, done, Queueing::Wait, false)?;
        // The events are dropped here, on the caller's thread (see `Spent`).
        let (result, _spent) = answer
            .recv()
            .map_err(|_| Error::Poisoned("the writer thread stopped".to_string()))?;
        result
    }

    /// Hands a stamped, validated command to the writer. When this returns `Ok`, the store
    /// will call `done` exactly once (or, should its threads die, drop it uncalled).
    /// `next_soon`: see [`Request::next_soon`].
    fn enqueue(
        &self,
        command: Command,
        entry: Option<EntryId>,
        mode: Mode,
        done: Done,
        queueing: Queueing,
        next_soon: bool,
    ) -> Result<()> {
        let sender = self
            .sender
            .lock()
            .expect("sender lock poisoned")
            .clone()
            .ok_or(Error::Closed)?;
        let request = Request {
            command,
            entry,
            mode,
            done,
            next_soon,
        };
        // Counted before the send, so the writer's decrement never runs first.
        let queue_depth = &self.shared.queue_depth;
        queue_depth.increment(1.0);
        let sent = match queueing {
            Queueing::Wait => sender.send(request).map_err(|_| Error::Closed),
            Queueing::Refuse => sender.try_send(request).map_err(|err| match err {
                TrySendError::Full(_) => Error::Overloaded {
                    limit: "WRITE_QUEUE_MAX",
                    max: WRITE_QUEUE_MAX as u64,
                },
                TrySendError::Disconnected(_) => Error::Closed,
            }),
        };
        if sent.is_err() {
            queue_depth.decrement(1.0);
        }
        sent
    }

    /// How many segment files the log has and their bytes on disk.
    pub fn disk_usage(&self) -> Result<(u64, u64)> {
        crate::segment::disk_usage(&self.shared.events_dir)
    }

    /// Why the store refuses writes, if a write or sync has failed since it was opened (the
    /// store must then be reopened); `None` while it accepts them.
    pub fn refusing_writes(&self) -> Option<String> {
        self.shared.poisoned()
    }

    /// Approximate bytes of memory held by the indexes.
    pub fn index_heap_bytes(&self) -> usize {
        self.shared
            .index
            .read()
            .expect("index lock poisoned")
            .heap_bytes()
    }

    /// Stops accepting appends, lets the writer finish and sync what it has, and wakes every
    /// waiter with [`Error::Closed`]. Idempotent; dropping the store does the same.
    pub fn close(&self) -> Result<()> {
        self.sender.lock().expect("sender lock poisoned").take();
        let writer = self.writer.lock().expect("writer lock poisoned").take();
        let result = match writer {
            Some(writer) => writer
                .join()
                .unwrap_or_else(|_| Err(Error::Poisoned("the writer thread panicked".to_string()))),
            None => Ok(()),
        };
        self.shared.closed.store(true, Ordering::Release);
        let _committed = self.shared.committed.lock().expect("commit lock poisoned");
        self.shared.head_moved.notify_all();
        result
    }

    fn committed(&self) -> Committed {
        *self.shared.committed.lock().expect("commit lock poisoned")
    }

    /// Calls `listener` with every committed head from now on, starting with the current one:
    /// a waker for whoever follows the head, without a thread blocked in [`Store::wait_for`].
    /// It runs on the thread that publishes the head (the syncer or the writer), after the
    /// head is readable, once per commit group; it must be quick and must not call the store's
    /// write side. Heads only grow, but a call may race the first one: compare before use.
    pub fn set_head_listener(&self, listener: HeadListener) {
        *self
            .shared
            .head_listener
            .write()
            .expect("head listener lock poisoned") = Some(Listener(listener.clone()));
        listener(crate::event::Position(self.committed().head));
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(err) = self.close() {
            tracing::error!(%err, "closing the event store failed");
        }
    }
}
