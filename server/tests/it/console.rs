//! The web console's API on the admin port, over plain HTTP: the JSON the page reads has the
//! shapes it expects, every bound refuses with the status and the constant's name, errors do
//! not echo long input, and the live tail streams an event appended after it opened. (The page
//! itself runs in a browser: `server/console/test/`, run by `.ci/run`.)

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use causeway_server::limits::{
    CONSOLE_GRAPH_DEPTH_MAX, CONSOLE_PAGE_EVENTS_MAX, CONSOLE_RECEIPT_BYTES_MAX,
    CONSOLE_STREAMS_MAX,
};
use serde_json::{Value, json};

use crate::harness::{
    Client, Node, append, event, http_get, http_post, pb, register_small_orders, scratch,
};

fn get_json(admin: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get(admin, path);
    let value = serde_json::from_str(&body).unwrap_or_else(|err| panic!("{path}: {err}: {body}"));
    (status, value)
}

fn ok_json(admin: SocketAddr, path: &str) -> Value {
    let (status, value) = get_json(admin, path);
    assert_eq!(status, 200, "{path}: {value}");
    value
}

/// Asserts a refusal: its status, and an error message naming `names`.
fn refused(admin: SocketAddr, path: &str, status: u16, names: &str) {
    let (got, value) = get_json(admin, path);
    assert_eq!(got, status, "{path}: {value}");
    let message = value["error"].as_str().expect("an error message");
    assert!(message.contains(names), "{path}: {message}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A wall time as the CLI's JSON writes it: RFC 3339 in UTC with milliseconds.
fn rfc3339(wall: Option<prost_types::Timestamp>) -> String {
    let wall = wall.expect("a committed event has a wall time");
    let nanos = u32::try_from(wall.nanos).expect("the server writes nanos in range");
    chrono::DateTime::from_timestamp(wall.seconds, nanos)
        .expect("a wall time the clock can hold")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A receipt in the JSON form `causeway --output json append` prints.
fn receipt_json(receipt: &pb::Receipt) -> Value {
    json!({
        "events": receipt.events.iter().map(|committed| {
            let timestamp = committed.timestamp.expect("a committed event has a timestamp");
            json!({
                "id": committed.id,
                "position": committed.position,
                "version": committed.version,
                "timestamp": {"wall": rfc3339(timestamp.wall), "logical": timestamp.logical},
                "hash": hex(&committed.hash),
                "prev_hash": hex(&committed.prev_hash),
            })
        }).collect::<Vec<_>>(),
        "gates": receipt.gates.iter().map(|gate| json!({"name": gate.name, "version": gate.version})).collect::<Vec<_>>(),
        "digest": hex(&receipt.digest),
        "signature_key_id": receipt.signature_key_id,
        "signature": hex(&receipt.signature),
    })
}

fn caused_by(parent: &pb::Receipt, new: pb::NewEvent) -> pb::NewEvent {
    pb::NewEvent {
        causation: vec![parent.events[0].id.clone()],
        ..new
    }
}

/// A gate and a chain: placed -> paid -> shipped, in two entities.
async fn chain(client: &mut Client) -> [pb::Receipt; 3] {
    register_small_orders(client).await;
    let placed = append(
        client,
        vec![pb::NewEvent {
            payload: br#"{"total":12}"#.to_vec(),
            ..event("acme", "order-1", "OrderPlaced")
        }],
    )
    .await;
    let paid = append(
        client,
        vec![caused_by(&placed, event("acme", "order-1", "OrderPaid"))],
    )
    .await;
    let shipped = append(
        client,
        vec![caused_by(&paid, event("acme", "shipment-1", "Shipped"))],
    )
    .await;
    [placed, paid, shipped]
}

/// Every read endpoint answers with the shape the page reads: the head and digest, the gate,
/// a page of the log newest first, one event, an entity's history, and both halves of the
/// causal graph with their edges.
#[tokio::test]
async fn the_api_serves_the_state_gates_events_and_graph() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let admin = node.admin.expect("the node has an admin port");
    let mut client = node.client().await;
    let [placed, paid, shipped] = chain(&mut client).await;
    let ids = [&placed, &paid, &shipped].map(|receipt| receipt.events[0].id.clone());

    let (page_status, page) = http_get(admin, "/");
    assert_eq!(page_status, 200);
    assert!(page.contains("<title>Causeway console</title>"), "{page}");
    for file in ["/console.js", "/console.css"] {
        let (status, body) = http_get(admin, file);
        assert_eq!(status, 200, "{file}");
        assert!(body.len() > 1000, "{file} is served whole");
    }

    let state = ok_json(admin, "/api/state");
    assert_eq!(state["head"], 4, "{state}");
    assert_eq!(state["digest"], hex(&shipped.digest), "{state}");
    assert_eq!(state["ready"], true, "{state}");
    assert_eq!(state["cluster"], Value::Null, "{state}");

    let gates = ok_json(admin, "/api/gates");
    assert_eq!(gates["gates"][0]["name"], "small-orders", "{gates}");
    assert_eq!(gates["gates"][0]["rule"]["kind"], "cel", "{gates}");
    assert_eq!(gates["gates"][0]["scopes"], json!(["acme"]), "{gates}");

    let recent = ok_json(admin, "/api/events?limit=2");
    let positions: Vec<u64> = recent["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["position"].as_u64().expect("a position"))
        .collect();
    assert_eq!(positions, [4, 3], "newest first: {recent}");
    assert_eq!(recent["next"], 2, "{recent}");
    assert_eq!(recent["end"], false, "{recent}");
    let older = ok_json(admin, "/api/events?from=2&limit=50");
    assert_eq!(older["events"].as_array().expect("events").len(), 2);
    assert_eq!(older["end"], true, "{older}");

    let one = ok_json(admin, &format!("/api/events/{}", ids[1]));
    assert_eq!(one["type"], "OrderPaid", "{one}");
    assert_eq!(one["causation"], json!([ids[0]]), "{one}");
    assert_eq!(one["payload"], r#"{"entity":"order-1"}"#, "{one}");
    assert_eq!(one["payload_bytes"], 20, "{one}");
    assert_eq!(one["hash"], hex(&paid.events[0].hash), "{one}");

    let binary = append(
        &mut client,
        vec![pb::NewEvent {
            payload: vec![0xff, 0xfe, 0x00],
            content_type: "application/octet-stream".to_string(),
            ..event("acme", "blob-1", "BlobStored")
        }],
    )
    .await;
    let blob = ok_json(admin, &format!("/api/events/{}", binary.events[0].id));
    assert_eq!(
        blob["payload"],
        Value::Null,
        "not UTF-8: the size only: {blob}"
    );
    assert_eq!(blob["payload_bytes"], 3, "{blob}");

    let history = ok_json(admin, "/api/entity?scope=acme&entity=order-1");
    let types: Vec<&str> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["type"].as_str().expect("a type"))
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderPaid"], "{history}");
    assert_eq!(history["version"], 2, "{history}");

    let up = ok_json(admin, &format!("/api/events/{}/ancestors?depth=5", ids[2]));
    let down = ok_json(
        admin,
        &format!("/api/events/{}/descendants?depth=5", ids[0]),
    );
    for graph in [&up, &down] {
        let nodes: Vec<&str> = graph["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|node| node["id"].as_str().expect("an id"))
            .collect();
        assert_eq!(nodes, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            graph["edges"],
            json!([
                {"parent": ids[0], "child": ids[1]},
                {"parent": ids[1], "child": ids[2]},
            ])
        );
        assert_eq!(graph["truncated"], false);
    }
    let near = ok_json(
        admin,
        &format!("/api/events/{}/descendants?depth=1", ids[0]),
    );
    assert_eq!(near["nodes"].as_array().expect("nodes").len(), 2, "{near}");
    assert_eq!(near["truncated"], true, "{near}");
}

/// Every input bound refuses with its status and the constant's name, unknown ids are 404,
/// and an error repeats only a short prefix of a long input.
#[tokio::test]
async fn the_api_refuses_beyond_its_bounds() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let admin = node.admin.expect("the node has an admin port");
    let mut client = node.client().await;
    let [placed, ..] = chain(&mut client).await;
    let id = &placed.events[0].id;

    let over = CONSOLE_PAGE_EVENTS_MAX + 1;
    refused(
        admin,
        &format!("/api/events?limit={over}"),
        400,
        "CONSOLE_PAGE_EVENTS_MAX",
    );
    refused(
        admin,
        &format!("/api/entity?scope=acme&entity=order-1&limit={over}"),
        400,
        "CONSOLE_PAGE_EVENTS_MAX",
    );
    refused(admin, "/api/events?limit=0", 400, "at least 1");
    refused(admin, "/api/events?direction=sideways", 400, "direction");
    refused(admin, "/api/entity?scope=acme", 400, "required");
    let deep = CONSOLE_GRAPH_DEPTH_MAX + 1;
    refused(
        admin,
        &format!("/api/events/{id}/ancestors?depth={deep}"),
        400,
        "CONSOLE_GRAPH_DEPTH_MAX",
    );
    refused(
        admin,
        &format!("/api/events/{id}/descendants?limit=100000"),
        400,
        "CONSOLE_GRAPH_NODES_MAX",
    );
    refused(
        admin,
        "/api/events/01a23e5f-46bb-77b9-9eee-b26802a38d4a",
        404,
        "not found",
    );

    let long = "x".repeat(10_000);
    let (status, body) = http_get(admin, &format!("/api/events/{long}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.len() < 200, "the error repeats a prefix only: {body}");
    let (status, body) = http_get(admin, &format!("/api/events?limit={long}"));
    assert_eq!(status, 400, "{body}");
    assert!(body.len() < 200, "the error repeats a prefix only: {body}");

    let (status, body) = http_post(admin, "/api/verify", b"{\"events\": [");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not JSON"), "{body}");
    let (status, body) = http_post(admin, "/api/verify", br#"{"events": [{"id": 1}]}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("receipt.events[0].id"), "{body}");
    let huge = vec![b' '; CONSOLE_RECEIPT_BYTES_MAX + 1];
    let (status, body) = http_post(admin, "/api/verify", &huge);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("CONSOLE_RECEIPT_BYTES_MAX"), "{body}");
}

/// A receipt as the CLI prints it verifies; the same receipt with one hash changed does not,
/// and the verdict says which field differs.
#[tokio::test]
async fn a_posted_receipt_verifies_and_a_tampered_one_does_not() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let admin = node.admin.expect("the node has an admin port");
    let mut client = node.client().await;
    let [_, paid, _] = chain(&mut client).await;

    let receipt = receipt_json(&paid);
    let (status, body) = http_post(admin, "/api/verify", receipt.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    let verdict: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        verdict,
        json!({
            "valid": true,
            "reason": "",
            "events": 1,
            "signature_checked": false,
            "digest_checked": false,
        })
    );

    let mut tampered = receipt.clone();
    tampered["events"][0]["hash"] = json!(hex(&[7; 32]));
    let (status, body) = http_post(admin, "/api/verify", tampered.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    let verdict: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(verdict["valid"], false, "{verdict}");
    assert!(
        verdict["reason"]
            .as_str()
            .expect("a reason")
            .contains("hash differs"),
        "{verdict}"
    );
}

/// An open server-sent event stream on the admin port.
struct Tail {
    stream: std::net::TcpStream,
    seen: String,
}

impl Tail {
    /// Opens `/api/tail` with `query`; `None` with the status when the server refuses it.
    fn open(admin: SocketAddr, query: &str) -> Result<Tail, (u16, String)> {
        let mut stream = std::net::TcpStream::connect(admin).expect("connect to the admin port");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        write!(
            stream,
            "GET /api/tail{query} HTTP/1.1\r\nHost: {admin}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("send the request");
        let mut tail = Tail {
            stream,
            seen: String::new(),
        };
        tail.wait_for("\r\n\r\n");
        let status: u16 = tail
            .seen
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status code");
        if status != 200 {
            tail.wait_for("}");
            return Err((status, tail.seen));
        }
        assert!(tail.seen.contains("text/event-stream"), "{}", tail.seen);
        Ok(tail)
    }

    /// Reads until `text` has arrived, for at most ten seconds.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buffer = [0; 4096];
        while !self.seen.contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the stream: {}",
                self.seen
            );
            match self.stream.read(&mut buffer) {
                Ok(0) => panic!("the stream ended before {text:?}: {}", self.seen),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(err) => panic!("reading the stream: {err}"),
            }
        }
    }
}

/// The live tail sends the events from where it was asked to start, then an event appended
/// after it opened, each with its position as the SSE id (what a browser resumes from).
#[tokio::test]
async fn the_tail_streams_an_event_appended_after_it_opened() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let admin = node.admin.expect("the node has an admin port");
    let mut client = node.client().await;
    chain(&mut client).await;

    let mut tail = Tail::open(admin, "?from=3").expect("the tail opens");
    tail.wait_for("id: 4\n");
    assert!(tail.seen.contains("id: 3\n"), "{}", tail.seen);
    assert!(!tail.seen.contains("id: 2\n"), "{}", tail.seen);
    append(&mut client, vec![event("acme", "order-late", "OrderNoted")]).await;
    tail.wait_for("\"entity\":\"order-late\"");
    assert!(tail.seen.contains("event: event\nid: 5\n"), "{}", tail.seen);
}

/// At most `CONSOLE_STREAMS_MAX` tails are open: one more is 429 naming the bound, and a
/// closed tail's slot comes back.
#[tokio::test]
async fn tails_beyond_the_limit_are_refused_until_one_closes() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let admin = node.admin.expect("the node has an admin port");

    let mut tails: Vec<Tail> = (0..CONSOLE_STREAMS_MAX)
        .map(|_| Tail::open(admin, "").expect("a tail within the limit opens"))
        .collect();
    let (status, body) = match Tail::open(admin, "") {
        Ok(_) => panic!("a tail over CONSOLE_STREAMS_MAX opened"),
        Err(refusal) => refusal,
    };
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("CONSOLE_STREAMS_MAX"), "{body}");

    drop(tails.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Tail::open(admin, "") {
            Ok(_) => break,
            Err((429, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(refusal) => panic!("a closed tail's slot did not come back: {refusal:?}"),
        }
    }
}

/// Requests that stall mid-body hold console slots, never the probes: with more stalled
/// receipts than `ADMIN_REQUESTS_MAX`, `/healthz`, `/readyz` and `/metrics` still answer. A
/// request addressed to a host name (a DNS-rebinding page) is refused; an empty receipt
/// verifies nothing and is refused.
#[tokio::test]
async fn stalled_readers_leave_the_probes_and_names_are_refused() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let admin = node.admin.expect("admin");
    let stalled: Vec<std::net::TcpStream> = (0..causeway_server::limits::ADMIN_REQUESTS_MAX + 6)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(admin).expect("connect");
            write!(
                stream,
                "POST /api/verify HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{"
            )
            .expect("send a partial body");
            stream
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let started = Instant::now();
        let (status, _) = http_get(admin, probe);
        assert_eq!(status, 200, "{probe}");
        assert!(started.elapsed() < Duration::from_secs(5), "{probe} waited");
    }
    drop(stalled);

    let mut stream = std::net::TcpStream::connect(admin).expect("connect");
    write!(
        stream,
        "GET /api/state HTTP/1.1\r\nHost: attacker.example:7421\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 421"), "{response}");

    let empty = json!({"events": [], "gates": [], "digest": hex(&[0; 32]), "signature": "", "signature_key_id": ""});
    let (status, body) = http_post(admin, "/api/verify", empty.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    let verdict: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(verdict["valid"], false, "{verdict}");
}

