//! Behaviour of the event store through its public API: appends, reads, filters, limits,
//! locking, waiting and the clock.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use causeway_core::clock::{Clock, ManualClock, Timestamp};
use causeway_core::limits::*;
use causeway_core::*;

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Config::default()).unwrap()
}

fn event(scope: &str, entity: &str, event_type: &str, payload: &str) -> NewEvent {
    NewEvent::new(scope, entity, event_type, payload.as_bytes().to_vec())
}

fn one(event: NewEvent) -> Append {
    Append::new(vec![event])
}

#[test]
fn append_assigns_positions_versions_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.head(), Position(0));
    let receipt = store
        .append(Append::new(vec![
            event("acme", "order-1", "OrderPlaced", "a"),
            event("acme", "order-2", "OrderPlaced", "b"),
            event("acme", "order-1", "OrderPaid", "c"),
        ]))
        .unwrap();
    let positions: Vec<u64> = receipt.events.iter().map(|c| c.position.0).collect();
    let versions: Vec<u64> = receipt.events.iter().map(|c| c.version.0).collect();
    assert_eq!(positions, [1, 2, 3]);
    assert_eq!(versions, [1, 1, 2]);
    assert_eq!(store.head(), Position(3));
    assert_eq!(store.version("acme", "order-1"), Version(2));
    assert_eq!(store.version("acme", "order-9"), Version(0));

    let got = store.get(receipt.events[2].id).unwrap();
    assert_eq!(
        (&got.payload[..], got.event_type.as_str()),
        (b"c".as_slice(), "OrderPaid")
    );
    assert_eq!(got.hash, receipt.events[2].hash);

    let entity = store
        .read_entity("acme", "order-1", Version(1), Direction::Forward, 10)
        .unwrap();
    assert_eq!(
        entity.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        [b"a".to_vec(), b"c".to_vec()]
    );
    let backward = store
        .read_entity("acme", "order-1", Version(u64::MAX), Direction::Backward, 1)
        .unwrap();
    assert_eq!(backward[0].version, Version(2));
    let from_zero = store
        .read_entity("acme", "order-1", Version(0), Direction::Backward, 1)
        .unwrap();
    assert_eq!(
        backward, from_zero,
        "backward from version 0 starts at the last event"
    );

    let log = store
        .read_log(Position(0), Direction::Backward, 2, &Filter::default())
        .unwrap();
    assert_eq!(
        log.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        [3, 2]
    );
    assert!(!log.end);
    assert_eq!(log.next, Position(1));
    assert!(matches!(
        store.get(EventId::default()),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn append_with_hands_the_written_events_back_with_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (sender, answers) = std::sync::mpsc::channel();
    let answer = |append: Append| {
        let sender = sender.clone();
        store
            .append_with(append, move |result, spent| {
                let _ = sender.send((result.map(|r| r.events.len()), spent.len()));
            })
            .unwrap();
        answers.recv_timeout(Duration::from_secs(60)).unwrap()
    };
    let written = answer(Append::new(vec![
        event("acme", "order-1", "OrderPlaced", "a"),
        event("acme", "order-1", "OrderPaid", "b"),
    ]));
    assert_eq!((written.0.unwrap(), written.1), (2, 2));

    let refused = answer(Append {
        expected: vec![Expected {
            scope: "acme".to_string(),
            entity: "order-1".to_string(),
            version: ExpectedVersion::NoStream,
        }],
        ..one(event("acme", "order-1", "OrderShipped", "c"))
    });
    assert!(
        matches!(refused.0, Err(Error::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(
        refused.1, 0,
        "a refused append wrote no events to hand back"
    );
}

#[test]
fn timestamps_strictly_increase_when_the_wall_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
    let config = Config {
        clock: clock.clone() as Arc<dyn Clock>,
        ..Config::default()
    };
    let store = Store::open(dir.path(), config).unwrap();
    let mut stamps = Vec::new();
    for step in 0..20 {
        if step == 10 {
            clock.set_ns(1_600_000_000_000_000_000);
        }
        let receipt = store.append(one(event("s", "e", "T", "x"))).unwrap();
        stamps.push(receipt.events[0].timestamp);
    }
    drop(store);
    // Reopen with the clock still behind: the HLC resumes above the last stored timestamp.
    let store = Store::open(
        dir.path(),
        Config {
            clock: clock as Arc<dyn Clock>,
            ..Config::default()
        },
    )
    .unwrap();
    stamps.push(store.append(one(event("s", "e", "T", "x"))).unwrap().events[0].timestamp);
    assert!(
        stamps.windows(2).all(|pair| pair[0] < pair[1]),
        "timestamps must strictly increase: {stamps:?}"
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = Store::open(dir.path(), Config::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "got {err}");
    drop(store);
    open(dir.path());
}

#[test]
fn bounds_are_enforced_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let cases: Vec<(NewEvent, &str)> = vec![
        (
            event("s", &"e".repeat(ENTITY_BYTES_MAX + 1), "T", ""),
            "ENTITY_BYTES_MAX",
        ),
        (
            event(&"s".repeat(SCOPE_BYTES_MAX + 1), "e", "T", ""),
            "SCOPE_BYTES_MAX",
        ),
        (
            event("s", "e", &"t".repeat(TYPE_BYTES_MAX + 1), ""),
            "TYPE_BYTES_MAX",
        ),
        (
            NewEvent {
                tags: (0..=TAGS_PER_EVENT_MAX).map(|i| format!("t{i}")).collect(),
                ..event("s", "e", "T", "")
            },
            "TAGS_PER_EVENT_MAX",
        ),
        (
            NewEvent {
                tags: vec!["x".repeat(TAG_BYTES_MAX + 1)],
                ..event("s", "e", "T", "")
            },
            "TAG_BYTES_MAX",
        ),
        (
            NewEvent {
                metadata: (0..=METADATA_ENTRIES_MAX)
                    .map(|i| (format!("k{i}"), String::new()))
                    .collect(),
                ..event("s", "e", "T", "")
            },
            "METADATA_ENTRIES_MAX",
        ),
        (
            NewEvent {
                metadata: [("k".to_string(), "v".repeat(METADATA_VALUE_BYTES_MAX + 1))].into(),
                ..event("s", "e", "T", "")
            },
            "METADATA_VALUE_BYTES_MAX",
        ),
        (
            NewEvent {
                payload: vec![0; APPEND_BYTES_MAX].into(),
                ..event("s", "e", "T", "")
            },
            "APPEND_BYTES_MAX",
        ),
    ];
    for (bad, limit_name) in cases {
        match store.append(one(bad)) {
            Err(Error::LimitExceeded { limit, .. }) => assert_eq!(limit, limit_name),
            other => panic!("expected {limit_name}, got {other:?}"),
        }
    }
    let too_many = Append::new(vec![event("s", "e", "T", ""); APPEND_EVENTS_MAX + 1]);
    assert!(matches!(
        store.append(too_many),
        Err(Error::LimitExceeded {
            limit: "APPEND_EVENTS_MAX",
            ..
        })
    ));
    assert!(
        matches!(store.append(one(event("", "e", "T", ""))), Err(Error::InvalidInput(msg)) if msg.contains("scope"))
    );
    assert!(matches!(
        store.append(Append::default()),
        Err(Error::InvalidInput(_))
    ));
    let limit = store.read_log(
        Position(1),
        Direction::Forward,
        READ_EVENTS_MAX + 1,
        &Filter::default(),
    );
    assert!(matches!(
        limit,
        Err(Error::LimitExceeded {
            limit: "READ_EVENTS_MAX",
            ..
        })
    ));
    assert_eq!(
        store.head(),
        Position(0),
        "nothing of a refused append is written"
    );
}

#[test]
fn a_duplicate_id_refuses_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store.append(one(event("s", "e", "T", "1"))).unwrap();
    let reused = NewEvent {
        id: Some(first.events[0].id),
        ..event("s", "e", "T", "2")
    };
    let err = store
        .append(Append::new(vec![event("s", "f", "T", "ok"), reused]))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidField { ref field, ref message }
            if field == "events[1].id" && message.contains("already exists")),
        "{err}"
    );
    assert_eq!(store.head(), Position(1));
    assert_eq!(store.version("s", "f"), Version(0));
}

