//! Every bound of the server, in one place.
//!
//! The core's bounds (`causeway_core::limits`) govern what one request may contain; these
//! govern how much work and memory the server commits to at once: the blocking pool that runs
//! every store call, the number of open subscriptions, and the size of the messages it sends.
//! Each bound is enforced with a clear status: a full pool or too many subscriptions is
//! RESOURCE_EXHAUSTED at once, never an unbounded wait; a configuration over a bound is
//! refused at startup naming the constant.

use std::time::Duration;

use causeway_core::limits::{APPEND_BYTES_MAX, APPEND_EVENTS_MAX};

/// Threads of the blocking pool. Every store call (appends wait for fsync, reads may touch the
/// disk) runs on one of them, never on an async worker. More threads let more appends share one
/// group-commit fsync; each costs a stack (2 MiB reserved, little resident).
pub const POOL_THREADS_MAX: usize = 1024;
/// Default of `--pool-threads`: enough concurrent appenders to fill large commit groups.
pub const POOL_THREADS_DEFAULT: usize = 64;
/// Worker threads of the async runtime, which serve gRPC (HTTP/2, protobuf, the hand-off of
/// each call to the pool).
pub const ASYNC_THREADS_MAX: usize = 1024;

/// Default of `--async-threads`: one fewer than the CPUs, at least one. Under load the store's
/// writer and sync threads keep about one CPU busy between them; a runtime worker on every CPU
/// as well only trades places with them. On the project's 2-vCPU machine one worker instead of
/// two gave 1-event appends at 64 in flight 37,400 to 40,400/s against 30,500 to 38,800 (eight
/// interleaved rounds) and read scans 787,000 events/s against 659,000 to 693,000
/// (docs/BENCHMARKS.md, fifth pass).
pub fn async_threads_default() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cpus| cpus.get() - 1)
        .max(1)
}

/// Store calls waiting for a pool thread. When the queue is full a request is refused with
/// RESOURCE_EXHAUSTED at once, so overload shows as fast errors rather than growing latency.
pub const POOL_QUEUE_MAX: usize = 65_536;
/// Default of `--pool-queue`.
pub const POOL_QUEUE_DEFAULT: usize = 1024;

/// Subscription store calls (log reads, and the start of a subscription) that may be on the
/// pool at once, running or queued, for a pool of `pool_threads` threads: half the threads, at
/// least one. Every commit wakes every live subscription into a read, so without this bound a
/// few dozen idle subscribers fill the pool's queue on each commit and appends are refused with
/// RESOURCE_EXHAUSTED. With it, subscriptions hold at most this many of the pool's
/// `pool_threads + pool_queue` slots and the rest stay for appends and unary reads; the
/// configuration must give the queue at least this many slots (checked at startup), so
/// appends keep at least as many slots as there are threads. The price: fan-out to many
/// subscribers uses at most half the pool's threads.
pub fn subscribe_reads_max(pool_threads: usize) -> usize {
    (pool_threads / 2).max(1)
}

