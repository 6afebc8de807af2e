//! Acknowledged appends survive power loss under the pipelined group commit. Four threads append
//! to a store over a [`SimDisk`], each with up to four appends queued at once (`append_with`), so
//! the writer runs several written groups ahead of the syncer's fsync; their batches hold one to
//! four events, every third append is keyed with an idempotency key and every fourth expects its
//! entity's version. The moment a round's random count of acknowledgements is reached, the power
//! is cut: every synced byte and synced directory entry is kept and, of the unsynced writes, a
//! seeded prefix whose last write may be torn. The store is opened again on what survived, four
//! cuts per case, and checked:
//! - no acknowledged event is lost: each is at its receipt's position with its id and hash, and
//!   its bytes are the ones derived from the append that wrote it;
//! - no append is half visible: an append's events are all there, in order, or none is;
//! - positions are gapless from 1 and `verify()` passes (hash chains and digest);
//! - a keyed append retried after the cut answers with its original positions;
//! - appending after the reopen works.
//!
//! Every event is derived from (round, writer, sequence number), carried in its metadata, as in
//! `kill.rs`. With [`Durability::Relaxed`] acknowledged appends may be lost, but only a suffix:
//! every acknowledged event at or below the reopened head is there, none above it is.
//!
//! It catches an append acknowledged before a sync covered it (a sync covers only what was
//! written before it began; one that synced the oldest waiting group's segment instead of the
//! newest, so missed a roll, was caught within 300 cases), a directory entry that a power cut
//! takes back (the data directory, `events/`, a segment, `STORE`), and a recovery that cannot
//! open what a cut leaves.
//!
//! `CAUSEWAY_POWER_CASES` sets the number of cases per durability mode (default 16, a few
//! seconds each); `CAUSEWAY_POWER_SEED` replays a printed seed (thread timing still varies).
//! 1,000 cases of each mode: see `docs/RELIABILITY.md`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use causeway_core::disk::{Disk, OsDisk, PowerCut, SimDisk};
use causeway_core::limits::SEGMENT_BYTES_MIN;
use causeway_core::segment::SegmentLog;
use causeway_core::{
    Append, Config, Direction, Durability, Event, EventId, Expected, ExpectedVersion, Filter, Hash,
    NewEvent, Position, Receipt, Store, Version,
};

const CASES_VAR: &str = "CAUSEWAY_POWER_CASES";
const SEED_VAR: &str = "CAUSEWAY_POWER_SEED";
const CASES_DEFAULT: u64 = 16;
/// Appending threads; more than one, so group commit takes several appends at once.
const WRITERS: u32 = 4;
/// Power cuts per case, each reopened on what the one before left.
const CUTS_PER_CASE: u64 = 4;
/// The cut comes once this many appends, at most, were acknowledged in a round.
const ACKS_BEFORE_CUT_MAX: u64 = 40;
/// How long a simulated file sync takes, at most: while it runs the writer goes on writing.
const SYNC_DELAY_US_MAX: u64 = 1000;
/// Appends each writer has queued at once.
const IN_FLIGHT_MAX: usize = 4;
/// How long a round may take to reach its acknowledgement count before the power is cut anyway.
const CUT_WAIT_MAX: Duration = Duration::from_secs(10);
const BATCH_EVENTS_MAX: u64 = 4;
const PAYLOAD_BYTES_MAX: u64 = 300;
const KEYED_ONE_IN: u64 = 3;
const CONDITIONAL_ONE_IN: u64 = 4;
/// How many keyed appends of the round before are retried after each reopen.
const RETRIES_PER_ROUND: usize = 3;
const SCOPE: &str = "power";
const EVENT_TYPE: &str = "Appended";
const READ_PAGE_EVENTS: usize = 10_000;

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = xorshift(self.0);
        self.0 % n
    }
}

fn env_number(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|value| value.parse().ok())
}

/// One append: writer `writer` of round `round` made it as its `seq`-th.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct AppendKey {
    round: u64,
    writer: u32,
    seq: u64,
}

impl AppendKey {
    fn mix(&self) -> u64 {
        xorshift(
            (self.round << 40) ^ (u64::from(self.writer) << 32) ^ self.seq ^ 0x9e37_79b9_7f4a_7c15,
        )
    }

    fn n_events(&self) -> u64 {
        1 + self.mix() % BATCH_EVENTS_MAX
    }

    fn keyed(&self) -> bool {
        self.seq.is_multiple_of(KEYED_ONE_IN)
    }

    fn conditional(&self) -> bool {
        self.seq % CONDITIONAL_ONE_IN == 1
    }

