//! `causeway bench`: a gRPC load generator that counts a gRPC error as an error.
//!
//! It drives a running server over N separate HTTP/2 connections with M requests in flight,
//! each a closed loop (`load.rs`), bounded by a request count, a duration or both, and reports
//! requests/s, events/s, latency percentiles (HdrHistogram) and failures by gRPC code. The
//! workloads are `append` (events per request, payload size, entity count and distribution,
//! expected versions, gates), `read` (the log from position 1 in pages), `subscribe` (K
//! subscribers following live while a writer appends at a steady rate; `subscribe.rs`) and
//! `head` (the cheapest RPC: the ceiling of the RPC layer, against which other figures read as
//! ratios; `--ceiling` measures it in the same run).
//!
//! Invariants the report relies on:
//! - Nothing is cancelled: a request in flight when the run ends finishes, so every request is
//!   either acknowledged or failed with a code.
//! - The head check: the server's head must move by exactly the events acknowledged during the
//!   run. Each run writes to its own new scope (`bench-<run id>`), but the head is global, so
//!   any other writer on the server during the run (or `--record-denials` recording refusals)
//!   makes the check fail. It is meant to: the tool cannot tell those apart from lost or
//!   phantom writes.
//! - The bench runs on its own runtime thread (`--threads` workers), so the client's share of
//!   the CPU is a setting, not an accident of the CLI's single-threaded runtime.
//! - Appends go out as bytes the bench encodes itself and come back decoded down to positions
//!   and versions (`wire.rs`): the server sees ordinary `AppendRequest`s, and the client leaves
//!   more of a shared machine to the server it measures.

mod fsync;
mod load;
mod progress;
mod report;
mod sample;
mod subscribe;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use causeway_client::{Client, pb};
use clap::{Args, ValueEnum};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use crate::args::Output;
use crate::bench::load::{AppendGen, Bounds, Counters, Measured, Op, Shape};
use crate::bench::progress::{Mode, Progress};
use crate::bench::report::{HeadCheck, Report, thousands};
use crate::bench::wire::Appender;
use crate::commands::{emit_verdict, pretty_json};

/// How long a run lasts when neither `--requests` nor `--duration` is given.
pub const DURATION_DEFAULT: Duration = Duration::from_secs(10);
/// Events per append request while `--fill` fills the log.
pub const FILL_EVENTS_PER_REQUEST: u64 = 1000;
/// Client runtime threads allowed.
pub const THREADS_MAX: usize = 64;

/// What to drive and how hard.
#[derive(Args, Clone, Debug)]
#[command(
    after_help = "Every run writes to its own scope and checks that the server's head \
    moved by exactly the acknowledged events; another writer on the same server during the run \
    fails that check. The exit status is 1 when any request failed or a check failed; the \
    report is printed either way."
)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Separate HTTP/2 connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,
    /// Requests in flight, spread over the connections; each is a closed loop (for subscribe:
    /// the most appends outstanding).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub in_flight: u32,
    /// Stop after this many requests in all (for subscribe: appends).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Stop after this long, warm-up not included (10s, 500ms, 2m) [default: 10s unless
    /// --requests].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Do not measure requests that complete in this first stretch (they count toward
    /// --requests and the head check).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Events per append request, all on one entity.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub events_per_request: u32,
    /// Bytes of each event's JSON payload (`{"amount":N,"pad":"xx.."}`).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub payload_bytes: u64,
    /// Entities the appends spread over.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub entities: u64,
    /// How an append picks its entity.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// The exponent s of --distribution zipf: entity k has weight 1/k^s.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_exponent: f64,
    /// The condition each append carries.
    #[arg(long, value_enum, default_value_t = Expect::None)]
    pub expect: Expect,
    /// Register three CEL gates on the run's scope first (every event passes them) and remove
    /// them after.
    #[arg(long)]
    pub gates: bool,
    /// The scope to write to [default: bench- and the run's id, new for each run].
    #[arg(long)]
    pub scope: Option<String>,
    /// Seed of the entity choice: the same seed picks the same entities.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// append: how appends are sent: each as its own `Append` call, or each as a message of
    /// one `AppendStream` per in-flight worker.
    #[arg(long, value_enum, default_value_t = AppendVia::Unary)]
    pub append_via: AppendVia,
    /// read: how the log is read: one page per request, or streamed.
    #[arg(long, value_enum, default_value_t = ReadVia::Pages)]
    pub read_via: ReadVia,
    /// read: events asked for per request (pages only: a stream's pages are the server's).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub read_batch: u32,
    /// read: first append events (1,000 per request) until the log holds at least this many.
    #[arg(long, default_value_t = 0)]
    pub fill: u64,
    /// subscribe: subscribers following the run's scope.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub subscribers: u32,
    /// subscribe: appends per second of the writer.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// First measure the head ceiling for this long, with the same connections and in flight.
    #[arg(long, value_parser = parse_duration)]
    pub ceiling: Option<Duration>,
    /// First measure 4 KiB appends with fdatasync in DIR for 1 s (put DIR on the server's
    /// data disk).
    #[arg(long, value_name = "DIR")]
    pub fsync_probe: Option<PathBuf>,
    /// Compression of requests and responses (the client library's default is gzip).
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Worker threads of the client's runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// No progress bar or progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// The workloads.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Appends, shaped by the append flags.
    Append,
    /// Reads the whole log forward in pages of --read-batch, from position 1, over and over.
    Read,
    /// --subscribers follow the log live while a writer appends at --rate per second.
    Subscribe,
    /// Head, the cheapest RPC: the ceiling of the RPC layer.
    Head,
}

