//! What an operator watches: the admin port's `/metrics` moves by exactly the work done,
//! `/readyz` and gRPC health tell the truth when the store stops taking writes, and the logs
//! are lines a collector can parse with the fields it needs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{
    Node, append, append_of, event, health_of, http_get, pb, register_small_orders, scratch,
};

/// The samples of a Prometheus text page, by series (name and labels as printed).
fn scrape(node: &Node) -> HashMap<String, f64> {
    let admin = node.admin.expect("the node has an admin port");
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

fn order(entity: &str, total: u32) -> pb::NewEvent {
    pb::NewEvent {
        payload: format!("{{\"total\":{total}}}").into_bytes(),
        ..event("acme", entity, "OrderPlaced")
    }
}

/// A known workload moves the append, event, denial and conflict counters by exactly itself,
/// and the head gauge says where the log ends.
#[tokio::test]
async fn metrics_move_by_exactly_the_workload() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    register_small_orders(&mut client).await;
    let before = scrape(&node);

    // 4 accepted appends, 6 events.
    append(&mut client, vec![order("o-1", 5)]).await;
    append(&mut client, vec![order("o-2", 5), order("o-3", 7)]).await;
    append(&mut client, vec![event("acme", "o-1", "OrderPaid")]).await;
    let receipt = append(
        &mut client,
        vec![
            event("acme", "o-2", "OrderPaid"),
            event("acme", "o-3", "OrderPaid"),
        ],
    )
    .await;
    // 2 denials by the gate.
    for entity in ["o-4", "o-5"] {
        let status = client
            .append(append_of(vec![order(entity, 5000)]))
            .await
            .expect_err("over the gate's limit");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    // 3 conflicts: each expects o-1 not to exist.
    for _ in 0..3 {
        let stale = pb::AppendRequest {
            expected: vec![pb::ExpectedVersion {
                scope: "acme".to_string(),
                entity: "o-1".to_string(),
                kind: pb::ExpectedKind::NoStream as i32,
                version: 0,
            }],
            ..append_of(vec![event("acme", "o-1", "OrderShipped")])
        };
        let status = client.append(stale).await.expect_err("o-1 exists");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    // 1 invalid append: no entity.
    let status = client
        .append(append_of(vec![event("acme", "", "OrderPlaced")]))
        .await
        .expect_err("an event needs an entity");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let after = scrape(&node);
    let expect = [
        ("causeway_appends_total{outcome=\"ok\"}", 4.0),
        ("causeway_append_events_total{outcome=\"ok\"}", 6.0),
        ("causeway_append_events_total{outcome=\"denied\"}", 2.0),
        ("causeway_append_events_total{outcome=\"conflict\"}", 3.0),
        ("causeway_appends_total{outcome=\"denied\"}", 2.0),
        (
            "causeway_denials_total{gate=\"small-orders\",code=\"CEL_FALSE\"}",
            2.0,
        ),
        ("causeway_appends_total{outcome=\"conflict\"}", 3.0),
        ("causeway_conflicts_total", 3.0),
        ("causeway_appends_total{outcome=\"INVALID_ARGUMENT\"}", 1.0),
        (
            "causeway_grpc_requests_total{service=\"causeway.v1.EventStoreService\",method=\"Append\",code=\"OK\"}",
            4.0,
        ),
        (
            "causeway_grpc_requests_total{service=\"causeway.v1.EventStoreService\",method=\"Append\",code=\"FAILED_PRECONDITION\"}",
            5.0,
        ),
    ];
    for (series, delta) in expect {
        assert_eq!(moved(&before, &after, series), delta, "{series}");
    }
    let head = receipt.events.last().expect("events").position as f64;
    assert_eq!(after.get("causeway_head_position"), Some(&head));
    assert_eq!(after.get("causeway_ready"), Some(&1.0));
    assert!(
        after
            .get("causeway_fsync_duration_seconds_count{syncer=\"causeway-sync\"}")
            .is_some_and(|count| *count >= 1.0),
        "fsyncs are timed"
    );
    assert_eq!(after.get("causeway_segments"), Some(&1.0));
}

/// A write the disk refuses (here: the file size limit lowered under the running server, as a
/// full disk would refuse it) stops every append; gRPC health and `/readyz` then say so, with
/// the reason (in `/readyz`; the log file is under the same limit), until a restart, after which every acknowledged event is there.
#[tokio::test]
async fn health_turns_not_serving_when_writes_fail_and_back_after_restart() {
    let dir = scratch();
    let data = dir.path().join("data");
    // SIGXFSZ ignored, so a write past the limit fails with EFBIG instead of killing.
    let node = Node::start_through(
        &["bash", "-c", "trap '' XFSZ; exec \"$0\" \"$@\""],
        &data,
        &[],
        &[],
    );
    let mut client = node.client().await;
    let receipt = append(&mut client, vec![event("acme", "o-1", "OrderPlaced")]).await;
    let acknowledged = receipt.events[0].position;
    assert_eq!(health_of(&node).await, [ServingStatus::Serving as i32; 2]);
    assert_eq!(http_get(node.admin.expect("admin"), "/readyz").0, 200);

    let limited = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", node.pid()))
        .arg("--fsize=1:1")
        .status()
        .expect("run prlimit");
    assert!(limited.success(), "prlimit lowers the file size limit");
    let status = client
        .append(append_of(vec![event("acme", "o-2", "OrderPlaced")]))
        .await
        .expect_err("the write is refused by the disk");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let deadline = Instant::now() + Duration::from_secs(5);
    while health_of(&node).await != [ServingStatus::NotServing as i32; 2] {
        assert!(
            Instant::now() < deadline,
            "health still SERVING; log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = http_get(node.admin.expect("admin"), "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("refuses writes"), "{body}");
    let (code, body) = http_get(node.admin.expect("admin"), "/healthz");
    assert_eq!(code, 503, "only a restart helps: {body}");
    drop(client);
    drop(node);

    let node = Node::start(&data, &[]);
    assert_eq!(health_of(&node).await, [ServingStatus::Serving as i32; 2]);
    assert_eq!(http_get(node.admin.expect("admin"), "/readyz").0, 200);
    let mut client = node.client().await;
    let head = client
        .head(pb::HeadRequest::default())
        .await
        .expect("head")
        .into_inner();
    assert_eq!(
        head.position, acknowledged,
        "the acknowledged event is there"
    );
}

/// JSON log lines parse; the first names the version, the data directory and the durability;
/// a failed RPC is one line with its method, code, peer, duration and request id.
#[test]
fn json_logs_carry_start_settings_and_failed_rpcs() {
    let dir = scratch();
    let mut node = Node::start(&dir.path().join("data"), &["--log-format", "json"]);
    // A runtime of its own, dropped before the node stops, so no connection stays open.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let mut client = node.client().await;
        let mut request = tonic::Request::new(pb::GetRequest {
            id: "not-a-uuid".to_string(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-request-id", "req-4711".parse().expect("metadata value"));
        let status = client.get(request).await.expect_err("an invalid id");
        assert_eq!(status.code(), Code::InvalidArgument);
    });
    drop(runtime);
    node.terminate();

    let log = node.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let first = &lines[0];
    assert_eq!(first["version"], env!("CARGO_PKG_VERSION"), "{first}");
    assert_eq!(first["durability"], "Fsync", "{first}");
    assert!(
        first["data_dir"]
            .as_str()
            .is_some_and(|dir| dir.starts_with('/')),
        "the data directory is absolute: {first}"
    );
    let failed = lines
        .iter()
        .find(|line| line["message"] == "rpc failed")
        .unwrap_or_else(|| panic!("no failed-RPC line in\n{log}"));
    assert_eq!(
        failed["service"], "causeway.v1.EventStoreService",
        "{failed}"
    );
    assert_eq!(failed["method"], "Get", "{failed}");
    assert_eq!(failed["code"], "INVALID_ARGUMENT", "{failed}");
    assert_eq!(failed["request_id"], "req-4711", "{failed}");
    assert!(
        failed["peer"]
            .as_str()
            .is_some_and(|peer| peer.starts_with("127.0.0.1:")),
        "{failed}"
    );
    assert!(failed["duration_ms"].is_number(), "{failed}");
}

/// A start-up failure is one plain line on stderr and exit status 1, even with
/// `RUST_BACKTRACE` set.
#[test]
fn a_start_up_failure_is_one_line() {
    let dir = scratch();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let taken = taken.local_addr().expect("its address").to_string();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_causewayd"))
        .args([
            "--listen",
            &taken,
            "--admin-listen",
            "off",
            "--log-format",
            "text",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "off")
        .output()
        .expect("run causewayd");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("causewayd: binding "), "{stderr}");
    assert!(lines[0].contains(&taken), "{stderr}");
}

/// A cluster member with no leader (here: before `cluster init`) is alive but not ready: gRPC
/// health of "" stays SERVING so it is not restarted and can be initialised, the store
/// service is NOT_SERVING, `/readyz` says why; once it leads, both serve and `/metrics`
/// reports its Raft role and term.
#[tokio::test]
async fn a_cluster_member_without_a_leader_is_live_but_not_ready() {
    let dir = scratch();
    // A member advertises a real port, so it listens on one chosen beforehand.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free port")
        .to_string();
    let node = Node::start(
        &dir.path().join("data"),
        &["--node-id", "1", "--listen", &listen],
    );
    let admin = node.admin.expect("admin");
    assert_eq!(
        health_of(&node).await,
        [
            ServingStatus::Serving as i32,
            ServingStatus::NotServing as i32
        ]
    );
    let (code, body) = http_get(admin, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no leader"), "{body}");
    assert_eq!(http_get(admin, "/healthz").0, 200);

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    pb::cluster_service_client::ClusterServiceClient::new(channel)
        .init_cluster(pb::InitClusterRequest::default())
        .await
        .expect("init a cluster of one");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(admin, "/readyz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready after init; log:\n{}",
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while health_of(&node).await != [ServingStatus::Serving as i32; 2] {
        assert!(
            Instant::now() < deadline,
            "health still NOT_SERVING after init"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = scrape(&node);
    assert_eq!(
        metrics.get("causeway_raft_role{role=\"leader\"}"),
        Some(&1.0)
    );
    assert!(
        metrics
            .get("causeway_raft_term")
            .is_some_and(|term| *term >= 1.0)
    );
    assert_eq!(metrics.get("causeway_ready"), Some(&1.0));
}
