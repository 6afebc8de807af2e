//! The README's five-minute tour of the core, kept compiling and running:
//! `cargo run -p causeway-core --example tour`.

use causeway_core::{
    Append, Config, Direction, Expected, ExpectedVersion, Filter, GateDefinition, NewEvent,
    Position, QueryItem, Rule, Store, Version,
};

fn main() -> causeway_core::Result<()> {
    let dir = std::env::temp_dir().join(format!("causeway-tour-{}", std::process::id()));
    let store = Store::open(&dir, Config::default())?;

    // One append is atomic: both events or neither, with consecutive positions.
    let placed = NewEvent {
        tags: vec!["customer:42".into()],
        content_type: "application/json".into(),
        ..NewEvent::new(
            "acme",
            "order-507",
            "OrderPlaced",
            br#"{"total":12}"#.to_vec(),
        )
    };
    let paid = NewEvent::new("acme", "order-507", "OrderPaid", b"{}".to_vec());
    let receipt = store.append(Append::new(vec![placed, paid]))?;
    assert_eq!(receipt.events[1].version, Version(2));

    // Read one entity, or the log with a filter (answered from indexes, not a scan).
    let order = store.read_entity("acme", "order-507", Version(1), Direction::Forward, 100)?;
    let by_customer = Filter {
        items: vec![QueryItem {
            types: vec![],
            tags: vec!["customer:42".into()],
        }],
        ..Filter::default()
    };
    let page = store.read_log(Position(1), Direction::Forward, 100, &by_customer)?;
    println!(
        "order-507 has {} events; customer 42 has {}",
        order.len(),
        page.events.len()
    );

    // A conditional append: refused, with nothing written, unless order-507 is at version 2.
    // Retrying with the same idempotency key returns the first receipt.
    let shipped = Append {
        expected: vec![Expected {
            scope: "acme".into(),
            entity: "order-507".into(),
            version: ExpectedVersion::Exact(Version(2)),
        }],
        idempotency_key: Some("ship-507".into()),
        ..Append::new(vec![NewEvent::new(
            "acme",
            "order-507",
            "OrderShipped",
            b"{}".to_vec(),
        )])
    };
    let first = store.append(shipped.clone())?;
    assert_eq!(store.append(shipped)?, first);

    // Gates are registered through the log and enforced by the writer for every append.
    store.register_gate(GateDefinition {
        name: "small-orders".into(),
        scopes: vec!["acme".into()],
        types: vec!["OrderPlaced".into()],
        rule: Rule::Cel {
            expression: "event.payload.total < 1000".into(),
        },
    })?;
    let big = NewEvent {
        content_type: "application/json".into(),
        ..NewEvent::new(
            "acme",
            "order-508",
            "OrderPlaced",
            br#"{"total":5000}"#.to_vec(),
        )
    };
    let refused = store.append(Append::new(vec![big]));
    println!(
        "a 5000 order: {}",
        refused.expect_err("the gate refuses it")
    );

    // Every event is hash-chained; verify() walks the log and names the first break.
    let report = store.verify()?;
    assert!(report.first_break.is_none());
    println!("verified {} events", report.events);

    // Block until the head passes a position (what live subscriptions are built on).
    store.wait_for(Position(1), std::time::Duration::from_secs(1))?;
    drop(store);
    // The tour's data is throwaway; a failed cleanup leaves a folder in the temp dir, no more.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
