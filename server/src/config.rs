//! The server's configuration: command-line flags, `CAUSEWAY_*` environment variables, and an
//! optional TOML file (`--config`).
//!
//! Each setting is taken from the first source that has it: a flag, then its environment
//! variable, then the file, then the default. The result is checked against the bounds in
//! `limits.rs` before anything starts, and a bad value is refused naming the setting.
//!
//! ```toml
//! data_dir = "/var/lib/causeway"
//! listen = "0.0.0.0:7420"
//! admin_listen = "127.0.0.1:7421"  # metrics, health and the console over HTTP; "off" for none
//! log_format = "json"           # or "text"; default: text at a terminal, else json
//! async_threads = 1            # default: one fewer than the CPUs, at least 1
//! pool_threads = 64
//! pool_queue = 1024
//! max_subscriptions = 1024
//! max_connections = 4096        # open at once on the gRPC port
//! max_in_flight_request_bytes = 268435456  # request bytes held at once, over every call
//! max_connection_age_secs = 0   # a connection is asked to go away after this long; 0: never
//! durability = "fsync"          # or "relaxed"
//! signing_key = "/etc/causeway/receipt.key"
//! record_denials = true
//! scrub_bytes_per_sec = 8388608  # the background scrubber's pace; 0 turns it off
//! writer_spin_us = 500          # the writer polls this long for a stream's next append; 0: off
//! node_id = 1                   # runs as a member of a Raft cluster (see below)
//! advertise = "10.0.0.1:7420"   # where other nodes and clients reach this one
//! heartbeat_ms = 100
//! election_timeout_ms = 500
//! snapshot_entries = 200000     # entries applied between two snapshots
//! log_keep_entries = 100000     # entries kept behind the last snapshot, for lagging followers
//! tls_cert = "/etc/causeway/tls/node.crt"   # TLS on both ports (with tls_key)
//! tls_key = "/etc/causeway/tls/node.key"
//! tls_client_ca = "/etc/causeway/tls/ca.crt"  # client certificates required; peers are mTLS
//! insecure = false              # true allows plaintext on an address other than loopback
//! compress_responses = false    # true compresses answers for clients that accept gzip or zstd
//! auth_file = "/etc/causeway/auth.toml"  # principals and permissions (docs/SECURITY.md)
//! ```
//!
//! Without `node_id` the server is one node on its own store, as it has always been. With it,
//! the server is a cluster member: it keeps a Raft log beside the store, waits to be
//! initialised (`causeway cluster init`) or added by a leader, and serves writes only as leader.
//! The settings from `advertise` to `log_keep_entries` are a member's: a single node given one
//! refuses to start, naming it, rather than ignore it.
//!
//! Plaintext is for loopback: a `listen` or `admin_listen` address other than loopback is
//! refused without TLS unless `insecure` says plaintext to the network is meant. A cluster
//! member with TLS needs `tls_client_ca`: its peers are mutual TLS from the first start.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::limits::{
    ADVERTISE_BYTES_MAX, ASYNC_THREADS_MAX, CONNECTION_AGE_SECS_MAX, CONNECTIONS_DEFAULT,
    CONNECTIONS_MAX, ELECTION_TIMEOUT_MS_DEFAULT, ELECTION_TIMEOUT_MS_MAX, HEARTBEAT_MS_DEFAULT,
    HEARTBEAT_MS_MAX, HEARTBEAT_MS_MIN, IN_FLIGHT_REQUEST_BYTES_DEFAULT,
    IN_FLIGHT_REQUEST_BYTES_MAX, IN_FLIGHT_REQUEST_BYTES_MIN, POOL_QUEUE_DEFAULT, POOL_QUEUE_MAX,
    POOL_THREADS_DEFAULT, POOL_THREADS_MAX, RAFT_LOG_KEPT_AFTER_SNAPSHOT,
    RAFT_SNAPSHOT_INTERVAL_ENTRIES, SCRUB_BYTES_PER_SEC_DEFAULT, SUBSCRIPTIONS_DEFAULT,
    SUBSCRIPTIONS_MAX, WRITER_SPIN_US_MAX, async_threads_default, subscribe_reads_max,
};
use crate::tls::TlsFiles;

/// The default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "./causeway-data";
/// The default listen address: loopback only, so a fresh server is not exposed by accident. The
/// port is below Linux's ephemeral range (32768-60999), so a client's own outgoing connection
/// can never take it (a TIME-WAIT self-connection once blocked a restart on 50051).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7420";
/// The default admin HTTP address (metrics, health, console): loopback only, next to the
/// gRPC port.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:7421";