/// Concurrent subscriptions the configuration may allow. Each holds a task, a buffer of up to
/// [`SUBSCRIBE_BUFFER_MESSAGES`] messages and [`SUBSCRIBE_BUFFER_BYTES_MAX`] bytes, and one
/// read batch; an idle one holds no thread.
pub const SUBSCRIPTIONS_MAX: usize = 65_536;
/// Default of `--max-subscriptions`; one more is refused with RESOURCE_EXHAUSTED.
pub const SUBSCRIPTIONS_DEFAULT: usize = 1024;
/// Messages buffered per subscription between the task that reads the log and the connection.
/// When the buffer is full the task waits: a slow consumer slows only itself, never writers or
/// other subscribers.
pub const SUBSCRIBE_BUFFER_MESSAGES: usize = 16;
/// Encoded bytes of messages buffered per subscription between the task that reads the log and
/// the connection, whatever their number: a message is queued only once its bytes fit, and
/// they count until the connection takes it. A message larger than this (one page holding a
/// large append, up to [`SUBSCRIBE_MESSAGE_BYTES_MAX`]) is queued alone, once the buffer is
/// empty. So a subscriber that never reads holds at most `max(8 MiB, its largest message)`
/// here; ordinary pages (at most [`SUBSCRIBE_PAGE_BYTES_MAX`] of records, about 4.5 MiB
/// encoded) keep it at 8 MiB, two pages.
pub const SUBSCRIBE_BUFFER_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Events one subscription reads from the store per pool call (catch-up and live alike). Bounds
/// how long one read holds a pool thread and how many events a subscription holds in memory
/// beyond its buffer; a page exceeds it only to finish an append (at most `APPEND_EVENTS_MAX`
/// more events).
pub const SUBSCRIBE_READ_EVENTS_MAX: usize = 256;
/// Record bytes one subscription reads from the store per pool call: the core's byte budget
/// for the page (`Store::read_log_records`). A page may exceed it by the rest of one append, and
/// is sent whole as one `EventBatch`; see [`SUBSCRIBE_MESSAGE_BYTES_MAX`].
pub const SUBSCRIBE_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Shortest time between two progress checkpoints of one subscription. A sparse filter over a
/// busy log would otherwise send a checkpoint per commit; with this, it sends at most a few per
/// second, and a pending one is flushed when the interval ends even if the log goes quiet.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Longest pause before a subscription retries a read the full pool refused. A live
/// subscription retries rather than failing: it is resumable, but a reconnect costs more.
pub const SUBSCRIBE_RETRY_DELAY_MAX: Duration = Duration::from_millis(100);

/// Bytes of events in one unary response message. `ReadLog` asks the core for a page of at most
/// this many record bytes (a forward page may run over by the rest of one append, which stays
/// whole); `ReadEntity` and graph responses are cut at this many encoded bytes. A read whose
/// events are larger is cut short with a continuation; one event larger than this is still
/// sent, alone.
pub const READ_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Protobuf framing an append may add on the wire beyond the bytes the core counts against
/// `APPEND_BYTES_MAX`: per event the message header, field tags and lengths, the id and
/// correlation id as 36-character strings, causation ids as strings (counted as 16 bytes), and
/// the expected versions and gate names, which the core does not count. 4 MiB covers an append
/// of 10,000 events with ids, a few tags, parents and metadata entries each, plus 1,024
/// expected versions; only pathological shapes need more, and those are refused by the
/// transport (OUT_OF_RANGE) instead of by the core (INVALID_ARGUMENT naming the limit).
pub const MESSAGE_FRAMING_BYTES: usize = 4 * 1024 * 1024;
/// The gRPC limit on messages the server receives: an append the core would accept always
/// fits, so an oversized append is refused by the core with a message naming
/// `APPEND_BYTES_MAX`. Reads are cut at [`READ_BATCH_BYTES_MAX`] (a forward `ReadLog` page
/// plus at most the rest of one append, like a subscription message), so every response stays
/// within [`RESPONSE_BYTES_MAX`].
pub const MESSAGE_BYTES_MAX: usize = APPEND_BYTES_MAX + MESSAGE_FRAMING_BYTES;

