//! Closed-loop load for Causeway's peers in `bench/compare`: UmaDB through its own Rust client
//! (`umadb-client`, one HTTP/2 connection shared by every loop, as `causeway bench` shares one)
//! and Redis over RESP (one TCP connection per loop: RESP does not multiplex requests; or, with
//! `--connections N`, N connections whose loops pipeline their requests on them).
//!
//! It mirrors `causeway bench append` and `read`: `--in-flight` closed loops each send one
//! request and wait for its answer; requests that complete during `--warmup` are not measured;
//! every event carries the same JSON payload shape (`{"amount":N,"pad":"xx.."}`, exactly
//! `--payload-bytes` long) on one of `--entities` entities. A request of N > 1 events to Redis is
//! MULTI, N XADDs and EXEC written at once: one atomic, durable batch, the nearest Redis has to
//! one append of N events. Any failed request ends the run with exit status 1. Otherwise it
//! prints one JSON line: events/s over the measured stretch, request latency p50 and p99, and
//! every acknowledged event including the warm-up (the driver divides CPU time by it).
//!
//! ```text
//! peer-load umadb|redis append|read|fill --server ADDR [--in-flight N] [--events-per-request N]
//!     [--payload-bytes N] [--entities N] [--duration S] [--warmup S] [--events N]
//!     [--connections N]
//! ```

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use umadb_client::{AsyncUmaDbClient, UmaDbClient};
use umadb_dcb::{DcbEvent, DcbEventStoreAsync};

/// Bytes of the payload around the pad: `{"amount":` (10), six digits, `,"pad":"` (8), `"}` (2).
const PAYLOAD_OVERHEAD_BYTES: usize = 26;
/// Events per request when filling a store for the read scan, as `causeway bench read --fill`.
const FILL_EVENTS_PER_REQUEST: u64 = 1_000;
/// Events per page of the Redis read scan, as `causeway bench read --read-batch` defaults to.
const READ_BATCH_EVENTS: usize = 1_000;
/// The Redis stream every event goes to.
const REDIS_STREAM: &str = "bench";
/// The event type, as `causeway bench` names its events.
const EVENT_TYPE: &str = "BenchEvent";

type Result<T, E = String> = std::result::Result<T, E>;

#[derive(Clone, Copy, PartialEq)]
enum System {
    Umadb,
    Redis,
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    /// Closed-loop appends.
    Append,
    /// The whole log forward, over and over, from one loop.
    Read,
    /// `--events` events in requests of `FILL_EVENTS_PER_REQUEST`, from one loop.
    Fill,
}

#[derive(Clone)]
struct Args {
    system: System,
    workload: Workload,
    server: String,
    in_flight: usize,
    events_per_request: usize,
    payload_bytes: usize,
    entities: u64,
    duration: Duration,
    warmup: Duration,
    events: u64,
    /// Redis: connections the loops share, each pipelining its loops' requests; 0 for one
    /// connection per loop.
    connections: usize,
}

fn parse_args() -> Result<Args> {
    let mut argv = std::env::args().skip(1);
    let system = match argv.next().as_deref() {
        Some("umadb") => System::Umadb,
        Some("redis") => System::Redis,
        other => return Err(format!("expected umadb or redis, got {other:?}")),
    };
    let workload = match argv.next().as_deref() {
        Some("append") => Workload::Append,
        Some("read") => Workload::Read,
        Some("fill") => Workload::Fill,
        other => return Err(format!("expected append, read or fill, got {other:?}")),
    };
    let mut args = Args {
        system,
        workload,
        server: String::new(),
        in_flight: 1,
        events_per_request: 1,
        payload_bytes: 100,
        entities: 10_000,
        duration: Duration::from_secs(10),
        warmup: Duration::ZERO,
        events: 0,
        connections: 0,
    };
    while let Some(flag) = argv.next() {
        let value = argv.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag}: not a number: {value}");
        match flag.as_str() {
            "--server" => args.server = value.clone(),
            "--in-flight" => args.in_flight = value.parse().map_err(bad)?,
            "--events-per-request" => args.events_per_request = value.parse().map_err(bad)?,
            "--payload-bytes" => args.payload_bytes = value.parse().map_err(bad)?,
            "--entities" => args.entities = value.parse().map_err(bad)?,
            "--events" => args.events = value.parse().map_err(bad)?,
            "--connections" => args.connections = value.parse().map_err(bad)?,
            "--duration" => args.duration = seconds(&flag, &value)?,
            "--warmup" => args.warmup = seconds(&flag, &value)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.server.is_empty() {
        return Err("--server is required".to_string());
    }
    if args.payload_bytes < PAYLOAD_OVERHEAD_BYTES || args.in_flight == 0 || args.entities == 0 {
        return Err(format!(
            "--payload-bytes must be at least {PAYLOAD_OVERHEAD_BYTES}, --in-flight and \
             --entities at least 1"
        ));
    }
    Ok(args)
}

fn seconds(flag: &str, value: &str) -> Result<Duration> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or(format!("{flag}: not a number of seconds: {value}"))
}

