//! The web console: a read-only page on the admin port, and the JSON it reads.
//!
//! The page (`server/console/`: `index.html`, `console.js`, `console.css`) is plain HTML, CSS
//! and JavaScript embedded in the binary, so there is nothing to build or install, and it names
//! nothing outside this port (its Content-Security-Policy allows only `'self'`). Routes:
//!
//! - `GET /`, `/console.js`, `/console.css`: the page.
//! - `GET /api/state`: head, digest, readiness, settings, disk and index use, cluster role.
//! - `GET /api/gates`: the gates in force, with their definitions.
//! - `GET /api/events?from=P&direction=backward|forward&limit=N`: a page of the log (backward
//!   from the head by default); `next` continues it, `end` says it reached an end.
//! - `GET /api/entity?scope=S&entity=E&from=V&limit=N`: an entity's history, oldest first.
//! - `GET /api/events/{id}`: one event.
//! - `GET /api/events/{id}/ancestors?depth=D&limit=N` and `.../descendants`: its causal graph.
//! - `POST /api/verify`: verifies a receipt, the JSON `causeway --output json append` prints.
//! - `GET /api/tail?from=P`: server-sent events, one `event` per log event (its `id` is the
//!   position, so a browser's reconnect resumes after the last one it saw, by `Last-Event-ID`),
//!   and a `failed` event with the reason if a read fails.
//!
//! Invariants:
//! - Read-only: nothing here writes to the store.
//! - No store call runs on an async worker: each goes through the server's bounded pool, and a
//!   full pool is 429 at once. The tail waits for new events on the head's watch channel
//!   (`LiveStore::head`), not on a pool thread.
//! - Every input is bounded by a `CONSOLE_*` constant of `limits.rs`; over a bound is 400 (413
//!   for a receipt body, 429 for one stream too many) with a message naming the constant.
//!   Error messages repeat at most `ECHO_CHARS_MAX` characters of any input (`status::echo`).
//! - Reads answer from this node's store (on a cluster follower: what it has applied).
//! - Payloads go out as text when UTF-8 (cut at `CONSOLE_PAYLOAD_BYTES_MAX`), else as a byte
//!   count; the page puts every value in the DOM as text, never as markup.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{self, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use causeway_core::store::RegisteredGate;
use causeway_core::{Direction, Event, EventId, Filter, Graph, Position, Rule, Version};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::limits::{
    CONSOLE_BODY_WAIT, CONSOLE_GRAPH_DEPTH_MAX, CONSOLE_GRAPH_NODES_MAX, CONSOLE_PAGE_BYTES_MAX,
    CONSOLE_PAGE_EVENTS_MAX, CONSOLE_PAYLOAD_BYTES_MAX, CONSOLE_RECEIPT_BYTES_MAX,
    CONSOLE_RESPONSE_BYTES_MAX, CONSOLE_STREAMS_MAX, CONSOLE_TAIL_BUFFER_EVENTS,
    CONSOLE_TAIL_KEEPALIVE, SUBSCRIBE_RETRY_DELAY_MAX,
};
use crate::monitor::{Admin, Parts};
use crate::pb;
use crate::pool::PoolError;
use crate::status::{Error, echo, to_status};

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// Only this port's own files, no inline script or style: the page cannot load anything from
/// elsewhere, nor run markup that event data might smuggle in.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Events in a page when the request does not say.
const PAGE_EVENTS_DEFAULT: usize = 50;
/// Causation links followed when the request does not say.
const GRAPH_DEPTH_DEFAULT: u32 = 3;
/// Events one tail read takes from the log.
const TAIL_READ_EVENTS: usize = 256;
/// How long a caught-up tail waits on the head's watch channel before it reads again
/// regardless: a bound on how late a missed wake-up is noticed.
const TAIL_RECHECK: Duration = Duration::from_secs(5);

/// The console's state: the admin port's, and the permits for open tails.
#[derive(Clone, Debug)]
struct Console {
    admin: Admin,
    streams: Arc<Semaphore>,
}

