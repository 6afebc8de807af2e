//! SIGTERM while appends are in flight: the server stops accepting, finishes what it has,
//! closes the store and exits cleanly, and every append it acknowledged is there after a
//! restart on the same data directory.

use std::time::Duration;

use tokio::task::JoinSet;
use tonic::Code;

use crate::harness::{Node, append_of, connect, event, head, pb, read_all, scratch};

/// Every acknowledged append survives a SIGTERM that lands while writers are busy, at the
/// positions its receipt gave; the log stays gapless; an open subscription ends with
/// UNAVAILABLE saying where to resume rather than holding the shutdown up. Catches a shutdown
/// that drops the store before in-flight appends finish, or that waits forever on streams.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_appends_in_flight_loses_nothing_acknowledged() {
    let dir = scratch();
    let data = dir.path().join("data");
    let mut node = Node::start(&data, &[]);

    let mut subscriber = node.client().await;
    let mut subscription = subscriber
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::FromPosition(1)),
            filter: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    // Reads until the stream ends, and returns how it ended.
    let reader = tokio::spawn(async move {
        loop {
            match subscription.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    });

    let mut writers = JoinSet::new();
    for writer_idx in 0..8 {
        let mut client = connect(node.addr).await;
        writers.spawn(async move {
            let mut acknowledged = Vec::new();
            for append_idx in 0.. {
                let entity = format!("writer-{writer_idx}");
                let request = append_of(vec![
                    event("acme", &entity, "Started"),
                    event("acme", &entity, &format!("Step{append_idx}")),
                ]);
                match client.append(request).await {
                    Ok(response) => {
                        acknowledged.push(response.into_inner().receipt.expect("a receipt"))
                    }
                    Err(status) => {
                        assert!(
                            matches!(
                                status.code(),
                                // A connection cut mid-stream by the closing server surfaces
                                // as a transport error; none of these claim success.
                                Code::Unavailable
                                    | Code::Unknown
                                    | Code::Cancelled
                                    | Code::Internal
                                    | Code::Aborted
                            ),
                            "a refusal during shutdown is retryable: {status:?}"
                        );
                        return acknowledged;
                    }
                }
            }
            unreachable!("the loop ends at the first refusal")
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.signal_terminate();

    let mut acknowledged = Vec::new();
    while let Some(receipts) = writers.join_next().await {
        acknowledged.extend(receipts.expect("the writer task runs"));
    }
    let exit = tokio::task::block_in_place(|| node.wait_exit());
    assert!(
        exit.success(),
        "causewayd exited with {exit}; log:\n{}",
        node.log()
    );
    assert!(node.log().contains("store closed"), "log:\n{}", node.log());
    assert!(
        !acknowledged.is_empty(),
        "no append was acknowledged before the signal"
    );

    let ending = reader
        .await
        .expect("the reader task runs")
        .expect("the subscription ends with a status, not a silent end");
    assert_eq!(ending.code(), Code::Unavailable, "{ending:?}");
    assert!(
        ending.message().contains("resume from position"),
        "{}",
        ending.message()
    );

    let node = Node::start(&data, &[]);
    let mut client = node.client().await;
    for receipt in &acknowledged {
        for committed in &receipt.events {
            let event = client
                .get(pb::GetRequest {
                    consistency: 0,
                    id: committed.id.clone(),
                })
                .await
                .expect("an acknowledged event is there after the restart")
                .into_inner()
                .event
                .expect("an event");
            assert_eq!(event.position, committed.position);
            assert_eq!(event.hash, committed.hash);
        }
    }
    let log = read_all(&mut client, None).await;
    let positions: Vec<u64> = log.iter().map(|event| event.position).collect();
    let expected: Vec<u64> = (1..=head(&mut client).await).collect();
    assert_eq!(positions, expected, "the log is gapless");
    let acknowledged_events: usize = acknowledged.iter().map(|r| r.events.len()).sum();
    assert!(log.len() >= acknowledged_events);
}