/// How `append` sends its appends.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AppendVia {
    /// One unary `Append` call per request.
    Unary,
    /// One `AppendStream` per worker, each request a message on it.
    Stream,
    /// One `AppendStream` per connection that its workers share, each request a message on
    /// it: up to --in-flight appends pipelined on one stream.
    Pipeline,
}

impl AppendVia {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AppendVia::Unary => "unary",
            AppendVia::Stream => "stream",
            AppendVia::Pipeline => "pipeline",
        }
    }
}

/// How `read` reads the log.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadVia {
    /// `ReadLog` requests of --read-batch events, each sent when the one before is answered.
    Pages,
    /// One `Subscribe` from position 1 per pass, ended when it has caught up: the server
    /// reads the next page while the client decodes this one (pages of the server's size).
    Stream,
}

/// How appends pick entities.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every entity equally likely.
    Uniform,
    /// A few hot entities (Zipf's law with --zipf-exponent).
    Zipf,
}

/// The condition an append carries.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Expect {
    /// None.
    None,
    /// The entity's current version: each in-flight worker owns its entities and tracks their
    /// versions, so none conflict.
    Version,
    /// A version the entity is not at: every append is refused (FAILED_PRECONDITION,
    /// VERSION_CONFLICT), which measures the refusal path.
    Wrong,
}

/// Compression of gRPC messages.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// None.
    None,
    /// gzip, as the client library sends.
    Gzip,
    /// zstd.
    Zstd,
}

impl Workload {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Append => "append",
            Workload::Read => "read",
            Workload::Subscribe => "subscribe",
            Workload::Head => "head",
        }
    }
}

impl ReadVia {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ReadVia::Pages => "pages",
            ReadVia::Stream => "stream",
        }
    }
}

impl Distribution {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipf => "zipf",
        }
    }
}

impl Expect {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Expect::None => "none",
            Expect::Version => "version",
            Expect::Wrong => "wrong",
        }
    }
}

impl Compression {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// tonic's encoding, `None` for no compression.
    pub fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
        }
    }
}

impl BenchArgs {
    /// Refuses combinations that cannot run, naming the flags.
    fn check(&self) -> Result<()> {
        let appends = matches!(self.workload, Workload::Append | Workload::Subscribe);
        if self.threads == 0 || self.threads > THREADS_MAX {
            bail!("--threads must be 1 to {THREADS_MAX}");
        }
        if self.gates && !appends {
            bail!("--gates applies to append and subscribe");
        }
        if self.fill > 0 && self.workload != Workload::Read {
            bail!("--fill applies to read");
        }
        if self.workload == Workload::Subscribe && self.expect != Expect::None {
            bail!("subscribe appends without conditions: drop --expect");
        }
        if self.expect != Expect::None && self.entities < u64::from(self.in_flight) {
            bail!(
                "--expect {} gives each in-flight request its own entities: --entities ({}) \
                 must be at least --in-flight ({})",
                self.expect.name(),
                self.entities,
                self.in_flight
            );
        }
        if self.distribution == Distribution::Zipf
            && !(self.zipf_exponent > 0.0 && self.zipf_exponent.is_finite())
        {
            bail!("--zipf-exponent must be a positive number");
        }
        Ok(())
    }

    /// The measured duration: as given, or the default when no bound is.
    fn bound_duration(&self) -> Option<Duration> {
        match (self.requests, self.duration) {
            (None, None) => Some(DURATION_DEFAULT),
            (_, duration) => duration,
        }
    }
}

