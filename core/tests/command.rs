//! The command codec and replicated apply, through the public API.
//!
//! Invariants checked: every command kind has one encoding, pinned byte for byte by
//! `tests/golden/command-v1.hex` (bless a deliberate change with `CAUSEWAY_BLESS=1` and describe
//! it in `docs/FORMAT.md`); any command round-trips through `encode`/`decode`; truncated,
//! corrupted and random input decodes to `Error::InvalidInput`, never a panic or a large
//! allocation; the idempotency request hash follows the content, not the ids the store assigns;
//! `apply_at` records the entry with what it writes, refuses an entry at or below the last one
//! applied, and two stores fed the same entries (with reopens and re-applies from an earlier
//! entry on one of them) end byte-identical with equal `applied()`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write;

use common::{event_files, hex_lines};

use causeway_core::clock::Timestamp;
use causeway_core::*;
use proptest::prelude::*;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/command-v1.hex");

fn id(n: u128) -> EventId {
    EventId(uuid::Uuid::from_u128(n))
}

fn timestamp(step: u64) -> Timestamp {
    Timestamp::new(1_764_000_000_000 + step, 0)
}

/// One command of every kind, each field set, in a fixed order.
fn every_kind() -> Vec<Command> {
    let append = Append {
        events: vec![
            NewEvent {
                id: Some(id(1)),
                tags: vec!["customer:42".to_string()],
                content_type: "application/json".to_string(),
                metadata: BTreeMap::from([("source".to_string(), "golden".to_string())]),
                correlation_id: Some(id(9)),
                ..NewEvent::new(
                    "acme",
                    "order-507",
                    "OrderPlaced",
                    br#"{"total":12}"#.to_vec(),
                )
            },
            NewEvent {
                causation: vec![id(1)],
                ..NewEvent::new("acme", "order-507", "OrderPaid", b"ok".to_vec())
            },
        ],
        expected: vec![
            Expected {
                scope: "acme".to_string(),
                entity: "order-507".to_string(),
                version: ExpectedVersion::NoStream,
            },
            Expected {
                scope: "acme".to_string(),
                entity: "order-1".to_string(),
                version: ExpectedVersion::Exact(Version(3)),
            },
        ],
        condition: Some(DcbCondition {
            query: Filter {
                scopes: vec!["acme".to_string()],
                entity_prefix: "order-".to_string(),
                items: vec![QueryItem {
                    types: vec!["OrderPlaced".to_string()],
                    tags: vec!["customer:42".to_string()],
                }],
                since: Some(timestamp(1)),
                until: None,
            },
            after: Position(17),
        }),
        idempotency_key: Some("key-1".to_string()),
        gates: vec!["small-orders".to_string()],
        external_causation: true,
    };
    vec![
        Command::append(timestamp(0), append),
        Command {
            timestamp: timestamp(1),
            action: Action::RegisterGate {
                id: id(2),
                definition: GateDefinition {
                    name: "small-orders".to_string(),
                    scopes: vec!["acme".to_string()],
                    types: vec!["OrderPlaced".to_string()],
                    rule: Rule::Cel {
                        expression: "event.payload.total < 1000".to_string(),
                    },
                },
            },
        },
        Command {
            timestamp: timestamp(2),
            action: Action::RegisterGate {
                id: id(3),
                definition: GateDefinition {
                    name: "rate".to_string(),
                    scopes: vec![],
                    types: vec![],
                    rule: Rule::RateLimit {
                        max_events: 5,
                        window_ms: 1000,
                    },
                },
            },
        },
        Command {
            timestamp: timestamp(3),
            action: Action::RemoveGate {
                id: id(4),
                name: "rate".to_string(),
            },
        },
        Command {
            timestamp: timestamp(4),
            action: Action::Configure {
                id: id(5),
                settings: Settings {
                    record_denials: true,
                },
            },
        },
        Command::noop(),
    ]
}

