//! CEL gates cannot stop or stall the writer: their bounds, through the public API.
//!
//! Invariants checked: an expression nested deeper than `GATE_EXPRESSION_DEPTH_MAX`, in any
//! shape and up to `GATE_EXPRESSION_BYTES_MAX` long, is refused at registration with
//! `LimitExceeded` naming the bound (a 4 KiB nest used to overflow a stack and abort the
//! process); undefined names and unknown functions are refused at registration with a short
//! message; the costliest expressions the bounds allow are answered (accepted, denied, or
//! `LimitExceeded { limit: "GATE_EVAL_STEPS_MAX" }` with nothing written) and the store keeps
//! working; the budget is shared by every gate and every event of an append; fact calls with a
//! broad entity prefix stop at the budget while the DCB condition stays exact; an append to
//! another scope is not held behind a costly gate; the steps spent are the same on two
//! stores; and random expressions never panic or hang the store.
//!
//! Wall-time checks here are generous sanity bounds (seconds), never performance assertions;
//! the measured costs are in docs/BENCHMARKS.md (`examples/gate_worst_case.rs`).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use causeway_core::limits::{
    GATE_BINDINGS_MAX, GATE_EVAL_STEPS_MAX, GATE_EXPRESSION_BYTES_MAX, GATE_EXPRESSION_DEPTH_MAX,
    SCOPE_BYTES_MAX, TAG_BYTES_MAX, TYPE_BYTES_MAX,
};
use causeway_core::*;
use proptest::prelude::*;

fn open(dir: &std::path::Path) -> Store {
    Store::open(
        dir,
        Config {
            durability: Durability::Relaxed,
            ..Config::default()
        },
    )
    .unwrap()
}

fn cel(name: &str, expression: &str) -> GateDefinition {
    GateDefinition {
        name: name.to_string(),
        scopes: vec!["w".to_string()],
        types: vec![],
        rule: Rule::Cel {
            expression: expression.to_string(),
        },
    }
}

fn json(scope: &str, entity: &str, payload: &str) -> NewEvent {
    NewEvent {
        content_type: "application/json".to_string(),
        ..NewEvent::new(scope, entity, "T", payload.as_bytes().to_vec())
    }
}

