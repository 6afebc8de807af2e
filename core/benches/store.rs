//! Storage benchmark of the event store: what one disk and one process can do.
//!
//! A plain `main` that prints one aligned line per figure; it asserts nothing about speed. It
//! measures, in order: the disk's own `write` + `fdatasync` latency (the floor under every
//! durable append), appends in durable and relaxed mode with 1 and 16 writer threads and with
//! batches, the cost of checks on durable appends (an expected version, three CEL gates) against
//! plain appends run between them, then a store filled to `CAUSEWAY_BENCH_EVENTS` events:
//! sequential and filtered log reads, index memory per event, and the time to reopen it.
//! `docs/BENCHMARKS.md` says how to run it and records a run.
//!
//! Knobs, all read from the environment at run time:
//! - `CAUSEWAY_BENCH_EVENTS` (default 1,000,000): events in the store that is read and reopened.
//! - `CAUSEWAY_BENCH_SECONDS` (default 3): seconds per write scenario; each also stops at
//!   [`WRITE_EVENTS_MAX`] events.
//! - `CAUSEWAY_BENCH_REOPEN_10M=1`: also fill a 10M-event store and time its reopen (slow).
//! - `CAUSEWAY_BENCH_DIR`: the parent of the data directory; the system temp dir by default.
//!   Every store lives in a fresh temporary directory that is removed at the end.
//! - `CAUSEWAY_BENCH_ONLY`: a comma-separated subset of the sections `fsync`, `append`,
//!   `checks` and `read` (fill, reopen, index, reads) to run; all of them by default.

#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use causeway_core::{
    Append, Config, Direction, Durability, Error, Expected, ExpectedVersion, Filter,
    GateDefinition, NewEvent, Position, QueryItem, Receipt, Rule, Store, Version,
};
use hdrhistogram::Histogram;
use num_format::{Locale, ToFormattedString as _};

/// Events in the read and reopen store unless `CAUSEWAY_BENCH_EVENTS` says otherwise.
const EVENTS_DEFAULT: u64 = 1_000_000;
/// Seconds per write scenario unless `CAUSEWAY_BENCH_SECONDS` says otherwise.
const SECONDS_DEFAULT: f64 = 3.0;
/// Events in the optional large reopen store.
const EVENTS_10M: u64 = 10_000_000;
/// The longest latency told apart from longer ones (a minute); slower calls count as this.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// A write scenario stops at this many events even if its time is not up.
const WRITE_EVENTS_MAX: u64 = 2_000_000;
/// How long the raw fsync probe runs, per variant.
const FSYNC_PROBE: Duration = Duration::from_secs(1);
/// Bytes written before each `fdatasync` in the probe: one page.
const FSYNC_WRITE_BYTES: usize = 4096;
/// Payload bytes of every generated event.
const PAYLOAD_BYTES: usize = 256;
/// Distinct entities in generated events, spread over [`SCOPES`].
const ENTITIES: u64 = 10_000;
/// Scopes the entities are spread over.
const SCOPES: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
/// Event types, picked uniformly.
const TYPES: [&str; 8] = [
    "OrderPlaced",
    "OrderPaid",
    "OrderPacked",
    "OrderShipped",
    "OrderDelivered",
    "OrderReturned",
    "OrderRefunded",
    "OrderCancelled",
];
/// Distinct `customer:` tags; every event carries one, so one of them matches ~0.1% of events.
const CUSTOMERS: u64 = 1_000;
/// Distinct `region:` tags; half of the events carry one, so one matches ~12.5% of events.
const REGIONS: u64 = 4;
/// Events per append while filling the read store.
const FILL_BATCH_EVENTS: usize = 1_000;
/// Events per page of a log read (the store's maximum).
const READ_PAGE_EVENTS: usize = 10_000;
/// Threads in the concurrent write scenarios.
const WRITERS_MANY: usize = 16;
/// Appends each writer makes before timing starts, so segment creation is not measured.
const WARMUP_APPENDS: usize = 5;
/// Reopens of the filled store; the first may find fewer pages cached than the later ones.
const REOPENS: usize = 3;
/// Rounds of the check scenarios. Each round runs plain appends, then appends with an expected
/// version, then appends through gates; one more plain run closes the last round, so every
/// checked run sits between two plain runs on this noisy machine.
const CHECK_ROUNDS: usize = 2;
/// The gates of the gate scenario: one reads the JSON payload, one the tags and metadata, one
/// asks the store for a fact. Each is bound to every scope and type the benchmark writes.
const CEL_GATES: [(&str, &str); 3] = [
    (
        "bench-payload",
        "event.payload.amount >= 0 && size(event.payload.pad) > 0",
    ),
    (
        "bench-tags",
        "event.tags.exists(t, t.startsWith('customer:')) && event.metadata.channel == 'web'",
    ),
    ("bench-fact", "version(event.scope, event.entity) < 1000000"),
];
/// The check scenarios, in the order each round runs them.
const CHECKS: [Check; 3] = [Check::None, Check::Expected, Check::Gates];

