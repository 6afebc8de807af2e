//! Append conditions through the public API: expected versions, DCB conditions, idempotency
//! keys, causation existence, dry runs, the denial audit and the reserved `$` scopes.
//!
//! Each condition is checked three ways: accepted when it holds, denied with the typed error
//! (code and facts) when it does not, and raced by many threads. The invariants:
//! - a refused append writes nothing of itself (the head and every version stay put, and a batch
//!   across several entities with one failing expectation writes none of its events);
//! - an empty stream and a one-event stream are never confused (`Exact(0)` versus `Exact(1)`);
//! - under concurrency exactly one conditional append wins per version or per DCB decision, and
//!   the log stays gapless;
//! - a DCB condition is decided exactly, however far past `after` its first match lies;
//! - an idempotent retry returns the original receipt, writes nothing, and still does so after a
//!   restart; other content under the same key is refused;
//! - a dry run answers exactly as the append would, and writes nothing.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use causeway_core::limits::{READ_EVENTS_MAX, READ_SCAN_MAX};
use causeway_core::*;

/// Attempts each racing thread makes; `CAUSEWAY_RACE_ATTEMPTS` raises it for a longer soak.
fn race_attempts() -> usize {
    std::env::var("CAUSEWAY_RACE_ATTEMPTS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(50)
}

const RACE_THREADS: usize = 8;

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Config::default()).unwrap()
}

/// A store that records denials: a setting kept in the log, so the store's first event is
/// the `SettingsChanged` that turns it on.
fn open_recording(dir: &std::path::Path) -> Store {
    let store = Store::open(dir, Config::default()).unwrap();
    store
        .configure(Settings {
            record_denials: true,
        })
        .unwrap();
    store
}

fn event(entity: &str, event_type: &str, payload: &str) -> NewEvent {
    NewEvent::new("shop", entity, event_type, payload.as_bytes().to_vec())
}

fn tagged(entity: &str, event_type: &str, tags: &[&str]) -> NewEvent {
    NewEvent {
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        ..event(entity, event_type, "{}")
    }
}

fn expecting(events: Vec<NewEvent>, expected: &[(&str, ExpectedVersion)]) -> Append {
    let expected = expected
        .iter()
        .map(|(entity, version)| Expected {
            scope: "shop".to_string(),
            entity: entity.to_string(),
            version: *version,
        })
        .collect();
    Append {
        expected,
        ..Append::new(events)
    }
}

fn with_condition(events: Vec<NewEvent>, items: Vec<QueryItem>, after: Position) -> Append {
    let query = Filter {
        scopes: vec!["shop".to_string()],
        items,
        ..Filter::default()
    };
    Append {
        condition: Some(DcbCondition { query, after }),
        ..Append::new(events)
    }
}

fn item(types: &[&str], tags: &[&str]) -> QueryItem {
    QueryItem {
        types: types.iter().map(|t| t.to_string()).collect(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn keyed(events: Vec<NewEvent>, key: &str) -> Append {
    Append {
        idempotency_key: Some(key.to_string()),
        ..Append::new(events)
    }
}

/// Asserts a version conflict on `shop/entity` with these expected and actual versions.
fn assert_conflict(result: Result<Receipt>, entity: &str, expected: &str, actual: u64) {
    match result {
        Err(Error::Conflict {
            scope,
            entity: got_entity,
            expected: got_expected,
            actual: got_actual,
        }) => {
            assert_eq!((scope.as_str(), got_entity.as_str()), ("shop", entity));
            assert_eq!(
                got_expected, expected,
                "the conflict names what was expected"
            );
            assert_eq!(
                got_actual,
                Version(actual),
                "the conflict names the entity's real version"
            );
        }
        other => panic!("expected a conflict on shop/{entity}, got {other:?}"),
    }
}

/// Asserts a denial by `gate` with `code` and returns its facts.
fn assert_denied(result: Result<Receipt>, gate: &str, code: &str) -> BTreeMap<String, String> {
    match result {
        Err(Error::Denied {
            gate: got_gate,
            code: got_code,
            facts,
            message,
        }) => {
            assert_eq!(
                (got_gate.as_str(), got_code.as_str()),
                (gate, code),
                "message: {message}"
            );
            assert!(!message.is_empty(), "a denial explains itself");
            facts
        }
        other => panic!("expected a denial by {gate} ({code}), got {other:?}"),
    }
}

/// Every event of the log, read forward from position 1 page by page.
fn whole_log(store: &Store) -> Vec<Event> {
    let mut events = Vec::new();
    let mut from = Position(1);
    loop {
        let batch = store
            .read_log(
                from,
                Direction::Forward,
                READ_EVENTS_MAX,
                &Filter::default(),
            )
            .unwrap();
        events.extend(batch.events);
        if batch.end {
            return events;
        }
        from = batch.next;
    }
}

/// Asserts the log holds positions `1..=head` with none missing or repeated.
fn assert_gapless(store: &Store) {
    let positions: Vec<u64> = whole_log(store)
        .iter()
        .map(|event| event.position.0)
        .collect();
    let expected: Vec<u64> = (1..=store.head().0).collect();
    assert_eq!(
        positions, expected,
        "the log must hold every position up to the head exactly once"
    );
}

#[test]
fn any_accepts_an_empty_and_a_populated_entity() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store
        .append(expecting(
            vec![event("order-1", "Placed", "a")],
            &[("order-1", ExpectedVersion::Any)],
        ))
        .unwrap();
    assert_eq!(first.events[0].version, Version(1));
    let second = store
        .append(expecting(
            vec![event("order-1", "Paid", "b")],
            &[("order-1", ExpectedVersion::Any)],
        ))
        .unwrap();
    assert_eq!(second.events[0].version, Version(2));
    assert_eq!(store.version("shop", "order-1"), Version(2));
}

#[test]
fn no_stream_accepts_an_empty_entity_and_refuses_one_with_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let receipt = store
        .append(expecting(
            vec![event("order-1", "Placed", "a")],
            &[("order-1", ExpectedVersion::NoStream)],
        ))
        .unwrap();
    assert_eq!(
        (receipt.events[0].position, receipt.events[0].version),
        (Position(1), Version(1))
    );

    let refused = store.append(expecting(
        vec![event("order-1", "Placed", "again")],
        &[("order-1", ExpectedVersion::NoStream)],
    ));
    assert_conflict(refused, "order-1", "no_stream", 1);
    assert_eq!(store.head(), Position(1), "a refused append writes nothing");
    assert_eq!(store.version("shop", "order-1"), Version(1));
}

#[test]
fn exists_refuses_an_empty_entity_and_accepts_one_with_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let refused = store.append(expecting(
        vec![event("order-1", "Paid", "a")],
        &[("order-1", ExpectedVersion::Exists)],
    ));
    assert_conflict(refused, "order-1", "exists", 0);
    assert_eq!(store.head(), Position(0));
    assert_eq!(store.version("shop", "order-1"), Version(0));

    store
        .append(Append::new(vec![event("order-1", "Placed", "a")]))
        .unwrap();
    let receipt = store
        .append(expecting(
            vec![event("order-1", "Paid", "b")],
            &[("order-1", ExpectedVersion::Exists)],
        ))
        .unwrap();
    assert_eq!(receipt.events[0].version, Version(2));
}

