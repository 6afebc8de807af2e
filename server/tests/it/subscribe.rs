//! The subscription contract, checked on what real subscribers received while writers ran:
//! ordered, no duplicates, no gaps (equal to a final filtered read of the log), atomic per
//! append, one caught-up marker, progress checkpoints for a sparse filter, a stalled reader
//! that slows only itself, and resuming after a restart without a gap or a duplicate.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::Streaming;

use crate::harness::{Client, Node, append, connect, event, head, pb, read_all, scratch};

use pb::subscribe_response::Message;

/// How long a subscriber may take to see everything once the writers are done.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// One message of a subscription, as received.
#[derive(Debug)]
enum Seen {
    Events(Vec<pb::Event>),
    CaughtUp(u64),
    Checkpoint(u64),
}

fn events_of(seen: &[Seen]) -> Vec<pb::Event> {
    seen.iter()
        .flat_map(|message| match message {
            Seen::Events(events) => events.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// The last position a subscriber has been told about, by an event or a marker.
fn progress_of(seen: &[Seen]) -> u64 {
    seen.iter()
        .map(|message| match message {
            Seen::Events(events) => events.last().map_or(0, |event| event.position),
            Seen::CaughtUp(position) | Seen::Checkpoint(position) => *position,
        })
        .max()
        .unwrap_or(0)
}

fn from_position(position: u64, filter: Option<pb::Filter>) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        start: Some(pb::subscribe_request::Start::FromPosition(position)),
        filter,
    }
}

async fn open(
    client: &mut Client,
    request: pb::SubscribeRequest,
) -> Streaming<pb::SubscribeResponse> {
    client
        .subscribe(request)
        .await
        .expect("subscribe")
        .into_inner()
}

/// Receives until the subscriber's progress reaches `target` (0 while unknown).
async fn collect(
    stream: &mut Streaming<pb::SubscribeResponse>,
    seen: &mut Vec<Seen>,
    target: &mut watch::Receiver<u64>,
) {
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    loop {
        let goal = *target.borrow_and_update();
        if goal > 0 && progress_of(seen) >= goal {
            return;
        }
        let message = tokio::select! {
            message = stream.message() => message,
            _ = target.changed() => continue,
            () = tokio::time::sleep_until(deadline) => {
                panic!("progress {} never reached {goal}; received {seen:?}", progress_of(seen))
            }
        };
        let message = message
            .expect("the subscription does not fail")
            .expect("the subscription does not end");
        seen.push(match message.message.expect("a message") {
            Message::Events(batch) => {
                assert!(!batch.events.is_empty(), "an empty event batch");
                Seen::Events(batch.events)
            }
            Message::CaughtUp(caught_up) => Seen::CaughtUp(caught_up.position),
            Message::Checkpoint(checkpoint) => Seen::Checkpoint(checkpoint.position),
        });
    }
}

/// The subscribers of the concurrent test: a name, a filter, and how it reads.
struct Subscriber {
    name: &'static str,
    filter: Option<pb::Filter>,
    /// Subscribes once the log has this many events, while writers run.
    starts_at_head: u64,
    /// Reads nothing until the writers are done.
    stalled: bool,
}

fn scopes(scopes: &[&str]) -> pb::Filter {
    pb::Filter {
        scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
        ..Default::default()
    }
}

fn item(types: &[&str], tags: &[&str]) -> pb::Filter {
    pb::Filter {
        items: vec![pb::QueryItem {
            types: types.iter().map(|t| t.to_string()).collect(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }],
        ..Default::default()
    }
}

/// The append a writer makes at one step: 1 to 3 events across scopes, entities, types and
/// tags, with a 1 KiB payload so a stalled reader's buffers fill.
fn writer_append(writer_idx: usize, append_idx: usize) -> Vec<pb::NewEvent> {
    let scope = if append_idx % 29 == 5 {
        "rare"
    } else if writer_idx.is_multiple_of(2) {
        "alpha"
    } else {
        "beta"
    };
    let entity = format!(
        "{}-{writer_idx}",
        if append_idx.is_multiple_of(2) {
            "a"
        } else {
            "b"
        }
    );
    let n_events = 1 + (writer_idx + append_idx) % 3;
    (0..n_events)
        .map(|event_idx| {
            let event_type = ["Created", "Updated", "Shipped"][(append_idx + event_idx) % 3];
            let tags = if (append_idx + event_idx).is_multiple_of(5) {
                vec!["hot".to_string()]
            } else {
                vec![]
            };
            pb::NewEvent {
                tags,
                payload: vec![b'p'; 1024],
                ..event(scope, &entity, event_type)
            }
        })
        .collect()
}

/// Eight subscribers (unfiltered early, late and stalled; by scope, type, tag, a sparse scope,
/// and scope plus entity prefix) follow four concurrent writers. Each receives exactly what a
/// final read with its filter returns, in order, without duplicates or gaps; the events of one
/// append arrive adjacent; markers never claim progress past an undelivered event; each sees
/// one caught-up marker; the sparse one gets checkpoints; and the stalled one never slows the
/// writers. Catches lost or repeated events at the catch-up/live seam, checkpoints that skip
/// events, and slow consumers that block writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscribers_receive_the_log_in_order_once() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let n_writers = 4;
    let n_appends_per_writer = 100;
    let subscribers = vec![
        Subscriber {
            name: "all-early",
            filter: None,
            starts_at_head: 0,
            stalled: false,
        },
        Subscriber {
            name: "all-late",
            filter: None,
            starts_at_head: 60,
            stalled: false,
        },
        Subscriber {
            name: "all-stalled",
            filter: None,
            starts_at_head: 0,
            stalled: true,
        },
        Subscriber {
            name: "scope-alpha",
            filter: Some(scopes(&["alpha"])),
            starts_at_head: 0,
            stalled: false,
        },
        Subscriber {
            name: "type-shipped",
            filter: Some(item(&["Shipped"], &[])),
            starts_at_head: 0,
            stalled: false,
        },
        Subscriber {
            name: "tag-hot",
            filter: Some(item(&[], &["hot"])),
            starts_at_head: 30,
            stalled: false,
        },
        Subscriber {
            name: "scope-rare",
            filter: Some(scopes(&["rare"])),
            starts_at_head: 0,
            stalled: false,
        },
        Subscriber {
            name: "beta-b",
            filter: Some(pb::Filter {
                entity_prefix: "b-".to_string(),
                ..scopes(&["beta"])
            }),
            starts_at_head: 0,
            stalled: false,
        },
    ];

    let (target_tx, target) = watch::channel(0u64);
    let (head_tx, head_seen) = watch::channel(0u64);
    let mut readers = JoinSet::new();
    for subscriber in &subscribers {
        let mut client = connect(node.addr).await;
        let mut target = target.clone();
        let mut head_seen = head_seen.clone();
        let (name, filter, starts_at_head, stalled) = (
            subscriber.name,
            subscriber.filter.clone(),
            subscriber.starts_at_head,
            subscriber.stalled,
        );
        // Early subscribers are open before the first append.
        let early = if starts_at_head == 0 {
            Some(open(&mut client, from_position(1, filter.clone())).await)
        } else {
            None
        };
        readers.spawn(async move {
            let mut stream = match early {
                Some(stream) => stream,
                None => {
                    let _ = head_seen.wait_for(|head| *head >= starts_at_head).await;
                    open(&mut client, from_position(1, filter.clone())).await
                }
            };
            if stalled {
                let _ = target.wait_for(|target| *target > 0).await;
            }
            let mut seen = Vec::new();
            collect(&mut stream, &mut seen, &mut target).await;
            (name, filter, seen)
        });
    }

    let mut writers = JoinSet::new();
    for writer_idx in 0..n_writers {
        let mut client = connect(node.addr).await;
        let head_tx = head_tx.clone();
        writers.spawn(async move {
            let mut receipts = Vec::new();
            for append_idx in 0..n_appends_per_writer {
                let receipt = append(&mut client, writer_append(writer_idx, append_idx)).await;
                let last = receipt.events.last().expect("one event at least").position;
                head_tx.send_modify(|head| *head = (*head).max(last));
                receipts.push(receipt);
            }
            receipts
        });
    }
    let mut receipts = Vec::new();
    let writing = async {
        while let Some(written) = writers.join_next().await {
            receipts.extend(written.expect("the writer task runs"));
        }
    };
    tokio::time::timeout(DRAIN_WAIT, writing)
        .await
        .expect("writers finish while a subscriber is stalled");

    let mut client = node.client().await;
    let final_head = head(&mut client).await;
    target_tx.send_replace(final_head);

    // Appends as position ranges; each is consecutive in the log.
    let appends: Vec<Vec<u64>> = receipts
        .iter()
        .map(|receipt| receipt.events.iter().map(|c| c.position).collect())
        .collect();
    for positions in &appends {
        assert!(
            positions.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "{positions:?}"
        );
    }
    let boundaries: std::collections::HashSet<u64> = appends
        .iter()
        .map(|positions| *positions.last().expect("non-empty"))
        .chain([0])
        .collect();

    while let Some(received) = readers.join_next().await {
        let (name, filter, seen) = received.expect("the reader task runs");
        let delivered = events_of(&seen);
        let expected = read_all(&mut client, filter.clone()).await;
        let positions: Vec<u64> = delivered.iter().map(|event| event.position).collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "{name}: out of order or duplicated: {positions:?}"
        );
        assert_eq!(
            positions,
            expected
                .iter()
                .map(|event| event.position)
                .collect::<Vec<_>>(),
            "{name}: a gap or an extra event"
        );
        assert_eq!(delivered, expected, "{name}: an event differs from the log");
        assert!(!expected.is_empty(), "{name}: the filter matched nothing");

        // Atomic per append: the events of one append that pass the filter are adjacent.
        let index_of: HashMap<u64, usize> = positions
            .iter()
            .enumerate()
            .map(|(idx, p)| (*p, idx))
            .collect();
        for append in &appends {
            let indexes: Vec<usize> = append
                .iter()
                .filter_map(|p| index_of.get(p).copied())
                .collect();
            assert!(
                indexes.windows(2).all(|pair| pair[1] == pair[0] + 1),
                "{name}: the append {append:?} was split: {indexes:?}"
            );
        }

        // Markers never claim progress past an event not yet delivered.
        let mut covered = 0;
        let mut n_caught_up = 0;
        let mut n_checkpoints = 0;
        for message in &seen {
            match message {
                Seen::Events(events) => {
                    assert!(
                        events[0].position > covered,
                        "{name}: an event at or below a marker"
                    );
                    covered = events.last().expect("non-empty").position;
                }
                Seen::CaughtUp(position) | Seen::Checkpoint(position) => {
                    assert!(*position >= covered, "{name}: a marker went backwards");
                    covered = *position;
                    if filter.is_none() {
                        assert!(
                            boundaries.contains(position),
                            "{name}: a marker inside an append at {position}"
                        );
                    }
                    if matches!(message, Seen::CaughtUp(_)) {
                        n_caught_up += 1;
                    } else {
                        n_checkpoints += 1;
                    }
                }
            }
        }
        assert_eq!(n_caught_up, 1, "{name}: one caught-up marker");
        if name == "scope-rare" {
            assert!(
                n_checkpoints > 0,
                "{name}: a sparse filter gets checkpoints"
            );
            assert!(expected.len() < 50, "{name}: the filter is sparse");
        }
    }
}