/// What an append of the check scenarios must pass besides the store's own validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Nothing: a plain append, the baseline.
    None,
    /// `Append.expected` names the entity's current version (`ExpectedVersion::Exact`).
    Expected,
    /// The three [`CEL_GATES`], registered on the store.
    Gates,
}

impl Check {
    fn label(self) -> &'static str {
        match self {
            Check::None => "none",
            Check::Expected => "expected",
            Check::Gates => "3 cel gates",
        }
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let n_events = env_u64("CAUSEWAY_BENCH_EVENTS").unwrap_or(EVENTS_DEFAULT);
    let seconds = env_f64("CAUSEWAY_BENCH_SECONDS").unwrap_or(SECONDS_DEFAULT);
    let reopen_10m = std::env::var("CAUSEWAY_BENCH_REOPEN_10M").is_ok_and(|value| value == "1");
    let write_time = Duration::from_secs_f64(seconds);
    let root = match std::env::var_os("CAUSEWAY_BENCH_DIR") {
        Some(parent) => {
            fs::create_dir_all(&parent).unwrap();
            tempfile::Builder::new()
                .prefix("causeway-bench-")
                .tempdir_in(parent)
                .unwrap()
        }
        None => tempfile::Builder::new()
            .prefix("causeway-bench-")
            .tempdir()
            .unwrap(),
    };
    println!(
        "causeway-core store benchmark: data in {}, {} events to read, {seconds} s per write scenario, {} CPUs",
        root.path().display(),
        thousands(n_events),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    let only = std::env::var("CAUSEWAY_BENCH_ONLY").ok();
    let runs = |section: &str| {
        only.as_deref()
            .is_none_or(|only| only.split(',').any(|name| name.trim() == section))
    };

    if runs("fsync") {
        fsync_probe(root.path());
    }

    let scenarios: [(usize, Durability, usize); 6] = [
        (1, Durability::Fsync, 1),
        (WRITERS_MANY, Durability::Fsync, 1),
        (1, Durability::Fsync, 100),
        (1, Durability::Relaxed, 1),
        (WRITERS_MANY, Durability::Relaxed, 1),
        (1, Durability::Relaxed, 100),
    ];
    for (scenario_idx, (writers, durability, events_per_append)) in
        scenarios.into_iter().enumerate().filter(|_| runs("append"))
    {
        let dir = root.path().join(format!("append-{scenario_idx}"));
        append_scenario(&dir, writers, durability, events_per_append, write_time);
        fs::remove_dir_all(&dir).unwrap();
    }

    if runs("checks") {
        checks(root.path(), write_time);
    }

    if runs("read") {
        let dir = root.path().join("read");
        fill(&dir, n_events);
        let store = reopens(&dir, n_events);
        reads(&store, &dir, n_events);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    if reopen_10m {
        let dir = root.path().join("reopen-10m");
        fill(&dir, EVENTS_10M);
        drop(reopens(&dir, EVENTS_10M));
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// Times `write` + `fdatasync` of one page, appending (the file grows, as a segment does, so
/// the filesystem also commits the new size) and overwriting in place (data only).
fn fsync_probe(dir: &Path) {
    for (label, grow) in [("append", true), ("overwrite", false)] {
        let path = dir.join(format!("fsync-probe-{label}"));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .unwrap();
        let page = vec![0xa5u8; FSYNC_WRITE_BYTES];
        if !grow {
            file.write_all(&page).unwrap();
            file.sync_all().unwrap();
        }
        let mut latencies = latency_histogram();
        let started = Instant::now();
        while started.elapsed() < FSYNC_PROBE {
            let op_started = Instant::now();
            if grow {
                file.write_all(&page).unwrap();
            } else {
                std::os::unix::fs::FileExt::write_all_at(&file, &page, 0).unwrap();
            }
            file.sync_data().unwrap();
            record(&mut latencies, op_started.elapsed());
        }
        let elapsed = started.elapsed();
        let n_ops = latencies.len();
        row(
            ["fsync", "4 KiB", label, ""],
            format!("{} ops/s", thousands(per_second(n_ops, elapsed))),
            percentiles(&latencies),
        );
        drop(file);
        fs::remove_file(&path).unwrap();
    }
}

/// A closed loop: `writers` threads each append `events_per_append` events, wait for the
/// answer, and go again, until `time` passes or [`WRITE_EVENTS_MAX`] events are written.
fn append_scenario(
    dir: &Path,
    writers: usize,
    durability: Durability,
    events_per_append: usize,
    time: Duration,
) {
    let store = Store::open(
        dir,
        Config {
            durability,
            ..Config::default()
        },
    )
    .unwrap();
    let run = closed_loop(&store, writers, time, |writer_idx| RandomAppends {
        events: Events::new(writer_idx as u64 + 1),
        events_per_append,
    });
    row(
        [
            "append",
            &format!("{writers} writer{}", if writers == 1 { "" } else { "s" }),
            match durability {
                Durability::Fsync => "durable",
                Durability::Relaxed => "relaxed",
            },
            &format!("{events_per_append} ev/req"),
        ],
        format!("{} events/s", thousands(run.events_per_second())),
        percentiles(&run.latencies),
    );
    store.close().unwrap();
}

/// Durable appends of one event by [`WRITERS_MANY`] threads, plain and with each [`Check`],
/// interleaved over [`CHECK_ROUNDS`] rounds; then each check's throughput and latency against
/// the plain runs, pooled over the rounds.
fn checks(root: &Path, time: Duration) {
    let order = (0..CHECK_ROUNDS).flat_map(|_| CHECKS).chain([Check::None]);
    let mut pooled: Vec<(Check, Run)> = CHECKS
        .iter()
        .map(|&check| (check, Run::default()))
        .collect();
    for (run_idx, check) in order.enumerate() {
        let dir = root.join(format!("checks-{run_idx}"));
        let run = check_scenario(&dir, check, time);
        fs::remove_dir_all(&dir).unwrap();
        let refused = match check {
            Check::None => String::new(),
            Check::Expected => format!("   {} conflicts", run.refused),
            Check::Gates => format!("   {} denied", run.refused),
        };
        row(
            [
                "checks",
                check.label(),
                "durable",
                &format!("{WRITERS_MANY} writers"),
            ],
            format!("{} events/s", thousands(run.events_per_second())),
            format!("{}{refused}", percentiles(&run.latencies)),
        );
        let (_, total) = pooled
            .iter_mut()
            .find(|(pooled_check, _)| *pooled_check == check)
            .expect("every check is pooled");
        total.add(run);
    }
    let (plain, checked) = pooled.split_first_mut().expect("Check::None is first");
    let plain = &mut plain.1;
    let (plain_p50, plain_p99) = (
        quantile(&plain.latencies, 0.5),
        quantile(&plain.latencies, 0.99),
    );
    for (check, run) in checked {
        let (p50, p99) = (
            quantile(&run.latencies, 0.5),
            quantile(&run.latencies, 0.99),
        );
        row(
            ["checks", check.label(), "vs none", "pooled"],
            format!(
                "{:.2}x events/s",
                run.events_per_second() as f64 / plain.events_per_second().max(1) as f64
            ),
            format!(
                "p50 {} vs {} ms ({:.2}x)  p99 {} vs {} ms ({:.2}x)",
                millis(p50),
                millis(plain_p50),
                p50.as_secs_f64() / plain_p50.as_secs_f64().max(1e-9),
                millis(p99),
                millis(plain_p99),
                p99.as_secs_f64() / plain_p99.as_secs_f64().max(1e-9),
            ),
        );
    }
}

/// One run of a check scenario on a fresh durable store.
fn check_scenario(dir: &Path, check: Check, time: Duration) -> Run {
    let store = Store::open(
        dir,
        Config {
            durability: Durability::Fsync,
            ..Config::default()
        },
    )
    .unwrap();
    if check == Check::Gates {
        for (name, expression) in CEL_GATES {
            store
                .register_gate(GateDefinition {
                    name: name.to_string(),
                    scopes: SCOPES.iter().map(ToString::to_string).collect(),
                    types: TYPES.iter().map(ToString::to_string).collect(),
                    rule: Rule::Cel {
                        expression: expression.to_string(),
                    },
                })
                .unwrap();
        }
    }
    let run = closed_loop(&store, WRITERS_MANY, time, |writer_idx| {
        OwnedAppends::new(writer_idx, check)
    });
    store.close().unwrap();
    run
}

/// What a writer thread appends in a closed loop, and what it makes of each answer.
trait Source: Send {
    /// The next append.
    fn next(&mut self) -> Append;
    /// The answer to the last append; returns whether the store refused it (a conflict or a
    /// denial, which the benchmark counts), and panics on any other error.
    fn answer(&mut self, answer: causeway_core::Result<Receipt>) -> bool;
}

/// Random events from [`Events`], `events_per_append` at a time; every append must succeed.
struct RandomAppends {
    events: Events,
    events_per_append: usize,
}

impl Source for RandomAppends {
    fn next(&mut self) -> Append {
        self.events.append(self.events_per_append)
    }

    fn answer(&mut self, answer: causeway_core::Result<Receipt>) -> bool {
        answer.unwrap();
        false
    }
}

/// One event per append on the entities this writer owns (those whose number is the writer's
/// index modulo [`WRITERS_MANY`]), with a JSON payload, tracking each entity's version so that
/// an append that names it expects the right one.
struct OwnedAppends {
    events: Events,
    writer_idx: u64,
    check: Check,
    /// The current version of each owned entity, by `entity_idx / WRITERS_MANY`.
    versions: Vec<u64>,
    /// The owned entity of the append in flight.
    in_flight: usize,
}

impl OwnedAppends {
    fn new(writer_idx: usize, check: Check) -> OwnedAppends {
        OwnedAppends {
            events: Events::new(1_000 + writer_idx as u64),
            writer_idx: writer_idx as u64,
            check,
            versions: vec![0; (ENTITIES / WRITERS_MANY as u64) as usize],
            in_flight: 0,
        }
    }
}

impl Source for OwnedAppends {
    fn next(&mut self) -> Append {
        self.in_flight = self.events.rng.below(self.versions.len() as u64) as usize;
        let entity_idx = self.in_flight as u64 * WRITERS_MANY as u64 + self.writer_idx;
        let event = self.events.json_event(entity_idx);
        let expected = match self.check {
            Check::Expected => vec![Expected {
                scope: event.scope.clone(),
                entity: event.entity.clone(),
                version: ExpectedVersion::Exact(Version(self.versions[self.in_flight])),
            }],
            Check::None | Check::Gates => Vec::new(),
        };
        Append {
            expected,
            ..Append::new(vec![event])
        }
    }

    fn answer(&mut self, answer: causeway_core::Result<Receipt>) -> bool {
        match answer {
            Ok(_) => {
                self.versions[self.in_flight] += 1;
                false
            }
            Err(Error::Conflict { actual, .. }) => {
                self.versions[self.in_flight] = actual.0;
                true
            }
            Err(Error::Denied { .. }) => true,
            Err(err) => panic!("append failed: {err}"),
        }
    }
}

/// What a closed loop measured.
struct Run {
    /// Latency of every timed `append` call.
    latencies: Histogram<u64>,
    /// Events the timed appends committed.
    n_events: u64,
    /// Timed appends the store refused (conflicts, denials).
    refused: u64,
    elapsed: Duration,
}

impl Default for Run {
    fn default() -> Run {
        Run {
            latencies: latency_histogram(),
            n_events: 0,
            refused: 0,
            elapsed: Duration::ZERO,
        }
    }
}

impl Run {
    fn events_per_second(&self) -> u64 {
        per_second(self.n_events, self.elapsed)
    }

    /// Pools another run into this one.
    fn add(&mut self, other: Run) {
        self.latencies.add(&other.latencies).unwrap();
        self.n_events += other.n_events;
        self.refused += other.refused;
        self.elapsed += other.elapsed;
    }
}

/// Runs `writers` threads, each with the source `new_source(writer_idx)`: each appends, waits
/// for the answer and goes again, until `time` passes or [`WRITE_EVENTS_MAX`] events are
/// written. [`WARMUP_APPENDS`] appends per thread before the start are not timed. Latency is
/// per `append` call; building the append is not timed.
fn closed_loop<S: Source>(
    store: &Store,
    writers: usize,
    time: Duration,
    new_source: impl Fn(usize) -> S + Sync,
) -> Run {
    let written = AtomicU64::new(0);
    let start = Barrier::new(writers + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|writer_idx| {
                let (written, start, new_source) = (&written, &start, &new_source);
                scope.spawn(move || {
                    let mut source = new_source(writer_idx);
                    for _ in 0..WARMUP_APPENDS {
                        let answer = store.append(source.next());
                        source.answer(answer);
                    }
                    start.wait();
                    let started = Instant::now();
                    let mut run = Run::default();
                    while started.elapsed() < time
                        && written.load(Ordering::Relaxed) < WRITE_EVENTS_MAX
                    {
                        let append = source.next();
                        let n_events = append.events.len() as u64;
                        let append_started = Instant::now();
                        let answer = store.append(append);
                        record(&mut run.latencies, append_started.elapsed());
                        if source.answer(answer) {
                            run.refused += 1;
                        } else {
                            run.n_events += n_events;
                            written.fetch_add(n_events, Ordering::Relaxed);
                        }
                    }
                    run
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let mut total = Run::default();
        for handle in handles {
            let run = handle.join().unwrap();
            total.latencies.add(&run.latencies).unwrap();
            total.n_events += run.n_events;
            total.refused += run.refused;
        }
        total.elapsed = started.elapsed();
        total
    })
}

/// Fills a new store with `n_events` generated events, in relaxed mode and large batches.
fn fill(dir: &Path, n_events: u64) {
    let store = Store::open(
        dir,
        Config {
            durability: Durability::Relaxed,
            ..Config::default()
        },
    )
    .unwrap();
    let mut events = Events::new(0);
    let started = Instant::now();
    let mut n_written = 0;
    while n_written < n_events {
        let batch_events = (n_events - n_written).min(FILL_BATCH_EVENTS as u64);
        store.append(events.append(batch_events as usize)).unwrap();
        n_written += batch_events;
    }
    // Closing syncs the active segment, so the fill time includes getting it onto the disk.
    store.close().unwrap();
    let elapsed = started.elapsed();
    row(
        [
            "fill",
            &format!("{} ev", short_count(n_events)),
            "relaxed",
            &format!("{FILL_BATCH_EVENTS} ev/req"),
        ],
        format!("{} events/s", thousands(per_second(n_events, elapsed))),
        format!(
            "{:.1} s   {} MB of log",
            elapsed.as_secs_f64(),
            thousands(log_bytes(dir) / 1_000_000)
        ),
    );
}

/// Reads the whole log, then three filters of different selectivity. The segments were just
/// written, so they are likely in the page cache: these are warm reads.
fn reads(store: &Store, dir: &Path, n_events: u64) {
    let log_bytes = log_bytes(dir);
    let scans = [
        ("all", Filter::default()),
        ("type", type_filter(TYPES[0])),
        ("tag 12%", tag_filter("region:0")),
        ("tag 0.1%", tag_filter("customer:7")),
    ];
    for (label, filter) in scans {
        let started = Instant::now();
        let (n_read, n_calls) = read_all(store, &filter);
        let elapsed = started.elapsed();
        let extra = if filter == Filter::default() {
            assert_eq!(n_read, n_events, "a full read returns every event");
            format!(
                "{:.0} MB/s   {} ms",
                log_bytes as f64 / 1e6 / elapsed.as_secs_f64(),
                thousands(elapsed.as_millis() as u64)
            )
        } else {
            format!(
                "{} matched   {} ms   {n_calls} calls",
                thousands(n_read),
                thousands(elapsed.as_millis() as u64)
            )
        };
        row(
            [
                "read",
                label,
                "forward",
                &format!("{READ_PAGE_EVENTS}/page"),
            ],
            format!("{} events/s", thousands(per_second(n_read, elapsed))),
            extra,
        );
    }
}

/// Reopens a filled store [`REOPENS`] times, timing each open, reports index memory, and
/// returns the store of the last open.
fn reopens(dir: &Path, n_events: u64) -> Store {
    let mut last = None;
    for reopen_idx in 1..=REOPENS {
        // Drop the previous store first: its lock must be released before the next open.
        drop(last.take());
        let rss_before = rss_bytes();
        let started = Instant::now();
        let store = Store::open(dir, Config::default()).unwrap();
        let elapsed = started.elapsed();
        let rss_after = rss_bytes();
        assert_eq!(store.head(), Position(n_events), "reopen finds every event");
        let rss = match (rss_before, rss_after) {
            (Some(before), Some(after)) => format!(
                "   rss {} -> {} MB",
                thousands(before / 1_000_000),
                thousands(after / 1_000_000)
            ),
            _ => String::new(),
        };
        row(
            [
                "reopen",
                &format!("{} ev", short_count(n_events)),
                &format!("#{reopen_idx}"),
                "",
            ],
            format!("{} ms", thousands(elapsed.as_millis() as u64)),
            format!("{} events/s{rss}", thousands(per_second(n_events, elapsed))),
        );
        if reopen_idx == REOPENS {
            let heap_bytes = store.index_heap_bytes() as u64;
            row(
                ["index", &format!("{} ev", short_count(n_events)), "", ""],
                format!("{} B/event", thousands(heap_bytes / n_events.max(1))),
                format!("{} MB heap", thousands(heap_bytes / 1_000_000)),
            );
        }
        last = Some(store);
    }
    last.expect("REOPENS is at least 1")
}

/// Pages through the log forward with `filter`; returns events read and calls made.
fn read_all(store: &Store, filter: &Filter) -> (u64, u64) {
    let mut from = Position(1);
    let (mut n_read, mut n_calls) = (0, 0);
    loop {
        let batch = store
            .read_log(from, Direction::Forward, READ_PAGE_EVENTS, filter)
            .unwrap();
        n_read += batch.events.len() as u64;
        n_calls += 1;
        std::hint::black_box(&batch.events);
        if batch.end {
            return (n_read, n_calls);
        }
        from = batch.next;
    }
}

fn type_filter(event_type: &str) -> Filter {
    Filter {
        items: vec![QueryItem {
            types: vec![event_type.to_string()],
            tags: vec![],
        }],
        ..Filter::default()
    }
}

fn tag_filter(tag: &str) -> Filter {
    Filter {
        items: vec![QueryItem {
            types: vec![],
            tags: vec![tag.to_string()],
        }],
        ..Filter::default()
    }
}

/// A deterministic stream of generated events: random entity, type and tags, fixed-size payload.
struct Events {
    rng: SplitMix,
}

impl Events {
    fn new(seed: u64) -> Events {
        Events {
            rng: SplitMix(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xc0ff_ee00),
        }
    }

    fn append(&mut self, n_events: usize) -> Append {
        Append::new((0..n_events).map(|_| self.event()).collect())
    }

    fn event(&mut self) -> NewEvent {
        let entity_idx = self.rng.below(ENTITIES);
        let mut payload = vec![0u8; PAYLOAD_BYTES];
        for chunk in payload.chunks_mut(8) {
            let word = self.rng.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        NewEvent {
            content_type: "application/octet-stream".to_string(),
            ..self.event_of(entity_idx, payload)
        }
    }

    /// An event of entity `entity_idx` whose payload is [`PAYLOAD_BYTES`] of JSON,
    /// `{"amount": .., "pad": ".."}`, and whose metadata names a channel: what the gates of
    /// [`CEL_GATES`] read.
    fn json_event(&mut self, entity_idx: u64) -> NewEvent {
        let amount = self.rng.below(100_000);
        let head = format!(r#"{{"amount": {amount}, "pad": ""#);
        let pad_len = PAYLOAD_BYTES - head.len() - 2;
        let pad: String = (0..pad_len)
            .map(|_| char::from(b'a' + self.rng.below(26) as u8))
            .collect();
        let payload = format!(r#"{head}{pad}"}}"#).into_bytes();
        debug_assert_eq!(payload.len(), PAYLOAD_BYTES);
        NewEvent {
            content_type: "application/json".to_string(),
            metadata: [("channel".to_string(), "web".to_string())].into(),
            ..self.event_of(entity_idx, payload)
        }
    }

    /// An event of entity `entity_idx` with a random type and tags.
    fn event_of(&mut self, entity_idx: u64, payload: Vec<u8>) -> NewEvent {
        let scope = SCOPES[(entity_idx % SCOPES.len() as u64) as usize];
        let event_type = TYPES[self.rng.below(TYPES.len() as u64) as usize];
        let mut tags = vec![format!("customer:{}", self.rng.below(CUSTOMERS))];
        if self.rng.below(2) == 0 {
            tags.push(format!("region:{}", self.rng.below(REGIONS)));
        }
        NewEvent {
            tags,
            ..NewEvent::new(scope, format!("order-{entity_idx}"), event_type, payload)
        }
    }
}

/// splitmix64: enough randomness for spreading events, with no dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// Prints one figure: four label columns, the main value right-aligned, then details.
fn row(labels: [&str; 4], value: String, detail: String) {
    let [group, what, mode, unit] = labels;
    println!("{group:<7} {what:<11} {mode:<10} {unit:<12} {value:>20}   {detail}");
}

/// An empty latency record, in nanoseconds to three significant digits up to
/// [`LATENCY_NS_MAX`]: memory stays constant however many appends a run times, and a quantile
/// is off by at most 0.1%.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap()
}

/// Records `latency`, clamped to the histogram's range.
fn record(latencies: &mut Histogram<u64>, latency: Duration) {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    latencies.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// `p50 .. ms  p99 .. ms  max .. ms` over the latencies.
fn percentiles(latencies: &Histogram<u64>) -> String {
    if latencies.is_empty() {
        return "no samples".to_string();
    }
    format!(
        "p50 {} ms  p99 {} ms  max {} ms  ({} samples)",
        millis(quantile(latencies, 0.5)),
        millis(quantile(latencies, 0.99)),
        millis(quantile(latencies, 1.0)),
        thousands(latencies.len())
    )
}

/// The latency at `quantile` (0 to 1); zero when there are none.
fn quantile(latencies: &Histogram<u64>, quantile: f64) -> Duration {
    Duration::from_nanos(latencies.value_at_quantile(quantile))
}

/// Milliseconds with about three significant digits.
fn millis(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    match ms {
        ms if ms < 1.0 => format!("{ms:.3}"),
        ms if ms < 10.0 => format!("{ms:.2}"),
        ms => format!("{ms:.1}"),
    }
}

fn per_second(count: u64, elapsed: Duration) -> u64 {
    (count as f64 / elapsed.as_secs_f64().max(1e-9)).round() as u64
}

/// `1234567` as `1,234,567`.
fn thousands(value: u64) -> String {
    value.to_formatted_string(&Locale::en)
}

/// `1000000` as `1M`, `100000` as `100k`; other values spelled out.
fn short_count(value: u64) -> String {
    match value {
        value if value >= 1_000_000 && value.is_multiple_of(1_000_000) => {
            format!("{}M", value / 1_000_000)
        }
        value if value >= 1_000 && value.is_multiple_of(1_000) => format!("{}k", value / 1_000),
        value => thousands(value),
    }
}

/// Bytes of the segment files (not the sidecar indexes) under a store directory.
fn log_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir.join("events"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .map(|path| fs::metadata(path).unwrap().len())
        .sum()
}

/// The resident set size of this process, from `/proc/self/status`; `None` off Linux.
fn rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let parsed = value.replace(['_', ','], "").parse().unwrap_or_else(|err| {
        panic!("{name}={value:?} is not a whole number: {err}");
    });
    Some(parsed)
}

fn env_f64(name: &str) -> Option<f64> {
    let value = std::env::var(name).ok()?;
    let parsed = value.parse().unwrap_or_else(|err| {
        panic!("{name}={value:?} is not a number of seconds: {err}");
    });
    Some(parsed)
}