/// The command line of `causewayd`. Every flag can also come from its `CAUSEWAY_*` variable.
#[derive(Parser, Debug, Default)]
#[command(
    name = "causewayd",
    version,
    about = "The Causeway event store, served over gRPC."
)]
pub struct Args {
    /// Instead of serving, run a tool (`restore`, `repair`).
    #[command(subcommand)]
    pub command: Option<crate::restore::Command>,
    /// A TOML file with any of the settings below (flags and variables override it).
    #[arg(long, env = "CAUSEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the store keeps its files [default: ./causeway-data].
    #[arg(long, env = "CAUSEWAY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The address to serve on, as IP:PORT; port 0 picks a free port [default: 127.0.0.1:7420].
    #[arg(long, env = "CAUSEWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The admin HTTP address (/metrics, /healthz, /readyz), as IP:PORT, or `off`
    /// [default: 127.0.0.1:7421].
    #[arg(long, env = "CAUSEWAY_ADMIN_LISTEN", value_parser = parse_admin_listen)]
    pub admin_listen: Option<AdminListen>,
    /// How log lines are written to stderr: `text` for people, `json` (one object per line)
    /// for collectors [default: text at a terminal, else json].
    #[arg(long, env = "CAUSEWAY_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Threads that serve gRPC [default: one fewer than the CPUs, at least 1; the store's
    /// writer and sync threads use the other]. With 1, the process's main thread serves.
    #[arg(long, env = "CAUSEWAY_ASYNC_THREADS")]
    pub async_threads: Option<usize>,
    /// Threads that run store calls [default: 64].
    #[arg(long, env = "CAUSEWAY_POOL_THREADS")]
    pub pool_threads: Option<usize>,
    /// Store calls that may wait for a thread before requests are refused [default: 1024].
    #[arg(long, env = "CAUSEWAY_POOL_QUEUE")]
    pub pool_queue: Option<usize>,
    /// Subscriptions open at once before more are refused [default: 1024].
    #[arg(long, env = "CAUSEWAY_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// Connections the gRPC port holds open at once; more wait until one closes
    /// [default: 4096].
    #[arg(long, env = "CAUSEWAY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Bytes of requests the server holds at once, over every call of every connection, while
    /// it receives and handles them; a call past it is refused with RESOURCE_EXHAUSTED
    /// [default: 268435456, 256 MiB].
    #[arg(long, env = "CAUSEWAY_MAX_IN_FLIGHT_REQUEST_BYTES")]
    pub max_in_flight_request_bytes: Option<u64>,
    /// Seconds after which a client connection is asked to go away (GOAWAY) and reconnect;
    /// its calls get 30 s more to finish. Spreads clients over nodes again after a restart or
    /// behind a load balancer; 0 never asks [default: 0].
    #[arg(long, env = "CAUSEWAY_MAX_CONNECTION_AGE_SECS")]
    pub max_connection_age_secs: Option<u64>,
    /// When appends are answered: after fsync, or (relaxed) before it, which loses acknowledged
    /// events on power loss [default: fsync].
    #[arg(long, env = "CAUSEWAY_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// A file with an Ed25519 secret key (64 hex digits) that signs every receipt.
    #[arg(long, env = "CAUSEWAY_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Record every refused append as an event in the $system scope [default: false].
    #[arg(
        long,
        env = "CAUSEWAY_RECORD_DENIALS",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub record_denials: Option<bool>,
    /// Bytes per second the background scrubber re-reads sealed segments at, checking CRCs
    /// and the hash chain; 0 turns it off [default: 8388608].
    #[arg(long, env = "CAUSEWAY_SCRUB_BYTES_PER_SEC")]
    pub scrub_bytes_per_sec: Option<u64>,
    /// Microseconds the store's writer polls for the next append of a client appending in
    /// sequence over an AppendStream, after syncing its last one alone, before it sleeps; 0
    /// turns it off. It trades up to this much CPU per append for not waking a sleeping thread
    /// per append [default: 500; at most 10000].
    #[arg(long, env = "CAUSEWAY_WRITER_SPIN_US")]
    pub writer_spin_us: Option<u64>,
    /// Run as member NODE_ID (1 or more) of a Raft cluster; fixed for the life of the data
    /// directory. Without it the server is a single node.
    #[arg(long, env = "CAUSEWAY_NODE_ID")]
    pub node_id: Option<u64>,
    /// The address other nodes and clients reach this node at, as HOST:PORT [default: the
    /// listen address].
    #[arg(long, env = "CAUSEWAY_ADVERTISE")]
    pub advertise: Option<String>,
    /// The leader's heartbeat interval in a cluster, in milliseconds [default: 100].
    #[arg(long, env = "CAUSEWAY_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// How long a follower waits without a heartbeat before standing for election, in
    /// milliseconds; each wait is drawn between this and 1.5 times this [default: 500].
    #[arg(long, env = "CAUSEWAY_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Entries applied between two snapshots of a cluster node's store [default: 200000].
    #[arg(long, env = "CAUSEWAY_SNAPSHOT_ENTRIES")]
    pub snapshot_entries: Option<u64>,
    /// Entries a cluster node keeps in its Raft log behind its last snapshot, so a follower
    /// that far behind is caught up from the log rather than by a whole snapshot
    /// [default: 100000].
    #[arg(long, env = "CAUSEWAY_LOG_KEEP_ENTRIES")]
    pub log_keep_entries: Option<u64>,
    /// A PEM file with this server's certificate chain, leaf first; with --tls-key, both ports
    /// serve TLS only. Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "CAUSEWAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// A PEM file with the private key of --tls-cert.
    #[arg(long, env = "CAUSEWAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// A PEM file of CA certificates: clients must then present a certificate one of them
    /// signed (mutual TLS). A cluster member with TLS needs it: peers use it to trust each
    /// other, and each node's certificate names it as DNS name node-N.causeway, N its node id.
    #[arg(long, env = "CAUSEWAY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// A TOML policy file of principals, their credentials and their permissions per scope
    /// (docs/SECURITY.md). Without it every client may do everything, as on a laptop.
    /// Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "CAUSEWAY_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Serve plaintext on an address other than loopback (without TLS such an address is
    /// refused): for a network that is trusted, or TLS ended in front of the server.
    #[arg(
        long,
        env = "CAUSEWAY_INSECURE",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure: Option<bool>,
    /// Compress answers of the event store and cluster services with gzip or zstd for
    /// clients that accept them [default: false]. It trades the server's CPU for bandwidth:
    /// worth it over a slow link, not on a LAN (gzip costs several µs of CPU per event read).
    /// Requests are accepted compressed either way.
    #[arg(
        long,
        env = "CAUSEWAY_COMPRESS_RESPONSES",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub compress_responses: Option<bool>,
}

