//! The worst case one client can impose on the writer through a CEL gate: registers the
//! costliest expressions the gate bounds allow, one store per case, appends events they judge,
//! and prints the writer's time per append (wall time of `Store::append` in relaxed durability,
//! so no fsync is measured) and how each append was answered. Prints; asserts nothing.
//!
//! `cargo run --release -p causeway-core --example gate_worst_case` (docs/BENCHMARKS.md,
//! "Worst case one client can impose on the writer through a gate").

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use causeway_core::limits::{APPEND_EVENTS_MAX, CEL_PAYLOAD_BYTES_MAX, GATE_EVAL_STEPS_MAX};
use causeway_core::{Append, Config, Durability, Error, GateDefinition, NewEvent, Rule, Store};

/// Appends measured per case (after one warm-up).
const APPENDS: usize = 15;

fn main() {
    let ten = "[0,1,2,3,4,5,6,7,8,9]";
    let nested_all = {
        let vars = ["a", "b", "c", "d", "e", "f", "g", "h"];
        let mut body = format!("{} >= 0", vars.join(" + "));
        for var in vars.iter().rev() {
            body = format!("{ten}.all({var}, {body})");
        }
        body
    };
    let nested_7 = {
        let vars = ["a", "b", "c", "d", "e", "f", "g"];
        let mut body = format!("{} >= 0", vars.join(" + "));
        for var in vars.iter().rev() {
            body = format!("{ten}.all({var}, {body})");
        }
        body
    };
    let sum_1500 = format!("1{} > 0", "+1".repeat(1499));
    let arithmetic = format!("1{} > 0", " + 1".repeat(62));
    let lists = format!("size({}1{}) > 0", "[".repeat(61), "]".repeat(61));
    let maps = format!("size({}1{}) > 0", "{1: ".repeat(61), "}".repeat(61));
    let hundred: String = format!(
        "[{}]",
        (0..100)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let map_build =
        format!("size({hundred}.map(a, {hundred}.map(b, {{'a': a, 'b': [b, b, b]}}))) > 0");
    let string_build =
        format!("{hundred}.all(i, size(event.payload.s + event.payload.s + string(i)) > 0)");
    let regex_one = "event.payload.s.matches('[a-q][^u-z]{13}x')".to_string();
    let regex_many =
        format!("{hundred}.all(i, event.payload.s.matches('[a-q][^u-z]{{13}}x') == false)");
    let regex_dynamic = format!(
        "{hundred}.all(i, event.payload.s.matches('[a-q][^u-z]{{' + string(i % 14) + '}}x') == false)"
    );
    // Found from outside: a pattern whose lazy DFA needs far more states than a cache holds,
    // over random text, which made the regex crate fall back to an NFA simulation.
    let forty = format!(
        "[{}]",
        (0..40).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    );
    let regex_thrash = format!(
        "{forty}.all(i, !event.payload.s.matches('(?:[a-q][^u-z]{{20}}x|[b-r][^t-y]{{20}}y)'))"
    );
    let mut seed: u64 = 1;
    let random_string: String = (0..60_000)
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (b'a' + ((seed >> 33) % 20) as u8) as char
        })
        .collect();
    let random_payload = format!(r#"{{"s": "{random_string}", "n": 1}}"#);
    let facts = (0..16)
        // `a-` names more entities than the index resolves one by one, and they all come at
        // the end of the log, so the scan checks every earlier event's entity name.
        .map(|i| format!("count({{'entity_prefix': 'a-', 'after': {i}}}) > 0"))
        .collect::<Vec<_>>()
        .join(" && ");
    let counts = (0..16)
        .map(|i| format!("count({{'types': ['Filler'], 'after': {i}}}) > 0"))
        .collect::<Vec<_>>()
        .join(" && ");
    let payload_many = format!("{hundred}.all(i, event.payload.n >= 0)");

    let big_string: String = (0..CEL_PAYLOAD_BYTES_MAX - 64)
        .map(|i| (b'a' + (i * 7 % 17) as u8) as char)
        .collect();
    let big_payload = format!(r#"{{"s": "{big_string}", "n": 1}}"#);
    let deep_json = format!(
        r#"{{"s": "x", "n": 1, "deep": {}1{}}}"#,
        "[".repeat(120),
        "]".repeat(120)
    );
    let wide_json = format!(
        r#"{{"s": "x", "n": 1, "wide": [{}]}}"#,
        vec!["0"; (CEL_PAYLOAD_BYTES_MAX - 64) / 2].join(",")
    );

    println!(
        "GATE_EVAL_STEPS_MAX = {GATE_EVAL_STEPS_MAX}; {APPENDS} appends per case after a warm-up"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9}  answer",
        "case", "min ms", "p50 ms", "max ms"
    );
    let cases: Vec<(&str, Vec<String>, &str, usize, usize)> = vec![
        ("no gate (baseline)", vec![], "{}", 1, 0),
        ("1,500-term sum (3 KB)", vec![sum_1500], "{}", 1, 0),
        (
            "arithmetic chain at the depth limit",
            vec![arithmetic],
            "{}",
            1,
            0,
        ),
        ("nested lists at the depth limit", vec![lists], "{}", 1, 0),
        ("nested maps at the depth limit", vec![maps], "{}", 1, 0),
        (
            "7 nested all() over 10 elements",
            vec![nested_7],
            "{}",
            1,
            0,
        ),
        (
            "8 nested all() over 10 elements",
            vec![nested_all],
            "{}",
            1,
            0,
        ),
        ("map() building 100x100 maps", vec![map_build], "{}", 1, 0),
        (
            "string building over a 64 KiB payload",
            vec![string_build],
            &big_payload,
            1,
            0,
        ),
        (
            "regex that thrashes a lazy DFA, 60 KB, 40 times",
            vec![regex_thrash],
            &random_payload,
            1,
            0,
        ),
        (
            "regex over a 64 KiB payload, once",
            vec![regex_one],
            &big_payload,
            1,
            0,
        ),
        (
            "regex over a 64 KiB payload, 100 times",
            vec![regex_many],
            &big_payload,
            1,
            0,
        ),
        (
            "regex compiled per element, 100 times",
            vec![regex_dynamic],
            &big_payload,
            1,
            0,
        ),
        (
            "100 reads of a 64 KiB JSON array payload",
            vec![payload_many.clone()],
            &wide_json,
            1,
            0,
        ),
        (
            "100 reads of a 120-deep JSON payload",
            vec![payload_many.clone()],
            &deep_json,
            1,
            0,
        ),
        (
            "a gate of `true` over 200k events (baseline)",
            vec!["true".to_string()],
            "{}",
            1,
            200_000,
        ),
        (
            "16 count(entity_prefix) over 200k events",
            vec![facts],
            "{}",
            1,
            200_000,
        ),
        (
            "16 count(types) of 10,000 matches each",
            vec![counts],
            "{}",
            1,
            200_000,
        ),
        (
            "1,024 gates of 100 payload reads",
            vec![payload_many.clone(); 1024],
            &big_payload,
            1,
            0,
        ),
        (
            "no gate, 10,000-event append (baseline)",
            vec![],
            r#"{"s": "x", "n": 1}"#,
            APPEND_EVENTS_MAX,
            0,
        ),
        (
            "one gate, 10,000-event append",
            vec!["event.payload.n >= 0".to_string()],
            r#"{"s": "x", "n": 1}"#,
            APPEND_EVENTS_MAX,
            0,
        ),
    ];
    // An argument runs only the cases whose name contains it.
    let only = std::env::args().nth(1).unwrap_or_default();
    for (name, expressions, payload, n_events, n_log) in cases {
        if !name.contains(&only) {
            continue;
        }
        measure(name, &expressions, payload, n_events, n_log);
    }
    if only.is_empty() || only == "registration" {
        measure_registration();
    }
}