/// Runs a bench against `server`, prints the report, and fails when the run did.
pub async fn run(server: &str, args: BenchArgs, output: Output) -> Result<ExitCode> {
    args.check()?;
    let mode = Mode::detect(args.quiet);
    let server = server.to_string();
    let threads = args.threads;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("causeway-bench".to_string())
        .spawn(move || {
            let runtime = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads)
                    .enable_all()
                    .build()
            };
            let report = match runtime {
                Ok(runtime) => runtime.block_on(execute(server, args, mode)),
                Err(err) => Err(anyhow::Error::new(err).context("cannot start the runtime")),
            };
            // The receiver waits for this; if it is gone, nobody needs the report.
            let _ = sender.send(report);
        })
        .context("cannot start the bench thread")?;
    let report = receiver
        .await
        .context("the bench thread ended without a report")??;
    let text = match output {
        Output::Table => report.table(),
        Output::Json => pretty_json(&report.json())?,
    };
    emit_verdict(&text)?;
    let failures = report.failures();
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Connects, sets up, measures, and cleans up.
async fn execute(server: String, args: BenchArgs, mode: Mode) -> Result<Report> {
    let channels = load::connect(&server, args.connections as usize).await?;
    let control = Client::from_channel(channels[0].clone());
    let scope = args.scope.clone().unwrap_or_else(run_scope);
    let fsync = match args.fsync_probe.clone() {
        Some(dir) => Some(
            tokio::task::spawn_blocking(move || fsync::probe(&dir))
                .await
                .context("the fsync probe panicked")??,
        ),
        None => None,
    };
    if args.fill > 0 {
        fill(&channels[0], &args, &scope, mode).await?;
    }
    let gates = if args.gates {
        register_gates(&control, &scope).await?
    } else {
        Vec::new()
    };
    let measured = measure(&channels, &control, &args, &scope, mode).await;
    let mut removal_errors = Vec::new();
    for gate in &gates {
        if let Err(err) = control.remove_gate(gate).await {
            removal_errors.push(format!("{gate}: {err}"));
        }
    }
    let (ceiling, main, head, deliveries) = measured?;
    if !removal_errors.is_empty() {
        bail!(
            "cannot remove the bench's gates: {}",
            removal_errors.join("; ")
        );
    }
    Ok(Report {
        args,
        server,
        scope,
        gates,
        fsync,
        ceiling,
        main,
        head,
        deliveries,
    })
}

type Measurements = (
    Option<Measured>,
    Measured,
    HeadCheck,
    Option<subscribe::Deliveries>,
);

/// The ceiling (if asked for), then the workload between two reads of the head.
async fn measure(
    channels: &[Channel],
    control: &Client,
    args: &BenchArgs,
    scope: &str,
    mode: Mode,
) -> Result<Measurements> {
    let n_workers = args.in_flight as usize;
    let stub =
        |worker_idx: usize| load::stub(&channels[worker_idx % channels.len()], args.compression);
    // One per connection; each worker takes a clone of its connection's (a pipeline is shared).
    let appenders: Vec<Appender> = channels
        .iter()
        .map(|channel| Appender::new(channel, args.compression, args.append_via))
        .collect();
    let appender = |worker_idx: usize| appenders[worker_idx % appenders.len()].clone();
    let ceiling = match args.ceiling {
        Some(duration) => {
            let ops = (0..n_workers)
                .map(|worker_idx| Op::Head {
                    stub: stub(worker_idx),
                })
                .collect();
            let start = Instant::now();
            let bounds = Bounds {
                requests: None,
                deadline: Some(start + duration),
                measure_from: start,
            };
            Some(phase("head ceiling", ops, bounds, Some(duration), mode).await?)
        }
        None => None,
    };

    let before = control.head().await?.position;
    let start = Instant::now();
    let duration = args.bound_duration();
    let bounds = Bounds {
        requests: args.requests,
        deadline: duration.map(|duration| start + args.warmup + duration),
        measure_from: start + args.warmup,
    };
    let (main, deliveries) = match args.workload {
        Workload::Head => {
            let ops = (0..n_workers)
                .map(|worker_idx| Op::Head {
                    stub: stub(worker_idx),
                })
                .collect();
            (phase("head", ops, bounds, duration, mode).await?, None)
        }
        Workload::Read => {
            let ops = (0..n_workers)
                .map(|worker_idx| match args.read_via {
                    ReadVia::Pages => Op::Read {
                        stub: stub(worker_idx),
                        cursor: 1,
                        batch: args.read_batch,
                    },
                    ReadVia::Stream => Op::Stream {
                        stub: stub(worker_idx),
                        stream: None,
                    },
                })
                .collect();
            (phase("read", ops, bounds, duration, mode).await?, None)
        }
        Workload::Append => {
            let shape = Arc::new(Shape::new(args, scope, false));
            let ops = AppendGen::for_workers(args, &shape, n_workers as u64)
                .into_iter()
                .enumerate()
                .map(|(worker_idx, generator)| Op::Append {
                    appender: appender(worker_idx),
                    generator: Box::new(generator),
                })
                .collect();
            (phase("append", ops, bounds, duration, mode).await?, None)
        }
        Workload::Subscribe => {
            let shape = Arc::new(Shape::new(args, scope, true));
            let generator = AppendGen::for_workers(args, &shape, 1)
                .pop()
                .expect("one generator was asked for");
            let stubs: Vec<_> = (0..channels.len()).map(stub).collect();
            let appenders: Vec<_> = (0..channels.len()).map(appender).collect();
            let counters = Arc::new(Counters::default());
            let progress =
                Progress::start(mode, "subscribe", args.requests, duration, counters.clone());
            let connections = subscribe::Connections {
                stubs: &stubs,
                appenders: &appenders,
            };
            let measured =
                subscribe::run(connections, args, scope, generator, bounds, counters).await;
            progress.finish().await;
            let (main, deliveries) = measured?;
            (main, Some(deliveries))
        }
    };
    let after = control.head().await?.position;
    let head = HeadCheck {
        before,
        after,
        acknowledged: main.appended,
    };
    Ok((ceiling, main, head, deliveries))
}

