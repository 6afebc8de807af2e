//! Overload is refused at once: a full pool and one subscription too many are
//! RESOURCE_EXHAUSTED, and nothing waits without bound.

use std::time::Duration;

use tokio::task::JoinSet;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{Node, append, append_of, connect, event, head, pb, scratch};

/// How long any one call may take before the test calls it a hang.
const CALL_WAIT: Duration = Duration::from_secs(20);

/// With one pool thread and one queue slot, a flood of concurrent appends gets some answers
/// and some RESOURCE_EXHAUSTED, every call returns, and exactly the acknowledged appends are
/// in the log. Catches a pool that blocks callers when full instead of refusing them.
#[tokio::test]
async fn a_full_pool_refuses_at_once_and_nothing_hangs() {
    let dir = scratch();
    let node = Node::start(
        &dir.path().join("data"),
        &["--pool-threads", "1", "--pool-queue", "1"],
    );
    let n_connections = 8;
    let n_calls_per_connection = 16;
    let mut calls = JoinSet::new();
    for connection_idx in 0..n_connections {
        let client = connect(node.addr).await;
        for call_idx in 0..n_calls_per_connection {
            let mut client = client.clone();
            let request = append_of(vec![pb::NewEvent {
                payload: vec![7; 64 * 1024],
                ..event(
                    "acme",
                    &format!("flood-{connection_idx}-{call_idx}"),
                    "Flooded",
                )
            }]);
            calls.spawn(async move {
                tokio::time::timeout(CALL_WAIT, client.append(request))
                    .await
                    .expect("no call hangs")
            });
        }
    }
    let (mut acknowledged, mut refused) = (0u64, 0u64);
    while let Some(answer) = calls.join_next().await {
        match answer.expect("the call task runs") {
            Ok(_) => acknowledged += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let info = status.get_details_error_info().expect("an ErrorInfo");
                assert_eq!(info.reason, "OVERLOADED");
                refused += 1;
            }
        }
    }
    assert_eq!(
        acknowledged + refused,
        n_connections * n_calls_per_connection
    );
    assert!(
        refused > 0,
        "a flood of {acknowledged} calls was never refused"
    );
    assert!(acknowledged > 0, "every call was refused");

    let mut client = node.client().await;
    assert_eq!(
        head(&mut client).await,
        acknowledged,
        "exactly the acknowledged appends"
    );
    append(&mut client, vec![event("acme", "after", "Calm")]).await;
}

