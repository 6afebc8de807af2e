//! Gates through the public API: every built-in rule, CEL gates, gates written in Rust, and the
//! gate set as events in the log.
//!
//! Invariants checked: each rule accepts what it should and refuses what it should with
//! `Error::Denied { gate: <its name>, code, facts }` and writes nothing of the refused append; a
//! gate judges only the scopes and types it is bound to, plus every event of an append that
//! names it; receipts list the gates passed with their versions (the position of the registering
//! event, 0 for Rust gates); definitions are `$system` events that survive a reopen, are replaced
//! and removed by further events, and are never judged by gates themselves; a CEL gate is
//! compiled at registration and its evaluation is bounded (fact calls, expression bytes; the
//! other bounds are in `gate_limits.rs`) and follows CEL's semantics; a gate
//! that panics is a denial, not a dead writer; and two stores applying the same commands
//! (registrations, removals, denials, idempotent retries) write byte-identical files.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use causeway_core::clock::{Clock, ManualClock, Timestamp};
use causeway_core::gate::{Proposal, View};
use causeway_core::limits::*;
use causeway_core::store::{
    GATE_EVENT_REGISTERED, GATE_EVENT_REMOVED, RegisteredGate, SETTINGS_EVENT_CHANGED, SYSTEM_SCOPE,
};
use causeway_core::*;

/// 2023-11-14T22:13:20Z, in nanoseconds: where injected clocks start.
const T0_NS: i64 = 1_700_000_000_000_000_000;

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, Config::default()).unwrap()
}

fn event(scope: &str, entity: &str, event_type: &str, payload: &str) -> NewEvent {
    NewEvent::new(scope, entity, event_type, payload.as_bytes().to_vec())
}

fn tagged(scope: &str, entity: &str, event_type: &str, tags: &[&str]) -> NewEvent {
    NewEvent {
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
        ..event(scope, entity, event_type, "")
    }
}

fn json(scope: &str, entity: &str, event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        content_type: "application/json".to_string(),
        ..event(scope, entity, event_type, payload)
    }
}

fn one(event: NewEvent) -> Append {
    Append::new(vec![event])
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| value.to_string()).collect()
}

fn definition(name: &str, scopes: &[&str], types: &[&str], rule: Rule) -> GateDefinition {
    GateDefinition {
        name: name.to_string(),
        scopes: strings(scopes),
        types: strings(types),
        rule,
    }
}

fn cel(name: &str, types: &[&str], expression: &str) -> GateDefinition {
    definition(
        name,
        &[],
        types,
        Rule::Cel {
            expression: expression.to_string(),
        },
    )
}

fn facts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// The gate, code and facts of a denial; fails the test on anything else.
#[track_caller]
fn denial(result: Result<Receipt>) -> (String, String, BTreeMap<String, String>) {
    match result {
        Err(Error::Denied {
            gate, code, facts, ..
        }) => (gate, code, facts),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// The names and versions of the gates a receipt lists.
fn passes(receipt: &Receipt) -> Vec<(&str, u64)> {
    receipt
        .gates
        .iter()
        .map(|pass| (pass.name.as_str(), pass.version))
        .collect()
}

fn system_events(store: &Store) -> Vec<Event> {
    let filter = Filter {
        scopes: vec![SYSTEM_SCOPE.to_string()],
        ..Filter::default()
    };
    store
        .read_log(Position(1), Direction::Forward, READ_EVENTS_MAX, &filter)
        .unwrap()
        .events
}

#[test]
fn unique_tag_refuses_a_tag_taken_in_the_same_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let registered = store
        .register_gate(definition(
            "unique-email",
            &[],
            &[],
            Rule::UniqueTag {
                prefix: "email:".to_string(),
            },
        ))
        .unwrap();
    let version = registered.events[0].position.0;

    let first = store
        .append(one(tagged("acme", "user-1", "Registered", &["email:a@x"])))
        .unwrap();
    assert_eq!(passes(&first), [("unique-email", version)]);
    let head = store.head();
    let (gate, code, seen) =
        denial(store.append(one(tagged("acme", "user-2", "Registered", &["email:a@x"]))));
    assert_eq!(
        (gate.as_str(), code.as_str()),
        ("unique-email", "TAG_TAKEN")
    );
    assert_eq!(seen, facts(&[("scope", "acme"), ("tag", "email:a@x")]));
    assert_eq!(store.head(), head, "a refused append writes nothing");
    assert_eq!(store.version("acme", "user-2"), Version(0));

    // Uniqueness is per scope, and only for tags with the prefix.
    store
        .append(one(tagged(
            "globex",
            "user-1",
            "Registered",
            &["email:a@x"],
        )))
        .unwrap();
    store
        .append(one(tagged("acme", "user-3", "Registered", &["phone:1"])))
        .unwrap();
    store
        .append(one(tagged("acme", "user-4", "Registered", &["phone:1"])))
        .unwrap();

    // Two events of one append with the same tag: refused as a whole.
    let head = store.head();
    let twins = Append::new(vec![
        tagged("acme", "user-5", "Registered", &["email:b@x"]),
        tagged("acme", "user-6", "Registered", &["email:b@x"]),
    ]);
    let (gate, code, seen) = denial(store.append(twins));
    assert_eq!(
        (gate.as_str(), code.as_str()),
        ("unique-email", "TAG_TAKEN")
    );
    assert_eq!(seen, facts(&[("scope", "acme"), ("tag", "email:b@x")]));
    assert_eq!(store.head(), head);
    // The same tag in two scopes in one append is fine, and the refused tag was never taken.
    let spread = Append::new(vec![
        tagged("acme", "user-5", "Registered", &["email:b@x"]),
        tagged("globex", "user-5", "Registered", &["email:b@x"]),
    ]);
    store.append(spread).unwrap();
}

#[test]
fn allowed_types_refuses_other_types_in_its_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let rule = Rule::AllowedTypes {
        types: strings(&["OrderPlaced", "OrderPaid"]),
    };
    let version = store
        .register_gate(definition("order-types", &["acme"], &[], rule))
        .unwrap()
        .events[0]
        .position
        .0;

    let placed = store
        .append(one(event("acme", "order-1", "OrderPlaced", "")))
        .unwrap();
    assert_eq!(passes(&placed), [("order-types", version)]);
    let (gate, code, seen) =
        denial(store.append(one(event("acme", "order-1", "OrderShipped", ""))));
    assert_eq!(
        (gate.as_str(), code.as_str()),
        ("order-types", "TYPE_NOT_ALLOWED")
    );
    assert_eq!(
        seen,
        facts(&[
            ("type", "OrderShipped"),
            ("allowed", "OrderPlaced,OrderPaid")
        ])
    );

    // One bad event refuses the whole append.
    let head = store.head();
    let mixed = Append::new(vec![
        event("acme", "order-2", "OrderPlaced", ""),
        event("acme", "order-2", "OrderLost", ""),
    ]);
    assert_eq!(denial(store.append(mixed)).1, "TYPE_NOT_ALLOWED");
    assert_eq!(
        (store.head(), store.version("acme", "order-2")),
        (head, Version(0))
    );

    let elsewhere = store
        .append(one(event("globex", "order-1", "OrderShipped", "")))
        .unwrap();
    assert!(
        elsewhere.gates.is_empty(),
        "a gate bound to acme does not judge globex: {:?}",
        elsewhere.gates
    );
}