#[test]
fn exact_versions_tell_an_empty_stream_from_a_one_event_stream() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let exact = |v| ExpectedVersion::Exact(Version(v));

    assert_conflict(
        store.append(expecting(
            vec![event("order-1", "Placed", "a")],
            &[("order-1", exact(1))],
        )),
        "order-1",
        "1",
        0,
    );
    assert_eq!(store.head(), Position(0));
    let first = store
        .append(expecting(
            vec![event("order-1", "Placed", "a")],
            &[("order-1", exact(0))],
        ))
        .unwrap();
    assert_eq!(first.events[0].version, Version(1));

    assert_conflict(
        store.append(expecting(
            vec![event("order-1", "Paid", "b")],
            &[("order-1", exact(0))],
        )),
        "order-1",
        "0",
        1,
    );
    assert_conflict(
        store.append(expecting(
            vec![event("order-1", "Paid", "b")],
            &[("order-1", exact(2))],
        )),
        "order-1",
        "2",
        1,
    );
    assert_eq!(store.head(), Position(1), "refusals write nothing");
    let second = store
        .append(expecting(
            vec![event("order-1", "Paid", "b")],
            &[("order-1", exact(1))],
        ))
        .unwrap();
    assert_eq!(
        (second.events[0].position, second.events[0].version),
        (Position(2), Version(2))
    );
    assert_conflict(
        store.append(expecting(
            vec![event("order-1", "Shipped", "c")],
            &[("order-1", exact(1))],
        )),
        "order-1",
        "1",
        2,
    );

    // A batch adding two events to one entity moves its version by two.
    let batch = store
        .append(expecting(
            vec![
                event("order-1", "Shipped", "c"),
                event("order-1", "Closed", "d"),
            ],
            &[("order-1", exact(2))],
        ))
        .unwrap();
    assert_eq!(
        batch.events.iter().map(|c| c.version.0).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_conflict(
        store.append(expecting(
            vec![event("order-1", "Reopened", "e")],
            &[("order-1", exact(3))],
        )),
        "order-1",
        "3",
        4,
    );
}

#[test]
fn a_failing_expectation_in_a_batch_writes_none_of_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![event("order-1", "Placed", "seed")]))
        .unwrap();
    let digest = store.digest();

    let batch = vec![
        event("order-1", "Paid", "a"),
        event("order-2", "Placed", "b"),
        event("order-3", "Placed", "c"),
    ];
    let refused = store.append(expecting(
        batch.clone(),
        &[
            ("order-1", ExpectedVersion::Exact(Version(1))),
            ("order-2", ExpectedVersion::Exists),
            ("order-3", ExpectedVersion::NoStream),
        ],
    ));
    assert_conflict(refused, "order-2", "exists", 0);
    assert_eq!(
        (store.head(), store.digest()),
        (Position(1), digest),
        "nothing of the batch is written"
    );
    for (entity, version) in [("order-1", 1), ("order-2", 0), ("order-3", 0)] {
        assert_eq!(store.version("shop", entity), Version(version), "{entity}");
    }
    assert_eq!(whole_log(&store).len(), 1);

    // An expectation on an entity the batch does not touch is a condition like any other.
    let refused = store.append(expecting(
        batch.clone(),
        &[("customer-9", ExpectedVersion::Exists)],
    ));
    assert_conflict(refused, "customer-9", "exists", 0);
    assert_eq!(store.head(), Position(1));

    let accepted = store
        .append(expecting(
            batch,
            &[
                ("order-1", ExpectedVersion::Exact(Version(1))),
                ("order-2", ExpectedVersion::NoStream),
                ("customer-9", ExpectedVersion::NoStream),
            ],
        ))
        .unwrap();
    assert_eq!(
        accepted
            .events
            .iter()
            .map(|c| c.position.0)
            .collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(
        accepted
            .events
            .iter()
            .map(|c| c.version.0)
            .collect::<Vec<_>>(),
        [2, 1, 1]
    );
}

