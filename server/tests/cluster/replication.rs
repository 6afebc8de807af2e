//! The replication invariants, one named test each, on real three-node clusters: what each
//! protects is in its doc.

use std::time::{Duration, Instant};

use tonic::Code;

use crate::nodes::{Cluster, event, pb};

/// Acknowledged appends survive `kill -9` of the leader: a write acknowledged by a leader is
/// on a majority, so the next leader has it at the same position. Catches acknowledging before
/// the quorum's fsync, and a new leader that truncates committed entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill_of_the_leader() {
    let mut cluster = Cluster::start(3).await;
    let mut acknowledged = Vec::new();
    for event_idx in 0..60 {
        let payload = format!("before-{event_idx}");
        let (position, _) = cluster.append_at_leader("order-1", &payload).await;
        acknowledged.push((position, payload.into_bytes()));
    }
    let old_leader = cluster.leader().await;
    cluster.member(old_leader).kill();
    let killed_at = Instant::now();
    let (position, new_leader) = cluster.append_at_leader("order-1", "after-kill").await;
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    acknowledged.push((position, b"after-kill".to_vec()));
    let log = cluster.local_log(new_leader).await;
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
    cluster.assert_replicas_identical().await;
}

/// A follower that was down catches up by log when it returns, and ends byte-identical.
/// Catches a follower that misses entries written while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_was_down_catches_up_by_log() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.append_at_leader("order-2", "first").await;
    cluster.member(follower).kill();
    for event_idx in 0..40 {
        cluster
            .append_at_leader("order-2", &format!("while-down-{event_idx}"))
            .await;
    }
    cluster.member(follower).start();
    cluster.assert_replicas_identical().await;
    assert_eq!(cluster.local_log(follower).await.len(), 41);
}

/// A follower that was down while large appends were written catches up by log, though the
/// entries it missed are more than one message may carry. Catches a leader that sends a
/// catch-up batch as one message past the peers' message limit (20 MiB): the send failed and
/// was retried forever, and the follower stayed behind until a snapshot went past the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_on_more_large_entries_than_one_message_holds() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.append_at_leader("order-3", "first").await;
    cluster.member(follower).kill();
    let mut client = cluster.client(leader).await;
    // 12 appends of 2 MiB: 24 MiB of entries for the follower to catch up on.
    for append_idx in 0..12u8 {
        let request = pb::AppendRequest {
            events: vec![pb::NewEvent {
                payload: vec![append_idx; 2 * 1024 * 1024],
                ..event("order-3", "large")
            }],
            ..Default::default()
        };
        client
            .append(request)
            .await
            .unwrap_or_else(|status| panic!("append {append_idx}: {status:?}"));
    }
    cluster.member(follower).start();
    cluster.assert_replicas_identical().await;
    assert_eq!(cluster.local_log(follower).await.len(), 13);
}

/// A leader whose follower is down retries it with growing pauses, not as fast as connect
/// fails. Catches a retry loop that fills the leader's disk with its log while a node is away
/// (it wrote tens of thousands of lines a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_retries_a_down_follower_with_pauses() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.append_at_leader("order-9", "first").await;
    cluster.member(follower).kill();
    cluster.append_at_leader("order-9", "second").await;
    let lines_before = cluster.member(leader).log_text().lines().count();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines_after = cluster.member(leader).log_text().lines().count();
    // Heartbeats fail ten times a second; replication retries at most a few times a second
    // once its pauses have grown. Without pauses this was over 100,000 lines.
    assert!(
        lines_after - lines_before < 300,
        "the leader logged {} lines in 3 s while node {follower} was down:\n{}",
        lines_after - lines_before,
        cluster.logs()
    );
    cluster.member(follower).start();
    cluster.assert_replicas_identical().await;
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
    cluster.append_at_leader("order-3", "first").await;
    cluster.member(follower).kill();
    for event_idx in 0..80 {
        cluster
            .append_at_leader("order-3", &format!("behind-{event_idx}"))
            .await;
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
    cluster.assert_replicas_identical().await;
    let log = cluster.local_log(follower).await;
    assert_eq!(log.len(), 81);
    assert_eq!(log[0].1, b"first".to_vec());
}

