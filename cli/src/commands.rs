//! Runs a parsed command: calls the server through `causeway_client::Client` and prints the
//! result as a table or as JSON. `cluster` subcommands run in `cluster.rs`.
//!
//! Each command prints its answer on stdout and nothing else; errors travel up as `anyhow`
//! errors and `main` prints them on one line, exiting by their class (`exit.rs`). A command
//! that gives a verdict returns its status itself: `verify` 2 for a receipt that does not
//! verify, `health` 4 for a service not SERVING.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use causeway_client::{
    AppendBuilder, Client, EventBuilder, FilterBuilder, Start, SubscribeItem, Tls, pb, receipt,
};
use serde_json::{Value, json};
use tokio_stream::StreamExt as _;

use crate::args::{
    AppendArgs, AuthCommand, Cli, Command, FilterArgs, GatesCommand, GraphCommand, GraphFormat,
    Output, ReadCommand, RegisterArgs, TailArgs, VerifyArgs, WalkArgs,
};
use crate::cluster;
use crate::graph::{self, Walk};
use crate::{bench, json, table};

/// Runs the command and returns the process's exit code.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let output = cli.output;
    let tls = tls(&cli)?;
    match cli.command {
        Command::Verify(args) if args.offline => return verify_offline(&args, output),
        Command::Bench(_) if tls.is_some() || cli.server.contains("https://") => {
            bail!("bench opens plaintext connections only; run it against a plaintext server")
        }
        Command::Bench(_) if cli.token.is_some() => {
            bail!(
                "bench sends no credentials (--token / CAUSEWAY_TOKEN is set); run it against a \
                 server without --auth-file, or one whose [anonymous] grants append, read and \
                 subscribe on the bench's scopes"
            )
        }
        Command::Bench(args) => {
            // A bench measures one server over connections it opens itself.
            let n_addresses = causeway_client::follow::parse_addresses(&cli.server)?.len();
            let server = match n_addresses {
                1 => cli.server.trim(),
                _ => bail!(
                    "bench drives one server: give --server a single address (the leader's, \
                     to measure appends)"
                ),
            };
            return bench::run(server, args, output).await;
        }
        Command::Cluster(command) => {
            cluster::run(
                &cli.server,
                tls.as_ref(),
                cli.token.as_deref(),
                command,
                output,
            )
            .await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Auth(AuthCommand::HashToken { token }) => {
            let token = match token {
                Some(token) => token,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line
                }
            };
            let token = token.trim();
            if token.is_empty() {
                bail!("the token is empty");
            }
            emit(&format!("{}\n", blake3::hash(token.as_bytes()).to_hex()))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Health { service } => {
            return health(&cli.server, tls.as_ref(), &service, output).await;
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "causeway",
                &mut script,
            );
            emit(&String::from_utf8_lossy(&script))?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let mut client = connect(&cli.server, tls.as_ref())
        .await?
        .with_consistency(cli.consistency.into());
    if let Some(token) = &cli.token {
        client = client.with_token(token)?;
    }
    match cli.command {
        Command::Append(args) => {
            let receipt = client.append(append_request(&args)?).await?;
            print_receipt(&receipt, output)?;
        }
        Command::Get { id } => {
            let event = client.get(&id).await?;
            match output {
                Output::Table => emit(&table::event_detail(&event))?,
                Output::Json => print_json(&json::event(&event))?,
            }
        }
        Command::Read(read) => read_command(&client, read, output).await?,
        Command::Tail(args) => tail(&client, args, output).await?,
        Command::Graph(graph) => graph_command(&client, graph, output).await?,
        Command::Gates(gates) => gates_command(&client, gates, output).await?,
        Command::Verify(args) if args.log => return verify_log(&client, &args, output).await,
        Command::Verify(args) => return verify_on_server(&client, &args, output).await,
        Command::Bench(_)
        | Command::Cluster(_)
        | Command::Auth(_)
        | Command::Health { .. }
        | Command::Completions { .. } => {
            unreachable!("bench, cluster, health and completions are handled above")
        }
        Command::Backup { to } => {
            let backup = causeway_client::backup::backup(&client, &to).await?;
            let digest = hex::encode(&backup.digest);
            match output {
                Output::Table => emit(&table::listing(&[
                    ("position", backup.position.to_string()),
                    ("digest", digest),
                    ("files", backup.n_files.to_string()),
                    ("bytes", backup.n_bytes.to_string()),
                    ("backup", to.display().to_string()),
                ]))?,
                Output::Json => print_json(&json!({
                    "position": backup.position,
                    "digest": digest,
                    "files": backup.n_files,
                    "bytes": backup.n_bytes,
                    "backup": to.display().to_string(),
                }))?,
            }
        }
        Command::Head => {
            let head = client.head().await?;
            match output {
                Output::Table => emit(&table::listing(&[
                    ("position", head.position.to_string()),
                    ("digest", hex::encode(&head.digest)),
                ]))?,
                Output::Json => print_json(&json!({
                    "position": head.position,
                    "digest": hex::encode(&head.digest),
                }))?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The TLS settings the `--tls-*` flags give, if any.
fn tls(cli: &Cli) -> Result<Option<Tls>, causeway_client::Error> {
    if cli.tls_ca.is_none() && cli.tls_cert.is_none() && cli.tls_key.is_none() {
        return Ok(None);
    }
    Tls::from_files(
        cli.tls_ca.as_deref(),
        cli.tls_cert.as_deref(),
        cli.tls_key.as_deref(),
    )
    .map(Some)
}

/// A client of `server`, over TLS when `tls` is given.
async fn connect(server: &str, tls: Option<&Tls>) -> Result<Client, causeway_client::Error> {
    match tls {
        None => Client::connect(server).await,
        Some(tls) => Client::connect_tls(server, tls).await,
    }
}

/// How long `health` waits for the connection and the answer together.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks the server's gRPC health service about `service` ("" for the server as a whole);
/// prints the status and succeeds only when it is SERVING.
async fn health(
    server: &str,
    tls: Option<&Tls>,
    service: &str,
    output: Output,
) -> Result<ExitCode> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let unknown = format!(
        "the server has no health status for the service {service:?}; it has one for \"\" (the \
         server as a whole) and one for causeway.v1.EventStoreService (ready to serve it)"
    );
    let asked = async {
        match connect(server, tls).await?.health(service).await {
            Err(causeway_client::Error::Status(status))
                if status.code() == tonic::Code::NotFound =>
            {
                Err(causeway_client::Error::Status(tonic::Status::not_found(
                    unknown,
                )))
            }
            asked => asked,
        }
    };
    let status = tokio::time::timeout(HEALTH_TIMEOUT, asked)
        .await
        .map_err(|_| causeway_client::Error::Connect {
            address: server.to_string(),
            detail: format!("no health answer within {HEALTH_TIMEOUT:?}"),
        })??;
    let name = status.as_str_name();
    match output {
        Output::Table => emit(&format!("{name}\n"))?,
        Output::Json => print_json(&json!({ "service": service, "status": name }))?,
    }
    Ok(if status == ServingStatus::Serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::UNAVAILABLE)
    })
}

/// The append request for one event and its conditions.
fn append_request(args: &AppendArgs) -> Result<AppendBuilder> {
    let payload = match (&args.data, &args.file) {
        (Some(data), _) => data.clone().into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the payload from stdin")?;
            bytes
        }
        (None, Some(path)) => std::fs::read(path)
            .with_context(|| format!("cannot read the payload from {}", path.display()))?,
        (None, None) => Vec::new(),
    };
    let content_type = match &args.content_type {
        Some(content_type) => content_type.clone(),
        None if !payload.is_empty() && serde_json::from_slice::<Value>(&payload).is_ok() => {
            "application/json".to_string()
        }
        None => String::new(),
    };
    let mut event = EventBuilder::new(&args.scope, &args.entity, &args.event_type)
        .payload(payload)
        .content_type(content_type);
    for tag in &args.tags {
        event = event.tag(tag);
    }
    for (key, value) in &args.metadata {
        event = event.metadata(key, value);
    }
    for parent in &args.causation {
        event = event.caused_by(parent);
    }
    if let Some(correlation_id) = &args.correlation_id {
        event = event.correlation_id(correlation_id);
    }
    if let Some(id) = &args.id {
        event = event.id(id);
    }
    let mut append = AppendBuilder::new()
        .event(event)
        .expect(&args.scope, &args.entity, args.expect)
        .external_causation(args.external_causation);
    if let Some(key) = &args.idempotency_key {
        append = append.idempotency_key(key);
    }
    for gate in &args.gates {
        append = append.gate(gate);
    }
    Ok(append)
}

fn filter(args: &FilterArgs) -> pb::Filter {
    let mut filter = FilterBuilder::new();
    for scope in &args.scopes {
        filter = filter.scope(scope);
    }
    if let Some(prefix) = &args.prefix {
        filter = filter.entity_prefix(prefix);
    }
    if !args.types.is_empty() || !args.tags.is_empty() {
        filter = filter.item(args.types.clone(), args.tags.clone());
    }
    filter.build()
}

fn direction(backward: bool) -> pb::Direction {
    if backward {
        pb::Direction::Backward
    } else {
        pb::Direction::Forward
    }
}

async fn read_command(client: &Client, read: ReadCommand, output: Output) -> Result<()> {
    match read {
        ReadCommand::Entity {
            scope,
            entity,
            from,
            backward,
            limit,
        } => {
            // Forward starts at version 1. Backward starts at the last event: the proto says
            // from 0 does that, but the highest version does it under any reading.
            let from = from.unwrap_or(if backward { u64::MAX } else { 1 });
            let page = client
                .read_entity_all(&scope, &entity, from, direction(backward), limit)
                .await?;
            match output {
                Output::Table => {
                    emit(&table::events(&page.events))?;
                    // On stderr, so a pipe of the table holds only events.
                    if !page.end {
                        eprintln!("(more: --from {})", page.next_version);
                    }
                }
                Output::Json => print_json(&json!({
                    "events": json::events(&page.events),
                    "next_version": page.next_version,
                    "end": page.end,
                }))?,
            }
        }
        ReadCommand::Log {
            from,
            backward,
            limit,
            filter: filter_args,
        } => {
            let from = from.unwrap_or(if backward { 0 } else { 1 });
            let page = client
                .read_log_all(from, direction(backward), filter(&filter_args), limit)
                .await?;
            match output {
                Output::Table => {
                    emit(&table::events(&page.events))?;
                    // On stderr, so a pipe of the table holds only events.
                    if !page.end {
                        eprintln!("(more: --from {})", page.next_position);
                    }
                }
                Output::Json => print_json(&json!({
                    "events": json::events(&page.events),
                    "next_position": page.next_position,
                    "end": page.end,
                }))?,
            }
        }
    }
    Ok(())
}

/// Follows a subscription until Ctrl-C or until the server ends it. When the stream breaks
/// (its server went away, or is shutting down), it is opened again from one past the last
/// position seen, on whichever listed server answers, so nothing is shown twice or skipped;
/// after `TAIL_RESUMES_MAX` breaks in a row with nothing received between, the error stands.
async fn tail(client: &Client, args: TailArgs, output: Output) -> Result<()> {
    let mut start = match args.from {
        Some(position) => Start::Position(position),
        None => Start::Now,
    };
    let filter = filter(&args.filter);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut n_breaks = 0;
    loop {
        let mut stream = client.subscribe(start, filter.clone()).await?;
        let broken = loop {
            let item = tokio::select! {
                _ = &mut ctrl_c => return Ok(()),
                item = stream.next() => item,
            };
            let item = match item {
                None => bail!("the server ended the subscription"),
                Some(Err(err)) if resumable(&err) => break err,
                Some(Err(err)) => return Err(err.into()),
                Some(Ok(item)) => item,
            };
            n_breaks = 0;
            match item {
                SubscribeItem::Events(events) => {
                    let lines: String = events
                        .iter()
                        .map(|event| match output {
                            Output::Table => format!("{}\n", table::event_line(event)),
                            Output::Json => format!("{}\n", json::event(event)),
                        })
                        .collect();
                    emit(&lines)?;
                    if let Some(last) = events.last() {
                        start = Start::Position(last.position + 1);
                    }
                }
                // Progress markers are for resuming; a person sees one note on stderr.
                SubscribeItem::CaughtUp(position) => {
                    if output == Output::Table {
                        eprintln!("-- caught up at position {position}; following --");
                    }
                    start = Start::Position(position + 1);
                }
                SubscribeItem::Checkpoint(position) => start = Start::Position(position + 1),
            }
        };
        n_breaks += 1;
        if n_breaks > TAIL_RESUMES_MAX {
            return Err(broken.into());
        }
        let from = match start {
            Start::Position(position) => format!("position {position}"),
            Start::Now => "now".to_string(),
        };
        eprintln!("-- the subscription broke ({broken}); resuming from {from} --");
    }
}

/// Breaks in a row, with nothing received between, after which `tail` stops resuming.
const TAIL_RESUMES_MAX: u32 = 5;

/// Whether a subscription that ended with `err` may be opened again where it stopped: its
/// connection broke, or its server is unavailable (going away, no longer a member), reset the
/// stream, or failed inside (UNKNOWN, INTERNAL: a fault of that member, which another may not
/// have). What the server refused for the request's own sake is not.
///
/// Wider than the client's rule for sending a call again (which stops at a server's own
/// CANCELLED, ABORTED, UNKNOWN or INTERNAL, since a call may have done something): a
/// subscription is a read from a position, so opening it again from the next position can
/// neither repeat nor skip an event, whatever the member's failure was.
fn resumable(err: &causeway_client::Error) -> bool {
    use causeway_client::Error;
    match err {
        Error::Connect { .. } | Error::NotLeader { .. } | Error::LeaderUnknown { .. } => true,
        Error::Status(status) => matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Internal
                | tonic::Code::Cancelled
                | tonic::Code::Aborted
        ),
        _ => false,
    }
}