/// Bytes an event's protobuf encoding (`Event` in a repeated field) may take beyond its record
/// in the log, which is what the core's byte budgets count. The record's fixed part (prefix,
/// position, version, timestamp, both ids as 16 bytes, name lengths, counts, hash, trailer
/// count) is 110 bytes; the protobuf's fixed part (varint position and version, the timestamp
/// message, both ids as 36-character strings, the hash, field tags and lengths, the length in
/// the repeated field) is at most 172. Each tag adds at most 1 byte, each metadata entry 5
/// (its entry message), each causation parent 22 (36 characters and a tag and length, against
/// 16 bytes): with 64 of each, at most 62 + 64 + 320 + 1,408 = 1,854 bytes.
pub const EVENT_WIRE_BYTES_MAX: usize = 2048;
/// Bytes an event's protobuf encoding may take beyond the `NewEvent` it was appended as: the
/// position, version, timestamp and hash (at most 73), the id and correlation id when the
/// client left them to the server (76), the length in the repeated field growing by a byte,
/// and ids the client sent in the 32-character form coming back in the 36-character one (4 for
/// each id and each of up to 64 parents).
pub const EVENT_STAMP_BYTES_MAX: usize = 512;
/// Encoded bytes of one subscription message (`SubscribeResponse`), which holds one core page
/// whole, so that every append arrives in one message. A page is two parts:
/// - the events within the page's budget: at most [`SUBSCRIBE_PAGE_BYTES_MAX`] of records and
///   [`SUBSCRIBE_READ_EVENTS_MAX`] events, so at most 4 MiB + 256 x [`EVENT_WIRE_BYTES_MAX`]
///   (512 KiB) encoded;
/// - the rest of the last append, which the page may not cut: every append came in as an
///   `AppendRequest` of at most [`MESSAGE_BYTES_MAX`] (20 MiB), and its events encode in at
///   most `APPEND_EVENTS_MAX` x [`EVENT_STAMP_BYTES_MAX`] (about 4.9 MiB) more.
///
/// Plus 64 bytes for the response and batch envelopes: about 29.4 MiB in all, within the
/// 64 MiB the client accepts (`causeway_client::RESPONSE_BYTES_MAX`).
pub const SUBSCRIBE_MESSAGE_BYTES_MAX: usize = SUBSCRIBE_PAGE_BYTES_MAX
    + SUBSCRIBE_READ_EVENTS_MAX * EVENT_WIRE_BYTES_MAX
    + MESSAGE_BYTES_MAX
    + APPEND_EVENTS_MAX * EVENT_STAMP_BYTES_MAX
    + 64;
/// The gRPC limit on messages the server sends. It is above [`MESSAGE_BYTES_MAX`] (the limit
/// on what it receives) for the pages that keep appends whole: subscription messages and
/// forward `ReadLog` pages.
pub const RESPONSE_BYTES_MAX: usize = SUBSCRIBE_MESSAGE_BYTES_MAX;

/// How often the server pings an HTTP/2 connection. A subscriber that vanished without closing
/// its connection (a crashed host, a dropped NAT mapping) is noticed by a missed ping, and its
/// subscription slot comes back, instead of being held forever.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest HTTP/2 frame a client may send (`SETTINGS_MAX_FRAME_SIZE`; the protocol's
/// default is 16 KiB). A 100-event append of about 35 KB then arrives as one DATA frame instead
/// of three, each of which the client wrote and the server read with a system call of its own:
/// per request, client `writev` 4.30 -> 2.38 and server `recvfrom` 4.57 -> 2.55. The server
/// holds at most one frame per connection while reading it.
pub const HTTP2_FRAME_BYTES_MAX: u32 = 1024 * 1024;
/// HTTP/2 streams (calls) one connection may have open at once, the server's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`. A client that wants more waits on its side for a stream
/// to end (tonic and grpc clients queue them), so one connection cannot make the server hold
/// an unbounded number of calls; with `--max-connections` this bounds the calls in progress.
/// 256 is above what the benchmark's 64 in flight on one connection needs.
pub const HTTP2_STREAMS_PER_CONNECTION_MAX: u32 = 256;
/// Bytes of one request's header list, as HTTP/2 counts it (each name and value plus 32),
/// the server's `SETTINGS_MAX_HEADER_LIST_SIZE`; a larger header block resets the stream. gRPC
/// metadata is small (a request id, later a bearer token of a few KiB); 16 KiB is what
/// grpc-go allows by default.
pub const HTTP2_HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;
/// Streams a client may open and reset before the server has accepted them; one more and the
/// connection is closed with GOAWAY (ENHANCE_YOUR_CALM). This is the defence against "rapid
/// reset" (CVE-2023-44487), where a client opens and cancels streams in a loop so that they
/// never count against [`HTTP2_STREAMS_PER_CONNECTION_MAX`]; 20 is h2's own default, set here
/// so an upgrade cannot change it unseen.
pub const HTTP2_PENDING_RESETS_MAX: usize = 20;
/// Streams the server may reset on one connection because the client broke the protocol on
/// them (a header list too large, a frame on a closed stream) before it closes the connection
/// with GOAWAY: hyper's default, set here for the same reason.
pub const HTTP2_LOCAL_ERROR_RESETS_MAX: usize = 1024;
/// How long a connection past `--max-connection-age-secs` keeps its calls in flight after
/// the server told it to go away (GOAWAY): unary calls finish, and a subscription still open
/// at the end is cut, to be resumed on a new connection from its last position plus one.
pub const CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);
/// The most `--max-connection-age-secs` may be (about a year); 0 turns the age limit off.
pub const CONNECTION_AGE_SECS_MAX: u64 = 365 * 24 * 3600;

