//! Acknowledged appends survive SIGKILL: a child process appends to a store from four threads
//! (so group commit batches them) and prints one `ack` line per append the store answered `Ok`;
//! the parent kills it with SIGKILL at a random moment, reopens the same directory and checks
//! the log, many rounds in a row. It catches an acknowledged event that is lost or changed, a
//! position gap, a batch that is visible in part (atomicity), history that changes across
//! restarts, and a recovery that reports a killed writer's torn tail as corruption instead of
//! truncating it.
//!
//! The child is this test binary re-executed with `CAUSEWAY_KILL_CHILD_DIR` set, so no extra
//! binary is needed. Every event's bytes are derived from (round, writer, sequence number), which
//! the event carries in its metadata, so the parent recomputes and compares every event in the
//! log, acknowledged or not. Events that were written but killed before their `ack` line are
//! allowed (at most one append per writer per round) and counted.
//!
//! `CAUSEWAY_KILL_ROUNDS` (default 12) scales the run; `CAUSEWAY_KILL_SEED` replays the kill
//! delays of a printed seed (the child's timing still varies from run to run).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use causeway_core::{Append, Config, Direction, Event, EventId, Filter, NewEvent, Position, Store};

/// Set in the child's environment: the data directory to append to.
const CHILD_DIR_VAR: &str = "CAUSEWAY_KILL_CHILD_DIR";
/// Set in the child's environment: the round number, which keeps event contents unique.
const CHILD_ROUND_VAR: &str = "CAUSEWAY_KILL_CHILD_ROUND";
/// How many kill rounds the parent runs.
const ROUNDS_VAR: &str = "CAUSEWAY_KILL_ROUNDS";
/// Replays the kill delays of an earlier run.
const SEED_VAR: &str = "CAUSEWAY_KILL_SEED";
const ROUNDS_DEFAULT: u64 = 12;
/// Name of this test, passed to the re-executed binary so libtest runs exactly it.
const TEST_NAME: &str = "acknowledged_appends_survive_sigkill";
/// Appending threads in the child; more than one, so group commit takes several appends at once.
const WRITERS: u32 = 4;
const KILL_DELAY_MS_MIN: u64 = 20;
const KILL_DELAY_MS_MAX: u64 = 150;
const BATCH_EVENTS_MAX: u64 = 4;
const PAYLOAD_BYTES_MIN: u64 = 10;
const PAYLOAD_BYTES_MAX: u64 = 2000;
const READ_PAGE_EVENTS: usize = 10_000;
/// About 60 events per segment.
const SEGMENT_BYTES: u64 = 64 * 1024;
const SIGKILL: i32 = 9;
/// The line the child prints once its store is open.
const READY_LINE: &str = "child ready:";
/// How long the parent waits for a child to open the store before calling it hung.
const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// One round in this many counts its kill delay from the spawn, so kills also land during open.
const KILL_FROM_SPAWN_ONE_IN: u64 = 4;
const SCOPE: &str = "kill";
const EVENT_TYPE: &str = "Appended";

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
        run_child(Path::new(&dir));
    }
    run_parent();
}

/// One append of the child: writer `writer` of round `round` made it as its `seq`-th append.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct AppendKey {
    round: u64,
    writer: u32,
    seq: u64,
}

/// An `ack` line: the append `key` is durable at positions `first..first + n_events`.
#[derive(Copy, Clone, Debug)]
struct Ack {
    key: AppendKey,
    first: u64,
    n_events: u64,
}

