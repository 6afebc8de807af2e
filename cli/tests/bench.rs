//! `causeway bench` against a real `causewayd`: the tool must count what the server refused as
//! errors with their gRPC code, never as successes, and must fail a run whose head did not
//! move by exactly the acknowledged events. Every test starts its own server on an ephemeral
//! port in a temporary directory and runs the CLI binary with small counts; none asserts speed.
//!
//! `causewayd` is found next to this test's executable (`target/debug/causewayd`), where
//! `cargo test --workspace` builds it. Child processes are killed when their guards drop, and
//! every wait has a deadline, so a hung server or bench fails the test instead of hanging it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::{Run, causewayd, finish, line_channel};

/// How long a server may take to print its address, or a CLI run to finish.
const DEADLINE: Duration = Duration::from_secs(60);
/// `bench read` streamed for one second from position 1, passes over and over.
const STREAMED_READ_FOR_1S: [&str; 8] = [
    "read",
    "--read-via",
    "stream",
    "--duration",
    "1s",
    "--warmup",
    "0s",
    "--quiet",
];

/// A running `causewayd`, killed on drop.
struct Server {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let binary = causewayd();
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("create a log");
        let mut child = Command::new(&binary)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let lines = line_channel(child.stdout.take().expect("stdout is piped"));
        let first = lines.recv_timeout(DEADLINE).unwrap_or_else(|err| {
            let _ = child.kill();
            panic!("causewayd printed no address: {err}")
        });
        let address = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from causewayd: {first:?}"))
            .trim()
            .to_string();
        Server {
            child,
            address,
            _dir: dir,
        }
    }

    /// `causeway --server ADDR ARGS...`, not yet started.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_causeway"));
        command
            .args(["--server", &format!("http://{}", self.address)])
            .args(args)
            // A token in the caller's environment would make every bench refuse to run.
            .env_remove("CAUSEWAY_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs the CLI to completion.
    fn run(&self, args: &[&str]) -> Run {
        let child = self.command(args).spawn().expect("start causeway");
        finish(child, args, DEADLINE)
    }

    /// Runs a bench with `--output json` and returns the run and its report.
    fn bench(&self, args: &[&str]) -> (Run, Value) {
        let mut all_args = vec!["--output", "json", "bench"];
        all_args.extend_from_slice(args);
        let run = self.run(&all_args);
        let report = run.report();
        (run, report)
    }

    /// The head position, through `causeway head`.
    fn head(&self) -> u64 {
        let run = self.run(&["--output", "json", "head"]);
        assert!(run.success, "head failed: {}", run.stderr);
        let value: Value = serde_json::from_str(&run.stdout).expect("head prints JSON");
        u64_at(&value, "/position")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    /// The JSON report on stdout.
    fn report(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "`causeway {}` printed no JSON ({err}):\nstdout: {}\nstderr: {}",
                self.args, self.stdout, self.stderr
            )
        })
    }
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer at {pointer} in {value}"))
}

fn f64_at(value: &Value, pointer: &str) -> f64 {
    value
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {value}"))
}

fn bool_at(value: &Value, pointer: &str) -> bool {
    value
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("no boolean at {pointer} in {value}"))
}