async fn graph_command(client: &Client, command: GraphCommand, output: Output) -> Result<()> {
    let (graph, walk, root, format) = match command {
        GraphCommand::Ancestors(WalkArgs {
            id,
            depth,
            limit,
            format,
        }) => (
            client.ancestors(&id, depth, limit).await?,
            Walk::Up,
            Some(id),
            format,
        ),
        GraphCommand::Descendants(WalkArgs {
            id,
            depth,
            limit,
            format,
        }) => (
            client.descendants(&id, depth, limit).await?,
            Walk::Down,
            Some(id),
            format,
        ),
        GraphCommand::Correlation { id, limit, format } => (
            client.correlation(&id, limit).await?,
            Walk::Down,
            None,
            format,
        ),
    };
    let format = format.unwrap_or(match output {
        Output::Table => GraphFormat::Tree,
        Output::Json => GraphFormat::Json,
    });
    match format {
        GraphFormat::Tree => emit(&graph::tree(&graph, walk, root.as_deref()))?,
        GraphFormat::Dot => emit(&graph::dot(&graph, root.as_deref()))?,
        GraphFormat::Json => print_json(&json::graph(&graph))?,
    }
    Ok(())
}

async fn gates_command(client: &Client, command: GatesCommand, output: Output) -> Result<()> {
    match command {
        GatesCommand::Register(args) => {
            let receipt = client.register_gate(gate_definition(args)).await?;
            print_receipt(&receipt, output)?;
        }
        GatesCommand::List => {
            let gates = client.list_gates().await?;
            match output {
                Output::Table => emit(&table::gates(&gates))?,
                Output::Json => print_json(&json!({
                    "gates": gates.iter().map(json::gate).collect::<Vec<_>>(),
                }))?,
            }
        }
        GatesCommand::Remove { name } => {
            let receipt = client.remove_gate(&name).await?;
            print_receipt(&receipt, output)?;
        }
        GatesCommand::DryRun(args) => {
            let receipt = client.dry_run(append_request(&args)?).await?;
            print_receipt(&receipt, output)?;
        }
    }
    Ok(())
}

