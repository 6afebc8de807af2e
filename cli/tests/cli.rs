//! The `causeway` CLI against a real `causewayd`: every test starts its own server on an
//! ephemeral port in a temporary data directory and drives the CLI binary as a user would,
//! checking what it prints and how it exits.
//!
//! `causewayd` is found next to this test's executable (`target/debug/causewayd`); it is built
//! there by `cargo test --workspace`. The server signs receipts with the fixed secret
//! [`SIGNING_SECRET_HEX`], so offline verification can check signatures with its public key.
//! Every child process is killed when its guard drops, and every wait has a deadline, so a hung
//! server or CLI fails the test instead of hanging it.

mod common;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Run, causewayd, finish, line_channel, read_all};

/// The servers' receipt signing secret: 32 bytes of 7, as in the client's golden tests.
const SIGNING_SECRET_HEX: &str = "0707070707070707070707070707070707070707070707070707070707070707";
/// The public key of [`SIGNING_SECRET_HEX`].
const PUBLIC_KEY_HEX: &str = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c";
/// How long a server may take to print its address, or a CLI command to finish.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running `causewayd`, killed on drop.
struct Server {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra flags.
    fn start_with(extra: &[&str]) -> Server {
        let binary = causewayd();
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let key_path = dir.path().join("receipt.key");
        std::fs::write(&key_path, format!("{SIGNING_SECRET_HEX}\n")).expect("write the key");
        let stderr = std::fs::File::create(dir.path().join("server.log")).expect("create a log");
        let mut child = Command::new(&binary)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
            .arg("--signing-key")
            .arg(&key_path)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let lines = line_channel(child.stdout.take().expect("stdout is piped"));
        let first = match lines.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(err) => {
                let _ = child.kill();
                let log =
                    std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
                panic!("causewayd printed no address ({err}); its log:\n{log}");
            }
        };
        let address = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from causewayd: {first:?}"))
            .trim()
            .to_string();
        Server {
            child,
            address,
            dir,
        }
    }

    /// Runs `causeway` against this server with `args`, stdin empty.
    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    /// Runs `causeway` against this server, feeding `stdin` when given.
    fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        let server = format!("http://{}", self.address);
        let mut all_args = vec!["--server", server.as_str()];
        all_args.extend_from_slice(args);
        run_cli(&all_args, stdin)
    }

    /// Runs a command that must succeed and print JSON, and returns the JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut all_args = vec!["--output", "json"];
        all_args.extend_from_slice(args);
        let run = self.run(&all_args);
        run.assert_success();
        serde_json::from_str(&run.stdout).unwrap_or_else(|err| {
            panic!(
                "`{}` printed no JSON ({err}):\n{}",
                args.join(" "),
                run.stdout
            )
        })
    }

    /// Appends one event with a JSON payload and returns its receipt.
    /// Sends each append through the Rust client, for what the CLI cannot append (several
    /// events at once, payloads of megabytes).
    fn append_through_client(&self, appends: Vec<causeway_client::AppendBuilder>) {
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        runtime.block_on(async {
            let client = causeway_client::Client::connect(&format!("http://{}", self.address))
                .await
                .expect("connect");
            for append in appends {
                client.append(append).await.expect("append");
            }
        });
    }

    fn append(&self, scope: &str, entity: &str, event_type: &str, extra: &[&str]) -> Value {
        let mut args = vec!["append", scope, entity, event_type];
        args.extend_from_slice(extra);
        self.json(&args)
    }

    /// Starts `causeway` against this server with stdout and stderr piped, without waiting.
    fn spawn(&self, args: &[&str]) -> KillOnDrop {
        let child = Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args(["--server", &format!("http://{}", self.address)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the causeway binary");
        KillOnDrop(child)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn assert_success(&self) {
        assert!(
            self.success,
            "`causeway {}` failed:\nstdout: {}\nstderr: {}",
            self.args, self.stdout, self.stderr
        );
    }

    /// Asserts the run failed with a one-line error on stderr, and returns that line.
    fn assert_failure(&self) -> &str {
        assert!(
            !self.success,
            "`causeway {}` should have failed; stdout: {}",
            self.args, self.stdout
        );
        let line = self.stderr.trim_end();
        assert!(line.starts_with("error: "), "stderr: {line:?}");
        assert_eq!(line.lines().count(), 1, "one line, got {line:?}");
        line
    }
}

/// Runs the CLI to completion (or the deadline) and collects its output.
fn run_cli(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the causeway binary");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(input).expect("write stdin");
    }
    finish(child, args, DEADLINE)
}

/// Waits for a line that contains `needle`, returning the lines seen up to and including it.
fn wait_for_line(lines: &Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(RecvTimeoutError::Timeout) => panic!("no line with {needle:?}; saw {seen:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the output ended before a line with {needle:?}; saw {seen:?}")
            }
        }
    }
}

fn str_of<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

fn u64_of(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer at {pointer} in {value}"))
}