/// When appends are answered relative to the disk.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After fsync: an acknowledged event survives power loss.
    #[default]
    Fsync,
    /// After write, before fsync: faster, but acknowledged events can be lost on power loss or
    /// a kernel crash (not on a process crash).
    Relaxed,
}

/// Where the admin HTTP port listens, or that there is none.
#[derive(Copy, Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum AdminListen {
    /// Serve it on this address.
    At(SocketAddr),
    /// Serve no admin port.
    Off,
}

impl TryFrom<String> for AdminListen {
    type Error = String;

    fn try_from(text: String) -> Result<AdminListen, String> {
        parse_admin_listen(&text)
    }
}

fn parse_admin_listen(text: &str) -> Result<AdminListen, String> {
    if text == "off" {
        return Ok(AdminListen::Off);
    }
    text.parse().map(AdminListen::At).map_err(|_| {
        format!(
            "{:?} is neither IP:PORT nor off",
            text.chars().take(80).collect::<String>()
        )
    })
}

/// How log lines are written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The settings as a TOML file may give them; all optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<AdminListen>,
    log_format: Option<LogFormat>,
    async_threads: Option<usize>,
    pool_threads: Option<usize>,
    pool_queue: Option<usize>,
    max_subscriptions: Option<usize>,
    max_connections: Option<usize>,
    max_in_flight_request_bytes: Option<u64>,
    max_connection_age_secs: Option<u64>,
    durability: Option<Durability>,
    signing_key: Option<PathBuf>,
    record_denials: Option<bool>,
    scrub_bytes_per_sec: Option<u64>,
    writer_spin_us: Option<u64>,
    node_id: Option<u64>,
    advertise: Option<String>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    snapshot_entries: Option<u64>,
    log_keep_entries: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    auth_file: Option<PathBuf>,
    insecure: Option<bool>,
    compress_responses: Option<bool>,
}

/// The resolved configuration a server starts with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where the store keeps its files.
    pub data_dir: PathBuf,
    /// The address to serve on; port 0 picks a free port (the bound address is logged and
    /// printed).
    pub listen: SocketAddr,
    /// The admin HTTP address; `None` serves none. `causewayd` defaults to
    /// `ADMIN_LISTEN_DEFAULT`; [`Config::default`], for embedding, serves none.
    pub admin_listen: Option<SocketAddr>,
    /// How log lines are written; `None` chooses by whether stderr is a terminal.
    pub log_format: Option<LogFormat>,
    /// Worker threads of the async runtime, 1 to `ASYNC_THREADS_MAX`.
    pub async_threads: usize,
    /// Threads of the blocking pool, 1 to `POOL_THREADS_MAX`.
    pub pool_threads: usize,
    /// Queue of the blocking pool, 1 to `POOL_QUEUE_MAX`.
    pub pool_queue: usize,
    /// Open subscriptions allowed, 1 to `SUBSCRIPTIONS_MAX`.
    pub max_subscriptions: usize,
    /// Connections the gRPC port holds open at once, 1 to `CONNECTIONS_MAX`.
    pub max_connections: usize,
    /// Bytes of requests held at once over every call (`budget.rs`),
    /// `IN_FLIGHT_REQUEST_BYTES_MIN` to `IN_FLIGHT_REQUEST_BYTES_MAX`.
    pub max_in_flight_request_bytes: u64,
    /// The age at which a connection is sent GOAWAY (then `CONNECTION_AGE_GRACE` for its calls);
    /// `None` never. Up to `CONNECTION_AGE_SECS_MAX` seconds.
    pub max_connection_age: Option<Duration>,
    /// When appends are answered; `Relaxed` trades power-loss durability for latency.
    pub durability: Durability,
    /// The receipt signing key file, if receipts are signed.
    pub signing_key: Option<PathBuf>,
    /// Whether refused appends are recorded in the log (each refusal then costs a write). The
    /// setting lives in the log, the same for every node; when this is given, the server writes
    /// it there at start if it differs. `None` keeps what the log says.
    pub record_denials: Option<bool>,
    /// The scrubber's pace in bytes per second (`scrub.rs`); 0 runs no scrubber. Faster finds
    /// damage sooner and takes more of the disk from appends and reads.
    pub scrub_bytes_per_sec: u64,
    /// How long a single node's store writer polls for a stream's next append
    /// (`causeway_core::Config::writer_spin`); zero turns it off. Up to `WRITER_SPIN_US_MAX`
    /// µs. A cluster member's store is written in apply, where it does not apply.
    pub writer_spin: Duration,
    /// Cluster membership settings; `None` runs a single node.
    pub cluster: Option<ClusterConfig>,
    /// TLS on both ports (and mutual TLS between cluster nodes); `None` serves plaintext.
    pub tls: Option<TlsFiles>,
    /// Whether plaintext may be served on an address other than loopback.
    pub insecure: bool,
    /// Whether answers are compressed for clients that accept gzip or zstd. Off by default:
    /// gRPC clients such as Python's and Node's accept gzip without asking for it, and
    /// compressing every answer took most of the server's CPU in their reads.
    pub compress_responses: bool,
    /// The policy file (`auth/`); `None` lets every client do everything.
    pub auth_file: Option<PathBuf>,
}