/// Default of `--max-in-flight-request-bytes`: bytes of request messages, summed over every
/// call of the public API, that the server holds at once while it receives and handles them
/// (`budget.rs`). A call whose bytes would go past it is refused with RESOURCE_EXHAUSTED and a
/// `RetryInfo`. The memory model is the deploy files' container (a 1 GiB limit): a quarter of
/// it for requests in flight, twelve appends of the largest size (`MESSAGE_BYTES_MAX`, 20 MiB)
/// or about ten thousand of 25 KB, leaves the rest to the index (about 100 bytes per event),
/// subscriptions and the allocator. Raise it with the container's memory.
pub const IN_FLIGHT_REQUEST_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// The least `--max-in-flight-request-bytes` may be. A budget below `MESSAGE_BYTES_MAX`
/// refuses every request larger than itself, however idle the server: meant for tests and
/// for small machines that take only small appends.
pub const IN_FLIGHT_REQUEST_BYTES_MIN: u64 = 64 * 1024;
/// The most `--max-in-flight-request-bytes` may be.
pub const IN_FLIGHT_REQUEST_BYTES_MAX: u64 = 1 << 40;

/// How long a shutdown waits for in-flight requests before it closes the store anyway. Closing
/// loses nothing acknowledged: the writer finishes and syncs what it has before it stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Bytes of a signing key file (64 hex digits of an Ed25519 secret, and a line break).
pub const SIGNING_KEY_FILE_BYTES_MAX: u64 = 4096;

/// Joint configurations in one Raft membership: openraft uses one, or two during a change.
/// A decoded membership with more is damage.
pub const MEMBERSHIP_CONFIGS_MAX: usize = 2;
/// Nodes (voters and learners) in one Raft membership. Far above any cluster Causeway runs;
/// a decoded count above it is damage, not a reason to allocate.
pub const MEMBERSHIP_NODES_MAX: usize = 1024;
/// Bytes of one node's address in a Raft membership (`host:port`, a DNS name at most).
pub const MEMBERSHIP_ADDR_BYTES_MAX: usize = 1024;
/// Bytes of one Raft log segment before it is sealed. A sealed segment is the unit a purge
/// removes, so the log keeps up to this much more than asked; 64 MiB like the event log's.
pub const RAFT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Appended groups waiting for the Raft log's fsync thread before `append` blocks.
pub const RAFT_SYNC_DEPTH_MAX: usize = 64;