#[test]
fn assigned_ids_ascend_and_a_reused_id_is_refused_however_it_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let reused_err = |store: &Store, id: EventId| {
        let reused = NewEvent {
            id: Some(id),
            ..event("s", "e", "T", "again")
        };
        store.append(one(reused)).unwrap_err()
    };
    let refused = |err: Error| {
        matches!(err, Error::InvalidField { ref field, ref message }
            if field == "events[0].id" && message.contains("already exists"))
    };
    // Past every id the store could assign, so later assigned ids are below the newest.
    let highest = EventId(uuid::Uuid::from_u128(u128::MAX));
    let assigned = {
        let store = open(dir.path());
        let mut assigned = Vec::new();
        for batch in [3, 1, 2] {
            let events = (0..batch).map(|_| event("s", "e", "T", "x")).collect();
            let receipt = store.append(Append::new(events)).unwrap();
            assigned.extend(receipt.events.iter().map(|event| event.id));
        }
        assert!(
            assigned.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "ids ascend in the order they were assigned: {assigned:?}"
        );
        let chosen = NewEvent {
            id: Some(highest),
            ..event("s", "e", "T", "chosen")
        };
        store.append(one(chosen)).unwrap();
        // Now assigned ids are below the newest: looked up, not ruled out by the compare.
        let after = store.append(one(event("s", "e", "T", "after"))).unwrap();
        assert!(refused(reused_err(&store, assigned[1])));
        assert!(refused(reused_err(&store, highest)));
        assert!(refused(reused_err(&store, after.events[0].id)));
        assigned
    };
    // After a reopen the ids come from the loaded list.
    let store = open(dir.path());
    assert!(refused(reused_err(&store, assigned[4])));
    assert!(refused(reused_err(&store, highest)));
    assert_eq!(store.head(), Position(8));
    store.append(one(event("s", "e", "T", "new"))).unwrap();
}