/// Asserts p50 <= p90 <= p99 <= p99.9 <= max, all positive, at `pointer`.
fn assert_latency(report: &Value, pointer: &str) {
    let quantiles: Vec<f64> = ["p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|name| f64_at(report, &format!("{pointer}/{name}")))
        .collect();
    assert!(quantiles[0] > 0.0, "{pointer}: {quantiles:?}");
    assert!(
        quantiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "{pointer} must not decrease: {quantiles:?}"
    );
}

#[test]
fn a_conditional_append_run_with_gates_reports_json_and_passes_the_head_check() {
    let server = Server::start();
    let (run, report) = server.bench(&[
        "append",
        "--requests",
        "300",
        "--connections",
        "2",
        "--in-flight",
        "4",
        "--entities",
        "20",
        "--expect",
        "version",
        "--gates",
        "--ceiling",
        "300ms",
        "--quiet",
    ]);
    assert!(run.success, "the run failed: {}", run.stderr);
    assert_eq!(report["workload"], "append");
    assert_eq!(u64_at(&report, "/requests/ok"), 300);
    assert_eq!(u64_at(&report, "/requests/failed"), 0);
    assert_eq!(u64_at(&report, "/events"), 300);
    assert!(f64_at(&report, "/requests_per_s") > 0.0);
    assert!(f64_at(&report, "/events_per_s") > 0.0);
    assert_latency(&report, "/latency_ms");
    assert_eq!(report["errors"], serde_json::json!({}));
    assert!(bool_at(&report, "/head_check/ok"));
    assert_eq!(u64_at(&report, "/head_check/moved"), 300);
    assert_eq!(u64_at(&report, "/head_check/acknowledged_events"), 300);
    assert!(f64_at(&report, "/ceiling/requests_per_s") > 0.0);
    assert!(f64_at(&report, "/ceiling/ratio") > 0.0);
    assert!(bool_at(&report, "/ok"));
    assert_eq!(report["gates"].as_array().map(Vec::len), Some(3));

    // Three gate registrations before the run and three removals after it are in the log too,
    // and no gate is left behind.
    assert_eq!(server.head(), 3 + 300 + 3);
    let gates = server.run(&["--output", "json", "gates", "list"]);
    assert!(gates.success, "{}", gates.stderr);
    assert_eq!(gates.report()["gates"], serde_json::json!([]));
}

/// Appends sent as messages of `AppendStream`s, one per worker and one shared by a
/// connection's workers: every acknowledged append is in the log (the head check), and
/// refusals, which come as answers in the stream, are counted by code and reason as a unary
/// call's are, with the stream going on after each. Catches a streamed refusal counted as a
/// success, one that ends the stream, and a shared stream's answer given to the wrong worker
/// (conditional appends then conflict).
#[test]
fn appends_over_streams_pass_the_head_check_and_count_refusals_by_code() {
    let server = Server::start();
    let mut head = 0;
    for via in ["stream", "pipeline"] {
        let (run, report) = server.bench(&[
            "append",
            "--append-via",
            via,
            "--requests",
            "400",
            "--connections",
            "2",
            "--in-flight",
            "8",
            "--entities",
            "20",
            "--expect",
            "version",
            "--quiet",
        ]);
        assert!(run.success, "{via}: the run failed: {}", run.stderr);
        assert_eq!(report["settings"]["append_via"], via);
        assert_eq!(u64_at(&report, "/requests/ok"), 400, "{via}");
        assert_eq!(u64_at(&report, "/head_check/moved"), 400, "{via}");
        assert!(bool_at(&report, "/head_check/ok"), "{via}");
        assert_latency(&report, "/latency_ms");
        head += 400;

        let (run, report) = server.bench(&[
            "append",
            "--append-via",
            via,
            "--requests",
            "30",
            "--in-flight",
            "4",
            "--expect",
            "wrong",
            "--quiet",
        ]);
        assert!(
            !run.success,
            "{via}: a run with failed requests exits non-zero"
        );
        assert_eq!(u64_at(&report, "/requests/failed"), 30, "{via}");
        assert_eq!(
            u64_at(
                &report,
                "/errors/FAILED_PRECONDITION/reasons/VERSION_CONFLICT"
            ),
            30,
            "{via}"
        );
        assert!(
            bool_at(&report, "/head_check/ok"),
            "{via}: nothing more was written"
        );
        assert_eq!(server.head(), head, "{via}");
    }
}

#[test]
fn denied_appends_are_errors_with_their_code_never_successes() {
    let server = Server::start();
    let (run, report) = server.bench(&[
        "append",
        "--requests",
        "50",
        "--in-flight",
        "2",
        "--expect",
        "wrong",
        "--quiet",
    ]);
    assert!(!run.success, "a run with failed requests exits non-zero");
    assert_eq!(u64_at(&report, "/requests/ok"), 0);
    assert_eq!(u64_at(&report, "/requests/failed"), 50);
    assert_eq!(u64_at(&report, "/events"), 0);
    assert_eq!(report["latency_ms"], Value::Null, "failures are not timed");
    assert_eq!(u64_at(&report, "/errors/FAILED_PRECONDITION/count"), 50);
    assert_eq!(
        u64_at(
            &report,
            "/errors/FAILED_PRECONDITION/reasons/VERSION_CONFLICT"
        ),
        50
    );
    assert!(bool_at(&report, "/head_check/ok"), "nothing was written");
    assert!(!bool_at(&report, "/ok"));
    let line = run.stderr.trim_end();
    assert_eq!(
        line, "error: 50 requests failed: FAILED_PRECONDITION 50 (VERSION_CONFLICT 50)",
        "one line on stderr"
    );

    // A gate that refuses every bench event in one scope: each refusal is counted under its
    // code with the gate's reason.
    let gate = server.run(&[
        "gates",
        "register",
        "--name",
        "no-bench",
        "--scope",
        "denied",
        "--type",
        "BenchEvent",
        "--cel",
        "event.payload.amount < 0",
    ]);
    assert!(gate.success, "{}", gate.stderr);
    let (run, report) = server.bench(&["append", "--scope", "denied", "--requests", "20"]);
    assert!(!run.success);
    assert_eq!(u64_at(&report, "/requests/ok"), 0);
    assert_eq!(u64_at(&report, "/errors/FAILED_PRECONDITION/count"), 20);
    let reasons = report
        .pointer("/errors/FAILED_PRECONDITION/reasons")
        .and_then(Value::as_object)
        .expect("reasons by code");
    let counted: u64 = reasons.values().filter_map(Value::as_u64).sum();
    assert_eq!(counted, 20, "every denial has its gate's code: {reasons:?}");
    assert!(!reasons.contains_key("VERSION_CONFLICT"), "{reasons:?}");
}

#[test]
fn a_head_moved_by_a_foreign_writer_fails_the_run() {
    let server = Server::start();
    let args = [
        "--output",
        "json",
        "bench",
        "append",
        "--duration",
        "3s",
        "--in-flight",
        "2",
    ];
    let mut bench = server.command(&args).spawn().expect("start the bench");
    // Progress lines go to stderr when it is not a terminal; the first one comes once the head
    // before the run has been read.
    let stderr = line_channel(bench.stderr.take().expect("stderr is piped"));
    let first = stderr
        .recv_timeout(DEADLINE)
        .expect("the bench prints progress");
    assert!(first.contains("bench append: running"), "{first}");
    let foreign_events = 3;
    for _ in 0..foreign_events {
        let append = server.run(&["append", "elsewhere", "x", "Foreign"]);
        assert!(append.success, "{}", append.stderr);
    }
    let run = finish(bench, &args, DEADLINE);
    let report = run.report();
    let rest: Vec<String> = stderr.iter().collect();
    assert!(!run.success, "a head mismatch exits non-zero");
    assert!(!bool_at(&report, "/head_check/ok"));
    assert_eq!(
        u64_at(&report, "/requests/failed"),
        0,
        "every request succeeded"
    );
    let acknowledged = u64_at(&report, "/head_check/acknowledged_events");
    assert!(acknowledged > 0);
    assert_eq!(
        u64_at(&report, "/head_check/moved"),
        acknowledged + foreign_events
    );
    let failures = report["failures"].to_string();
    assert!(failures.contains("head check failed"), "{failures}");
    let last = rest.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("error: head check failed"),
        "the error line names the check: {rest:?}"
    );
}

