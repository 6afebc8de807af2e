//! The closed loop that `append`, `read` and `head` share, and what one request of each is.
//!
//! M workers (tokio tasks) are spread over N connections, worker `i` on connection `i % N`.
//! Each sends one request, waits for the answer and sends the next, until the run's [`Bounds`]
//! say stop: a request count shared by all workers, a deadline, or both. A request still
//! running at the deadline finishes and is counted; nothing is cancelled, so every request
//! ends acknowledged or failed with a code, never in between. The head check relies on that.
//!
//! Latency is measured per successful request, from just before the call to the decoded
//! response, into one HdrHistogram per worker, merged at the end. Failures are counted by gRPC
//! code (and by the denial's reason), never timed and never counted as successes. Requests
//! that complete during the warm-up are not measured, but the events they appended still count
//! for the head check, and their failures are still counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use bytes::{BufMut, Bytes, BytesMut};
use causeway_client::client::{
    CONNECT_TIMEOUT, HTTP2_FRAME_BYTES_MAX, REQUEST_BYTES_MAX, RESPONSE_BYTES_MAX,
};
use causeway_client::error::{VERSION_CONFLICT_REASON, code_name};
use causeway_client::pb::event_store_service_client::EventStoreServiceClient;
use causeway_client::{Error, Expected, FilterBuilder, pb};
use hdrhistogram::Histogram;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use crate::bench::sample::{Picker, Rng};
use crate::bench::wire::{self, Appender, ReceiptAck, RequestBuilder};
use crate::bench::{BenchArgs, Compression, Expect};

/// The gRPC stub the workers call: one per worker, sharing its connection's channel.
pub type Stub = EventStoreServiceClient<Channel>;

/// The type of every event the bench appends; the gates of `--gates` bind to it.
pub const EVENT_TYPE: &str = "BenchEvent";
/// The metadata key of the send time (Unix nanoseconds) that `subscribe` stamps on events.
pub const SENT_METADATA_KEY: &str = "sent_unix_ns";
/// The largest latency recorded exactly; longer ones are recorded as this.
pub const LATENCY_NS_MAX: u64 = 100_000_000_000;
/// How often the bench's connections are pinged, and how long a ping may go unanswered: a
/// server that stops answering without closing them (stopped, or frozen) fails every call on
/// them, the head checks included, within twice this.
pub const KEEPALIVE: Duration = Duration::from_secs(5);
/// How long a worker waits for one answer before it counts the request as failed
/// (DEADLINE_EXCEEDED) and goes on; a run ends at most this long after its deadline.
pub const ANSWER_WAIT_MAX: Duration = Duration::from_secs(30);
/// Bytes of the JSON payload around the padding: `{"amount":NNNNNN,"pad":""}`.
const PAYLOAD_OVERHEAD_BYTES: usize = 26;