#[test]
fn causation_exists_refuses_missing_parents_even_when_marked_external() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let root = store
        .append(one(event("acme", "saga-1", "Started", "")))
        .unwrap()
        .events[0]
        .id;
    let missing = EventId(uuid::Uuid::from_u128(0xdead));
    let orphan = || NewEvent {
        causation: vec![missing],
        ..event("acme", "saga-1", "Continued", "")
    };

    // Without the gate, `external_causation` lets a parent from elsewhere through.
    assert_eq!(denial(store.append(one(orphan()))).0, "causation");
    store
        .append(Append {
            external_causation: true,
            ..one(orphan())
        })
        .unwrap();

    let version = store
        .register_gate(definition("parents-exist", &[], &[], Rule::CausationExists))
        .unwrap()
        .events[0]
        .position
        .0;
    let head = store.head();
    let (gate, code, seen) = denial(store.append(Append {
        external_causation: true,
        ..one(orphan())
    }));
    assert_eq!(
        (gate.as_str(), code.as_str()),
        ("parents-exist", "CAUSATION_MISSING")
    );
    assert_eq!(seen, facts(&[("parent", &missing.to_string())]));
    assert_eq!(store.head(), head);

    let child = NewEvent {
        causation: vec![root],
        ..event("acme", "saga-1", "Continued", "")
    };
    let accepted = store
        .append(Append {
            external_causation: true,
            ..one(child)
        })
        .unwrap();
    assert_eq!(passes(&accepted), [("parents-exist", version)]);
    // A parent earlier in the same append counts as existing.
    let parent_id = EventId(uuid::Uuid::from_u128(0xbeef));
    let pair = vec![
        NewEvent {
            id: Some(parent_id),
            ..event("acme", "saga-2", "Started", "")
        },
        NewEvent {
            causation: vec![parent_id],
            ..event("acme", "saga-2", "Continued", "")
        },
    ];
    store
        .append(Append {
            external_causation: true,
            ..Append::new(pair)
        })
        .unwrap();
}

#[test]
fn rate_limit_counts_event_timestamps_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0_NS));
    let store = Store::open(
        dir.path(),
        Config {
            clock: clock.clone() as Arc<dyn Clock>,
            ..Config::default()
        },
    )
    .unwrap();
    let rule = Rule::RateLimit {
        max_events: 3,
        window_ms: 1000,
    };
    let version = store
        .register_gate(definition("three-per-second", &["acme"], &[], rule))
        .unwrap()
        .events[0]
        .position
        .0;
    let tick = |entity: &str| event("acme", entity, "Ticked", "");

    for _ in 0..3 {
        assert_eq!(
            passes(&store.append(one(tick("meter-1"))).unwrap()),
            [("three-per-second", version)]
        );
    }
    let expected_facts = facts(&[
        ("entity", "meter-1"),
        ("events", "4"),
        ("max_events", "3"),
        ("window_ms", "1000"),
    ]);
    let (gate, code, seen) = denial(store.append(one(tick("meter-1"))));
    assert_eq!(
        (gate.as_str(), code.as_str(), &seen),
        ("three-per-second", "RATE_LIMITED", &expected_facts)
    );
    // The limit is per entity and per bound scope; events of the same append count too.
    store.append(one(tick("meter-2"))).unwrap();
    store
        .append(Append::new(vec![
            event("globex", "meter-1", "Ticked", "");
            5
        ]))
        .unwrap();
    let (_, code, seen) = denial(store.append(Append::new(vec![
        tick("meter-2"),
        tick("meter-2"),
        tick("meter-2"),
    ])));
    assert_eq!(
        (code.as_str(), seen["events"].as_str()),
        ("RATE_LIMITED", "4")
    );

    // 999 ms later the first three are still inside the window; 1000 ms later they are not.
    clock.advance(Duration::from_millis(999));
    assert_eq!(denial(store.append(one(tick("meter-1")))).1, "RATE_LIMITED");
    clock.advance(Duration::from_millis(1));
    for _ in 0..3 {
        store.append(one(tick("meter-1"))).unwrap();
    }
    assert_eq!(
        denial(store.append(one(tick("meter-1")))).1,
        "RATE_LIMITED",
        "the new events fill the new window"
    );
}

#[test]
fn size_limit_refuses_large_payloads_of_its_types() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let version = store
        .register_gate(definition(
            "small-notes",
            &[],
            &["Noted"],
            Rule::SizeLimit {
                max_payload_bytes: 8,
            },
        ))
        .unwrap()
        .events[0]
        .position
        .0;

    assert_eq!(
        passes(
            &store
                .append(one(event("acme", "n", "Noted", "12345678")))
                .unwrap()
        ),
        [("small-notes", version)]
    );
    let (gate, code, seen) = denial(store.append(one(event("acme", "n", "Noted", "123456789"))));
    assert_eq!((gate.as_str(), code.as_str()), ("small-notes", "TOO_LARGE"));
    assert_eq!(
        seen,
        facts(&[("payload_bytes", "9"), ("max_payload_bytes", "8")])
    );
    let other = store
        .append(one(event("acme", "n", "Attached", &"x".repeat(100))))
        .unwrap();
    assert!(
        other.gates.is_empty(),
        "a gate bound to Noted does not judge Attached"
    );
    assert_eq!(store.version("acme", "n"), Version(2));
}

/// A gate bound to a scope and a type judges only events with both; an event it does not judge
/// does not appear in its proposal, and an append it does not judge does not list it.
#[test]
fn gates_judge_only_the_scopes_and_types_they_are_bound_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Refuses every non-empty payload, so whether it judged an event is visible.
    store
        .register_gate(definition(
            "empty-x-in-acme",
            &["acme"],
            &["X"],
            Rule::SizeLimit {
                max_payload_bytes: 0,
            },
        ))
        .unwrap();

    assert_eq!(
        denial(store.append(one(event("acme", "e", "X", "full")))).0,
        "empty-x-in-acme"
    );
    for (scope, event_type) in [("acme", "Y"), ("globex", "X"), ("globex", "Y")] {
        let receipt = store
            .append(one(event(scope, "e", event_type, "full")))
            .unwrap();
        assert!(
            receipt.gates.is_empty(),
            "{scope}/{event_type} is not bound: {:?}",
            receipt.gates
        );
    }
    // One bound event in a mixed append is enough to refuse it.
    let mixed = Append::new(vec![
        event("globex", "e", "X", "full"),
        event("acme", "e", "X", "full"),
    ]);
    assert_eq!(denial(store.append(mixed)).0, "empty-x-in-acme");
    assert_eq!(
        store
            .append(one(event("acme", "e", "X", "")))
            .unwrap()
            .gates
            .len(),
        1
    );
}

#[test]
fn an_append_can_name_an_extra_gate_which_judges_all_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let version = store
        .register_gate(definition(
            "empty-in-acme",
            &["acme"],
            &["X"],
            Rule::SizeLimit {
                max_payload_bytes: 0,
            },
        ))
        .unwrap()
        .events[0]
        .position
        .0;
    let events = || {
        vec![
            event("globex", "e", "Y", ""),
            event("globex", "e", "Z", "full"),
        ]
    };

    assert!(
        store
            .append(Append::new(events()))
            .unwrap()
            .gates
            .is_empty()
    );
    let named = Append {
        gates: strings(&["empty-in-acme"]),
        ..Append::new(events())
    };
    let (gate, code, _) = denial(store.append(named));
    assert_eq!(
        (gate.as_str(), code.as_str()),
        ("empty-in-acme", "TOO_LARGE")
    );
    let passing = Append {
        gates: strings(&["empty-in-acme"]),
        ..one(event("globex", "e", "Y", ""))
    };
    assert_eq!(
        passes(&store.append(passing).unwrap()),
        [("empty-in-acme", version)]
    );

    let head = store.head();
    let unknown = Append {
        gates: strings(&["no-such-gate"]),
        ..one(event("globex", "e", "Y", ""))
    };
    match store.append(unknown) {
        Err(Error::InvalidField { field, message }) => {
            assert_eq!(field, "gates[0]");
            assert!(message.contains("no-such-gate"), "{message}");
        }
        other => panic!("naming an unknown gate must be refused naming it, got {other:?}"),
    }
    assert_eq!(store.head(), head);
}