/// A subscription whose filter skips everything reports progress with a checkpoint at
/// exactly the last position examined, and the next matching event comes after it. Catches a
/// checkpoint that claims a position not yet examined (a resume from it would skip an event).
#[tokio::test]
async fn checkpoints_report_progress_through_a_sparse_filter() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let mut stream = open(&mut client, from_position(1, Some(scopes(&["rare"])))).await;
    let first = stream
        .message()
        .await
        .expect("a message")
        .expect("not the end");
    assert_eq!(
        first.message,
        Some(Message::CaughtUp(pb::CaughtUp { position: 0 }))
    );

    for order_idx in 0..5 {
        append(
            &mut client,
            vec![event("common", &format!("order-{order_idx}"), "Placed")],
        )
        .await;
    }
    // Checkpoints may come while the appends land; they never pass the head, and one reaches it.
    loop {
        let message = tokio::time::timeout(DRAIN_WAIT, stream.message())
            .await
            .expect("a checkpoint is flushed while the log is quiet")
            .expect("a message")
            .expect("not the end");
        let Some(Message::Checkpoint(checkpoint)) = message.message else {
            panic!("expected only checkpoints, got {message:?}");
        };
        assert!(checkpoint.position <= 5, "{checkpoint:?} is past the head");
        if checkpoint.position == 5 {
            break;
        }
    }

    append(&mut client, vec![event("rare", "order-6", "Placed")]).await;
    let delivered = stream
        .message()
        .await
        .expect("a message")
        .expect("not the end");
    let Some(Message::Events(batch)) = delivered.message else {
        panic!("expected the rare event, got {delivered:?}");
    };
    let positions: Vec<u64> = batch.events.iter().map(|event| event.position).collect();
    assert_eq!(positions, vec![6]);
}