#[test]
fn a_conflict_is_a_deterministic_answer_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![event("order-7", "Placed", "a")]))
        .unwrap();
    let err = store
        .append(expecting(
            vec![event("order-7", "Paid", "b")],
            &[("order-7", ExpectedVersion::Exact(Version(3)))],
        ))
        .unwrap_err();
    assert!(
        err.is_deterministic(),
        "a conflict is an answer for the client, not a node failure"
    );
    let text = err.to_string();
    assert!(
        text.contains("shop/order-7") && text.contains("version 1") && text.contains("expected 3"),
        "got {text}"
    );
}

#[test]
fn dcb_refuses_when_a_matching_event_exists_after_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![tagged(
            "seat-7",
            "Reserved",
            &["seat:7", "show:1"],
        )]))
        .unwrap();
    let decided_at = store.head();
    store
        .append(Append::new(vec![tagged(
            "seat-7",
            "Released",
            &["seat:7", "show:1"],
        )]))
        .unwrap();
    let head = store.head();

    let attempt = vec![tagged("seat-7", "Reserved", &["seat:7", "show:1"])];
    let facts = assert_denied(
        store.append(with_condition(
            attempt.clone(),
            vec![item(&[], &["seat:7"])],
            decided_at,
        )),
        "dcb",
        "DCB_CONDITION",
    );
    assert_eq!(
        facts.get("after").map(String::as_str),
        Some("1"),
        "the facts name the position the decision was based on"
    );
    assert_eq!(store.head(), head, "a refused append writes nothing");

    // Types in an item are OR-ed, tags in an item are AND-ed, and items are OR-ed.
    for items in [
        vec![item(&["Reserved", "Released"], &["seat:7"])],
        vec![item(&["Released"], &["seat:7", "show:1"])],
        vec![item(&["Cancelled"], &[]), item(&[], &["show:1"])],
        vec![item(&["Released"], &[])],
    ] {
        let refused = store.append(with_condition(attempt.clone(), items.clone(), decided_at));
        assert_denied(refused, "dcb", "DCB_CONDITION");
        assert_eq!(store.head(), head, "items {items:?}");
    }
}

#[test]
fn dcb_accepts_when_matching_events_are_only_at_or_before_the_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![tagged("seat-7", "Reserved", &["seat:7"])]))
        .unwrap();
    store
        .append(Append::new(vec![tagged("seat-8", "Reserved", &["seat:8"])]))
        .unwrap();
    // The matching event is at position 1: `after` equal to it is the boundary that must pass.
    let query = vec![item(&[], &["seat:7"])];
    let at = store
        .append(with_condition(
            vec![tagged("seat-7", "Released", &["seat:7"])],
            query.clone(),
            Position(1),
        ))
        .unwrap();
    assert_eq!(at.events[0].position, Position(3));
    // Now seat:7 has an event at 3; a decision based on position 2 is stale, one on 3 is not.
    let stale = store.append(with_condition(
        vec![tagged("seat-7", "Reserved", &["seat:7"])],
        query.clone(),
        Position(2),
    ));
    assert_denied(stale, "dcb", "DCB_CONDITION");
    let fresh = store
        .append(with_condition(
            vec![tagged("seat-7", "Reserved", &["seat:7"])],
            query.clone(),
            store.head(),
        ))
        .unwrap();
    assert_eq!(fresh.events[0].position, Position(4));
    // A position past the head has nothing after it.
    store
        .append(with_condition(
            vec![tagged("seat-7", "Released", &["seat:7"])],
            query,
            Position(1_000),
        ))
        .unwrap();
    assert_eq!(store.head(), Position(5));
}

#[test]
fn dcb_accepts_when_nothing_matches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![tagged(
            "seat-7",
            "Reserved",
            &["seat:7", "show:1"],
        )]))
        .unwrap();
    store
        .append(Append::new(vec![NewEvent {
            scope: "other".to_string(),
            ..tagged("seat-9", "Reserved", &["seat:9"])
        }]))
        .unwrap();
    for items in [
        vec![item(&[], &["seat:99"])],
        vec![item(&["Cancelled"], &["seat:7"])],
        vec![item(&[], &["seat:7", "show:2"])],
        vec![item(&["Unknown"], &[]), item(&[], &["never-used"])],
        // seat:9 exists, but in another scope than the query names.
        vec![item(&[], &["seat:9"])],
    ] {
        let head = store.head();
        let receipt = store
            .append(with_condition(
                vec![tagged("seat-7", "Noted", &[])],
                items.clone(),
                Position(0),
            ))
            .unwrap();
        assert_eq!(
            receipt.events[0].position.0,
            head.0 + 1,
            "items {items:?} match nothing, so the append proceeds"
        );
    }
    // An append's own events do not count against its condition.
    let own = store.append(with_condition(
        vec![tagged("seat-5", "Reserved", &["seat:5"])],
        vec![item(&[], &["seat:5"])],
        store.head(),
    ));
    assert!(own.is_ok(), "got {own:?}");
}

