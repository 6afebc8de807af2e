//! Membership changes, one named test each: nodes join, are promoted and leave while clients
//! write, and a single node grows into a cluster; nothing acknowledged may be lost or doubled.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;

use crate::clients::{Answer, Router};
use crate::history::{self, AppendOutcome, History, NodeLog, Operation};
use crate::nodes::{Cluster, SCOPE, SETTLE_WAIT, event, pb};

/// The entity the load writes to, so the checker also sees its versions stay gapless.
const LOAD_ENTITY: &str = "load";

/// A client appending unique payloads back to back through whichever node leads, each with an
/// idempotency key that its retries reuse, recording every append's outcome.
struct Load {
    stop: watch::Sender<bool>,
    n_acknowledged: watch::Receiver<usize>,
    task: JoinHandle<Vec<Operation>>,
}

impl Load {
    fn start(cluster: &Cluster) -> Load {
        let mut router = Router::new(cluster);
        let (stop, stopped) = watch::channel(false);
        let (acknowledged_tx, n_acknowledged) = watch::channel(0);
        let task = tokio::spawn(async move {
            let mut operations = Vec::new();
            let mut append_idx = 0;
            while !*stopped.borrow() {
                let payload = format!("load-{append_idx}");
                append_idx += 1;
                let request = pb::AppendRequest {
                    events: vec![event(LOAD_ENTITY, &payload)],
                    idempotency_key: payload.clone(),
                    ..Default::default()
                };
                let invoked = Instant::now();
                let outcome = loop {
                    match router.append_once(request.clone()).await {
                        Answer::Acknowledged(receipt) => {
                            let committed = &receipt.events[0];
                            break AppendOutcome::Ok {
                                position: committed.position,
                                entity_version: Some((
                                    format!("{SCOPE}/{LOAD_ENTITY}"),
                                    committed.version,
                                )),
                            };
                        }
                        Answer::Refused(status) => panic!("the load was refused: {status:?}"),
                        // The same key again: applied once, whatever the attempts before did.
                        Answer::NotLeader(_) | Answer::Unknown(_) => {
                            if invoked.elapsed() > SETTLE_WAIT {
                                break AppendOutcome::Unknown;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                };
                if matches!(outcome, AppendOutcome::Ok { .. }) {
                    acknowledged_tx.send_modify(|n_acknowledged| *n_acknowledged += 1);
                }
                operations.push(Operation::Append {
                    client: 0,
                    payload: payload.into_bytes(),
                    invoked,
                    completed: Instant::now(),
                    outcome,
                });
            }
            operations
        });
        Load {
            stop,
            n_acknowledged,
            task,
        }
    }

    /// Waits until `n_more` further appends are acknowledged: the load goes on.
    async fn progresses(&mut self, cluster: &Cluster, n_more: usize, while_doing: &str) {
        let target = *self.n_acknowledged.borrow() + n_more;
        let waited = tokio::time::timeout(
            SETTLE_WAIT,
            self.n_acknowledged
                .wait_for(|n_acknowledged| *n_acknowledged >= target),
        )
        .await;
        if waited.is_err() {
            let mut statuses = String::new();
            for id in cluster.running() {
                statuses += &format!("node {id}: {:?}\n", cluster.status(id).await);
            }
            panic!(
                "the load stalled {while_doing}\n{statuses}{}",
                cluster.logs()
            );
        }
    }

    async fn stop(self) -> Vec<Operation> {
        self.stop.send_replace(true);
        self.task.await.expect("the load's task")
    }
}

/// Runs an admin call at the leader among `voters`, retrying while leadership moves.
macro_rules! at_leader {
    ($cluster:expr, $voters:expr, $call:ident, $request:expr) => {{
        let deadline = Instant::now() + SETTLE_WAIT;
        loop {
            let leader = $cluster.leader_among($voters).await;
            match $cluster.admin(leader).await.$call($request).await {
                Ok(response) => break response.into_inner(),
                Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => panic!("{} failed: {status:?}", stringify!($call)),
            }
        }
    }};
}

/// The voter ids of a membership, sorted.
fn voter_ids(membership: Option<&pb::Membership>) -> Vec<u64> {
    let mut ids: Vec<u64> = membership
        .map(|membership| membership.voters.iter().map(|node| node.node_id).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Every acknowledged append survives membership changes made under load (a learner added
/// and promoted, a follower removed, then the leader itself removed), exactly once at its
/// acknowledged position, and the remaining members end byte-identical. Catches a joint
/// consensus that commits on the wrong quorum, a removed leader that acknowledges what the
/// new configuration never committed, and a learner caught up with a gap or a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_under_load_lose_nothing() {
    let mut cluster = Cluster::new(4);
    for member in &mut cluster.members {
        member.start();
    }
    cluster.init(&[1, 2, 3]).await;
    let mut load = Load::start(&cluster);
    load.progresses(&cluster, 10, "before any change").await;

    let added = at_leader!(
        cluster,
        &[1, 2, 3],
        add_learner,
        pb::AddLearnerRequest {
            node: Some(cluster.node(4)),
        }
    );
    assert!(
        added
            .membership
            .as_ref()
            .is_some_and(|membership| membership.learners.iter().any(|node| node.node_id == 4)),
        "node 4 is not a learner: {added:?}"
    );
    load.progresses(&cluster, 10, "after adding a learner")
        .await;

    let promoted = at_leader!(
        cluster,
        &[1, 2, 3],
        promote_voter,
        pb::PromoteVoterRequest { node_id: 4 }
    );
    assert_eq!(voter_ids(promoted.membership.as_ref()), [1, 2, 3, 4]);
    load.progresses(&cluster, 10, "after promoting the learner")
        .await;

    let leader = cluster.leader_among(&[1, 2, 3, 4]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let mut voters: Vec<u64> = (1..=4).filter(|id| *id != follower).collect();
    let removed = at_leader!(
        cluster,
        &voters,
        remove_node,
        pb::RemoveNodeRequest { node_id: follower }
    );
    assert_eq!(voter_ids(removed.membership.as_ref()), voters);
    load.progresses(&cluster, 10, "after removing a follower")
        .await;

    // Sent to the leader itself, which may step down midway (once it is no longer a voter);
    // whatever it answers, its successor then drops whatever is left of it.
    let leader = cluster.leader_among(&voters).await;
    let answer = cluster
        .admin(leader)
        .await
        .remove_node(pb::RemoveNodeRequest { node_id: leader })
        .await;
    println!("the leader (node {leader}) asked to remove itself answered {answer:?}");
    voters.retain(|id| *id != leader);
    let successor = cluster.leader_among(&voters).await;
    let membership = cluster
        .status(successor)
        .await
        .expect("status")
        .membership
        .expect("a membership");
    let membership = if membership
        .learners
        .iter()
        .any(|node| node.node_id == leader)
    {
        at_leader!(
            cluster,
            &voters,
            remove_node,
            pb::RemoveNodeRequest { node_id: leader }
        )
        .membership
        .expect("a membership")
    } else {
        membership
    };
    assert_eq!(voter_ids(Some(&membership)), voters);
    assert!(
        membership.learners.is_empty(),
        "the removed leader is still a member: {membership:?}"
    );
    load.progresses(&cluster, 10, "after removing the leader")
        .await;

    let operations = load.stop().await;
    let new_leader = cluster.leader_among(&voters).await;
    cluster.assert_identical_among(&voters).await;
    let mut node_logs = Vec::new();
    for id in &voters {
        node_logs.push(NodeLog {
            node: format!("node {id}"),
            entries: cluster.local_log(*id).await,
        });
    }
    let history = History {
        operations,
        final_log: cluster.final_log(new_leader).await,
        node_logs,
    };
    let report = history::check(&history);
    println!("membership under load: {:?}", report.counts);
    report.assert_valid();
    assert!(report.counts.appends_ok >= 50, "{:?}", report.counts);
    assert_eq!(
        report.counts.final_positions, report.counts.appends_ok,
        "every position is an acknowledged append"
    );
}

/// A single node's data survives growing it into a three-node cluster: the node is stopped,
/// restarted with a node id on the same directory, formed alone, and two fresh nodes join as
/// learners and are promoted; all three then hold the old events and the new ones, identical.
/// Catches an adoption that loses the single node's events, learners that start from an
/// empty log instead of a snapshot holding the events written before the cluster existed, and
/// an init with other voters at once, which gave them the log without those events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_grows_into_three_without_losing_data() {
    let mut cluster = Cluster::new(3);
    cluster.member(1).start_single();
    let mut client = cluster.client(1).await;
    let mut expected = Vec::new();
    for event_idx in 0..50 {
        let payload = format!("single-{event_idx}");
        let receipt = client
            .append(pb::AppendRequest {
                events: vec![event("order-6", &payload)],
                ..Default::default()
            })
            .await
            .expect("a single node appends")
            .into_inner()
            .receipt
            .expect("a receipt");
        assert_eq!(receipt.events[0].position, event_idx + 1);
        expected.push((event_idx + 1, payload.into_bytes()));
    }
    drop(client);
    cluster.member(1).terminate();

    cluster.member(1).start();
    // Formed with other voters at once, they would take the log without the old events.
    let refused = cluster
        .admin(1)
        .await
        .init_cluster(pb::InitClusterRequest {
            voters: vec![cluster.node(1), cluster.node(2), cluster.node(3)],
        })
        .await
        .expect_err("other voters beside a node with events");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("alone"), "{refused:?}");
    cluster.init(&[1]).await;
    assert_eq!(cluster.local_log(1).await, expected, "adoption lost events");
    for id in [2, 3] {
        cluster.member(id).start();
        at_leader!(
            cluster,
            &[1],
            add_learner,
            pb::AddLearnerRequest {
                node: Some(cluster.node(id)),
            }
        );
        at_leader!(
            cluster,
            &[1],
            promote_voter,
            pb::PromoteVoterRequest { node_id: id }
        );
    }
    for event_idx in 0..10 {
        let payload = format!("clustered-{event_idx}");
        let (position, _) = cluster.append_at_leader("order-6", &payload).await;
        expected.push((position, payload.into_bytes()));
    }
    let status = cluster.status(1).await.expect("status");
    assert_eq!(voter_ids(status.membership.as_ref()), [1, 2, 3]);
    cluster.assert_replicas_identical().await;
    for id in 1..=3 {
        assert_eq!(
            cluster.local_log(id).await,
            expected,
            "node {id} does not hold every event"
        );
    }
}

/// A node whose data folder holds a single node's events refuses to join another cluster:
/// asked before it is added as a learner, it says why, the membership does not change, it
/// keeps its own events and takes none of the cluster's, and the cluster goes on. Catches the
/// cluster's log applied over the adopted events, which gave them and the cluster's events
/// positions no other member has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holding_a_single_nodes_events_joins_no_cluster() {
    let mut cluster = Cluster::new(3);
    cluster.member(3).start_single();
    let mut client = cluster.client(3).await;
    for event_idx in 0..5 {
        client
            .append(pb::AppendRequest {
                events: vec![event("alien", &format!("alien-{event_idx}"))],
                ..Default::default()
            })
            .await
            .expect("a single node appends");
    }
    drop(client);
    let own = cluster.local_log(3).await;
    assert_eq!(own.len(), 5);
    cluster.member(3).terminate();

    cluster.member(1).start();
    cluster.member(2).start();
    cluster.init(&[1, 2]).await;
    for event_idx in 0..10 {
        cluster
            .append_at_leader_among(&[1, 2], "order-7", &format!("clustered-{event_idx}"))
            .await;
    }
    cluster.member(3).start();
    let leader = cluster.leader_among(&[1, 2]).await;
    // Asked first, node 3 says why it cannot join, and nothing changes.
    let refused = cluster
        .admin(leader)
        .await
        .add_learner(pb::AddLearnerRequest {
            node: Some(cluster.node(3)),
        })
        .await
        .expect_err("node 3 cannot join");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("node 3 holds 5 events"),
        "{refused:?}"
    );
    let status = cluster.status(leader).await.expect("the leader's status");
    assert_eq!(voter_ids(status.membership.as_ref()), [1, 2]);
    assert!(
        status
            .membership
            .as_ref()
            .is_some_and(|membership| membership.learners.is_empty()),
        "{status:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cluster.local_log(3).await,
        own,
        "node 3 took the cluster's entries"
    );
    let status = cluster.status(3).await.expect("node 3's status");
    assert_eq!(status.cluster_id, "", "node 3 joined a cluster");
    let log = cluster.member(3).log_text();
    assert!(log.contains("refuses to join"), "{log}");
    // The cluster goes on without it.
    cluster
        .append_at_leader_among(&[1, 2], "order-7", "after")
        .await;
    cluster.assert_identical_among(&[1, 2]).await;
}

/// Cluster changes that could never work are refused before anything changes: two voters on
/// one address, this node under an address it does not advertise, a member re-added at
/// another address or at another member's, the removal of a node that is no member. Catches an init that leaves a
/// cluster that can never elect a leader, or followers that redirect clients to a dead
/// address, and changes that silently do nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_membership_changes_are_refused() {
    let mut cluster = Cluster::new(3);
    for id in 1..=3 {
        cluster.member(id).start();
    }
    let mut admin = cluster.admin(1).await;
    let shared_address = pb::ClusterNode {
        node_id: 2,
        address: cluster.node(1).address,
    };
    let refused = admin
        .init_cluster(pb::InitClusterRequest {
            voters: vec![cluster.node(1), shared_address],
        })
        .await
        .expect_err("two voters on one address");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("also given for node 1"),
        "{refused:?}"
    );

