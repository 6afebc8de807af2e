//! The normal path of every unary RPC: what goes in comes back, by every route.

use std::collections::HashMap;

use crate::harness::{Node, append, event, head, pb, read_all, scratch};

/// An append is answered with a receipt, and its events read back identically by id, by
/// entity (both ways), from the filtered log, and the head and digest match the receipt.
#[tokio::test]
async fn an_append_reads_back_by_every_route() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;

    let placed = pb::NewEvent {
        tags: vec!["customer:42".to_string()],
        metadata: HashMap::from([("source".to_string(), "web".to_string())]),
        ..event("acme", "order-1", "OrderPlaced")
    };
    let paid = event("acme", "order-1", "OrderPaid");
    let receipt = append(&mut client, vec![placed.clone(), paid]).await;
    let positions: Vec<(u64, u64)> = receipt
        .events
        .iter()
        .map(|committed| (committed.position, committed.version))
        .collect();
    assert_eq!(positions, vec![(1, 1), (2, 2)]);
    assert_eq!(receipt.digest.len(), 32);

    let got = client
        .get(pb::GetRequest {
            consistency: 0,
            id: receipt.events[0].id.clone(),
        })
        .await
        .expect("get by id")
        .into_inner()
        .event
        .expect("an event");
    assert_eq!(got.r#type, "OrderPlaced");
    assert_eq!(got.tags, placed.tags);
    assert_eq!(got.metadata, placed.metadata);
    assert_eq!(got.payload, placed.payload);
    assert_eq!(got.hash, receipt.events[0].hash);
    assert_eq!(
        got.correlation_id, got.id,
        "a root event correlates with itself"
    );

    let forward = client
        .read_entity(pb::ReadEntityRequest {
            consistency: 0,
            scope: "acme".to_string(),
            entity: "order-1".to_string(),
            from_version: 1,
            direction: pb::Direction::Forward as i32,
            limit: 10,
        })
        .await
        .expect("read the entity forward")
        .into_inner()
        .events;
    let backward = client
        .read_entity(pb::ReadEntityRequest {
            consistency: 0,
            scope: "acme".to_string(),
            entity: "order-1".to_string(),
            from_version: 0,
            direction: pb::Direction::Backward as i32,
            limit: 10,
        })
        .await
        .expect("read the entity backward")
        .into_inner()
        .events;
    let versions = |events: &[pb::Event]| events.iter().map(|e| e.version).collect::<Vec<_>>();
    assert_eq!(versions(&forward), vec![1, 2]);
    assert_eq!(versions(&backward), vec![2, 1]);
    assert_eq!(forward[0], got);

    let by_customer = client
        .read_log(pb::ReadLogRequest {
            consistency: 0,
            from_position: 1,
            direction: pb::Direction::Forward as i32,
            limit: 10,
            filter: Some(pb::Filter {
                items: vec![pb::QueryItem {
                    types: vec![],
                    tags: vec!["customer:42".to_string()],
                }],
                ..Default::default()
            }),
        })
        .await
        .expect("read the log")
        .into_inner();
    assert_eq!(by_customer.events, vec![got.clone()]);
    assert!(by_customer.end);
    assert_eq!(by_customer.next_position, 3);

    let head = client
        .head(pb::HeadRequest::default())
        .await
        .expect("head")
        .into_inner();
    assert_eq!(head.position, 2);
    assert_eq!(head.digest, receipt.digest);

    // Without a signing key, a receipt verifies against the stored events alone.
    let verdict = client
        .verify_receipt(pb::VerifyReceiptRequest {
            receipt: Some(receipt),
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(verdict.valid, "{}", verdict.reason);
}

/// Reads of large events are cut at the server's batch byte bound with a continuation, and
/// a subscription splits them over several messages; paging still returns every event once.
#[tokio::test]
async fn large_reads_are_cut_with_a_continuation() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let megabyte = 1024 * 1024;
    for event_idx in 0..6u8 {
        let large = pb::NewEvent {
            payload: vec![event_idx; megabyte],
            ..event("acme", "blob-1", "Stored")
        };
        append(&mut client, vec![large]).await;
    }
    let first_page = client
        .read_log(pb::ReadLogRequest {
            consistency: 0,
            from_position: 1,
            direction: pb::Direction::Forward as i32,
            limit: 100,
            filter: None,
        })
        .await
        .expect("read the log")
        .into_inner();
    let n_first = first_page.events.len() as u64;
    assert!((1..6).contains(&n_first), "cut short: {n_first} events");
    assert!(!first_page.end);
    assert_eq!(first_page.next_position, n_first + 1);
    let everything = read_all(&mut client, None).await;
    let positions: Vec<u64> = everything.iter().map(|event| event.position).collect();
    assert_eq!(positions, (1..=6).collect::<Vec<_>>());
    assert!(
        everything
            .iter()
            .all(|event| event.payload.len() == megabyte)
    );

    let backward = client
        .read_log(pb::ReadLogRequest {
            consistency: 0,
            from_position: 0,
            direction: pb::Direction::Backward as i32,
            limit: 100,
            filter: None,
        })
        .await
        .expect("read the log backward")
        .into_inner();
    let n_backward = backward.events.len() as u64;
    assert_eq!(backward.events[0].position, 6);
    assert_eq!(backward.next_position, 6 - n_backward);
    assert!(!backward.end);

    // ReadEntity pages the same way: continue from `next_version` until `end`.
    let mut versions = Vec::new();
    let mut from_version = 1;
    loop {
        let page = client
            .read_entity(pb::ReadEntityRequest {
                consistency: 0,
                scope: "acme".to_string(),
                entity: "blob-1".to_string(),
                from_version,
                direction: pb::Direction::Forward as i32,
                limit: 100,
            })
            .await
            .expect("read the entity")
            .into_inner();
        assert!(
            !page.events.is_empty() || page.end,
            "an empty page must be the end"
        );
        versions.extend(page.events.iter().map(|event| event.version));
        if page.end {
            break;
        }
        assert!(page.events.len() < 6, "a page of 6 MiB is cut");
        from_version = page.next_version;
    }
    assert_eq!(versions, (1..=6).collect::<Vec<_>>());

    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            start: Some(pb::subscribe_request::Start::FromPosition(1)),
            filter: None,
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut batch_sizes = Vec::new();
    while batch_sizes.iter().sum::<usize>() < 6 {
        let message = stream
            .message()
            .await
            .expect("a message")
            .expect("not the end");
        match message.message {
            Some(pb::subscribe_response::Message::Events(batch)) => {
                batch_sizes.push(batch.events.len())
            }
            other => panic!("expected events before the caught-up marker, got {other:?}"),
        }
    }
    assert!(batch_sizes.len() > 1, "one message held {batch_sizes:?}");
}

/// A dry run answers with the receipt an append would get and writes nothing; a retry with
/// the same idempotency key and content returns the first receipt and writes nothing either.
#[tokio::test]
async fn dry_runs_and_idempotent_retries_write_nothing() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;

    let request = pb::AppendRequest {
        events: vec![event("acme", "order-2", "OrderPlaced")],
        idempotency_key: "place-order-2".to_string(),
        ..Default::default()
    };
    let dry = client
        .dry_run(pb::DryRunRequest {
            append: Some(request.clone()),
        })
        .await
        .expect("dry run")
        .into_inner()
        .receipt
        .expect("a receipt");
    assert_eq!(dry.events[0].position, 1);
    assert_eq!(head(&mut client).await, 0, "a dry run writes nothing");

    let first = client
        .append(request.clone())
        .await
        .expect("append")
        .into_inner()
        .receipt;
    let retry = client
        .append(request)
        .await
        .expect("retry")
        .into_inner()
        .receipt;
    assert_eq!(first, retry);
    assert_eq!(head(&mut client).await, 1, "the retry wrote nothing");
}