#[test]
fn an_empty_dcb_query_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![event("order-1", "Placed", "a")]))
        .unwrap();
    for query in [
        Filter::default(),
        Filter {
            items: vec![QueryItem::default()],
            ..Filter::default()
        },
    ] {
        let append = Append {
            condition: Some(DcbCondition {
                query: query.clone(),
                after: Position(0),
            }),
            ..Append::new(vec![event("order-1", "Paid", "b")])
        };
        let result = store.append(append.clone());
        assert!(
            matches!(result, Err(Error::InvalidInput(_))),
            "query {query:?}: got {result:?}"
        );
        let dry = store.dry_run(append);
        assert!(
            matches!(dry, Err(Error::InvalidInput(_))),
            "query {query:?}: got {dry:?}"
        );
    }
    assert_eq!(store.head(), Position(1));
}

#[test]
fn an_idempotent_retry_returns_the_original_receipt_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // No client ids: the store assigns fresh ids to the retry, which must still match.
    let append = keyed(
        vec![
            event("order-1", "Placed", "a"),
            event("order-2", "Placed", "b"),
        ],
        "req-1",
    );
    let original = store.append(append.clone()).unwrap();
    store
        .append(Append::new(vec![event("order-3", "Placed", "c")]))
        .unwrap();
    let (head, digest) = (store.head(), store.digest());

    let retry = store.append(append.clone()).unwrap();
    assert_eq!(
        retry, original,
        "same positions, ids, versions, hashes and digest"
    );
    assert_eq!(
        (store.head(), store.digest()),
        (head, digest),
        "a retry writes nothing"
    );
    assert_eq!(store.version("shop", "order-1"), Version(1));
    assert_eq!(
        store.dry_run(append).unwrap(),
        original,
        "a dry run of a retry sees the same receipt"
    );

    // With client-given ids the retry matches too.
    let id = EventId(uuid::Uuid::now_v7());
    let with_id = keyed(
        vec![NewEvent {
            id: Some(id),
            ..event("order-4", "Placed", "d")
        }],
        "req-2",
    );
    let original = store.append(with_id.clone()).unwrap();
    assert_eq!(original.events[0].id, id);
    assert_eq!(store.append(with_id).unwrap(), original);
    assert_eq!(store.head(), Position(4));
}

#[test]
fn a_reused_key_with_other_content_is_an_idempotency_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let append = keyed(vec![event("order-1", "Placed", "a")], "req-1");
    store.append(append.clone()).unwrap();
    let head = store.head();

    let variants = [
        keyed(vec![event("order-1", "Placed", "other payload")], "req-1"),
        keyed(vec![event("order-9", "Placed", "a")], "req-1"),
        keyed(vec![event("order-1", "Paid", "a")], "req-1"),
        keyed(vec![tagged("order-1", "Placed", &["vip"])], "req-1"),
        keyed(
            vec![
                event("order-1", "Placed", "a"),
                event("order-1", "Placed", "a"),
            ],
            "req-1",
        ),
        Append {
            expected: vec![Expected {
                scope: "shop".to_string(),
                entity: "order-1".to_string(),
                version: ExpectedVersion::Exists,
            }],
            ..append.clone()
        },
        Append {
            external_causation: true,
            ..append.clone()
        },
    ];
    for variant in variants {
        match store.append(variant.clone()) {
            Err(Error::IdempotencyConflict { key }) => assert_eq!(key, "req-1"),
            other => panic!("variant {variant:?}: expected an idempotency conflict, got {other:?}"),
        }
        assert!(
            matches!(
                store.dry_run(variant),
                Err(Error::IdempotencyConflict { .. })
            ),
            "a dry run refuses the same way"
        );
    }
    assert_eq!(store.head(), head, "refused reuses write nothing");
}

#[test]
fn a_refused_keyed_append_does_not_claim_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let refused = store.append(Append {
        idempotency_key: Some("req-1".to_string()),
        ..expecting(
            vec![event("order-1", "Paid", "a")],
            &[("order-1", ExpectedVersion::Exists)],
        )
    });
    assert_conflict(refused, "order-1", "exists", 0);
    // Only committed appends are remembered, so the corrected request can use the key.
    let accepted = store
        .append(keyed(vec![event("order-1", "Placed", "a")], "req-1"))
        .unwrap();
    assert_eq!(accepted.events[0].position, Position(1));
}