/// The longest advertised address a cluster node accepts (`--advertise`), in bytes.
pub const ADVERTISE_BYTES_MAX: usize = 255;
/// The default leader heartbeat interval, in milliseconds.
pub const HEARTBEAT_MS_DEFAULT: u64 = 100;
/// The shortest heartbeat interval accepted, in milliseconds: below it heartbeats alone would
/// keep a 2-core machine busy.
pub const HEARTBEAT_MS_MIN: u64 = 10;
/// The longest heartbeat interval accepted, in milliseconds.
pub const HEARTBEAT_MS_MAX: u64 = 10_000;
/// The default shortest election timeout, in milliseconds (each is drawn between it and 1.5
/// times it, the leader lease). A crashed leader is replaced within about 2.5 times this.
pub const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 500;
/// The longest election timeout accepted, in milliseconds.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 60_000;
/// Entries a leader keeps in its log after a snapshot, so that a follower that fell behind by
/// less is caught up from the log rather than by a whole snapshot.
pub const RAFT_LOG_KEPT_AFTER_SNAPSHOT: u64 = 100_000;
/// Applied entries between two snapshots.
pub const RAFT_SNAPSHOT_INTERVAL_ENTRIES: u64 = 200_000;
/// The entry bytes of one AppendEntries message between nodes. openraft batches entries by
/// count alone, and a catch-up batch of large appends can pass the message limit
/// ([`MESSAGE_BYTES_MAX`]), so the sender splits a batch into messages of at most this many
/// entry bytes (an entry larger than it goes alone; any one entry fits the limit).
pub const PEER_ENTRIES_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The bytes of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// How long a node waits for a snapshot file's next chunk before it gives the transfer up.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node-to-node request may take before the peer counts as unreachable for it.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most files a snapshot may list (a store checkpoint's segments and sidecars).
pub const SNAPSHOT_FILES_MAX: usize = 100_000;
/// How long a linearizable read on a follower waits to apply up to the leader's read index,
/// and a `leader` read on a new leader to apply what earlier leaders acknowledged.
pub const READ_INDEX_WAIT: Duration = Duration::from_secs(5);
/// The most appends of one `AppendStream` submitted and not yet answered; the server reads the
/// stream's next request only below it. Each holds its request's bytes in the request budget
/// (`--max-in-flight-request-bytes`) until it is answered.
pub const APPEND_STREAM_PENDING_MAX: usize = 64;
/// How long a write waits for the cluster to commit and apply it before it is answered
/// UNAVAILABLE (its outcome then unknown to the client).
pub const COMMIT_WAIT: Duration = Duration::from_secs(10);
/// How long AddLearner waits for the new learner to catch up before it answers with the
/// change made and the learner still catching up.
pub const LEARNER_WAIT: Duration = Duration::from_secs(10);
/// How long TransferLeader waits for the chosen voter to hold every entry the leader had when
/// asked, before it refuses with FAILED_PRECONDITION and changes nothing: a voter that lags
/// would lose the election the transfer starts, and another node would take the leadership.
pub const TRANSFER_CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// How many heartbeat intervals the chosen voter of a TransferLeader may have been silent
/// (no answer to a heartbeat or an AppendEntries) and still be handed the leadership: one
/// silent for longer may be down or frozen, and would not start the election the transfer
/// asks of it. It is waited for within `TRANSFER_CATCH_UP_WAIT`, like one that lags.
pub const TRANSFER_SILENCE_HEARTBEATS: u64 = 3;
/// The most writes proposed to openraft as one batch: the writes waiting when the proposer
/// comes round share a log append, an fsync and a replication message.
pub const PROPOSE_BATCH_MAX: usize = 256;
/// The most writes waiting for the proposer; writers wait for room beyond it (and the wait
/// counts toward `COMMIT_WAIT`).
pub const PROPOSE_QUEUE_MAX: usize = 4096;

/// The HTTP/2 flow-control window of one stream, for every connection this server takes and
/// every connection to a peer: how much a sender may have in flight on a stream before it
/// waits for the receiver. The protocol's default (64 KiB) would make a leader wait a round
/// trip per 64 KiB of entries to a follower.
pub const HTTP2_STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// The HTTP/2 flow-control window of one connection (all its streams together).
pub const HTTP2_CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// The newest Raft log entries a node keeps decoded in memory, at most, so that replicating
/// them to followers reads no disk and decodes nothing.
pub const RAFT_LOG_CACHE_ENTRIES_MAX: usize = 16_384;
/// The bytes (encoded) of the entries kept in memory, at most.
pub const RAFT_LOG_CACHE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How often a node re-checks whether it can serve (store writable, a leader known), turning
/// gRPC health and `/readyz` to match.
pub const READINESS_INTERVAL: Duration = Duration::from_millis(250);
/// The most characters of a client's `x-request-id` a log line repeats.
pub const REQUEST_ID_CHARS_MAX: usize = 64;
/// The most characters of a failed RPC's message a log line repeats.
pub const LOG_MESSAGE_CHARS_MAX: usize = 200;
/// Requests the admin HTTP port serves at once; more wait for one to finish.
pub const ADMIN_REQUESTS_MAX: usize = 64;