/// With `--max-subscriptions 2`, a third subscription is RESOURCE_EXHAUSTED, and the slot of
/// one that disconnects is given back. Catches leaked subscription tasks.
#[tokio::test]
async fn subscriptions_over_the_maximum_are_refused_and_slots_come_back() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &["--max-subscriptions", "2"]);
    let mut client = node.client().await;
    let from_start = || pb::SubscribeRequest {
        start: Some(pb::subscribe_request::Start::FromPosition(1)),
        filter: None,
    };
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = client
            .subscribe(from_start())
            .await
            .expect("a subscription within the maximum")
            .into_inner();
        let first = stream
            .message()
            .await
            .expect("a message")
            .expect("not the end");
        assert!(matches!(
            first.message,
            Some(pb::subscribe_response::Message::CaughtUp(_))
        ));
        open.push(stream);
    }
    let status = client
        .subscribe(from_start())
        .await
        .expect_err("a third subscription is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("max_subscriptions"),
        "{}",
        status.message()
    );

    drop(open.pop());
    let deadline = tokio::time::Instant::now() + CALL_WAIT;
    loop {
        match client.subscribe(from_start()).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot of a closed subscription never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// With a pool of 4 threads and 16 queue slots, 60 live subscribers following the log do not
/// starve writers: 200 appends from 8 concurrent tasks all succeed (none is RESOURCE_EXHAUSTED)
/// and every subscriber receives every event, in order. Catches subscription reads (one per
/// subscriber on every commit) crowding appends out of the shared pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_subscribers_do_not_starve_appends() {
    let dir = scratch();
    let node = Node::start(
        &dir.path().join("data"),
        &[
            "--pool-threads",
            "4",
            "--pool-queue",
            "16",
            "--max-subscriptions",
            "64",
        ],
    );
    let n_subscribers = 60;
    let n_writers = 8;
    let n_appends_per_writer = 25;
    let n_events = (n_writers * n_appends_per_writer) as u64;

    let mut followers = JoinSet::new();
    for _ in 0..n_subscribers {
        let mut client = connect(node.addr).await;
        let mut stream = client
            .subscribe(pb::SubscribeRequest {
                start: Some(pb::subscribe_request::Start::FromPosition(1)),
                filter: None,
            })
            .await
            .expect("a subscription within the maximum")
            .into_inner();
        let first = tokio::time::timeout(CALL_WAIT, stream.message())
            .await
            .expect("caught up in time")
            .expect("a message")
            .expect("not the end");
        assert!(
            matches!(
                first.message,
                Some(pb::subscribe_response::Message::CaughtUp(_))
            ),
            "{first:?}"
        );
        followers.spawn(async move {
            let _client = client;
            let mut positions = Vec::new();
            while (positions.len() as u64) < n_events {
                let message = tokio::time::timeout(CALL_WAIT, stream.message())
                    .await
                    .expect("events keep coming")
                    .expect("the subscription does not fail")
                    .expect("the subscription does not end");
                if let Some(pb::subscribe_response::Message::Events(batch)) = message.message {
                    positions.extend(batch.events.iter().map(|event| event.position));
                }
            }
            positions
        });
    }

    let mut writers = JoinSet::new();
    for writer_idx in 0..n_writers {
        let mut client = connect(node.addr).await;
        writers.spawn(async move {
            let mut refused = Vec::new();
            for append_idx in 0..n_appends_per_writer {
                let request = append_of(vec![event(
                    "acme",
                    &format!("order-{writer_idx}-{append_idx}"),
                    "Placed",
                )]);
                let answer = tokio::time::timeout(CALL_WAIT, client.append(request))
                    .await
                    .expect("no append hangs");
                if let Err(status) = answer {
                    refused.push(status);
                }
            }
            refused
        });
    }
    let mut refused = Vec::new();
    while let Some(answer) = writers.join_next().await {
        refused.extend(answer.expect("the writer task runs"));
    }
    assert!(refused.is_empty(), "appends refused: {refused:?}");

    let expected: Vec<u64> = (1..=n_events).collect();
    while let Some(positions) = followers.join_next().await {
        assert_eq!(positions.expect("the follower task runs"), expected);
    }
}

/// The gRPC port holds at most `--max-connections` open: idle connections past the bound wait
/// in the backlog instead of taking the process's file descriptors, and a request waits until
/// one closes. Catches a port without a bound, where idle sockets starved everything.
#[tokio::test]
async fn connections_past_the_bound_wait_until_one_closes() {
    let dir = crate::harness::scratch();
    let node = crate::harness::Node::start(&dir.path().join("data"), &["--max-connections", "3"]);
    let idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(node.addr).expect("an idle connection"))
        .collect();
    // Give the server time to accept all three.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let waiting = tokio::spawn(async move {
        let mut client = crate::harness::connect(node.addr).await;
        let head = client
            .head(crate::harness::pb::HeadRequest::default())
            .await;
        (head.is_ok(), node)
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "a fourth connection was served beside three"
    );
    drop(idle);
    let (served, _node) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("served once the idle connections closed")
        .expect("the task");
    assert!(served, "the head request succeeds");
}

/// A connection that never sends a byte (no HTTP/2 preface) gives its permit back after
/// `FIRST_BYTES_TIMEOUT` (10 s), so sockets that stay open and silent cannot lock every client
/// out. Catches a port that keeps silent sockets for ever: the request below then never runs.
#[tokio::test]
async fn silent_connections_give_their_permits_back() {
    let dir = crate::harness::scratch();
    let node = crate::harness::Node::start(&dir.path().join("data"), &["--max-connections", "3"]);
    let _silent: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(node.addr).expect("a silent connection"))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let served = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut client = crate::harness::connect(node.addr).await;
        client
            .head(crate::harness::pb::HeadRequest::default())
            .await
            .is_ok()
    })
    .await
    .expect("served while the silent sockets are still open");
    assert!(served, "the head request succeeds");
}
