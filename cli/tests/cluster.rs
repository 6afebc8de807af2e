//! The `causeway` CLI and the client library against a real three-node cluster: three
//! `causewayd` processes with node ids 1 to 3 on 127.0.0.1, formed with `causeway cluster
//! init`, then driven through followers' addresses, so every write must find the leader.
//!
//! A member advertises the address it listens on, so each node gets a fixed port, picked free
//! beforehand (bound to port 0 and released), rather than `--listen 127.0.0.1:0`. Short
//! election timeouts (`--election-timeout-ms 300 --heartbeat-ms 50`) keep elections quick; every
//! wait has a generous deadline for a loaded machine, and a failure prints the nodes' logs.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{Run, causewayd, finish, line_channel};

/// How long a node may take to print its address, or one CLI run to finish.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long the cluster may take to elect a leader that every member knows.
const LEADER_DEADLINE: Duration = Duration::from_secs(20);

/// One `causewayd` cluster member, killed on drop.
struct Node {
    node_id: u64,
    address: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    /// Kills the node, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three members in one temporary directory; not yet a cluster until `init`.
struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        // Every port is picked before any node starts, so two nodes never get the same one.
        let listeners: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
            .collect();
        let addresses: Vec<String> = listeners
            .iter()
            .map(|listener| listener.local_addr().expect("a bound address").to_string())
            .collect();
        drop(listeners);
        let nodes = addresses
            .into_iter()
            .enumerate()
            .map(|(node_idx, address)| start_node(dir.path(), node_idx as u64 + 1, address))
            .collect();
        Cluster { nodes, _dir: dir }
    }

    fn node(&self, node_id: u64) -> &Node {
        &self.nodes[node_id as usize - 1]
    }

    /// Every member's address, comma-separated, as `--server` takes it.
    fn all(&self) -> String {
        let addresses: Vec<&str> = self
            .nodes
            .iter()
            .map(|node| node.address.as_str())
            .collect();
        addresses.join(",")
    }

    /// Every node's log, for a failure message.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                // The end is what explains a failure; startup state dumps are long.
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "--- node {} log (last lines) ---\n{}\n",
                    node.node_id,
                    tail.join("\n")
                )
            })
            .collect()
    }

    /// Runs a command that must succeed and print JSON; on failure, shows the nodes' logs.
    fn json(&self, server: &str, args: &[&str]) -> Value {
        let mut all_args = vec!["--server", server, "--output", "json"];
        all_args.extend_from_slice(args);
        let run = run_cli(&all_args);
        if !run.success {
            panic!(
                "`causeway {}` failed:\nstdout: {}\nstderr: {}\n{}",
                run.args,
                run.stdout,
                run.stderr,
                self.logs()
            );
        }
        serde_json::from_str(&run.stdout)
            .unwrap_or_else(|err| panic!("`{}` printed no JSON ({err}):\n{}", run.args, run.stdout))
    }

    /// Forms the cluster of all three on node 1 and waits until every member follows one
    /// leader; returns that leader's id.
    fn init(&self) -> u64 {
        let voters: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("{}={}", node.node_id, node.address))
            .collect();
        let mut args = vec!["cluster", "init"];
        for voter in &voters {
            args.extend(["--voter", voter.as_str()]);
        }
        let formed = self.json(&self.node(1).address, &args);
        let cluster_id = formed["cluster_id"].as_str().expect("a cluster id");
        assert!(!cluster_id.is_empty(), "{formed}");
        self.wait_for_leader(&self.all(), cluster_id, &[1, 2, 3])
    }

    /// Polls `cluster status` through `server` until a leader leads every node of `members`
    /// (which must answer, in cluster `cluster_id`); returns the leader's id.
    fn wait_for_leader(&self, server: &str, cluster_id: &str, members: &[u64]) -> u64 {
        let deadline = Instant::now() + LEADER_DEADLINE;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let run = run_cli(&["--server", server, "--output", "json", "cluster", "status"]);
            if run.success {
                last = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
                if let Some(leader_id) = agreed_leader(&last, cluster_id, members) {
                    return leader_id;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no leader of {members:?} within {LEADER_DEADLINE:?}; last status: {last}\n{}",
            self.logs()
        );
    }
}