/// Backups (`OperationsService.Backup`) running at once; one more is RESOURCE_EXHAUSTED. Each
/// holds a checkpoint beside the store (hard links, plus a copy of the active segment's
/// committed prefix: up to one segment of disk) and reads every file once, so a few at a time
/// keep the disk for appends; backups are rare.
pub const BACKUPS_MAX: usize = 2;
/// Bytes of one backup chunk: big enough that a chunk is a handful of HTTP/2 frames, small
/// enough that a stream's buffered chunks cost little memory.
pub const BACKUP_CHUNK_BYTES: usize = 1024 * 1024;
/// Backup messages read ahead of the client: the chunks a stream buffers at most.
pub const BACKUP_BUFFER_MESSAGES: usize = 4;
/// How long a backup waits for the client to take its next message before the stream ends
/// with DEADLINE_EXCEEDED, so a client that stops reading cannot hold a backup slot and its
/// checkpoint forever.
pub const BACKUP_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Files a backup's manifest may list, as `SNAPSHOT_FILES_MAX` for a snapshot; a restore
/// refuses a manifest that lists more.
pub const BACKUP_FILES_MAX: usize = SNAPSHOT_FILES_MAX;
/// Bytes of a backup's `CHECKPOINT` manifest, at most: a line of about a hundred bytes for
/// each of `BACKUP_FILES_MAX` files, with room to spare. A restore refuses a larger one before
/// reading it.
pub const BACKUP_MANIFEST_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes of a backup's `BACKUP` file (format, position, digest, the manifest's blake3).
pub const BACKUP_FILE_BYTES_MAX: u64 = 4096;

/// Bytes of frames one `OperationsService.Verify` call reads, at most (about: a chunk of events
/// is finished): a page takes well under a second on a local disk, so a huge log is checked in
/// many short calls and none holds a pool thread for long. A larger `max_bytes` is capped here.
pub const VERIFY_PAGE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The scrubber's default pace, in bytes read per second (`--scrub-bytes-per-sec`): a 64 MiB
/// segment takes 8 s, a 100 GiB log under 4 hours per pass, and the disk keeps nearly all of
/// its bandwidth for appends and reads.
pub const SCRUB_BYTES_PER_SEC_DEFAULT: u64 = 8 * 1024 * 1024;
/// The longest the store's writer may poll for one client's next append
/// (`--writer-spin-us`): 10 ms. Past a few hundred microseconds a client in sequence gains
/// nothing more, and every microsecond is CPU spent while that client pauses.
pub const WRITER_SPIN_US_MAX: u64 = 10_000;
/// The pause between two scrubber passes over the sealed segments.
pub const SCRUB_PASS_PAUSE: Duration = Duration::from_secs(60);
/// Damage reports the scrubber remembers (so each is logged and counted once) and `/readyz`
/// lists; past it, only the count grows.
pub const SCRUB_BREAKS_KEPT_MAX: usize = 64;