/// Times `Store::register_gate` for the largest expressions that compile. The caller's thread
/// compiles the definition (and refuses a bad one before it is queued); the writer takes that
/// compiled gate when it applies the registration, so its share is the append alone. A
/// registration applied through replication is compiled on the writer.
fn measure_registration() {
    let limit = causeway_core::limits::GATE_EXPRESSION_BYTES_MAX;
    let shapes: Vec<(&str, String)> = vec![
        ("4 KiB `true && true && ...`", {
            let mut text = "true".to_string();
            while text.len() + 8 <= limit {
                text.push_str(" && true");
            }
            text
        }),
        ("4 KiB list literal `[1,1,...]`", {
            let mut text = "size([1".to_string();
            while text.len() + 8 <= limit {
                text.push_str(",1");
            }
            text + "]) > 0"
        }),
        ("4 KiB of `event.tags.exists(t, t == 'a') || ...`", {
            let term = "event.tags.exists(t, t == 'a')";
            let mut text = term.to_string();
            while text.len() + term.len() + 4 <= limit {
                text.push_str(" || ");
                text.push_str(term);
            }
            text
        }),
    ];
    println!();
    println!(
        "{:<52} {:>9} {:>9}",
        "registration (compiled by the caller)", "min ms", "max ms"
    );
    for (name, expression) in shapes {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Config {
                durability: Durability::Relaxed,
                ..Config::default()
            },
        )
        .unwrap();
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            store
                .register_gate(GateDefinition {
                    name: "g".to_string(),
                    scopes: vec![],
                    types: vec![],
                    rule: Rule::Cel {
                        expression: expression.clone(),
                    },
                })
                .unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{name:<52} {:>9.3} {:>9.3}",
            ms(times[0]),
            ms(times[times.len() - 1])
        );
    }
}