/// A JSON payload with the lists `ten` and `hundred`, for gates whose cost grows with the
/// event: a gate too costly even for an empty event is refused at registration.
fn lists() -> String {
    format!(r#"{{"ten": {}, "hundred": {}}}"#, range(10), range(100))
}

/// `[0,1,...,n-1]` as CEL source.
fn range(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// The limit an append was refused for; fails the test on anything else.
#[track_caller]
fn limit_of(result: Result<Receipt>) -> (&'static str, u64, u64) {
    match result {
        Err(err @ Error::LimitExceeded { .. }) => {
            assert!(err.is_deterministic(), "{err}");
            let Error::LimitExceeded {
                limit, max, actual, ..
            } = err
            else {
                unreachable!()
            };
            (limit, max, actual)
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

/// Whether an append was answered as a gate may answer it: accepted, denied, or over the
/// evaluation budget.
#[track_caller]
fn answered(result: &Result<Receipt>) -> bool {
    matches!(
        result,
        Ok(_)
            | Err(Error::Denied { .. })
            | Err(Error::LimitExceeded {
                limit: "GATE_EVAL_STEPS_MAX",
                ..
            })
    )
}

/// Nesting shapes of every kind at `depth` levels (each about one syntax level per nest).
fn nested(depth: usize) -> Vec<(&'static str, String)> {
    let d = depth;
    vec![
        (
            "parentheses",
            format!("{}1{} > 0", "(".repeat(d), ")".repeat(d)),
        ),
        (
            "negation",
            format!("{}1{} > 0", "-(".repeat(d), ")".repeat(d)),
        ),
        (
            "lists",
            format!("size({}1{}) > 0", "[".repeat(d), "]".repeat(d)),
        ),
        (
            "maps",
            format!("size({}1{}) > 0", "{1: ".repeat(d), "}".repeat(d)),
        ),
        // `!!` cancels out in the parser, so each `!` gets parentheses of its own.
        ("not", format!("{}true{}", "!(".repeat(d), ")".repeat(d))),
        ("selects", format!("has(event{})", ".a".repeat(d))),
        ("indexes", format!("event.tags{} == 1", "[0]".repeat(d))),
        ("additions", format!("1{} > 0", " + 1".repeat(d))),
        (
            "calls",
            format!("{}1{} > 0", "int(".repeat(d), ")".repeat(d)),
        ),
        (
            "ternaries",
            format!("{}true{}", "true ? (".repeat(d), ") : false".repeat(d)),
        ),
        (
            "comprehensions",
            format!("{}true{}", "[1].all(x, ".repeat(d), ")".repeat(d)),
        ),
    ]
}

/// Every shape nested past the depth bound is refused with `LimitExceeded` naming it, from
/// just past the bound up to the largest expression allowed (these used to overflow the
/// parser's or the evaluator's stack and abort the process), with a short message; the store
/// keeps working and writes nothing for them.
#[test]
fn expressions_nested_deeper_than_the_limit_are_refused_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for depth in [
        GATE_EXPRESSION_DEPTH_MAX + 1,
        300,
        GATE_EXPRESSION_BYTES_MAX / 3,
    ] {
        for (shape, expression) in nested(depth) {
            let expression = if expression.len() > GATE_EXPRESSION_BYTES_MAX {
                // Cut to the largest allowed: still far too deep, and unbalanced text is a
                // syntax error at worst, which is refused too.
                expression[..GATE_EXPRESSION_BYTES_MAX].to_string()
            } else {
                expression
            };
            match store.register_gate(cel("deep", &expression)) {
                Err(Error::LimitExceeded { limit, max, .. }) => {
                    assert_eq!(
                        (limit, max),
                        (
                            "GATE_EXPRESSION_DEPTH_MAX",
                            GATE_EXPRESSION_DEPTH_MAX as u64
                        ),
                        "{shape} at {depth}"
                    );
                }
                Err(Error::InvalidInput(message))
                    if expression.len() == GATE_EXPRESSION_BYTES_MAX =>
                {
                    assert!(message.len() < 400, "{shape}: {} bytes", message.len());
                }
                other => panic!("{shape} nested {depth} deep must be refused, got {other:?}"),
            }
        }
    }
    assert_eq!(store.head(), Position(0), "refusals write nothing");
    assert!(
        store
            .append(Append::new(vec![json("w", "e", "{}")]))
            .is_ok()
    );
}

/// The same shapes within the bound are accepted and evaluated on the writer thread.
#[test]
fn expressions_at_the_depth_limit_are_registered_and_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Each shape adds a level or two around its nest (the comparison, `size`, the literal);
    // a macro adds two per level (the comprehension and its step), so it nests half as deep.
    let within = nested(GATE_EXPRESSION_DEPTH_MAX - 4)
        .into_iter()
        .filter(|(shape, _)| *shape != "comprehensions")
        .chain(
            nested(GATE_EXPRESSION_DEPTH_MAX / 2 - 2)
                .into_iter()
                .filter(|(shape, _)| *shape == "comprehensions"),
        );
    for (shape, expression) in within {
        store
            .register_gate(cel("deep", &expression))
            .unwrap_or_else(|err| panic!("{shape} within the limit must register: {err}"));
        let result = store.append(Append::new(vec![json("w", "e", "{}")]));
        assert!(answered(&result), "{shape}: {result:?}");
    }
    // The longest arithmetic chain: the comparison and 62 additions.
    let terms = GATE_EXPRESSION_DEPTH_MAX - 1;
    let expression = format!("1{} == {terms}", " + 1".repeat(terms - 1));
    store.register_gate(cel("sum", &expression)).unwrap();
    store
        .append(Append::new(vec![json("w", "e", "{}")]))
        .unwrap();
}

/// Every name must be a variable, a type or a comprehension variable in scope, and every
/// function one the evaluator implements with an arity it accepts; the error names the
/// culprit without echoing more than a short prefix of it.
#[test]
fn undefined_names_and_unknown_functions_are_refused_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let long_name = "n".repeat(1000);
    let cases = [
        ("evnt.type == 'x'", "evnt"),
        ("[1, 2].all(x, y > 0)", "y"),
        ("[1].all(x, x > 0) && x > 0", "x"),
        ("frobnicate(event)", "frobnicate"),
        ("event.type.frobnicate()", "frobnicate"),
        ("size(1, 2) > 0", "size"),
        ("event.type.startsWith()", "startsWith"),
        ("timestamp('2024-01-01T00:00:00Z') > now_ms", "timestamp"),
        (long_name.as_str(), "nnnn"),
        ("event.type.matches('(')", "invalid"),
        (
            r"event.type.matches('\\w{500}\\w{500}')",
            "CEL_REGEX_BYTES_MAX",
        ),
    ];
    for (expression, named) in cases {
        match store.register_gate(cel("names", expression)) {
            Err(Error::InvalidInput(message)) => {
                assert!(message.contains(named), "{expression}: {message}");
                assert!(message.len() < 200, "{expression}: {message}");
            }
            other => panic!("{expression} must be refused, got {other:?}"),
        }
    }
    for good in [
        "[1, 2].all(x, x > 0) && [3].exists(x, x == 3)",
        "type(event.type) == string && int('7') == 7 && uint(7) == 7u && double(1) == 1.0",
        "[1, 2].map(x, [x].filter(y, y > x)).size() == 2",
        "event.entity.matches('^e') || has(event.payload.x) || now_ms > 0",
        "exists({'types': ['T']}) || count({}) >= 0 || version('w', 'e') >= 0",
    ] {
        store
            .register_gate(cel("names", good))
            .unwrap_or_else(|err| panic!("{good}: {err}"));
    }
}

/// A syntax error in a 4 KiB expression is reported in a few hundred bytes, not the tens of
/// kilobytes the parser produces (one line of source and a caret line per error).
#[test]
fn syntax_errors_are_short() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for expression in [
        "1 + ) ".repeat(GATE_EXPRESSION_BYTES_MAX / 6),
        "-(".repeat(GATE_EXPRESSION_BYTES_MAX / 2),
        format!(
            "event.type == {}",
            "'".repeat(GATE_EXPRESSION_BYTES_MAX - 20)
        ),
    ] {
        match store.register_gate(cel("bad", &expression)) {
            Err(Error::InvalidInput(message)) => assert!(message.len() < 400, "{message}"),
            Err(Error::LimitExceeded { limit, .. }) => {
                assert_eq!(limit, "GATE_EXPRESSION_DEPTH_MAX")
            }
            other => panic!("must be refused, got {other:?}"),
        }
    }
}

/// The costliest expressions within the bounds: each append is answered within the budget
/// (over it: `LimitExceeded`, nothing written), and the store keeps accepting appends.
#[test]
fn the_costliest_expressions_are_answered_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let hundred = range(100);
    let nested_all = {
        let vars = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let mut body = format!("{} >= 0", vars.join(" + "));
        for var in vars.iter().rev() {
            body = format!("event.payload.ten.all({var}, {body})");
        }
        body
    };
    let lists = lists();
    let big: String = (0..60_000)
        .map(|i| (b'a' + (i % 17) as u8) as char)
        .collect();
    let big_payload = format!(r#"{{"s": "{big}", "n": 1}}"#);
    let wide_payload = format!(r#"{{"s": "x", "wide": [{}]}}"#, vec!["0"; 30_000].join(","));
    let cases: Vec<(&str, String, &str)> = vec![
        ("nested all()", nested_all, &lists),
        (
            "nested map() of maps",
            "size(event.payload.hundred.map(a, event.payload.hundred.map(b, {'a': a, 'b': [b, b]}))) > 0"
                .to_string(),
            &lists,
        ),
        (
            "string building",
            format!("{hundred}.all(i, size(event.payload.s + event.payload.s + string(i)) > 0)"),
            &big_payload,
        ),
        (
            "regex over a large payload",
            format!("{hundred}.all(i, !event.payload.s.matches('[a-q][^u-z]{{13}}x'))"),
            &big_payload,
        ),
        (
            "regex compiled per element",
            format!("{hundred}.all(i, !event.payload.s.matches('[a-q]{{' + string(i) + '}}x'))"),
            &big_payload,
        ),
        (
            "a wide JSON payload",
            format!("{hundred}.all(i, size(event.payload.wide) > i)"),
            &wide_payload,
        ),
        (
            "list concatenation",
            "event.payload.hundred.all(i, size(event.payload.hundred + event.payload.hundred \
             + event.payload.hundred) > i)"
                .to_string(),
            &lists,
        ),
        (
            "integer overflow",
            "9223372036854775807 + 1 > 0".to_string(),
            "{}",
        ),
    ];
    for (name, expression, payload) in cases {
        store.register_gate(cel("costly", &expression)).unwrap();
        let head = store.head();
        let started = Instant::now();
        let result = store.append(Append::new(vec![json("w", "e", payload)]));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
        match &result {
            Err(Error::LimitExceeded { limit, actual, .. }) => {
                assert_eq!(*limit, "GATE_EVAL_STEPS_MAX", "{name}");
                assert!(*actual > GATE_EVAL_STEPS_MAX, "{name}");
                assert_eq!(store.head(), head, "{name}: nothing written");
            }
            other => assert!(answered(other), "{name}: {other:?}"),
        }
        if name == "integer overflow" {
            assert!(
                matches!(&result, Err(Error::Denied { code, .. }) if code == "CEL_ERROR"),
                "{result:?}"
            );
        }
        store.remove_gate("costly").unwrap();
        store
            .append(Append::new(vec![json("w", "e", "{}")]))
            .unwrap();
    }
}

/// One budget for the whole append: a gate well within it alone exhausts it when many gates
/// or many events share the append. Refused appends write nothing.
#[test]
fn the_budget_is_shared_by_every_gate_and_event_of_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // About 1,000 steps per event: 200 iterations of a few nodes each.
    let expression = format!("{}.all(i, i >= 0)", range(200));
    store.register_gate(cel("g000", &expression)).unwrap();
    store
        .append(Append::new(vec![json("w", "e", "{}")]))
        .unwrap();
    let many_events: Vec<NewEvent> = (0..200).map(|_| json("w", "e", "{}")).collect();
    let head = store.head();
    let (limit, max, actual) = limit_of(store.append(Append::new(many_events)));
    assert_eq!((limit, max), ("GATE_EVAL_STEPS_MAX", GATE_EVAL_STEPS_MAX));
    assert!(actual > max);
    assert_eq!(store.head(), head);

    // Registered 200 times, the same gate exhausts it for a single event.
    for gate_idx in 1..200 {
        store
            .register_gate(cel(&format!("g{gate_idx:03}"), &expression))
            .unwrap();
    }
    let head = store.head();
    let (limit, _, _) = limit_of(store.append(Append::new(vec![json("w", "e", "{}")])));
    assert_eq!(limit, "GATE_EVAL_STEPS_MAX");
    assert_eq!(store.head(), head);
    assert!(
        store
            .append(Append::new(vec![json("elsewhere", "e", "{}")]))
            .is_ok()
    );
}

/// A `count` or `exists` whose entity prefix matches many entities checks candidates one by
/// one; it stops at the budget instead of walking the log. The DCB condition over the same
/// query stays exact, however far it must look.
#[test]
fn fact_calls_scan_within_the_budget_and_the_dcb_condition_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // 30,000 events of `b-` entities, then 100 of `a-` entities at the end.
    let n_b = 30_000;
    for batch_idx in 0..n_b / 10_000 {
        let batch = (0..10_000)
            .map(|i| NewEvent::new("w", format!("b-{}", batch_idx * 10_000 + i), "F", vec![]))
            .collect();
        store.append(Append::new(batch)).unwrap();
    }
    let batch = (0..100)
        .map(|i| NewEvent::new("w", format!("a-{i}"), "F", vec![]))
        .collect();
    store.append(Append::new(batch)).unwrap();

    // Five scans from the start would each examine 30,000 candidates before the first match.
    let expression = (0..5)
        .map(|i| format!("exists({{'entity_prefix': 'a-', 'after': {i}}})"))
        .collect::<Vec<_>>()
        .join(" && ");
    store
        .register_gate(GateDefinition {
            types: vec!["Judged".to_string()],
            ..cel("prefix", &expression)
        })
        .unwrap();
    let head = store.head();
    let judged = NewEvent::new("w", "x", "Judged", vec![]);
    let (limit, _, _) = limit_of(store.append(Append::new(vec![judged.clone()])));
    assert_eq!(limit, "GATE_EVAL_STEPS_MAX");
    assert_eq!(store.head(), head);

    // Starting past the `b-` events, the same query is cheap and true.
    store
        .register_gate(GateDefinition {
            types: vec!["Judged".to_string()],
            ..cel(
                "prefix",
                &format!("exists({{'entity_prefix': 'a-', 'after': {n_b}}})"),
            )
        })
        .unwrap();
    store.append(Append::new(vec![judged.clone()])).unwrap();

    // The DCB condition has no scan budget: it finds the `a-` events past all the others.
    let conditioned = Append {
        condition: Some(DcbCondition {
            query: Filter {
                scopes: vec!["w".to_string()],
                entity_prefix: "a-".to_string(),
                ..Filter::default()
            },
            after: Position(0),
        }),
        ..Append::new(vec![NewEvent::new("w", "y", "Other", vec![])])
    };
    match store.append(conditioned) {
        Err(Error::Denied { gate, code, .. }) => {
            assert_eq!((gate.as_str(), code.as_str()), ("dcb", "DCB_CONDITION"))
        }
        other => panic!("the condition must see the a- events, got {other:?}"),
    }
}