#[test]
fn command_bytes_match_the_golden_file() {
    let mut actual = String::new();
    for command in every_kind() {
        let kind = format!("{:?}", command.action);
        writeln!(actual, "# {}", kind.split([' ', '{', '(']).next().unwrap()).unwrap();
        actual.push_str(&hex_lines(&command.encode()));
    }
    if std::env::var_os("CAUSEWAY_BLESS").is_some() {
        std::fs::write(GOLDEN, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(GOLDEN).unwrap_or_default();
    assert!(
        actual == expected,
        "command bytes changed; expected:\n{expected}\nactual:\n{actual}"
    );
}

#[test]
fn every_kind_round_trips() {
    for command in every_kind() {
        assert_eq!(Command::decode(&command.encode()).unwrap(), command);
    }
}

/// Every prefix of every command's bytes, and every single-byte change of them, decodes to a
/// typed error or (for a changed byte inside a string or number) to another command, never a
/// panic.
#[test]
fn cut_or_changed_bytes_are_refused_with_a_typed_error() {
    for command in every_kind() {
        let bytes = command.encode();
        for cut in 0..bytes.len() {
            match Command::decode(&bytes[..cut]) {
                Err(Error::InvalidInput(message)) => {
                    assert!(message.starts_with("malformed command"), "{message}")
                }
                other => panic!("a command cut at {cut} decoded to {other:?}"),
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Command::decode(&longer),
            Err(Error::InvalidInput(_))
        ));
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0xff;
            if let Ok(decoded) = Command::decode(&changed) {
                assert_ne!(
                    decoded, command,
                    "a changed byte {at} decoded to the same command"
                );
            }
        }
    }
}

#[test]
fn a_length_past_the_end_is_refused_before_it_is_allocated() {
    // An append that claims 2^32 - 1 events in a handful of bytes.
    let mut bytes = vec![COMMAND_VERSION, 1];
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&[0; 32]);
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    match Command::decode(&bytes) {
        Err(Error::InvalidInput(message)) => assert!(message.contains("does not fit"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Command::decode(&[9, 1]),
        Err(Error::InvalidInput(message)) if message.contains("version 9")
    ));
}

const COMMAND_VERSION: u8 = causeway_core::command::COMMAND_FORMAT_VERSION;

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z:$-]{1,12}", "\\PC{0,6}"]
}