    let elsewhere = pb::ClusterNode {
        node_id: 1,
        address: "127.0.0.1:1".to_string(),
    };
    let refused = admin
        .init_cluster(pb::InitClusterRequest {
            voters: vec![elsewhere, cluster.node(2)],
        })
        .await
        .expect_err("this node under another address");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("advertises"), "{refused:?}");

    cluster.init_all().await;
    let leader = cluster.leader().await;
    let mut admin = cluster.admin(leader).await;
    let moved = pb::ClusterNode {
        node_id: leader % 3 + 1,
        address: "127.0.0.9:7".to_string(),
    };
    let refused = admin
        .add_learner(pb::AddLearnerRequest { node: Some(moved) })
        .await
        .expect_err("a member at another address");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let taken = pb::ClusterNode {
        node_id: 7,
        address: cluster.node(leader).address,
    };
    let refused = admin
        .add_learner(pb::AddLearnerRequest { node: Some(taken) })
        .await
        .expect_err("another member's address");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = admin
        .remove_node(pb::RemoveNodeRequest { node_id: 9 })
        .await
        .expect_err("no such member");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let status = cluster.status(leader).await.expect("the leader's status");
    let voters = voter_ids(status.membership.as_ref());
    assert_eq!(voters, vec![1, 2, 3]);
}