/// The console's routes, with their state; `monitor::router` merges them.
pub fn router(admin: Admin) -> Router {
    let console = Console {
        admin,
        streams: Arc::new(Semaphore::new(CONSOLE_STREAMS_MAX)),
    };
    Router::new()
        .route("/", get(index))
        .route("/console.js", get(script))
        .route("/console.css", get(stylesheet))
        .route("/api/state", get(state))
        .route("/api/gates", get(gates))
        .route("/api/events", get(events))
        .route("/api/entity", get(entity))
        .route("/api/events/{id}", get(event))
        .route("/api/events/{id}/ancestors", get(ancestors))
        .route("/api/events/{id}/descendants", get(descendants))
        .route("/api/verify", post(verify))
        .route("/api/tail", get(tail))
        .layer(axum::middleware::from_fn(addressed_by_ip_or_localhost))
        .with_state(console)
}

/// Answers only requests addressed to an IP address or `localhost`: a web page that rebinds
/// its own host name to this port's address (DNS rebinding) sends that name, and is refused
/// before it can read the log. A request without a `Host` (HTTP/1.0) is served.
async fn addressed_by_ip_or_localhost(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    match host {
        Some(host) if !is_ip_or_localhost(&host) => Refusal(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "the console answers requests to an IP address or localhost, not to {}",
                echo(&host)
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Whether a `Host` header names an IP address or `localhost`, with or without a port.
fn is_ip_or_localhost(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// A refusal: a status and a JSON `{"error": ...}` body.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        no_store(response.headers_mut());
        response
    }
}

impl From<Error> for Refusal {
    fn from(err: Error) -> Refusal {
        let status = to_status(err);
        let code = match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Refusal(code, status.message().to_string())
    }
}

impl From<PoolError> for Refusal {
    fn from(err: PoolError) -> Refusal {
        Error::from(err).into()
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn json_response(value: Value) -> Response {
    let mut response = axum::Json(value).into_response();
    no_store(response.headers_mut());
    response
}

fn page_file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    no_store(headers);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn index() -> Response {
    page_file("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> Response {
    page_file("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn stylesheet() -> Response {
    page_file("text/css; charset=utf-8", CONSOLE_CSS)
}

impl Console {
    /// The node's parts, or 503 while the store is still opening.
    fn parts(&self) -> Result<&Parts, Refusal> {
        self.admin.readiness.parts().ok_or_else(|| {
            Refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "recovering: the store is opening".to_string(),
            )
        })
    }

    /// Runs `job` on the store, on the server's bounded pool.
    async fn call<T, F>(&self, job: F) -> Result<T, Refusal>
    where
        F: FnOnce(&causeway_core::Store) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let parts = self.parts()?;
        let store = parts.store.get();
        Ok(parts.pool.run(move || job(&store)).await??)
    }
}

type Params = Query<HashMap<String, String>>;

/// A number parameter: absent is `default`; over `max` is refused naming `limit`.
fn number(params: &Params, name: &str, default: u64, max: (u64, &str)) -> Result<u64, Refusal> {
    let Some(text) = params.get(name) else {
        return Ok(default);
    };
    let value: u64 = text
        .parse()
        .map_err(|_| bad_request(format!("{name} = {} is not a number", echo(text))))?;
    let (max, limit) = max;
    if value > max {
        return Err(bad_request(format!(
            "{name} = {value} is over the limit {limit} = {max}"
        )));
    }
    Ok(value)
}

/// A page size: 1 to `CONSOLE_PAGE_EVENTS_MAX`.
fn page_limit(params: &Params) -> Result<usize, Refusal> {
    let limit = number(
        params,
        "limit",
        PAGE_EVENTS_DEFAULT as u64,
        (CONSOLE_PAGE_EVENTS_MAX as u64, "CONSOLE_PAGE_EVENTS_MAX"),
    )?;
    if limit == 0 {
        return Err(bad_request("limit must be at least 1"));
    }
    Ok(limit as usize)
}

fn event_id(text: &str) -> Result<EventId, Refusal> {
    uuid::Uuid::parse_str(text)
        .map(EventId)
        .map_err(|_| bad_request(format!("{} is not an event id (a UUID)", echo(text))))
}

/// An event as the page reads it: the payload as text when it is UTF-8 (cut at
/// `CONSOLE_PAYLOAD_BYTES_MAX`, with `payload_truncated`), always its size.
fn event_json(event: &Event) -> Value {
    let (payload, payload_truncated) = match std::str::from_utf8(&event.payload) {
        Ok(text) if text.len() <= CONSOLE_PAYLOAD_BYTES_MAX => (Some(text), false),
        Ok(text) => {
            let mut cut = CONSOLE_PAYLOAD_BYTES_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            (Some(&text[..cut]), true)
        }
        Err(_) => (None, false),
    };
    json!({
        "position": event.position.0,
        "version": event.version.0,
        "timestamp": {
            "wall": rfc3339(event.timestamp.wall_ms()),
            "logical": event.timestamp.logical(),
        },
        "id": event.id.to_text(),
        "scope": event.scope,
        "entity": event.entity,
        "type": event.event_type,
        "tags": event.tags,
        "content_type": event.content_type,
        "metadata": event.metadata,
        "causation": event.causation.iter().map(|id| id.to_text()).collect::<Vec<_>>(),
        "correlation_id": event.correlation_id.to_text(),
        "hash": hex(&event.hash),
        "payload": payload,
        "payload_bytes": event.payload.len(),
        "payload_truncated": payload_truncated,
    })
}

/// The events as JSON, as many as fit in `CONSOLE_RESPONSE_BYTES_MAX` (at least one), and how
/// many that is.
fn bounded_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> (Vec<Value>, usize) {
    let mut values = Vec::new();
    let mut bytes = 0;
    for event in events {
        let value = event_json(event);
        bytes += serde_json::to_vec(&value).map_or(0, |encoded| encoded.len());
        if bytes > CONSOLE_RESPONSE_BYTES_MAX && !values.is_empty() {
            break;
        }
        values.push(value);
    }
    let taken = values.len();
    (values, taken)
}

fn graph_json(graph: &Graph) -> Value {
    let (nodes, taken) = bounded_events(&graph.nodes);
    let kept: std::collections::HashSet<_> =
        graph.nodes[..taken].iter().map(|node| node.id).collect();
    json!({
        "nodes": nodes,
        "edges": graph
            .edges
            .iter()
            .filter(|edge| kept.contains(&edge.parent) && kept.contains(&edge.child))
            .map(|edge| json!({
                "parent": edge.parent.to_text(),
                "child": edge.child.to_text(),
            }))
            .collect::<Vec<_>>(),
        "truncated": graph.truncated || taken < graph.nodes.len(),
    })
}

fn gate_json(gate: &RegisteredGate) -> Value {
    let definition = gate.definition.as_ref();
    let rule = definition.map(|definition| match &definition.rule {
        Rule::UniqueTag { prefix } => json!({"kind": "unique_tag", "prefix": prefix}),
        Rule::AllowedTypes { types } => json!({"kind": "allowed_types", "types": types}),
        Rule::CausationExists => json!({"kind": "causation_exists"}),
        Rule::RateLimit {
            max_events,
            window_ms,
        } => json!({"kind": "rate_limit", "max_events": max_events, "window_ms": window_ms}),
        Rule::SizeLimit { max_payload_bytes } => {
            json!({"kind": "size_limit", "max_payload_bytes": max_payload_bytes})
        }
        Rule::Cel { expression } => json!({"kind": "cel", "expression": expression}),
    });
    json!({
        "name": gate.name,
        "version": gate.version,
        "scopes": definition.map(|definition| definition.scopes.clone()).unwrap_or_default(),
        "types": definition.map(|definition| definition.types.clone()).unwrap_or_default(),
        "rule": rule,
    })
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

async fn state(State(console): State<Console>) -> Result<Response, Refusal> {
    let readiness = console.admin.readiness.clone();
    let cluster = console.parts()?.cluster.clone();
    let mut state = console
        .call(move |store| {
            let ready = readiness.check();
            let (head, digest) = store.head_and_digest();
            let (segments, segment_bytes) = store.disk_usage()?;
            Ok(json!({
                "head": head.0,
                "digest": hex(&digest),
                "refusing_writes": store.refusing_writes(),
                "record_denials": store.settings().record_denials,
                "segments": segments,
                "segment_bytes": segment_bytes,
                "index_bytes": store.index_heap_bytes(),
                "ready": ready.is_ok(),
                "not_ready_reason": ready.err(),
                "cluster": cluster.map(|node| {
                    let status = node.status();
                    json!({
                        "node_id": status.node_id,
                        "role": pb::NodeRole::try_from(status.role)
                            .map_or("unknown", |role| role.as_str_name()),
                        "term": status.term,
                        "leader_id": status.leader_id,
                        "leader_address": status.leader_address,
                        "applied_index": status.applied_index,
                    })
                }),
            }))
        })
        .await?;
    state["version"] = json!(env!("CARGO_PKG_VERSION"));
    state["subscriptions"] = json!(console.parts()?.hub.open());
    Ok(json_response(state))
}

async fn gates(State(console): State<Console>) -> Result<Response, Refusal> {
    let gates = console.call(|store| Ok(store.gates())).await?;
    Ok(json_response(json!({
        "gates": gates.iter().map(gate_json).collect::<Vec<_>>(),
    })))
}

async fn events(State(console): State<Console>, params: Params) -> Result<Response, Refusal> {
    let direction = match params.get("direction").map(String::as_str) {
        None | Some("backward") => Direction::Backward,
        Some("forward") => Direction::Forward,
        Some(other) => {
            return Err(bad_request(format!(
                "direction = {} is neither forward nor backward",
                echo(other)
            )));
        }
    };
    let from = number(&params, "from", 0, (u64::MAX, "u64"))?;
    let limit = page_limit(&params)?;
    let (batch, head) = console
        .call(move |store| {
            let batch = store.read_log_bytes(
                Position(from),
                direction,
                limit,
                CONSOLE_PAGE_BYTES_MAX,
                &Filter::default(),
            )?;
            Ok((batch, store.head().0))
        })
        .await?;
    let (events, taken) = bounded_events(&batch.events);
    let truncated = taken < batch.events.len();
    // Cut short, the page goes on from the first event it left out, either way.
    let next = if truncated {
        batch.events[taken].position.0
    } else {
        batch.next.0
    };
    Ok(json_response(json!({
        "events": events,
        "next": next,
        "end": batch.end && !truncated,
        "truncated": truncated,
        "head": head,
    })))
}

async fn entity(State(console): State<Console>, params: Params) -> Result<Response, Refusal> {
    let scope = params.get("scope").cloned().unwrap_or_default();
    let entity = params.get("entity").cloned().unwrap_or_default();
    if scope.is_empty() || entity.is_empty() {
        return Err(bad_request("scope and entity are required"));
    }
    let from = number(&params, "from", 1, (u64::MAX, "u64"))?;
    let limit = page_limit(&params)?;
    let (events, version) = console
        .call(move |store| {
            let events =
                store.read_entity(&scope, &entity, Version(from), Direction::Forward, limit)?;
            Ok((events, store.version(&scope, &entity).0))
        })
        .await?;
    let (values, taken) = bounded_events(&events);
    Ok(json_response(json!({
        "events": values,
        "version": version,
        "truncated": taken < events.len(),
    })))
}

async fn event(
    State(console): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, Refusal> {
    let id = event_id(&id)?;
    let event = console.call(move |store| Ok(store.get(id)?)).await?;
    Ok(json_response(event_json(&event)))
}

/// Which way a graph request walks.
#[derive(Clone, Copy, Debug)]
enum Walk {
    Ancestors,
    Descendants,
}

async fn graph(
    console: Console,
    id: String,
    params: Params,
    walk: Walk,
) -> Result<Response, Refusal> {
    let id = event_id(&id)?;
    let depth = number(
        &params,
        "depth",
        u64::from(GRAPH_DEPTH_DEFAULT),
        (
            u64::from(CONSOLE_GRAPH_DEPTH_MAX),
            "CONSOLE_GRAPH_DEPTH_MAX",
        ),
    )?;
    let depth = u32::try_from(depth).expect("CONSOLE_GRAPH_DEPTH_MAX fits in u32");
    let limit = number(
        &params,
        "limit",
        CONSOLE_GRAPH_NODES_MAX as u64,
        (CONSOLE_GRAPH_NODES_MAX as u64, "CONSOLE_GRAPH_NODES_MAX"),
    )?;
    if limit == 0 {
        return Err(bad_request("limit must be at least 1"));
    }
    let limit = limit as usize;
    let graph = console
        .call(move |store| {
            Ok(match walk {
                Walk::Ancestors => store.ancestors(id, depth, limit)?,
                Walk::Descendants => store.descendants(id, depth, limit)?,
            })
        })
        .await?;
    Ok(json_response(graph_json(&graph)))
}

async fn ancestors(
    State(console): State<Console>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, Refusal> {
    graph(console, id, params, Walk::Ancestors).await
}

async fn descendants(
    State(console): State<Console>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, Refusal> {
    graph(console, id, params, Walk::Descendants).await
}

async fn verify(
    State(console): State<Console>,
    body: axum::body::Body,
) -> Result<Response, Refusal> {
    let body = tokio::time::timeout(
        CONSOLE_BODY_WAIT,
        axum::body::to_bytes(body, CONSOLE_RECEIPT_BYTES_MAX),
    )
    .await
    .map_err(|_| {
        Refusal(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the receipt did not arrive within CONSOLE_BODY_WAIT = {}s",
                CONSOLE_BODY_WAIT.as_secs()
            ),
        )
    })?;
    let body: Bytes = body.map_err(|_| {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the receipt is over the limit CONSOLE_RECEIPT_BYTES_MAX = \
                     {CONSOLE_RECEIPT_BYTES_MAX} bytes; verify it with `causeway verify`"
            ),
        )
    })?;
    let value: Value = serde_json::from_slice(&body).map_err(|err| {
        bad_request(format!(
            "the receipt is not JSON (line {}, column {}); paste what \
             `causeway --output json append` prints",
            err.line(),
            err.column()
        ))
    })?;
    let receipt = receipt_from_json(&value).map_err(bad_request)?;
    let receipt = crate::convert::receipt_from_wire(receipt, "receipt")?;
    let n_events = receipt.events.len();
    let signing_key = console.parts()?.signing_key.clone();
    // Only a signature checked against the server's key vouches for the digest: without a
    // key the server can match the events, not the digest the receipt claims.
    let signature_checked = receipt.signature.is_some() && signing_key.is_some();
    let verdict = console
        .call(move |store| crate::service::check_receipt(store, &receipt, signing_key.as_ref()))
        .await?;
    Ok(json_response(json!({
        "valid": verdict.is_ok(),
        "reason": verdict.err().unwrap_or_default(),
        "events": n_events,
        "signature_checked": signature_checked,
        "digest_checked": signature_checked,
    })))
}

/// Reads a receipt in the form `causeway --output json append` prints (hex hashes,
/// `{"wall": RFC 3339, "logical"}` timestamps). Errors name the field and repeat little of the input.
fn receipt_from_json(value: &Value) -> Result<pb::Receipt, String> {
    let object = value
        .as_object()
        .ok_or("the receipt must be a JSON object")?;
    let field = |object: &serde_json::Map<String, Value>, key: &str, what: &str| {
        object
            .get(key)
            .cloned()
            .ok_or_else(|| format!("{what}.{key} is missing"))
    };
    let string = |object: &serde_json::Map<String, Value>, key: &str, what: &str| match field(
        object, key, what,
    )? {
        Value::String(text) => Ok(text),
        _ => Err(format!("{what}.{key} must be a string")),
    };
    let uint = |object: &serde_json::Map<String, Value>, key: &str, what: &str| {
        field(object, key, what)?
            .as_u64()
            .ok_or_else(|| format!("{what}.{key} must be a whole number"))
    };
    let hex_field = |object: &serde_json::Map<String, Value>, key: &str, what: &str| {
        let text = string(object, key, what)?;
        unhex(&text).ok_or_else(|| format!("{what}.{key} is not hex: {}", echo(&text)))
    };
    let Some(Value::Array(events)) = object.get("events") else {
        return Err("receipt.events must be an array".to_string());
    };
    if events.len() > causeway_core::limits::APPEND_EVENTS_MAX {
        return Err(format!(
            "receipt.events holds {} events, over the limit APPEND_EVENTS_MAX = {}",
            events.len(),
            causeway_core::limits::APPEND_EVENTS_MAX
        ));
    }
    let events = events
        .iter()
        .enumerate()
        .map(|(event_idx, value)| {
            let what = format!("receipt.events[{event_idx}]");
            let committed = value
                .as_object()
                .ok_or_else(|| format!("{what} must be an object"))?;
            let id = string(committed, "id", &what)?;
            if uuid::Uuid::parse_str(&id).is_err() {
                return Err(format!("{what}.id is not a UUID: {}", echo(&id)));
            }
            let timestamp = match committed.get("timestamp") {
                Some(Value::Object(timestamp)) => pb::HybridTimestamp {
                    wall: Some(wall_from_rfc3339(
                        &string(timestamp, "wall", &format!("{what}.timestamp"))?,
                        &format!("{what}.timestamp.wall"),
                    )?),
                    logical: u32::try_from(uint(
                        timestamp,
                        "logical",
                        &format!("{what}.timestamp"),
                    )?)
                    .map_err(|_| format!("{what}.timestamp.logical is too large"))?,
                },
                _ => return Err(format!("{what}.timestamp must be an object")),
            };
            Ok(pb::Committed {
                id,
                position: uint(committed, "position", &what)?,
                version: uint(committed, "version", &what)?,
                timestamp: Some(timestamp),
                hash: hex_field(committed, "hash", &what)?,
                prev_hash: hex_field(committed, "prev_hash", &what)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let gates = match object.get("gates") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(gates)) => gates
            .iter()
            .enumerate()
            .map(|(gate_idx, value)| {
                let what = format!("receipt.gates[{gate_idx}]");
                let gate = value
                    .as_object()
                    .ok_or_else(|| format!("{what} must be an object"))?;
                Ok(pb::GatePass {
                    name: string(gate, "name", &what)?,
                    version: uint(gate, "version", &what)?,
                })
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err("receipt.gates must be an array".to_string()),
    };
    let optional = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(format!("receipt.{key} must be a string")),
    };
    let signature = optional("signature")?;
    Ok(pb::Receipt {
        events,
        gates,
        digest: hex_field(object, "digest", "receipt")?,
        signature_key_id: optional("signature_key_id")?,
        signature: unhex(&signature)
            .ok_or_else(|| format!("receipt.signature is not hex: {}", echo(&signature)))?,
    })
}

/// A wall time in milliseconds as RFC 3339 in UTC with milliseconds
/// (`2023-11-14T22:13:20.123Z`), as the page shows it and protobuf's JSON writes a Timestamp.
fn rfc3339(wall_ms: u64) -> String {
    i64::try_from(wall_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{wall_ms} ms after 1970"),
            |time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}

/// An RFC 3339 time as a protobuf Timestamp, exactly: whether it is whole milliseconds the
/// receipt's conversion checks, naming the field.
fn wall_from_rfc3339(text: &str, what: &str) -> Result<prost_types::Timestamp, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|err| format!("{what} is not an RFC 3339 time ({err}): {}", echo(text)))?;
    Ok(prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).expect("below 2 * 10^9"),
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// Server-sent events from `from` (or after `Last-Event-ID`, or the head by default) for as
/// long as the page listens; at most `CONSOLE_STREAMS_MAX` open at once.
async fn tail(
    State(console): State<Console>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Refusal> {
    let parts = console.parts()?.clone();
    let resume = match headers.get("last-event-id") {
        Some(value) => {
            let text = value.to_str().unwrap_or_default();
            let last: u64 = text.parse().map_err(|_| {
                bad_request(format!("Last-Event-ID {} is not a position", echo(text)))
            })?;
            Some(last.saturating_add(1))
        }
        None => None,
    };
    let from = match resume {
        Some(from) => from,
        None => number(
            &params,
            "from",
            parts.hub.head().borrow().saturating_add(1),
            (u64::MAX, "u64"),
        )?,
    }
    .max(1);
    let permit = console.streams.clone().try_acquire_owned().map_err(|_| {
        Refusal(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{CONSOLE_STREAMS_MAX} tails are open, the limit CONSOLE_STREAMS_MAX"),
        )
    })?;
    let (sender, receiver) = mpsc::channel(CONSOLE_TAIL_BUFFER_EVENTS);
    tokio::spawn(async move {
        feed(parts, Position(from), sender).await;
        drop(permit);
    });
    let mut response = Sse::new(ReceiverStream::new(receiver))
        .keep_alive(KeepAlive::new().interval(CONSOLE_TAIL_KEEPALIVE))
        .into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// Feeds one tail: reads the log forward on the pool, sends each event, and waits on the head
/// watcher when it has caught up. Ends when the page goes away, the server stops, or a read
/// fails (sent first as a `failed` event with the reason; not `error`, which browsers'
/// `EventSource` reserves for a dropped connection).
async fn feed(parts: Parts, from: Position, sender: mpsc::Sender<Result<sse::Event, Infallible>>) {
    let mut head = parts.hub.head();
    let mut stopping = parts.hub.stopping();
    let mut next = from;
    loop {
        let store = parts.store.get();
        let read = parts.pool.run(move || {
            store.read_log_bytes(
                next,
                Direction::Forward,
                TAIL_READ_EVENTS,
                CONSOLE_PAGE_BYTES_MAX,
                &Filter::default(),
            )
        });
        let batch = match read.await {
            Ok(Ok(batch)) => batch,
            Err(PoolError::Full { .. }) => {
                // The pool is busy with real work; the tail can wait.
                tokio::time::sleep(SUBSCRIBE_RETRY_DELAY_MAX).await;
                continue;
            }
            Ok(Err(err)) => {
                let message = Refusal::from(Error::from(err)).1;
                let _ = sender
                    .send(Ok(sse::Event::default().event("failed").data(message)))
                    .await;
                return;
            }
            Err(_) => return,
        };
        for event in &batch.events {
            let message = sse::Event::default()
                .event("event")
                .id(event.position.0.to_string())
                .data(event_json(event).to_string());
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
        }
        next = batch.next;
        if !batch.end {
            continue;
        }
        let wanted = next.0;
        tokio::select! {
            changed = head.wait_for(|head| *head >= wanted) => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stopping.wait_for(|stopping| *stopping) => return,
            () = sender.closed() => return,
            () = tokio::time::sleep(TAIL_RECHECK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_and_localhost_are_served() {
        for host in [
            "127.0.0.1:7421",
            "[::1]:7421",
            "localhost:7421",
            "LOCALHOST",
            "10.0.0.7",
        ] {
            assert!(is_ip_or_localhost(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:7421",
            "127.0.0.1.nip.io:7421",
            "",
        ] {
            assert!(!is_ip_or_localhost(host), "{host}");
        }
    }
}
