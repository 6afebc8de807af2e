//! The command line of `causeway`, declared with clap's derive API.
//!
//! Only parsing lives here; `commands.rs` runs what was parsed. Flags that several commands
//! share are grouped (`AppendArgs` for `append` and `gates dry-run`, `FilterArgs` for
//! `read log` and `tail`) so they are spelled the same everywhere. `--server` may list a
//! cluster's members, comma-separated; the client library follows the leader among them.

use std::path::PathBuf;

use causeway_client::Expected;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The default server address.
pub const SERVER_DEFAULT: &str = "http://127.0.0.1:7420";

/// The heading the flags every command takes are listed under, apart from its own.
const GLOBAL: &str = "Global options";

/// The command-line client of the Causeway event store.
#[derive(Parser, Debug)]
#[command(
    name = "causeway",
    version,
    about = "The command-line client of the Causeway event store.",
    after_help = "JSON output (--output json): hashes, digests and signatures are hex; an \
                  event's payload is `payload` (the text, or null when it is not UTF-8) and \
                  `payload_base64` (the exact bytes). `tail` prints one JSON document per line.\n\n\
                  Errors go to stderr as one line. Exit status: 0 success; 1 usage or invalid \
                  input; 2 refused (a gate, a version conflict, a reused idempotency key, a \
                  receipt that does not verify, missing credentials or permission); 3 not found; 4 unavailable (no connection, \
                  overloaded, not serving, or a write's outcome unknown: retry, with the same \
                  idempotency key); 5 the server failed."
)]
pub struct Cli {
    /// The server: http://host:port, https://host:port or host:port (TLS when a --tls-* flag
    /// is given); for a cluster, any of its members
    /// separated by commas (a:1,b:2,c:3), and requests follow the leader.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "CAUSEWAY_SERVER",
        default_value = SERVER_DEFAULT,
        overrides_with = "server"
    )]
    pub server: String,
    /// A PEM file of the CA that signed the server's certificate; `host:port` addresses are
    /// then dialled over TLS (https://) [default for https://: the system's roots].
    #[arg(long, global = true, help_heading = GLOBAL, env = "CAUSEWAY_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A PEM file with a client certificate, for a server that requires one (mutual TLS);
    /// with --tls-key.
    #[arg(long, global = true, help_heading = GLOBAL, env = "CAUSEWAY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// A PEM file with the private key of --tls-cert.
    #[arg(long, global = true, help_heading = GLOBAL, env = "CAUSEWAY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// A bearer token (or a JWT) sent as `authorization: Bearer <token>` on every call, for a
    /// server started with --auth-file. Prefer the environment variable: a flag shows in the
    /// process list.
    #[arg(long, global = true, help_heading = GLOBAL, env = "CAUSEWAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How to print results.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value_t = Output::Table,
        overrides_with = "output"
    )]
    pub output: Output,
    /// How fresh reads (get, read, head) must be on a cluster; a single node answers every
    /// level from its own store.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_enum,
        default_value_t = Consistency::Linearizable,
        overrides_with = "consistency"
    )]
    pub consistency: Consistency,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned, human-readable text.
    Table,
    /// One JSON document (one per line for `tail`).
    Json,
}

/// How fresh a read must be.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Sees every append acknowledged before the read; any member answers, after checking
    /// with the leader.
    Linearizable,
    /// The leader answers from what it has applied, on its lease instead of a round trip to a
    /// quorum: sees every append acknowledged before the read; a leader that cannot renew its
    /// lease (cut off, deposed) refuses.
    Leader,
    /// The member asked answers from what it has applied: cheapest, possibly behind.
    Local,
}