/// Both processes open the store the same way: the default durability (an append is answered
/// only after `fdatasync`, concurrent appends share one group commit), with small segments so
/// that rolls (sealing a segment, writing its `.idx`, creating the next file) happen every few
/// dozen appends and kills land inside them too.
fn config() -> Config {
    Config {
        segment_bytes: SEGMENT_BYTES,
        ..Config::default()
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A deterministic draw from an append's key and a salt, so the parent can recompute it.
fn draw(key: AppendKey, salt: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15
        ^ (key.round << 48)
        ^ (u64::from(key.writer) << 40)
        ^ key.seq
        ^ salt.rotate_right(8);
    for _ in 0..4 {
        x = xorshift(x);
    }
    x
}

fn batch_events(key: AppendKey) -> u64 {
    1 + draw(key, 0) % BATCH_EVENTS_MAX
}

fn entity(key: AppendKey) -> String {
    format!("r{}-w{}", key.round, key.writer)
}

/// Event `event_idx` of the append `key`, exactly as the child proposes it.
fn expected_event(key: AppendKey, event_idx: u64) -> NewEvent {
    let n_events = batch_events(key);
    let payload_bytes =
        PAYLOAD_BYTES_MIN + draw(key, 1 + event_idx) % (PAYLOAD_BYTES_MAX - PAYLOAD_BYTES_MIN + 1);
    let unit = format!("r{}-w{}-s{}-e{event_idx};", key.round, key.writer, key.seq);
    let payload: Vec<u8> = unit.bytes().cycle().take(payload_bytes as usize).collect();
    let metadata: BTreeMap<String, String> = [
        ("round", key.round.to_string()),
        ("writer", key.writer.to_string()),
        ("seq", key.seq.to_string()),
        ("event", event_idx.to_string()),
        ("events", n_events.to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect();
    NewEvent {
        metadata,
        ..NewEvent::new(SCOPE, entity(key), EVENT_TYPE, payload)
    }
}

fn run_child(dir: &Path) -> ! {
    let round: u64 = std::env::var(CHILD_ROUND_VAR)
        .expect("the parent sets the round")
        .parse()
        .expect("the round is a number");
    let store = Arc::new(
        Store::open(dir, config()).unwrap_or_else(|err| panic!("child open failed: {err}")),
    );
    {
        // The leading newline ends libtest's unterminated `test ... ` line, so every ack line
        // starts a line of its own.
        let mut out = std::io::stdout().lock();
        writeln!(out, "\n{READY_LINE} round {round} head {}", store.head()).unwrap();
        out.flush().unwrap();
    }
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || append_forever(&store, round, writer))
        })
        .collect();
    for writer in writers {
        if writer.join().is_err() {
            panic!("a writer thread of the child panicked");
        }
    }
    panic!("the child's writers stopped without being killed");
}

fn append_forever(store: &Store, round: u64, writer: u32) {
    for seq in 0.. {
        let key = AppendKey { round, writer, seq };
        let n_events = batch_events(key);
        let events = (0..n_events)
            .map(|event_idx| expected_event(key, event_idx))
            .collect();
        let receipt = store
            .append(Append {
                events,
                ..Append::default()
            })
            .unwrap_or_else(|err| panic!("child append {key:?} failed: {err}"));
        let first = receipt.events[0].position.0;
        let positions: Vec<u64> = receipt.events.iter().map(|c| c.position.0).collect();
        let consecutive: Vec<u64> = (first..first + n_events).collect();
        assert_eq!(positions, consecutive, "receipt of {key:?}");
        // One lock around the line and the flush: lines never interleave, and a line is in the
        // pipe before the next append starts.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ack {first} {n_events} {writer} {seq}").unwrap();
        out.flush().unwrap();
    }
}

/// The parent's kill delays; seeded from the clock unless `CAUSEWAY_KILL_SEED` is set.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = xorshift(self.0);
        self.0 % bound
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let number = text
        .trim()
        .parse()
        .unwrap_or_else(|err| panic!("{name}={text:?} is not a number: {err}"));
    Some(number)
}