    fn entity(&self) -> String {
        format!("writer-{}", self.writer)
    }

    /// The event at `event_idx` of this append, as the writer sends it.
    fn event(&self, event_idx: u64) -> NewEvent {
        let payload_len = xorshift(self.mix() ^ (event_idx + 1)) % PAYLOAD_BYTES_MAX;
        let payload: Vec<u8> = (0..payload_len)
            .map(|byte_idx| (self.mix() as u8) ^ (byte_idx as u8) ^ (event_idx as u8))
            .collect();
        let metadata = [
            ("round", self.round),
            ("writer", u64::from(self.writer)),
            ("seq", self.seq),
            ("event", event_idx),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        NewEvent {
            tags: vec![format!("round:{}", self.round)],
            metadata,
            ..NewEvent::new(SCOPE, self.entity(), EVENT_TYPE, payload)
        }
    }

    /// The append as sent; `version` is the writer's entity version it expects, if conditional.
    fn append(&self, version: Version) -> Append {
        let events = (0..self.n_events()).map(|idx| self.event(idx)).collect();
        Append {
            expected: if self.conditional() {
                vec![Expected {
                    scope: SCOPE.to_string(),
                    entity: self.entity(),
                    version: ExpectedVersion::Exact(version),
                }]
            } else {
                Vec::new()
            },
            idempotency_key: self
                .keyed()
                .then(|| format!("r{}-w{}-s{}", self.round, self.writer, self.seq)),
            ..Append::new(events)
        }
    }

    /// The key and event index an event read back carries.
    fn of(event: &Event) -> (AppendKey, u64) {
        let field = |name: &str| -> u64 { event.metadata[name].parse().unwrap() };
        let key = AppendKey {
            round: field("round"),
            writer: u32::try_from(field("writer")).unwrap(),
            seq: field("seq"),
        };
        (key, field("event"))
    }
}

/// An acknowledged event: what must be at its position.
#[derive(Clone, Debug, PartialEq)]
struct Acked {
    key: AppendKey,
    event_idx: u64,
    id: EventId,
    hash: Hash,
}

/// What one case found, summed over its cuts.
#[derive(Debug, Default)]
struct Tally {
    acked_appends: u64,
    unacked_present: u64,
    torn_cuts: u64,
    writes_lost: u64,
    relaxed_acked_lost: u64,
    retries_replayed: u64,
}

fn config(disk: Arc<dyn Disk>, durability: Durability, segment_bytes: u64) -> Config {
    Config {
        durability,
        segment_bytes,
        disk,
        ..Config::default()
    }
}

/// Runs the writers until the power is cut. Returns every acknowledged append with its receipt,
/// and what the cut left.
///
/// The cut comes from the writer whose acknowledgement makes the round's count, the moment it
/// has it: later groups are then written and in the syncer's hands, which a cut from a thread
/// that must first be woken would often miss.
fn run_round(
    store: &Arc<Store>,
    disk: &Arc<SimDisk>,
    round: u64,
    rng: &mut Rng,
) -> (Vec<(AppendKey, Receipt)>, PowerCut) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let n_acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(Mutex::new(None));
    let acks_before_cut = rng.below(ACKS_BEFORE_CUT_MAX + 1);
    let cut_seed = rng.below(u64::MAX);
    let power_cut = {
        let (disk, stop, cut) = (disk.clone(), stop.clone(), cut.clone());
        move || {
            // Stop first: an append refused after this is expected.
            stop.store(true, Ordering::SeqCst);
            let mut cut = cut.lock().unwrap();
            if cut.is_none() {
                *cut = Some(disk.power_cut(cut_seed));
            }
        }
    };
    if acks_before_cut == 0 {
        power_cut();
    }
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, acked, n_acked, stop, power_cut) = (
                store.clone(),
                acked.clone(),
                n_acked.clone(),
                stop.clone(),
                power_cut.clone(),
            );
            std::thread::spawn(move || {
                // Up to IN_FLIGHT_MAX appends queued at once, answered in order: the writer then
                // runs groups ahead of the disk, as under a server's load.
                let (answers, answered) = std::sync::mpsc::channel();
                let mut in_flight = std::collections::VecDeque::new();
                let mut version = store.version(SCOPE, &format!("writer-{writer}"));
                for seq in 0.. {
                    let stopped = stop.load(Ordering::SeqCst);
                    if !stopped && in_flight.len() < IN_FLIGHT_MAX {
                        let key = AppendKey { round, writer, seq };
                        let answers = answers.clone();
                        let queued = store.append_with(key.append(version), move |answer, _| {
                            let _ = answers.send((key, answer));
                        });
                        match queued {
                            Ok(()) => {
                                // Its condition expects the version the appends before it leave.
                                version = Version(version.0 + key.n_events());
                                in_flight.push_back(key);
                                continue;
                            }
                            Err(err) => panic!("append {key:?} was not queued: {err}"),
                        }
                    }
                    let Some(key) = in_flight.pop_front() else {
                        return;
                    };
                    let (answered_key, answer) = answered.recv().unwrap();
                    assert_eq!(
                        answered_key, key,
                        "one writer's appends are answered in order"
                    );
                    match answer {
                        Ok(receipt) => {
                            acked.lock().unwrap().push((key, receipt));
                            if n_acked.fetch_add(1, Ordering::SeqCst) + 1 == acks_before_cut {
                                power_cut();
                            }
                        }
                        // The power is off: the store refuses from here on.
                        Err(_) if stop.load(Ordering::SeqCst) => {}
                        Err(err) => panic!("append {key:?} failed before the cut: {err}"),
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + CUT_WAIT_MAX;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    power_cut();
    for thread in threads {
        thread.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let cut = cut.lock().unwrap().take().expect("the power was cut");
    (acked, cut)
}

/// Reads the whole log, oldest first.
fn all_events(store: &Store) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let from = Position(events.len() as u64 + 1);
        let batch = store
            .read_log(
                from,
                Direction::Forward,
                READ_PAGE_EVENTS,
                &Filter::default(),
            )
            .unwrap();
        events.extend(batch.events);
        if batch.end {
            return events;
        }
    }
}

/// Checks the reopened log against the acknowledged events; returns how many appends were in
/// the log without an acknowledgement, and drops from `acked` what relaxed durability lost.
fn check_log(
    store: &Store,
    acked: &mut BTreeMap<u64, Acked>,
    durability: Durability,
    context: &str,
) -> u64 {
    let report = store.verify().unwrap();
    assert_eq!(report.first_break, None, "{context}: verify");
    assert_eq!(report.digest, store.digest(), "{context}: digest");
    let events = all_events(store);
    let head = store.head().0;
    assert_eq!(
        events.len() as u64,
        head,
        "{context}: events up to the head"
    );
    assert_eq!(report.events, head, "{context}: verified events");
    // Gapless, and each append whole and in order, with the bytes its key derives.
    let mut appends: BTreeMap<AppendKey, Vec<u64>> = BTreeMap::new();
    let mut event_idx_expected = 0;
    let mut open: Option<AppendKey> = None;
    for (pos_idx, event) in events.iter().enumerate() {
        let position = pos_idx as u64 + 1;
        assert_eq!(
            event.position.0, position,
            "{context}: positions are gapless"
        );
        let (key, event_idx) = AppendKey::of(event);
        let sent = key.event(event_idx);
        assert_eq!(
            (&event.scope, &event.entity, &event.event_type),
            (&sent.scope, &sent.entity, &sent.event_type),
            "{context}: event at {position}"
        );
        assert_eq!(
            event.payload, sent.payload,
            "{context}: payload at {position}"
        );
        assert_eq!(event.tags, sent.tags, "{context}: tags at {position}");
        if open != Some(key) {
            assert_eq!(
                open, None,
                "{context}: append {key:?} starts at {position} inside another append"
            );
            assert!(
                !appends.contains_key(&key),
                "{context}: append {key:?} is in the log twice"
            );
            open = Some(key);
            event_idx_expected = 0;
        }
        assert_eq!(event_idx, event_idx_expected, "{context}: order in {key:?}");
        event_idx_expected += 1;
        appends.entry(key).or_default().push(position);
        if event_idx_expected == key.n_events() {
            open = None;
        }
    }
    assert_eq!(open, None, "{context}: the last append is cut short");
    // Acknowledged events, at their positions. Relaxed durability may lose a suffix of them:
    // those above the head, never one below it.
    let lost: Vec<u64> = acked.range(head + 1..).map(|(&pos, _)| pos).collect();
    if durability == Durability::Fsync {
        assert_eq!(
            lost,
            Vec::<u64>::new(),
            "{context}: acknowledged events lost"
        );
    }
    for pos in lost {
        acked.remove(&pos);
    }
    let mut acked_appends = std::collections::BTreeSet::new();
    for (&position, want) in acked.iter() {
        let event = &events[position as usize - 1];
        let found = Acked {
            key: AppendKey::of(event).0,
            event_idx: AppendKey::of(event).1,
            id: event.id,
            hash: event.hash,
        };
        assert_eq!(&found, want, "{context}: acknowledged event at {position}");
        acked_appends.insert(want.key);
    }
    appends
        .keys()
        .filter(|key| !acked_appends.contains(key))
        .count() as u64
}

/// One case: `CUTS_PER_CASE` rounds of appending and cutting, each reopened and checked, then a
/// last reopen on the real disk that must accept appends.
fn run_case(seed: u64, durability: Durability, tally: &mut Tally) {
    let mut rng = Rng(seed.max(1));
    let segment_bytes =
        [SEGMENT_BYTES_MIN, 4 * SEGMENT_BYTES_MIN, 64 * 1024][rng.below(3) as usize];
    let mut root = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<u64, Acked> = BTreeMap::new();
    let mut last_round_keys: Vec<AppendKey> = Vec::new();
    for round in 0..CUTS_PER_CASE {
        let context = format!("seed {seed} {durability:?} round {round}");
        let delay = Duration::from_micros(rng.below(SYNC_DELAY_US_MAX + 1));
        let disk = SimDisk::new(root.path(), delay).unwrap();
        let store = Arc::new(
            Store::open(
                root.path().join("data"),
                config(disk.clone(), durability, segment_bytes),
            )
            .unwrap_or_else(|err| panic!("{context}: open after the cut: {err}")),
        );
        if round > 0 {
            tally.unacked_present += check_log(&store, &mut acked, durability, &context);
            retry_keyed(&store, &last_round_keys, &acked, tally, &context);
        }
        let (round_acked, cut) = run_round(&store, &disk, round, &mut rng);
        tally.acked_appends += round_acked.len() as u64;
        tally.torn_cuts += u64::from(cut.torn);
        tally.writes_lost += cut.writes_lost as u64;
        last_round_keys = round_acked.iter().map(|(key, _)| *key).collect();
        for (key, receipt) in round_acked {
            for (event_idx, committed) in receipt.events.iter().enumerate() {
                let replaced = acked.insert(
                    committed.position.0,
                    Acked {
                        key,
                        event_idx: event_idx as u64,
                        id: committed.id,
                        hash: committed.hash,
                    },
                );
                assert_eq!(replaced, None, "{context}: two acks for one position");
            }
        }
        drop(store);
        let next = tempfile::tempdir().unwrap();
        cut.restore(next.path()).unwrap();
        root = next;
    }
    let context = format!("seed {seed} {durability:?} after the last cut");
    let before = acked.len();
    let store = Store::open(
        root.path().join("data"),
        config(Arc::new(OsDisk), durability, segment_bytes),
    )
    .unwrap_or_else(|err| panic!("{context}: open: {err}"));
    tally.unacked_present += check_log(&store, &mut acked, durability, &context);
    tally.relaxed_acked_lost += (before - acked.len()) as u64;
    let key = AppendKey {
        round: CUTS_PER_CASE,
        writer: 0,
        seq: 2,
    };
    let version = store.version(SCOPE, &key.entity());
    let receipt = store
        .append(key.append(version))
        .unwrap_or_else(|err| panic!("{context}: append after reopen: {err}"));
    assert_eq!(
        receipt.events[0].position.0,
        store.head().0 - key.n_events() + 1
    );
    assert_eq!(store.verify().unwrap().first_break, None, "{context}");
}

/// Retries a few acknowledged keyed appends of the round before that are still in the log
/// (all of them, with fsync durability): each answers with its original positions and writes
/// nothing, as the keys are rebuilt from the log at open.
fn retry_keyed(
    store: &Store,
    keys: &[AppendKey],
    acked: &BTreeMap<u64, Acked>,
    tally: &mut Tally,
    context: &str,
) {
    let by_key: BTreeMap<AppendKey, u64> = acked
        .iter()
        .filter(|(_, acked)| acked.event_idx == 0)
        .map(|(&position, acked)| (acked.key, position))
        .collect();
    let retried = keys
        .iter()
        .filter(|key| key.keyed())
        .filter_map(|key| Some((key, *by_key.get(key)?)))
        .take(RETRIES_PER_ROUND);
    for (key, first) in retried {
        let head = store.head().0;
        // The very request sent before, its expected version included.
        let original = store
            .read_log(Position(first), Direction::Forward, 1, &Filter::default())
            .unwrap();
        let version = Version(original.events[0].version.0 - 1);
        let receipt = store
            .append(key.append(version))
            .unwrap_or_else(|err| panic!("{context}: replay of {key:?}: {err}"));
        assert_eq!(receipt.events[0].position.0, first, "{context}: {key:?}");
        assert_eq!(store.head().0, head, "{context}: a replay writes nothing");
        tally.retries_replayed += 1;
    }
}

fn run(durability: Durability) {
    let cases = env_number(CASES_VAR).unwrap_or(CASES_DEFAULT);
    let seed = env_number(SEED_VAR).unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            .into()
    });
    println!(
        "power loss {durability:?}: {cases} cases, seed {seed} (replay with {SEED_VAR}={seed})"
    );
    let started = Instant::now();
    let mut tally = Tally::default();
    for case in 0..cases {
        run_case(
            xorshift(seed.wrapping_add(case).max(1)),
            durability,
            &mut tally,
        );
    }
    println!(
        "power loss {durability:?}: {cases} cases in {:?}: {} appends acknowledged, {} present \
         without an ack, {} cuts tore a write, {} unsynced writes lost, {} keyed retries \
         replayed, {} acknowledged appends lost (relaxed only)",
        started.elapsed(),
        tally.acked_appends,
        tally.unacked_present,
        tally.torn_cuts,
        tally.writes_lost,
        tally.retries_replayed,
        tally.relaxed_acked_lost,
    );
    assert!(tally.acked_appends > 0, "no case acknowledged anything");
}