#[test]
fn filtered_log_reads_use_scopes_types_tags_prefix_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut all = Vec::new();
    for i in 0..60u32 {
        let scope = ["acme", "globex"][(i % 2) as usize];
        let entity = format!(
            "{}-{}",
            ["order", "invoice", "user"][(i % 3) as usize],
            i % 7
        );
        let event_type = ["Placed", "Paid", "Shipped", "Cancelled"][(i % 4) as usize];
        let tags = (0..(i % 3))
            .map(|t| format!("t:{}", (i + t) % 5))
            .collect::<Vec<_>>();
        let new = NewEvent {
            tags,
            ..event(scope, &entity, event_type, &i.to_string())
        };
        store.append(one(new)).unwrap();
    }
    all.extend(
        store
            .read_log(Position(1), Direction::Forward, 1000, &Filter::default())
            .unwrap()
            .events,
    );
    assert_eq!(all.len(), 60);
    let mid = all[30].timestamp;
    let filters = vec![
        Filter {
            scopes: vec!["acme".into()],
            ..Filter::default()
        },
        Filter {
            entity_prefix: "order".into(),
            ..Filter::default()
        },
        Filter {
            items: vec![QueryItem {
                types: vec!["Paid".into(), "Shipped".into()],
                tags: vec![],
            }],
            ..Filter::default()
        },
        Filter {
            items: vec![QueryItem {
                types: vec![],
                tags: vec!["t:1".into(), "t:2".into()],
            }],
            ..Filter::default()
        },
        Filter {
            scopes: vec!["globex".into()],
            items: vec![
                QueryItem {
                    types: vec!["Placed".into()],
                    tags: vec![],
                },
                QueryItem {
                    types: vec![],
                    tags: vec!["t:3".into()],
                },
            ],
            ..Filter::default()
        },
        Filter {
            since: Some(mid),
            entity_prefix: "user".into(),
            ..Filter::default()
        },
        Filter {
            until: Some(mid),
            ..Filter::default()
        },
        Filter {
            items: vec![QueryItem {
                types: vec!["Unknown".into()],
                tags: vec![],
            }],
            ..Filter::default()
        },
    ];
    for filter in filters {
        let expected: Vec<u64> = all
            .iter()
            .filter(|e| filter.matches(e))
            .map(|e| e.position.0)
            .collect();
        for direction in [Direction::Forward, Direction::Backward] {
            let mut got = Vec::new();
            let mut from = if direction == Direction::Forward {
                Position(1)
            } else {
                Position(0)
            };
            loop {
                let batch = store.read_log(from, direction, 4, &filter).unwrap();
                got.extend(batch.events.iter().map(|e| e.position.0));
                if batch.end {
                    break;
                }
                from = batch.next;
            }
            let mut want = expected.clone();
            if direction == Direction::Backward {
                want.reverse();
            }
            assert_eq!(got, want, "filter {filter:?} {direction:?}");
        }
    }
}