fn run_parent() {
    let rounds = env_number(ROUNDS_VAR).unwrap_or(ROUNDS_DEFAULT);
    assert!(rounds > 0, "{ROUNDS_VAR} must be at least 1");
    let seed = env_number(SEED_VAR).unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        nanos as u64 | 1
    });
    println!("kill test: {rounds} rounds, seed {seed} (replay the delays with {SEED_VAR}={seed})");
    let mut rng = Rng(seed.max(1));
    let dir = tempfile::tempdir().unwrap();
    let exe = test_binary();
    let started = Instant::now();

    let mut acks: Vec<Ack> = Vec::new();
    let mut history: Vec<EventId> = Vec::new();
    let mut rounds_with_acks = 0;
    let mut rounds_with_torn_tail = 0;
    let mut unacked = Unacked::default();
    for round in 0..rounds {
        let delay_ms = KILL_DELAY_MS_MIN + rng.below(KILL_DELAY_MS_MAX - KILL_DELAY_MS_MIN + 1);
        let from = if rng.below(KILL_FROM_SPAWN_ONE_IN) == 0 {
            KillFrom::Spawn
        } else {
            KillFrom::Ready
        };
        let context = format!("round {round} (seed {seed}, killed {delay_ms} ms after {from:?})");
        let child = run_child_round(&exe, dir.path(), round, from, delay_ms, &context);
        if !child.acks.is_empty() {
            rounds_with_acks += 1;
        }
        let n_round_acks = child.acks.len();
        acks.extend(child.acks);
        let ready = match child.ready_after {
            Some(elapsed) => format!("ready after {} ms", elapsed.as_millis()),
            None => "killed before ready".to_string(),
        };

        let bytes_before = segment_files_bytes(dir.path());
        // The store must be dropped before the next child starts: it holds the directory lock.
        let store = Store::open(dir.path(), config()).unwrap_or_else(|err| {
            panic!("{context}: reopening after SIGKILL failed (a torn tail must be truncated, never reported): {err}")
        });
        if segment_files_bytes(dir.path()) < bytes_before {
            rounds_with_torn_tail += 1;
        }
        let present = check_log(&store, &mut history, &context);
        check_acks(&store, &acks, &present, &context);
        unacked = check_writer_prefixes(&acks, &present, &context);
        println!(
            "{context}: {ready}, {n_round_acks} acks, head {}, unacknowledged but present so far: {} appends, {} events",
            store.head(),
            unacked.appends,
            unacked.events
        );
        drop(store);
    }
    let n_events_acked: u64 = acks.iter().map(|ack| ack.n_events).sum();
    println!(
        "kill test summary: {rounds} rounds in {:.1} s, {} acks ({n_events_acked} events) in {rounds_with_acks} rounds, \
         {} appends ({} events) present without an ack, torn tail truncated after {rounds_with_torn_tail} kills, seed {seed}",
        started.elapsed().as_secs_f64(),
        acks.len(),
        unacked.appends,
        unacked.events,
    );
    assert!(
        !acks.is_empty() && rounds_with_acks > 0,
        "no round acknowledged anything, so nothing was checked (seed {seed})"
    );
}

/// When a round's kill delay starts counting.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum KillFrom {
    /// From the spawn: the kill may land while the child is still opening (and recovering) the
    /// store.
    Spawn,
    /// From the child's `ready` line: the kill lands while the writers append.
    Ready,
}

/// What one child did before it was killed.
struct ChildRound {
    acks: Vec<Ack>,
    /// Time from spawn to the child's `ready` line, if it got that far.
    ready_after: Option<Duration>,
}

/// The running test binary, to re-execute as the child. On Linux this is `/proc/self/exe`, which
/// still runs this very binary when cargo has meanwhile rebuilt the file on disk (where
/// `current_exe()` would name a deleted file).
fn test_binary() -> PathBuf {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe.to_path_buf()
    } else {
        std::env::current_exe().unwrap()
    }
}

/// Runs one child on `dir`, kills it `delay_ms` after `from`, and returns the acks it printed.
fn run_child_round(
    exe: &Path,
    dir: &Path,
    round: u64,
    from: KillFrom,
    delay_ms: u64,
    context: &str,
) -> ChildRound {
    let spawned = Instant::now();
    let mut child: Child = std::process::Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VAR, dir)
        .env(CHILD_ROUND_VAR, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_sender, ready) = std::sync::mpsc::channel();
    // Reads to end of file, which comes only when the child is dead: every line it flushed
    // before the kill is collected.
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("the child writes ASCII lines");
            if let Some(fields) = line.strip_prefix("ack ") {
                acks.push(parse_ack(round, fields));
            } else if line.starts_with(READY_LINE) {
                // The parent may have stopped waiting; then nobody needs to hear it.
                let _ = ready_sender.send(spawned.elapsed());
            }
        }
        acks
    });
    let mut ready_after = None;
    if from == KillFrom::Ready {
        match ready.recv_timeout(CHILD_READY_TIMEOUT) {
            Ok(elapsed) => ready_after = Some(elapsed),
            Err(RecvTimeoutError::Timeout) => {
                panic!("{context}: the child did not open the store within {CHILD_READY_TIMEOUT:?}")
            }
            // The child closed its stdout without opening the store; its status says why.
            Err(RecvTimeoutError::Disconnected) => {}
        }
    }
    std::thread::sleep(Duration::from_millis(delay_ms));
    if let Some(status) = child.try_wait().unwrap() {
        panic!("{context}: the child exited on its own before the kill: {status}");
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(SIGKILL),
        "{context}: the child ended with {status}, not by the kill"
    );
    let acks = reader
        .join()
        .unwrap_or_else(|_| panic!("{context}: reading the child's acks failed"));
    if ready_after.is_none() {
        ready_after = ready.try_recv().ok();
    }
    ChildRound { acks, ready_after }
}