/// How a cluster member identifies itself and times its elections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id, 1 or more; the data directory remembers it and refuses another.
    pub node_id: u64,
    /// The address other nodes and clients use (HOST:PORT).
    pub advertise: String,
    /// The leader's heartbeat interval.
    pub heartbeat: Duration,
    /// The shortest election timeout; each is drawn between this and 1.5 times this, which is
    /// also the leader lease. Failover takes about twice this plus an election round trip.
    pub election_timeout: Duration,
    /// Entries applied between two snapshots.
    pub snapshot_entries: u64,
    /// Entries kept in the Raft log behind the last snapshot.
    pub log_keep_entries: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from(DATA_DIR_DEFAULT),
            listen: LISTEN_DEFAULT.parse().expect("the default address parses"),
            admin_listen: None,
            log_format: None,
            async_threads: async_threads_default(),
            pool_threads: POOL_THREADS_DEFAULT,
            pool_queue: POOL_QUEUE_DEFAULT,
            max_subscriptions: SUBSCRIPTIONS_DEFAULT,
            max_connections: CONNECTIONS_DEFAULT,
            max_in_flight_request_bytes: IN_FLIGHT_REQUEST_BYTES_DEFAULT,
            max_connection_age: None,
            durability: Durability::Fsync,
            signing_key: None,
            record_denials: None,
            scrub_bytes_per_sec: SCRUB_BYTES_PER_SEC_DEFAULT,
            writer_spin: Duration::from_micros(causeway_core::limits::WRITER_SPIN_US_DEFAULT),
            cluster: None,
            tls: None,
            auth_file: None,
            insecure: false,
            compress_responses: false,
        }
    }
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses the process's command line and environment, reads the file they name, and
    /// checks the result.
    pub fn load() -> Result<Config, ConfigError> {
        Config::from_args(Args::parse())
    }

    /// Resolves parsed flags (which already include the environment) over the file they name
    /// and the defaults, and checks the result.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            None => File::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|err| ConfigError(format!("config file {}: {err}", path.display())))?;
                toml::from_str(&text)
                    .map_err(|err| ConfigError(format!("config file {}: {err}", path.display())))?
            }
        };
        let defaults = Config::default();
        let config = Config {
            data_dir: args.data_dir.or(file.data_dir).unwrap_or(defaults.data_dir),
            listen: args.listen.or(file.listen).unwrap_or(defaults.listen),
            admin_listen: match args.admin_listen.or(file.admin_listen) {
                Some(AdminListen::At(addr)) => Some(addr),
                Some(AdminListen::Off) => None,
                None => Some(
                    ADMIN_LISTEN_DEFAULT
                        .parse()
                        .expect("the default admin address parses"),
                ),
            },
            log_format: args.log_format.or(file.log_format),
            async_threads: args
                .async_threads
                .or(file.async_threads)
                .unwrap_or(defaults.async_threads),
            pool_threads: args
                .pool_threads
                .or(file.pool_threads)
                .unwrap_or(defaults.pool_threads),
            pool_queue: args
                .pool_queue
                .or(file.pool_queue)
                .unwrap_or(defaults.pool_queue),
            max_subscriptions: args
                .max_subscriptions
                .or(file.max_subscriptions)
                .unwrap_or(defaults.max_subscriptions),
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(defaults.max_connections),
            max_in_flight_request_bytes: args
                .max_in_flight_request_bytes
                .or(file.max_in_flight_request_bytes)
                .unwrap_or(defaults.max_in_flight_request_bytes),
            max_connection_age: match args
                .max_connection_age_secs
                .or(file.max_connection_age_secs)
            {
                None | Some(0) => None,
                Some(secs) => Some(Duration::from_secs(secs)),
            },
            durability: args
                .durability
                .or(file.durability)
                .unwrap_or(defaults.durability),
            signing_key: args.signing_key.or(file.signing_key),
            record_denials: args
                .record_denials
                .or(file.record_denials)
                .or(defaults.record_denials),
            scrub_bytes_per_sec: args
                .scrub_bytes_per_sec
                .or(file.scrub_bytes_per_sec)
                .unwrap_or(defaults.scrub_bytes_per_sec),
            writer_spin: args
                .writer_spin_us
                .or(file.writer_spin_us)
                .map_or(defaults.writer_spin, Duration::from_micros),
            cluster: None,
            auth_file: args.auth_file.or(file.auth_file),
            tls: match (
                args.tls_cert.or(file.tls_cert),
                args.tls_key.or(file.tls_key),
                args.tls_client_ca.or(file.tls_client_ca),
            ) {
                (Some(cert), Some(key), client_ca) => Some(TlsFiles {
                    cert,
                    key,
                    client_ca,
                }),
                (None, None, None) => None,
                (cert, _, _) => {
                    let missing = if cert.is_none() {
                        "tls_cert"
                    } else {
                        "tls_key"
                    };
                    return Err(ConfigError(format!(
                        "{missing} is missing; TLS needs tls_cert and tls_key (and tls_client_ca \
                         only with them)"
                    )));
                }
            },
            insecure: args.insecure.or(file.insecure).unwrap_or(defaults.insecure),
            compress_responses: args
                .compress_responses
                .or(file.compress_responses)
                .unwrap_or(defaults.compress_responses),
        };
        let node_id = args.node_id.or(file.node_id);
        let config = match node_id {
            None => {
                let stray = [
                    (
                        "advertise",
                        args.advertise.is_some() || file.advertise.is_some(),
                    ),
                    (
                        "heartbeat_ms",
                        args.heartbeat_ms.or(file.heartbeat_ms).is_some(),
                    ),
                    (
                        "election_timeout_ms",
                        args.election_timeout_ms
                            .or(file.election_timeout_ms)
                            .is_some(),
                    ),
                    (
                        "snapshot_entries",
                        args.snapshot_entries.or(file.snapshot_entries).is_some(),
                    ),
                    (
                        "log_keep_entries",
                        args.log_keep_entries.or(file.log_keep_entries).is_some(),
                    ),
                ];
                if let Some((setting, _)) = stray.iter().find(|(_, given)| *given) {
                    return Err(ConfigError(format!(
                        "{setting} is a cluster setting; give node_id too to run as a cluster member"
                    )));
                }
                config
            }
            Some(node_id) => {
                let advertise = args
                    .advertise
                    .or(file.advertise)
                    .unwrap_or_else(|| config.listen.to_string());
                Config {
                    cluster: Some(ClusterConfig {
                        node_id,
                        advertise,
                        heartbeat: Duration::from_millis(
                            args.heartbeat_ms
                                .or(file.heartbeat_ms)
                                .unwrap_or(HEARTBEAT_MS_DEFAULT),
                        ),
                        election_timeout: Duration::from_millis(
                            args.election_timeout_ms
                                .or(file.election_timeout_ms)
                                .unwrap_or(ELECTION_TIMEOUT_MS_DEFAULT),
                        ),
                        snapshot_entries: args
                            .snapshot_entries
                            .or(file.snapshot_entries)
                            .unwrap_or(RAFT_SNAPSHOT_INTERVAL_ENTRIES),
                        log_keep_entries: args
                            .log_keep_entries
                            .or(file.log_keep_entries)
                            .unwrap_or(RAFT_LOG_KEPT_AFTER_SNAPSHOT),
                    }),
                    ..config
                }
            }
        };
        config.check()?;
        Ok(config)
    }

    /// Checks every bounded setting against its constant.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bounds = [
            (
                "async_threads",
                self.async_threads,
                ASYNC_THREADS_MAX,
                "ASYNC_THREADS_MAX",
            ),
            (
                "pool_threads",
                self.pool_threads,
                POOL_THREADS_MAX,
                "POOL_THREADS_MAX",
            ),
            (
                "pool_queue",
                self.pool_queue,
                POOL_QUEUE_MAX,
                "POOL_QUEUE_MAX",
            ),
            (
                "max_subscriptions",
                self.max_subscriptions,
                SUBSCRIPTIONS_MAX,
                "SUBSCRIPTIONS_MAX",
            ),
            (
                "max_connections",
                self.max_connections,
                CONNECTIONS_MAX,
                "CONNECTIONS_MAX",
            ),
        ];
        for (setting, value, max, limit) in bounds {
            if !(1..=max).contains(&value) {
                return Err(ConfigError(format!(
                    "{setting} is {value}; it must be 1 to {max} ({limit})"
                )));
            }
        }
        if !(IN_FLIGHT_REQUEST_BYTES_MIN..=IN_FLIGHT_REQUEST_BYTES_MAX)
            .contains(&self.max_in_flight_request_bytes)
        {
            return Err(ConfigError(format!(
                "max_in_flight_request_bytes is {}; it must be {IN_FLIGHT_REQUEST_BYTES_MIN} to \
                 {IN_FLIGHT_REQUEST_BYTES_MAX} (IN_FLIGHT_REQUEST_BYTES_MIN, \
                 IN_FLIGHT_REQUEST_BYTES_MAX)",
                self.max_in_flight_request_bytes
            )));
        }
        if self.writer_spin > Duration::from_micros(WRITER_SPIN_US_MAX) {
            return Err(ConfigError(format!(
                "writer_spin_us is {}; it must be at most {WRITER_SPIN_US_MAX} \
                 (WRITER_SPIN_US_MAX), or 0 for none",
                self.writer_spin.as_micros()
            )));
        }
        if let Some(age) = self.max_connection_age
            && age.as_secs() > CONNECTION_AGE_SECS_MAX
        {
            return Err(ConfigError(format!(
                "max_connection_age_secs is {}; it must be at most {CONNECTION_AGE_SECS_MAX} \
                 (CONNECTION_AGE_SECS_MAX), or 0 for no limit",
                age.as_secs()
            )));
        }
        if let Some(cluster) = &self.cluster {
            cluster.check(self.listen)?;
            if let Some(tls) = &self.tls
                && tls.client_ca.is_none()
            {
                return Err(ConfigError(
                    "tls_client_ca is missing; a cluster member with TLS needs it, for the \
                     mutual TLS between nodes"
                        .to_string(),
                ));
            }
        }
        if self.tls.is_none() && !self.insecure {
            let addresses = [
                ("listen", Some(self.listen)),
                ("admin_listen", self.admin_listen),
            ];
            if let Some((setting, Some(addr))) = addresses
                .into_iter()
                .find(|(_, addr)| addr.is_some_and(|addr| !addr.ip().is_loopback()))
            {
                return Err(ConfigError(format!(
                    "{setting} is {addr}, not loopback, and TLS is off: give tls_cert and \
                     tls_key, or insecure to serve plaintext to the network"
                )));
            }
        }
        if let Some(admin) = self.admin_listen
            && admin == self.listen
            && admin.port() != 0
        {
            return Err(ConfigError(format!(
                "admin_listen is {admin}, the same as listen; the admin HTTP port needs its own \
                 port (or admin_listen off)"
            )));
        }
        // Subscriptions may hold this many pool slots; a queue at least as large leaves
        // appends at least as many slots as the pool has threads.
        let subscribe_reads = subscribe_reads_max(self.pool_threads);
        if self.pool_queue < subscribe_reads {
            return Err(ConfigError(format!(
                "pool_queue is {}; with pool_threads {} it must be at least {subscribe_reads}, \
                 the pool calls subscriptions may hold at once (pool_threads / 2)",
                self.pool_queue, self.pool_threads
            )));
        }
        Ok(())
    }
}