/// Events in one page of the web console's log or entity reads (`limit`); more is refused
/// with 400. The page shows 50 by default; a page is also cut at [`CONSOLE_PAGE_BYTES_MAX`].
pub const CONSOLE_PAGE_EVENTS_MAX: usize = 500;
/// Bytes of records one console log page or tail read takes from the store (the core's
/// `read_log_bytes` budget), so a page of large events stays a small response.
pub const CONSOLE_PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes of a payload the console sends as text; a longer UTF-8 payload is cut there (and
/// marked `payload_truncated`). A payload that is not UTF-8 is sent as its size only.
pub const CONSOLE_PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Causation links the console's graph reads follow (`depth`); more is refused with 400.
/// A drawn graph deeper than this is unreadable; `causeway graph` goes to `GRAPH_DEPTH_MAX`.
pub const CONSOLE_GRAPH_DEPTH_MAX: u32 = 16;
/// Events in one console graph read (`limit`, and the default); more is refused with 400, and
/// a walk that finds more stops there and says `truncated`.
pub const CONSOLE_GRAPH_NODES_MAX: usize = 200;
/// Bytes of a receipt posted to the console for verification; more is refused with 413. A
/// receipt of `APPEND_EVENTS_MAX` events printed by the CLI takes about 3 MiB.
pub const CONSOLE_RECEIPT_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Live tails (server-sent event streams) the console serves at once; one more is refused with
/// 429. Each holds a task and a buffer of [`CONSOLE_TAIL_BUFFER_EVENTS`] events, and its reads
/// take pool slots like any other read.
pub const CONSOLE_STREAMS_MAX: usize = 16;
/// Events buffered per live tail between its reader and the connection.
pub const CONSOLE_TAIL_BUFFER_EVENTS: usize = 16;
/// Bytes of one console JSON response, at most (one event always fits): a page or a graph stops
/// short of it, says `truncated`, and names where to go on, so a payload's JSON escaping (up to
/// six bytes per byte) cannot make a page hundreds of megabytes.
pub const CONSOLE_RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How long the console waits for a posted receipt's body before it answers 408, so a client
/// that sends headers and stalls cannot hold a request slot.
pub const CONSOLE_BODY_WAIT: Duration = Duration::from_secs(10);
/// How often an idle tail sends a comment, so proxies and browsers keep the stream open.
pub const CONSOLE_TAIL_KEEPALIVE: Duration = Duration::from_secs(15);

/// The pause an overloaded server (a full pool, writer queue or subscription table) asks for in
/// its `RetryInfo` before the same request is sent again.
pub const RETRY_AFTER_OVERLOAD: Duration = Duration::from_millis(100);
/// The pause a cluster member that knows no leader asks for: about one election.
pub const RETRY_AFTER_NO_LEADER: Duration = Duration::from_millis(500);
/// The pause before a write whose outcome is unknown is sent again with its idempotency key.
pub const RETRY_AFTER_OUTCOME_UNKNOWN: Duration = Duration::from_millis(200);
/// The pause a server that is shutting down asks for (another node, or this one restarted).
pub const RETRY_AFTER_SHUTDOWN: Duration = Duration::from_secs(1);

/// The default number of connections the gRPC port holds open at once (`--max-connections`);
/// more wait in the kernel's backlog until one closes. Keep the process's file descriptor limit
/// above this plus the store's files (the deploy files set 65536).
pub const CONNECTIONS_DEFAULT: usize = 4096;
/// The most `--max-connections` may be.
pub const CONNECTIONS_MAX: usize = 1 << 20;
/// Connections the admin HTTP port holds open at once.
pub const ADMIN_CONNECTIONS_MAX: usize = 128;
/// The pause after a failed accept (out of file descriptors, say) before the next.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The most characters of a value a client sent that an error message repeats (an id that is
/// not a UUID, a console parameter); longer values are cut, with their length said.
pub const ECHO_CHARS_MAX: usize = 64;
/// Bytes of a receipt's `signature_key_id` that `VerifyReceipt` takes: this server's ids are
/// `ed25519:` and 16 hex digits (24 bytes); a longer one cannot be a key of any server.
pub const SIGNATURE_KEY_ID_BYTES_MAX: usize = 64;
/// Bytes of one TLS file (a certificate chain, a key, a CA bundle) read at start or reload; a
/// FIFO or `/dev/zero` named by mistake is refused instead of read forever.
pub const TLS_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// How long a new gRPC connection may stay silent before its first bytes (the HTTP/2 preface
/// or a TLS ClientHello); it holds one of the port's permits meanwhile, so sockets that never
/// speak give their permits back at this bound instead of locking every client out.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take over its TLS handshake; the connection holds one of the port's
/// permits meanwhile, so a client that stalls it gives the permit back at this bound.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the TLS files are compared with the last load (modification time, length, inode,
/// change time: `reload.rs`); a change reloads them (SIGHUP reloads at once).
pub const TLS_RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Bytes of the policy file (`--auth-file`) and of the JWKS file it names, read at start and at
/// every reload; a larger file (or a FIFO named by mistake) is refused and the old policy kept.
pub const AUTH_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Principals one policy file may list; more is refused naming the bound.
pub const PRINCIPALS_MAX: usize = 10_000;
/// Bytes of a bearer token (or a JWT) a request may present; a longer one is UNAUTHENTICATED
/// without being hashed or parsed.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Requests per second, over the whole server, whose credentials are refused before the rest
/// are answered RESOURCE_EXHAUSTED with `RetryInfo` and no audit line: guessing tokens gets
/// no faster than this, and the audit log no longer than this many refusals a second.
pub const AUTH_FAILURES_PER_SEC: u32 = 100;
/// How often the policy file (and the JWKS file) are compared with the last load (modification
/// time, length, inode, change time: `reload.rs`); a change reloads them (SIGHUP reloads at
/// once).
pub const AUTH_RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The most requests per second a principal's `requests_per_sec` may grant.
pub const PRINCIPAL_REQUESTS_PER_SEC_MAX: u32 = 1_000_000;