fn measure(name: &str, expressions: &[String], payload: &str, n_events: usize, n_log: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Config {
            durability: Durability::Relaxed,
            ..Config::default()
        },
    )
    .unwrap();
    // A log of many entities in the judged scope, for the fact calls to scan.
    let mut written = 0;
    while written < n_log {
        let batch: Vec<NewEvent> = (written..(written + 10_000).min(n_log))
            .map(|i| {
                // The last 100 entities are named `a-..`, the others `b-..`.
                let entity = if i + 100 >= n_log {
                    format!("a-{i}")
                } else {
                    format!("b-{i}")
                };
                NewEvent::new("w", entity, "Filler", Vec::new())
            })
            .collect();
        written += batch.len();
        store.append(Append::new(batch)).unwrap();
    }
    for (gate_idx, expression) in expressions.iter().enumerate() {
        let registered = store.register_gate(GateDefinition {
            name: format!("g{gate_idx:04}"),
            scopes: vec!["w".to_string()],
            types: vec!["Judged".to_string()],
            rule: Rule::Cel {
                expression: expression.clone(),
            },
        });
        if let Err(err) = registered {
            println!("{name:<44} refused at registration: {err}");
            return;
        }
    }
    let mut times: Vec<Duration> = Vec::new();
    let mut answer = String::new();
    for round in 0..=APPENDS {
        let events = (0..n_events)
            .map(|i| NewEvent {
                content_type: "application/json".to_string(),
                ..NewEvent::new(
                    "w",
                    format!("judged-{round}-{i}"),
                    "Judged",
                    payload.as_bytes().to_vec(),
                )
            })
            .collect();
        let started = Instant::now();
        let result = store.append(Append::new(events));
        let elapsed = started.elapsed();
        if round > 0 {
            times.push(elapsed);
        }
        answer = match result {
            Ok(_) => "accepted".to_string(),
            Err(Error::Denied { code, .. }) => format!("denied {code}"),
            Err(Error::LimitExceeded { limit, actual, .. }) => {
                format!("LimitExceeded {limit} ({actual} steps)")
            }
            Err(other) => format!("error {other}"),
        };
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{name:<44} {:>9.3} {:>9.3} {:>9.3}  {answer}",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
}