fn parse_ack(round: u64, fields: &str) -> Ack {
    let numbers: Vec<u64> = fields
        .split(' ')
        .map(|field| {
            field
                .parse()
                .unwrap_or_else(|err| panic!("bad ack line {fields:?}: {err}"))
        })
        .collect();
    let [first, n_events, writer, seq] = numbers[..] else {
        panic!("ack line {fields:?} does not have four fields");
    };
    Ack {
        key: AppendKey {
            round,
            writer: u32::try_from(writer).unwrap(),
            seq,
        },
        first,
        n_events,
    }
}

/// Bytes of the segment files up to the last byte of each that is not zero (after it comes
/// reserved space): it shrinks across an open only when recovery cut a tail.
fn segment_files_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join("events")) else {
        return 0;
    };
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .map(|path| {
            let bytes = std::fs::read(path).unwrap();
            bytes
                .iter()
                .rposition(|&byte| byte != 0)
                .map_or(0, |last| last as u64 + 1)
        })
        .sum()
}

/// Reads the whole log forward and checks every event: positions 1..=head with no gap, the
/// content recomputed from the event's own key, versions dense per entity, every batch whole and
/// contiguous, and the log up to the previous round's head unchanged (by event id). Returns the
/// first position of every append present.
fn check_log(store: &Store, history: &mut Vec<EventId>, context: &str) -> HashMap<AppendKey, u64> {
    let head = store.head().0;
    assert!(
        head >= history.len() as u64,
        "{context}: head {head} is below the previous round's head {}",
        history.len()
    );
    let mut present = HashMap::new();
    let mut versions: HashMap<String, u64> = HashMap::new();
    // The batch being walked: its key, first position and the next event index expected in it.
    let mut open_batch: Option<(AppendKey, u64, u64)> = None;
    let mut next_position = 1;
    let mut from = Position(1);
    loop {
        let page = store
            .read_log(
                from,
                Direction::Forward,
                READ_PAGE_EVENTS,
                &Filter::default(),
            )
            .unwrap_or_else(|err| panic!("{context}: read_log from {from} failed: {err}"));
        for event in &page.events {
            let position = event.position.0;
            assert_eq!(position, next_position, "{context}: gap in the log");
            let (key, event_idx) = identify(event, context);
            let expected = expected_event(key, event_idx);
            let what =
                format!("{context}: event at position {position} ({key:?} event {event_idx})");
            assert_eq!(event.scope, expected.scope, "{what}: scope");
            assert_eq!(event.entity, expected.entity, "{what}: entity");
            assert_eq!(event.event_type, expected.event_type, "{what}: type");
            assert_eq!(event.metadata, expected.metadata, "{what}: metadata");
            assert!(event.payload == expected.payload, "{what}: payload differs");

            let version = versions.entry(event.entity.clone()).or_default();
            *version += 1;
            assert_eq!(event.version.0, *version, "{what}: version");

            let (batch_key, first, next_idx) = match open_batch.take() {
                Some(batch) => batch,
                None => (key, position, 0),
            };
            assert_eq!(
                (key, event_idx),
                (batch_key, next_idx),
                "{what}: batch {batch_key:?} from position {first} is interleaved, cut or starts midway"
            );
            if next_idx + 1 == batch_events(batch_key) {
                let earlier = present.insert(batch_key, first);
                assert!(earlier.is_none(), "{what}: append appears twice");
            } else {
                open_batch = Some((batch_key, first, next_idx + 1));
            }

            let idx = (position - 1) as usize;
            if idx < history.len() {
                assert_eq!(
                    event.id, history[idx],
                    "{what}: an event the previous round read has changed"
                );
            } else {
                history.push(event.id);
            }
            next_position += 1;
        }
        if page.end {
            break;
        }
        assert!(
            page.next > from,
            "{context}: read_log made no progress at {from}"
        );
        from = page.next;
    }
    assert!(
        open_batch.is_none(),
        "{context}: the log ends inside a batch: {open_batch:?} (a partial append is visible)"
    );
    assert_eq!(
        next_position - 1,
        head,
        "{context}: the forward read ends before the head"
    );
    assert_eq!(history.len() as u64, head, "{context}: history length");
    present
}