impl ClusterConfig {
    /// Checks the node id, the advertised address and the timeouts.
    fn check(&self, listen: SocketAddr) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError("node_id is 0; node ids start at 1".to_string()));
        }
        let advertise_ok = self.advertise.len() <= ADVERTISE_BYTES_MAX
            && self.advertise.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port != 0)
            });
        if !advertise_ok {
            return Err(ConfigError(format!(
                "advertise is {:?}; it must be HOST:PORT with a port other than 0, at most \
                 {ADVERTISE_BYTES_MAX} bytes (ADVERTISE_BYTES_MAX); with listen {listen} give \
                 the address peers reach",
                self.advertise.chars().take(80).collect::<String>()
            )));
        }
        if self.snapshot_entries == 0 {
            return Err(ConfigError(
                "snapshot_entries is 0; it must be at least 1".to_string(),
            ));
        }
        let heartbeat_ms = self.heartbeat.as_millis() as u64;
        let election_ms = self.election_timeout.as_millis() as u64;
        if !(HEARTBEAT_MS_MIN..=HEARTBEAT_MS_MAX).contains(&heartbeat_ms) {
            return Err(ConfigError(format!(
                "heartbeat_ms is {heartbeat_ms}; it must be {HEARTBEAT_MS_MIN} to \
                 {HEARTBEAT_MS_MAX} (HEARTBEAT_MS_MIN, HEARTBEAT_MS_MAX)"
            )));
        }
        if election_ms < 3 * heartbeat_ms || election_ms > ELECTION_TIMEOUT_MS_MAX {
            return Err(ConfigError(format!(
                "election_timeout_ms is {election_ms}; it must be at least three heartbeats \
                 ({}) and at most {ELECTION_TIMEOUT_MS_MAX} (ELECTION_TIMEOUT_MS_MAX)",
                3 * heartbeat_ms
            )));
        }
        Ok(())
    }
}