impl From<Consistency> for causeway_client::pb::ReadConsistency {
    fn from(consistency: Consistency) -> Self {
        match consistency {
            Consistency::Linearizable => Self::Linearizable,
            Consistency::Leader => Self::Leader,
            Consistency::Local => Self::Local,
        }
    }
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Append one event, under conditions; prints the receipt.
    Append(AppendArgs),
    /// Print one event by id.
    Get {
        /// The event's id.
        id: String,
    },
    /// Read an entity or the log.
    #[command(subcommand)]
    Read(ReadCommand),
    /// Follow the log and print events as they are committed, until Ctrl-C.
    Tail(TailArgs),
    /// Show the causal graph around an event.
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Register, list, remove and try gates.
    #[command(subcommand)]
    Gates(GatesCommand),
    /// Verify a receipt (as printed by `append --output json`), by the server or offline; or,
    /// with --log, the server's whole log (frame checksums and the hash chain).
    Verify(VerifyArgs),
    /// Print the head position and the log digest.
    Head,
    /// Drive the server with load and report throughput, latency and errors by gRPC code.
    Bench(crate::bench::BenchArgs),
    /// Help for the server's policy file: hash a token for it.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Form a cluster, change its members, and show every member's state.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Copy the server's store into a new backup directory, checking every byte; prints the
    /// position and digest it holds (restore it with `causewayd restore`).
    Backup {
        /// The backup directory to create; it must not exist, or be empty.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Ask the server's gRPC health service; prints SERVING or NOT_SERVING and exits 0 only
    /// when serving (for container health checks).
    Health {
        /// The service to ask about [default: the server as a whole].
        #[arg(long, value_name = "NAME", default_value = "")]
        service: String,
    },
    /// Print a completion script for a shell (`causeway completions bash >
    /// /etc/bash_completion.d/causeway`, or `source <(causeway completions zsh)`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// The server's policy file (`causewayd --auth-file`).
#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Print the blake3 hash (hex) of a token, the form `token_hashes` in the policy file
    /// takes. The token is read from standard input (one line) unless given, so it stays out
    /// of the shell's history.
    HashToken {
        /// The token; read from standard input when absent.
        token: Option<String>,
    },
}

/// Cluster administration. Changes go to the leader among the --server addresses.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Form a cluster on the first reachable --server node, once; prints the cluster id.
    Init {
        /// An initial voter ID=HOST:PORT (repeatable), the node asked among them [default:
        /// the node asked, alone].
        #[arg(long = "voter", value_name = "ID=HOST:PORT", value_parser = parse_voter)]
        voters: Vec<(u64, String)>,
    },
    /// Add a node as a learner; returns once the change is committed (with a long log, once the
    /// learner is close behind, for at most 10 s); `cluster status` shows its lag.
    AddLearner {
        /// The node's id (1 or more).
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
        /// The address the node advertises (HOST:PORT).
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner's node id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
    },
    /// Remove a node (voter or learner) from the cluster.
    Remove {
        /// The node's id.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
    },
    /// Hand the leadership to another voter.
    TransferLeader {
        /// The voter to lead.
        #[arg(value_parser = clap::value_parser!(u64).range(1..))]
        node_id: u64,
    },
    /// Ask every member for its state: role, term, leader, log indexes, head and lag.
    Status,
}

/// One event to append and the append's conditions.
#[derive(Args, Debug)]
pub struct AppendArgs {
    /// The scope (an isolation boundary such as a tenant).
    pub scope: String,
    /// The entity (the stream key inside the scope).
    pub entity: String,
    /// The event type.
    #[arg(value_name = "TYPE")]
    pub event_type: String,
    /// The payload, as a string.
    #[arg(long, conflicts_with = "file")]
    pub data: Option<String>,
    /// Read the payload from a file; `-` reads stdin.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// A tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// A metadata entry KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// The payload's media type [default: application/json when the payload parses as JSON,
    /// else none].
    #[arg(long)]
    pub content_type: Option<String>,
    /// The entity's version must be: any, no-stream, exists, or a number.
    #[arg(long, default_value = "any")]
    pub expect: Expected,
    /// A retry with the same key and content returns the first receipt.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Also run this gate (repeatable).
    #[arg(long = "gate", value_name = "NAME")]
    pub gates: Vec<String>,
    /// The id of an event that caused this one (repeatable).
    #[arg(long = "causation", value_name = "ID")]
    pub causation: Vec<String>,
    /// Allow causation ids that are not in the store.
    #[arg(long)]
    pub external_causation: bool,
    /// The correlation id [default: the first parent's, else the event's own].
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// The event's id [default: assigned by the server].
    #[arg(long)]
    pub id: Option<String>,
}