fn arb_event() -> impl Strategy<Value = NewEvent> {
    (
        proptest::option::of(any::<u128>()),
        (arb_string(), arb_string(), arb_string(), arb_string()),
        proptest::collection::vec(arb_string(), 0..3),
        proptest::collection::btree_map(arb_string(), arb_string(), 0..3),
        proptest::collection::vec(any::<u128>(), 0..3),
        proptest::option::of(any::<u128>()),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(
            |(
                event_id,
                (scope, entity, event_type, content_type),
                tags,
                metadata,
                parents,
                correlation,
                payload,
            )| {
                NewEvent {
                    id: event_id.map(id),
                    scope,
                    entity,
                    event_type,
                    tags,
                    payload: payload.into(),
                    content_type,
                    metadata,
                    causation: parents.into_iter().map(id).collect(),
                    correlation_id: correlation.map(id),
                }
            },
        )
}

fn arb_command() -> impl Strategy<Value = Command> {
    let expected = (arb_string(), arb_string(), 0u8..4, any::<u64>()).prop_map(
        |(scope, entity, kind, version)| Expected {
            scope,
            entity,
            version: match kind {
                0 => ExpectedVersion::Any,
                1 => ExpectedVersion::NoStream,
                2 => ExpectedVersion::Exists,
                _ => ExpectedVersion::Exact(Version(version)),
            },
        },
    );
    let filter = (
        proptest::collection::vec(arb_string(), 0..3),
        arb_string(),
        proptest::collection::vec(
            (
                proptest::collection::vec(arb_string(), 0..2),
                proptest::collection::vec(arb_string(), 0..2),
            ),
            0..2,
        ),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(scopes, entity_prefix, items, since, until)| Filter {
            scopes,
            entity_prefix,
            items: items
                .into_iter()
                .map(|(types, tags)| QueryItem { types, tags })
                .collect(),
            since: since.map(Timestamp::from_u64),
            until: until.map(Timestamp::from_u64),
        });
    let append = (
        proptest::collection::vec(arb_event(), 0..4),
        proptest::collection::vec(expected, 0..3),
        proptest::option::of((filter, any::<u64>())),
        proptest::option::of(arb_string()),
        proptest::collection::vec(arb_string(), 0..3),
        any::<bool>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(
                events,
                expected,
                condition,
                idempotency_key,
                gates,
                external_causation,
                request_hash,
            )| {
                Action::Append {
                    append: Append {
                        events,
                        expected,
                        condition: condition.map(|(query, after)| DcbCondition {
                            query,
                            after: Position(after),
                        }),
                        idempotency_key,
                        gates,
                        external_causation,
                    },
                    request_hash,
                }
            },
        );
    let rule = prop_oneof![
        arb_string().prop_map(|prefix| Rule::UniqueTag { prefix }),
        proptest::collection::vec(arb_string(), 0..3)
            .prop_map(|types| Rule::AllowedTypes { types }),
        Just(Rule::CausationExists),
        (any::<u64>(), any::<u64>()).prop_map(|(max_events, window_ms)| Rule::RateLimit {
            max_events,
            window_ms
        }),
        any::<u64>().prop_map(|max_payload_bytes| Rule::SizeLimit { max_payload_bytes }),
        arb_string().prop_map(|expression| Rule::Cel { expression }),
    ];
    let gate = (
        any::<u128>(),
        arb_string(),
        proptest::collection::vec(arb_string(), 0..3),
        proptest::collection::vec(arb_string(), 0..3),
        rule,
    )
        .prop_map(
            |(event_id, name, scopes, types, rule)| Action::RegisterGate {
                id: id(event_id),
                definition: GateDefinition {
                    name,
                    scopes,
                    types,
                    rule,
                },
            },
        );
    let action = prop_oneof![
        append,
        gate,
        (any::<u128>(), arb_string()).prop_map(|(event_id, name)| Action::RemoveGate {
            id: id(event_id),
            name
        }),
        (any::<u128>(), any::<bool>()).prop_map(|(event_id, record_denials)| Action::Configure {
            id: id(event_id),
            settings: Settings { record_denials }
        }),
        Just(Action::Noop),
    ];
    (any::<u64>(), action).prop_map(|(packed, action)| Command {
        timestamp: Timestamp::from_u64(packed),
        action,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_command_round_trips_and_encodes_once(command in arb_command()) {
        let bytes = command.encode();
        let decoded = Command::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &command);
        prop_assert_eq!(decoded.encode(), bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Err(err) = Command::decode(&bytes) {
            prop_assert!(matches!(err, Error::InvalidInput(_)), "{:?}", err);
        }
    }
}

/// The request hash is over the content as the client sent it: the same request stamped twice
/// (ids left to the store) hashes the same; any change of content hashes differently.
#[test]
fn the_request_hash_follows_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let keyed = |payload: &str| Append {
        idempotency_key: Some("k".to_string()),
        ..Append::new(vec![NewEvent::new(
            "acme",
            "e",
            "T",
            payload.as_bytes().to_vec(),
        )])
    };
    let hash = |command: Command| match command.action {
        Action::Append { request_hash, .. } => request_hash,
        other => panic!("{other:?}"),
    };
    let first = hash(store.stamp(keyed("a")).unwrap());
    assert_eq!(hash(store.stamp(keyed("a")).unwrap()), first);
    assert_ne!(hash(store.stamp(keyed("b")).unwrap()), first);
    assert_eq!(first, command::request_hash(&keyed("a")));
}

/// The (entry, command) sequence of a replicated log: appends (some refused by a version
/// condition or a gate), gate registrations and removals, settings changes and no-ops.
fn entries() -> Vec<(EntryId, Command)> {
    let mut out = Vec::new();
    let mut index = 0;
    let mut push = |term: u64, command: Command| {
        index += 3; // entries need not be consecutive, only increasing
        out.push((EntryId { term, index }, command));
    };
    for step in 0..60u64 {
        let term = 1 + step / 20;
        let at = timestamp(step * 10);
        let event_id = 1000 + u128::from(step);
        match step % 10 {
            0 => push(
                term,
                Command {
                    timestamp: at,
                    action: Action::Configure {
                        id: id(event_id),
                        settings: Settings {
                            record_denials: step % 20 == 0,
                        },
                    },
                },
            ),
            1 => push(
                term,
                Command {
                    timestamp: at,
                    action: Action::RegisterGate {
                        id: id(event_id),
                        definition: GateDefinition {
                            name: "no-big".to_string(),
                            scopes: vec!["acme".to_string()],
                            types: vec![],
                            rule: Rule::SizeLimit {
                                max_payload_bytes: 8,
                            },
                        },
                    },
                },
            ),
            7 => push(
                term,
                Command {
                    timestamp: at,
                    action: Action::RemoveGate {
                        id: id(event_id),
                        name: "no-big".to_string(),
                    },
                },
            ),
            8 => push(term, Command::noop()),
            kind => {
                let payload = "x".repeat((step % 13) as usize);
                let append = Append {
                    expected: if kind == 5 {
                        vec![Expected {
                            scope: "acme".to_string(),
                            entity: format!("e-{}", step % 3),
                            version: ExpectedVersion::NoStream,
                        }]
                    } else {
                        vec![]
                    },
                    idempotency_key: (kind == 4).then(|| format!("key-{}", step % 7)),
                    ..Append::new(vec![NewEvent {
                        id: Some(id(event_id)),
                        ..NewEvent::new(
                            "acme",
                            format!("e-{}", step % 3),
                            "T",
                            payload.into_bytes(),
                        )
                    }])
                };
                push(term, Command::append(at, append));
            }
        }
    }
    out
}

fn outcome(result: &Result<Receipt>) -> String {
    match result {
        Ok(receipt) => format!("{receipt:?}"),
        Err(err) => format!("{err}"),
    }
}

/// Two stores apply the same entries; one of them is closed and reopened at random points and
/// then offered the entries again from a few entries back, as a replica replaying its log after
/// a crash would. Entries at or below `applied()` are refused as already applied; the others
/// are applied and answered as on the first store. Both end byte-identical, with the same
/// `applied()`, also after a last reopen.
#[test]
fn replay_with_reopens_reaches_the_same_bytes_and_applied_entry() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = || Config {
        segment_bytes: causeway_core::limits::SEGMENT_BYTES_MIN,
        ..Config::default()
    };
    let a = Store::open(dir_a.path(), config()).unwrap();
    let mut b = Store::open(dir_b.path(), config()).unwrap();
    let entries = entries();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut answers = Vec::new();
    for (entry, command) in &entries {
        let result = a.apply_at(*entry, command.clone());
        *kinds
            .entry(match &result {
                Ok(receipt) if receipt.events.is_empty() => "noop",
                Ok(_) => "written",
                Err(Error::Denied { .. }) => "denied",
                Err(Error::Conflict { .. }) => "conflict",
                Err(err) => panic!("{err}"),
            })
            .or_default() += 1;
        answers.push(outcome(&result));
    }
    assert!(
        kinds.len() == 4,
        "the sequence covers every kind: {kinds:?}"
    );
    // Reopen points from a seed (CAUSEWAY_REPLAY_SEED replays one), always ending at the end.
    let seed: u64 = std::env::var("CAUSEWAY_REPLAY_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("replay seed {seed} (CAUSEWAY_REPLAY_SEED)");
    let mut state = seed | 1;
    let mut reopen_points: Vec<usize> = (0..6)
        .map(|_| {
            // xorshift64: enough to spread the points.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state % entries.len() as u64) as usize
        })
        .collect();
    reopen_points.push(entries.len());
    reopen_points.sort_unstable();
    let mut next = 0;
    for reopen_at in reopen_points {
        while next < reopen_at {
            let (entry, command) = &entries[next];
            assert_eq!(
                outcome(&b.apply_at(*entry, command.clone())),
                answers[next],
                "entry {}",
                entry.index
            );
            next += 1;
        }
        drop(b);
        b = Store::open(dir_b.path(), config()).unwrap();
        let applied = b.applied().unwrap();
        // The entries after the last one with a record on disk are applied again; offering a
        // few before it shows they are refused, and change nothing.
        let resume = entries
            .iter()
            .position(|(entry, _)| *entry == applied)
            .unwrap();
        for (entry, command) in &entries[resume.saturating_sub(3)..=resume] {
            assert!(matches!(
                b.apply_at(*entry, command.clone()),
                Err(Error::AlreadyApplied { .. })
            ));
        }
        for (entry_idx, (entry, command)) in entries.iter().enumerate().take(next).skip(resume + 1)
        {
            assert_eq!(
                outcome(&b.apply_at(*entry, command.clone())),
                answers[entry_idx]
            );
        }
    }
    assert_eq!(a.applied(), b.applied());
    assert_eq!(a.applied(), Some(entries.last().unwrap().0));
    assert_eq!(a.head_and_digest(), b.head_and_digest());
    assert_eq!(a.settings(), b.settings());
    drop((a, b));
    assert_eq!(event_files(dir_a.path()), event_files(dir_b.path()));
}

#[test]
fn settings_are_in_the_log_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert!(!store.settings().record_denials);
    let receipt = store
        .configure(Settings {
            record_denials: true,
        })
        .unwrap();
    assert_eq!(receipt.events[0].position, Position(1));
    let refused = Append {
        expected: vec![Expected {
            scope: "acme".to_string(),
            entity: "e".to_string(),
            version: ExpectedVersion::Exists,
        }],
        ..Append::new(vec![NewEvent::new("acme", "e", "T", b"x".to_vec())])
    };
    store.append(refused.clone()).unwrap_err();
    assert_eq!(store.head(), Position(2), "the denial was recorded");
    drop(store);
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert!(store.settings().record_denials);
    store.append(refused).unwrap_err();
    assert_eq!(store.head(), Position(3));
}

#[test]
fn a_store_with_rust_gates_refuses_replicated_apply() {
    #[derive(Debug)]
    struct Pass;
    impl Gate for Pass {
        fn check(
            &self,
            _: &causeway_core::gate::Proposal<'_>,
            _: &std::sync::Arc<dyn causeway_core::gate::View>,
        ) -> std::result::Result<(), Denial> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Config {
            gates: vec![RustGate {
                name: "pass".to_string(),
                scopes: vec![],
                types: vec![],
                gate: std::sync::Arc::new(Pass),
            }],
            ..Config::default()
        },
    )
    .unwrap();
    let err = store
        .apply_at(EntryId { term: 1, index: 1 }, Command::noop())
        .unwrap_err();
    assert!(matches!(err, Error::Unreplicable(_)), "{err}");
    assert!(!err.is_deterministic());
}

/// An entry that writes nothing (a no-op, a refusal) leaves an applied mark, so `applied()`
/// names it after a restart; the mark takes no position, and a later append follows on.
#[test]
fn entries_that_write_nothing_are_still_applied_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        segment_bytes: causeway_core::limits::SEGMENT_BYTES_MIN,
        ..Config::default()
    };
    let store = Store::open(dir.path(), config()).unwrap();
    let conditional = |event_id: u128| {
        Command::append(
            timestamp(event_id as u64),
            Append {
                expected: vec![Expected {
                    scope: "acme".to_string(),
                    entity: "e".to_string(),
                    version: ExpectedVersion::NoStream,
                }],
                ..Append::new(vec![NewEvent {
                    id: Some(id(event_id)),
                    ..NewEvent::new("acme", "e", "T", b"x".to_vec())
                }])
            },
        )
    };
    let entry = |index| EntryId { term: 4, index };
    store.apply_at(entry(1), conditional(1)).unwrap();
    store.apply_at(entry(2), Command::noop()).unwrap();
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.applied(), Some(entry(2)));
    assert_eq!(store.head(), Position(1));
    // A refusal moves it too.
    assert!(matches!(
        store.apply_at(entry(3), conditional(2)),
        Err(Error::Conflict { .. })
    ));
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.applied(), Some(entry(3)));
    assert!(matches!(
        store.apply_at(entry(3), Command::noop()),
        Err(Error::AlreadyApplied { .. })
    ));
    // Many marks, then enough events to roll segments: positions stay dense.
    for index in 4..200 {
        store.apply_at(entry(index), Command::noop()).unwrap();
    }
    for index in 200..260u64 {
        let command = Command::append(
            timestamp(index),
            Append::new(vec![NewEvent {
                id: Some(id(u128::from(index))),
                ..NewEvent::new("acme", "f", "T", vec![b'y'; 100])
            }]),
        );
        store.apply_at(entry(index), command).unwrap();
    }
    store.apply_at(entry(260), Command::noop()).unwrap();
    let head = store.head();
    assert_eq!(head, Position(61));
    drop(store);
    let store = Store::open(dir.path(), config()).unwrap();
    assert_eq!(store.applied(), Some(entry(260)));
    assert_eq!(store.head(), head);
    assert_eq!(store.verify().unwrap().first_break, None);
}