fn gate_definition(args: RegisterArgs) -> pb::GateDefinition {
    use pb::gate_definition::Rule;
    let rule_args = args.rule;
    // clap's group makes exactly one of these present.
    let rule = if let Some(expression) = rule_args.cel {
        Rule::Cel(pb::CelRule { expression })
    } else if let Some(prefix) = rule_args.unique_tag {
        Rule::UniqueTag(pb::UniqueTagRule { prefix })
    } else if let Some(types) = rule_args.allowed_types {
        Rule::AllowedTypes(pb::AllowedTypesRule { types })
    } else if let Some((max_events, window_ms)) = rule_args.rate_limit {
        Rule::RateLimit(pb::RateLimitRule {
            max_events,
            window_ms,
        })
    } else if let Some(max_payload_bytes) = rule_args.max_payload {
        Rule::SizeLimit(pb::SizeLimitRule { max_payload_bytes })
    } else {
        Rule::CausationExists(pb::CausationExistsRule {})
    };
    pb::GateDefinition {
        name: args.name,
        scopes: args.scopes,
        types: args.types,
        rule: Some(rule),
    }
}

fn read_receipt(args: &VerifyArgs) -> Result<pb::Receipt> {
    let text = read_input(&args.receipt)?;
    let value: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "the receipt in {} is not JSON (expected the output of `append --output json`)",
            args.receipt.display()
        )
    })?;
    json::receipt_from(&value)
}