/// What to read.
#[derive(Subcommand, Debug)]
pub enum ReadCommand {
    /// One entity's events.
    Entity {
        /// The scope.
        scope: String,
        /// The entity.
        entity: String,
        /// The first version [default: 1, or the last when --backward].
        #[arg(long)]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// At most this many events (read in pages of up to 10,000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The log, filtered.
    Log {
        /// The first position [default: 1, or the head when --backward].
        #[arg(long)]
        from: Option<u64>,
        /// Newest first.
        #[arg(long)]
        backward: bool,
        /// At most this many events (read in pages of up to 10,000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Which events.
        #[command(flatten)]
        filter: FilterArgs,
    },
}

/// Which events a read or a tail returns. Without flags, every event.
#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    /// Only this scope (repeatable: any of them).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Only entities starting with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only this type (repeatable: any of them).
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Only events carrying this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

/// Where a tail starts and what it shows.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// Start at this position (inclusive), replaying history first.
    #[arg(long, conflicts_with = "now")]
    pub from: Option<u64>,
    /// Only events committed from now on (the default).
    #[arg(long)]
    pub now: bool,
    /// Which events.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Causal graph queries.
#[derive(Subcommand, Debug)]
pub enum GraphCommand {
    /// The event and its causes; in the tree, an event's children are its causes.
    Ancestors(WalkArgs),
    /// The event and its effects; in the tree, an event's children are its effects.
    Descendants(WalkArgs),
    /// Every event of a correlation id, causes above effects.
    Correlation {
        /// The correlation id.
        id: String,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// How to draw it [default: tree, or json with --output json].
        #[arg(long, value_enum)]
        format: Option<GraphFormat>,
    },
}

/// Where a graph walk starts and how far it goes.
#[derive(Args, Debug)]
pub struct WalkArgs {
    /// The event to start from.
    pub id: String,
    /// How many causation links to follow.
    #[arg(long, default_value_t = 10)]
    pub depth: u32,
    /// At most this many events.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// How to draw it [default: tree, or json with --output json].
    #[arg(long, value_enum)]
    pub format: Option<GraphFormat>,
}

/// How a graph is drawn.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// An indented text tree.
    Tree,
    /// Graphviz DOT (pipe into `dot -Tsvg`).
    Dot,
    /// Nodes and edges as JSON.
    Json,
}

/// Gate administration.
#[derive(Subcommand, Debug)]
pub enum GatesCommand {
    /// Register a gate, or replace the one with the same name.
    Register(RegisterArgs),
    /// List the gates in force.
    List,
    /// Remove a registered gate.
    Remove {
        /// The gate's name.
        name: String,
    },
    /// Check an append against conditions and gates without writing it.
    DryRun(AppendArgs),
}

/// A gate definition.
#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The gate's name.
    #[arg(long)]
    pub name: String,
    /// Judge only events of this scope (repeatable) [default: every scope].
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Judge only events of this type (repeatable) [default: every type].
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// What the gate checks.
    #[command(flatten)]
    pub rule: RuleArgs,
}

/// Exactly one gate rule.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct RuleArgs {
    /// A CEL expression that must be true for every bound event (see docs/GATES.md).
    #[arg(long, value_name = "EXPR")]
    pub cel: Option<String>,
    /// Tags starting with PREFIX appear at most once per scope.
    #[arg(long, value_name = "PREFIX")]
    pub unique_tag: Option<String>,
    /// Only these types may be written (comma-separated).
    #[arg(long, value_name = "T,..", value_delimiter = ',')]
    pub allowed_types: Option<Vec<String>>,
    /// At most MAX events per entity in any WINDOW_MS of event time.
    #[arg(long, value_name = "MAX/WINDOW_MS", value_parser = parse_rate)]
    pub rate_limit: Option<(u64, u64)>,
    /// The largest payload, in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_payload: Option<u64>,
    /// Every causation parent must exist, even when an append allows external ones.
    #[arg(long)]
    pub causation_exists: bool,
}