/// A page stops short of `CONSOLE_RESPONSE_BYTES_MAX` however its payloads escape (a control
/// character is six bytes of JSON), says so, and names where to go on.
#[tokio::test]
async fn pages_stay_within_the_response_bound() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let admin = node.admin.expect("admin");
    let mut client = node.client().await;
    let n_events = 30;
    for _ in 0..n_events {
        let escaping = pb::NewEvent {
            payload: vec![1u8; 64 * 1024],
            content_type: "text/plain".to_string(),
            ..event("big", "e1", "Blob")
        };
        append(&mut client, vec![escaping]).await;
    }
    let bound = causeway_server::limits::CONSOLE_RESPONSE_BYTES_MAX;
    for path in [
        "/api/entity?scope=big&entity=e1&limit=500",
        "/api/events?limit=500",
    ] {
        let (status, body) = http_get(admin, path);
        assert_eq!(status, 200, "{path}");
        assert!(body.len() <= bound, "{path}: {} bytes", body.len());
        let page: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(page["truncated"], true, "{path}");
        let shown = page["events"].as_array().expect("events").len();
        assert!(shown > 0 && shown < n_events, "{path}: {shown} events");
    }
    let page = ok_json(admin, "/api/events?limit=500&direction=forward&from=1");
    let shown = page["events"].as_array().expect("events").len() as u64;
    assert_eq!(
        page["next"],
        shown + 1,
        "the next page starts where this one stopped"
    );
}