#[test]
fn append_get_read_and_head_round_trip() {
    let server = Server::start();
    let first = server.append(
        "acme",
        "order-1",
        "OrderPlaced",
        &[
            "--data",
            r#"{"total":12}"#,
            "--tag",
            "customer:42",
            "--meta",
            "source=web",
        ],
    );
    assert_eq!(u64_of(&first, "/events/0/position"), 1);
    assert_eq!(u64_of(&first, "/events/0/version"), 1);
    assert_eq!(
        str_of(&first, "/signature").len(),
        128,
        "receipts are signed"
    );
    let id = str_of(&first, "/events/0/id").to_string();

    // The payload from a file and from stdin.
    let payload_path = server.path("paid.json");
    std::fs::write(&payload_path, br#"{"amount":12}"#).expect("write the payload");
    let payload_arg = payload_path.to_string_lossy().to_string();
    server.append("acme", "order-1", "OrderPaid", &["--file", &payload_arg]);
    let shipped = server.run_with_stdin(
        &[
            "append",
            "acme",
            "order-1",
            "OrderShipped",
            "--file",
            "-",
            "--content-type",
            "text/plain",
        ],
        Some(b"by boat"),
    );
    shipped.assert_success();
    assert!(
        shipped.stdout.starts_with("POSITION"),
        "a table by default: {}",
        shipped.stdout
    );
    server.append("acme", "order-2", "OrderPlaced", &["--data", "{}"]);

    let event = server.json(&["get", &id]);
    assert_eq!(str_of(&event, "/id"), id);
    assert_eq!(str_of(&event, "/type"), "OrderPlaced");
    assert_eq!(str_of(&event, "/payload"), r#"{"total":12}"#);
    assert_eq!(
        str_of(&event, "/content_type"),
        "application/json",
        "detected JSON"
    );
    assert_eq!(str_of(&event, "/metadata/source"), "web");
    assert_eq!(event["tags"], serde_json::json!(["customer:42"]));
    assert_eq!(str_of(&event, "/hash"), str_of(&first, "/events/0/hash"));
    let table = server.run(&["get", &id]);
    table.assert_success();
    assert!(table.stdout.contains("customer:42"), "{}", table.stdout);

    let entity = server.json(&["read", "entity", "acme", "order-1"]);
    let types: Vec<&str> = entity["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["OrderPlaced", "OrderPaid", "OrderShipped"]);
    let shipped_event = &entity["events"][2];
    assert_eq!(str_of(shipped_event, "/payload"), "by boat");
    assert_eq!(str_of(shipped_event, "/content_type"), "text/plain");
    assert_eq!(
        str_of(&entity, "/events/1/content_type"),
        "application/json"
    );

    let last = server.json(&[
        "read",
        "entity",
        "acme",
        "order-1",
        "--backward",
        "--limit",
        "1",
    ]);
    assert_eq!(str_of(&last, "/events/0/type"), "OrderShipped");
    assert_eq!(last["events"].as_array().map(Vec::len), Some(1));

    let placed = server.json(&["read", "log", "--type", "OrderPlaced"]);
    let positions: Vec<u64> = placed["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| event["position"].as_u64().expect("position"))
        .collect();
    assert_eq!(positions, [1, 4]);
    assert_eq!(placed["end"], true);
    let tagged = server.json(&["read", "log", "--tag", "customer:42", "--scope", "acme"]);
    assert_eq!(tagged["events"].as_array().map(Vec::len), Some(1));
    let page = server.json(&["read", "log", "--limit", "2"]);
    assert_eq!(page["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(u64_of(&page, "/next_position"), 3);
    assert_eq!(page["end"], false);
    let by_prefix = server.run(&["read", "log", "--prefix", "order-2"]);
    by_prefix.assert_success();
    assert_eq!(
        by_prefix.stdout.lines().count(),
        2,
        "header and one row: {}",
        by_prefix.stdout
    );

    let head = server.json(&["head"]);
    assert_eq!(u64_of(&head, "/position"), 4);
    assert_eq!(str_of(&head, "/digest").len(), 64);
}

#[test]
fn read_log_with_a_limit_inside_an_append_resumes_where_it_stopped() {
    // A forward page of the server holds the whole append of its last event: asked for 2
    // events of a 5-event append, it answers all 5. `--limit 2` prints 2, so where to go on
    // must be the third, not the server's position after the append, or 3 to 5 are skipped.
    let server = Server::start();
    let mut append = causeway_client::AppendBuilder::new();
    for n in 1..=5 {
        append = append.event(
            causeway_client::EventBuilder::new("acme", "order-1", "Line").payload(format!("{n}")),
        );
    }
    server.append_through_client(vec![append]);
    let mut positions = Vec::new();
    let mut from = 1;
    loop {
        let page = server.json(&["read", "log", "--from", &from.to_string(), "--limit", "2"]);
        let events = page["events"].as_array().expect("events");
        assert!(events.len() <= 2, "--limit 2 printed {}", events.len());
        positions.extend(events.iter().map(|event| u64_of(event, "/position")));
        if page["end"] == true {
            break;
        }
        from = u64_of(&page, "/next_position");
    }
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    let table = server.run(&["read", "log", "--limit", "2"]);
    assert!(
        table.stderr.contains("(more: --from 3)"),
        "{}",
        table.stderr
    );
}

#[test]
fn read_entity_follows_pages_the_server_cut_by_size() {
    // The server stops an answer near 4 MiB: three events of 2 MiB come back one or two at a
    // time. `read entity` shows all of them, or says where to go on when --limit stops it.
    let server = Server::start();
    let blob =
        causeway_client::EventBuilder::new("acme", "blob-1", "Blob")
            .payload(vec![b'b'; 2 * 1024 * 1024]);
    server.append_through_client(vec![
        causeway_client::AppendBuilder::new()
            .event(blob.clone());
        3
    ]);
    let versions = |page: &Value| -> Vec<u64> {
        page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|event| u64_of(event, "/version"))
            .collect()
    };
    let all = server.json(&["read", "entity", "acme", "blob-1"]);
    assert_eq!(versions(&all), [1, 2, 3]);
    assert_eq!(all["end"], true);
    let backward = server.json(&["read", "entity", "acme", "blob-1", "--backward"]);
    assert_eq!(versions(&backward), [3, 2, 1]);
    let first_two = server.json(&["read", "entity", "acme", "blob-1", "--limit", "2"]);
    assert_eq!(versions(&first_two), [1, 2]);
    assert_eq!(
        (u64_of(&first_two, "/next_version"), &first_two["end"]),
        (3, &Value::Bool(false))
    );
    let table = server.run(&["read", "entity", "acme", "blob-1", "--limit", "2"]);
    assert!(
        table.stderr.contains("(more: --from 3)"),
        "{}",
        table.stderr
    );
    for read in [&["read", "entity", "acme", "blob-1"][..], &["read", "log"]] {
        let args = [read, &["--limit", "0"]].concat();
        let refused = server.run(&args);
        assert!(
            refused.assert_failure().contains("INVALID_ARGUMENT"),
            "{args:?}"
        );
    }
}

#[test]
fn conditions_refuse_with_a_clear_error_and_idempotent_retries_return_the_receipt() {
    let server = Server::start();
    server.append("acme", "order-1", "OrderPlaced", &["--expect", "no-stream"]);
    let conflict = server.run(&[
        "append",
        "acme",
        "order-1",
        "OrderPlaced",
        "--expect",
        "no-stream",
    ]);
    let line = conflict.assert_failure();
    assert!(line.contains("version conflict"), "{line}");
    assert!(line.contains("order-1"), "{line}");
    server.append("acme", "order-1", "OrderPaid", &["--expect", "1"]);
    let stale = server.run(&["append", "acme", "order-1", "OrderPaid", "--expect", "1"]);
    stale.assert_failure();

    let first = server.append(
        "acme",
        "order-2",
        "OrderPlaced",
        &["--data", "a", "--idempotency-key", "k1"],
    );
    let retry = server.append(
        "acme",
        "order-2",
        "OrderPlaced",
        &["--data", "a", "--idempotency-key", "k1"],
    );
    assert_eq!(first, retry, "a retry returns the original receipt");
    let reused = server.run(&[
        "append",
        "acme",
        "order-2",
        "OrderPlaced",
        "--data",
        "b",
        "--idempotency-key",
        "k1",
    ]);
    let line = reused.assert_failure();
    assert!(line.contains("idempotency"), "{line}");
    assert_eq!(
        u64_of(&server.json(&["head"]), "/position"),
        3,
        "refusals wrote nothing"
    );
}

#[test]
fn gates_register_deny_dry_run_list_and_remove() {
    let server = Server::start();
    let registered = server.json(&[
        "gates",
        "register",
        "--name",
        "one-email",
        "--scope",
        "acme",
        "--unique-tag",
        "email:",
    ]);
    let gate_version = u64_of(&registered, "/events/0/position");
    server.json(&["gates", "register", "--name", "small", "--max-payload", "8"]);
    server.json(&[
        "gates",
        "register",
        "--name",
        "rules",
        "--cel",
        "event.type != 'Forbidden'",
    ]);

    let listed = server.json(&["gates", "list"]);
    let one_email = listed["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .find(|gate| gate["name"] == "one-email")
        .unwrap_or_else(|| panic!("one-email is listed: {listed}"));
    assert_eq!(u64_of(one_email, "/version"), gate_version);
    assert_eq!(
        one_email["rule"],
        serde_json::json!({"kind": "unique_tag", "prefix": "email:"})
    );
    let table = server.run(&["gates", "list"]);
    table.assert_success();
    assert!(
        table.stdout.contains("unique tag email:*"),
        "{}",
        table.stdout
    );

    let receipt = server.append("acme", "user-1", "UserRegistered", &["--tag", "email:a@x"]);
    let passed: Vec<&str> = receipt["gates"]
        .as_array()
        .expect("gates")
        .iter()
        .map(|gate| gate["name"].as_str().expect("name"))
        .collect();
    assert!(passed.contains(&"one-email"), "{receipt}");

    let dry = server.run(&[
        "gates",
        "dry-run",
        "acme",
        "user-2",
        "UserRegistered",
        "--tag",
        "email:a@x",
    ]);
    let line = dry.assert_failure();
    assert!(line.contains("one-email"), "{line}");
    assert!(line.contains("TAG_TAKEN"), "{line}");
    let denied = server.run(&[
        "append",
        "acme",
        "user-2",
        "UserRegistered",
        "--tag",
        "email:a@x",
    ]);
    let line = denied.assert_failure();
    assert!(
        line.contains("denied by gate one-email (TAG_TAKEN)"),
        "{line}"
    );
    assert!(line.contains("email:a@x"), "the facts are shown: {line}");
    let too_big = server.run(&["append", "acme", "doc-1", "Noted", "--data", "123456789"]);
    assert!(too_big.assert_failure().contains("TOO_LARGE"));
    let forbidden = server.run(&["append", "acme", "doc-1", "Forbidden"]);
    assert!(forbidden.assert_failure().contains("CEL_FALSE"));
    let bad_cel = server.run(&[
        "gates",
        "register",
        "--name",
        "broken",
        "--cel",
        "event.type ==",
    ]);
    bad_cel.assert_failure();

    let ok_dry = server.json(&[
        "gates",
        "dry-run",
        "acme",
        "user-2",
        "UserRegistered",
        "--tag",
        "email:b@x",
    ]);
    assert_eq!(ok_dry["events"].as_array().map(Vec::len), Some(1));
    let head_before = u64_of(&server.json(&["head"]), "/position");

    server.json(&["gates", "remove", "one-email"]);
    let head_after = u64_of(&server.json(&["head"]), "/position");
    assert_eq!(
        head_after,
        head_before + 1,
        "a dry run writes nothing, a removal one event"
    );
    server.append("acme", "user-2", "UserRegistered", &["--tag", "email:a@x"]);
    let listed = server.json(&["gates", "list"]);
    assert!(
        listed["gates"]
            .as_array()
            .expect("gates")
            .iter()
            .all(|gate| gate["name"] != "one-email"),
        "{listed}"
    );
    server
        .run(&["gates", "remove", "one-email"])
        .assert_failure();
}

#[test]
fn graph_draws_trees_dot_and_json() {
    let server = Server::start();
    let placed = server.append("acme", "order-1", "OrderPlaced", &[]);
    let placed_id = str_of(&placed, "/events/0/id").to_string();
    let paid = server.append("acme", "order-1", "OrderPaid", &["--causation", &placed_id]);
    let paid_id = str_of(&paid, "/events/0/id").to_string();
    let shipped = server.append(
        "acme",
        "order-1",
        "OrderShipped",
        &["--causation", &paid_id],
    );
    let shipped_id = str_of(&shipped, "/events/0/id").to_string();

    let tree = server.run(&["graph", "descendants", &placed_id]);
    tree.assert_success();
    let lines: Vec<&str> = tree.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", tree.stdout);
    assert!(
        lines[0].starts_with("OrderPlaced acme/order-1 v1 #1"),
        "{}",
        tree.stdout
    );
    assert!(lines[1].starts_with("└─ OrderPaid"), "{}", tree.stdout);
    assert!(
        lines[2].starts_with("   └─ OrderShipped"),
        "{}",
        tree.stdout
    );

    let up = server.run(&["graph", "ancestors", &shipped_id, "--depth", "1"]);
    up.assert_success();
    assert!(up.stdout.starts_with("OrderShipped"), "{}", up.stdout);
    assert!(up.stdout.contains("└─ OrderPaid"), "{}", up.stdout);
    assert!(
        !up.stdout.contains("OrderPlaced"),
        "depth 1 stops at the parent: {}",
        up.stdout
    );

    let dot = server.run(&["graph", "correlation", &placed_id, "--format", "dot"]);
    dot.assert_success();
    assert!(
        dot.stdout.starts_with("digraph causeway {"),
        "{}",
        dot.stdout
    );
    assert!(
        dot.stdout
            .contains(&format!("\"{placed_id}\" -> \"{paid_id}\";")),
        "{}",
        dot.stdout
    );
    assert!(
        dot.stdout
            .contains(&format!("\"{paid_id}\" -> \"{shipped_id}\";")),
        "{}",
        dot.stdout
    );

    let graph = server.json(&["graph", "ancestors", &shipped_id]);
    assert_eq!(graph["nodes"].as_array().map(Vec::len), Some(3));
    assert_eq!(graph["edges"].as_array().map(Vec::len), Some(2));
    assert_eq!(graph["truncated"], false);

    let missing = server.run(&[
        "append",
        "acme",
        "order-1",
        "OrderRefunded",
        "--causation",
        "01890a5d-ac96-774b-bcce-b302099a8057",
    ]);
    assert!(missing.assert_failure().contains("CAUSATION_MISSING"));
    server.append(
        "acme",
        "order-1",
        "OrderRefunded",
        &[
            "--causation",
            "01890a5d-ac96-774b-bcce-b302099a8057",
            "--external-causation",
        ],
    );
}

#[test]
fn receipts_verify_on_the_server_and_offline_and_tampering_is_caught() {
    let server = Server::start();
    server.append(
        "acme",
        "order-1",
        "OrderPlaced",
        &["--data", r#"{"total":12}"#],
    );
    let receipt = server.append(
        "acme",
        "order-1",
        "OrderPaid",
        &[
            "--data", "paid", "--meta", "b=2", "--meta", "a=1", "--tag", "t1",
        ],
    );
    let receipt_path = server.path("receipt.json");
    std::fs::write(&receipt_path, receipt.to_string()).expect("write the receipt");
    let receipt_arg = receipt_path.to_string_lossy().to_string();

    let on_server = server.run(&["verify", &receipt_arg]);
    on_server.assert_success();
    assert_eq!(on_server.stdout.trim(), "valid");
    let from_stdin = server.run_with_stdin(
        &["--output", "json", "verify"],
        Some(receipt.to_string().as_bytes()),
    );
    from_stdin.assert_success();
    assert!(
        from_stdin.stdout.contains("\"valid\": true"),
        "{}",
        from_stdin.stdout
    );

    let id = str_of(&receipt, "/events/0/id").to_string();
    let event = server.json(&["get", &id]);
    let events_path = server.path("events.json");
    std::fs::write(&events_path, event.to_string()).expect("write the events");
    let events_arg = events_path.to_string_lossy().to_string();
    let offline = server.run(&[
        "verify",
        &receipt_arg,
        "--offline",
        "--events",
        &events_arg,
        "--public-key",
        PUBLIC_KEY_HEX,
    ]);
    offline.assert_success();
    assert_eq!(offline.stdout.trim(), "valid");
    let unkeyed = server.run(&["verify", &receipt_arg, "--offline", "--events", &events_arg]);
    unkeyed.assert_success();
    assert!(
        unkeyed.stdout.contains("signature was not checked"),
        "{}",
        unkeyed.stdout
    );

    // The offline check needs no server at all.
    let serverless = run_cli(
        &[
            "--server",
            "http://127.0.0.1:1",
            "verify",
            &receipt_arg,
            "--offline",
            "--events",
            &events_arg,
            "--public-key",
            PUBLIC_KEY_HEX,
        ],
        None,
    );
    serverless.assert_success();

    // A changed payload byte in the events, its text changed to match.
    let mut tampered_event = event.clone();
    tampered_event["payload_base64"] = Value::String("cGFpRA==".to_string()); // "paiD"
    tampered_event["payload"] = Value::String("paiD".to_string());
    let tampered_events_path = server.path("tampered-events.json");
    std::fs::write(&tampered_events_path, tampered_event.to_string()).expect("write");
    let tampered_events_arg = tampered_events_path.to_string_lossy().to_string();
    let caught = server.run(&[
        "verify",
        &receipt_arg,
        "--offline",
        "--events",
        &tampered_events_arg,
    ]);
    assert!(
        !caught.success,
        "tampered payload must fail: {}",
        caught.stdout
    );
    assert!(caught.stdout.contains("invalid"), "{}", caught.stdout);

    // The payload's text changed, its exact bytes left alone: the text shown is not what is
    // checked, so the events are refused.
    let mut edited_text = event.clone();
    edited_text["payload"] = Value::String("forged".to_string());
    let edited_path = server.path("edited-text-events.json");
    std::fs::write(&edited_path, edited_text.to_string()).expect("write");
    let edited_arg = edited_path.to_string_lossy().to_string();
    let refused = server.run(&["verify", &receipt_arg, "--offline", "--events", &edited_arg]);
    assert!(!refused.success, "edited payload text must fail");
    assert!(
        refused.stderr.contains("payload is not the payload"),
        "{}",
        refused.stderr
    );

    // A changed digest in the receipt: the signature no longer verifies, here or on the server.
    let mut forged = receipt.clone();
    let digest = str_of(&receipt, "/digest");
    let flipped = if digest.starts_with('0') { "1" } else { "0" };
    forged["digest"] = Value::String(format!("{flipped}{}", &digest[1..]));
    let forged_path = server.path("forged.json");
    std::fs::write(&forged_path, forged.to_string()).expect("write");
    let forged_arg = forged_path.to_string_lossy().to_string();
    let offline_forged = server.run(&[
        "verify",
        &forged_arg,
        "--offline",
        "--events",
        &events_arg,
        "--public-key",
        PUBLIC_KEY_HEX,
    ]);
    assert!(!offline_forged.success);
    assert!(
        offline_forged.stdout.contains("signature does not verify"),
        "{}",
        offline_forged.stdout
    );
    let server_forged = server.run(&["verify", &forged_arg]);
    assert!(
        !server_forged.success,
        "the server refuses it too: {}",
        server_forged.stdout
    );
    assert!(
        server_forged.stdout.starts_with("invalid"),
        "{}",
        server_forged.stdout
    );
    // Nobody reading the verdict does not make it a pass.
    let (unread, _) = run_with_closed_stdout(&server, &["verify", &forged_arg]);
    assert!(!unread.success(), "an unread invalid verdict: {unread}");
}

#[test]
fn tail_prints_history_then_live_events_until_killed() {
    let server = Server::start();
    let before = server.append("acme", "order-1", "OrderPlaced", &[]);
    let before_id = str_of(&before, "/events/0/id").to_string();

    let spawn_tail = |args: &[&str]| {
        let mut child = server.spawn(args);
        let stdout = line_channel(child.0.stdout.take().expect("stdout is piped"));
        let stderr = line_channel(child.0.stderr.take().expect("stderr is piped"));
        (child, stdout, stderr)
    };
    let (mut history_tail, history, _) = spawn_tail(&["--output", "json", "tail", "--from", "1"]);
    let (_live_tail, live, live_notes) = spawn_tail(&["tail", "--scope", "acme"]);

    let replayed = wait_for_line(&history, &before_id);
    let first: Value = serde_json::from_str(&replayed[replayed.len() - 1]).expect("a JSON line");
    assert_eq!(str_of(&first, "/type"), "OrderPlaced");
    wait_for_line(&live_notes, "caught up");

    let after = server.append("acme", "order-1", "OrderPaid", &["--data", "live!"]);
    let after_id = str_of(&after, "/events/0/id").to_string();
    server.append("other", "x", "Ignored", &[]);
    let after_ignored = server.append("acme", "order-2", "OrderPlaced", &[]);
    let last_id = str_of(&after_ignored, "/events/0/id").to_string();

    wait_for_line(&history, &after_id);
    let seen = wait_for_line(&live, &last_id);
    assert_eq!(
        seen.len(),
        2,
        "--now skips history and the filter skips scope other: {seen:?}"
    );
    assert!(
        seen[0].contains(&after_id) && seen[0].contains("live!"),
        "{seen:?}"
    );
    assert!(seen[0].starts_with("#2 "), "{seen:?}");

    // Ctrl-C ends a tail cleanly.
    let pid = history_tail.0.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -INT {pid}");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = history_tail.0.try_wait().expect("poll the tail") {
            break status;
        }
        assert!(started.elapsed() < DEADLINE, "tail ignored SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "Ctrl-C is a normal exit: {status}");
}

#[test]
fn errors_are_one_line_and_exit_nonzero() {
    let server = Server::start();
    let missing = server.run(&["get", "01890a5d-ac96-774b-bcce-b302099a8057"]);
    assert!(missing.assert_failure().contains("NOT_FOUND"));
    let bad_id = server.run(&["get", "not-a-uuid"]);
    assert!(bad_id.assert_failure().contains("INVALID_ARGUMENT"));
    let empty_scope = server.run(&["append", "", "e", "T"]);
    empty_scope.assert_failure();

    // A port nobody listens on: bind one, then drop the listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port();
    let unreachable = run_cli(&["--server", &format!("127.0.0.1:{port}"), "head"], None);
    let line = unreachable.assert_failure();
    assert!(line.contains("cannot connect to"), "{line}");
}

#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    // `causeway read log | head -1`: the reader goes away before the CLI writes. `print!` would
    // panic (status 101 and a message); a Unix tool ends quietly with status 0. `tail` would
    // otherwise follow forever, writing into nothing.
    let server = Server::start();
    for n in 0..3 {
        server.append(
            "acme",
            &format!("order-{n}"),
            "OrderPlaced",
            &["--data", "{}"],
        );
    }
    for command in [&["read", "log"][..], &["tail", "--from", "1"], &["head"]] {
        let (status, stderr) = run_with_closed_stdout(&server, command);
        assert!(
            status.success(),
            "`causeway {}`: {status}, stderr: {stderr}",
            command.join(" ")
        );
        assert_eq!(stderr, "", "`causeway {}`", command.join(" "));
    }
}

/// Runs `causeway` against `server` with its stdout closed before it can write, as a reader
/// that went away would leave it, and returns how it exited and what it printed on stderr.
fn run_with_closed_stdout(server: &Server, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = server.spawn(args);
    // Closed before the CLI has even connected to the server, so its first write fails.
    drop(child.0.stdout.take());
    let stderr = read_all(child.0.stderr.take().expect("stderr is piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("poll the CLI") {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "`causeway {}` kept running after its stdout closed",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, stderr.join().expect("stderr reader"))
}

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `backup` prints the position and digest it holds (the server's head and digest when nothing
/// is appended meanwhile), writes `BACKUP` with them, and refuses a directory that is not
/// empty without touching it.
#[test]
fn backup_prints_its_position_and_refuses_a_non_empty_directory() {
    let server = Server::start();
    for entity in ["order-1", "order-2", "order-3"] {
        server.append("acme", entity, "OrderPlaced", &["--data", "{\"total\":5}"]);
    }
    let head = server.json(&["head"]);
    let to = server.path("backup-1");
    let backup = server.json(&["backup", "--to", to.to_str().expect("a UTF-8 path")]);
    assert_eq!(u64_of(&backup, "/position"), 3);
    assert_eq!(str_of(&backup, "/digest"), str_of(&head, "/digest"));
    let backup_file = std::fs::read_to_string(to.join("BACKUP")).expect("BACKUP is written");
    assert!(backup_file.contains("position=3\n"), "{backup_file}");
    assert!(
        backup_file.contains(&format!("digest={}\n", str_of(&head, "/digest"))),
        "{backup_file}"
    );
    assert!(to.join("CHECKPOINT").is_file());
    assert!(to.join("events/00000000000000000001.seg").is_file());

    let taken = server.path("taken");
    std::fs::create_dir(&taken).expect("create a directory");
    std::fs::write(taken.join("keep.txt"), b"mine").expect("write a file");
    let refused = server.run(&["backup", "--to", taken.to_str().expect("a UTF-8 path")]);
    let line = refused.assert_failure();
    assert!(line.contains("is not empty"), "{line}");
    assert_eq!(
        std::fs::read(taken.join("keep.txt")).expect("still there"),
        b"mine"
    );
    let entries = std::fs::read_dir(&taken).expect("list").count();
    assert_eq!(entries, 1, "nothing was added to the refused directory");
}

/// `health` prints SERVING and exits 0 while the server serves; with the server gone it exits
/// non-zero, as a container health check needs. An unknown service is not SERVING either, and
/// the message names the services there are. The plaintext server called with https:// is
/// named as one that does not answer in TLS.
#[test]
fn health_exits_zero_only_when_serving() {
    let mut server = Server::start();
    let up = server.run(&["health"]);
    up.assert_success();
    assert_eq!(up.stdout.trim(), "SERVING");
    let api = server.run(&["health", "--service", "causeway.v1.EventStoreService"]);
    api.assert_success();
    assert_eq!(api.stdout.trim(), "SERVING");
    let unknown = server.run(&["health", "--service", "no.such.Service"]);
    let line = unknown.assert_failure();
    assert!(
        line.contains("\"no.such.Service\"") && line.contains("causeway.v1.EventStoreService"),
        "{line}"
    );

    let https = run_cli(
        &["--server", &format!("https://{}", server.address), "health"],
        None,
    );
    assert_eq!(https.code, Some(4), "{}", https.stderr);
    assert!(
        https.stderr.contains("does not answer in TLS") && https.stderr.contains("http://"),
        "{}",
        https.stderr
    );

    let _ = server.child.kill();
    let _ = server.child.wait();
    let down = server.run(&["health"]);
    let line = down.assert_failure();
    assert!(line.contains("cannot connect to"), "{line}");
}

/// Each failure class has its exit status (`causeway --help` lists them): 1 usage or invalid
/// input, 2 refused, 3 not found, 4 unavailable; help and success are 0.
#[test]
fn exit_statuses_follow_the_failure_class() {
    let mut server = Server::start();
    let help = run_cli(&["--help"], None);
    assert_eq!(help.code, Some(0), "{}", help.stderr);
    assert!(help.stdout.contains("Exit status"), "{}", help.stdout);
    let usage = run_cli(&["append", "--no-such-flag"], None);
    assert_eq!(usage.code, Some(1), "a usage error: {}", usage.stderr);
    let invalid = server.run(&["get", "not-a-uuid"]);
    assert_eq!(
        invalid.code,
        Some(1),
        "an invalid field: {}",
        invalid.stderr
    );
    let unreadable = server.run(&["verify", "no-such-receipt.json"]);
    assert_eq!(
        unreadable.code,
        Some(1),
        "an unreadable file: {}",
        unreadable.stderr
    );

    server.json(&["gates", "register", "--name", "small", "--max-payload", "8"]);
    let denied = server.run(&[
        "append",
        "acme",
        "o-1",
        "OrderPlaced",
        "--data",
        "{\"total\":100000}",
    ]);
    assert_eq!(denied.code, Some(2), "denied: {}", denied.stderr);
    server
        .run(&["append", "acme", "o-2", "OrderPlaced"])
        .assert_success();
    let conflict = server.run(&[
        "append",
        "acme",
        "o-2",
        "OrderPaid",
        "--expect",
        "no-stream",
    ]);
    assert_eq!(conflict.code, Some(2), "a conflict: {}", conflict.stderr);

    let missing = server.run(&["get", "01890a5d-ac96-774b-bcce-b302099a8057"]);
    assert_eq!(missing.code, Some(3), "not found: {}", missing.stderr);
    let unknown_service = server.run(&["health", "--service", "no.such.Service"]);
    assert_eq!(unknown_service.code, Some(3), "{}", unknown_service.stderr);

    let _ = server.child.kill();
    let _ = server.child.wait();
    let down = server.run(&["head"]);
    assert_eq!(down.code, Some(4), "unavailable: {}", down.stderr);
    let unhealthy = server.run(&["health"]);
    assert_eq!(unhealthy.code, Some(4), "{}", unhealthy.stderr);
}

/// `completions` prints a script for the shell that names the commands; `--help` lists the
/// global options apart from a command's own.
#[test]
fn completions_and_help_list_what_there_is() {
    let bash = run_cli(&["completions", "bash"], None);
    bash.assert_success();
    assert!(bash.stdout.contains("complete -F"), "{}", bash.stdout);
    assert!(bash.stdout.contains("backup"), "commands are completed");
    let zsh = run_cli(&["completions", "zsh"], None);
    zsh.assert_success();
    assert!(
        zsh.stdout.starts_with("#compdef causeway"),
        "{}",
        zsh.stdout
    );
    let help = run_cli(&["append", "--help"], None);
    help.assert_success();
    let (own, global) = help
        .stdout
        .split_once("Global options:")
        .expect("a heading for the global options");
    assert!(own.contains("--expect"), "append's own flags first: {own}");
    assert!(global.contains("--server"), "{global}");
    assert!(!own.contains("--server"), "--server is global: {own}");
}

/// `causeway auth hash-token` prints the hash the policy file stores; against a server with
/// that file, a command without a token is refused (exit 2) and one with `--token` or
/// `CAUSEWAY_TOKEN` is served, streaming `tail` included. Catches a token left off a call.
#[test]
fn a_token_from_the_flag_or_the_environment_authenticates() {
    let hashed = run_cli(&["auth", "hash-token"], Some(b"cli-s3cret\n"));
    hashed.assert_success();
    let hash = hashed.stdout.trim().to_string();
    assert_eq!(hash, blake3::hash(b"cli-s3cret").to_hex().to_string());

    let policy_dir = tempfile::tempdir().expect("a temporary directory");
    let policy = policy_dir.path().join("auth.toml");
    std::fs::write(
        &policy,
        format!(
            "[[principals]]\nname = \"cli\"\ntoken_hashes = [\"{hash}\"]\n\
             permissions = [{{ scopes = [\"cli-*\"], actions = [\"append\", \"read\", \"subscribe\"] }}]\n"
        ),
    )
    .expect("write the policy");
    let server = Server::start_with(&["--auth-file", policy.to_str().expect("utf-8")]);

    let refused = server.run(&["head"]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("credentials"), "{}", refused.stderr);
    let appended = server.run(&["--token", "cli-s3cret", "append", "cli-a", "e-1", "Made"]);
    appended.assert_success();
    let denied = server.run(&["--token", "cli-s3cret", "append", "other", "e-1", "Made"]);
    assert_eq!(denied.code, Some(2), "{}", denied.stderr);

    let mut tail = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["--server", &format!("http://{}", server.address)])
        .args(["--output", "json", "tail", "--from", "1"])
        .env("CAUSEWAY_TOKEN", "cli-s3cret")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the causeway binary");
    let lines = line_channel(tail.stdout.take().expect("stdout is piped"));
    let seen = wait_for_line(&lines, "e-1");
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(seen.iter().any(|line| line.contains("cli-a")), "{seen:?}");
}

/// A listener that answers every connection with an HTTP/1 response and keeps it open, as a
/// web server does: a web server at an address listed by mistake. Runs until the test process
/// ends.
fn http1_listener() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let address = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            open.push(stream);
        }
    });
    address
}

/// A plain HTTP/2 server that answers every request 404 with an HTML page: a web server that
/// speaks HTTP/2 at an address listed by mistake. Runs until the test process ends.
fn http2_web_listener() -> std::net::SocketAddr {
    use tonic::codegen::{Bytes, http};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let address = listener.local_addr().expect("its address");
    listener
        .set_nonblocking(true)
        .expect("a nonblocking listener");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut connection) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((_request, mut respond))) = connection.accept().await {
                        let response = http::Response::builder()
                            .status(404)
                            .header("content-type", "text/html")
                            .body(())
                            .expect("a response");
                        if let Ok(mut body) = respond.send_response(response, false) {
                            let _ = body.send_data(Bytes::from_static(b"<html>no</html>"), true);
                        }
                    }
                });
            }
        });
    });
    address
}

