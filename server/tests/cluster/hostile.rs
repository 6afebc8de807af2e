//! A hostile sender on the node-to-node service: requests that carry the right cluster id and
//! target (both are public: `GetClusterStatus` tells them) but are malformed or come from
//! outside the membership (votes, snapshots, leadership transfers). Each is refused with a
//! typed error; no node stops, no leader is deposed. (A well-formed forgery from a member's id
//! is for authentication, not for checks.)

use causeway_server::cluster::pb as raft_pb;
use causeway_server::cluster::state::encode_snapshot_meta;
use causeway_server::cluster::types::{SnapshotMeta, log_id};
use raft_pb::raft_service_client::RaftServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::nodes::{Cluster, channel, pb};

fn header(target: u64, source: u64, cluster_id: &str) -> Option<raft_pb::Header> {
    Some(raft_pb::Header {
        target_node_id: target,
        source_node_id: source,
        cluster_id: cluster_id.to_string(),
    })
}

fn vote(term: u64, node_id: u64) -> Option<raft_pb::Vote> {
    Some(raft_pb::Vote {
        term,
        node_id,
        committed: true,
    })
}

async fn peer(cluster: &Cluster, id: u64) -> RaftServiceClient<Channel> {
    let addr = cluster.members[(id - 1) as usize].addr;
    RaftServiceClient::new(channel(addr).await)
}

async fn status(cluster: &Cluster, id: u64) -> pb::GetClusterStatusResponse {
    cluster
        .status(id)
        .await
        .expect("the node answers its status")
}