/// Positions stay gapless across leader changes (a transfer and a crash): the log is one
/// sequence whoever leads. Catches a new leader that reuses or skips positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_stay_gapless_across_leader_changes() {
    let mut cluster = Cluster::start(3).await;
    for event_idx in 0..10 {
        cluster
            .append_at_leader("order-4", &format!("a-{event_idx}"))
            .await;
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
        cluster
            .append_at_leader("order-4", &format!("b-{event_idx}"))
            .await;
    }
    let leader = cluster.leader().await;
    cluster.member(leader).kill();
    for event_idx in 0..10 {
        cluster
            .append_at_leader("order-4", &format!("c-{event_idx}"))
            .await;
    }
    let leader = cluster.leader().await;
    let log = cluster.local_log(leader).await;
    let positions: Vec<u64> = log.iter().map(|(position, _)| *position).collect();
    assert_eq!(positions, (1..=30).collect::<Vec<_>>());
}

/// A new leader answers a `leader` read only once it has applied every entry an earlier
/// leader acknowledged: here a follower that restarts behind a backlog takes over as soon as
/// its log holds the backlog, before its store has applied it. Catches a new leader that
/// serves `leader` reads from a store still catching up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_serves_leader_reads_only_after_applying_what_was_acknowledged_before() {
    const BATCHES: usize = 150;
    const EVENTS_PER_BATCH: usize = 100;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let next = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.member(next).kill();
    let mut writer = cluster.client(leader).await;
    let mut acknowledged = 0;
    for batch in 0..BATCHES {
        let events = (0..EVENTS_PER_BATCH)
            .map(|event_idx| event("order-7", &format!("backlog-{batch}-{event_idx}")))
            .collect();
        let receipt = writer
            .append(pb::AppendRequest {
                events,
                ..Default::default()
            })
            .await
            .expect("append the backlog")
            .into_inner()
            .receipt
            .expect("a receipt");
        acknowledged = receipt.events.last().expect("events").position;
    }
    cluster.member(next).start();
    cluster
        .admin(leader)
        .await
        .transfer_leader(pb::TransferLeaderRequest { node_id: next })
        .await
        .expect("the transfer waits for the restarted follower's log");
    let mut reader = cluster.client(next).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let head = loop {
        match reader
            .head(pb::HeadRequest {
                consistency: pb::ReadConsistency::Leader as i32,
            })
            .await
        {
            Ok(head) => break head.into_inner(),
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(status) => panic!("no leader read from node {next}: {status:?}"),
        }
    };
    assert!(
        head.position >= acknowledged,
        "node {next} answered a leader read at position {} with {acknowledged} acknowledged",
        head.position
    );
}

/// A transfer to a voter that cannot catch up (it is down, entries behind) is refused with
/// FAILED_PRECONDITION, and the leadership stays. Catches a transfer that starts an election
/// the voter must lose, leaving the leadership to whichever node wins it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_voter_that_lags_is_refused_and_changes_nothing() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let behind = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.member(behind).kill();
    for event_idx in 0..5 {
        cluster
            .append_at_leader("order-6", &format!("while-{behind}-is-down-{event_idx}"))
            .await;
    }
    let status = cluster
        .admin(leader)
        .await
        .transfer_leader(pb::TransferLeaderRequest { node_id: behind })
        .await
        .expect_err("a transfer to a voter that lags");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains(&format!("node {behind} holds the log up to entry")),
        "{status:?}"
    );
    assert_eq!(cluster.leader().await, leader, "the leadership stays");
    cluster
        .append_at_leader("order-6", "after-the-refusal")
        .await;
}

/// A transfer to a voter that holds the whole log but has stopped answering (frozen) is
/// refused with FAILED_PRECONDITION, and the leadership stays. Catches a transfer that hands
/// the leadership to a node that cannot start the election, so that another node wins one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_to_a_voter_that_stopped_answering_is_refused_and_changes_nothing() {
    let mut cluster = Cluster::start(3).await;
    let (_, leader) = cluster
        .append_at_leader("order-9", "before-the-freeze")
        .await;
    let last = cluster.status(leader).await.expect("status").last_log_index;
    // Every voter holds the whole log: only its silence can stop the transfer.
    cluster.applied_among(&[1, 2, 3], last).await;
    let frozen = (1..=3).find(|id| *id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|id| *id != frozen).collect();
    cluster.member(frozen).freeze();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status = cluster
        .admin(leader)
        .await
        .transfer_leader(pb::TransferLeaderRequest { node_id: frozen })
        .await
        .expect_err("a transfer to a voter that does not answer");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("has not answered this leader for"),
        "{status:?}"
    );
    assert_eq!(
        cluster.leader_among(&others).await,
        leader,
        "the leadership stays"
    );
    cluster.member(frozen).thaw();
    cluster.append_at_leader("order-9", "after-the-thaw").await;
}