#[test]
fn wait_for_returns_when_the_head_passes_or_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    assert_eq!(
        store
            .wait_for(Position(1), Duration::from_millis(20))
            .unwrap(),
        Position(0)
    );
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            store
                .wait_for(Position(2), Duration::from_secs(30))
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    store
        .append(Append::new(vec![
            event("s", "e", "T", "1"),
            event("s", "e", "T", "2"),
        ]))
        .unwrap();
    assert_eq!(waiter.join().unwrap(), Position(2));
    let closer = {
        let store = store.clone();
        std::thread::spawn(move || store.wait_for(Position(99), Duration::from_secs(30)))
    };
    std::thread::sleep(Duration::from_millis(20));
    store.close().unwrap();
    assert!(matches!(closer.join().unwrap(), Err(Error::Closed)));
    assert!(matches!(
        store.append(one(event("s", "e", "T", "3"))),
        Err(Error::Closed)
    ));
}

#[test]
fn reopen_over_many_segments_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        segment_bytes: SEGMENT_BYTES_MIN,
        ..Config::default()
    };
    let store = Store::open(dir.path(), config()).unwrap();
    for i in 0..200u32 {
        store
            .append(one(NewEvent {
                tags: vec![format!("n:{}", i % 10)],
                ..event("s", &format!("e{}", i % 13), "T", &"p".repeat(i as usize))
            }))
            .unwrap();
    }
    let digest = store.digest();
    let before = store
        .read_log(Position(1), Direction::Forward, 1000, &Filter::default())
        .unwrap()
        .events;
    drop(store);
    let segments = std::fs::read_dir(dir.path().join("events"))
        .unwrap()
        .count();
    assert!(
        segments > 10,
        "small segments roll often ({segments} files)"
    );
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.digest(), digest);
    let after = store
        .read_log(Position(1), Direction::Forward, 1000, &Filter::default())
        .unwrap()
        .events;
    assert_eq!(before, after);
    let tagged = Filter {
        items: vec![QueryItem {
            types: vec![],
            tags: vec!["n:3".into()],
        }],
        ..Filter::default()
    };
    assert_eq!(
        store
            .read_log(Position(1), Direction::Forward, 1000, &tagged)
            .unwrap()
            .events
            .len(),
        20
    );
    // Without the sidecar indexes, open scans the segments and rebuilds the same state.
    drop(store);
    for entry in std::fs::read_dir(dir.path().join("events")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "idx") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.digest(), digest);
    assert_eq!(
        store
            .read_log(Position(1), Direction::Forward, 1000, &Filter::default())
            .unwrap()
            .events,
        after
    );
}