#[test]
fn the_names_the_stores_own_checks_deny_under_are_not_taken_by_a_gate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let head = store.head();
    // The names, and names that look like them: case, a Cyrillic letter, fullwidth forms,
    // invisible characters.
    let lookalikes = [
        ("causation", "causation"),
        ("dcb", "dcb"),
        ("DCB", "dcb"),
        ("Causation", "causation"),
        ("d\u{441}b", "dcb"),
        ("\u{ff44}\u{ff43}\u{ff42}", "dcb"),
        ("d\u{200b}cb", "dcb"),
        ("caus\u{200d}ation\u{2060}", "causation"),
        ("c\u{430}us\u{430}tion", "causation"),
        ("\u{13a0}\u{13df}\u{13f4}", "dcb"),
        ("\u{13a0}cb", "dcb"),
    ];
    for (name, reserved) in lookalikes {
        match store.register_gate(cel(name, &[], "false")) {
            Err(Error::InvalidInput(message)) => {
                assert!(message.contains("reserved"), "{name:?}: {message}");
                assert!(message.contains(reserved), "{name:?}: {message}");
            }
            other => panic!("gate name {name:?} must be refused, got {other:?}"),
        }
    }
    assert_eq!(store.head(), head, "nothing written");
    // A denial under either name is still the store's own check.
    let missing = EventId(uuid::Uuid::from_u128(0xbeef));
    let orphan = NewEvent {
        causation: vec![missing],
        ..event("acme", "saga-1", "Continued", "")
    };
    assert_eq!(denial(store.append(one(orphan))).1, "CAUSATION_MISSING");
    // Names that only start like them are any gate's.
    store
        .register_gate(cel("causation-v2", &[], "true"))
        .unwrap();
    store.register_gate(cel("dcbx", &[], "true")).unwrap();
}

#[test]
fn a_cel_expression_is_checked_when_it_is_registered() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    match store.register_gate(cel("broken", &[], "event.type ==")) {
        // The parser's own report: where it stopped and what it expected.
        Err(Error::InvalidInput(message)) => assert!(
            message.contains("Syntax error") && message.contains("event.type =="),
            "{message}"
        ),
        other => panic!("a bad expression must be refused, got {other:?}"),
    }

    let too_long = format!("true{}", " ".repeat(GATE_EXPRESSION_BYTES_MAX - 3));
    match store.register_gate(cel("long", &[], &too_long)) {
        Err(Error::LimitExceeded {
            limit, max, actual, ..
        }) => {
            assert_eq!(
                (limit, max, actual),
                (
                    "GATE_EXPRESSION_BYTES_MAX",
                    GATE_EXPRESSION_BYTES_MAX as u64,
                    GATE_EXPRESSION_BYTES_MAX as u64 + 1
                )
            );
        }
        other => panic!("an over-long expression must be refused, got {other:?}"),
    }
    for bad_name in ["", "has space", &"n".repeat(GATE_NAME_BYTES_MAX + 1)] {
        assert!(
            matches!(
                store.register_gate(cel(bad_name, &[], "true")),
                Err(Error::InvalidInput(_))
                    | Err(Error::LimitExceeded {
                        limit: "GATE_NAME_BYTES_MAX",
                        ..
                    })
            ),
            "name {bad_name:?}"
        );
    }
    assert_eq!(
        (store.head(), store.gates()),
        (Position(0), vec![]),
        "refused definitions write nothing"
    );

    let longest = format!("true{}", " ".repeat(GATE_EXPRESSION_BYTES_MAX - 4));
    store.register_gate(cel("longest", &[], &longest)).unwrap();
    assert_eq!(store.gates().len(), 1);
}