/// Ancestors, descendants and correlations follow causation links, with edges among the
/// nodes, and say when a depth cut the walk short.
#[tokio::test]
async fn graph_queries_follow_causation() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;

    let root = append(&mut client, vec![event("acme", "order-3", "OrderPlaced")]).await;
    let root_id = root.events[0].id.clone();
    let child = append(
        &mut client,
        vec![pb::NewEvent {
            causation: vec![root_id.clone()],
            ..event("acme", "invoice-3", "InvoiceIssued")
        }],
    )
    .await;
    let child_id = child.events[0].id.clone();
    let grandchild = append(
        &mut client,
        vec![pb::NewEvent {
            causation: vec![child_id.clone()],
            ..event("acme", "payment-3", "PaymentTaken")
        }],
    )
    .await;
    let grandchild_id = grandchild.events[0].id.clone();

    let ancestors = client
        .get_ancestors(pb::GetAncestorsRequest {
            id: grandchild_id.clone(),
            depth: 10,
            limit: 100,
        })
        .await
        .expect("ancestors")
        .into_inner()
        .graph
        .expect("a graph");
    let ids = |graph: &pb::Graph| graph.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
    assert_eq!(
        ids(&ancestors),
        vec![root_id.clone(), child_id.clone(), grandchild_id.clone()]
    );
    assert_eq!(
        ancestors.edges,
        vec![
            pb::Edge {
                parent: root_id.clone(),
                child: child_id.clone()
            },
            pb::Edge {
                parent: child_id.clone(),
                child: grandchild_id.clone()
            },
        ]
    );
    assert!(!ancestors.truncated);

    let shallow = client
        .get_ancestors(pb::GetAncestorsRequest {
            id: grandchild_id.clone(),
            depth: 1,
            limit: 100,
        })
        .await
        .expect("shallow ancestors")
        .into_inner()
        .graph
        .expect("a graph");
    assert_eq!(ids(&shallow), vec![child_id.clone(), grandchild_id.clone()]);
    assert!(shallow.truncated, "the depth cut the walk short");

    let descendants = client
        .get_descendants(pb::GetDescendantsRequest {
            id: root_id.clone(),
            depth: 10,
            limit: 100,
        })
        .await
        .expect("descendants")
        .into_inner()
        .graph
        .expect("a graph");
    assert_eq!(ids(&descendants), ids(&ancestors));

    let correlation = client
        .get_correlation(pb::GetCorrelationRequest {
            correlation_id: root_id.clone(),
            limit: 100,
        })
        .await
        .expect("correlation")
        .into_inner()
        .graph
        .expect("a graph");
    assert_eq!(ids(&correlation), ids(&ancestors));
    assert_eq!(correlation.edges.len(), 2);
}