#[test]
fn the_idempotency_window_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let append = keyed(
        vec![
            event("order-1", "Placed", "a"),
            event("order-1", "Paid", "b"),
            event("order-2", "Placed", "c"),
        ],
        "req-1",
    );
    let original = {
        let store = open(dir.path());
        store
            .append(Append::new(vec![event("order-0", "Placed", "before")]))
            .unwrap();
        let original = store.append(append.clone()).unwrap();
        store
            .append(Append::new(vec![event("order-3", "Placed", "after")]))
            .unwrap();
        original
    };
    for _reopen in 0..2 {
        let store = open(dir.path());
        let (head, digest) = (store.head(), store.digest());
        assert_eq!(head, Position(5));
        assert_eq!(
            store.append(append.clone()).unwrap(),
            original,
            "a retry after a restart gets the original receipt"
        );
        assert_eq!(
            (store.head(), store.digest()),
            (head, digest),
            "and writes nothing"
        );
        let other = keyed(vec![event("order-1", "Placed", "changed")], "req-1");
        assert!(
            matches!(store.append(other), Err(Error::IdempotencyConflict { .. })),
            "other content is still refused"
        );
        assert_eq!(store.head(), head);
    }
}

#[test]
fn keys_in_sealed_segments_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        segment_bytes: causeway_core::limits::SEGMENT_BYTES_MIN,
        ..Config::default()
    };
    let appends: Vec<Append> = (0..40)
        .map(|n| {
            keyed(
                vec![event(&format!("order-{n}"), "Placed", &"x".repeat(200))],
                &format!("req-{n}"),
            )
        })
        .collect();
    let originals: Vec<Receipt> = {
        let store = Store::open(dir.path(), config()).unwrap();
        appends
            .iter()
            .map(|append| store.append(append.clone()).unwrap())
            .collect()
    };
    let segments = std::fs::read_dir(dir.path().join("events"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|ext| ext == "seg")
        })
        .count();
    assert!(
        segments > 2,
        "the keyed appends span sealed segments ({segments} segments)"
    );
    // Twice: the first open may scan and rewrite the sidecar indexes, the second reads them.
    for _reopen in 0..2 {
        let store = Store::open(dir.path(), config()).unwrap();
        for (append, original) in appends.iter().zip(&originals) {
            assert_eq!(&store.append(append.clone()).unwrap(), original);
        }
        assert_eq!(store.head(), Position(40), "retries write nothing");
    }
}

#[test]
fn a_missing_causation_parent_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![event("order-1", "Placed", "a")]))
        .unwrap();
    let missing = EventId(uuid::Uuid::now_v7());
    let child = NewEvent {
        causation: vec![missing],
        ..event("order-1", "Paid", "b")
    };
    let facts = assert_denied(
        store.append(Append::new(vec![event("order-2", "Placed", "x"), child])),
        "causation",
        "CAUSATION_MISSING",
    );
    assert_eq!(facts.get("parent"), Some(&missing.to_string()));
    assert_eq!(
        facts.get("event").map(String::as_str),
        Some("1"),
        "the facts name which event of the append"
    );
    assert_eq!(
        store.head(),
        Position(1),
        "nothing of the append is written"
    );
    assert_eq!(store.version("shop", "order-2"), Version(0));
}

#[test]
fn a_parent_in_the_store_or_earlier_in_the_append_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let stored = store
        .append(Append::new(vec![event("order-1", "Placed", "a")]))
        .unwrap()
        .events[0]
        .id;
    let (first, second) = (EventId(uuid::Uuid::now_v7()), EventId(uuid::Uuid::now_v7()));
    let receipt = store
        .append(Append::new(vec![
            NewEvent {
                id: Some(first),
                causation: vec![stored],
                ..event("order-1", "Paid", "b")
            },
            NewEvent {
                id: Some(second),
                causation: vec![first, stored],
                ..event("order-1", "Shipped", "c")
            },
        ]))
        .unwrap();
    assert_eq!(receipt.events.len(), 2);
    assert_eq!(store.get(second).unwrap().causation, [first, stored]);

    // A parent later in the same append does not exist yet when its child is written.
    let (early, late) = (EventId(uuid::Uuid::now_v7()), EventId(uuid::Uuid::now_v7()));
    let forward = Append::new(vec![
        NewEvent {
            id: Some(early),
            causation: vec![late],
            ..event("order-2", "Placed", "d")
        },
        NewEvent {
            id: Some(late),
            ..event("order-2", "Paid", "e")
        },
    ]);
    let facts = assert_denied(store.append(forward), "causation", "CAUSATION_MISSING");
    assert_eq!(facts.get("parent"), Some(&late.to_string()));
    assert_eq!(store.head(), Position(3));
}

#[test]
fn external_causation_accepts_a_missing_parent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let outside = EventId(uuid::Uuid::now_v7());
    let append = Append {
        external_causation: true,
        ..Append::new(vec![NewEvent {
            causation: vec![outside],
            ..event("order-1", "Imported", "a")
        }])
    };
    let receipt = store.append(append).unwrap();
    assert_eq!(
        store.get(receipt.events[0].id).unwrap().causation,
        [outside]
    );
}