async fn verify_on_server(client: &Client, args: &VerifyArgs, output: Output) -> Result<ExitCode> {
    let verdict = client.verify_receipt(read_receipt(args)?).await?;
    print_verdict(
        verdict.valid,
        &verdict.reason,
        "server",
        verdict.valid,
        output,
    )
}

/// `verify --log`: pages of `Verify` from `--from` to the head the first page saw (appends
/// that arrive meanwhile are left for the next run), stopping at the first break.
async fn verify_log(client: &Client, args: &VerifyArgs, output: Output) -> Result<ExitCode> {
    let from = args.from.unwrap_or(1).max(1);
    let mut next = from;
    let (mut events, mut bytes) = (0u64, 0u64);
    let mut target: Option<u64> = None;
    let first_break = loop {
        let page = client.verify_log(next, 0).await?;
        let head = *target.get_or_insert(page.head_position);
        events += page.checked_events;
        bytes += page.checked_bytes;
        if page.first_break.is_some() {
            break page.first_break;
        }
        if page.end || page.next_position > head {
            break None;
        }
        if page.next_position <= next {
            bail!("the server made no progress at position {next}");
        }
        next = page.next_position;
    };
    let head = target.unwrap_or(0);
    let text = match (&first_break, output) {
        (None, Output::Table) => format!(
            "log verified: {events} events from position {from} to {head} ({bytes} bytes)\n"
        ),
        (Some(found), Output::Table) => format!(
            "log broken at position {} (segment {}, offset {}): {}\n\
             {events} events from position {from} verified before it\n",
            found.position, found.segment, found.offset, found.detail
        ),
        (_, Output::Json) => pretty_json(&json!({
            "valid": first_break.is_none(),
            "from_position": from,
            "head_position": head,
            "checked_events": events,
            "checked_bytes": bytes,
            "first_break": first_break.as_ref().map(|found| json!({
                "position": found.position,
                "segment": found.segment,
                "offset": found.offset,
                "detail": found.detail,
            })),
        }))?,
    };
    emit_verdict(&text)?;
    Ok(if first_break.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::REFUSED)
    })
}