impl From<Durability> for causeway_core::Durability {
    fn from(durability: Durability) -> causeway_core::Durability {
        match durability {
            Durability::Fsync => causeway_core::Durability::Fsync,
            Durability::Relaxed => causeway_core::Durability::Relaxed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("causewayd").chain(flags.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("causeway.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\npool_threads = 3\ndurability = \"relaxed\"\n",
        )
        .expect("write config");
        let config = Config::from_args(args(&[
            "--config",
            path.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:7001",
            "--record-denials",
        ]))
        .expect("valid config");
        assert_eq!(config.listen, "127.0.0.1:7001".parse().expect("address"));
        assert_eq!(config.pool_threads, 3);
        assert_eq!(config.durability, Durability::Relaxed);
        assert_eq!(config.record_denials, Some(true));
        assert_eq!(config.pool_queue, POOL_QUEUE_DEFAULT);
        assert_eq!(config.data_dir, PathBuf::from(DATA_DIR_DEFAULT));
    }

    #[test]
    fn the_auth_file_comes_from_the_flag_or_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("causeway.toml");
        std::fs::write(&path, "auth_file = \"from-file.toml\"\n").expect("write config");
        let config = path.to_str().expect("utf-8 path");
        let from_file = Config::from_args(args(&["--config", config])).expect("valid config");
        assert_eq!(from_file.auth_file, Some(PathBuf::from("from-file.toml")));
        let from_flag = Config::from_args(args(&["--config", config, "--auth-file", "flag.toml"]))
            .expect("valid config");
        assert_eq!(from_flag.auth_file, Some(PathBuf::from("flag.toml")));
        let none = Config::from_args(args(&[])).expect("defaults");
        assert_eq!(none.auth_file, None);
    }

    #[test]
    fn async_threads_leave_a_cpu_to_the_writer_and_are_bounded() {
        let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
        let config = Config::from_args(args(&[])).expect("defaults");
        assert_eq!(config.async_threads, (cpus - 1).max(1));
        let config = Config::from_args(args(&["--async-threads", "3"])).expect("three workers");
        assert_eq!(config.async_threads, 3);
        for bad in ["0", "1025"] {
            let err = Config::from_args(args(&["--async-threads", bad]))
                .expect_err("outside 1 to ASYNC_THREADS_MAX");
            assert!(err.0.contains("async_threads"), "{err}");
            assert!(err.0.contains("ASYNC_THREADS_MAX"), "{err}");
        }
    }

    #[test]
    fn a_bound_over_its_constant_is_refused_by_name() {
        let err = Config::from_args(args(&["--pool-threads", "100000"]))
            .expect_err("over POOL_THREADS_MAX");
        assert!(err.0.contains("pool_threads"), "{err}");
        assert!(err.0.contains("POOL_THREADS_MAX"), "{err}");
        let err = Config::from_args(args(&["--pool-queue", "0"])).expect_err("zero queue");
        assert!(err.0.contains("pool_queue"), "{err}");
    }

    #[test]
    fn the_writer_spin_comes_from_a_flag_or_the_file_and_is_bounded() {
        let config = Config::from_args(args(&[])).expect("the defaults");
        assert_eq!(
            config.writer_spin,
            causeway_core::Config::default().writer_spin,
            "the store's own default"
        );
        let config = Config::from_args(args(&["--writer-spin-us", "0"])).expect("off");
        assert_eq!(config.writer_spin, Duration::ZERO);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("causeway.toml");
        std::fs::write(&path, "writer_spin_us = 120\n").expect("write config");
        let path = path.to_str().expect("utf-8 path");
        let config = Config::from_args(args(&["--config", path])).expect("from the file");
        assert_eq!(config.writer_spin, Duration::from_micros(120));
        let max = WRITER_SPIN_US_MAX.to_string();
        Config::from_args(args(&["--writer-spin-us", &max])).expect("the largest allowed");
        let over = (WRITER_SPIN_US_MAX + 1).to_string();
        let err = Config::from_args(args(&["--writer-spin-us", &over])).expect_err("over the max");
        assert!(err.0.contains("writer_spin_us"), "{err}");
        assert!(err.0.contains("WRITER_SPIN_US_MAX"), "{err}");
    }

    #[test]
    fn a_queue_without_room_for_subscription_reads_is_refused() {
        let err = Config::from_args(args(&["--pool-threads", "64", "--pool-queue", "31"]))
            .expect_err("subscriptions could hold 32 slots");
        assert!(err.0.contains("pool_queue is 31"), "{err}");
        assert!(err.0.contains("pool_threads 64"), "{err}");
        let config = Config::from_args(args(&["--pool-threads", "64", "--pool-queue", "32"]))
            .expect("room for 32 subscription reads");
        assert_eq!(subscribe_reads_max(config.pool_threads), 32);
        Config::from_args(args(&["--pool-threads", "1", "--pool-queue", "1"]))
            .expect("the smallest pool still serves");
    }

    #[test]
    fn responses_are_compressed_only_when_asked() {
        let config = Config::from_args(args(&[])).expect("the defaults");
        assert!(!config.compress_responses, "off unless asked for");
        let config = Config::from_args(args(&["--compress-responses"])).expect("a bare flag");
        assert!(config.compress_responses);
        let config =
            Config::from_args(args(&["--compress-responses", "false"])).expect("an explicit false");
        assert!(!config.compress_responses);
    }

    #[test]
    fn plaintext_beyond_loopback_is_refused_without_insecure() {
        let err = Config::from_args(args(&["--listen", "0.0.0.0:7420"]))
            .expect_err("plaintext on every interface");
        assert!(
            err.0.contains("listen is 0.0.0.0:7420, not loopback"),
            "{err}"
        );
        assert!(!err.0.contains('\n'), "one line: {err}");
        let err = Config::from_args(args(&["--admin-listen", "10.0.0.1:7421"]))
            .expect_err("the admin port in plaintext on the network");
        assert!(err.0.contains("admin_listen is 10.0.0.1:7421"), "{err}");
        let config = Config::from_args(args(&["--listen", "0.0.0.0:7420", "--insecure"]))
            .expect("plaintext said to be meant");
        assert!(config.insecure);
        let config = Config::from_args(args(&[
            "--listen",
            "[::]:7420",
            "--tls-cert",
            "node.crt",
            "--tls-key",
            "node.key",
        ]))
        .expect("TLS on every interface");
        assert_eq!(
            config.tls.map(|tls| tls.client_ca),
            Some(None),
            "no client CA given"
        );
        Config::from_args(args(&["--listen", "[::1]:7420"])).expect("IPv6 loopback");
    }

    #[test]
    fn tls_settings_come_whole() {
        let err = Config::from_args(args(&["--tls-cert", "node.crt"])).expect_err("no key");
        assert!(err.0.contains("tls_key is missing"), "{err}");
        let err = Config::from_args(args(&["--tls-client-ca", "ca.crt"]))
            .expect_err("a client CA without a certificate");
        assert!(err.0.contains("tls_cert is missing"), "{err}");
        let err = Config::from_args(args(&[
            "--node-id",
            "1",
            "--tls-cert",
            "node.crt",
            "--tls-key",
            "node.key",
        ]))
        .expect_err("a TLS cluster member without a client CA");
        assert!(err.0.contains("tls_client_ca is missing"), "{err}");
    }

    #[test]
    fn the_request_budget_and_connection_age_are_bounded() {
        let config = Config::from_args(args(&[])).expect("defaults");
        assert_eq!(
            config.max_in_flight_request_bytes,
            IN_FLIGHT_REQUEST_BYTES_DEFAULT
        );
        assert_eq!(config.max_connection_age, None);
        let err = Config::from_args(args(&["--max-in-flight-request-bytes", "1024"]))
            .expect_err("under IN_FLIGHT_REQUEST_BYTES_MIN");
        assert!(err.0.contains("IN_FLIGHT_REQUEST_BYTES_MIN"), "{err}");
        let config =
            Config::from_args(args(&["--max-connection-age-secs", "3600"])).expect("an hour");
        assert_eq!(config.max_connection_age, Some(Duration::from_secs(3600)));
        let config =
            Config::from_args(args(&["--max-connection-age-secs", "0"])).expect("0 is off");
        assert_eq!(config.max_connection_age, None);
        let err = Config::from_args(args(&["--max-connection-age-secs", "100000000"]))
            .expect_err("over CONNECTION_AGE_SECS_MAX");
        assert!(err.0.contains("CONNECTION_AGE_SECS_MAX"), "{err}");
    }

    #[test]
    fn a_cluster_setting_without_a_node_id_is_refused_by_name() {
        for (flag, setting) in [
            ("--advertise", "advertise"),
            ("--heartbeat-ms", "heartbeat_ms"),
            ("--election-timeout-ms", "election_timeout_ms"),
            ("--snapshot-entries", "snapshot_entries"),
            ("--log-keep-entries", "log_keep_entries"),
        ] {
            let value = if setting == "advertise" {
                "127.0.0.1:7420"
            } else {
                "0"
            };
            let err = Config::from_args(args(&[flag, value])).expect_err("a single node");
            assert!(
                err.0
                    .starts_with(&format!("{setting} is a cluster setting")),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("causeway.toml");
        std::fs::write(&path, "snapshot_entries = 1000\n").expect("write config");
        let path = path.to_str().expect("utf-8 path");
        let err = Config::from_args(args(&["--config", path])).expect_err("from the file too");
        assert!(
            err.0.contains("snapshot_entries is a cluster setting"),
            "{err}"
        );
        let config = Config::from_args(args(&["--config", path, "--node-id", "1"]))
            .expect("a cluster member takes it");
        assert_eq!(config.cluster.map(|c| c.snapshot_entries), Some(1000));
    }

    #[test]
    fn an_unknown_file_setting_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("causeway.toml");
        std::fs::write(&path, "pool_thread = 3\n").expect("write config");
        let err = Config::from_args(args(&["--config", path.to_str().expect("utf-8 path")]))
            .expect_err("a misspelt setting");
        assert!(err.0.contains("pool_thread"), "{err}");
    }
}