#[test]
fn acknowledged_appends_survive_power_loss() {
    run(Durability::Fsync);
}

#[test]
fn relaxed_durability_loses_only_a_suffix_of_acknowledged_appends() {
    run(Durability::Relaxed);
}

/// A store in a directory it creates (with a missing parent) keeps its acknowledged event and
/// its identity through a power cut right after. Catches a missing sync of the directory a new
/// directory was created in (the data directory would vanish and the store open empty), and of
/// the data directory after `STORE` is renamed into it (the store would come back with a new id).
#[test]
fn a_new_store_keeps_its_directory_and_identity_through_a_power_cut() {
    for seed in 0..4 {
        let root = tempfile::tempdir().unwrap();
        let disk = SimDisk::new(root.path(), Duration::ZERO).unwrap();
        let data = root.path().join("parent").join("data");
        let store = Store::open(&data, config(disk.clone(), Durability::Fsync, 64 * 1024)).unwrap();
        let id = store.id();
        let key = AppendKey {
            round: 0,
            writer: 0,
            seq: 2,
        };
        let receipt = store.append(key.append(Version(0))).unwrap();
        let cut = disk.power_cut(seed);
        drop(store);
        let after = tempfile::tempdir().unwrap();
        cut.restore(after.path()).unwrap();
        let store = Store::open(
            after.path().join("parent").join("data"),
            config(Arc::new(OsDisk), Durability::Fsync, 64 * 1024),
        )
        .unwrap();
        assert_eq!(store.id(), id, "seed {seed}: the identity survived");
        let events = all_events(&store);
        let ids: Vec<EventId> = events.iter().map(|event| event.id).collect();
        let acked: Vec<EventId> = receipt.events.iter().map(|event| event.id).collect();
        assert_eq!(ids, acked, "seed {seed}: the acknowledged events survived");
    }
}