/// A subscription from now delivers only what is committed after it started, after a
/// caught-up marker at the head.
#[tokio::test]
async fn from_now_delivers_only_later_events() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    for order_idx in 0..5 {
        append(
            &mut client,
            vec![event("acme", &format!("order-{order_idx}"), "Placed")],
        )
        .await;
    }
    let mut stream = open(
        &mut client,
        pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::FromNow(true)),
            filter: None,
        },
    )
    .await;
    let first = stream
        .message()
        .await
        .expect("a message")
        .expect("not the end");
    assert_eq!(
        first.message,
        Some(Message::CaughtUp(pb::CaughtUp { position: 5 }))
    );
    for order_idx in 5..8 {
        append(
            &mut client,
            vec![event("acme", &format!("order-{order_idx}"), "Placed")],
        )
        .await;
    }
    let (_target_tx, mut target) = watch::channel(8);
    let mut seen = Vec::new();
    collect(&mut stream, &mut seen, &mut target).await;
    let positions: Vec<u64> = events_of(&seen).iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![6, 7, 8]);
}

fn later_than(timestamp: &pb::HybridTimestamp, by_ms: i64) -> pb::HybridTimestamp {
    let wall = timestamp.wall.expect("a wall time");
    let millis = wall.seconds * 1000 + i64::from(wall.nanos) / 1_000_000 + by_ms;
    pb::HybridTimestamp {
        logical: 0,
        wall: Some(prost_types::Timestamp {
            seconds: millis / 1000,
            nanos: i32::try_from(millis % 1000).expect("millis") * 1_000_000,
        }),
    }
}