/// An expected version's scope and entity are bounded like an event's: they are echoed in a
/// conflict, and were not checked at all (found from outside with a 14 KB scope).
#[test]
fn expected_version_names_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    for (scope, entity, limit_name) in [
        ("s".repeat(129), "e".to_string(), "SCOPE_BYTES_MAX"),
        ("s".to_string(), "e".repeat(257), "ENTITY_BYTES_MAX"),
    ] {
        let append = Append {
            expected: vec![Expected {
                scope,
                entity,
                version: ExpectedVersion::NoStream,
            }],
            ..Append::new(vec![NewEvent::new("acme", "e", "T", vec![])])
        };
        match store.append(append) {
            Err(Error::LimitExceeded { limit, .. }) => assert_eq!(limit, limit_name),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(store.head(), Position(0));
}

/// An entry applied again is a no-op that returns its original answer: the same receipt for
/// one that wrote events or wrote nothing, the same refusal for one that was refused. After a
/// reopen, with no answers kept, it is `AlreadyApplied`; nothing is written either way.
#[test]
fn an_entry_applied_again_gets_its_original_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Config::default()).unwrap();
    let entry = |index| EntryId { term: 7, index };
    let placed = |event_id: u128| {
        Command::append(
            timestamp(event_id as u64),
            Append {
                expected: vec![Expected {
                    scope: "acme".to_string(),
                    entity: "e".to_string(),
                    version: ExpectedVersion::NoStream,
                }],
                ..Append::new(vec![NewEvent {
                    id: Some(id(event_id)),
                    ..NewEvent::new("acme", "e", "T", b"x".to_vec())
                }])
            },
        )
    };
    let wrote = store.apply_at(entry(1), placed(1)).unwrap();
    let refused = store.apply_at(entry(2), placed(2)).unwrap_err();
    let nothing = store.apply_at(entry(3), Command::noop()).unwrap();
    let head = store.head_and_digest();
    assert_eq!(store.apply_at(entry(1), placed(1)).unwrap(), wrote);
    assert_eq!(
        store.apply_at(entry(2), placed(2)).unwrap_err().to_string(),
        refused.to_string()
    );
    assert_eq!(store.apply_at(entry(3), Command::noop()).unwrap(), nothing);
    assert_eq!(store.head_and_digest(), head);
    assert_eq!(store.applied(), Some(entry(3)));
    drop(store);
    let store = Store::open(dir.path(), Config::default()).unwrap();
    assert!(matches!(
        store.apply_at(entry(1), placed(1)),
        Err(Error::AlreadyApplied { .. })
    ));
    assert_eq!(store.head_and_digest(), head);
}