/// The append key and event index an event carries in its metadata.
fn identify(event: &Event, context: &str) -> (AppendKey, u64) {
    let field = |name: &str| -> u64 {
        event
            .metadata
            .get(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "{context}: event at position {} has no numeric metadata {name:?}: {:?}",
                    event.position, event.metadata
                )
            })
    };
    let key = AppendKey {
        round: field("round"),
        writer: u32::try_from(field("writer")).unwrap(),
        seq: field("seq"),
    };
    (key, field("event"))
}

/// Every append ever acknowledged is present, whole, at the positions its ack named.
fn check_acks(store: &Store, acks: &[Ack], present: &HashMap<AppendKey, u64>, context: &str) {
    let head = store.head().0;
    for ack in acks {
        let last = ack.first + ack.n_events - 1;
        assert!(
            head >= last,
            "{context}: head {head} is below acknowledged {ack:?}"
        );
        assert_eq!(
            ack.n_events,
            batch_events(ack.key),
            "{context}: ack {ack:?} names the wrong event count"
        );
        assert_eq!(
            present.get(&ack.key),
            Some(&ack.first),
            "{context}: acknowledged {ack:?} is missing or at another position"
        );
    }
}

#[derive(Debug, Default)]
struct Unacked {
    appends: u64,
    events: u64,
}

/// Each writer appends one batch at a time and prints its ack before the next, so per writer and
/// round the appends present are sequence numbers `0..p`, the acked ones `0..a`, and `p - a` is 0
/// or 1 (the append in flight when the kill came). Returns what is present without an ack.
fn check_writer_prefixes(
    acks: &[Ack],
    present: &HashMap<AppendKey, u64>,
    context: &str,
) -> Unacked {
    let acked: HashSet<AppendKey> = acks.iter().map(|ack| ack.key).collect();
    assert_eq!(
        acked.len(),
        acks.len(),
        "{context}: an append was acked twice"
    );
    let mut present_seqs: HashMap<(u64, u32), Vec<u64>> = HashMap::new();
    for key in present.keys() {
        present_seqs
            .entry((key.round, key.writer))
            .or_default()
            .push(key.seq);
    }
    let mut acked_seqs: HashMap<(u64, u32), Vec<u64>> = HashMap::new();
    for key in acked {
        acked_seqs
            .entry((key.round, key.writer))
            .or_default()
            .push(key.seq);
    }
    for (&(round, writer), seqs) in &mut acked_seqs {
        seqs.sort_unstable();
        assert!(
            seqs.iter().copied().eq(0..seqs.len() as u64),
            "{context}: round {round} writer {writer} has acks out of order: {seqs:?}"
        );
    }
    let mut unacked = Unacked::default();
    for (&(round, writer), seqs) in &mut present_seqs {
        seqs.sort_unstable();
        let n_present = seqs.len() as u64;
        assert!(
            seqs.iter().copied().eq(0..n_present),
            "{context}: round {round} writer {writer} has appends present out of order: {seqs:?}"
        );
        let n_acked = acked_seqs.get(&(round, writer)).map_or(0, Vec::len) as u64;
        assert!(
            n_present == n_acked || n_present == n_acked + 1,
            "{context}: round {round} writer {writer} has {n_present} appends present but {n_acked} acked"
        );
        if n_present > n_acked {
            let key = AppendKey {
                round,
                writer,
                seq: n_acked,
            };
            unacked.appends += 1;
            unacked.events += batch_events(key);
        }
    }
    unacked
}