/// Two stores fed the same stamped commands write byte-identical files and equal digests: the
/// property replication relies on (a leader stamps, every replica applies).
#[test]
fn the_same_commands_produce_byte_identical_segments() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = || Config {
        segment_bytes: SEGMENT_BYTES_MIN,
        ..Config::default()
    };
    let (a, b) = (
        Store::open(dir_a.path(), config()).unwrap(),
        Store::open(dir_b.path(), config()).unwrap(),
    );
    let mut parent = None;
    for i in 0..120u32 {
        let mut events = vec![event(
            "acme",
            &format!("order-{}", i % 5),
            "Placed",
            &"x".repeat(i as usize % 50),
        )];
        if i % 3 == 0 {
            events.push(NewEvent {
                causation: parent.into_iter().collect(),
                tags: vec![format!("c:{i}")],
                ..event("acme", "audit", "Noted", "")
            });
        }
        let command = a.stamp(Append::new(events)).unwrap();
        let receipt_a = a.apply(command.clone()).unwrap();
        let receipt_b = b.apply(command).unwrap();
        assert_eq!(receipt_a, receipt_b);
        parent = Some(receipt_a.events[0].id);
    }
    assert_eq!(a.digest(), b.digest());
    drop((a, b));
    let (files_a, files_b) = (
        common::event_files(dir_a.path()),
        common::event_files(dir_b.path()),
    );
    assert!(
        files_a.len() > 4,
        "the test must cover sealed segments and their .idx files"
    );
    assert_eq!(
        files_a.iter().map(|f| &f.0).collect::<Vec<_>>(),
        files_b.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for ((name, bytes_a), (_, bytes_b)) in files_a.iter().zip(&files_b) {
        assert!(bytes_a == bytes_b, "{name} differs between the two stores");
    }
}

/// The correlation id defaults to the first parent's, else the event's own id, also when the
/// parent is in the same append.
#[test]
fn correlation_defaults_follow_the_first_parent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let root = store
        .append(one(event("s", "a", "Started", "")))
        .unwrap()
        .events[0]
        .id;
    let root_event = store.get(root).unwrap();
    assert_eq!(root_event.correlation_id, root);
    let child_id = EventId(uuid::Uuid::now_v7());
    let receipt = store
        .append(Append::new(vec![
            NewEvent {
                id: Some(child_id),
                causation: vec![root],
                ..event("s", "a", "Continued", "")
            },
            NewEvent {
                causation: vec![child_id],
                ..event("s", "b", "Finished", "")
            },
        ]))
        .unwrap();
    for committed in &receipt.events {
        assert_eq!(store.get(committed.id).unwrap().correlation_id, root);
    }
}

/// The core stays synchronous: no async runtime or gRPC crate among its dependencies.
#[test]
fn core_depends_on_no_async_runtime_or_grpc() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    for banned in ["tokio", "tonic", "prost", "async-std", "futures", "hyper"] {
        assert!(!manifest.contains(banned), "core/Cargo.toml names {banned}");
    }
}

/// Causation always points back in the log, also with external parents allowed: a parent named
/// twice, a parent later in the same append, and an id that earlier events already named as a
/// parent are all refused, so position order stays a causal order.
#[test]
fn causation_never_points_forward() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let external = EventId(uuid::Uuid::now_v7());
    let with_external = |events: Vec<NewEvent>| Append {
        external_causation: true,
        ..Append::new(events)
    };
    let twice = NewEvent {
        causation: vec![external, external],
        ..event("s", "e", "T", "")
    };
    assert!(
        matches!(store.append(with_external(vec![twice])), Err(Error::InvalidInput(msg)) if msg.contains("twice"))
    );
    let (early, late) = (EventId(uuid::Uuid::now_v7()), EventId(uuid::Uuid::now_v7()));
    let forward = vec![
        NewEvent {
            id: Some(early),
            causation: vec![late],
            ..event("s", "e", "T", "")
        },
        NewEvent {
            id: Some(late),
            ..event("s", "e", "T", "")
        },
    ];
    assert!(
        matches!(store.append(with_external(forward)), Err(Error::InvalidField { field, message }) if field == "events[0].causation[0]" && message.contains("later in the append"))
    );
    store
        .append(with_external(vec![NewEvent {
            causation: vec![external],
            ..event("s", "e", "T", "")
        }]))
        .unwrap();
    let named_before = NewEvent {
        id: Some(external),
        ..event("s", "e", "T", "")
    };
    assert!(
        matches!(store.append(one(named_before)), Err(Error::InvalidField { field, message }) if field == "events[0].id" && message.contains("already named"))
    );
    assert_eq!(store.head(), Position(1));
}

