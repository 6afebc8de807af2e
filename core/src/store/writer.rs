//! The writer: the only code that changes the log, and the place where conditions and gates
//! are decided. It runs on its own thread, and for a replica's small groups
//! ([`super::Store::apply_group_at`]) on the caller's thread, under a lock the two share.
//!
//! For each command the writer runs, in order: the idempotency check (a known key with the same
//! request replays the original receipt; with a different request it is refused), the id check,
//! expected versions, the DCB condition, causation existence, and the gates. All of them read
//! the index as it stands after every earlier command, including earlier commands of the same
//! group that are written but not yet synced, so there is no window between check and act. Only
//! when all pass are the events hashed, encoded, written and indexed. A refusal writes nothing of
//! the proposal; with the `record_denials` setting (kept in the log) it writes an audit event
//! instead.
//!
//! Everything a command's outcome depends on is in the command or the log, never the clock or
//! the node, so every replica applying the same commands reaches the same outcomes and bytes.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::reads::{StoreView, read_at, read_position};
use super::recovery::{IdxBuffer, KeyEntry, Keys, SidecarWriter};
use super::{
    Action, Append, Committed, DENIAL_EVENT_TYPE, DENIALS_ENTITY, Done, EntryId, ExpectedVersion,
    GATE_EVENT_REGISTERED, GATE_EVENT_REMOVED, GATES_ENTITY, Mode, Request, SETTINGS_ENTITY,
    SETTINGS_EVENT_CHANGED, SYSTEM_SCOPE, Settings, Shared, Spent,
};
use crate::clock::Timestamp;
use crate::codec::{self, Trailer};
use crate::command;
use crate::error::{Error, Result};
use crate::event::{Event, EventId, Hash, NewEvent, Position, Version};
use crate::gate::{Budget, Denial, GateDefinition, Proposal, View};
use crate::limits::{
    APPLIED_ANSWERS_MAX, GATE_EVAL_STEPS_MAX, GATES_MAX, GROUP_APPENDS_MAX, SYNCER_GROUPS_MAX,
};
use crate::receipt::{self, GatePass, Receipt, Signer};
use crate::segment::{self, SegmentLog};
use crate::syncer::{Group, Syncer};

/// The writer's per-append maps, keyed by scope and entity: hashed with foldhash, which costs
/// a fraction of std's SipHash on short keys. foldhash does not claim HashDoS resistance, but
/// a map lives for one append and holds at most `APPEND_EVENTS_MAX` keys of that append, with
/// a seed chosen per process; the index's long-lived maps keep SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A written group on its way to the disk: what the syncer answers once it is durable.
pub(super) struct Pending {
    /// The head and digest after the group, when it wrote anything.
    committed: Option<Committed>,
    /// Each request's callback, outcome, and the events it wrote, handed back with the answer.
    answers: Vec<(Done, Result<Receipt>, Spent)>,
}

/// What an applied entry was answered, kept compact: an append's receipt is read back from
/// its events, as an idempotent retry's is.
pub(super) enum Answered {
    /// It wrote events; `key` finds them.
    Wrote(KeyEntry),
    /// It wrote no event and was answered this receipt (a no-op).
    Empty(Receipt),
    /// It was refused.
    Refused(Error),
}

/// Publishes the head of groups whose bytes are durable (per the durability mode) and answers
/// their requests in order. After a failed sync, or once the store is poisoned, no request of
/// them is answered with success: nothing says their bytes are durable.
fn finish(shared: &Shared, groups: Vec<Pending>, synced: Result<()>) {
    if let Err(err) = &synced {
        shared.poison(err);
    }
    let poisoned = shared.poisoned();
    if poisoned.is_none()
        && let Some(committed) = groups.iter().rev().find_map(|group| group.committed)
    {
        *shared.committed.lock().expect("commit lock poisoned") = committed;
        shared.head_moved.notify_all();
        let listener = shared
            .head_listener
            .read()
            .expect("head listener lock poisoned");
        if let Some(super::Listener(listener)) = listener.as_ref() {
            listener(Position(committed.head));
        }
    }
    for group in groups {
        for (done, answer, spent) in group.answers {
            let answer = match (&poisoned, answer) {
                (Some(why), Ok(_)) => Err(Error::Poisoned(why.clone())),
                (_, answer) => answer,
            };
            // `done` is the caller's code; a panic in it must not stop the store for everyone.
            if catch_unwind(AssertUnwindSafe(|| done(answer, spent))).is_err() {
                tracing::error!("an append's completion callback panicked");
            }
        }
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) log: SegmentLog,
    pub(super) active_idx: IdxBuffer,
    pub(super) sidecars: SidecarWriter,
    pub(super) keys: Keys,
    pub(super) signer: Option<Signer>,
    /// The events of the append just written, handed back with its answer (see [`Spent`]); an
    /// audit event of a refusal is not among them.
    pub(super) spent: Vec<Event>,
    /// The last replicated log entry recorded in a trailer written so far.
    pub(super) last_entry: Option<EntryId>,
    /// The answers of the last [`APPLIED_ANSWERS_MAX`] entries applied since open, oldest
    /// first, for an entry offered again.
    pub(super) answers: std::collections::VecDeque<(EntryId, Answered)>,
    /// Set once the writer thread has stopped: nothing may be written after it.
    pub(super) closed: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// Locks the writer shared by its thread and callers that apply on their own thread.
pub(super) fn lock(writer: &Mutex<Writer>) -> Result<MutexGuard<'_, Writer>> {
    writer
        .lock()
        .map_err(|_| Error::Poisoned("the writer panicked".to_string()))
}

/// Locks the writer unless another thread holds it: `None` while it is busy.
pub(super) fn try_lock(writer: &Mutex<Writer>) -> Result<Option<MutexGuard<'_, Writer>>> {
    match writer.try_lock() {
        Ok(guard) => Ok(Some(guard)),
        Err(std::sync::TryLockError::WouldBlock) => Ok(None),
        Err(std::sync::TryLockError::Poisoned(_)) => {
            Err(Error::Poisoned("the writer panicked".to_string()))
        }
    }
}