/// A leader frozen while it waits for a lagging voter, and deposed meanwhile, answers the
/// transfer UNAVAILABLE when it runs again, not FAILED_PRECONDITION: the leadership did move,
/// and a client must look for the new leader rather than wait for the voter. Five nodes, so
/// that three elect a new leader with the voter down and the old leader frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_deposed_while_it_waits_to_transfer_says_it_no_longer_leads() {
    let mut cluster = Cluster::start(5).await;
    let leader = cluster.leader().await;
    let behind = (1..=5).find(|id| *id != leader).expect("a follower");
    cluster.member(behind).kill();
    cluster
        .append_at_leader("order-8", "while-a-voter-is-down")
        .await;
    let mut admin = cluster.admin(leader).await;
    let transfer = tokio::spawn(async move {
        admin
            .transfer_leader(pb::TransferLeaderRequest { node_id: behind })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.member(leader).freeze();
    let others: Vec<u64> = (1..=5)
        .filter(|id| ![leader, behind].contains(id))
        .collect();
    let successor = cluster.leader_among(&others).await;
    // Past the leader's catch-up wait (5 s from the request), so it ends as soon as it runs.
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.member(leader).thaw();
    let status = transfer
        .await
        .expect("the transfer task")
        .expect_err("a deposed leader transfers nothing");
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "node {successor} took over: {status:?}"
    );
}

/// A keyed append sent to a leader that freezes before answering is sent again, with its key,
/// to the leader the others elect, and written once. HTTP/2's keepalive ends the frozen call
/// after 15 s, past the client's follow deadline (10 s). Catches a client that then gives up
/// and reports the broken call as a plain UNAVAILABLE ("http2 error") though the append may
/// have been written, and one that does not send it again to the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_append_held_by_a_frozen_leader_is_written_once_through_the_next() {
    use causeway_client::{AppendBuilder, EventBuilder};
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let addresses: Vec<String> = cluster
        .members
        .iter()
        .map(|member| format!("http://{}", member.addr))
        .collect();
    let client = causeway_client::Client::connect(&addresses.join(","))
        .await
        .expect("connect to the members");
    let keyed = |n: u32| {
        AppendBuilder::new()
            .event(EventBuilder::new("acme", "order-12", "Noted"))
            .idempotency_key(format!("note-{n}"))
    };
    client
        .append(keyed(1))
        .await
        .expect("the leader answers the first");

    cluster.member(leader).freeze();
    let written = client.append(keyed(2)).await;
    cluster.member(leader).thaw();
    let receipt = written.expect("sent again to the new leader, with its key");
    assert_eq!(receipt.events.len(), 1, "{receipt:?}");
    let events = client
        .read_entity("acme", "order-12", 1, pb::Direction::Forward, 10)
        .await
        .expect("read the entity back");
    assert_eq!(
        events.len(),
        2,
        "each keyed append written once: {events:?}"
    );
}