/// Malformed entries, a checkpoint that does not parse, a vote from a node outside the
/// membership and a replication stream meant for another node are each refused; every node keeps running and the leader keeps its term.
/// Catches a node that hands a gap to its log (which stops it), installs a snapshot that
/// fails (which stops it), or lets a stranger's vote with a higher term depose the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_crashes_no_node_and_deposes_no_leader() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.append_at_leader("order-7", "first").await;
    let before = status(&cluster, follower).await;
    let (term, cluster_id) = (before.term, before.cluster_id.clone());

    // Entries that leave a gap after prev_log_id, as the leader's vote.
    let gap = raft_pb::AppendEntriesRequest {
        header: header(follower, leader, &cluster_id),
        vote: vote(term, leader),
        prev_log_id: Some(raft_pb::LogId {
            term,
            index: before.last_log_index,
        }),
        entries: vec![
            causeway_server::cluster::codec::encode_entry(&openraft::Entry {
                log_id: log_id(term, 12_345_678),
                payload: openraft::EntryPayload::Blank,
            })
            .into(),
        ],
        leader_commit: None,
    };
    let refused = peer(&cluster, follower)
        .await
        .append_entries(gap)
        .await
        .expect_err("entries with a gap");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // A snapshot whose checkpoint manifest is not a manifest.
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(term, before.last_log_index + 10)),
        last_membership: Default::default(),
    };
    let junk = b"not json!!!".to_vec();
    let parts = vec![
        raft_pb::InstallSnapshotRequest {
            part: Some(raft_pb::install_snapshot_request::Part::Header(
                raft_pb::SnapshotHeader {
                    header: header(follower, leader, &cluster_id),
                    vote: vote(term, leader),
                    meta: encode_snapshot_meta(&meta).into(),
                    files: vec![raft_pb::SnapshotFile {
                        name: causeway_core::store::MANIFEST_FILE.to_string(),
                        length: junk.len() as u64,
                    }],
                },
            )),
        },
        raft_pb::InstallSnapshotRequest {
            part: Some(raft_pb::install_snapshot_request::Part::Chunk(
                raft_pb::SnapshotChunk { data: junk.into() },
            )),
        },
    ];
    let refused = peer(&cluster, follower)
        .await
        .install_snapshot(tokio_stream::iter(parts))
        .await
        .expect_err("a snapshot that does not parse");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // The refusal names the file as the sender did, not where this node put it.
    assert!(
        !refused.message().contains("incoming-") && !refused.message().contains("snapshots/"),
        "{refused:?}"
    );

    // File lists a node cannot write: names that are not plain relative paths (`events/.`
    // would write the directory `events` as a file), and names that could each be written,
    // but not together.
    let bad_lists: [(&[&str], &str); 8] = [
        (&["events/."], "not a relative path"),
        (&["../x"], "not a relative path"),
        (&["/etc/x"], "not a relative path"),
        (&["a//b"], "not a relative path"),
        (&["."], "not a relative path"),
        (&["a\0b"], "not a relative path"),
        (&["events/x", "events/x"], "listed twice"),
        (&["events", "events/x"], "the directory of another"),
    ];
    for (names, said) in bad_lists {
        let listed = vec![raft_pb::InstallSnapshotRequest {
            part: Some(raft_pb::install_snapshot_request::Part::Header(
                raft_pb::SnapshotHeader {
                    header: header(follower, leader, &cluster_id),
                    vote: vote(term, leader),
                    meta: encode_snapshot_meta(&meta).into(),
                    files: names
                        .iter()
                        .map(|name| raft_pb::SnapshotFile {
                            name: name.to_string(),
                            length: 1,
                        })
                        .collect(),
                },
            )),
        }];
        let refused = peer(&cluster, follower)
            .await
            .install_snapshot(tokio_stream::iter(listed))
            .await
            .expect_err("a file list that cannot be written");
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{names:?}: {refused:?}"
        );
        assert!(refused.message().contains(said), "{names:?}: {refused:?}");
    }

    // A leadership-transfer vote with a far higher term from a node that is no member.
    let stranger = raft_pb::VoteRequest {
        header: header(leader, 99, &cluster_id),
        vote: Some(raft_pb::Vote {
            term: term + 2000,
            node_id: 99,
            committed: false,
        }),
        last_log_id: Some(raft_pb::LogId {
            term: term + 2000,
            index: u64::MAX / 2,
        }),
        leadership_transfer: true,
    };
    let refused = peer(&cluster, leader)
        .await
        .vote(stranger)
        .await
        .expect_err("a stranger's vote");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // A snapshot from a stranger, and a leadership transfer ordered by one.
    let stranger_snapshot = raft_pb::InstallSnapshotRequest {
        part: Some(raft_pb::install_snapshot_request::Part::Header(
            raft_pb::SnapshotHeader {
                header: header(follower, 99, &cluster_id),
                vote: vote(term + 1, 99),
                meta: encode_snapshot_meta(&meta).into(),
                files: Vec::new(),
            },
        )),
    };
    let refused = peer(&cluster, follower)
        .await
        .install_snapshot(tokio_stream::iter(vec![stranger_snapshot]))
        .await
        .expect_err("a stranger's snapshot");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let transfer = raft_pb::TransferLeaderRequest {
        header: header(follower, 99, &cluster_id),
        from_leader: vote(term, leader),
        to_node_id: follower,
        last_log_id: None,
    };
    let refused = peer(&cluster, follower)
        .await
        .transfer_leader(transfer)
        .await
        .expect_err("a transfer ordered by a stranger");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    // A replication stream whose request is meant for another node: the stream's last item
    // is the refusal, after the answers before it (none here).
    let misdirected = raft_pb::StreamAppendRequest {
        request: Some(raft_pb::AppendEntriesRequest {
            header: header(leader, leader, &cluster_id),
            vote: vote(term, leader),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
    };
    let mut answers = peer(&cluster, follower)
        .await
        .stream_append(tokio_stream::iter(vec![misdirected]))
        .await
        .expect("the stream opens")
        .into_inner();
    let refused = answers
        .message()
        .await
        .expect_err("entries meant for another node");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains(&leader.to_string()),
        "the refusal names the target: {refused:?}"
    );

    for id in 1..=3 {
        assert!(
            cluster.member(id).running(),
            "node {id} stopped:\n{}",
            cluster.logs()
        );
    }
    let after = status(&cluster, leader).await;
    assert_eq!(
        (after.leader_id, after.term),
        (leader, term),
        "the leader was deposed"
    );
    cluster.append_at_leader("order-7", "second").await;
    cluster.assert_replicas_identical().await;
}