/// Appends one event to an empty store through `servers` (a `--server` list) and checks, by
/// a read through the same list, that it went through once.
fn append_once_through(servers: &str) {
    let written = run_cli(
        &[
            "--server", servers, "append", "acme", "order-9", "Noted", "--data", "{}",
        ],
        None,
    );
    written.assert_success();
    let head = run_cli(&["--output", "json", "--server", servers, "head"], None);
    head.assert_success();
    let head: Value = serde_json::from_str(&head.stdout).expect("head prints JSON");
    assert_eq!(
        u64_of(&head, "/position"),
        1,
        "the append went through once"
    );
}

/// A listed address where no Causeway server listens (a web server, over HTTP/1 or HTTP/2) is
/// passed over for the next, and the write is made once there; only when every listed address is such, the
/// error stands, and at once. Catches a client that stops at the first address that speaks
/// another protocol, as it does for TLS settings every address would refuse alike.
#[test]
fn a_listed_address_that_is_no_causeway_server_is_passed_over_for_the_next() {
    let server = Server::start();
    let web = http1_listener();
    let web2 = http2_web_listener();
    append_once_through(&format!(
        "http://{web},http://{web2},http://{}",
        server.address
    ));

    let other_web = http1_listener();
    let started = std::time::Instant::now();
    let refused = run_cli(
        &[
            "--server",
            &format!("http://{web},http://{other_web}"),
            "head",
        ],
        None,
    );
    assert!(!refused.success, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("does not speak plaintext gRPC"),
        "{}",
        refused.stderr
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "every address failed alike: no waiting ({:?})",
        started.elapsed()
    );

    // `health` asks as a read does, so it says the same, with the same exit status, not the
    // transport's bare "broken pipe" as a server failure.
    let health = run_cli(&["--server", &format!("http://{web}"), "health"], None);
    assert_eq!(health.code, Some(4), "{}", health.stderr);
    assert!(
        health.stderr.contains("does not speak plaintext gRPC"),
        "{}",
        health.stderr
    );
}