/// After a failed fsync the store refuses every later write (no retry-and-continue: the kernel
/// may already have dropped the dirty pages), reads keep working, and a reopen finds every
/// acknowledged event.
#[test]
fn a_failed_fsync_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    // Opening creates the first segment with its own sync; the injected seam counts log syncs.
    let config = || Config {
        faults: Some(causeway_core::segment::Faults::fail_syncs_after(2)),
        ..Config::default()
    };
    let store = Store::open(dir.path(), config()).unwrap();
    let acked: Vec<EventId> = (0..2)
        .map(|i| {
            store
                .append(one(event("s", "e", "T", &i.to_string())))
                .unwrap()
                .events[0]
                .id
        })
        .collect();
    let failed = store.append(one(event("s", "e", "T", "lost?")));
    assert!(
        matches!(&failed, Err(Error::Poisoned(why)) if why.contains("injected fsync failure")),
        "the failing sync is reported with its cause: {failed:?}"
    );
    assert_eq!(
        store.head(),
        Position(2),
        "an unsynced append is never visible"
    );
    let refused = store.append(one(event("s", "e", "T", "after")));
    assert!(matches!(refused, Err(Error::Poisoned(_))), "{refused:?}");
    assert!(!refused.unwrap_err().is_deterministic());
    assert_eq!(store.get(acked[1]).unwrap().payload, b"1".as_slice());
    drop(store);
    let store = open(dir.path());
    for id in &acked {
        store.get(*id).unwrap();
    }
    assert!(store.head() >= Position(2));
    store
        .append(one(event("s", "e", "T", "after reopen")))
        .unwrap();
}

/// A read page stops before it passes READ_BYTES_MAX, always holds at least one event, and its
/// continuation picks up exactly where it stopped.
#[test]
fn read_pages_are_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let big = READ_BYTES_MAX / 3 + 1;
    for _ in 0..3 {
        let payload = vec![7u8; big.min(APPEND_BYTES_MAX - 64)];
        store
            .append(one(NewEvent::new("s", "e", "Big", payload)))
            .unwrap();
    }
    let page = store
        .read_log(Position(1), Direction::Forward, 10, &Filter::default())
        .unwrap();
    assert_eq!(
        page.events.len(),
        2,
        "three records of a third of the budget do not fit"
    );
    assert_eq!((page.next, page.end), (Position(3), false));
    let rest = store
        .read_log(page.next, Direction::Forward, 10, &Filter::default())
        .unwrap();
    assert_eq!(rest.events.len(), 1);
    assert!(rest.end);
    let entity = store
        .read_entity("s", "e", Version(1), Direction::Forward, 10)
        .unwrap();
    assert_eq!(entity.len(), 2);
}

/// Edge values from the wire never panic the writer: a DCB condition after the largest
/// position, and reads from the largest position or version, are plain answers.
#[test]
fn extreme_positions_are_answers_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(one(event("s", "e", "T", "1"))).unwrap();
    let condition = DcbCondition {
        query: Filter {
            scopes: vec!["s".into()],
            ..Filter::default()
        },
        after: Position(u64::MAX),
    };
    let append = Append {
        condition: Some(condition),
        ..one(event("s", "e", "T", "2"))
    };
    store.append(append).unwrap();
    let forward = store
        .read_log(
            Position(u64::MAX),
            Direction::Forward,
            10,
            &Filter::default(),
        )
        .unwrap();
    assert!(forward.events.is_empty() && forward.end);
    assert!(
        store
            .read_entity("s", "e", Version(u64::MAX), Direction::Forward, 10)
            .unwrap()
            .is_empty()
    );
    store.append(one(event("s", "e", "T", "3"))).unwrap();
    assert_eq!(store.head(), Position(3), "the writer is alive");
}