/// The writer answers appends to other scopes while a client keeps sending appends that
/// exhaust the budget: each costly append holds it for one budget at most.
#[test]
fn an_unrelated_append_is_not_held_behind_a_costly_gate() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    let mut body = "a + b + c + d + e + f + g + h >= 0".to_string();
    for var in ["h", "g", "f", "e", "d", "c", "b", "a"] {
        body = format!("event.payload.ten.all({var}, {body})");
    }
    store.register_gate(cel("slow", &body)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n_refused = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let result = store.append(Append::new(vec![json("w", "e", &lists())]));
                    assert_eq!(limit_of(result).0, "GATE_EVAL_STEPS_MAX");
                    n_refused += 1;
                }
                n_refused
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..20 {
        let started = Instant::now();
        store
            .append(Append::new(vec![json("other", "e", "{}")]))
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "an unrelated append took {:?}",
            started.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for attacker in attackers {
        assert!(attacker.join().unwrap() > 0);
    }
}

/// A gate that spends more than the budget even on an empty event would refuse every append
/// it judges: registration refuses it, naming the bound, and nothing is written. A log that
/// already holds one still compiles it (every replica compiles its log's gates again).
#[test]
fn a_gate_too_costly_for_any_event_is_refused_at_registration() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ten = range(10);
    let mut body = "a + b + c + d + e >= 0".to_string();
    for var in ["e", "d", "c", "b", "a"] {
        body = format!("{ten}.map({var}, {body})");
    }
    let expression = format!("size({body}) > 0");
    let head = store.head();
    let (limit, max, actual) = limit_of(store.register_gate(cel("hopeless", &expression)));
    assert_eq!((limit, max), ("GATE_EVAL_STEPS_MAX", GATE_EVAL_STEPS_MAX));
    assert!(actual > max);
    assert_eq!(store.head(), head, "nothing written");
    assert!(store.gates().iter().all(|gate| gate.name != "hopeless"));
    assert!(cel("hopeless", &expression).compile().is_ok());
    store
        .append(Append::new(vec![json("w", "e", "{}")]))
        .unwrap();
}