fn until(timestamp: pb::HybridTimestamp) -> Option<pb::Filter> {
    Some(pb::Filter {
        until: Some(timestamp),
        ..pb::Filter::default()
    })
}

/// A subscription whose filter's `until` is behind the log ends with OK once it has delivered
/// what the bound lets through and said it caught up; one whose `until` is ahead stays live,
/// delivers what comes before the bound, and ends when the log passes it. Catches
/// subscriptions that can never deliver again yet hold their slot until the client gives up.
#[tokio::test]
async fn a_subscription_ends_once_its_until_is_behind_the_log() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let mut stamps = Vec::new();
    for order_idx in 0..5 {
        let receipt = append(
            &mut client,
            vec![event("acme", &format!("order-{order_idx}"), "Placed")],
        )
        .await;
        stamps.push(receipt.events[0].timestamp.expect("a timestamp"));
    }

    // Bounded in the past: events 1 and 2, the marker, then the end.
    let mut stream = open(&mut client, from_position(1, until(stamps[2]))).await;
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(DRAIN_WAIT, async {
        while let Some(response) = stream.message().await.expect("no error") {
            seen.push(response.message.expect("a message"));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends by itself: {seen:?}");
    let positions: Vec<u64> = seen
        .iter()
        .flat_map(|message| match message {
            Message::Events(batch) => batch.events.iter().map(|e| e.position).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(positions, vec![1, 2]);
    assert!(
        matches!(seen.last(), Some(Message::CaughtUp(_))),
        "{seen:?}"
    );

    // Bounded a little ahead: live until an append lands past the bound.
    let bound = later_than(&stamps[4], 2_000);
    let mut stream = open(&mut client, from_position(6, until(bound))).await;
    assert!(matches!(
        next_message(&mut stream).await,
        Message::CaughtUp(_)
    ));
    let mut inside = Vec::new();
    let mut past = false;
    for order_idx in 5..200 {
        let receipt = append(
            &mut client,
            vec![event("acme", &format!("order-{order_idx}"), "Placed")],
        )
        .await;
        let committed = &receipt.events[0];
        let stamp = committed.timestamp.expect("a timestamp");
        let wall = stamp.wall.expect("a wall time");
        let bound_wall = bound.wall.expect("a wall time");
        if (wall.seconds, wall.nanos, stamp.logical) >= (bound_wall.seconds, bound_wall.nanos, 0) {
            past = true;
            break;
        }
        inside.push(committed.position);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(past, "the clock passed the bound");
    assert!(!inside.is_empty(), "some appends came before the bound");
    let mut delivered = Vec::new();
    let ended = tokio::time::timeout(DRAIN_WAIT, async {
        while let Some(response) = stream.message().await.expect("no error") {
            if let Some(Message::Events(batch)) = response.message {
                delivered.extend(batch.events.iter().map(|e| e.position));
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stream ends once the log passes the bound"
    );
    assert_eq!(delivered, inside);
}

/// A subscriber that read up to some position, then lost the server, resumes from that
/// position plus one on the restarted server (same data directory) while writers continue:
/// what it received before and after is the whole log, once. Catches resume positions that
/// are off by one and restarts that renumber the log.
#[tokio::test(flavor = "multi_thread")]
async fn resuming_after_a_restart_has_no_gap_and_no_duplicate() {
    let dir = scratch();
    let data = dir.path().join("data");
    let mut node = Node::start(&data, &[]);
    let mut client = node.client().await;
    for step_idx in 0..30 {
        append(
            &mut client,
            vec![event("acme", "order-1", &format!("Step{step_idx}"))],
        )
        .await;
    }
    let mut stream = open(&mut client, from_position(1, None)).await;
    let mut before = Vec::new();
    let (_stop_early, mut at_twelve) = watch::channel(12);
    collect(&mut stream, &mut before, &mut at_twelve).await;
    drop(stream);
    let received_before = events_of(&before);
    let last_seen = received_before.last().expect("some events").position;
    let exit = tokio::task::block_in_place(|| node.terminate());
    assert!(exit.success(), "{exit}");

    let node = Node::start(&data, &[]);
    let mut client = node.client().await;
    let mut stream = open(&mut client, from_position(last_seen + 1, None)).await;
    let mut writer = node.client().await;
    let writing = tokio::spawn(async move {
        for step_idx in 30..60 {
            append(
                &mut writer,
                vec![event("acme", "order-1", &format!("Step{step_idx}"))],
            )
            .await;
        }
    });
    let (target_tx, mut target) = watch::channel(0);
    let receiving = tokio::spawn(async move {
        let mut after = Vec::new();
        collect(&mut stream, &mut after, &mut target).await;
        after
    });
    writing.await.expect("the writer runs");
    target_tx.send_replace(head(&mut client).await);
    let after = receiving.await.expect("the reader runs");

    let mut received = received_before;
    received.extend(events_of(&after));
    assert_eq!(received, read_all(&mut client, None).await);
    let positions: Vec<u64> = received.iter().map(|event| event.position).collect();
    assert_eq!(positions, (1..=60).collect::<Vec<_>>());
}

/// Receives the next message, failing the test if none comes in time.
async fn next_message(stream: &mut Streaming<pb::SubscribeResponse>) -> Message {
    tokio::time::timeout(DRAIN_WAIT, stream.message())
        .await
        .expect("a message in time")
        .expect("the subscription does not fail")
        .expect("the subscription does not end")
        .message
        .expect("a message")
}

/// An append of 600 events, more than one store read of a subscription
/// (`SUBSCRIBE_READ_EVENTS_MAX`, 256), reaches a live subscriber and a catch-up subscriber as
/// one `EventBatch` holding all of it, and a filter that matches part of it gets all of that
/// part in one batch too. Catches subscriptions that cut an append where a store page or a
/// message size budget falls.
#[tokio::test]
async fn a_large_append_arrives_in_one_message() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let n_events = 600;
    let mut live = open(&mut client, from_position(1, None)).await;
    assert!(matches!(
        next_message(&mut live).await,
        Message::CaughtUp(_)
    ));
    let events = (0..n_events)
        .map(|event_idx| {
            let event_type = if event_idx % 4 == 0 {
                "Marked"
            } else {
                "Plain"
            };
            event("acme", &format!("order-{}", event_idx % 10), event_type)
        })
        .collect();
    append(&mut client, events).await;
    let positions = |events: &[pb::Event]| events.iter().map(|e| e.position).collect::<Vec<_>>();
    let Message::Events(batch) = next_message(&mut live).await else {
        panic!("the live subscriber gets the append's events first");
    };
    assert_eq!(positions(&batch.events), (1..=n_events).collect::<Vec<_>>());

    let mut catching_up = open(&mut client, from_position(1, None)).await;
    let Message::Events(batch) = next_message(&mut catching_up).await else {
        panic!("the catch-up subscriber gets the append's events first");
    };
    assert_eq!(positions(&batch.events), (1..=n_events).collect::<Vec<_>>());
    assert_eq!(
        next_message(&mut catching_up).await,
        Message::CaughtUp(pb::CaughtUp { position: n_events })
    );

    let mut marked = open(&mut client, from_position(1, Some(item(&["Marked"], &[])))).await;
    let Message::Events(batch) = next_message(&mut marked).await else {
        panic!("the filtered subscriber gets the append's matches first");
    };
    let expected: Vec<u64> = (1..=n_events).step_by(4).collect();
    assert_eq!(positions(&batch.events), expected);
}
