//! A backup of a cluster member restores as a single node with the cluster's events.

use crate::nodes::Cluster;

/// A backup taken from a follower holds what it applied: restored, it starts as a single node
/// (no Raft state travels in a backup) with the head and digest the backup reported, which are
/// the cluster's. Catches a backup that reads the wrong store generation of a cluster node, or
/// that carries Raft state a single node refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followers_backup_restores_as_a_single_node() {
    let mut cluster = Cluster::start(3).await;
    for event_idx in 0..30 {
        cluster
            .append_at_leader("order-9", &format!("event-{event_idx}"))
            .await;
    }
    cluster.assert_replicas_identical().await;
    let leader = cluster.leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let (position, digest) = cluster.local_head(follower).await;

    let scratch = tempfile::tempdir().expect("a scratch directory");
    let backup_dir = scratch.path().join("backup");
    let addr = cluster.member(follower).addr;
    let client = causeway_client::Client::connect(&addr.to_string())
        .await
        .expect("connect to the follower");
    let backup = causeway_client::backup::backup(&client, &backup_dir)
        .await
        .expect("the follower serves a backup");
    assert_eq!((backup.position, &backup.digest), (position, &digest));

    let restored = scratch.path().join("restored");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_causewayd"))
        .arg("restore")
        .arg("--from")
        .arg(&backup_dir)
        .arg("--data-dir")
        .arg(&restored)
        .output()
        .expect("run causewayd restore");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!restored.join("raft").exists(), "no Raft state is restored");

    let member = cluster.member(follower);
    member.kill();
    member.data_dir = restored;
    member.start_single();
    assert_eq!(cluster.local_head(follower).await, (position, digest));
    assert_eq!(cluster.local_events(follower).await.len() as u64, position);
}