/// One closed-loop phase with its progress display.
async fn phase(
    label: &str,
    ops: Vec<Op>,
    bounds: Bounds,
    duration: Option<Duration>,
    mode: Mode,
) -> Result<Measured> {
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(mode, label, bounds.requests, duration, counters.clone());
    let measured = load::run_phase(ops, bounds, counters).await;
    progress.finish().await;
    measured
}

/// Appends events to `scope` until the log holds at least `--fill` events.
async fn fill(channel: &Channel, args: &BenchArgs, scope: &str, mode: Mode) -> Result<()> {
    let mut stub = load::stub(channel, args.compression);
    let mut head = stub
        .head(pb::HeadRequest::default())
        .await?
        .into_inner()
        .position;
    if head >= args.fill {
        return Ok(());
    }
    mode.note(&format!(
        "bench: filling the log from {} to {} events",
        thousands(head),
        thousands(args.fill)
    ));
    let shape = Arc::new(Shape {
        events_per_request: FILL_EVENTS_PER_REQUEST as u32,
        expect: Expect::None,
        ..Shape::new(args, scope, false)
    });
    let mut generator = AppendGen::for_workers(args, &shape, 1)
        .pop()
        .expect("one generator was asked for");
    let mut appender = Appender::new(channel, args.compression, AppendVia::Unary);
    while head < args.fill {
        let n_events = (args.fill - head).min(FILL_EVENTS_PER_REQUEST) as u32;
        let (request, _) = generator.next_of(n_events);
        let receipt = appender
            .append(request)
            .await
            .context("cannot fill the log")?;
        head = receipt.events.last().map_or(head, |event| event.position);
    }
    Ok(())
}

/// Registers the three CEL gates of `--gates` on `scope` and returns their names. They are the
/// gates of the core's benchmark (docs/BENCHMARKS.md), and every bench event passes them.
async fn register_gates(control: &Client, scope: &str) -> Result<Vec<String>> {
    let gates = [
        (
            "payload",
            "event.payload.amount >= 0 && size(event.payload.pad) > 0",
        ),
        (
            "tags",
            "event.tags.exists(t, t.startsWith('customer:')) && event.metadata.channel == 'web'",
        ),
        ("fact", "version(event.scope, event.entity) < 1000000"),
    ];
    let mut names: Vec<String> = Vec::new();
    for (suffix, expression) in gates {
        let name = format!("{scope}-{suffix}");
        let definition = pb::GateDefinition {
            name: name.clone(),
            scopes: vec![scope.to_string()],
            types: vec![load::EVENT_TYPE.to_string()],
            rule: Some(pb::gate_definition::Rule::Cel(pb::CelRule {
                expression: expression.to_string(),
            })),
        };
        if let Err(err) = control.register_gate(definition).await {
            for registered in &names {
                let _ = control.remove_gate(registered).await;
            }
            return Err(err).with_context(|| format!("cannot register gate {name}"));
        }
        names.push(name);
    }
    Ok(names)
}

/// A new scope for this run: `bench-` and 8 hex digits from the clock and the process id.
fn run_scope() -> String {
    let mixed = load::unix_ns() ^ u64::from(std::process::id()).rotate_left(40);
    format!("bench-{:08x}", sample::Rng::new(mixed).next_u64() as u32)
}

/// Parses a plain number of seconds (`1.5`) or a duration as `humantime` reads it (`10s`,
/// `500ms`, `2m`, `1m 30s`; a unit takes whole numbers, so `1s 500ms` rather than `1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|err| format!("{text:?}: {err}"));
    }
    humantime::parse_duration(text)
        .map_err(|err| format!("{text:?} is not a duration such as 10s, 500ms or 1m 30s: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s 500ms"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn run_scopes_differ_and_are_valid_names() {
        let scope = run_scope();
        assert!(scope.starts_with("bench-") && scope.len() == 14, "{scope}");
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(run_scope(), scope);
    }
}