/// A segment log that creates its own directory (as a replication log beside the store would)
/// keeps its synced frames through a power cut. Catches a missing sync of the parent after
/// creating the log's directory, and of the directory after creating a segment in it.
#[test]
fn a_segment_log_keeps_its_directory_and_segments_through_a_power_cut() {
    let root = tempfile::tempdir().unwrap();
    let disk = SimDisk::new(root.path(), Duration::ZERO).unwrap();
    let dir = root.path().join("log");
    // 200-byte segments: every batch rolls to a new segment file.
    let (mut log, _) = SegmentLog::open_on(disk.clone(), &dir, 200, 1).unwrap();
    for batch_idx in 0..6u8 {
        log.append(&[vec![batch_idx; 40], vec![batch_idx; 50]])
            .unwrap();
        log.flush(true).unwrap();
    }
    assert!(log.segments().len() > 3, "the batches rolled");
    let cut = disk.power_cut(1);
    drop(log);
    let after = tempfile::tempdir().unwrap();
    cut.restore(after.path()).unwrap();
    let (log, _) = SegmentLog::open(&after.path().join("log"), 200, 1).unwrap();
    assert_eq!(log.last_index(), 12, "every synced frame is there");
    check_frames(&log, Path::new("log"));
}

fn check_frames(log: &SegmentLog, name: &Path) {
    let frames: Vec<_> = log
        .segments()
        .iter()
        .flat_map(|segment| log.scan(segment.first_index).unwrap())
        .collect();
    assert_eq!(frames.len(), 12, "{}", name.display());
    for frame in frames {
        let batch_idx = ((frame.index - 1) / 2) as u8;
        assert!(frame.body.iter().all(|&byte| byte == batch_idx));
    }
}
