//! The replication invariants, one named test each, on real three-node clusters: what each
//! protects is in its doc.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::nodes::{Cluster, SETTLE_WAIT, pb};

/// One event for `entity` with `payload`.
fn event(entity: &str, payload: &str) -> pb::NewEvent {
    pb::NewEvent {
        scope: "acme".to_string(),
        entity: entity.to_string(),
        r#type: "Noted".to_string(),
        payload: payload.as_bytes().to_vec(),
        content_type: "text/plain".to_string(),
        ..Default::default()
    }
}

/// Appends one event through whichever node leads, retrying while there is no leader (an
/// election) or the node asked is not it; returns the position and the leader used.
async fn append_at_leader(cluster: &Cluster, entity: &str, payload: &str) -> (u64, u64) {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let leader = cluster.leader().await;
        let mut client = cluster.client(leader).await;
        let request = pb::AppendRequest {
            events: vec![event(entity, payload)],
            idempotency_key: format!("key-{payload}"),
            ..Default::default()
        };
        match client.append(request).await {
            Ok(response) => {
                let receipt = response.into_inner().receipt.expect("a receipt");
                return (receipt.events[0].position, leader);
            }
            Err(status) if status.code() == Code::Unavailable => {
                assert!(
                    Instant::now() < deadline,
                    "no append accepted within {SETTLE_WAIT:?}: {status:?}\n{}",
                    cluster.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("append refused: {status:?}"),
        }
    }
}

/// Every event of node `id`'s log, as (position, payload), read locally.
async fn local_log(cluster: &Cluster, id: u64) -> Vec<(u64, Vec<u8>)> {
    let mut client = cluster.client(id).await;
    let mut events = Vec::new();
    let mut from_position = 1;
    loop {
        let page = client
            .read_log(pb::ReadLogRequest {
                from_position,
                direction: pb::Direction::Forward as i32,
                limit: 10_000,
                consistency: pb::ReadConsistency::Local as i32,
                ..Default::default()
            })
            .await
            .expect("read the log")
            .into_inner();
        events.extend(
            page.events
                .into_iter()
                .map(|event| (event.position, event.payload.to_vec())),
        );
        if page.end {
            return events;
        }
        from_position = page.next_position;
    }
}

/// Node `id`'s head and log digest, read locally.
async fn local_head(cluster: &Cluster, id: u64) -> (u64, Vec<u8>) {
    let head = cluster
        .client(id)
        .await
        .head(pb::HeadRequest {
            consistency: pb::ReadConsistency::Local as i32,
        })
        .await
        .expect("head")
        .into_inner();
    (head.position, head.digest)
}

/// Waits until every running node has applied what the leader has, then checks that they hold
/// the same head and the same log digest (the digest chains every event's hash, so equal
/// digests mean byte-identical logs).
async fn assert_replicas_identical(cluster: &Cluster) {
    let leader = cluster.leader().await;
    let status = cluster.status(leader).await.expect("the leader answers");
    cluster.applied_everywhere(status.last_log_index).await;
    let expected = local_head(cluster, leader).await;
    for member in cluster.members.iter().filter(|member| member.running()) {
        let head = local_head(cluster, member.id).await;
        assert_eq!(
            head, expected,
            "node {} differs from the leader (node {leader})",
            member.id
        );
    }
}

/// Acknowledged appends survive `kill -9` of the leader: a write acknowledged by a leader is
/// on a majority, so the next leader has it at the same position. Catches acknowledging before
/// the quorum's fsync, and a new leader that truncates committed entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill_of_the_leader() {
    let mut cluster = Cluster::start(3).await;
    let mut acknowledged = Vec::new();
    for event_idx in 0..60 {
        let payload = format!("before-{event_idx}");
        let (position, _) = append_at_leader(&cluster, "order-1", &payload).await;
        acknowledged.push((position, payload.into_bytes()));
    }
    let old_leader = cluster.leader().await;
    cluster.member(old_leader).kill();
    let killed_at = Instant::now();
    let (position, new_leader) = append_at_leader(&cluster, "order-1", "after-kill").await;
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    acknowledged.push((position, b"after-kill".to_vec()));
    let log = local_log(&cluster, new_leader).await;
    for (position, payload) in &acknowledged {
        let found = log.iter().find(|(at, _)| at == position);
        assert_eq!(
            found.map(|(_, bytes)| bytes),
            Some(payload),
            "acknowledged event at {position} lost or changed after failover"
        );
    }
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    cluster.member(old_leader).start();
    assert_replicas_identical(&cluster).await;
}

/// A follower that was down catches up by log when it returns, and ends byte-identical.
/// Catches a follower that misses entries written while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_was_down_catches_up_by_log() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    append_at_leader(&cluster, "order-2", "first").await;
    cluster.member(follower).kill();
    for event_idx in 0..40 {
        append_at_leader(&cluster, "order-2", &format!("while-down-{event_idx}")).await;
    }
    cluster.member(follower).start();
    assert_replicas_identical(&cluster).await;
    assert_eq!(local_log(&cluster, follower).await.len(), 41);
}