/// A receipt to verify and how, or the log.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The receipt JSON file; `-` reads stdin.
    #[arg(default_value = "-")]
    pub receipt: PathBuf,
    /// Verify the server's log instead of a receipt: every frame's checksum and every event's
    /// hash chain up to the head, page by page; exit 2 and the first break (position, segment
    /// file, offset, what differs) if it does not verify.
    #[arg(long, conflicts_with_all = ["offline", "receipt"])]
    pub log: bool,
    /// With --log: the first position to check [default: 1].
    #[arg(long, value_name = "POSITION", requires = "log")]
    pub from: Option<u64>,
    /// Verify here, without the server: recompute the events' hashes and check the signature.
    #[arg(long, requires = "events")]
    pub offline: bool,
    /// The events the receipt names, as JSON from `get`, `read` or `tail` (with --offline).
    /// The bytes checked are `payload_base64`; an event whose `payload` text is not those bytes
    /// is refused, so what a reader sees is what was checked.
    #[arg(long, value_name = "FILE", requires = "offline")]
    pub events: Option<PathBuf>,
    /// The server's Ed25519 public key as 64 hex digits (with --offline); without it the
    /// signature is not checked.
    #[arg(long, value_name = "HEX", requires = "offline")]
    pub public_key: Option<String>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn parse_voter(text: &str) -> Result<(u64, String), String> {
    let parsed = text.split_once('=').and_then(|(id, address)| {
        let id = id.trim().parse::<u64>().ok().filter(|id| *id > 0)?;
        let address = address.trim();
        address.contains(':').then(|| (id, address.to_string()))
    });
    parsed.ok_or_else(|| format!("{text:?} is not ID=HOST:PORT with an id of 1 or more"))
}