/// A run of entries applied as one group on the caller's thread (`apply_group_at`, what a
/// replica does with a few small committed entries) is decided exactly as the same entries
/// applied one at a time: the same answers in the same order (writes, refusals, no-ops, and an
/// entry offered again), the same head and digest, and the same `applied()`, also after a
/// reopen. It is refused with fsync durability (the answers would need the writer's sync) and
/// once the store is closed.
#[test]
fn a_group_applied_on_the_callers_thread_is_decided_as_one_entry_at_a_time() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = || Config {
        durability: Durability::Relaxed,
        segment_bytes: causeway_core::limits::SEGMENT_BYTES_MIN,
        ..Config::default()
    };
    let a = Store::open(dir_a.path(), config()).unwrap();
    let b = Store::open(dir_b.path(), config()).unwrap();
    let entries = entries();
    let one_by_one: Vec<String> = entries
        .iter()
        .map(|(entry, command)| outcome(&a.apply_at(*entry, command.clone())))
        .collect();
    // Groups of 1 to 7 entries, each but the first also offering the previous group's last
    // entry again (answered as before, and written once).
    let mut grouped = Vec::new();
    let mut next = 0;
    let mut size = 1;
    while next < entries.len() {
        let end = (next + size).min(entries.len());
        let mut group = Vec::new();
        if next > 0 {
            group.push(entries[next - 1].clone());
        }
        group.extend(entries[next..end].iter().cloned());
        let answers = applied(b.apply_group_at(group).unwrap());
        let answers: Vec<String> = answers.iter().map(outcome).collect();
        if next > 0 {
            assert_eq!(answers[0], one_by_one[next - 1], "entry offered again");
            grouped.extend_from_slice(&answers[1..]);
        } else {
            grouped.extend(answers);
        }
        next = end;
        size = size % 7 + 1;
    }
    assert_eq!(grouped, one_by_one);
    assert_eq!(a.head_and_digest(), b.head_and_digest());
    assert_eq!(a.applied(), b.applied());
    let head = b.head_and_digest();
    drop(b);
    let b = Store::open(dir_b.path(), config()).unwrap();
    assert_eq!(b.head_and_digest(), head);
    assert_eq!(b.applied(), a.applied());
    let last = entries.last().unwrap().0;
    let after = EntryId {
        term: last.term,
        index: last.index + 1,
    };
    b.close().unwrap();
    assert!(matches!(
        b.apply_group_at(vec![(after, Command::noop())]),
        Err(Error::Closed)
    ));

    let dir_c = tempfile::tempdir().unwrap();
    let fsync = Store::open(dir_c.path(), Config::default()).unwrap();
    let err = fsync
        .apply_group_at(vec![(EntryId { term: 1, index: 1 }, Command::noop())])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_eq!(fsync.applied(), None);
}