/// The leader every member of `members` reports, when they all answer in `cluster_id` and
/// agree.
fn agreed_leader(status: &Value, cluster_id: &str, members: &[u64]) -> Option<u64> {
    if status["cluster_id"] != cluster_id {
        return None;
    }
    let leader_id = status["leader_id"].as_u64()?;
    let rows = status["members"].as_array()?;
    let all_follow = members.iter().all(|node_id| {
        rows.iter().any(|row| {
            row["node_id"] == *node_id
                && row["reachable"] == true
                && row["leader_id"] == leader_id
                && (row["role"] == "leader" || row["role"] == "follower")
        })
    });
    all_follow.then_some(leader_id)
}

/// Starts member `node_id` listening (and advertising) on `address`, and waits until it
/// serves.
fn start_node(dir: &std::path::Path, node_id: u64, address: String) -> Node {
    let binary = causewayd();
    let log = dir.join(format!("node-{node_id}.log"));
    let log_file = std::fs::File::create(&log).expect("create a log file");
    let mut child = Command::new(&binary)
        .args(["--node-id", &node_id.to_string()])
        .args(["--listen", &address, "--admin-listen", "off"])
        .arg("--data-dir")
        .arg(dir.join(format!("data-{node_id}")))
        .args(["--election-timeout-ms", "300", "--heartbeat-ms", "50"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
    let lines = line_channel(child.stdout.take().expect("stdout is piped"));
    match lines.recv_timeout(DEADLINE) {
        Ok(line) if line.starts_with("listening on ") => {}
        other => {
            let _ = child.kill();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("node {node_id} did not start ({other:?}); its log:\n{text}");
        }
    }
    Node {
        node_id,
        address,
        child: Some(child),
        log,
    }
}

/// Runs the CLI to completion (or the deadline) and collects its output.
fn run_cli(args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the causeway binary");
    finish(child, args, DEADLINE)
}

/// A write sent to followers lands on the leader, and reads through followers see it at every
/// consistency level. Catches a client that gives up on a follower's NOT_LEADER instead of
/// following it, and a consistency flag that is not sent (a LEADER read on a follower must be
/// redirected, so it is answered only if the client follows).
#[test]
fn writes_through_followers_reach_the_leader_and_read_back_at_every_level() {
    let cluster = Cluster::start();
    let leader_id = cluster.init();
    let followers: Vec<&Node> = cluster
        .nodes
        .iter()
        .filter(|node| node.node_id != leader_id)
        .collect();
    let via_followers = format!("{},{}", followers[0].address, followers[1].address);

    let receipt = cluster.json(
        &via_followers,
        &[
            "append",
            "acme",
            "order-1",
            "OrderPlaced",
            "--data",
            r#"{"total":12}"#,
            "--idempotency-key",
            "place-order-1",
        ],
    );
    let event_id = receipt["events"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event id in {receipt}"))
        .to_string();
    let position = receipt["events"][0]["position"]
        .as_u64()
        .unwrap_or_else(|| panic!("no position in {receipt}"));
    // A write without a key follows a redirect too: the refusal did nothing.
    let second = cluster.json(
        &via_followers,
        &["append", "acme", "order-1", "OrderPaid", "--expect", "1"],
    );
    assert_eq!(second["events"][0]["position"], position + 1, "{second}");

    for consistency in ["linearizable", "leader", "local"] {
        // A local read on a follower may lag behind the commit; the other levels may not.
        let deadline = Instant::now() + LEADER_DEADLINE;
        let events = loop {
            let read = cluster.json(
                &via_followers,
                &[
                    "--consistency",
                    consistency,
                    "read",
                    "entity",
                    "acme",
                    "order-1",
                ],
            );
            let events = read["events"].as_array().cloned().unwrap_or_default();
            if events.len() == 2 || consistency != "local" || Instant::now() > deadline {
                break events;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(events.len(), 2, "{consistency}: {events:?}");
        assert_eq!(events[0]["id"], event_id.as_str(), "{consistency}");
        assert_eq!(events[1]["type"], "OrderPaid", "{consistency}");

        let got = cluster.json(
            &via_followers,
            &["--consistency", consistency, "get", &event_id],
        );
        assert_eq!(got["position"], position, "{consistency}: {got}");
        let head = cluster.json(&via_followers, &["--consistency", consistency, "head"]);
        assert_eq!(head["position"], position + 1, "{consistency}: {head}");
    }

    // The same append again is answered with the original receipt, not a second event.
    let again = cluster.json(
        &via_followers,
        &[
            "append",
            "acme",
            "order-1",
            "OrderPlaced",
            "--data",
            r#"{"total":12}"#,
            "--idempotency-key",
            "place-order-1",
        ],
    );
    assert_eq!(again["events"][0]["id"], event_id.as_str(), "{again}");

    // The library says where it ended up: at the leader, though given only followers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let leader_address = cluster.node(leader_id).address.clone();
    runtime.block_on(async {
        let client = causeway_client::Client::connect_many(&[
            followers[0].address.as_str(),
            followers[1].address.as_str(),
        ])
        .await
        .expect("connect to the followers");
        assert_ne!(client.address(), format!("http://{leader_address}"));
        let receipt = client
            .append(causeway_client::AppendBuilder::new().event(
                causeway_client::EventBuilder::new("acme", "order-2", "OrderPlaced"),
            ))
            .await
            .expect("the append follows the leader");
        assert_eq!(receipt.events[0].position, position + 2);
        assert_eq!(client.address(), format!("http://{leader_address}"));
    });
}

/// With the leader killed, a keyed append sent to every address (the dead one first) waits out
/// the election and lands once, and `cluster status` shows the dead member as unreachable
/// beside the new leader. Catches a client that stops at the first unreachable address or
/// at the NOT_LEADER of a node that knows no leader yet.
#[test]
fn a_keyed_append_rides_out_the_leaders_death() {
    let mut cluster = Cluster::start();
    let old_leader = cluster.init();
    let first = cluster.json(
        &cluster.all(),
        &[
            "append",
            "acme",
            "order-9",
            "OrderPlaced",
            "--expect",
            "no-stream",
        ],
    );
    let cluster_id = cluster.json(&cluster.all(), &["cluster", "status"])["cluster_id"]
        .as_str()
        .expect("a cluster id")
        .to_string();
    let dead_first: Vec<String> = std::iter::once(cluster.node(old_leader).address.clone())
        .chain(
            cluster
                .nodes
                .iter()
                .filter(|node| node.node_id != old_leader)
                .map(|node| node.address.clone()),
        )
        .collect();
    let dead_first = dead_first.join(",");
    cluster.nodes[old_leader as usize - 1].kill();

    let receipt = cluster.json(
        &dead_first,
        &[
            "append",
            "acme",
            "order-9",
            "OrderPaid",
            "--expect",
            "1",
            "--idempotency-key",
            "pay-order-9",
        ],
    );
    let position = first["events"][0]["position"].as_u64().expect("a position");
    assert_eq!(receipt["events"][0]["position"], position + 1, "{receipt}");

    let survivors: Vec<u64> = [1, 2, 3]
        .into_iter()
        .filter(|node_id| *node_id != old_leader)
        .collect();
    let new_leader = cluster.wait_for_leader(&dead_first, &cluster_id, &survivors);
    assert_ne!(new_leader, old_leader);
    let status = cluster.json(&dead_first, &["cluster", "status"]);
    let rows = status["members"].as_array().expect("members");
    assert_eq!(rows.len(), 3, "{status}");
    let dead_row = rows
        .iter()
        .find(|row| row["node_id"] == old_leader)
        .expect("the dead member is listed");
    assert_eq!(dead_row["role"], "unreachable", "{status}");
    assert_eq!(dead_row["reachable"], false, "{status}");

    let table = run_cli(&["--server", &dead_first, "cluster", "status"]);
    assert!(table.success, "{}", table.stderr);
    assert!(
        table
            .stdout
            .lines()
            .any(|line| line.contains(&cluster.node(old_leader).address)
                && line.contains("unreachable")),
        "{}",
        table.stdout
    );
    let entity = cluster.json(&dead_first, &["read", "entity", "acme", "order-9"]);
    assert_eq!(
        entity["events"].as_array().map(Vec::len),
        Some(2),
        "the keyed append was applied once: {entity}"
    );
}

/// With two of three members dead, a read through every member fails with the live member's
/// reason (no quorum), not with the last dead member's silence. Catches a client that reports
/// only the error of the address it tried last ("cannot connect to ..."), which hides why the
/// member that answered refused.
#[test]
fn a_read_without_a_quorum_says_so_though_the_last_address_tried_is_dead() {
    let mut cluster = Cluster::start();
    let leader = cluster.init();
    cluster.json(
        &cluster.all(),
        &["append", "acme", "order-9", "OrderPlaced"],
    );
    let all = cluster.all();
    for node in cluster
        .nodes
        .iter_mut()
        .filter(|node| node.node_id != leader)
    {
        node.kill();
    }

    let read = run_cli(&["--server", &all, "head"]);
    assert!(
        !read.success,
        "a linearizable read needs a quorum: {}",
        read.stdout
    );
    assert!(
        read.stderr.contains("short of a quorum") && read.stderr.contains("UNAVAILABLE"),
        "the live member's reason is shown:\n{}",
        read.stderr
    );
}

/// `tail` with the members listed goes on from the next position on another member when the
/// one it follows dies: every event once, in order. Catches a tail that ends with the broken
/// stream (exit 5), and one that resumes from the wrong place (a gap or a repeat).
#[test]
fn a_tail_resumes_on_another_member_when_its_member_dies() {
    let mut cluster = Cluster::start();
    cluster.init();
    let append = |cluster: &Cluster, server: &str, event_idx: usize| {
        cluster.json(
            server,
            &[
                "append",
                "acme",
                "order-10",
                "Noted",
                "--data",
                &format!("{{\"n\":{event_idx}}}"),
            ],
        );
    };
    for event_idx in 0..3 {
        append(&cluster, &cluster.all(), event_idx);
    }
    // Node 1 is listed first, so the tail follows it.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args([
            "--server",
            &cluster.all(),
            "--output",
            "json",
            "tail",
            "--from",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start causeway tail");
    let lines = line_channel(tail.stdout.take().expect("stdout is piped"));
    let stderr = common::read_all(tail.stderr.take().expect("stderr is piped"));
    let mut positions = Vec::new();
    let next_position = |positions: &mut Vec<u64>| match lines.recv_timeout(DEADLINE) {
        Ok(line) => {
            let event: Value = serde_json::from_str(&line).expect("tail prints JSON lines");
            positions.push(event["position"].as_u64().expect("a position"));
        }
        Err(err) => panic!("tail printed no event ({err}); so far {positions:?}"),
    };
    for _ in 0..3 {
        next_position(&mut positions);
    }
    cluster.nodes[0].kill();
    let survivors = format!("{},{}", cluster.node(2).address, cluster.node(3).address);
    for event_idx in 3..6 {
        append(&cluster, &survivors, event_idx);
    }
    for _ in 3..6 {
        next_position(&mut positions);
    }
    let _ = tail.kill();
    let _ = tail.wait();
    assert_eq!(
        positions,
        (1..=6).collect::<Vec<u64>>(),
        "tail's stderr: {}",
        stderr.join().unwrap_or_default()
    );
}

/// A server without `--node-id` has no cluster: `cluster status` says so and how to grow it,
/// and a change fails with the same explanation.
#[test]
fn a_single_node_says_it_is_one() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let mut child = Command::new(causewayd())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start causewayd");
    let lines = line_channel(child.stdout.take().expect("stdout is piped"));
    let first = lines
        .recv_timeout(DEADLINE)
        .expect("causewayd prints its address");
    let address = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
        .trim()
        .to_string();
    let _guard = Node {
        node_id: 0,
        address: address.clone(),
        child: Some(child),
        log: PathBuf::new(),
    };

    let status = run_cli(&["--server", &address, "cluster", "status"]);
    assert!(status.success, "{}", status.stderr);
    assert!(status.stdout.contains("single node"), "{}", status.stdout);
    assert!(status.stdout.contains("--node-id"), "{}", status.stdout);
    let json = run_cli(&[
        "--server", &address, "--output", "json", "cluster", "status",
    ]);
    let value: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(value["single_node"], true, "{value}");

    let init = run_cli(&["--server", &address, "cluster", "init"]);
    assert!(!init.success, "init on a single node must fail");
    assert!(init.stderr.starts_with("error: "), "{}", init.stderr);
    assert!(init.stderr.contains("single node"), "{}", init.stderr);
}