#[test]
fn subscribers_receive_every_acknowledged_event_and_reads_scan_the_log() {
    let server = Server::start();
    let (run, report) = server.bench(&[
        "subscribe",
        "--requests",
        "60",
        "--rate",
        "300",
        "--subscribers",
        "3",
        "--connections",
        "2",
        "--in-flight",
        "4",
        "--quiet",
    ]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(u64_at(&report, "/requests/ok"), 60);
    assert_eq!(u64_at(&report, "/subscribe/expected_each"), 60);
    assert_eq!(u64_at(&report, "/subscribe/delivered"), 3 * 60);
    assert_latency(&report, "/subscribe/delivery_latency_ms");
    assert!(bool_at(&report, "/head_check/ok"));

    // The log now holds 60 events; fill it to 500 and read it back in one page.
    let (run, report) = server.bench(&[
        "read",
        "--fill",
        "500",
        "--read-batch",
        "1000",
        "--requests",
        "1",
        "--quiet",
    ]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(u64_at(&report, "/requests/ok"), 1);
    assert_eq!(u64_at(&report, "/events"), 500);
    assert_eq!(server.head(), 500);

    // Streamed, a pass ends at CaughtUp and the next starts from position 1 again: in a
    // second far more than the log's 500 events are read, and nothing is appended.
    let (run, report) = server.bench(&STREAMED_READ_FOR_1S);
    assert!(run.success, "{}", run.stderr);
    assert!(u64_at(&report, "/events") > 500, "{report}");
    assert_eq!(server.head(), 500);
    // The report says how the log was read, and names no --read-batch the stream ignored.
    assert_eq!(
        report.pointer("/settings/read_via"),
        Some(&Value::from("stream"))
    );
    assert_eq!(report.pointer("/settings/read_batch"), Some(&Value::Null));

    let (run, report) = server.bench(&["head", "--requests", "40", "--in-flight", "4", "--quiet"]);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(u64_at(&report, "/requests/ok"), 40);
    assert_eq!(u64_at(&report, "/events"), 0);
    assert!(bool_at(&report, "/head_check/ok"));
}

/// A streamed read of an empty log is a run of passes that each end at once, and it still ends
/// at its duration with nothing read. Catches a streamed read that loops on empty passes
/// without coming back to its deadline, which hangs the run.
#[test]
fn a_streamed_read_of_an_empty_log_ends_at_its_duration() {
    let server = Server::start();
    let started = std::time::Instant::now();
    let (run, report) = server.bench(&STREAMED_READ_FOR_1S);
    assert!(run.success, "{}", run.stderr);
    assert_eq!(u64_at(&report, "/events"), 0);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a 1 s run took {:?}",
        started.elapsed()
    );
}

/// A server that stops answering mid-run without closing its connections (SIGSTOP) fails the
/// run, its head check included, once the connections' keepalive gives up, instead of hanging
/// it. Catches a bench whose calls have no bound: it never exited.
#[test]
fn a_server_that_stops_answering_fails_the_run_instead_of_hanging_it() {
    let server = Server::start();
    let args = [
        "--output",
        "json",
        "bench",
        "head",
        "--duration",
        "2s",
        "--warmup",
        "0s",
        "--quiet",
    ];
    let child = server.command(&args).spawn().expect("start causeway");
    std::thread::sleep(Duration::from_millis(800));
    let pid = server.child.id().to_string();
    let signal = |name: &str| {
        let sent = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    let run = finish(child, &args, DEADLINE);
    signal("-CONT");
    assert!(!run.success, "a run against a frozen server succeeded");
    assert!(
        run.stdout.contains("UNAVAILABLE") || run.stderr.contains("UNAVAILABLE"),
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
}

/// A bench given a token (by flag or by `CAUSEWAY_TOKEN`) is refused before it connects,
/// saying that it sends no credentials, instead of running and counting every request as an
/// UNAUTHENTICATED error. Catches a bench that takes the token and silently drops it.
#[test]
fn a_bench_given_a_token_is_refused_before_it_sends_anything() {
    let server = Server::start();
    let by_flag = server.run(&["--token", "secret", "bench", "append", "--requests", "5"]);
    let mut command = server.command(&["bench", "append", "--requests", "5"]);
    command.env("CAUSEWAY_TOKEN", "secret");
    let by_env = finish(
        command.spawn().expect("start causeway"),
        &["bench"],
        DEADLINE,
    );
    for run in [by_flag, by_env] {
        assert!(!run.success, "a bench with a token ran: {}", run.stdout);
        assert!(
            run.stderr.contains("bench sends no credentials"),
            "says why: {}",
            run.stderr
        );
    }
    assert_eq!(server.head(), 0, "nothing was appended");
}