/// Steps count work, not time: two stores spend the same steps on the same append.
#[test]
fn the_steps_spent_are_the_same_on_every_store() {
    let spent = || {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .register_gate(cel(
                "costly",
                "event.payload.hundred.all(j, event.payload.hundred.all(i, \
                 {'k': i, 'v': [j, 'x' + string(i)]}.size() == 2))",
            ))
            .unwrap();
        limit_of(store.append(Append::new(vec![json("w", "e", &lists())]))).2
    };
    assert_eq!(spent(), spent());
}

/// A random CEL expression, printed from a random syntax tree.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<u32>().prop_map(|u| format!("{u}u")),
        (-1e6f64..1e6).prop_map(|d| format!("{d:.3}")),
        "[a-z]{0,8}".prop_map(|s| format!("'{s}'")),
        Just("true".to_string()),
        Just("null".to_string()),
        Just("event.type".to_string()),
        Just("event.payload".to_string()),
        Just("event.tags".to_string()),
        Just("entity_version".to_string()),
        Just("now_ms".to_string()),
        Just("x".to_string()),
        Just("undefined_name".to_string()),
    ];
    leaf.prop_recursive(24, 400, 4, |inner| {
        let binary = prop_oneof![
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("%"),
            Just("=="),
            Just("!="),
            Just("<"),
            Just(">="),
            Just("&&"),
            Just("||"),
            Just("in"),
        ];
        let macros = prop_oneof![
            Just("all"),
            Just("exists"),
            Just("exists_one"),
            Just("map"),
            Just("filter"),
        ];
        let unary = prop_oneof![
            Just("!"),
            Just("-"),
            Just("size"),
            Just("int"),
            Just("string"),
            Just("type"),
            Just("has"),
        ];
        prop_oneof![
            (inner.clone(), binary, inner.clone()).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (unary, inner.clone()).prop_map(|(op, a)| match op {
                "!" | "-" => format!("{op}({a})"),
                "has" => format!("has({a}.f)"),
                _ => format!("{op}({a})"),
            }),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            prop::collection::vec((inner.clone(), inner.clone()), 0..3).prop_map(|entries| {
                let entries: Vec<String> =
                    entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", entries.join(", "))
            }),
            (inner.clone(), inner.clone()).prop_map(|(a, i)| format!("{a}[{i}]")),
            (inner.clone(), macros, inner.clone())
                .prop_map(|(range, m, body)| format!("{range}.{m}(x, {body})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}.contains({b})")),
            (inner.clone(), "[a-z.*+?]{0,6}")
                .prop_map(|(a, pattern)| format!("{a}.matches('{pattern}')")),
            inner
                .clone()
                .prop_map(|a| format!("count({{'entity_prefix': {a}}}) >= 0")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("version({a}, {b}) == 0")),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Registration refuses with a typed error, or the append is answered: never a panic, a
    /// hang or another error.
    #[test]
    fn random_expressions_are_refused_or_answered(source in expression()) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append(Append::new(vec![json("w", "seed", r#"{"a": [1, "x"]}"#)])).unwrap();
        match store.register_gate(cel("random", &source)) {
            Ok(_) => {
                let result = store.append(Append::new(vec![json("w", "e", r#"{"f": 1}"#)]));
                prop_assert!(answered(&result), "{}: {:?}", source, result);
            }
            Err(Error::InvalidInput(message)) => prop_assert!(message.len() < 400, "{}", message),
            Err(Error::LimitExceeded { limit, .. }) => prop_assert!(
                ["GATE_EXPRESSION_DEPTH_MAX", "GATE_EXPRESSION_BYTES_MAX", "GATE_EXPRESSION_NODES_MAX"]
                    .contains(&limit),
                "{}", limit
            ),
            Err(other) => prop_assert!(false, "{}: {}", source, other),
        }
        let unrelated = store.append(Append::new(vec![json("other", "e", "{}")]));
        prop_assert!(unrelated.is_ok(), "{:?}", unrelated);
    }
}

/// A gate definition's names are bounded like the event fields they match: its scopes and
/// types (at most `GATE_BINDINGS_MAX` of each, each within `SCOPE_BYTES_MAX` or
/// `TYPE_BYTES_MAX`), an `allowed_types` list the same, and a `unique_tag` prefix within
/// `TAG_BYTES_MAX`; `$` scopes are reserved. Found from outside: a 10 MB scope and 500,000
/// allowed types registered, and a denial echoing the list was lost to the transport.
#[test]
fn gate_definitions_are_bounded_like_the_fields_they_match() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let definition = |scopes: Vec<String>, types: Vec<String>, rule: Rule| GateDefinition {
        name: "bounded".to_string(),
        scopes,
        types,
        rule,
    };
    let many = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
    let refused = [
        (
            definition(
                vec!["s".repeat(SCOPE_BYTES_MAX + 1)],
                vec![],
                Rule::CausationExists,
            ),
            "SCOPE_BYTES_MAX",
        ),
        (
            definition(many(GATE_BINDINGS_MAX + 1), vec![], Rule::CausationExists),
            "GATE_BINDINGS_MAX",
        ),
        (
            definition(
                vec![],
                vec!["t".repeat(TYPE_BYTES_MAX + 1)],
                Rule::CausationExists,
            ),
            "TYPE_BYTES_MAX",
        ),
        (
            definition(
                vec![],
                vec![],
                Rule::AllowedTypes {
                    types: many(GATE_BINDINGS_MAX + 1),
                },
            ),
            "GATE_BINDINGS_MAX",
        ),
        (
            definition(
                vec![],
                vec![],
                Rule::UniqueTag {
                    prefix: "p".repeat(TAG_BYTES_MAX + 1),
                },
            ),
            "TAG_BYTES_MAX",
        ),
    ];
    for (bad, limit_name) in refused {
        match store.register_gate(bad) {
            Err(Error::LimitExceeded { limit, .. }) => assert_eq!(limit, limit_name),
            other => panic!("expected {limit_name}, got {other:?}"),
        }
    }
    assert!(matches!(
        store.register_gate(definition(
            vec!["$system".to_string()],
            vec![],
            Rule::CausationExists
        )),
        Err(Error::InvalidInput(message)) if message.contains("reserved")
    ));
    assert_eq!(store.head(), Position(0), "nothing refused was written");
    // At the bounds it registers, and a denial lists the allowed types briefly.
    store
        .register_gate(definition(
            vec!["acme".to_string()],
            vec![],
            Rule::AllowedTypes {
                types: many(GATE_BINDINGS_MAX),
            },
        ))
        .unwrap();
    match store.append(Append::new(vec![NewEvent::new(
        "acme",
        "e",
        "Other",
        vec![],
    )])) {
        Err(Error::Denied { code, facts, .. }) => {
            assert_eq!(code, "TYPE_NOT_ALLOWED");
            assert!(facts["allowed"].len() < 100, "{}", facts["allowed"]);
            assert!(facts["allowed"].contains("56 more"), "{}", facts["allowed"]);
        }
        other => panic!("{other:?}"),
    }
}