/// A small xorshift generator: the entity and amount choices need speed, not quality.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One event's payload, exactly `payload_bytes` long, shaped as `causeway bench` shapes it.
fn payload(rng: &mut Rng, payload_bytes: usize) -> Vec<u8> {
    let amount = 100_000 + rng.below(900_000);
    let pad = "x".repeat(payload_bytes - PAYLOAD_OVERHEAD_BYTES);
    let body = format!(r#"{{"amount":{amount},"pad":"{pad}"}}"#);
    debug_assert_eq!(body.len(), payload_bytes);
    body.into_bytes()
}

/// What one loop sends requests through.
enum Conn {
    Umadb(Arc<AsyncUmaDbClient>),
    Redis(Resp<TcpStream>),
    /// A Redis connection several loops share (`--connections`).
    Pipelined(Arc<Pipelined>),
}

/// A Redis connection whose loops pipeline their requests: each writes its request whole
/// under the lock, in the order it queued for its replies, and one task reads the replies and
/// hands each loop its own (Redis answers in order).
struct Pipelined {
    write: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    waiting: Arc<std::sync::Mutex<std::collections::VecDeque<Waiting>>>,
}

/// A loop waiting for its request's replies: how many, and where they go.
type Waiting = (usize, tokio::sync::oneshot::Sender<Result<Vec<Reply>>>);

impl Pipelined {
    async fn connect(server: &str) -> Result<Pipelined> {
        let stream = TcpStream::connect(server)
            .await
            .map_err(|err| format!("connect to {server}: {err}"))?;
        stream.set_nodelay(true).map_err(|err| err.to_string())?;
        let (read, write) = stream.into_split();
        let waiting = Arc::new(std::sync::Mutex::new(
            std::collections::VecDeque::<Waiting>::new(),
        ));
        let routed = waiting.clone();
        tokio::spawn(async move {
            let mut replies = Resp::new(read);
            loop {
                // A loop queues before it writes, so the first reply finds its loop waiting.
                let mut got = Vec::new();
                let mut n_replies = 1;
                while got.len() < n_replies {
                    match replies.reply().await {
                        Ok(reply) => got.push(reply),
                        Err(err) => {
                            for (_, reply) in routed.lock().expect("the queue's lock").drain(..) {
                                let _ = reply.send(Err(err.clone()));
                            }
                            return;
                        }
                    }
                    n_replies = routed
                        .lock()
                        .expect("the queue's lock")
                        .front()
                        .map_or(1, |(n, _)| *n);
                }
                let (_, reply) = routed
                    .lock()
                    .expect("the queue's lock")
                    .pop_front()
                    .expect("queued");
                let _ = reply.send(Ok(got));
            }
        });
        Ok(Pipelined {
            write: tokio::sync::Mutex::new(write),
            waiting,
        })
    }

    async fn call(&self, request: &[u8], n_replies: usize) -> Result<Vec<Reply>> {
        let (reply, replies) = tokio::sync::oneshot::channel();
        {
            let mut write = self.write.lock().await;
            self.waiting
                .lock()
                .expect("the queue's lock")
                .push_back((n_replies, reply));
            write
                .write_all(request)
                .await
                .map_err(|err| format!("redis write: {err}"))?;
        }
        replies
            .await
            .map_err(|_| "redis: the reply reader stopped".to_string())?
    }
}

impl Conn {
    async fn open(
        args: &Args,
        umadb: &Option<Arc<AsyncUmaDbClient>>,
        shared: Option<&Arc<Pipelined>>,
    ) -> Result<Conn> {
        if let Some(shared) = shared {
            return Ok(Conn::Pipelined(shared.clone()));
        }
        match umadb {
            Some(client) => Ok(Conn::Umadb(client.clone())),
            None => {
                let stream = TcpStream::connect(&args.server)
                    .await
                    .map_err(|err| format!("connect to {}: {err}", args.server))?;
                stream.set_nodelay(true).map_err(|err| err.to_string())?;
                Ok(Conn::Redis(Resp::new(stream)))
            }
        }
    }

    /// Appends `n_events` events on one entity as one request; returns the events acknowledged.
    async fn append(&mut self, args: &Args, rng: &mut Rng, n_events: usize) -> Result<u64> {
        let entity_idx = rng.below(args.entities);
        match self {
            Conn::Umadb(client) => {
                let events = (0..n_events)
                    .map(|_| {
                        DcbEvent::default()
                            .event_type(EVENT_TYPE)
                            .tags([
                                format!("entity:e-{entity_idx}"),
                                format!("customer:{}", entity_idx % 1000),
                            ])
                            .data(payload(rng, args.payload_bytes))
                    })
                    .collect();
                client
                    .append(events, None, None)
                    .await
                    .map_err(|err| format!("umadb append: {err}"))?;
            }
            Conn::Redis(_) | Conn::Pipelined(_) => {
                let atomic = n_events > 1 && args.workload == Workload::Append;
                let mut request = Vec::new();
                if atomic {
                    command(&mut request, &[b"MULTI"]);
                }
                let entity = format!("e-{entity_idx}");
                for _ in 0..n_events {
                    let data = payload(rng, args.payload_bytes);
                    let words: [&[u8]; 9] = [
                        b"XADD",
                        REDIS_STREAM.as_bytes(),
                        b"*",
                        b"entity",
                        entity.as_bytes(),
                        b"type",
                        EVENT_TYPE.as_bytes(),
                        b"data",
                        &data,
                    ];
                    command(&mut request, &words);
                }
                if atomic {
                    command(&mut request, &[b"EXEC"]);
                }
                let n_replies = if atomic { n_events + 2 } else { n_events };
                let replies = match self {
                    Conn::Redis(resp) => {
                        resp.send(&request).await?;
                        let mut replies = Vec::with_capacity(n_replies);
                        for _ in 0..n_replies {
                            replies.push(resp.reply().await?);
                        }
                        replies
                    }
                    Conn::Pipelined(shared) => shared.call(&request, n_replies).await?,
                    Conn::Umadb(_) => unreachable!("matched above"),
                };
                for reply in replies {
                    match reply {
                        Reply::Error(message) => return Err(format!("redis: {message}")),
                        Reply::Array(Some(ids)) if ids.len() != n_events => {
                            return Err(format!("redis EXEC answered {} ids", ids.len()));
                        }
                        Reply::Array(None) => return Err("redis EXEC was aborted".to_string()),
                        _ => {}
                    }
                }
            }
        }
        Ok(n_events as u64)
    }

    /// Reads the whole log forward once; returns the events read.
    async fn scan(&mut self) -> Result<u64> {
        let mut n_events = 0;
        match self {
            Conn::Umadb(client) => {
                let mut response = client
                    .read(None, None, false, None)
                    .await
                    .map_err(|err| format!("umadb read: {err}"))?;
                loop {
                    let batch = response
                        .next_batch()
                        .await
                        .map_err(|err| format!("umadb read: {err}"))?;
                    if batch.is_empty() {
                        break;
                    }
                    n_events += batch.len() as u64;
                }
            }
            Conn::Pipelined(_) => return Err("a scan runs on a connection of its own".to_string()),
            Conn::Redis(resp) => {
                let mut from = "-".to_string();
                loop {
                    let mut request = Vec::new();
                    let count = READ_BATCH_EVENTS.to_string();
                    let words: [&[u8]; 6] = [
                        b"XRANGE",
                        REDIS_STREAM.as_bytes(),
                        from.as_bytes(),
                        b"+",
                        b"COUNT",
                        count.as_bytes(),
                    ];
                    command(&mut request, &words);
                    resp.send(&request).await?;
                    let entries = match resp.reply().await? {
                        Reply::Array(Some(entries)) => entries,
                        Reply::Error(message) => return Err(format!("redis: {message}")),
                        _ => return Err("redis XRANGE answered no array".to_string()),
                    };
                    n_events += entries.len() as u64;
                    if entries.len() < READ_BATCH_EVENTS {
                        break;
                    }
                    // The next page starts after the last id (an exclusive range, Redis 6.2+).
                    match entries.last() {
                        Some(Reply::Array(Some(entry))) => match entry.first() {
                            Some(Reply::Bulk(Some(id))) => {
                                from = format!("({}", String::from_utf8_lossy(id));
                            }
                            _ => return Err("redis XRANGE entry has no id".to_string()),
                        },
                        _ => return Err("redis XRANGE entry is not an array".to_string()),
                    }
                }
            }
        }
        Ok(n_events)
    }
}

/// One RESP value, as much of it as this program looks at.
enum Reply {
    Simple,
    Error(String),
    Integer,
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// A RESP connection: requests written whole, replies parsed from a buffer.
struct Resp<S> {
    stream: S,
    buf: Vec<u8>,
    start: usize,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Resp<S> {
    async fn send(&mut self, request: &[u8]) -> Result<()> {
        self.stream
            .write_all(request)
            .await
            .map_err(|err| format!("redis write: {err}"))
    }
}

impl<S: tokio::io::AsyncRead + Unpin> Resp<S> {
    fn new(stream: S) -> Resp<S> {
        Resp {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    async fn reply(&mut self) -> Result<Reply> {
        loop {
            if let Some((reply, used)) = parse(&self.buf[self.start..])? {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(reply);
            }
            self.buf.reserve(64 * 1024);
            let n_read = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|err| format!("redis read: {err}"))?;
            if n_read == 0 {
                return Err("redis closed the connection".to_string());
            }
        }
    }
}

/// Appends one command as a RESP array of bulk strings.
fn command(out: &mut Vec<u8>, words: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one RESP value from the front of `buf`: `None` while it is incomplete.
fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>> {
    let Some(line_end) = buf.windows(2).position(|pair| pair == b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[1..line_end]).into_owned();
    let after = line_end + 2;
    let length = || {
        line.parse::<i64>()
            .map_err(|_| format!("redis: bad length {line:?}"))
    };
    let reply = match buf[0] {
        b'+' => (Reply::Simple, after),
        b'-' => (Reply::Error(line.clone()), after),
        b':' => (Reply::Integer, after),
        b'$' => {
            let Ok(len) = usize::try_from(length()?) else {
                return Ok(Some((Reply::Bulk(None), after)));
            };
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            (
                Reply::Bulk(Some(buf[after..after + len].to_vec())),
                after + len + 2,
            )
        }
        b'*' => {
            let Ok(n_items) = usize::try_from(length()?) else {
                return Ok(Some((Reply::Array(None), after)));
            };
            let mut items = Vec::with_capacity(n_items);
            let mut pos = after;
            for _ in 0..n_items {
                let Some((item, used)) = parse(&buf[pos..])? else {
                    return Ok(None);
                };
                items.push(item);
                pos += used;
            }
            (Reply::Array(Some(items)), pos)
        }
        other => return Err(format!("redis: unexpected reply byte {other:#x}")),
    };
    Ok(Some(reply))
}

/// What one loop measured.
struct Tally {
    latency_ns: Histogram<u64>,
    measured_events: u64,
    acknowledged_events: u64,
    last_done: Instant,
}

async fn run_loop(args: Args, mut conn: Conn, loop_idx: usize, start: Instant) -> Result<Tally> {
    let measure_from = start + args.warmup;
    let deadline = measure_from + args.duration;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (loop_idx as u64 + 1).wrapping_mul(0x2545_F491));
    let mut tally = Tally {
        latency_ns: Histogram::new(3).expect("3 significant figures is a valid precision"),
        measured_events: 0,
        acknowledged_events: 0,
        last_done: start,
    };
    loop {
        let sent = Instant::now();
        let n_events = match args.workload {
            Workload::Append => {
                if sent >= deadline {
                    break;
                }
                conn.append(&args, &mut rng, args.events_per_request)
                    .await?
            }
            Workload::Read => {
                if sent >= deadline {
                    break;
                }
                conn.scan().await?
            }
            Workload::Fill => {
                let left = args.events - tally.acknowledged_events;
                if left == 0 {
                    break;
                }
                let n_events = left.min(FILL_EVENTS_PER_REQUEST) as usize;
                conn.append(&args, &mut rng, n_events).await?
            }
        };
        let done = Instant::now();
        tally.acknowledged_events += n_events;
        if done >= measure_from {
            let nanos = u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX);
            tally
                .latency_ns
                .record(nanos.max(1))
                .expect("the histogram resizes to fit");
            tally.measured_events += n_events;
            tally.last_done = done;
        }
    }
    Ok(tally)
}

async fn run(args: Args) -> Result<()> {
    let umadb = match args.system {
        System::Umadb => Some(Arc::new(
            UmaDbClient::new(format!("http://{}", args.server))
                .connect_async()
                .await
                .map_err(|err| format!("connect to umadb at {}: {err}", args.server))?,
        )),
        System::Redis => None,
    };
    let n_loops = if args.workload == Workload::Append {
        args.in_flight
    } else {
        1
    };
    let mut shared = Vec::new();
    if args.system == System::Redis && args.workload == Workload::Append {
        for _ in 0..args.connections {
            shared.push(Arc::new(Pipelined::connect(&args.server).await?));
        }
    }
    let mut conns = Vec::with_capacity(n_loops);
    for loop_idx in 0..n_loops {
        let pipelined = (!shared.is_empty()).then(|| &shared[loop_idx % shared.len()]);
        conns.push(Conn::open(&args, &umadb, pipelined).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(loop_idx, conn)| tokio::spawn(run_loop(args.clone(), conn, loop_idx, start)))
        .collect();
    let mut latency_ns = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let (mut measured_events, mut acknowledged_events, mut last_done) = (0, 0, start);
    for task in tasks {
        let tally = task
            .await
            .map_err(|err| format!("a load loop panicked: {err}"))??;
        latency_ns
            .add(&tally.latency_ns)
            .expect("histograms of one precision add");
        measured_events += tally.measured_events;
        acknowledged_events += tally.acknowledged_events;
        last_done = last_done.max(tally.last_done);
    }
    let measure_from = (start + args.warmup).min(last_done);
    let elapsed_s = (last_done - measure_from).as_secs_f64();
    let ms = |quantile: f64| latency_ns.value_at_quantile(quantile) as f64 / 1e6;
    println!(
        "{{\"system\":\"{}\",\"events\":{measured_events},\"acknowledged_events\":\
         {acknowledged_events},\"requests\":{},\"elapsed_s\":{elapsed_s:.6},\
         \"events_per_s\":{:.3},\"latency_ms\":{{\"p50\":{:.6},\"p99\":{:.6}}}}}",
        match args.system {
            System::Umadb => "umadb",
            System::Redis => "redis",
        },
        latency_ns.len(),
        if elapsed_s > 0.0 {
            measured_events as f64 / elapsed_s
        } else {
            0.0
        },
        ms(0.5),
        ms(0.99),
    );
    if let Some(client) = umadb {
        client.close();
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("peer-load: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Err(message) = runtime.block_on(run(args)) {
        eprintln!("peer-load: {message}");
        std::process::exit(1);
    }
    Ok(())
}