fn parse_rate(text: &str) -> Result<(u64, u64), String> {
    let parsed = text
        .split_once('/')
        .and_then(|(max, window)| Some((max.trim().parse().ok()?, window.trim().parse().ok()?)));
    parsed.ok_or_else(|| format!("{text:?} is not MAX/WINDOW_MS, such as 10/60000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("causeway").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn append_parses_every_flag() {
        let cli = parse(&[
            "--server",
            "10.0.0.1:7000",
            "append",
            "acme",
            "order-1",
            "OrderPlaced",
            "--data",
            "{}",
            "--tag",
            "a",
            "--tag",
            "b",
            "--meta",
            "k=v=w",
            "--expect",
            "no-stream",
            "--gate",
            "g1",
            "--causation",
            "c1",
        ])
        .expect("valid command line");
        assert_eq!(cli.server, "10.0.0.1:7000");
        let twice = parse(&["--server", "a:1", "--server", "b:2", "head"]).expect("last wins");
        assert_eq!(twice.server, "b:2");
        let Command::Append(args) = cli.command else {
            panic!("expected append");
        };
        assert_eq!(args.event_type, "OrderPlaced");
        assert_eq!(args.tags, ["a", "b"]);
        assert_eq!(args.metadata, [("k".to_string(), "v=w".to_string())]);
        assert_eq!(args.expect, Expected::NoStream);
        assert_eq!(args.gates, ["g1"]);
        assert_eq!(args.causation, ["c1"]);
        assert!(parse(&["append", "a", "b", "T", "--data", "x", "--file", "-"]).is_err());
        assert!(parse(&["append", "a", "b", "T", "--meta", "novalue"]).is_err());
        assert!(parse(&["append", "a", "b", "T", "--expect", "soon"]).is_err());
    }

    #[test]
    fn gates_register_needs_exactly_one_rule() {
        let cli = parse(&[
            "gates",
            "register",
            "--name",
            "r",
            "--rate-limit",
            "10/60000",
        ])
        .expect("one rule");
        let Command::Gates(GatesCommand::Register(args)) = cli.command else {
            panic!("expected gates register");
        };
        assert_eq!(args.rule.rate_limit, Some((10, 60_000)));
        let cli = parse(&["gates", "register", "--name", "t", "--allowed-types", "A,B"])
            .expect("one rule");
        let Command::Gates(GatesCommand::Register(args)) = cli.command else {
            panic!("expected gates register");
        };
        assert_eq!(
            args.rule.allowed_types,
            Some(vec!["A".to_string(), "B".to_string()])
        );
        assert!(
            parse(&["gates", "register", "--name", "x"]).is_err(),
            "no rule"
        );
        assert!(
            parse(&[
                "gates",
                "register",
                "--name",
                "x",
                "--cel",
                "true",
                "--causation-exists"
            ])
            .is_err(),
            "two rules"
        );
        assert!(parse(&["gates", "register", "--name", "x", "--rate-limit", "10"]).is_err());
    }

    #[test]
    fn server_lists_consistency_and_cluster_commands_parse() {
        let cli = parse(&["--server", "a:1,b:2", "--consistency", "local", "head"])
            .expect("a list and a level");
        assert_eq!(
            cli.server, "a:1,b:2",
            "the list is split by the client library"
        );
        assert_eq!(cli.consistency, Consistency::Local);
        let default = parse(&["head"]).expect("no flags");
        assert_eq!(default.consistency, Consistency::Linearizable);
        assert!(parse(&["--consistency", "eventual", "head"]).is_err());

        let cli = parse(&[
            "cluster",
            "init",
            "--voter",
            "1=10.0.0.1:7000",
            "--voter",
            "2 = 10.0.0.2:7000",
        ])
        .expect("voters");
        let Command::Cluster(ClusterCommand::Init { voters }) = cli.command else {
            panic!("expected cluster init");
        };
        assert_eq!(
            voters,
            [
                (1, "10.0.0.1:7000".to_string()),
                (2, "10.0.0.2:7000".to_string())
            ]
        );
        let alone = parse(&["cluster", "init"]).expect("no voters");
        let Command::Cluster(ClusterCommand::Init { voters }) = alone.command else {
            panic!("expected cluster init");
        };
        assert!(voters.is_empty());
        for bad in ["0=a:1", "x=a:1", "1=nowhere", "1"] {
            assert!(
                parse(&["cluster", "init", "--voter", bad]).is_err(),
                "{bad:?}"
            );
        }
        let cli = parse(&["cluster", "add-learner", "4", "10.0.0.4:7000"]).expect("a learner");
        let Command::Cluster(ClusterCommand::AddLearner { node_id, address }) = cli.command else {
            panic!("expected cluster add-learner");
        };
        assert_eq!((node_id, address.as_str()), (4, "10.0.0.4:7000"));
        assert!(
            parse(&["cluster", "promote", "0"]).is_err(),
            "ids start at 1"
        );
        assert!(parse(&["cluster", "transfer-leader", "2"]).is_ok());
        assert!(parse(&["cluster", "remove", "3"]).is_ok());
        assert!(parse(&["cluster", "status"]).is_ok());
    }

    #[test]
    fn backup_needs_a_directory_and_health_takes_a_service() {
        assert!(parse(&["backup"]).is_err(), "--to is required");
        let cli = parse(&["backup", "--to", "b1"]).expect("a directory");
        let Command::Backup { to } = cli.command else {
            panic!("expected backup");
        };
        assert_eq!(to, PathBuf::from("b1"));
        let cli = parse(&["health"]).expect("no flags");
        let Command::Health { service } = cli.command else {
            panic!("expected health");
        };
        assert_eq!(service, "");
        let cli =
            parse(&["health", "--service", "causeway.v1.EventStoreService"]).expect("a service");
        let Command::Health { service } = cli.command else {
            panic!("expected health");
        };
        assert_eq!(service, "causeway.v1.EventStoreService");
    }

    #[test]
    fn verify_offline_needs_events_and_tail_from_conflicts_with_now() {
        assert!(parse(&["verify", "r.json", "--offline"]).is_err());
        assert!(parse(&["verify", "r.json", "--public-key", "ab"]).is_err());
        assert!(parse(&["verify", "r.json", "--offline", "--events", "e.json"]).is_ok());
        assert!(parse(&["verify", "--log"]).is_ok());
        assert!(parse(&["verify", "--log", "--from", "7"]).is_ok());
        assert!(parse(&["verify", "--from", "7"]).is_err());
        assert!(parse(&["verify", "--log", "r.json"]).is_err());
        assert!(parse(&["verify", "--log", "--offline", "--events", "e.json"]).is_err());
        assert!(parse(&["tail", "--from", "3", "--now"]).is_err());
    }
}