fn applied(grouped: Grouped) -> Vec<Result<Receipt>> {
    match grouped {
        Grouped::Applied(answers) => answers,
        Grouped::Busy(_) => panic!("the writer thread had nothing to do"),
    }
}

/// While the writer thread is busy with requests of its own (here another client's large dry
/// runs), `apply_group_at` applies nothing and hands the group back unchanged instead of
/// waiting for the writer: a replica calls it on its async thread, which must keep sending
/// heartbeats. The entries handed back are then applied behind the writer's work, in order.
/// Catches a group apply that blocks on the writer's lock (an outside attack's flood of dry
/// runs froze a leader's async thread for 10 s and cost it its leadership).
#[test]
fn a_group_is_handed_back_while_the_writer_is_busy_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        Store::open(
            dir.path(),
            Config {
                durability: Durability::Relaxed,
                ..Config::default()
            },
        )
        .unwrap(),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dry_runs = std::thread::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        move || {
            let events: Vec<NewEvent> = (0..5_000)
                .map(|event_idx| NewEvent::new("acme", format!("e-{event_idx}"), "T", vec![7; 64]))
                .collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                store.dry_run(Append::new(events.clone())).unwrap();
            }
        }
    });
    let entry = |index| EntryId { term: 3, index };
    let mut next = 1;
    let mut handed_back = None;
    // Each try that finds the writer free applies one no-op; dry runs of 5,000 events keep it
    // busy most of the time, so a try finds it busy within milliseconds. The bound only ends
    // a failing run (one that waits for the writer instead) in seconds rather than hours.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < give_up {
        match store
            .apply_group_at(vec![(entry(next), Command::noop())])
            .unwrap()
        {
            Grouped::Applied(answers) => {
                assert!(answers[0].is_ok(), "{:?}", answers[0]);
                next += 1;
            }
            Grouped::Busy(entries) => {
                handed_back = Some(entries);
                break;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    dry_runs.join().unwrap();
    let entries = handed_back.expect("a try found the writer busy");
    assert_eq!(entries, vec![(entry(next), Command::noop())]);
    for (entry, command) in entries {
        store.apply_at(entry, command).unwrap();
    }
    assert_eq!(store.applied(), Some(entry(next)));
    assert_eq!(store.head_and_digest().0, Position(0));
}