/// The writer thread: takes requests in groups from `receiver` and commits them. `spin` is
/// [`super::Config::writer_spin`].
pub(super) fn run(
    writer: Arc<Mutex<Writer>>,
    receiver: Receiver<Request>,
    spin: Duration,
) -> Result<()> {
    let shared = lock(&writer)?.shared.clone();
    let durable = shared.durability == super::Durability::Fsync;
    // With fsync durability a second thread syncs and answers each written group while
    // this one decides and writes the next (a pipelined group commit, `syncer.rs`): the
    // disk's latency no longer adds to the writer's work. Four groups may wait, so the
    // writer runs at most five groups ahead of the disk, and the syncer syncs all that
    // wait with one call; past that, appends gather in the write queue. With room for one
    // group the writer stalled behind every slow fsync: 1 event at 64 in flight ran about
    // a tenth slower (docs/BENCHMARKS.md, sixth pass).
    let finish_shared = shared.clone();
    let mut syncer = Syncer::start(
        "causeway-sync",
        SYNCER_GROUPS_MAX,
        durable,
        Box::new(move |groups, synced| finish(&finish_shared, groups, synced)),
    )
    .map_err(|err| Error::io(&shared.events_dir, err))?;
    let queue_depth = shared.queue_depth.clone();
    let group_appends = metrics::histogram!("causeway_commit_group_appends");
    // A request that arrived while the last group was written, taken to learn whether
    // anything waits: it starts the next group.
    let mut next = None;
    // How long to poll before sleeping for the next request: `spin` while one client's
    // appends come back to this thread within it (see `Config::writer_spin`), else zero.
    let mut poll = Duration::ZERO;
    // Whether the last group was synced on this thread and came from a caller that sends its
    // next append at once (`Store::append_in_sequence`), as one client's stream does.
    let mut lone = false;
    loop {
        let first = match next.take() {
            Some(request) => request,
            None => {
                let Some((request, waited)) = receive(&receiver, poll) else {
                    break;
                };
                poll = spin_next(spin, lone, waited);
                request
            }
        };
        let mut group = vec![first];
        while group.len() < GROUP_APPENDS_MAX {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        queue_depth.decrement(group.len() as f64);
        let next_soon = group.iter().any(|request| request.next_soon);
        group_appends.record(group.len() as f64);
        // Held until the group is handed on: without durability `submit` finishes it here,
        // and a group applied on another thread ([`Writer::commit_now`]) must not publish a
        // later head before this one's.
        let mut this = lock(&writer)?;
        let (sync, pending) = this.commit_group(group, durable);
        let group = Group {
            sync,
            payload: pending,
        };
        // Nothing waiting: sync this group here unless the syncer is still busy with
        // earlier ones (one sequential client then crosses two threads, not three). With
        // more waiting, the syncer syncs while this thread writes the next group.
        lone = match receiver.try_recv() {
            Ok(request) => {
                next = Some(request);
                syncer.submit(group);
                false
            }
            Err(_) => syncer.submit_idle(group) && next_soon,
        };
        if !lone {
            poll = Duration::ZERO;
        }
        drop(this);
    }
    syncer.close();
    let mut this = lock(&writer)?;
    // Nothing is written after the close below, on this thread or any other.
    this.closed = true;
    this.sidecars.finish();
    // Closing: make sure everything written is on disk, whatever the durability mode, and
    // record how far, so the next open can tell damage to these frames from a torn write.
    if shared.poisoned().is_none() {
        this.log.record_synced()?;
    }
    Ok(())
}

/// Takes the next request: polls the queue for up to `poll` before sleeping on it. Gives the
/// request and how long it took to come, or `None` once every sender is gone.
///
/// Polling keeps this thread on its CPU while a lone client's answer goes out and its next
/// append comes in. On the 2-CPU machine of docs/BENCHMARKS.md a thread that sleeps there is
/// woken late, because the CPU it slept on went idle and answers slowly: one client in
/// sequence did about half the appends per second ("A writer that waits awake").
fn receive<T>(receiver: &Receiver<T>, poll: Duration) -> Option<(T, Duration)> {
    let start = Instant::now();
    if !poll.is_zero() {
        loop {
            match receiver.try_recv() {
                Ok(item) => return Some((item, start.elapsed())),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            if start.elapsed() >= poll {
                break;
            }
            std::hint::spin_loop();
        }
    }
    let item = receiver.recv().ok()?;
    Some((item, start.elapsed()))
}

/// How long to poll for the request after this one: `spin` when the last group was synced on
/// this thread and came from [`super::Store::append_in_sequence`] (one client's stream,
/// nothing else waiting) and this request came within `spin`, so that the client is likely to
/// be back within it again; zero otherwise. A client that pauses longer stops the polling after
/// one window, and a group handed to the sync thread stops it at once.
fn spin_next(spin: Duration, lone: bool, waited: Duration) -> Duration {
    if lone && waited <= spin {
        spin
    } else {
        Duration::ZERO
    }
}

impl Writer {
    /// Decides, writes and answers `group` on the caller's thread. Only without durability
    /// at ack ([`super::Durability::Relaxed`]), where no sync stands between writing and
    /// answering.
    pub(super) fn commit_now(&mut self, group: Vec<Request>) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        let (_sync, pending) = self.commit_group(group, false);
        finish(&self.shared, vec![pending], Ok(()));
        Ok(())
    }

    /// Decides and writes (without syncing) every request of a group.
    fn commit_group(
        &mut self,
        group: Vec<Request>,
        durable: bool,
    ) -> (Option<segment::SyncHandle>, Pending) {
        let mut answers = Vec::with_capacity(group.len());
        let mut wrote = false;
        let must_sync = group.iter().any(|request| request.mode == Mode::Sync);
        for mut request in group {
            let answer = match self.shared.poisoned() {
                Some(why) => Err(Error::Poisoned(why)),
                None => self.commit_one(&mut request, &mut wrote),
            };
            if let Some(entry) = request.entry {
                self.remember(entry, &answer);
            }
            let spent = Spent(std::mem::take(&mut self.spent));
            answers.push((request.done, answer, spent));
        }
        // Entries that wrote nothing (a refusal, a no-op) still moved `applied`: a mark records
        // the last of them with the group, so that `Store::applied` names it after a restart.
        let applied = *self.shared.applied.lock().expect("applied lock poisoned");
        if let Some(entry) = applied
            && applied != self.last_entry
            && self.shared.poisoned().is_none()
        {
            match self.log.append_mark(&codec::encode_applied(entry)) {
                Ok(_) => {
                    self.last_entry = applied;
                    wrote = true;
                }
                Err(err) => self.shared.poison(&err),
            }
        }
        if wrote && self.shared.poisoned().is_none() {
            // A failure here poisons the store, and `finish` then answers none of the group's
            // requests with success.
            let _ = self.make_readable();
        }
        if must_sync && !durable && self.shared.poisoned().is_none() {
            // Relaxed durability has no syncer: a sync request is served here, on the writer.
            // With fsync durability the syncer answers it after syncing every earlier group.
            if let Err(err) = self.log.flush(true) {
                self.shared.poison(&err);
            }
        }
        let written = wrote && self.shared.poisoned().is_none();
        let sync = (written && durable).then(|| self.log.sync_handle());
        let pending = Pending {
            committed: written.then(|| {
                let index = self.shared.index.read().expect("index lock poisoned");
                Committed {
                    head: index.last(),
                    digest: index.digest(),
                    entry: self.last_entry,
                    end: self.log.end(),
                }
            }),
            answers,
        };
        (sync, pending)
    }

    /// Keeps the answer of a newly applied entry (not one answered again) for
    /// [`Writer::answer_again`].
    fn remember(&mut self, entry: EntryId, answer: &Result<Receipt>) {
        let answered = match answer {
            Err(Error::AlreadyApplied { .. }) => return,
            Ok(receipt) if receipt.events.is_empty() => Answered::Empty(receipt.clone()),
            Ok(receipt) => Answered::Wrote(KeyEntry {
                first: receipt.events[0].position.0,
                n_events: receipt.events.len() as u64,
                request_hash: [0; 32],
                gates: receipt
                    .gates
                    .iter()
                    .map(|pass| (pass.name.clone(), pass.version))
                    .collect(),
                digest: receipt.digest,
            }),
            Err(err) => match err.clone_answer() {
                Some(err) => Answered::Refused(err),
                // A local failure stops the node; there is nothing to answer again.
                None => return,
            },
        };
        if self.answers.len() == APPLIED_ANSWERS_MAX {
            self.answers.pop_front();
        }
        self.answers.push_back((entry, answered));
    }

    /// The answer to an entry at or below the last one applied: its original answer while it
    /// is among the last [`APPLIED_ANSWERS_MAX`] applied since open, else
    /// [`Error::AlreadyApplied`].
    fn answer_again(&mut self, entry: EntryId, last: EntryId) -> Result<Receipt> {
        let replay = match self
            .answers
            .iter()
            .rev()
            .find(|(applied, _)| *applied == entry)
        {
            None => {
                return Err(Error::AlreadyApplied {
                    entry,
                    applied: last,
                });
            }
            Some((_, Answered::Empty(receipt))) => return Ok(receipt.clone()),
            Some((_, Answered::Refused(err))) => {
                return Err(err.clone_answer().expect("only answers are kept"));
            }
            Some((_, Answered::Wrote(key))) => key.clone(),
        };
        self.make_readable()?;
        self.replay(&replay)
    }

    /// Writes the frames buffered so far to the segment file. The writer indexes each append
    /// at once but writes a group's frames with one call at the group's end; its own reads of
    /// the log (replaying a keyed append, a parent's correlation id, a gate's view) read the
    /// file, so it calls this before any of them. A failure poisons the store.
    fn make_readable(&mut self) -> Result<()> {
        let flushed = self.log.flush(false);
        if let Err(err) = &flushed {
            self.shared.poison(err);
        }
        flushed
    }

    /// Decides one command and, unless it is a dry run, writes it. With `entry`, the command
    /// comes from a replicated log entry: one at or below the last applied is refused, and the
    /// entry is recorded in the trailer of whatever the command writes.
    fn commit_one(&mut self, request: &mut Request, wrote: &mut bool) -> Result<Receipt> {
        if let Some(entry) = request.entry {
            let mut applied = self.shared.applied.lock().expect("applied lock poisoned");
            if let Some(last) = *applied
                && entry.index <= last.index
            {
                drop(applied);
                return self.answer_again(entry, last);
            }
            // Applied whatever the outcome: a refusal is an answer, decided on this log.
            *applied = Some(entry);
        }
        let entry = request.entry;
        let timestamp = request.command.timestamp;
        let action = std::mem::replace(&mut request.command.action, Action::Noop);
        match action {
            Action::Append {
                append,
                request_hash,
            } => self.commit_append(
                timestamp,
                entry,
                append,
                request_hash,
                request.mode == Mode::DryRun,
                wrote,
            ),
            Action::RegisterGate { id, definition } => {
                self.register_gate(timestamp, entry, id, definition, wrote)
            }
            Action::RemoveGate { id, name } => self.remove_gate(timestamp, entry, id, name, wrote),
            Action::Configure { id, settings } => {
                self.configure(timestamp, entry, id, settings, wrote)
            }
            Action::Noop => Ok(self.empty_receipt()),
        }
    }

    /// Decides an append and, unless it is a dry run, writes it.
    fn commit_append(
        &mut self,
        timestamp: Timestamp,
        entry: Option<EntryId>,
        mut append: Append,
        request_hash: Hash,
        dry_run: bool,
        wrote: &mut bool,
    ) -> Result<Receipt> {
        if let Some(key) = &append.idempotency_key
            && let Some(known) = self.keys.get(key)
        {
            if known.request_hash != request_hash {
                return Err(Error::IdempotencyConflict {
                    key: command::short(key).to_string(),
                });
            }
            let known = known.clone();
            self.make_readable()?;
            return self.replay(&known);
        }
        let view: Arc<dyn View> = Arc::new(StoreView {
            shared: self.shared.clone(),
        });
        // Where each id of the append is, for the causation checks and the correlation ids.
        let ids = ids_in(&append.events);
        if let Err(err) = self.check(&append, view.as_ref(), &ids) {
            let refused: Vec<_> = append
                .events
                .iter()
                .map(|event| {
                    let id = event.id.expect("apply checks that every event has an id");
                    (
                        id,
                        refused_json(id, &event.scope, &event.entity, &event.event_type),
                    )
                })
                .collect();
            return Err(self.refuse(timestamp, entry, refused, err, dry_run, wrote));
        }
        // An event without a correlation id takes its first parent's, read from its frame.
        let reads_parents = append
            .events
            .iter()
            .any(|event| event.correlation_id.is_none() && !event.causation.is_empty());
        if reads_parents {
            self.make_readable()?;
        }
        let (events, entities) =
            self.propose(timestamp, std::mem::take(&mut append.events), &ids)?;
        // Any gate may read events through its view (`View::last_event`).
        if self.shared.has_gates() {
            self.make_readable()?;
        }
        let passes = match self.run_gates(timestamp, &append.gates, &events, &view) {
            Ok(passes) => passes,
            Err(err) => {
                let refused = events
                    .iter()
                    .map(|event| {
                        let json =
                            refused_json(event.id, &event.scope, &event.entity, &event.event_type);
                        (event.id, json)
                    })
                    .collect();
                return Err(self.refuse(timestamp, entry, refused, err, dry_run, wrote));
            }
        };
        if dry_run {
            return Ok(self.dry_receipt(&events, passes));
        }
        let trailer = Trailer {
            n_events: u16::try_from(events.len()).expect("APPEND_EVENTS_MAX fits in u16"),
            idempotency_key: append.idempotency_key.clone().unwrap_or_default(),
            request_hash,
            gates: passes
                .iter()
                .map(|pass| (pass.name.clone(), pass.version))
                .collect(),
            entry,
        };
        let (receipt, written) = self.write(events, &entities, &trailer, wrote)?;
        self.spent = written;
        if let Some(key) = append.idempotency_key {
            let known = KeyEntry {
                first: receipt.events[0].position.0,
                n_events: receipt.events.len() as u64,
                request_hash,
                gates: trailer.gates,
                digest: receipt.digest,
            };
            self.keys.insert(key, known);
        }
        Ok(receipt)
    }

    /// Registers or replaces a gate: the name rule, the compile, built-in names and
    /// [`GATES_MAX`] are decided here, in order with every other command.
    fn register_gate(
        &mut self,
        timestamp: Timestamp,
        entry: Option<EntryId>,
        id: EventId,
        definition: GateDefinition,
        wrote: &mut bool,
    ) -> Result<Receipt> {
        // Compiled already when `Store::register_gate` ran on its caller's thread; a command
        // from a replicated log is compiled here.
        let gate = match self.shared.take_compiled(&definition) {
            Some(gate) => gate,
            None => definition.compile()?,
        };
        {
            let gates = self.shared.gates.read().expect("gate set lock poisoned");
            if gates
                .get(&definition.name)
                .is_some_and(|installed| installed.definition.is_none())
            {
                return Err(Error::InvalidInput(format!(
                    "gate {:?} is a built-in gate of this program",
                    command::short(&definition.name)
                )));
            }
            if gates.len() >= GATES_MAX && !gates.contains_key(&definition.name) {
                return Err(Error::LimitExceeded {
                    limit: "GATES_MAX",
                    max: GATES_MAX as u64,
                    actual: gates.len() as u64 + 1,
                    what: "registered gates".to_string(),
                });
            }
        }
        let payload = serde_json::to_vec(&definition).expect("definitions serialize");
        let tags = vec![format!("gate:{}", definition.name)];
        let receipt = self.write_system(
            timestamp,
            entry,
            id,
            (GATES_ENTITY, GATE_EVENT_REGISTERED),
            tags,
            payload,
            wrote,
        )?;
        let position = receipt.events[0].position.0;
        self.shared
            .gates
            .write()
            .expect("gate set lock poisoned")
            .insert(
                definition.name.clone(),
                super::registry::installed(position, definition, gate),
            );
        Ok(receipt)
    }

    /// Removes a registered gate.
    fn remove_gate(
        &mut self,
        timestamp: Timestamp,
        entry: Option<EntryId>,
        id: EventId,
        name: String,
        wrote: &mut bool,
    ) -> Result<Receipt> {
        let registered = self
            .shared
            .gates
            .read()
            .expect("gate set lock poisoned")
            .get(&name)
            .map(|installed| installed.definition.is_some());
        match registered {
            None => {
                return Err(Error::NotFound(format!("gate {:?}", command::short(&name))));
            }
            Some(false) => {
                return Err(Error::InvalidInput(format!(
                    "gate {:?} is a built-in gate of this program",
                    command::short(&name)
                )));
            }
            Some(true) => {}
        }
        let payload = serde_json::to_vec(&serde_json::json!({ "name": name }))
            .expect("json values serialize");
        let tags = vec![format!("gate:{name}")];
        let receipt = self.write_system(
            timestamp,
            entry,
            id,
            (GATES_ENTITY, GATE_EVENT_REMOVED),
            tags,
            payload,
            wrote,
        )?;
        self.shared
            .gates
            .write()
            .expect("gate set lock poisoned")
            .remove(&name);
        Ok(receipt)
    }

    /// Replaces the settings.
    fn configure(
        &mut self,
        timestamp: Timestamp,
        entry: Option<EntryId>,
        id: EventId,
        settings: Settings,
        wrote: &mut bool,
    ) -> Result<Receipt> {
        let payload = serde_json::to_vec(&settings).expect("settings serialize");
        let receipt = self.write_system(
            timestamp,
            entry,
            id,
            (SETTINGS_ENTITY, SETTINGS_EVENT_CHANGED),
            Vec::new(),
            payload,
            wrote,
        )?;
        *self
            .shared
            .settings
            .write()
            .expect("settings lock poisoned") = settings;
        Ok(receipt)
    }

    /// Writes one event of the store's own in [`SYSTEM_SCOPE`], through the same path as every
    /// other event: proposed, hashed, encoded, written and indexed.
    #[allow(clippy::too_many_arguments)]
    fn write_system(
        &mut self,
        timestamp: Timestamp,
        entry: Option<EntryId>,
        id: EventId,
        (entity, event_type): (&str, &str),
        tags: Vec<String>,
        payload: Vec<u8>,
        wrote: &mut bool,
    ) -> Result<Receipt> {
        if self
            .shared
            .index
            .read()
            .expect("index lock poisoned")
            .position_of(&id)
            .is_some()
        {
            return Err(Error::InvalidInput(format!("event id {id} already exists")));
        }
        let event = NewEvent {
            id: Some(id),
            tags,
            content_type: "application/json".to_string(),
            ..NewEvent::new(SYSTEM_SCOPE, entity, event_type, payload)
        };
        // A system event names no parent.
        let (events, entities) = self.propose(timestamp, vec![event], &FastMap::default())?;
        let trailer = Trailer {
            n_events: 1,
            entry,
            ..Trailer::default()
        };
        // The event was built here, and is freed here.
        self.write(events, &entities, &trailer, wrote)
            .map(|(receipt, _)| receipt)
    }

    /// The answer to a command that writes nothing.
    fn empty_receipt(&self) -> Receipt {
        Receipt {
            events: Vec::new(),
            gates: Vec::new(),
            digest: self
                .shared
                .index
                .read()
                .expect("index lock poisoned")
                .digest(),
            signature: None,
        }
    }

    /// The error a refused command gets; when the settings record denials, after writing its
    /// audit record (a refusal that depends on this node, such as an I/O error, is not
    /// recorded).
    fn refuse(
        &mut self,
        timestamp: Timestamp,
        entry: Option<EntryId>,
        refused: Vec<(EventId, serde_json::Value)>,
        err: Error,
        dry_run: bool,
        wrote: &mut bool,
    ) -> Error {
        let record = self
            .shared
            .settings
            .read()
            .expect("settings lock poisoned")
            .record_denials;
        if !record || dry_run || !err.is_deterministic() {
            return err;
        }
        match self.record_denial(timestamp, entry, refused, &err, wrote) {
            Ok(()) => err,
            Err(record_err) => record_err,
        }
    }

    /// Checks every condition that comes before the gates: ids, expected versions, the DCB
    /// condition and causation.
    /// `ids` is [`ids_in`] of the append's events.
    fn check(
        &self,
        append: &Append,
        view: &dyn View,
        ids: &FastMap<EventId, (usize, usize)>,
    ) -> Result<()> {
        for (event_idx, event) in append.events.iter().enumerate() {
            let id = event.id.expect("apply checks that every event has an id");
            if view.event_exists(id) {
                return Err(Error::InvalidField {
                    field: format!("events[{event_idx}].id"),
                    message: format!("event {event_idx} id {id} already exists"),
                });
            }
        }
        for expected in &append.expected {
            let actual = view.version(&expected.scope, &expected.entity);
            let holds = match expected.version {
                ExpectedVersion::Any => true,
                ExpectedVersion::NoStream => actual == Version(0),
                ExpectedVersion::Exists => actual > Version(0),
                ExpectedVersion::Exact(version) => actual == version,
            };
            if !holds {
                return Err(Error::Conflict {
                    scope: expected.scope.clone(),
                    entity: expected.entity.clone(),
                    expected: expected.version.to_string(),
                    actual,
                });
            }
        }
        if let Some(condition) = &append.condition {
            let matches = view.count(&condition.query, condition.after, 1);
            if matches > 0 {
                let message = format!(
                    "an event matching the condition exists after position {}",
                    condition.after
                );
                let facts = BTreeMap::from([("after".to_string(), condition.after.to_string())]);
                return Err(Error::Denied {
                    gate: crate::gate::DCB_CHECK.to_string(),
                    code: "DCB_CONDITION".to_string(),
                    message,
                    facts,
                });
            }
        }
        if !append.external_causation {
            for (event_idx, event) in append.events.iter().enumerate() {
                for parent in &event.causation {
                    let in_append = ids.get(parent).is_some_and(|(first, _)| *first < event_idx);
                    if !in_append && !view.event_exists(*parent) {
                        let message = format!(
                            "event {event_idx} names causation parent {parent}, which does not exist"
                        );
                        let facts = BTreeMap::from([
                            ("event".to_string(), event_idx.to_string()),
                            ("parent".to_string(), parent.to_string()),
                        ]);
                        return Err(Error::Denied {
                            gate: crate::gate::CAUSATION_CHECK.to_string(),
                            code: "CAUSATION_MISSING".to_string(),
                            message,
                            facts,
                        });
                    }
                }
            }
        }
        // Causation always points back in the log, so position order is a causal order: never at
        // a later event of the same append, and never at an id that earlier events already
        // named as an (external) parent.
        for (event_idx, event) in append.events.iter().enumerate() {
            if let Some((parent_idx, parent)) =
                event.causation.iter().enumerate().find(|(_, parent)| {
                    ids.get(*parent).is_some_and(|(_, last)| *last >= event_idx)
                })
            {
                return Err(Error::InvalidField {
                    field: format!("events[{event_idx}].causation[{parent_idx}]"),
                    message: format!(
                        "event {event_idx} names causation parent {parent}, which comes later in the append"
                    ),
                });
            }
            let id = event.id.expect("apply checks that every event has an id");
            if self
                .shared
                .index
                .read()
                .expect("index lock poisoned")
                .has_children(&id)
            {
                return Err(Error::InvalidField {
                    field: format!("events[{event_idx}].id"),
                    message: format!(
                        "event {event_idx} id {id} is already named as a causation parent of earlier events"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The events as they would be committed: positions, versions, timestamps and correlation
    /// ids assigned; hashes not yet computed. Each event's timestamp is the command's, raised
    /// above the previous event's where needed. Also each event's entity as the index keeps it
    /// ([`Index::entity_idx`]), for [`Writer::write`]: the entity is looked up once per append.
    /// `ids` is [`ids_in`] of `proposed`.
    fn propose(
        &self,
        timestamp: Timestamp,
        proposed: Vec<NewEvent>,
        ids: &FastMap<EventId, (usize, usize)>,
    ) -> Result<(Vec<Event>, Vec<Option<u32>>)> {
        let index = self.shared.index.read().expect("index lock poisoned");
        // First what each event's fields decide, while the fields can still be borrowed.
        let mut versions: FastMap<(&str, &str), (Option<u32>, u64)> = FastMap::default();
        let mut decided: Vec<(Version, EventId)> = Vec::with_capacity(proposed.len());
        let mut entities = Vec::with_capacity(proposed.len());
        for (event_idx, event) in proposed.iter().enumerate() {
            let id = event.id.expect("apply checks that every event has an id");
            let key = (event.scope.as_str(), event.entity.as_str());
            let (entity, version) = versions.entry(key).or_insert_with(|| {
                let entity = index.entity_idx(key.0, key.1);
                let version =
                    entity.map_or(0, |entity| index.entity_at(entity).positions.len() as u64);
                (entity, version)
            });
            *version += 1;
            entities.push(*entity);
            let correlation_id = match (event.correlation_id, event.causation.first()) {
                (Some(correlation_id), _) => correlation_id,
                (None, Some(parent)) => match ids.get(parent) {
                    Some((first, _)) if *first < event_idx => decided[*first].1,
                    _ => self.correlation_of(&index, parent)?.unwrap_or(id),
                },
                (None, None) => id,
            };
            decided.push((Version(*version), correlation_id));
        }
        drop(versions);
        let mut last_timestamp = index.last_timestamp();
        let first = index.last() + 1;
        let events = proposed
            .into_iter()
            .zip(decided)
            .enumerate()
            .map(|(event_idx, (event, (version, correlation_id)))| {
                last_timestamp = timestamp.max(last_timestamp.next());
                Event {
                    position: Position(first + event_idx as u64),
                    version,
                    timestamp: last_timestamp,
                    id: event.id.expect("apply checks that every event has an id"),
                    scope: event.scope,
                    entity: event.entity,
                    event_type: event.event_type,
                    tags: event.tags,
                    content_type: event.content_type,
                    metadata: event.metadata,
                    causation: event.causation,
                    correlation_id,
                    hash: [0; 32],
                    payload: event.payload,
                }
            })
            .collect();
        Ok((events, entities))
    }

    /// Runs every gate bound to the proposal (and every gate it names), in name order, failing
    /// fast. A gate that panics is a denial with code `GATE_DEFECT`, never a dead writer. All
    /// gates share one [`Budget`] of `GATE_EVAL_STEPS_MAX` steps for the whole append; a gate
    /// that exhausts it refuses the append with `LimitExceeded`, whatever it answered, so the
    /// writer spends at most that much on any one append's gates.
    fn run_gates(
        &self,
        timestamp: Timestamp,
        named: &[String],
        events: &[Event],
        view: &Arc<dyn View>,
    ) -> Result<Vec<GatePass>> {
        let gates = self.shared.gates.read().expect("gate set lock poisoned");
        if let Some((gate_idx, unknown)) = named
            .iter()
            .enumerate()
            .find(|(_, name)| !gates.contains_key(*name))
        {
            return Err(Error::InvalidField {
                field: format!("gates[{gate_idx}]"),
                message: format!("gate {:?} is not registered", command::short(unknown)),
            });
        }
        let budget = Budget::new("GATE_EVAL_STEPS_MAX", GATE_EVAL_STEPS_MAX);
        let mut passes = Vec::new();
        for (name, installed) in gates.iter() {
            let named = named.contains(name);
            let bound: Vec<&Event> = events
                .iter()
                .filter(|event| named || installed.binds(event))
                .collect();
            if bound.is_empty() {
                continue;
            }
            let proposal = Proposal {
                timestamp,
                events: &bound,
                append: events,
                budget: &budget,
            };
            let verdict = catch_unwind(AssertUnwindSafe(|| installed.gate.check(&proposal, view)))
                .unwrap_or_else(|panic| {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(Denial::new(
                        "GATE_DEFECT",
                        format!("gate {name} panicked: {why}"),
                        [("panic", why.clone())],
                    ))
                });
            if budget.is_exhausted() {
                return Err(budget.error(format!("gate {name} evaluation steps of this append")));
            }
            if let Err(denial) = verdict {
                return Err(Error::Denied {
                    gate: name.clone(),
                    code: denial.code,
                    message: denial.message,
                    facts: denial.facts,
                });
            }
            passes.push(GatePass {
                name: name.clone(),
                version: installed.version,
            });
        }
        Ok(passes)
    }

    /// Hashes, encodes, writes and indexes decided events; updates the gate set when the events
    /// register or remove gates. `entities` are the events' entities as [`Writer::propose`]
    /// found them. Returns the receipt and the events.
    fn write(
        &mut self,
        mut events: Vec<Event>,
        entities: &[Option<u32>],
        trailer: &Trailer,
        wrote: &mut bool,
    ) -> Result<(Receipt, Vec<Event>)> {
        debug_assert_eq!(entities.len(), events.len(), "one entity per event");
        let mut records = Vec::with_capacity(events.len());
        let mut prev_hashes = Vec::with_capacity(events.len());
        let mut hashes = Vec::with_capacity(events.len());
        {
            let index = self.shared.index.read().expect("index lock poisoned");
            let mut chain: FastMap<(&str, &str), Hash> = FastMap::default();
            for ((event_idx, event), entity) in events.iter().enumerate().zip(entities) {
                let key = (event.scope.as_str(), event.entity.as_str());
                let prev_hash = *chain.entry(key).or_insert_with(|| {
                    entity.map_or([0; 32], |entity| index.entity_at(entity).last_hash)
                });
                let (record, hash) =
                    codec::encode(event, &prev_hash, (event_idx == 0).then_some(trailer));
                chain.insert(key, hash);
                records.push(record);
                prev_hashes.push(prev_hash);
                hashes.push(hash);
            }
        }
        for (event, hash) in events.iter_mut().zip(hashes) {
            event.hash = hash;
        }
        // Buffered: the group's frames reach the file in one write at its end (or earlier, when
        // a later command of the group reads the log; see `make_readable`).
        let appended = match self.log.append(&records) {
            Ok(appended) => appended,
            Err(err) => {
                self.shared.poison(&err);
                return Err(err);
            }
        };
        *wrote = true;
        if trailer.entry.is_some() {
            self.last_entry = trailer.entry;
        }
        // Handed to the sidecar thread after the index lock is released: the hand-off waits
        // when that thread is still writing an earlier sidecar, and readers must not.
        let sealed = appended.sealed.map(|sealed_first| {
            let next = IdxBuffer::starting_at(appended.locs[0].segment);
            let sealed = std::mem::replace(&mut self.active_idx, next);
            debug_assert_eq!(sealed.first, sealed_first);
            sealed
        });
        let mut index = self.shared.index.write().expect("index lock poisoned");
        if sealed.is_some() {
            index.add_segment(appended.locs[0].segment);
        }
        let mut receipt = Receipt {
            events: Vec::with_capacity(events.len()),
            gates: gate_passes(&trailer.gates),
            digest: [0; 32],
            signature: None,
        };
        for ((((event, record), loc), prev_hash), entity) in events
            .iter()
            .zip(&records)
            .zip(&appended.locs)
            .zip(prev_hashes)
            .zip(entities)
        {
            self.active_idx
                .push(*loc, codec::header_bytes(record).expect("encoded above"));
            index
                .insert_known(
                    event,
                    *loc,
                    (event.position == events[0].position).then_some(trailer.n_events),
                    *entity,
                )
                .expect("the writer assigned this event's position and version from the index");
            receipt.events.push(committed(event, prev_hash));
        }
        receipt.digest = index.digest();
        drop(index);
        if let Some(sealed) = sealed {
            self.sidecars.write(sealed);
        }
        if let Some(signer) = &self.signer {
            signer.sign(&mut receipt);
        }
        Ok((receipt, events))
    }

    /// The receipt of a keyed append that was already committed.
    fn replay(&self, entry: &KeyEntry) -> Result<Receipt> {
        let mut receipt = Receipt {
            events: Vec::with_capacity(entry.n_events as usize),
            gates: gate_passes(&entry.gates),
            digest: entry.digest,
            signature: None,
        };
        for position in entry.first..entry.first + entry.n_events {
            let event = self.read(position)?;
            let prev_hash = self.prev_hash(&event)?;
            receipt.events.push(committed(&event, prev_hash));
        }
        if let Some(signer) = &self.signer {
            signer.sign(&mut receipt);
        }
        Ok(receipt)
    }

    fn dry_receipt(&self, events: &[Event], passes: Vec<GatePass>) -> Receipt {
        let index = self.shared.index.read().expect("index lock poisoned");
        let mut chain: HashMap<(&str, &str), Hash> = HashMap::new();
        let mut digest = index.digest();
        let mut committed_events = Vec::with_capacity(events.len());
        for event in events {
            let key = (event.scope.as_str(), event.entity.as_str());
            let prev_hash = *chain
                .entry(key)
                .or_insert_with(|| index.last_hash(key.0, key.1));
            let (_, hash) = codec::encode(event, &prev_hash, None);
            chain.insert(key, hash);
            digest = codec::next_digest(&digest, &hash);
            committed_events.push(committed(
                &Event {
                    hash,
                    ..event.clone()
                },
                prev_hash,
            ));
        }
        Receipt {
            events: committed_events,
            gates: passes,
            digest,
            signature: None,
        }
    }

    /// Writes the audit record of a refused command: one event in the system scope.
    fn record_denial(
        &mut self,
        timestamp: Timestamp,
        entry: Option<EntryId>,
        refused: Vec<(EventId, serde_json::Value)>,
        err: &Error,
        wrote: &mut bool,
    ) -> Result<()> {
        // Derived from the refused proposal and the position the record takes, so every replica
        // writes the same id and a refused retry does not repeat one.
        let position = self
            .shared
            .index
            .read()
            .expect("index lock poisoned")
            .last()
            + 1;
        let first_id = refused[0].0;
        let digest = blake3::hash(
            &[
                b"causeway.denial\0".as_slice(),
                first_id.as_bytes(),
                &position.to_le_bytes(),
            ]
            .concat(),
        );
        let id = EventId(
            uuid::Builder::from_custom_bytes(digest.as_bytes()[..16].try_into().expect("16 bytes"))
                .into_uuid(),
        );
        let (gate, code, facts) = match err {
            Error::Denied {
                gate, code, facts, ..
            } => (gate.clone(), code.clone(), facts.clone()),
            Error::Conflict { .. } => (
                "expected_version".to_string(),
                "VERSION_CONFLICT".to_string(),
                BTreeMap::new(),
            ),
            Error::IdempotencyConflict { .. } => (
                "idempotency".to_string(),
                "KEY_REUSED".to_string(),
                BTreeMap::new(),
            ),
            Error::LimitExceeded { limit, .. } => (
                "limit".to_string(),
                "LIMIT_EXCEEDED".to_string(),
                BTreeMap::from([("limit".to_string(), limit.to_string())]),
            ),
            _ => ("input".to_string(), "INVALID".to_string(), BTreeMap::new()),
        };
        let refused: Vec<serde_json::Value> = refused.into_iter().map(|(_, json)| json).collect();
        let payload = serde_json::json!({"gate": gate, "code": code, "message": err.to_string(), "facts": facts, "events": refused});
        let tags = vec![format!("gate:{gate}"), format!("code:{code}")];
        let payload = serde_json::to_vec(&payload).expect("json values serialize");
        self.write_system(
            timestamp,
            entry,
            id,
            (DENIALS_ENTITY, DENIAL_EVENT_TYPE),
            tags,
            payload,
            wrote,
        )
        .map(|_| ())
    }

    fn read(&self, position: u64) -> Result<Event> {
        read_position(&self.shared, position)
    }

    /// The hash of the event before `event` in its entity, or zeros.
    fn prev_hash(&self, event: &Event) -> Result<Hash> {
        if event.version.0 <= 1 {
            return Ok([0; 32]);
        }
        let position = self
            .shared
            .index
            .read()
            .expect("index lock poisoned")
            .position_at(&event.scope, &event.entity, event.version.0 - 1)
            .expect("an indexed event's entity has its earlier versions");
        Ok(self.read(position)?.hash)
    }

    /// The correlation id of an indexed event, read from its frame; `None` when no such event
    /// exists.
    fn correlation_of(&self, index: &crate::index::Index, id: &EventId) -> Result<Option<EventId>> {
        let Some(position) = index.position_of(id) else {
            return Ok(None);
        };
        Ok(Some(
            read_at(&self.shared, position, index.loc(position))?.correlation_id,
        ))
    }
}

/// The first and last index of each id among `events` (ids are unique once an append is
/// checked, but an unchecked one may repeat them), so that each causation parent is found in
/// constant time: a scan of the append per parent made a large append with many parents cost
/// the writer seconds (events × parents × events comparisons). Empty when no event names a
/// parent: only causation looks ids up.
fn ids_in(events: &[NewEvent]) -> FastMap<EventId, (usize, usize)> {
    let mut ids = FastMap::default();
    if events.iter().all(|event| event.causation.is_empty()) {
        return ids;
    }
    ids.reserve(events.len());
    for (event_idx, event) in events.iter().enumerate() {
        if let Some(id) = event.id {
            ids.entry(id)
                .and_modify(|(_, last)| *last = event_idx)
                .or_insert((event_idx, event_idx));
        }
    }
    ids
}

fn committed(event: &Event, prev_hash: Hash) -> receipt::Committed {
    receipt::Committed {
        id: event.id,
        position: event.position,
        version: event.version,
        timestamp: event.timestamp,
        hash: event.hash,
        prev_hash,
    }
}

/// The gates an append passed, as the receipt lists them.
fn gate_passes(gates: &[(String, u64)]) -> Vec<GatePass> {
    gates
        .iter()
        .map(|(name, version)| GatePass {
            name: name.clone(),
            version: *version,
        })
        .collect()
}

/// One refused event as a denial record lists it.
fn refused_json(id: EventId, scope: &str, entity: &str, event_type: &str) -> serde_json::Value {
    serde_json::json!({"id": id.to_string(), "scope": scope, "entity": entity, "type": event_type})
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::{receive, spin_next};

    #[test]
    fn the_writer_polls_only_after_a_group_of_its_own_that_came_back_within_the_window() {
        let spin = Duration::from_micros(500);
        assert_eq!(spin_next(spin, true, Duration::from_micros(80)), spin);
        assert_eq!(
            spin_next(spin, true, spin),
            spin,
            "the window's edge counts"
        );
        // The client paused longer: the next wait sleeps at once.
        assert_eq!(
            spin_next(spin, true, Duration::from_micros(501)),
            Duration::ZERO
        );
        // The sync thread synced the last group: other appends are in flight.
        assert_eq!(
            spin_next(spin, false, Duration::from_micros(80)),
            Duration::ZERO
        );
        assert_eq!(
            spin_next(Duration::ZERO, true, Duration::ZERO),
            Duration::ZERO,
            "zero turns it off"
        );
    }

    #[test]
    fn a_request_is_taken_whether_it_comes_while_polling_or_after() {
        let (sender, receiver) = channel();
        sender.send(1).expect("send");
        let (item, _) = receive(&receiver, Duration::from_millis(50)).expect("while polling");
        assert_eq!(item, 1);
        // Sent after the window: the thread sleeps on the queue and is woken.
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.send(2).expect("send");
            sender
        });
        let (item, waited) = receive(&receiver, Duration::from_micros(100)).expect("after it");
        assert_eq!(item, 2);
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        drop(late.join().expect("sender thread"));
        assert!(
            receive(&receiver, Duration::from_millis(5)).is_none(),
            "no senders left: the writer stops"
        );
        let (sender, receiver) = channel::<u32>();
        drop(sender);
        assert!(receive(&receiver, Duration::ZERO).is_none());
    }
}