/// A lone server that accepts connections and never answers (a frozen process: the kernel
/// accepts for it) gets no write: the CLI says it did not answer a health check, which tells
/// a retrying script the write was not made, and gives up within the follow deadline.
/// Catches a client that sends the write into the silence and, after HTTP/2's keepalive
/// (30 s or more), can only say its outcome is unknown.
#[test]
fn a_lone_server_that_never_answers_gets_no_write_and_the_cli_says_so() {
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let frozen_address = frozen.local_addr().expect("its address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in frozen.incoming() {
            let Ok(stream) = stream else { return };
            held.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let write = run_cli(
        &[
            "--server",
            &format!("http://{frozen_address}"),
            "append",
            "acme",
            "order-9",
            "Noted",
            "--data",
            "{}",
        ],
        None,
    );
    let waited = started.elapsed();
    assert!(!write.success, "{}", write.stdout);
    assert!(
        write.stderr.contains("did not answer a health check"),
        "{}",
        write.stderr
    );
    assert!(!write.stderr.contains("unknown"), "{}", write.stderr);
    assert!(
        waited < std::time::Duration::from_secs(20),
        "gave up within the follow deadline ({waited:?})"
    );
}

/// A listed server that accepts connections and never answers (a frozen process: the kernel
/// accepts for it) is passed over for the next address, for reads and writes alike. Catches
/// a client that sends its call there and waits for HTTP/2's keepalive (40 s) to give up.
#[test]
fn a_listed_server_that_never_answers_is_passed_over_for_the_next() {
    let server = Server::start();
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let frozen_address = frozen.local_addr().expect("its address");
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in frozen.incoming() {
            let Ok(stream) = stream else { return held };
            held.push(stream);
        }
        held
    });
    append_once_through(&format!(
        "http://{frozen_address},http://{}",
        server.address
    ));
    assert!(!held.is_finished(), "the frozen port keeps its connections");
}
