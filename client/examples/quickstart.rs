//! A first program on the Rust client, against a running server: connect, append under an
//! expected version with an idempotency key, retry it safely, read the entity back, verify the
//! receipt offline, and handle a stale expectation and a gate's denial through the typed
//! [`Error`].
//!
//! Start a server (`cargo run --release --bin causewayd`), then
//! `cargo run -p causeway-client --example quickstart` (or pass another address, as
//! `-- 127.0.0.1:7430`). Each run uses a new order id, so it can run again against the same
//! server; it registers (or replaces) the gate `quickstart-small-orders` in scope `quickstart`.

use causeway_client::{AppendBuilder, Client, Error, EventBuilder, Expected, pb, receipt};

/// The scope this example writes to, kept apart from the README's tour.
const SCOPE: &str = "quickstart";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7420".to_string());
    let client = Client::connect(&address).await?;
    let order = format!("order-{}", uuid::Uuid::now_v7());

    // The order must not exist yet; the idempotency key makes a retry safe when the answer was
    // lost (a timeout, a leader change): the second send returns the first receipt.
    let place = AppendBuilder::new()
        .event(
            EventBuilder::new(SCOPE, &order, "OrderPlaced")
                .json(&serde_json::json!({"total": 12}))
                .tag("customer:42"),
        )
        .expect(SCOPE, &order, Expected::NoStream)
        .idempotency_key(format!("place-{order}"));
    let placed = client.append(place.clone()).await?;
    let retried = client.append(place).await?;
    assert_eq!(
        retried, placed,
        "a retry with the same key writes nothing new"
    );
    println!("placed {order} at position {}", placed.events[0].position);

    // The next event expects version 1; the same expectation again is stale and refused,
    // with nothing written.
    let pay = |expected| {
        AppendBuilder::new()
            .event(EventBuilder::new(SCOPE, &order, "OrderPaid").json(&serde_json::json!({})))
            .expect(SCOPE, &order, expected)
    };
    client.append(pay(Expected::Exact(1))).await?;
    match client.append(pay(Expected::Exact(1))).await {
        Err(Error::Conflict {
            expected, actual, ..
        }) => println!("stale: expected version {expected}, the order is at {actual}"),
        other => return Err(format!("a stale expectation was not refused: {other:?}").into()),
    }

    let events = client
        .read_entity(SCOPE, &order, 1, pb::Direction::Forward, 100)
        .await?;
    for event in &events {
        println!(
            "  v{} {} at #{}",
            event.version, event.r#type, event.position
        );
    }

    // The receipt proves what was written; checking it needs only the events (and the
    // server's public key, when it signs: pass it instead of `None`).
    receipt::verify(&placed, &events[..1], None)?;
    println!("the receipt of {order} verifies offline");

    // A gate: every OrderPlaced in this scope must stay under 1000.
    client
        .register_gate(pb::GateDefinition {
            name: "quickstart-small-orders".to_string(),
            scopes: vec![SCOPE.to_string()],
            types: vec!["OrderPlaced".to_string()],
            rule: Some(pb::gate_definition::Rule::Cel(pb::CelRule {
                expression: "event.payload.total < 1000".to_string(),
            })),
        })
        .await?;
    let big = AppendBuilder::new().event(
        EventBuilder::new(SCOPE, format!("{order}-big"), "OrderPlaced")
            .json(&serde_json::json!({"total": 5000})),
    );
    match client.append(big).await {
        Err(Error::Denied {
            gate,
            code,
            message,
            facts,
        }) => println!("refused by gate {gate} ({code}): {message}; facts {facts:?}"),
        other => return Err(format!("the gate let a 5000 order through: {other:?}").into()),
    }
    Ok(())
}