#[test]
fn racing_exact_version_appends_have_one_winner_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let attempts = race_attempts();
    let start = Arc::new(Barrier::new(RACE_THREADS));
    let handles: Vec<_> = (0..RACE_THREADS)
        .map(|thread_idx| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let (mut won, mut lost) = (Vec::new(), 0);
                for attempt_idx in 0..attempts {
                    let current = store.version("shop", "counter");
                    let payload = format!("{thread_idx}/{attempt_idx}");
                    let append = expecting(
                        vec![event("counter", "Incremented", &payload)],
                        &[("counter", ExpectedVersion::Exact(current))],
                    );
                    match store.append(append) {
                        Ok(receipt) => {
                            assert_eq!(
                                receipt.events[0].version.0,
                                current.0 + 1,
                                "a winner extends the version it read"
                            );
                            won.push(receipt.events[0].version.0);
                        }
                        Err(Error::Conflict {
                            actual, expected, ..
                        }) => {
                            assert_eq!(expected, current.0.to_string());
                            assert!(
                                actual > current,
                                "a loser lost to a newer version: read {current}, actual {actual}"
                            );
                            lost += 1;
                        }
                        Err(other) => panic!("unexpected error in the race: {other}"),
                    }
                }
                (won, lost)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = 0;
    for handle in handles {
        let (won, lost) = handle.join().unwrap();
        winners.extend(won);
        losers += lost;
    }
    assert_eq!(winners.len() + losers, RACE_THREADS * attempts);
    winners.sort_unstable();
    let n_winners = winners.len() as u64;
    assert_eq!(
        winners,
        (1..=n_winners).collect::<Vec<_>>(),
        "exactly one winner per version, none skipped"
    );
    assert_eq!(store.version("shop", "counter"), Version(n_winners));
    assert_eq!(store.head(), Position(n_winners));
    assert_gapless(&store);
    let versions: Vec<u64> = whole_log(&store).iter().map(|e| e.version.0).collect();
    assert_eq!(versions, (1..=n_winners).collect::<Vec<_>>());
}

#[test]
fn racing_dcb_appends_for_one_seat_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let rounds = race_attempts() / 5;
    for round in 0..rounds {
        let seat = format!("seat:{}", 7 + round);
        // Everyone reads the head before anyone appends, so every decision is based on the same
        // state and only one of them can be right.
        let read = Arc::new(Barrier::new(RACE_THREADS));
        let handles: Vec<_> = (0..RACE_THREADS)
            .map(|thread_idx| {
                let (store, read, seat) = (store.clone(), read.clone(), seat.clone());
                std::thread::spawn(move || {
                    let decided_at = store.head();
                    read.wait();
                    let claim = tagged(&format!("guest-{thread_idx}"), "SeatReserved", &[&seat]);
                    store.append(with_condition(
                        vec![claim],
                        vec![item(&[], &[&seat])],
                        decided_at,
                    ))
                })
            })
            .collect();
        let results: Vec<Result<Receipt>> = handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect();
        let n_won = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(
            n_won, 1,
            "round {round}: exactly one reservation of {seat} succeeds: {results:?}"
        );
        for result in results.into_iter().filter(Result::is_err) {
            assert_denied(result, "dcb", "DCB_CONDITION");
        }
        let filter = Filter {
            items: vec![item(&[], &[&seat])],
            ..Filter::default()
        };
        let claims = store
            .read_log(Position(1), Direction::Forward, 100, &filter)
            .unwrap();
        assert_eq!(
            claims.events.len(),
            1,
            "round {round}: one {seat} event in the log"
        );
    }
    assert_eq!(store.head(), Position(rounds as u64));
    assert_gapless(&store);
}

#[test]
fn dry_run_returns_the_receipt_an_append_would_get_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let seed = store
        .append(Append::new(vec![
            event("order-1", "Placed", "a"),
            event("order-2", "Placed", "b"),
        ]))
        .unwrap();
    let (head, digest) = (store.head(), store.digest());
    let (paid, placed) = (EventId(uuid::Uuid::now_v7()), EventId(uuid::Uuid::now_v7()));
    let append = expecting(
        vec![
            NewEvent {
                id: Some(paid),
                ..event("order-1", "Paid", "c")
            },
            NewEvent {
                id: Some(placed),
                ..event("order-3", "Placed", "d")
            },
        ],
        &[("order-1", ExpectedVersion::Exact(Version(1)))],
    );

    let dry = store.dry_run(append.clone()).unwrap();
    assert_eq!(
        dry.events.iter().map(|c| c.position.0).collect::<Vec<_>>(),
        [3, 4],
        "positions follow the head"
    );
    assert_eq!(
        dry.events.iter().map(|c| c.version.0).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        dry.events[0].prev_hash, seed.events[0].hash,
        "the dry run chains onto the entity's last event"
    );
    assert_eq!(
        (store.head(), store.digest()),
        (head, digest),
        "a dry run writes nothing"
    );
    assert!(matches!(store.get(paid), Err(Error::NotFound(_))));
    assert_eq!(store.version("shop", "order-1"), Version(1));
    // Dry runs repeat: none of them changed anything the next one sees.
    let again = store.dry_run(append.clone()).unwrap();
    assert_eq!(
        again
            .events
            .iter()
            .map(|c| (c.position, c.version, c.id))
            .collect::<Vec<_>>(),
        dry.events
            .iter()
            .map(|c| (c.position, c.version, c.id))
            .collect::<Vec<_>>()
    );

    let real = store.append(append).unwrap();
    let shape = |receipt: &Receipt| {
        receipt
            .events
            .iter()
            .map(|c| (c.id, c.position, c.version, c.prev_hash))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(&real),
        shape(&dry),
        "the append gets what the dry run promised"
    );
}