/// A registered gate is listed with its definition and version, named in the receipts of the
/// appends it judged, and gone after removal.
#[tokio::test]
async fn gates_are_registered_listed_and_removed() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;

    let definition = pb::GateDefinition {
        name: "one-email".to_string(),
        scopes: vec!["acme".to_string()],
        types: vec!["UserRegistered".to_string()],
        rule: Some(pb::gate_definition::Rule::UniqueTag(pb::UniqueTagRule {
            prefix: "email:".to_string(),
        })),
    };
    let registered = client
        .register_gate(pb::RegisterGateRequest {
            definition: Some(definition.clone()),
        })
        .await
        .expect("register")
        .into_inner()
        .receipt
        .expect("a receipt");
    let gate_version = registered.events[0].position;

    let gates = client
        .list_gates(pb::ListGatesRequest {})
        .await
        .expect("list")
        .into_inner()
        .gates;
    assert_eq!(
        gates,
        vec![pb::RegisteredGate {
            name: "one-email".to_string(),
            version: gate_version,
            definition: Some(definition),
        }]
    );

    let judged = append(
        &mut client,
        vec![pb::NewEvent {
            tags: vec!["email:ada@example.com".to_string()],
            ..event("acme", "user-1", "UserRegistered")
        }],
    )
    .await;
    assert_eq!(
        judged.gates,
        vec![pb::GatePass {
            name: "one-email".to_string(),
            version: gate_version
        }]
    );

    client
        .remove_gate(pb::RemoveGateRequest {
            name: "one-email".to_string(),
        })
        .await
        .expect("remove");
    let gates = client
        .list_gates(pb::ListGatesRequest {})
        .await
        .expect("list")
        .into_inner()
        .gates;
    assert!(gates.is_empty(), "{gates:?}");
}

/// With a signing key, receipts are signed; VerifyReceipt accepts a true receipt and refuses
/// a tampered one, one naming an event the store lacks, and an unsigned one.
#[tokio::test]
async fn signed_receipts_verify_and_tampered_ones_do_not() {
    let dir = scratch();
    let key = dir.path().join("receipt.key");
    std::fs::write(&key, format!("{}\n", "2a".repeat(32))).expect("write the key");
    let node = Node::start(
        &dir.path().join("data"),
        &["--signing-key", key.to_str().expect("utf-8 path")],
    );
    let mut client = node.client().await;

    let receipt = append(&mut client, vec![event("acme", "order-4", "OrderPlaced")]).await;
    assert!(receipt.signature_key_id.starts_with("ed25519:"));
    assert_eq!(receipt.signature.len(), 64);

    let verify = |receipt: pb::Receipt| {
        let mut client = client.clone();
        async move {
            client
                .verify_receipt(pb::VerifyReceiptRequest {
                    receipt: Some(receipt),
                })
                .await
                .expect("verify")
                .into_inner()
        }
    };
    let verdict = verify(receipt.clone()).await;
    assert!(verdict.valid, "{}", verdict.reason);

    let mut tampered = receipt.clone();
    tampered.events[0].version = 7;
    let verdict = verify(tampered).await;
    assert!(!verdict.valid);
    assert!(verdict.reason.contains("version"), "{}", verdict.reason);

    let mut forged = receipt.clone();
    forged.events[0].id = "01890000-0000-7000-8000-000000000000".to_string();
    let verdict = verify(forged).await;
    assert!(!verdict.valid);
    assert!(
        verdict.reason.contains("not in the store"),
        "{}",
        verdict.reason
    );

    let mut unsigned = receipt;
    unsigned.signature.clear();
    unsigned.signature_key_id.clear();
    let verdict = verify(unsigned).await;
    assert!(!verdict.valid);
    assert!(verdict.reason.contains("not signed"), "{}", verdict.reason);
}