/// Opens `n` separate HTTP/2 connections to `server` (a URI or `host:port`).
pub async fn connect(server: &str, n: usize) -> Result<Vec<Channel>> {
    let uri = if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let endpoint = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid server address {server:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .max_frame_size(HTTP2_FRAME_BYTES_MAX)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {uri}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// A stub on `channel` with the message bounds of the client library and the chosen
/// compression (the library's own `Client` always uses gzip).
pub fn stub(channel: &Channel, compression: Compression) -> Stub {
    let stub = EventStoreServiceClient::new(channel.clone())
        .max_decoding_message_size(RESPONSE_BYTES_MAX)
        .max_encoding_message_size(REQUEST_BYTES_MAX);
    match compression.encoding() {
        Some(encoding) => stub.send_compressed(encoding).accept_compressed(encoding),
        None => stub,
    }
}

/// The wall clock in Unix nanoseconds (0 before 1970).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

/// What every appended event looks like, the same for all workers of a run.
#[derive(Debug)]
pub struct Shape {
    /// The scope written to.
    pub scope: String,
    /// Events per append request, all on one entity.
    pub events_per_request: u32,
    /// The condition each append carries.
    pub expect: Expect,
    /// Whether each event carries its send time in [`SENT_METADATA_KEY`].
    pub stamp_sent: bool,
    /// The padding that brings the JSON payload to the requested size.
    pub pad: String,
}

impl Shape {
    /// The shape for `args`, in `scope`.
    pub fn new(args: &BenchArgs, scope: &str, stamp_sent: bool) -> Shape {
        Shape {
            scope: scope.to_string(),
            events_per_request: args.events_per_request,
            expect: args.expect,
            stamp_sent,
            // The gates need a non-empty pad, so a tiny payload is a little larger than asked.
            pad: "x".repeat(
                usize::try_from(args.payload_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_sub(PAYLOAD_OVERHEAD_BYTES)
                    .max(1),
            ),
        }
    }
}

/// Makes one worker's append requests and tracks the versions of the entities it owns.
///
/// Entity `first + stride * rank` is chosen for a rank from the picker. A conditional run
/// gives each worker its own entities (`first` = the worker's index, `stride` = the number of
/// workers), so conditions never race between workers; an unconditional one picks from all
/// (`first` 0, `stride` 1).
#[derive(Debug)]
pub struct AppendGen {
    shape: Arc<Shape>,
    picker: Arc<Picker>,
    rng: Rng,
    first: u64,
    stride: u64,
    /// The last version seen per owned entity; absent is 0 (a new scope has no events).
    versions: HashMap<u64, u64>,
}

impl AppendGen {
    /// One generator per worker for `n_workers` workers.
    pub fn for_workers(args: &BenchArgs, shape: &Arc<Shape>, n_workers: u64) -> Vec<AppendGen> {
        let partitioned = shape.expect != Expect::None;
        let mut pickers: HashMap<u64, Arc<Picker>> = HashMap::new();
        (0..n_workers)
            .map(|worker_idx| {
                let (first, stride, n_entities) = if partitioned {
                    // Entities worker_idx, worker_idx + n_workers, ... below args.entities;
                    // the bench checks that there are at least as many entities as workers.
                    let owned = (args.entities - worker_idx).div_ceil(n_workers);
                    (worker_idx, n_workers, owned)
                } else {
                    (0, 1, args.entities)
                };
                let picker = pickers
                    .entry(n_entities)
                    .or_insert_with(|| {
                        Arc::new(Picker::new(
                            args.distribution,
                            n_entities,
                            args.zipf_exponent,
                        ))
                    })
                    .clone();
                AppendGen {
                    shape: shape.clone(),
                    picker,
                    rng: Rng::new(args.seed.wrapping_add(worker_idx)),
                    first,
                    stride,
                    versions: HashMap::new(),
                }
            })
            .collect()
    }

    /// The next request of `events_per_request` events, encoded, and the index of the entity
    /// it appends to.
    pub fn next(&mut self) -> (Bytes, u64) {
        self.next_of(self.shape.events_per_request)
    }

    /// The next request of `n_events` events, encoded (see `wire.rs`), and the index of the
    /// entity it appends to. All its events are on that entity; each has its own amount.
    pub fn next_of(&mut self, n_events: u32) -> (Bytes, u64) {
        let rank = self.picker.pick(&mut self.rng);
        let entity_idx = self.first + self.stride * rank;
        let entity = format!("e-{entity_idx}");
        let shared = pb::NewEvent {
            scope: self.shape.scope.clone(),
            entity: entity.clone(),
            r#type: EVENT_TYPE.to_string(),
            content_type: "application/json".to_string(),
            tags: vec![format!("customer:{}", entity_idx % 1000)],
            metadata: wire::bench_metadata(),
            ..pb::NewEvent::default()
        };
        let pad = self.shape.pad.as_bytes();
        let payload_len = PAYLOAD_OVERHEAD_BYTES + pad.len();
        let mut request = RequestBuilder::new(shared, n_events as usize, payload_len);
        for _ in 0..n_events {
            let amount = 100_000 + self.rng.below(900_000);
            let sent = self.shape.stamp_sent.then(|| unix_ns().to_string());
            request.event(
                payload_len,
                |buf| {
                    buf.put_slice(br#"{"amount":"#);
                    put_six_digits(buf, amount);
                    buf.put_slice(br#","pad":""#);
                    buf.put_slice(pad);
                    buf.put_slice(br#""}"#);
                },
                sent.as_deref().map(|sent| (SENT_METADATA_KEY, sent)),
            );
        }
        let version = self.versions.get(&entity_idx).copied().unwrap_or(0);
        let expected = match self.shape.expect {
            Expect::None => Vec::new(),
            Expect::Version => vec![Expected::Exact(version).to_pb(&self.shape.scope, &entity)],
            // The entity is at `version`, so `version + 1` is always wrong.
            Expect::Wrong => {
                vec![Expected::Exact(version + 1).to_pb(&self.shape.scope, &entity)]
            }
        };
        let rest = pb::AppendRequest {
            expected,
            ..pb::AppendRequest::default()
        };
        (request.finish(&rest), entity_idx)
    }

    /// Learns the entity's version from an answer: the receipt's last version, or the actual
    /// version a conflict reports (so a run in a scope that already has events recovers after
    /// one conflict per entity).
    pub fn settle(&mut self, entity_idx: u64, answer: Result<&ReceiptAck, &Status>) {
        if self.shape.expect == Expect::None {
            return;
        }
        let version = match answer {
            Ok(receipt) => receipt.events.last().map(|event| event.version),
            Err(status) => match Error::from(status.clone()) {
                Error::Conflict { actual, .. } => actual.parse().ok(),
                _ => None,
            },
        };
        if let Some(version) = version {
            self.versions.insert(entity_idx, version);
        }
    }
}

/// Writes `value` (100,000 to 999,999) as its six decimal digits.
fn put_six_digits(buf: &mut BytesMut, value: u64) {
    debug_assert!((100_000..1_000_000).contains(&value));
    let mut digits = [0u8; 6];
    let mut rest = value;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    buf.put_slice(&digits);
}

/// One worker's requests.
#[derive(Debug)]
pub enum Op {
    /// Appends from a generator.
    Append {
        /// The worker's connection, for encoded appends.
        appender: Appender,
        /// The worker's requests.
        generator: Box<AppendGen>,
    },
    /// Reads the log forward from position 1 in pages, starting over at the end.
    Read {
        /// The worker's stub.
        stub: Stub,
        /// The next position to read.
        cursor: u64,
        /// Events asked for per request.
        batch: u32,
    },
    /// Reads the log forward from position 1 as one stream (a subscription's catch-up, which
    /// reads the next page while this one is on the wire), starting over once it has caught up.
    Stream {
        /// The worker's stub.
        stub: Stub,
        /// The open stream, `None` before the first message and after catching up.
        stream: Option<Box<tonic::Streaming<pb::SubscribeResponse>>>,
    },
    /// `Head`, the cheapest RPC.
    Head {
        /// The worker's stub.
        stub: Stub,
    },
}

/// What a successful request did.
#[derive(Copy, Clone, Debug)]
pub struct Done {
    /// Events appended or read.
    pub events: u64,
    /// Events the server acknowledged as appended (0 for reads).
    pub appended: u64,
}

impl Op {
    /// Sends one request and waits for its answer.
    pub async fn once(&mut self) -> Result<Done, Status> {
        match self {
            Op::Append {
                appender,
                generator,
            } => {
                let (request, entity_idx) = generator.next();
                let answer = appender.append(request).await;
                generator.settle(entity_idx, answer.as_ref());
                let n_events = answer?.events.len() as u64;
                Ok(Done {
                    events: n_events,
                    appended: n_events,
                })
            }
            Op::Read {
                stub,
                cursor,
                batch,
            } => {
                let request = pb::ReadLogRequest {
                    consistency: 0,
                    from_position: *cursor,
                    direction: pb::Direction::Forward.into(),
                    limit: *batch,
                    filter: Some(FilterBuilder::new().build()),
                };
                let page = stub.read_log(request).await?.into_inner();
                *cursor = if page.end { 1 } else { page.next_position };
                Ok(Done {
                    events: page.events.len() as u64,
                    appended: 0,
                })
            }
            Op::Stream { stub, stream } => loop {
                let open = match stream {
                    Some(open) => open,
                    None => {
                        let request = pb::SubscribeRequest {
                            start: Some(pb::subscribe_request::Start::FromPosition(1)),
                            filter: Some(FilterBuilder::new().build()),
                        };
                        stream.insert(Box::new(stub.subscribe(request).await?.into_inner()))
                    }
                };
                let message = open
                    .message()
                    .await?
                    .ok_or_else(|| Status::unavailable("the server ended the stream"))?;
                match message.message {
                    Some(pb::subscribe_response::Message::Events(batch)) => {
                        return Ok(Done {
                            events: batch.events.len() as u64,
                            appended: 0,
                        });
                    }
                    // The end of a pass answers this request, with the events of the pass
                    // already counted: on an empty log a pass is nothing else, and the loop
                    // must come back to its deadline.
                    Some(pb::subscribe_response::Message::CaughtUp(_)) => {
                        *stream = None;
                        return Ok(Done {
                            events: 0,
                            appended: 0,
                        });
                    }
                    Some(pb::subscribe_response::Message::Checkpoint(_)) | None => {}
                }
            },
            Op::Head { stub } => {
                stub.head(pb::HeadRequest::default()).await?;
                Ok(Done {
                    events: 0,
                    appended: 0,
                })
            }
        }
    }
}

/// When a phase stops and from when it is measured.
#[derive(Copy, Clone, Debug)]
pub struct Bounds {
    /// Requests to send in all, over every worker.
    pub requests: Option<u64>,
    /// No request starts after this.
    pub deadline: Option<Instant>,
    /// Requests completing before this are the warm-up: not measured.
    pub measure_from: Instant,
}

impl Bounds {
    /// Takes a ticket for one more request, or says stop.
    pub fn admit(&self, counters: &Counters) -> bool {
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return false;
        }
        match self.requests {
            Some(max) => counters.issued.fetch_add(1, Ordering::Relaxed) < max,
            None => true,
        }
    }
}

/// Counters that the progress display reads while a phase runs.
#[derive(Debug, Default)]
pub struct Counters {
    /// Tickets taken by [`Bounds::admit`].
    pub issued: AtomicU64,
    /// Requests answered, successfully or not.
    pub finished: AtomicU64,
    /// Requests that failed.
    pub failed: AtomicU64,
}

/// Failed requests by gRPC code.
#[derive(Clone, Debug, Default)]
pub struct ErrorCounts {
    /// By the code's canonical name (`FAILED_PRECONDITION`).
    pub by_code: BTreeMap<&'static str, CodeErrors>,
}

/// The failures of one gRPC code.
#[derive(Clone, Debug, Default)]
pub struct CodeErrors {
    /// How many.
    pub count: u64,
    /// By the `ErrorInfo` reason of a refusal (`VERSION_CONFLICT`, a gate's code).
    pub reasons: BTreeMap<String, u64>,
    /// The first message seen.
    pub example: String,
}

impl ErrorCounts {
    /// Counts one failure.
    pub fn record(&mut self, status: Status) {
        let code = code_name(status.code());
        let message = status.message().to_string();
        let reason = match Error::from(status) {
            Error::Conflict { .. } => Some(VERSION_CONFLICT_REASON.to_string()),
            Error::Denied { code, .. } => Some(code),
            _ => None,
        };
        let entry = self.by_code.entry(code).or_default();
        entry.count += 1;
        if let Some(reason) = reason {
            *entry.reasons.entry(reason).or_default() += 1;
        }
        if entry.example.is_empty() {
            entry.example = message;
        }
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: ErrorCounts) {
        for (code, errors) in other.by_code {
            let entry = self.by_code.entry(code).or_default();
            entry.count += errors.count;
            for (reason, count) in errors.reasons {
                *entry.reasons.entry(reason).or_default() += count;
            }
            if entry.example.is_empty() {
                entry.example = errors.example;
            }
        }
    }

    /// Failures of every code.
    pub fn total(&self) -> u64 {
        self.by_code.values().map(|errors| errors.count).sum()
    }

    /// `FAILED_PRECONDITION 200 (VERSION_CONFLICT 200), UNAVAILABLE 1`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .by_code
            .iter()
            .map(|(code, errors)| {
                let reasons: Vec<String> = errors
                    .reasons
                    .iter()
                    .map(|(reason, count)| format!("{reason} {count}"))
                    .collect();
                if reasons.is_empty() {
                    format!("{code} {}", errors.count)
                } else {
                    format!("{code} {} ({})", errors.count, reasons.join(", "))
                }
            })
            .collect();
        parts.join(", ")
    }
}

/// What one phase measured: the requests and events of its measured window, their latency,
/// and every failure.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Successful requests completed in the measured window.
    pub ok: u64,
    /// Events appended or read by them.
    pub events: u64,
    /// Their latencies in nanoseconds.
    pub latency: Histogram<u64>,
    /// Every failed request, warm-up included.
    pub errors: ErrorCounts,
    /// Every event acknowledged as appended, warm-up included: what the head must move by.
    pub appended: u64,
    /// The start of the measured window.
    pub measure_from: Instant,
    /// When the last request (successful or not) completed, if any did in the window.
    pub last_done: Option<Instant>,
}

impl Measured {
    /// Nothing yet, measured from `measure_from`.
    pub fn new(measure_from: Instant) -> Measured {
        Measured {
            ok: 0,
            events: 0,
            latency: new_histogram(),
            errors: ErrorCounts::default(),
            appended: 0,
            measure_from,
            last_done: None,
        }
    }

    /// Counts one answer that took `latency` and arrived at `done_at`.
    pub fn record(&mut self, answer: Result<Done, Status>, latency: Duration, done_at: Instant) {
        let measured = done_at >= self.measure_from;
        if measured {
            self.last_done = Some(self.last_done.map_or(done_at, |last| last.max(done_at)));
        }
        match answer {
            Ok(done) => {
                self.appended += done.appended;
                if measured {
                    self.ok += 1;
                    self.events += done.events;
                    record_ns(&mut self.latency, latency);
                }
            }
            Err(status) => self.errors.record(status),
        }
    }

    /// Adds another worker's measurements (of the same window).
    pub fn merge(&mut self, other: Measured) {
        self.ok += other.ok;
        self.events += other.events;
        self.latency
            .add(&other.latency)
            .expect("every histogram has the same bounds");
        self.errors.merge(other.errors);
        self.appended += other.appended;
        self.last_done = match (self.last_done, other.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// The measured window: from its start to the last completion in it, failures included.
    pub fn elapsed(&self) -> Duration {
        self.last_done
            .map_or(Duration::ZERO, |last| last - self.measure_from)
    }

    /// Successful requests per second of the window.
    pub fn requests_per_s(&self) -> f64 {
        per_second(self.ok, self.elapsed())
    }

    /// Events per second of the window.
    pub fn events_per_s(&self) -> f64 {
        per_second(self.events, self.elapsed())
    }
}

/// `count / elapsed`, 0 for an empty window.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

/// A latency histogram in nanoseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("the bounds are valid constants")
}

/// Records `latency`, clamped to the histogram's range.
pub fn record_ns(histogram: &mut Histogram<u64>, latency: Duration) {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// Runs `ops` as closed loops within `bounds` and returns what they measured together.
pub async fn run_phase(ops: Vec<Op>, bounds: Bounds, counters: Arc<Counters>) -> Result<Measured> {
    if ops.is_empty() {
        bail!("a phase needs at least one worker");
    }
    let workers: Vec<_> = ops
        .into_iter()
        .map(|op| tokio::spawn(worker(op, bounds, counters.clone())))
        .collect();
    let mut total = Measured::new(bounds.measure_from);
    for worker in workers {
        total.merge(worker.await.context("a bench worker panicked")?);
    }
    Ok(total)
}

async fn worker(mut op: Op, bounds: Bounds, counters: Arc<Counters>) -> Measured {
    let mut measured = Measured::new(bounds.measure_from);
    while bounds.admit(&counters) {
        let sent_at = Instant::now();
        // A server that stops answering without closing its connections (stopped, or frozen
        // behind a partition) must not hold the run past its end for ever.
        let answer = tokio::time::timeout(ANSWER_WAIT_MAX, op.once())
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "no answer within {}s",
                    ANSWER_WAIT_MAX.as_secs()
                )))
            });
        let done_at = Instant::now();
        if answer.is_err() {
            counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        counters.finished.fetch_add(1, Ordering::Relaxed);
        measured.record(answer, done_at - sent_at, done_at);
    }
    measured
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::Message as _;
    use tonic::Code;
    use tonic_types::{ErrorDetails, StatusExt as _};

    use super::*;

    fn conflict() -> Status {
        let metadata = HashMap::from([
            ("scope".to_string(), "s".to_string()),
            ("entity".to_string(), "e-1".to_string()),
            ("expected".to_string(), "3".to_string()),
            ("actual".to_string(), "2".to_string()),
        ]);
        let details = ErrorDetails::with_error_info(VERSION_CONFLICT_REASON, "causeway", metadata);
        Status::with_error_details(Code::FailedPrecondition, "s/e-1 is at 2", details)
    }

    fn bench_args(flags: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let argv = ["bench", "append"].iter().chain(flags);
        <Cli as clap::Parser>::try_parse_from(argv)
            .expect("valid flags")
            .args
    }

    #[test]
    fn generated_requests_are_the_events_the_flags_ask_for() {
        let args = bench_args(&[
            "--events-per-request",
            "3",
            "--payload-bytes",
            "64",
            "--expect",
            "version",
            "--entities",
            "2",
        ]);
        let shape = Arc::new(Shape::new(&args, "bench-x", true));
        let mut generators = AppendGen::for_workers(&args, &shape, 2);
        let (bytes, entity_idx) = generators[1].next();
        let request = pb::AppendRequest::decode(bytes).expect("valid protobuf");

        // With two entities and two workers, worker 1 owns entity 1 alone.
        assert_eq!(
            entity_idx, 1,
            "a conditional worker keeps to its own entities"
        );
        let entity = format!("e-{entity_idx}");
        assert_eq!(request.events.len(), 3);
        let mut amounts = Vec::new();
        for event in &request.events {
            assert_eq!(
                (
                    event.scope.as_str(),
                    event.entity.as_str(),
                    event.r#type.as_str()
                ),
                ("bench-x", entity.as_str(), EVENT_TYPE)
            );
            assert_eq!(event.content_type, "application/json");
            assert_eq!(event.tags, vec![format!("customer:{entity_idx}")]);
            assert_eq!(
                event.payload.len(),
                64,
                "the payload is --payload-bytes long"
            );
            let payload: serde_json::Value =
                serde_json::from_slice(&event.payload).expect("JSON payload");
            let amount = payload["amount"].as_u64().expect("an amount");
            assert!((100_000..1_000_000).contains(&amount), "{amount}");
            amounts.push(amount);
            assert_eq!(event.metadata["channel"], "web");
            let sent: u64 = event.metadata[SENT_METADATA_KEY]
                .parse()
                .expect("a send time in nanoseconds");
            assert!(sent > 0 && sent <= unix_ns());
        }
        assert_ne!(amounts[0], amounts[1], "each event has its own amount");
        assert_eq!(
            request.expected,
            vec![Expected::Exact(0).to_pb("bench-x", &entity)]
        );

        // A fill request is shorter, and the next request expects what the server answered.
        generators[1].settle(
            entity_idx,
            Ok(&ReceiptAck {
                events: vec![wire::CommittedAck {
                    position: 9,
                    version: 4,
                }],
            }),
        );
        let (bytes, _) = generators[1].next_of(1);
        let request = pb::AppendRequest::decode(bytes).expect("valid protobuf");
        assert_eq!(request.events.len(), 1);
        assert_eq!(
            request.expected,
            vec![Expected::Exact(4).to_pb("bench-x", &entity)]
        );
    }

    #[test]
    fn errors_are_counted_by_code_and_reason() {
        let mut errors = ErrorCounts::default();
        errors.record(conflict());
        errors.record(conflict());
        errors.record(Status::unavailable("gone"));
        let mut other = ErrorCounts::default();
        other.record(Status::unavailable("again"));
        errors.merge(other);
        assert_eq!(errors.total(), 4);
        assert_eq!(
            errors.by_code["FAILED_PRECONDITION"].reasons["VERSION_CONFLICT"],
            2
        );
        assert_eq!(errors.by_code["UNAVAILABLE"].example, "gone");
        assert_eq!(
            errors.summary(),
            "FAILED_PRECONDITION 2 (VERSION_CONFLICT 2), UNAVAILABLE 2"
        );
    }

    #[test]
    fn failures_are_never_measured_as_successes_and_warm_up_is_not_measured() {
        let start = Instant::now();
        let mut measured = Measured::new(start + Duration::from_secs(1));
        let done = Done {
            events: 3,
            appended: 3,
        };
        // In the warm-up: counted for the head check only.
        measured.record(Ok(done), Duration::from_millis(1), start);
        measured.record(Err(Status::internal("x")), Duration::from_millis(1), start);
        let late = start + Duration::from_secs(3);
        measured.record(Ok(done), Duration::from_millis(2), late);
        measured.record(Err(conflict()), Duration::from_millis(1), late);
        assert_eq!((measured.ok, measured.events, measured.appended), (1, 3, 6));
        assert_eq!(measured.errors.total(), 2);
        assert_eq!(measured.latency.len(), 1);
        assert_eq!(measured.elapsed(), Duration::from_secs(2));
        assert!((measured.events_per_s() - 1.5).abs() < 1e-9);
    }
}
