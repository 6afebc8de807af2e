//! Partitions, one named test each: what a node cut off from its peers may and may not do.
//!
//! Every cluster here runs behind proxies (`Cluster::start_behind_proxies`): node `i`
//! advertises its proxy on `127.0.0.i`, so all Raft traffic crosses the proxies, and
//! `Cluster::isolate` cuts one node off both ways by the peers' source IPs. The test's own
//! clients dial the nodes directly, so a test keeps talking to the node it cut off.

use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tonic::Code;

use crate::clients::{ANSWER_WAIT, Answer, classify};
use crate::nodes::{Cluster, event, pb};

/// An election timeout's upper bound in the test clusters (300 ms drawn up to twice that).
const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(600);

/// An old leader cut off from the majority acknowledges nothing, and what it was sent is not
/// in the log once the partition heals: the majority elects a new leader and commits without
/// it, the old leader rejoins as a follower, and every replica ends byte-identical. Catches a
/// leader that acknowledges before a quorum has the entry, serves a linearizable or a `leader`
/// read on a lease it cannot renew, or keeps uncommitted entries of its old term after
/// rejoining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_old_leader_acknowledges_nothing() {
    let cluster = Cluster::start_behind_proxies(3).await;
    let mut acknowledged = Vec::new();
    for event_idx in 0..10 {
        let payload = format!("before-{event_idx}");
        let (position, _) = cluster.append_at_leader("order-1", &payload).await;
        acknowledged.push((position, payload.into_bytes()));
    }
    let old_leader = cluster.leader().await;
    let old_term = cluster.status(old_leader).await.expect("status").term;
    let majority: Vec<u64> = (1..=3).filter(|id| *id != old_leader).collect();
    cluster.isolate(old_leader);

    // Writes to the cut-off leader, the first at once (it may still think it leads), the last
    // after its lease has surely run out.
    let mut cut_off_writes = JoinSet::new();
    let cut_off_payloads: Vec<String> = (0..3).map(|idx| format!("cut-off-{idx}")).collect();
    for (write_idx, payload) in cut_off_payloads.iter().enumerate() {
        let mut client = cluster.client(old_leader).await;
        let request = pb::AppendRequest {
            events: vec![event("order-1", payload)],
            idempotency_key: format!("key-{payload}"),
            ..Default::default()
        };
        let payload = payload.clone();
        cut_off_writes.spawn(async move {
            tokio::time::sleep(ELECTION_TIMEOUT_MAX * write_idx as u32).await;
            let answer = tokio::time::timeout(ANSWER_WAIT, client.append(request)).await;
            (payload, classify(answer.ok()))
        });
    }

    for event_idx in 0..20 {
        let payload = format!("majority-{event_idx}");
        let (position, _) = cluster
            .append_at_leader_among(&majority, "order-1", &payload)
            .await;
        acknowledged.push((position, payload.into_bytes()));
    }
    let new_leader = cluster.leader_among(&majority).await;
    let new_term = cluster.status(new_leader).await.expect("status").term;
    assert!(new_term > old_term, "a new leader needs a new term");

    let majority_head = acknowledged.last().expect("appends").0;
    let read = tokio::time::timeout(
        ANSWER_WAIT,
        cluster.client(old_leader).await.head(pb::HeadRequest {
            consistency: pb::ReadConsistency::Linearizable as i32,
        }),
    )
    .await;
    if let Ok(Ok(head)) = read {
        panic!(
            "the cut-off old leader served a linearizable read at position {} (the majority \
             is at {majority_head})",
            head.into_inner().position
        );
    }
    // Its lease ran out before the majority could elect another: a `leader` read is refused.
    let read = tokio::time::timeout(
        ANSWER_WAIT,
        cluster.client(old_leader).await.head(pb::HeadRequest {
            consistency: pb::ReadConsistency::Leader as i32,
        }),
    )
    .await;
    match read {
        Ok(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Ok(head)) => panic!(
            "the cut-off old leader served a leader read at position {} past its lease (the \
             majority is at {majority_head})",
            head.into_inner().position
        ),
        Err(_) => {
            panic!("the cut-off old leader left a leader read unanswered for {ANSWER_WAIT:?}")
        }
    }

    while let Some(joined) = cut_off_writes.join_next().await {
        let (payload, answer) = joined.expect("a cut-off write's task");
        assert!(
            !matches!(answer, Answer::Acknowledged(_)),
            "the cut-off old leader acknowledged {payload}: {answer:?}"
        );
    }

    cluster.heal();
    let (position, _) = cluster.append_at_leader("order-1", "after-heal").await;
    acknowledged.push((position, b"after-heal".to_vec()));
    assert_eq!(
        cluster.leader().await,
        new_leader,
        "the rejoining old leader took the leadership back"
    );
    let rejoined = cluster.status(old_leader).await.expect("status");
    assert_eq!(rejoined.role, pb::NodeRole::Follower as i32);
    cluster.assert_replicas_identical().await;

    let log = cluster.local_log(old_leader).await;
    let positions: Vec<u64> = log.iter().map(|(position, _)| *position).collect();
    assert_eq!(positions, (1..=log.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        log, acknowledged,
        "the log is exactly what was acknowledged"
    );
    for payload in &cut_off_payloads {
        assert!(
            !log.iter().any(|(_, bytes)| bytes == payload.as_bytes()),
            "{payload}, never acknowledged, is in the log"
        );
    }
}

/// A follower cut off for many election timeouts does not depose a healthy leader when it
/// comes back: with pre-vote it cannot win a vote while cut off, so its term stays put and
/// the leader and term are unchanged after healing. Catches a missing or ignored pre-vote (a
/// rejoining node whose inflated term forces a needless election) and a cut that leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partitioned_follower_does_not_depose_the_leader() {
    let cluster = Cluster::start_behind_proxies(3).await;
    cluster.append_at_leader("order-2", "first").await;
    let leader = cluster.leader().await;
    let before = cluster.status(leader).await.expect("status");
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let others: Vec<u64> = (1..=3).filter(|id| *id != follower).collect();
    cluster.isolate(follower);

    let isolated_at = Instant::now();
    let mut n_appends = 0;
    while isolated_at.elapsed() < 4 * ELECTION_TIMEOUT_MAX {
        cluster
            .append_at_leader_among(&others, "order-2", &format!("while-cut-off-{n_appends}"))
            .await;
        n_appends += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_off = cluster.status(follower).await.expect("status");
    let leading = cluster.status(leader).await.expect("status");
    assert!(
        cut_off.last_log_index < leading.last_log_index,
        "the cut-off follower received entries: the partition leaks"
    );
    assert_eq!(
        cut_off.term, before.term,
        "the cut-off follower raised its term without a quorum's pre-vote"
    );

    cluster.heal();
    cluster.append_at_leader("order-2", "after-heal").await;
    // Long enough for a disruptive rejoin to show up as a new election.
    tokio::time::sleep(3 * ELECTION_TIMEOUT_MAX).await;
    assert_eq!(cluster.leader().await, leader, "the leader was deposed");
    let after = cluster.status(leader).await.expect("status");
    assert_eq!(
        after.term, before.term,
        "an election happened after healing"
    );
    cluster.assert_replicas_identical().await;
    assert_eq!(cluster.local_log(follower).await.len(), n_appends + 2);
}