fn verify_offline(args: &VerifyArgs, output: Output) -> Result<ExitCode> {
    let receipt = read_receipt(args)?;
    let events_path = args
        .events
        .as_ref()
        .context("--offline needs --events FILE")?;
    let events = json::events_from(&read_input(events_path)?)
        .with_context(|| format!("cannot read events from {}", events_path.display()))?;
    let public_key: Option<[u8; 32]> = match &args.public_key {
        Some(text) => Some(
            hex::decode(text.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .context("--public-key must be 64 hex digits (an Ed25519 public key)")?,
        ),
        None => None,
    };
    let verdict = receipt::verify(&receipt, &events, public_key.as_ref());
    let reason = verdict.as_ref().err().map(ToString::to_string);
    print_verdict(
        verdict.is_ok(),
        reason.as_deref().unwrap_or(""),
        "offline",
        public_key.is_some(),
        output,
    )
}

fn print_verdict(
    valid: bool,
    reason: &str,
    mode: &str,
    signature_checked: bool,
    output: Output,
) -> Result<ExitCode> {
    let text = match output {
        Output::Table if valid && signature_checked => "valid\n".to_string(),
        Output::Table if valid => {
            "valid (events match; the signature was not checked: no --public-key)\n".to_string()
        }
        Output::Table => format!("invalid: {reason}\n"),
        Output::Json => pretty_json(&json!({
            "valid": valid,
            "reason": reason,
            "mode": mode,
            "signature_checked": signature_checked,
        }))?,
    };
    emit_verdict(&text)?;
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::REFUSED)
    })
}

fn print_receipt(receipt: &pb::Receipt, output: Output) -> Result<()> {
    match output {
        Output::Table => emit(&table::receipt(receipt))?,
        Output::Json => print_json(&json::receipt(receipt))?,
    }
    Ok(())
}

/// Prints `value` as [`pretty_json`] does.
pub fn print_json(value: &Value) -> Result<()> {
    emit(&pretty_json(value)?)
}

/// A JSON document as the CLI prints it: indented, one trailing newline.
pub fn pretty_json(value: &Value) -> Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Writes `text` to stdout. Unlike `print!`, which panics, a closed pipe (`causeway read log |
/// head`) comes back as [`ClosedStdout`]; `main` ends quietly on it, as other Unix tools do.
pub fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(ClosedStdout),
            _ => anyhow::Error::new(err).context("cannot write to stdout"),
        })
}

/// [`emit`] for output that an exit status follows (a verdict, a bench report): a closed
/// stdout must not turn a failure into success, so here it is ignored and the status stands.
pub fn emit_verdict(text: &str) -> Result<()> {
    match emit(text) {
        Err(err) if err.is::<ClosedStdout>() => Ok(()),
        other => other,
    }
}

/// The reader of stdout went away. Only [`emit`] returns it, so a broken connection to the
/// server is never mistaken for it.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct ClosedStdout;

/// A file's text, or stdin's for `-`.
fn read_input(path: &std::path::Path) -> Result<String> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}