#[test]
fn dry_run_returns_the_same_denials_as_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_recording(dir.path());
    store
        .append(Append::new(vec![tagged("seat-7", "Reserved", &["seat:7"])]))
        .unwrap();
    let head = store.head();
    let missing = EventId(uuid::Uuid::now_v7());

    let conflict = expecting(
        vec![event("seat-7", "Released", "a")],
        &[("seat-7", ExpectedVersion::NoStream)],
    );
    assert_conflict(store.dry_run(conflict.clone()), "seat-7", "no_stream", 1);
    let dcb = with_condition(
        vec![tagged("seat-7", "Reserved", &["seat:7"])],
        vec![item(&[], &["seat:7"])],
        Position(0),
    );
    let dry_facts = assert_denied(store.dry_run(dcb.clone()), "dcb", "DCB_CONDITION");
    let causation = Append::new(vec![NewEvent {
        causation: vec![missing],
        ..event("seat-7", "Released", "b")
    }]);
    assert_denied(
        store.dry_run(causation.clone()),
        "causation",
        "CAUSATION_MISSING",
    );
    let reserved = Append::new(vec![NewEvent::new(
        "$system",
        "denials",
        "AppendDenied",
        b"{}".to_vec(),
    )]);
    assert!(matches!(
        store.dry_run(reserved.clone()),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        store.head(),
        head,
        "dry-run denials are not recorded even with record_denials"
    );

    assert_conflict(store.append(conflict), "seat-7", "no_stream", 1);
    assert_eq!(
        assert_denied(store.append(dcb), "dcb", "DCB_CONDITION"),
        dry_facts
    );
    assert_denied(store.append(causation), "causation", "CAUSATION_MISSING");
    assert!(matches!(
        store.append(reserved),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn with_record_denials_a_refusal_writes_one_audit_event_and_nothing_of_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_recording(dir.path());
    store
        .append(Append::new(vec![tagged("seat-7", "Reserved", &["seat:7"])]))
        .unwrap();
    let missing = EventId(uuid::Uuid::now_v7());
    let refused_id = EventId(uuid::Uuid::now_v7());
    let cases: Vec<(Append, &str, &str)> = vec![
        (
            with_condition(
                vec![NewEvent {
                    id: Some(refused_id),
                    ..tagged("seat-7", "Reserved", &["seat:7"])
                }],
                vec![item(&[], &["seat:7"])],
                Position(0),
            ),
            "dcb",
            "DCB_CONDITION",
        ),
        (
            Append::new(vec![NewEvent {
                causation: vec![missing],
                ..event("seat-8", "Released", "a")
            }]),
            "causation",
            "CAUSATION_MISSING",
        ),
        (
            expecting(
                vec![event("seat-9", "Released", "b")],
                &[("seat-9", ExpectedVersion::Exists)],
            ),
            "expected_version",
            "VERSION_CONFLICT",
        ),
    ];
    for (append, gate, code) in cases {
        let head = store.head();
        assert!(store.append(append.clone()).is_err());
        assert_eq!(
            store.head().0,
            head.0 + 1,
            "{gate}: exactly one audit event is written"
        );
        let audit = store
            .read_log(store.head(), Direction::Forward, 1, &Filter::default())
            .unwrap()
            .events
            .remove(0);
        assert_eq!(
            (audit.scope.as_str(), audit.event_type.as_str()),
            ("$system", "AppendDenied")
        );
        let payload: serde_json::Value = serde_json::from_slice(&audit.payload).unwrap();
        assert_eq!(payload["gate"], gate, "payload {payload}");
        assert_eq!(payload["code"], code, "payload {payload}");
        for proposed in &append.events {
            if let Some(id) = proposed.id {
                assert!(
                    matches!(store.get(id), Err(Error::NotFound(_))),
                    "{gate}: the refused event is not in the log"
                );
            }
        }
    }
    assert_eq!(
        payload_gates(&store),
        ["dcb", "causation", "expected_version"]
    );
    // None of the refused events reached a client scope: the only shop event is the seed.
    let shop = Filter {
        scopes: vec!["shop".to_string()],
        ..Filter::default()
    };
    assert_eq!(
        store
            .read_log(Position(1), Direction::Forward, 100, &shop)
            .unwrap()
            .events
            .len(),
        1
    );
    assert_eq!(store.version("shop", "seat-8"), Version(0));
    assert_eq!(store.version("shop", "seat-9"), Version(0));
    assert_gapless(&store);
}

/// The `gate` named by each `AppendDenied` payload, in log order.
fn payload_gates(store: &Store) -> Vec<String> {
    whole_log(store)
        .iter()
        .filter(|event| event.event_type == "AppendDenied")
        .map(|event| {
            serde_json::from_slice::<serde_json::Value>(&event.payload).unwrap()["gate"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn without_record_denials_a_refusal_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![tagged("seat-7", "Reserved", &["seat:7"])]))
        .unwrap();
    let (head, digest) = (store.head(), store.digest());
    let missing = EventId(uuid::Uuid::now_v7());
    assert!(
        store
            .append(with_condition(
                vec![tagged("seat-7", "Reserved", &["seat:7"])],
                vec![item(&[], &["seat:7"])],
                Position(0)
            ))
            .is_err()
    );
    assert!(
        store
            .append(Append::new(vec![NewEvent {
                causation: vec![missing],
                ..event("seat-8", "Released", "a")
            }]))
            .is_err()
    );
    assert!(
        store
            .append(expecting(
                vec![event("seat-9", "Released", "b")],
                &[("seat-9", ExpectedVersion::Exists)]
            ))
            .is_err()
    );
    assert_eq!((store.head(), store.digest()), (head, digest));
    let system = Filter {
        scopes: vec!["$system".to_string()],
        ..Filter::default()
    };
    assert!(
        store
            .read_log(Position(1), Direction::Forward, 100, &system)
            .unwrap()
            .events
            .is_empty()
    );
}

#[test]
fn denial_records_of_a_retried_refusal_have_distinct_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_recording(dir.path());
    // A client retries the same refused proposal, with the same event id, twice.
    let id = EventId(uuid::Uuid::now_v7());
    let append = expecting(
        vec![NewEvent {
            id: Some(id),
            ..event("order-1", "Paid", "a")
        }],
        &[("order-1", ExpectedVersion::Exists)],
    );
    for _retry in 0..2 {
        assert_conflict(store.append(append.clone()), "order-1", "exists", 0);
    }
    let audits: Vec<Event> = whole_log(&store)
        .into_iter()
        .filter(|event| event.event_type == "AppendDenied")
        .collect();
    assert_eq!(audits.len(), 2, "each refusal is on the record");
    assert_ne!(
        audits[0].id, audits[1].id,
        "event ids are unique in the log, audit events included"
    );
    for audit in &audits {
        assert_eq!(
            store.get(audit.id).unwrap().position,
            audit.position,
            "every audit event can be fetched by its id"
        );
    }
}

#[test]
fn client_appends_to_dollar_scopes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(Append::new(vec![event("order-1", "Placed", "a")]))
        .unwrap();
    for scope in ["$system", "$anything", "$"] {
        let reserved = NewEvent::new(scope, "gates", "GateRegistered", b"{}".to_vec());
        let alone = store.append(Append::new(vec![reserved.clone()]));
        assert!(
            matches!(&alone, Err(Error::InvalidInput(msg)) if msg.contains("reserved")),
            "{scope}: got {alone:?}"
        );
        let mixed = store.append(Append::new(vec![
            event("order-1", "Paid", "b"),
            reserved.clone(),
        ]));
        assert!(
            matches!(mixed, Err(Error::InvalidInput(_))),
            "{scope}: a batch with one reserved event is refused whole"
        );
        assert!(
            matches!(
                store.stamp(Append::new(vec![reserved])),
                Err(Error::InvalidInput(_))
            ),
            "{scope}: stamp refuses too"
        );
    }
    assert_eq!(store.head(), Position(1));
    assert_eq!(store.version("shop", "order-1"), Version(1));
    // A `$` inside a scope name is not reserved; only the first character counts.
    store
        .append(Append::new(vec![NewEvent::new(
            "shop$eu",
            "order-1",
            "Placed",
            b"x".to_vec(),
        )]))
        .unwrap();
}

/// The DCB check must be exact however sparse its query: a matching event after `after` refuses
/// the append even when more than `READ_SCAN_MAX` non-matching candidates come before it.
#[test]
fn dcb_condition_sees_a_match_past_the_scan_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Config {
            durability: Durability::Relaxed,
            ..Config::default()
        },
    )
    .unwrap();
    // More entities under the prefix than the index expands into posting lists, so the prefix
    // is checked per candidate event.
    let orders: Vec<NewEvent> = (0..=64)
        .map(|n| event(&format!("order-{n}"), "Placed", ""))
        .collect();
    store.append(Append::new(orders)).unwrap();
    let decided_at = store.head();
    let mut n_filler = 0;
    while n_filler <= READ_SCAN_MAX {
        // Small batches: validation of one append is quadratic in its events.
        let batch: Vec<NewEvent> = (0..200).map(|_| event("cart", "Touched", "")).collect();
        n_filler += batch.len();
        store.append(Append::new(batch)).unwrap();
    }
    store
        .append(Append::new(vec![event("order-3", "Cancelled", "")]))
        .unwrap();
    let head = store.head();

    let query = Filter {
        scopes: vec!["shop".to_string()],
        entity_prefix: "order-".to_string(),
        ..Filter::default()
    };
    // A log read with this filter stops at the budget and says it is not done.
    let page = store
        .read_log(Position(decided_at.0 + 1), Direction::Forward, 10, &query)
        .unwrap();
    assert!(
        !page.end && page.events.is_empty(),
        "read_log pages a sparse filter: {page:?}"
    );
    let append = Append {
        condition: Some(DcbCondition {
            query,
            after: decided_at,
        }),
        ..Append::new(vec![event("order-3", "Reopened", "")])
    };
    assert_denied(store.dry_run(append.clone()), "dcb", "DCB_CONDITION");
    assert_denied(store.append(append), "dcb", "DCB_CONDITION");
    assert_eq!(store.head(), head);
}