/// A forward page never ends inside an append: a limit or byte budget that falls inside one
/// stretches to its last event (for the events the filter matches), and the next page starts
/// after it; also after a reopen, whose index comes from the headers on disk. Backward pages
/// are cut where the limit falls. Catches subscriptions that deliver one append in two parts.
#[test]
fn a_forward_page_holds_whole_appends() {
    let dir = tempfile::tempdir().unwrap();
    let n_events = 300;
    {
        let store = open(dir.path());
        store.append(one(event("s", "before", "T", "0"))).unwrap();
        let events = (0..n_events)
            .map(|event_idx| {
                let event_type = if event_idx % 3 == 0 { "Hit" } else { "Miss" };
                event("s", &format!("e-{}", event_idx % 7), event_type, "x")
            })
            .collect();
        store.append(Append::new(events)).unwrap();
        store.append(one(event("s", "after", "T", "1"))).unwrap();
    }
    let store = open(dir.path());
    let after = n_events as u64 + 2;
    let everything = Filter::default();
    let page = store
        .read_log(Position(1), Direction::Forward, 256, &everything)
        .unwrap();
    assert_eq!(
        page.events.len(),
        n_events + 1,
        "the whole append, past the limit"
    );
    assert_eq!((page.next, page.end), (Position(after), false));
    let rest = store
        .read_log(page.next, Direction::Forward, 256, &everything)
        .unwrap();
    let positions: Vec<u64> = rest.events.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, [after]);
    assert!(rest.end);

    let hits = Filter {
        items: vec![QueryItem {
            types: vec!["Hit".into()],
            tags: vec![],
        }],
        ..Filter::default()
    };
    let page = store
        .read_log(Position(1), Direction::Forward, 10, &hits)
        .unwrap();
    assert_eq!(page.events.len(), n_events / 3, "every match of the append");
    assert!(page.events.iter().all(|e| e.event_type == "Hit"));
    assert_eq!(page.next, Position(after));

    let page = store
        .read_log_bytes(Position(1), Direction::Forward, 256, 1, &everything)
        .unwrap();
    assert_eq!(page.events.len(), 1, "a one-event append ends the page");
    assert_eq!(page.next, Position(2));
    let page = store
        .read_log_bytes(Position(2), Direction::Forward, 256, 1, &everything)
        .unwrap();
    assert_eq!(
        page.events.len(),
        n_events,
        "the byte budget stretches to the append"
    );
    assert_eq!(page.next, Position(after));
    let err = store
        .read_log_bytes(Position(1), Direction::Forward, 10, 0, &everything)
        .unwrap_err();
    assert!(err.to_string().contains("max_bytes"), "{err}");

    let backward = store
        .read_log(Position(0), Direction::Backward, 256, &everything)
        .unwrap();
    assert_eq!(
        backward.events.len(),
        256,
        "backward pages are cut at the limit"
    );
}

/// Appends one after another through `append_in_sequence`, each sent once the last is answered,
/// with the writer polling between them (a long window) or not (zero): every one is answered
/// in order, durable across a reopen, and closing the store stops a writer that was polling.
#[test]
fn appends_in_sequence_are_answered_in_order_whether_the_writer_polls_or_not() {
    for spin in [Duration::from_millis(50), Duration::ZERO] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            writer_spin: spin,
            ..Config::default()
        };
        let store = Store::open(dir.path(), config).unwrap();
        for n in 1..=20u64 {
            let (sender, answer) = std::sync::mpsc::channel();
            store
                .append_in_sequence(one(event("acme", "order", "Tick", "x")), move |r, _| {
                    sender.send(r).unwrap()
                })
                .unwrap();
            let receipt = answer.recv().unwrap().unwrap();
            assert_eq!(receipt.events[0].position, Position(n), "{spin:?}");
        }
        // The writer now polls for a 21st append that never comes; closing must not wait on it.
        let closing = std::time::Instant::now();
        drop(store);
        assert!(closing.elapsed() < Duration::from_secs(5), "{spin:?}");
        let store = open(dir.path());
        assert_eq!(store.head(), Position(20), "{spin:?}");
    }
}

/// Reads every page of a filtered read, following `next`, and says how many pages it took.
/// Fails if a page that is not the end leaves `next` where it started.
fn follow(
    store: &Store,
    from: Position,
    direction: Direction,
    filter: &Filter,
) -> (Vec<u64>, usize) {
    let (mut from, mut positions, mut pages) = (from, Vec::new(), 0);
    loop {
        let batch = store.read_log(from, direction, 100, filter).unwrap();
        pages += 1;
        positions.extend(batch.events.iter().map(|event| event.position.0));
        if batch.end {
            return (positions, pages);
        }
        assert_ne!(
            batch.next, from,
            "{filter:?} {direction:?}: a page that moved nothing"
        );
        from = batch.next;
    }
}