/// A follower that fell behind past the leader's log (purged after a snapshot) is caught up
/// by a snapshot of sealed segments, and ends byte-identical. Catches a snapshot transfer or
/// install that loses or reorders events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_purge_catches_up_by_snapshot() {
    let mut cluster = Cluster::new(3);
    for member in &mut cluster.members {
        member.start_with(&["--snapshot-entries", "20", "--log-keep-entries", "5"]);
    }
    cluster.init_all().await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    append_at_leader(&cluster, "order-3", "first").await;
    cluster.member(follower).kill();
    for event_idx in 0..80 {
        append_at_leader(&cluster, "order-3", &format!("behind-{event_idx}")).await;
    }
    let leader_status = cluster
        .status(cluster.leader().await)
        .await
        .expect("leader");
    assert!(
        leader_status.last_log_index > 60,
        "the leader's log should be well past the follower"
    );
    cluster
        .member(follower)
        .start_with(&["--snapshot-entries", "20", "--log-keep-entries", "5"]);
    assert_replicas_identical(&cluster).await;
    let log = local_log(&cluster, follower).await;
    assert_eq!(log.len(), 81);
    assert_eq!(log[0].1, b"first".to_vec());
}

/// Positions stay gapless across leader changes (a transfer and a crash): the log is one
/// sequence whoever leads. Catches a new leader that reuses or skips positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_stay_gapless_across_leader_changes() {
    let mut cluster = Cluster::start(3).await;
    for event_idx in 0..10 {
        append_at_leader(&cluster, "order-4", &format!("a-{event_idx}")).await;
    }
    let leader = cluster.leader().await;
    let next = (1..=3).find(|id| *id != leader).expect("another voter");
    cluster
        .admin(leader)
        .await
        .transfer_leader(pb::TransferLeaderRequest { node_id: next })
        .await
        .expect("transfer the leadership");
    for event_idx in 0..10 {
        append_at_leader(&cluster, "order-4", &format!("b-{event_idx}")).await;
    }
    let leader = cluster.leader().await;
    cluster.member(leader).kill();
    for event_idx in 0..10 {
        append_at_leader(&cluster, "order-4", &format!("c-{event_idx}")).await;
    }
    let leader = cluster.leader().await;
    let log = local_log(&cluster, leader).await;
    let positions: Vec<u64> = log.iter().map(|(position, _)| *position).collect();
    assert_eq!(positions, (1..=30).collect::<Vec<_>>());
}

/// A follower refuses a write with UNAVAILABLE naming the leader, in the ErrorInfo and the
/// `x-causeway-leader` header, and writes nothing. Catches a follower that applies writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_a_write_with_the_leaders_address() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let status = cluster
        .client(follower)
        .await
        .append(pb::AppendRequest {
            events: vec![event("order-5", "to-a-follower")],
            ..Default::default()
        })
        .await
        .expect_err("a follower refuses writes");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let leader_addr = cluster.members[(leader - 1) as usize].addr.to_string();
    assert_eq!(
        status
            .metadata()
            .get("x-causeway-leader")
            .and_then(|value| value.to_str().ok()),
        Some(leader_addr.as_str())
    );
    assert!(
        status.message().contains(&leader_addr),
        "{}",
        status.message()
    );
    // Leader-level reads are refused the same way; local and linearizable ones are served.
    let refused = cluster
        .client(follower)
        .await
        .head(pb::HeadRequest {
            consistency: pb::ReadConsistency::Leader as i32,
        })
        .await
        .expect_err("a leader read on a follower");
    assert_eq!(refused.code(), Code::Unavailable);
    let (position, _) = append_at_leader(&cluster, "order-5", "to-the-leader").await;
    let head = cluster
        .client(follower)
        .await
        .head(pb::HeadRequest {
            consistency: pb::ReadConsistency::Linearizable as i32,
        })
        .await
        .expect("a linearizable read on a follower")
        .into_inner();
    assert!(
        head.position >= position,
        "a linearizable read on a follower missed an acknowledged append"
    );
}

/// A node started with another node's data directory is refused at start: its log and votes
/// belong to that node. Catches two processes voting as one node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_another_nodes_data_directory_is_refused() {
    let mut cluster = Cluster::start(3).await;
    cluster.member(2).kill();
    let node_one_data = cluster.members[0].data_dir.clone();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_causewayd"))
        .arg("--node-id")
        .arg("2")
        .arg("--listen")
        .arg(cluster.members[1].addr.to_string())
        .arg("--data-dir")
        .arg(&node_one_data)
        .output()
        .expect("run causewayd");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("belongs to node 1"),
        "the refusal names the owner: {stderr}"
    );
}