/// A CEL gate sees the proposed event: type, tags, metadata, entity, and the payload decoded as
/// JSON when the content type says JSON. False is `CEL_FALSE`; an evaluation error (a missing
/// key, a non-JSON payload) is `CEL_ERROR`.
#[test]
fn a_cel_gate_evaluates_the_proposed_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let with_meta = |source: &str| NewEvent {
        metadata: BTreeMap::from([("source".to_string(), source.to_string())]),
        ..event("shop", "o", "T", "")
    };
    let cases: Vec<(&str, NewEvent, NewEvent)> = vec![
        (
            r#"event.type == "OrderPlaced""#,
            event("shop", "o", "OrderPlaced", ""),
            event("shop", "o", "OrderLost", ""),
        ),
        (
            r#""vip" in event.tags"#,
            tagged("shop", "o", "T", &["vip", "new"]),
            tagged("shop", "o", "T", &["new"]),
        ),
        (
            r#"event.metadata.source == "web""#,
            with_meta("web"),
            with_meta("api"),
        ),
        (
            r#"event.entity.startsWith("order-")"#,
            event("shop", "order-1", "T", ""),
            event("shop", "cart-1", "T", ""),
        ),
        (
            "event.payload.total < 100",
            json("shop", "o", "T", r#"{"total": 12}"#),
            json("shop", "o", "T", r#"{"total": 250}"#),
        ),
    ];
    for (expression, accepted, refused) in cases {
        let version = store
            .register_gate(cel("rule", &[], expression))
            .unwrap()
            .events[0]
            .position
            .0;
        let receipt = store
            .append(one(accepted))
            .unwrap_or_else(|err| panic!("{expression}: {err}"));
        assert_eq!(passes(&receipt), [("rule", version)], "{expression}");
        let refused_type = refused.event_type.clone();
        let (gate, code, seen) = denial(store.append(one(refused)));
        assert_eq!(
            (gate.as_str(), code.as_str()),
            ("rule", "CEL_FALSE"),
            "{expression}"
        );
        assert_eq!(
            (seen["expression"].as_str(), seen["type"].as_str()),
            (expression, refused_type.as_str())
        );
        assert!(seen.contains_key("event_id"), "{seen:?}");
    }

    // The payload is JSON only when the content type says so; else `event.payload` is null.
    // The error then says why it is null.
    let untyped = event("shop", "o", "T", r#"{"total": 12}"#);
    let (_, code, seen) = denial(store.append(one(untyped)));
    assert_eq!(code, "CEL_ERROR");
    assert!(
        seen["error"].contains("event.payload is null") && seen["error"].contains("content type"),
        "the error names the cause: {seen:?}"
    );
    let (_, code, seen) = denial(store.append(one(json("shop", "o", "T", "not json"))));
    assert_eq!(code, "CEL_ERROR");
    assert!(
        seen["error"].contains("not valid JSON"),
        "the error names the cause: {seen:?}"
    );
    store
        .register_gate(cel("rule", &[], r#"event.metadata.source == "web""#))
        .unwrap();
    let (_, code, seen) = denial(store.append(one(event("shop", "o", "T", ""))));
    assert_eq!(code, "CEL_ERROR");
    assert!(
        seen["error"].contains("source"),
        "the error names the missing key: {seen:?}"
    );
}

/// The store facts a CEL gate may ask for: `count`, `exists`, `version` and `entity_version`.
#[test]
fn a_cel_gate_reads_store_facts() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .register_gate(cel(
            "two-orders",
            &["OrderPlaced"],
            r#"count({"types": ["OrderPlaced"]}) < 2"#,
        ))
        .unwrap();
    store
        .register_gate(cel(
            "not-banned",
            &["LoggedIn"],
            r#"!exists({"tags": ["banned:" + event.entity]})"#,
        ))
        .unwrap();
    store
        .register_gate(cel("open-once", &["CartOpened"], "entity_version == 0"))
        .unwrap();
    store
        .register_gate(cel(
            "close-existing",
            &["CartClosed"],
            "version(event.scope, event.entity) >= 1",
        ))
        .unwrap();

    // count: in the event's own scope unless the query names scopes.
    store
        .append(one(event("shop", "order-1", "OrderPlaced", "")))
        .unwrap();
    store
        .append(one(event("shop", "order-2", "OrderPlaced", "")))
        .unwrap();
    let (gate, code, _) = denial(store.append(one(event("shop", "order-3", "OrderPlaced", ""))));
    assert_eq!((gate.as_str(), code.as_str()), ("two-orders", "CEL_FALSE"));
    store
        .append(one(event("mall", "order-1", "OrderPlaced", "")))
        .unwrap();

    // exists
    store
        .append(one(tagged(
            "shop",
            "moderation",
            "Banned",
            &["banned:user-1"],
        )))
        .unwrap();
    assert_eq!(
        denial(store.append(one(event("shop", "user-1", "LoggedIn", "")))).1,
        "CEL_FALSE"
    );
    store
        .append(one(event("shop", "user-2", "LoggedIn", "")))
        .unwrap();
    store
        .append(one(event("mall", "user-1", "LoggedIn", "")))
        .unwrap();

    // entity_version counts earlier events of the same append; version() reads the store.
    store
        .append(one(event("shop", "cart-1", "CartOpened", "")))
        .unwrap();
    assert_eq!(
        denial(store.append(one(event("shop", "cart-1", "CartOpened", "")))).1,
        "CEL_FALSE"
    );
    let twice = Append::new(vec![
        event("shop", "cart-2", "CartOpened", ""),
        event("shop", "cart-2", "CartOpened", ""),
    ]);
    assert_eq!(denial(store.append(twice)).1, "CEL_FALSE");
    assert_eq!(store.version("shop", "cart-2"), Version(0));
    store
        .append(one(event("shop", "cart-1", "CartClosed", "")))
        .unwrap();
    assert_eq!(
        denial(store.append(one(event("shop", "cart-9", "CartClosed", "")))).1,
        "CEL_FALSE"
    );
}

#[test]
fn a_cel_gate_over_its_fact_budget_is_a_denial() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let calls = |n_calls: usize| vec![r#"version("shop", "cart") == 0"#; n_calls].join(" && ");
    store
        .register_gate(cel("at-budget", &["AtBudget"], &calls(GATE_FACT_CALLS_MAX)))
        .unwrap();
    store
        .register_gate(cel(
            "over-budget",
            &["OverBudget"],
            &calls(GATE_FACT_CALLS_MAX + 1),
        ))
        .unwrap();

    // The budget is per evaluation, so two events may each use all of it.
    store
        .append(Append::new(vec![
            event("shop", "e", "AtBudget", ""),
            event("shop", "e", "AtBudget", ""),
        ]))
        .unwrap();
    let (gate, code, seen) = denial(store.append(one(event("shop", "e", "OverBudget", ""))));
    assert_eq!((gate.as_str(), code.as_str()), ("over-budget", "CEL_ERROR"));
    assert!(seen["error"].contains("GATE_FACT_CALLS_MAX"), "{seen:?}");
    store
        .append(one(event("shop", "e", "AtBudget", "")))
        .unwrap();
}

/// Receipts list every gate passed, in name order, with the position that registered it (0 for
/// a Rust gate); a replacement bumps the version; dry runs and idempotent replays list the same.
#[test]
fn receipts_list_the_gates_passed_with_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let rust_gate = RustGate {
        name: "c-rust".to_string(),
        scopes: vec![],
        types: vec![],
        gate: Arc::new(Refuse::default()),
    };
    let store = Store::open(
        dir.path(),
        Config {
            gates: vec![rust_gate],
            ..Config::default()
        },
    )
    .unwrap();
    let b_version = store
        .register_gate(cel("b-cel", &[], "true"))
        .unwrap()
        .events[0]
        .position
        .0;
    let a_version = store
        .register_gate(definition(
            "a-size",
            &["acme"],
            &[],
            Rule::SizeLimit {
                max_payload_bytes: 10,
            },
        ))
        .unwrap()
        .events[0]
        .position
        .0;
    assert_eq!((b_version, a_version), (1, 2));

    let keyed = || Append {
        idempotency_key: Some("k-1".to_string()),
        ..one(event("acme", "e", "T", ""))
    };
    let dry = store.dry_run(keyed()).unwrap();
    assert_eq!(passes(&dry), [("a-size", 2), ("b-cel", 1), ("c-rust", 0)]);
    assert_eq!(store.head(), Position(2), "a dry run writes nothing");
    let receipt = store.append(keyed()).unwrap();
    assert_eq!(receipt.gates, dry.gates);
    assert_eq!(
        passes(&store.append(one(event("globex", "e", "T", ""))).unwrap()),
        [("b-cel", 1), ("c-rust", 0)]
    );

    let replaced = store
        .register_gate(definition(
            "a-size",
            &["acme"],
            &[],
            Rule::SizeLimit {
                max_payload_bytes: 20,
            },
        ))
        .unwrap()
        .events[0]
        .position
        .0;
    assert!(replaced > a_version);
    assert_eq!(
        passes(&store.append(one(event("acme", "e", "T", ""))).unwrap()),
        [("a-size", replaced), ("b-cel", 1), ("c-rust", 0)]
    );
    // The retry replays the original receipt, gate versions of that time included.
    assert_eq!(store.append(keyed()).unwrap(), receipt);
    let versions: Vec<(String, u64)> = store
        .gates()
        .into_iter()
        .map(|gate| (gate.name, gate.version))
        .collect();
    assert_eq!(
        versions,
        [
            ("a-size".to_string(), replaced),
            ("b-cel".to_string(), 1),
            ("c-rust".to_string(), 0)
        ]
    );
}

/// A registration is a `GateRegistered` event in `$system` carrying the definition as JSON, and
/// clients cannot write such events themselves.
#[test]
fn a_registration_is_an_event_in_the_system_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let gate = definition(
        "unique-email",
        &["acme"],
        &["Registered"],
        Rule::UniqueTag {
            prefix: "email:".to_string(),
        },
    );
    let receipt = store.register_gate(gate.clone()).unwrap();
    assert!(
        receipt.gates.is_empty(),
        "the store's own events pass no gates"
    );

    let events = system_events(&store);
    assert_eq!(events.len(), 1);
    let registered = &events[0];
    assert_eq!(
        (registered.id, registered.position),
        (receipt.events[0].id, Position(1))
    );
    assert_eq!(
        (registered.entity.as_str(), registered.event_type.as_str()),
        ("gates", GATE_EVENT_REGISTERED)
    );
    assert_eq!(
        (registered.tags.clone(), registered.content_type.as_str()),
        (strings(&["gate:unique-email"]), "application/json")
    );
    assert_eq!(
        serde_json::from_slice::<GateDefinition>(&registered.payload).unwrap(),
        gate
    );
    assert_eq!(
        store.gates(),
        [RegisteredGate {
            name: "unique-email".to_string(),
            version: 1,
            definition: Some(gate.clone())
        }]
    );

    let forged = NewEvent {
        content_type: "application/json".to_string(),
        ..NewEvent::new(
            SYSTEM_SCOPE,
            "gates",
            GATE_EVENT_REMOVED,
            br#"{"name":"unique-email"}"#.to_vec(),
        )
    };
    assert!(matches!(
        store.append(one(forged)),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!((store.head(), store.gates().len()), (Position(1), 1));
}

/// Gates never judge the store's own events: registrations, removals and denial records are
/// written even when a gate bound to every scope would refuse their type.
#[test]
fn gates_do_not_judge_the_stores_own_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    record_denials(&store);
    store
        .register_gate(definition(
            "only-orders",
            &[],
            &[],
            Rule::AllowedTypes {
                types: strings(&["OrderPlaced"]),
            },
        ))
        .unwrap();
    store
        .register_gate(cel("never", &["Unused"], "false"))
        .unwrap();
    store.remove_gate("never").unwrap();

    let (gate, code, _) = denial(store.append(one(event("acme", "e", "Other", ""))));
    assert_eq!(
        (gate.as_str(), code.as_str()),
        ("only-orders", "TYPE_NOT_ALLOWED")
    );
    let types: Vec<String> = system_events(&store)
        .into_iter()
        .map(|event| event.event_type)
        .collect();
    assert_eq!(
        types,
        [
            SETTINGS_EVENT_CHANGED,
            GATE_EVENT_REGISTERED,
            GATE_EVENT_REGISTERED,
            GATE_EVENT_REMOVED,
            "AppendDenied"
        ]
    );
    let record = system_events(&store).pop().unwrap();
    assert_eq!(
        record.tags,
        strings(&["gate:only-orders", "code:TYPE_NOT_ALLOWED"])
    );

    // A dry run that would be refused is not recorded.
    assert_eq!(
        denial(store.dry_run(one(event("acme", "e", "Other", "")))).1,
        "TYPE_NOT_ALLOWED"
    );
    assert_eq!(system_events(&store).len(), 5);
}

/// The gate set is rebuilt from the log on open; replacing and removing are events too.
#[test]
fn the_gate_set_survives_reopen_and_changes_only_through_events() {
    let dir = tempfile::tempdir().unwrap();
    let small = definition(
        "small",
        &["acme"],
        &[],
        Rule::SizeLimit {
            max_payload_bytes: 4,
        },
    );
    let store = open(dir.path());
    store.register_gate(small.clone()).unwrap();
    drop(store);

    let store = open(dir.path());
    assert_eq!(
        store.gates(),
        [RegisteredGate {
            name: "small".to_string(),
            version: 1,
            definition: Some(small)
        }]
    );
    let (gate, _, seen) = denial(store.append(one(event("acme", "e", "T", "12345"))));
    assert_eq!(
        (gate.as_str(), seen["max_payload_bytes"].as_str()),
        ("small", "4"),
        "still enforced after reopen"
    );

    let larger = definition(
        "small",
        &["acme"],
        &[],
        Rule::SizeLimit {
            max_payload_bytes: 8,
        },
    );
    let version = store.register_gate(larger.clone()).unwrap().events[0]
        .position
        .0;
    assert_eq!(version, 2);
    assert_eq!(
        store.gates(),
        [RegisteredGate {
            name: "small".to_string(),
            version,
            definition: Some(larger)
        }]
    );
    store.append(one(event("acme", "e", "T", "12345"))).unwrap();
    let (_, code, seen) = denial(store.append(one(event("acme", "e", "T", "123456789"))));
    assert_eq!(
        (code.as_str(), seen["max_payload_bytes"].as_str()),
        ("TOO_LARGE", "8")
    );

    let removal = store.remove_gate("small").unwrap();
    let removed = store.get(removal.events[0].id).unwrap();
    assert_eq!(
        (removed.scope.as_str(), removed.event_type.as_str()),
        (SYSTEM_SCOPE, GATE_EVENT_REMOVED)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&removed.payload).unwrap(),
        serde_json::json!({"name": "small"})
    );
    assert!(store.gates().is_empty());
    assert!(
        store
            .append(one(event("acme", "e", "T", "123456789")))
            .unwrap()
            .gates
            .is_empty()
    );

    let head = store.head();
    assert!(matches!(
        store.remove_gate("small"),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.remove_gate("never-registered"),
        Err(Error::NotFound(_))
    ));
    assert_eq!(store.head(), head, "a refused removal writes nothing");
    drop(store);

    let store = open(dir.path());
    assert!(store.gates().is_empty(), "the removal survives reopen");
    store
        .append(one(event("acme", "e", "T", "123456789")))
        .unwrap();
    let types: Vec<String> = system_events(&store)
        .into_iter()
        .map(|event| event.event_type)
        .collect();
    assert_eq!(
        types,
        [
            GATE_EVENT_REGISTERED,
            GATE_EVENT_REGISTERED,
            GATE_EVENT_REMOVED
        ]
    );
}

/// A Rust gate for these tests: refuses payload `no`, panics on payload `boom`, and remembers the
/// entities of every proposal it saw.
#[derive(Debug, Default)]
struct Refuse {
    seen: Mutex<Vec<Vec<String>>>,
}

impl Gate for Refuse {
    fn check(&self, proposal: &Proposal<'_>, _view: &Arc<dyn View>) -> Result<(), Denial> {
        self.seen.lock().unwrap().push(
            proposal
                .events
                .iter()
                .map(|event| event.entity.clone())
                .collect(),
        );
        for event in proposal.events {
            match &event.payload[..] {
                b"boom" => panic!("boom in {}", event.entity),
                b"no" => {
                    return Err(Denial::new(
                        "SAYS_NO",
                        format!("{} says no", event.entity),
                        [("entity", event.entity.clone())],
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[test]
fn a_rust_gate_judges_its_bound_events_and_cannot_be_replaced_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let refuse = Arc::new(Refuse::default());
    let rust_gate = RustGate {
        name: "refuse".to_string(),
        scopes: strings(&["acme"]),
        types: vec![],
        gate: refuse.clone(),
    };
    let store = Store::open(
        dir.path(),
        Config {
            gates: vec![rust_gate],
            ..Config::default()
        },
    )
    .unwrap();

    let append = Append::new(vec![
        event("acme", "a", "T", ""),
        event("globex", "b", "T", "no"),
        event("acme", "c", "T", ""),
    ]);
    assert_eq!(passes(&store.append(append).unwrap()), [("refuse", 0)]);
    assert_eq!(
        refuse.seen.lock().unwrap().pop().unwrap(),
        ["a", "c"],
        "the proposal holds the bound events only"
    );
    let (gate, code, seen) = denial(store.append(one(event("acme", "d", "T", "no"))));
    assert_eq!(
        (gate.as_str(), code.as_str(), seen),
        ("refuse", "SAYS_NO", facts(&[("entity", "d")]))
    );

    assert_eq!(
        store.gates(),
        [RegisteredGate {
            name: "refuse".to_string(),
            version: 0,
            definition: None
        }]
    );
    assert!(matches!(
        store.register_gate(cel("refuse", &[], "true")),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        store.remove_gate("refuse"),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(store.head(), Position(3));

    let twice = vec![
        RustGate {
            name: "dup".to_string(),
            scopes: vec![],
            types: vec![],
            gate: Arc::new(Refuse::default()),
        },
        RustGate {
            name: "dup".to_string(),
            scopes: vec![],
            types: vec![],
            gate: Arc::new(Refuse::default()),
        },
    ];
    drop(store);
    assert!(matches!(
        Store::open(
            dir.path(),
            Config {
                gates: twice,
                ..Config::default()
            }
        ),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn a_panicking_gate_is_a_denial_and_the_store_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        gates: vec![RustGate {
            name: "fragile".to_string(),
            scopes: vec![],
            types: vec![],
            gate: Arc::new(Refuse::default()),
        }],
        ..Config::default()
    };
    let store = Store::open(dir.path(), config()).unwrap();
    record_denials(&store);
    store.append(one(event("acme", "e", "T", "fine"))).unwrap();

    let (gate, code, seen) = denial(store.append(one(event("acme", "e", "T", "boom"))));
    assert_eq!((gate.as_str(), code.as_str()), ("fragile", "GATE_DEFECT"));
    assert!(seen["panic"].contains("boom in e"), "{seen:?}");
    assert_eq!(store.version("acme", "e"), Version(1));

    let after = store.append(one(event("acme", "e", "T", "fine"))).unwrap();
    assert_eq!(after.events[0].version, Version(2));
    let records = system_events(&store);
    assert_eq!(
        records.len(),
        2,
        "the settings change and one denial record"
    );
    assert_eq!(
        records[1].tags,
        strings(&["gate:fragile", "code:GATE_DEFECT"])
    );
    let head = store.head();
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.head(), head);
    assert_eq!(store.verify().unwrap().first_break, None);
}

/// A gate registration with a fixed id and timestamp, as `stamp_gate` makes one, so it can be
/// applied to two stores.
fn registration(id: u128, timestamp: Timestamp, gate: &GateDefinition) -> Command {
    Command {
        timestamp,
        action: Action::RegisterGate {
            id: EventId(uuid::Uuid::from_u128(id)),
            definition: gate.clone(),
        },
    }
}

/// A gate removal with a fixed id and timestamp.
fn removal(id: u128, timestamp: Timestamp, name: &str) -> Command {
    Command {
        timestamp,
        action: Action::RemoveGate {
            id: EventId(uuid::Uuid::from_u128(id)),
            name: name.to_string(),
        },
    }
}

/// Turns on the recording of denials, a setting kept in the log.
fn record_denials(store: &Store) {
    store
        .configure(Settings {
            record_denials: true,
        })
        .unwrap();
}

/// What one append on one store came to, comparable across stores.
fn outcome(result: &Result<Receipt>) -> String {
    match result {
        Ok(receipt) => format!("{receipt:?}"),
        Err(err) => format!("{err:?}"),
    }
}

/// Two stores fed the same commands (gate registrations, a replacement, a removal, accepted and
/// denied appends with denials recorded, idempotent retries and key conflicts) reach the same
/// answers and write byte-identical segment and index files: what lets every replica enforce
/// gates from the same position.
#[test]
fn the_same_commands_with_gates_produce_byte_identical_stores() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(T0_NS));
    let config = |clock: Arc<dyn Clock>| Config {
        segment_bytes: SEGMENT_BYTES_MIN,
        clock,
        ..Config::default()
    };
    let a = Store::open(dir_a.path(), config(clock.clone())).unwrap();
    let b = Store::open(dir_b.path(), config(Arc::new(ManualClock::new(T0_NS)))).unwrap();
    let fixed = |step: u64| Timestamp::new(T0_NS as u64 / 1_000_000 + step * 100, 0);
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let run = |command: Command, tally: &mut BTreeMap<String, usize>| -> Result<Receipt> {
        let result_a = a.apply(command.clone());
        let result_b = b.apply(command);
        assert_eq!(outcome(&result_a), outcome(&result_b));
        let kind = match &result_a {
            Ok(_) => "accepted".to_string(),
            Err(Error::Denied { code, .. }) => code.clone(),
            Err(Error::InvalidInput(_) | Error::InvalidField { .. }) => "invalid".to_string(),
            Err(Error::IdempotencyConflict { .. }) => "key-conflict".to_string(),
            Err(err) => panic!("unexpected error {err}"),
        };
        *tally.entry(kind).or_default() += 1;
        result_a
    };
    let record = Command {
        timestamp: fixed(0),
        action: Action::Configure {
            id: EventId(uuid::Uuid::from_u128(100)),
            settings: Settings {
                record_denials: true,
            },
        },
    };
    run(record, &mut tally).unwrap();

    let rate = |max_events| {
        definition(
            "rate",
            &["acme"],
            &["Ticked"],
            Rule::RateLimit {
                max_events,
                window_ms: 1000,
            },
        )
    };
    for (gate_idx, gate) in [
        definition(
            "unique-email",
            &["acme"],
            &[],
            Rule::UniqueTag {
                prefix: "email:".to_string(),
            },
        ),
        rate(3),
        cel(
            "cheap-orders",
            &["OrderPlaced"],
            "event.payload.total < 100",
        ),
    ]
    .iter()
    .enumerate()
    {
        run(
            registration(1 + gate_idx as u128, fixed(0), gate),
            &mut tally,
        )
        .unwrap();
    }
    let mut parent = None;
    for step in 0..150u64 {
        clock.advance(Duration::from_millis(100));
        if step == 80 {
            run(registration(10, fixed(step), &rate(2)), &mut tally).unwrap();
        }
        if step == 120 {
            run(removal(11, fixed(step), "cheap-orders"), &mut tally).unwrap();
        }
        let append = match step % 5 {
            0 => one(json(
                "acme",
                &format!("order-{}", step % 7),
                "OrderPlaced",
                &format!(r#"{{"total": {}}}"#, step * 37 % 200),
            )),
            1 => one(tagged(
                "acme",
                &format!("user-{step}"),
                "Registered",
                &[&format!("email:u{}", step / 5 % 12)],
            )),
            2 => Append::new(vec![
                event("acme", "meter", "Ticked", "");
                (step / 5 % 4 + 1) as usize
            ]),
            3 => Append {
                idempotency_key: Some(format!("key-{step}")),
                ..one(event(
                    "acme",
                    "ledger",
                    "Posted",
                    &"p".repeat(step as usize),
                ))
            },
            _ => Append {
                gates: if step % 20 == 4 {
                    strings(&["no-such-gate"])
                } else {
                    vec![]
                },
                ..one(NewEvent {
                    causation: parent.into_iter().collect(),
                    ..event("globex", "audit", "Noted", &"n".repeat(200))
                })
            },
        };
        let command = a.stamp(append.clone()).unwrap();
        if let Ok(receipt) = run(command.clone(), &mut tally)
            && append.idempotency_key.is_some()
        {
            // A retry of the same command, and of the same request stamped anew, replay.
            assert_eq!(run(command, &mut tally).unwrap(), receipt);
            assert_eq!(
                run(a.stamp(append.clone()).unwrap(), &mut tally).unwrap(),
                receipt
            );
            let changed = Append {
                events: vec![event("acme", "ledger", "Posted", "other")],
                ..append
            };
            run(a.stamp(changed).unwrap(), &mut tally).unwrap_err();
        }
        if let Ok(receipt) = a.read_log(Position(0), Direction::Backward, 1, &Filter::default()) {
            parent = receipt.events.first().map(|event| event.id);
        }
    }

    for kind in [
        "accepted",
        "TAG_TAKEN",
        "RATE_LIMITED",
        "CEL_FALSE",
        "invalid",
        "key-conflict",
    ] {
        assert!(
            tally.get(kind).copied().unwrap_or(0) > 0,
            "the sequence must cover {kind}: {tally:?}"
        );
    }
    let n_refused: usize = tally
        .iter()
        .filter(|(kind, _)| !matches!(kind.as_str(), "accepted" | "key-conflict"))
        .map(|(_, n)| n)
        .sum();
    let records = system_events(&a)
        .into_iter()
        .filter(|event| event.event_type == "AppendDenied")
        .count();
    assert_eq!(
        records, n_refused,
        "every refusal but a key conflict is on the record: {tally:?}"
    );
    assert_eq!(a.gates(), b.gates());
    let names: Vec<String> = a.gates().into_iter().map(|gate| gate.name).collect();
    assert_eq!(
        names,
        ["rate", "unique-email"],
        "the replacement kept one rate gate; the removal took cheap-orders"
    );
    assert_eq!((a.head(), a.digest()), (b.head(), b.digest()));
    assert_eq!(a.verify().unwrap().first_break, None);
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

/// Gates run in the writer, so racing appenders cannot both pass a check that only one may
/// pass: of many threads claiming one unique tag exactly one wins, and a rate limit admits
/// exactly its budget however the appends interleave.
#[test]
fn racing_appends_cannot_both_pass_a_gate() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0_NS));
    let store = Arc::new(
        Store::open(
            dir.path(),
            Config {
                clock: clock.clone() as Arc<dyn Clock>,
                ..Config::default()
            },
        )
        .unwrap(),
    );
    store
        .register_gate(definition(
            "email",
            &[],
            &[],
            Rule::UniqueTag {
                prefix: "email:".into(),
            },
        ))
        .unwrap();
    store
        .register_gate(definition(
            "burst",
            &[],
            &["Ping"],
            Rule::RateLimit {
                max_events: 10,
                window_ms: 60_000,
            },
        ))
        .unwrap();
    let n_threads = 8;
    let barrier = Arc::new(std::sync::Barrier::new(n_threads));
    let handles: Vec<_> = (0..n_threads)
        .map(|thread_idx| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let claim = tagged(
                    "acme",
                    &format!("user-{thread_idx}"),
                    "UserRegistered",
                    &["email:a@b"],
                );
                let claimed = store.append(one(claim));
                let pings: Vec<Result<Receipt>> = (0..5)
                    .map(|_| store.append(one(event("acme", "sensor", "Ping", ""))))
                    .collect();
                (claimed, pings)
            })
        })
        .collect();
    let (mut claims_won, mut pings_passed) = (0, 0);
    for handle in handles {
        let (claimed, pings) = handle.join().unwrap();
        match claimed {
            Ok(_) => claims_won += 1,
            Err(err) => assert!(
                matches!(&err, Error::Denied { code, .. } if code == "TAG_TAKEN"),
                "{err}"
            ),
        }
        for ping in pings {
            match ping {
                Ok(_) => pings_passed += 1,
                Err(err) => assert!(
                    matches!(&err, Error::Denied { code, .. } if code == "RATE_LIMITED"),
                    "{err}"
                ),
            }
        }
    }
    assert_eq!(claims_won, 1, "exactly one thread claims the unique tag");
    assert_eq!(pings_passed, 10, "the rate limit admits exactly its budget");
    assert_eq!(store.version("acme", "sensor"), Version(10));
}

/// A Rust gate that reads each bound event's entity's last event through its view, as a gate
/// comparing an event with the one before it would. A failed read is a denial.
#[derive(Debug, Default)]
struct ReadsLast {
    seen: Mutex<Vec<Option<Vec<u8>>>>,
}

impl Gate for ReadsLast {
    fn check(&self, proposal: &Proposal<'_>, view: &Arc<dyn View>) -> Result<(), Denial> {
        for event in proposal.events {
            let last = view
                .last_event(&event.scope, &event.entity)
                .map_err(|err| {
                    Denial::new(
                        "UNREADABLE",
                        err.to_string(),
                        [("entity", event.entity.clone())],
                    )
                })?;
            self.seen
                .lock()
                .unwrap()
                .push(last.map(|last| last.payload.to_vec()));
        }
        Ok(())
    }
}

/// A Rust gate that says when the writer is inside `check` and holds it there until the test
/// releases it, so that appends queued meanwhile are decided together, as the next group.
#[derive(Debug)]
struct Hold {
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Gate for Hold {
    fn check(&self, _proposal: &Proposal<'_>, _view: &Arc<dyn View>) -> Result<(), Denial> {
        self.entered.lock().unwrap().send(()).unwrap();
        let released = self
            .release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(60));
        released.map_err(|_| Denial::new("NOT_RELEASED", "the test never released", []))
    }
}

#[test]
fn each_answer_in_a_group_hands_back_the_events_of_its_own_append() {
    // One group decides a write, a refusal (recorded as an audit event), a larger write and a
    // replay; each answer gets back exactly the events its append wrote. A hold gate keeps the
    // writer busy while they queue, so they form one group.
    let dir = tempfile::tempdir().unwrap();
    let (release, released) = std::sync::mpsc::channel();
    let (entered, holding) = std::sync::mpsc::channel();
    let store = Store::open(
        dir.path(),
        Config {
            gates: vec![RustGate {
                name: "hold".to_string(),
                scopes: strings(&["hold"]),
                types: vec![],
                gate: Arc::new(Hold {
                    entered: Mutex::new(entered),
                    release: Mutex::new(released),
                }),
            }],
            ..Config::default()
        },
    )
    .unwrap();
    record_denials(&store);
    let keyed = || Append {
        idempotency_key: Some("k".to_string()),
        ..one(event("acme", "o-1", "T", "a"))
    };
    store.append(keyed()).unwrap();

    let (sender, answers) = std::sync::mpsc::channel();
    let queue = |n: usize, append: Append| {
        let sender = sender.clone();
        store
            .append_with(append, move |answer, spent| {
                sender.send((n, answer.is_ok(), spent.len())).unwrap()
            })
            .unwrap();
    };
    queue(0, one(event("hold", "h", "T", "")));
    holding.recv_timeout(Duration::from_secs(60)).unwrap();
    queue(
        1,
        Append::new(vec![
            event("acme", "o-2", "T", "b"),
            event("acme", "o-2", "T", "c"),
        ]),
    );
    queue(
        2,
        Append {
            expected: vec![Expected {
                scope: "acme".to_string(),
                entity: "o-1".to_string(),
                version: ExpectedVersion::NoStream,
            }],
            ..one(event("acme", "o-1", "T", "d"))
        },
    );
    queue(
        3,
        Append::new((0..3).map(|_| event("acme", "o-3", "T", "e")).collect()),
    );
    queue(4, keyed());
    drop(sender);
    release.send(()).unwrap();
    let mut got: Vec<(usize, bool, usize)> = answers.iter().collect();
    got.sort();
    assert_eq!(
        got,
        [
            (0, true, 1),
            (1, true, 2),
            (2, false, 0),
            (3, true, 3),
            (4, true, 0)
        ],
        "(append, accepted, events handed back)"
    );
    // The refusal's audit event was written (the settings change, the keyed append, hold, 2,
    // audit, 3), but it was built by the store, so it is not handed back.
    assert_eq!(store.head(), Position(9));
}

#[test]
fn appends_decided_in_one_group_read_the_events_written_before_them() {
    // The writer writes a group's frames to the file once, at the group's end. A command that
    // reads the log must still see every earlier command of its group: a gate's view (round
    // 1), a causation parent's correlation id (round 2), an idempotent replay (round 3). Each
    // round holds the writer in a gate (a group of its own) while it queues the round's
    // appends, so they form the next group; each round needs one of the writer's early writes.
    let dir = tempfile::tempdir().unwrap();
    let reads_last = Arc::new(ReadsLast::default());
    let (release, released) = std::sync::mpsc::channel();
    let (entered, holding) = std::sync::mpsc::channel();
    let rust_gate = |name: &str, scope: &str, gate: Arc<dyn Gate>| RustGate {
        name: name.to_string(),
        scopes: strings(&[scope]),
        types: vec![],
        gate,
    };
    let store = Store::open(
        dir.path(),
        Config {
            gates: vec![
                rust_gate(
                    "hold",
                    "hold",
                    Arc::new(Hold {
                        entered: Mutex::new(entered),
                        release: Mutex::new(released),
                    }),
                ),
                rust_gate("reads-last", "acme", reads_last.clone()),
            ],
            ..Config::default()
        },
    )
    .unwrap();
    let round = |appends: Vec<Append>| -> Vec<Receipt> {
        let (sender, answers) = std::sync::mpsc::channel();
        let queue = |n: usize, append: Append| {
            let sender = sender.clone();
            store
                .append_with(append, move |answer, _| sender.send((n, answer)).unwrap())
                .unwrap();
        };
        queue(0, one(event("hold", "h", "T", "")));
        holding.recv_timeout(Duration::from_secs(60)).unwrap();
        for (n, append) in appends.into_iter().enumerate() {
            queue(n + 1, append);
        }
        drop(sender);
        release.send(()).unwrap();
        let mut answers: Vec<(usize, Result<Receipt>)> = answers.iter().collect();
        answers.sort_by_key(|(n, _)| *n);
        answers
            .into_iter()
            .skip(1)
            .map(|(n, answer)| answer.unwrap_or_else(|err| panic!("append {n}: {err}")))
            .collect()
    };

    round(vec![
        one(event("acme", "order-1", "T", "first")),
        one(event("acme", "order-1", "T", "second")),
    ]);
    assert_eq!(
        reads_last.seen.lock().unwrap().last().unwrap().as_deref(),
        Some(b"first".as_slice()),
        "the gate saw the entity's earlier event"
    );

    let parent_id = EventId(uuid::Uuid::from_u128(7));
    let receipts = round(vec![
        one(NewEvent {
            id: Some(parent_id),
            ..event("plain", "parent", "T", "")
        }),
        one(NewEvent {
            causation: vec![parent_id],
            ..event("plain", "child", "T", "")
        }),
    ]);
    let child = store.get(receipts[1].events[0].id).unwrap();
    assert_eq!(
        child.correlation_id, parent_id,
        "the parent's correlation id"
    );

    let keyed = || Append {
        idempotency_key: Some("key-1".to_string()),
        ..one(event("plain", "keyed", "T", "once"))
    };
    let receipts = round(vec![keyed(), keyed()]);
    assert_eq!(receipts[1], receipts[0], "the retry replays the receipt");
    assert_eq!(
        store.head(),
        Position(8),
        "three holds, four appends, no replayed one"
    );
}

/// Registrations are decided by the writer, one after another: eight racing registrations of
/// new gates at `GATES_MAX - 1` end with exactly `GATES_MAX` gates in force, also after a
/// reopen, and every refused one is told `GATES_MAX`. (Checked under a read lock before the
/// write, as it once was, the race ended with 1,028.)
#[test]
fn racing_registrations_cannot_pass_gates_max() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    for gate_idx in 0..GATES_MAX - 1 {
        store
            .register_gate(cel(&format!("g-{gate_idx}"), &["Never"], "true"))
            .unwrap();
    }
    let racers: Vec<_> = (0..8)
        .map(|racer| {
            let store = store.clone();
            std::thread::spawn(move || {
                store.register_gate(cel(&format!("racer-{racer}"), &["Never"], "true"))
            })
        })
        .collect();
    let results: Vec<Result<Receipt>> = racers
        .into_iter()
        .map(|racer| racer.join().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|result| result.is_ok()).count(), 1);
    for err in results.into_iter().filter_map(Result::err) {
        assert!(
            matches!(
                err,
                Error::LimitExceeded {
                    limit: "GATES_MAX",
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(store.gates().len(), GATES_MAX);
    drop(Arc::into_inner(store).unwrap());
    assert_eq!(open(dir.path()).gates().len(), GATES_MAX);
}

/// The CEL a gate may use, as the language defines it: each expression must hold for an event
/// with a JSON payload, and each in the second list must fail to evaluate (`CEL_ERROR`).
#[test]
fn a_cel_gate_follows_cel_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let payload =
        r#"{"n": 3, "neg": -2, "x": 1.5, "s": "héllo", "items": [1, 2, 3], "m": {"k": "v"}}"#;
    let holds = [
        "1 + 2 * 3 == 7 && 7 / 2 == 3 && 7 % 2 == 1 && -7 / 2 == -3",
        "1u + 2u == 3u && 2.5 * 2.0 == 5.0 && 1 == 1u && 1 == 1.0 && 2 > 1.5",
        "'ab' + 'c' == 'abc' && b'ab' + b'c' == b'abc' && [1] + [2] == [1, 2]",
        "'b' > 'a' && 'ab' < 'b' && true > false && null == null",
        "size('héllo') == 5 && size(b'ab') == 2 && [1, 2].size() == 2 && size({1: 2}) == 1",
        "event.payload.s.contains('ll') && event.payload.s.startsWith('hé') && event.payload.s.endsWith('lo')",
        "event.payload.s.matches('^h.l+o$') && matches('abc', 'b')",
        "2 in event.payload.items && !(5 in event.payload.items) && 'k' in event.payload.m",
        "event.payload.items[1] == 2 && event.payload.m['k'] == 'v' && {1: 'a'}[1u] == 'a'",
        "has(event.payload.m) && !has(event.payload.missing) && has(event.payload.m.k)",
        "event.payload.items.all(i, i > 0) && event.payload.items.exists(i, i == 2)",
        "event.payload.items.exists_one(i, i > 2) && !event.payload.items.exists_one(i, i > 1)",
        "event.payload.items.map(i, i * 2u) == [2, 4, 6] && event.payload.items.filter(i, i != 2) == [1, 3]",
        "event.payload.items.map(i, i > 1, i) == [2, 3] && {'a': 1, 'b': 2}.all(k, k in ['a', 'b'])",
        "int('42') == 42 && uint(3) == 3u && double(1) == 1.0 && int(2.9) == 2 && string(1.5) == '1.5'",
        "string(b'hi') == 'hi' && bytes('hi') == b'hi' && bool('true') && dyn(1) == 1",
        "type(1) == int && type('s') == string && type([]) == list && type(type(1)) == type",
        "(true ? 1 : 2) == 1 && (false ? 1 : 2) == 2",
        "false && event.payload.missing || true",
        "(event.payload.missing > 1 || true) && !(event.payload.missing > 1 && false)",
        "event.payload.neg < 0 && event.payload.n == 3u && event.payload.x > 1",
        "event.metadata == {} && event.tags == [] && event.version == entity_version + 1",
        "now_ms > 0 && event.timestamp_ms >= now_ms && size(event.id) == 36",
        "event == event && event.type == 'T' && event.content_type == 'application/json'",
        "[[1, [2]], {'a': [3]}] == [[1, [2]], {'a': [3]}] && [1, 2] != [2, 1]",
    ];
    for expression in holds {
        store
            .register_gate(cel("semantics", &[], expression))
            .unwrap_or_else(|err| panic!("{expression}: {err}"));
        store
            .append(one(json("shop", "o", "T", payload)))
            .unwrap_or_else(|err| panic!("{expression}: {err}"));
    }
    let fails = [
        "9223372036854775807 + 1 > 0",
        "-9223372036854775807 - 2 < 0",
        "0u - 1u > 0u",
        "1 / 0 == 0",
        "1 + 1u == 2",
        "event.payload.items[3] == 0",
        "event.payload.m.missing == 'v'",
        "{1: 1, 1: 2}.size() == 1",
        "int('x') == 0",
        "event.payload.items.all(i, i / 0 > 0)",
        "'a'.matches('(' + '') == false",
        "1",
    ];
    for expression in fails {
        store
            .register_gate(cel("semantics", &[], expression))
            .unwrap_or_else(|err| panic!("{expression}: {err}"));
        let (_, code, _) = denial(store.append(one(json("shop", "o", "T", payload))));
        assert_eq!(code, "CEL_ERROR", "{expression}");
    }
}

/// A gate in force that this build cannot compile stops the open with `Incompatible`, naming
/// its position, instead of being skipped (a skipped gate would leave this node enforcing
/// other gates than its replicas). The definition is changed on disk, frame CRC recomputed, to
/// one the compiler refuses, as a newer build's gate would be.
#[test]
fn a_gate_that_no_longer_compiles_stops_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(one(event("acme", "e", "T", ""))).unwrap();
    let receipt = store
        .register_gate(cel("future", &[], "event.type == 'abc'"))
        .unwrap();
    let position = receipt.events[0].position;
    drop(store);
    let segment = dir.path().join("events/00000000000000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    // Same length, so every offset stays: an undefined name, as a function of a newer build
    // would be to this one.
    let (from, to) = (b"event.type == 'abc'", b"evnt9.type == 'abc'");
    let at = bytes
        .windows(from.len())
        .position(|window| window == from)
        .unwrap();
    bytes[at..at + to.len()].copy_from_slice(to);
    // Recompute the CRC of the frame that holds it (frames start at 32: CRC, length, index,
    // flags, body).
    let mut offset = 32;
    loop {
        let body_len =
            u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().unwrap()) as usize;
        let end = offset + 17 + body_len;
        if (offset..end).contains(&at) {
            let crc = crc32fast::hash(&bytes[offset + 4..end]);
            bytes[offset..offset + 4].copy_from_slice(&crc.to_le_bytes());
            break;
        }
        offset = end;
    }
    std::fs::write(&segment, &bytes).unwrap();
    match Store::open(dir.path(), Config::default()) {
        Err(Error::Incompatible {
            position: at_position,
            detail,
        }) => {
            assert_eq!(at_position, position.0);
            assert!(
                detail.contains("future") && detail.contains("evnt9"),
                "{detail}"
            );
        }
        Err(other) => panic!("expected Incompatible, got {other}"),
        Ok(_) => panic!("a store with a gate it cannot compile opened"),
    }
}