/// A sparse filter stops a page after `READ_SCAN_MAX` candidates, and the page's `next` is past
/// them, so a reader that follows it gets to the end. Time bounds are looked up in the index,
/// so a read outside them ends at once, however many events lie there.
#[test]
fn sparse_reads_move_past_their_scan_budget_and_time_bounds_end_them_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        durability: Durability::Relaxed,
        ..Config::default()
    };
    let store = Store::open(dir.path(), config).unwrap();
    // More entities named `e-1..` than a prefix plan lists, so the prefix is checked event by
    // event; then more events than one page may examine, none of them matching; then a match.
    let early: Vec<NewEvent> = (0..PREFIX_MATCHES)
        .map(|n| event("s", &format!("e-1{n:03}"), "T", "{}"))
        .collect();
    store.append(Append::new(early)).unwrap();
    let n_filler = READ_SCAN_MAX + READ_SCAN_MAX / 2;
    for _ in 0..n_filler / 1000 {
        let filler = (0..1000).map(|_| event("s", "other", "T", "{}")).collect();
        store.append(Append::new(filler)).unwrap();
    }
    store
        .append(one(event("s", "e-1-last", "T", "{}")))
        .unwrap();
    let head = store.head().0;
    let last_early = PREFIX_MATCHES as u64;
    let timestamp_of = |position: u64| {
        let batch = store
            .read_log(
                Position(position),
                Direction::Forward,
                1,
                &Filter::default(),
            )
            .unwrap();
        batch.events[0].timestamp
    };

    let prefix = Filter {
        entity_prefix: "e-1".into(),
        ..Filter::default()
    };
    let mut expected: Vec<u64> = (1..=last_early).chain([head]).collect();
    let (forward, pages) = follow(&store, Position(1), Direction::Forward, &prefix);
    assert_eq!(forward, expected);
    assert!(pages <= 4, "{pages} pages");
    expected.reverse();
    let (backward, _) = follow(&store, Position(0), Direction::Backward, &prefix);
    assert_eq!(backward, expected);

    // Until the first filler event: only the early events can match.
    let until = Filter {
        until: Some(timestamp_of(last_early + 1)),
        ..Filter::default()
    };
    let page = store
        .read_log(Position(5_000), Direction::Forward, 10, &until)
        .unwrap();
    assert!(page.events.is_empty() && page.end, "{page:?}");
    assert_eq!(page.next, Position(head + 1));
    let page = store
        .read_log(Position(0), Direction::Backward, 3, &until)
        .unwrap();
    let got: Vec<u64> = page.events.iter().map(|event| event.position.0).collect();
    assert_eq!(got, [last_early, last_early - 1, last_early - 2]);
    let (all_until, pages) = follow(&store, Position(0), Direction::Backward, &until);
    assert_eq!(all_until, (1..=last_early).rev().collect::<Vec<_>>());
    assert_eq!(pages, 1);

    // Since the last event, and since a time after it.
    let since_last = Filter {
        since: Some(timestamp_of(head)),
        ..Filter::default()
    };
    assert_eq!(
        follow(&store, Position(0), Direction::Backward, &since_last),
        (vec![head], 1)
    );
    let ts = timestamp_of(head);
    let later = Filter {
        since: Some(Timestamp::new(ts.wall_ms() + 1, 0)),
        ..Filter::default()
    };
    assert_eq!(
        follow(&store, Position(0), Direction::Backward, &later),
        (vec![], 1)
    );
    assert_eq!(
        follow(&store, Position(1), Direction::Forward, &later),
        (vec![], 1)
    );
}

/// Entities named with the prefix in the test above: more than the 64 a prefix plan lists
/// (`PREFIX_ENTITIES_MAX` in the index), past which the prefix is checked event by event.
const PREFIX_MATCHES: usize = 70;