/// A follower stopped with SIGTERM ends the leader's replication stream into it and closes,
/// instead of waiting out its shutdown grace (30 s) for a stream the leader keeps open for
/// good; the others go on. Catches a graceful shutdown that waits on peer streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stopped_with_sigterm_does_not_wait_out_its_grace() {
    let mut cluster = Cluster::start(3).await;
    cluster
        .append_at_leader("order-11", "before-the-stop")
        .await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.member(follower).terminate();
    let log = cluster.member(follower).log_text();
    assert!(
        !log.contains("after the grace period"),
        "node {follower} waited out its grace:\n{log}"
    );
    cluster.append_at_leader("order-11", "after-the-stop").await;
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
    let leader_addr = cluster.members[(leader - 1) as usize].advertise.to_string();
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
    // An append stream to the follower gets the same refusal as its answer, in place, with the
    // leader's address in the ErrorInfo.
    let request = pb::AppendStreamRequest {
        append: Some(pb::AppendRequest {
            events: vec![event("order-5", "streamed-to-a-follower")],
            ..Default::default()
        }),
    };
    let answer = cluster
        .client(follower)
        .await
        .append_stream(tokio_stream::iter([request]))
        .await
        .expect("the stream opens")
        .into_inner()
        .message()
        .await
        .expect("the stream answers")
        .and_then(|response| response.answer);
    let Some(pb::append_stream_response::Answer::Error(refused)) = answer else {
        panic!("a follower's stream commits nothing: {answer:?}");
    };
    assert_eq!(refused.code, Code::Unavailable as i32, "{refused:?}");
    assert!(refused.message.contains(&leader_addr), "{refused:?}");
    let refused = tonic::Status::with_details(
        Code::from(refused.code),
        refused.message.clone(),
        prost::Message::encode_to_vec(&refused).into(),
    );
    let info = tonic_types::StatusExt::get_details_error_info(&refused).expect("an ErrorInfo");
    assert_eq!(
        info.metadata.get("leader_address"),
        Some(&leader_addr),
        "{info:?}"
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
    let (position, _) = cluster.append_at_leader("order-5", "to-the-leader").await;
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
        .args(["--admin-listen", "off"])
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

/// A follower whose data folder was wiped comes back under its id and is caught up again.
/// Catches a leader that kept the wiped node's old progress: it sent it nothing, reported
/// LAG 0, and the cluster had lost a copy without anything saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_is_caught_up_again() {
    let mut cluster = Cluster::start(3).await;
    append_80(&cluster, "order-8").await;
    let leader = cluster.leader().await;
    let wiped = if leader == 3 { 2 } else { 3 };
    cluster.member(wiped).terminate();
    let dir = cluster.member(wiped).data_dir.clone();
    std::fs::remove_dir_all(&dir).expect("wipe the follower");
    cluster.member(wiped).start();
    append_80(&cluster, "order-8").await;
    let expected = cluster.local_log(leader).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.local_log(wiped).await != expected {
        assert!(
            Instant::now() < deadline,
            "node {wiped} was not caught up: {} of {} events; status {:?}",
            cluster.local_log(wiped).await.len(),
            expected.len(),
            cluster.status(leader).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.assert_replicas_identical().await;
}

/// Appends 80 events of about 80 bytes of payload to `entity` through the leader.
async fn append_80(cluster: &Cluster, entity: &str) {
    for event_idx in 0..80 {
        cluster
            .append_at_leader(
                entity,
                &format!("payload-{event_idx:04}-{}", "x".repeat(60)),
            )
            .await;
    }
}

/// Flips one byte of a stopped member's newest event segment, at the offset `at` picks from
/// the offset of the last written (non-zero) byte. No checksum is recomputed.
fn flip_a_byte(data_dir: &std::path::Path, at: impl FnOnce(usize) -> usize) {
    let segment = newest_segment(data_dir);
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    let last_written = bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .expect("the segment holds frames");
    bytes[at(last_written)] ^= 0x5a;
    std::fs::write(&segment, &bytes).expect("write the damaged segment");
}

/// The newest event segment in `store_events` (a member's `raft/state/{G}/store/events`).
fn newest_segment(data_dir: &std::path::Path) -> std::path::PathBuf {
    let state = data_dir.join("raft").join("state");
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(&state)
        .expect("the member's raft state")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("store").join("events").is_dir())
        .flat_map(|generation| {
            std::fs::read_dir(generation.join("store").join("events"))
                .expect("the events folder")
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
                .collect::<Vec<_>>()
        })
        .collect();
    segments.sort();
    segments.pop().expect("an event segment")
}

/// A follower's event store damaged near its end (one flipped byte in a frame with whole
/// frames after it, which a single node refuses to open) is cut back to the last whole frame
/// before the damage, the cut bytes quarantined, with one WARN saying so; the follower then
/// re-applies the cut events from its Raft log, serves again, and ends byte-identical to the
/// others at the commit position. Catches a cluster member that stays down on damage its own
/// Raft log can mend, and one that comes back with a hole or a different history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_repairs_its_damaged_store_tail_from_its_raft_log() {
    let mut cluster = Cluster::start(3).await;
    append_80(&cluster, "order-9").await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.assert_replicas_identical().await;
    cluster.member(follower).terminate();

    // One byte flipped about 2 KiB before the last written byte: inside a frame with several
    // whole frames after it. No checksum is recomputed.
    flip_a_byte(&cluster.member(follower).data_dir, |last_written| {
        last_written - 2048
    });

    cluster.member(follower).start();
    let log = cluster.member(follower).log_text();
    let warning = log
        .lines()
        .find(|line| line.contains("they will be refilled from the Raft log"))
        .unwrap_or_else(|| panic!("no WARN about the cut in node {follower}'s log:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("quarantine"), "{warning}");

    cluster
        .append_at_leader("order-9", "after-the-repair")
        .await;
    cluster.assert_replicas_identical().await;
    let expected = cluster.local_log(leader).await;
    assert_eq!(expected.len(), 81);
    assert_eq!(
        cluster.local_log(follower).await,
        expected,
        "the repaired follower holds every event"
    );
}

/// The Raft index a member's log is purged through (0 before any purge), read from its
/// `PURGED` file, which is replaced atomically, so it may be read while the member runs.
fn purged_through(data_dir: &std::path::Path) -> u64 {
    use causeway_server::cluster::{codec, log};
    let path = data_dir.join("raft").join(log::PURGED_FILE);
    let Some(bytes) = causeway_core::metafile::read(&path, log::PURGED_MAGIC).expect("PURGED")
    else {
        return 0;
    };
    let mut reader = codec::Reader::new(&bytes, "purged log id");
    codec::get_log_id(&mut reader)
        .expect("a log id")
        .map_or(0, |purged| purged.index)
}

/// The same damage where the follower's Raft log no longer holds the cut entries (it took a
/// snapshot and purged the log after it): the follower's open cuts the store back below its
/// purged log, restores the store from its own newest snapshot, applies the log after it, and
/// ends byte-identical to the others. Catches a member that stops, or comes back with a hole,
/// when the entries it would refill from are gone from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_repairs_a_store_tail_its_purged_raft_log_cannot_refill() {
    let args = ["--snapshot-entries", "20", "--log-keep-entries", "5"];
    let mut cluster = Cluster::new(3);
    for member in &mut cluster.members {
        member.start_with(&args);
    }
    cluster.init_all().await;
    append_80(&cluster, "order-10").await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.assert_replicas_identical().await;
    // Snapshots are taken in the background: wait until the follower's log is purged well
    // past the middle of its 80 events (about entry 42), where the damage goes.
    let data_dir = cluster.member(follower).data_dir.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while purged_through(&data_dir) < 60 {
        assert!(
            Instant::now() < deadline,
            "node {follower} did not purge its log past entry 60 (purged through {})",
            purged_through(&data_dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.member(follower).terminate();
    let purged = purged_through(&data_dir);

    // One byte flipped in the middle of the segment: the frames from there on are cut, about
    // 40 events, all of them in entries the follower's log has purged.
    flip_a_byte(&data_dir, |last_written| last_written / 2);

    cluster.member(follower).start_with(&args);
    let log = cluster.member(follower).log_text();
    let warning = log
        .lines()
        .find(|line| line.contains("they will be refilled from the Raft log"))
        .unwrap_or_else(|| panic!("no WARN about the cut in node {follower}'s log:\n{log}"));
    let first_cut: u64 = warning
        .split("cut positions ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|first| first.parse().ok())
        .unwrap_or_else(|| panic!("no cut position in {warning}"));
    assert!(
        first_cut < 60 && first_cut + 5 < purged,
        "the cut (from position {first_cut}) must reach below the purged log ({purged})"
    );

    cluster
        .append_at_leader("order-10", "after-the-repair")
        .await;
    cluster.assert_replicas_identical().await;
    let expected = cluster.local_log(leader).await;
    assert_eq!(expected.len(), 81);
    assert_eq!(
        cluster.local_log(follower).await,
        expected,
        "the repaired follower holds every event"
    );
}
