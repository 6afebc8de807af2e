//! Every kind of refusal and the status it maps to: a bad field is INVALID_ARGUMENT naming
//! it, a bound is INVALID_ARGUMENT naming the constant, an unknown id NOT_FOUND, a denial or a
//! conflict FAILED_PRECONDITION with a decodable `ErrorInfo`, a reused idempotency key with
//! other content ALREADY_EXISTS. A refused append writes nothing.

use causeway_core::limits::APPEND_BYTES_MAX;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{Client, Node, append, append_of, event, failure, head, pb, scratch};

fn assert_invalid(status: &tonic::Status, names: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(names),
        "the message {:?} should name {names:?}",
        status.message()
    );
}

/// Each malformed field is refused before the store sees it, with its path in the message.
#[tokio::test]
async fn malformed_fields_are_named() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;

    let bad_id = pb::NewEvent {
        id: "not-a-uuid".to_string(),
        ..event("acme", "order-1", "OrderPlaced")
    };
    let status = failure(client.append(append_of(vec![bad_id])).await);
    assert_invalid(&status, "events[0].id");
    let bad_request = status
        .get_details_bad_request()
        .expect("a BadRequest detail");
    assert_eq!(bad_request.field_violations[0].field, "events[0].id");

    let bad_parent = pb::NewEvent {
        causation: vec![
            "01890000-0000-7000-8000-000000000000".to_string(),
            "x".to_string(),
        ],
        ..event("acme", "order-1", "OrderPlaced")
    };
    let status = failure(
        client
            .append(append_of(vec![event("acme", "a", "A"), bad_parent]))
            .await,
    );
    assert_invalid(&status, "events[1].causation[1]");

    let nil_id = pb::NewEvent {
        id: "00000000-0000-0000-0000-000000000000".to_string(),
        ..event("acme", "order-1", "OrderPlaced")
    };
    let status = failure(client.append(append_of(vec![nil_id])).await);
    assert_invalid(&status, "events[0].id");
    assert!(status.message().contains("nil UUID"), "{status:?}");
    let long_id = "x".repeat(1024 * 1024);
    let status = failure(
        client
            .get(pb::GetRequest {
                id: long_id,
                ..Default::default()
            })
            .await,
    );
    assert_invalid(&status, "id");
    assert!(
        status.message().len() < 1024,
        "a 1 MiB id is not echoed whole: {} bytes",
        status.message().len()
    );

    let bad_correlation = pb::NewEvent {
        correlation_id: "42".to_string(),
        ..event("acme", "order-1", "OrderPlaced")
    };
    let status = failure(client.append(append_of(vec![bad_correlation])).await);
    assert_invalid(&status, "events[0].correlation_id");

    let bad_kind = pb::AppendRequest {
        expected: vec![pb::ExpectedVersion {
            scope: "acme".to_string(),
            entity: "order-1".to_string(),
            kind: 99,
            version: 0,
        }],
        ..append_of(vec![event("acme", "order-1", "OrderPlaced")])
    };
    let status = failure(client.append(bad_kind).await);
    assert_invalid(&status, "expected[0].kind");

    let status = failure(client.dry_run(pb::DryRunRequest { append: None }).await);
    assert_invalid(&status, "append");

    let status = failure(
        client
            .get(pb::GetRequest {
                consistency: 0,
                id: "nope".to_string(),
            })
            .await,
    );
    assert_invalid(&status, "id");

    let status = failure(
        client
            .get_correlation(pb::GetCorrelationRequest {
                correlation_id: "nope".to_string(),
                limit: 10,
            })
            .await,
    );
    assert_invalid(&status, "correlation_id");

    let status = failure(
        client
            .read_log(pb::ReadLogRequest {
                consistency: 0,
                from_position: 1,
                direction: 7,
                limit: 10,
                filter: None,
            })
            .await,
    );
    assert_invalid(&status, "direction");

    let status = failure(
        client
            .read_log(pb::ReadLogRequest {
                consistency: 0,
                from_position: 1,
                direction: 0,
                limit: 10,
                filter: Some(pb::Filter {
                    since: Some(causeway_client::timestamp::hybrid(1, 70_000)),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_invalid(&status, "filter.since.logical");

    // The clock keeps whole milliseconds: a finer wall time is refused, not rounded.
    let status = failure(
        client
            .read_log(pb::ReadLogRequest {
                consistency: 0,
                from_position: 1,
                direction: 0,
                limit: 10,
                filter: Some(pb::Filter {
                    until: Some(pb::HybridTimestamp {
                        wall: Some(prost_types::Timestamp {
                            seconds: 1_700_000_000,
                            nanos: 1,
                        }),
                        logical: 0,
                    }),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_invalid(&status, "filter.until.wall.nanos");

    let status = failure(
        client
            .register_gate(pb::RegisterGateRequest {
                definition: Some(pb::GateDefinition {
                    name: "no-rule".to_string(),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_invalid(&status, "definition.rule");
    // A definition only the store can judge (a CEL expression that does not compile) names
    // the definition in a BadRequest too.
    let status = failure(
        client
            .register_gate(pb::RegisterGateRequest {
                definition: Some(pb::GateDefinition {
                    name: "broken".to_string(),
                    rule: Some(pb::gate_definition::Rule::Cel(pb::CelRule {
                        expression: "event.payload.total <".to_string(),
                    })),
                    ..Default::default()
                }),
            })
            .await,
    );
    assert_invalid(&status, "cel expression");
    let violations = status
        .get_details_bad_request()
        .expect("a BadRequest")
        .field_violations;
    assert_eq!(
        violations[0].field, "definition.cel.expression",
        "{violations:?}"
    );

    let status = failure(
        client
            .subscribe(pb::SubscribeRequest {
                start: None,
                filter: None,
            })
            .await,
    );
    assert_invalid(&status, "start");

    let short_hash = pb::Receipt {
        events: vec![pb::Committed {
            id: "01890000-0000-7000-8000-000000000000".to_string(),
            position: 1,
            version: 1,
            timestamp: Some(pb::HybridTimestamp::default()),
            hash: vec![0; 3],
            prev_hash: vec![0; 32],
        }],
        digest: vec![0; 32],
        ..Default::default()
    };
    let status = failure(
        client
            .verify_receipt(pb::VerifyReceiptRequest {
                receipt: Some(short_hash),
            })
            .await,
    );
    assert_invalid(&status, "receipt.events[0].hash");

    // What the store judges is named by the store, and the field's path by a BadRequest.
    let status = failure(
        client
            .append(append_of(vec![
                event("acme", "order-1", "A"),
                event("acme", "", "A"),
            ]))
            .await,
    );
    assert_invalid(&status, "entity");
    let violations = status
        .get_details_bad_request()
        .expect("a BadRequest")
        .field_violations;
    assert_eq!(violations[0].field, "events[1].entity", "{violations:?}");
    let status = failure(
        client
            .append(append_of(vec![event("", "order-1", "A")]))
            .await,
    );
    assert_invalid(&status, "scope");
    let status = failure(
        client
            .append(append_of(vec![event("$system", "gates", "GateRegistered")]))
            .await,
    );
    assert_invalid(&status, "reserved");
    assert_eq!(head(&mut client).await, 0, "nothing refused was written");
}

/// What only the store can judge (an id already in the log, a causation parent later in the
/// append, an id earlier events already named as a parent, a gate that is not registered) is
/// refused naming the part, within the append wherever the append sits in the request. Catches
/// a refusal that names only `events`, or names the part without its `append.` prefix.
#[tokio::test]
async fn refusals_the_store_decides_name_the_part() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let taken = "01890000-0000-7000-8000-0000000000aa".to_string();
    let named = "01890000-0000-7000-8000-0000000000bb".to_string();
    let with_id = |id: &str| pb::NewEvent {
        id: id.to_string(),
        ..event("acme", "order-1", "OrderPlaced")
    };
    let with_parent = |parent: &str| pb::NewEvent {
        causation: vec![parent.to_string()],
        ..event("acme", "order-1", "OrderPaid")
    };
    append(&mut client, vec![with_id(&taken)]).await;
    client
        .append(pb::AppendRequest {
            external_causation: true,
            ..append_of(vec![with_parent(&named)])
        })
        .await
        .expect("an append naming a parent outside the store");
    let before = head(&mut client).await;
    let field_of = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violations = status
            .get_details_bad_request()
            .unwrap_or_else(|| panic!("a BadRequest in {status:?}"))
            .field_violations;
        assert!(
            status.message().contains(&violations[0].field),
            "the message names the part: {status:?}"
        );
        violations[0].field.clone()
    };

    let taken_again = append_of(vec![event("acme", "order-2", "A"), with_id(&taken)]);
    let status = failure(client.append(taken_again.clone()).await);
    assert_eq!(field_of(status), "events[1].id");
    let later = "01890000-0000-7000-8000-0000000000cc";
    // External causation, or the parent would be refused first as missing from the log.
    let parent_later = pb::AppendRequest {
        external_causation: true,
        ..append_of(vec![with_parent(later), with_id(later)])
    };
    let status = failure(client.append(parent_later).await);
    assert_eq!(field_of(status), "events[0].causation[0]");
    let status = failure(client.append(append_of(vec![with_id(&named)])).await);
    assert_eq!(field_of(status), "events[0].id");
    let unknown_gate = pb::AppendRequest {
        gates: vec!["no-such-gate".to_string()],
        ..append_of(vec![event("acme", "order-3", "A")])
    };
    let status = failure(client.append(unknown_gate.clone()).await);
    assert_eq!(field_of(status), "gates[0]");
    let status = failure(
        client
            .dry_run(pb::DryRunRequest {
                append: Some(unknown_gate),
            })
            .await,
    );
    assert_eq!(field_of(status), "append.gates[0]");
    let request = pb::AppendStreamRequest {
        append: Some(taken_again),
    };
    let mut answers = client
        .append_stream(tokio_stream::iter(vec![request]))
        .await
        .expect("the stream opens")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("an answer")
        .expect("one answer");
    let status = crate::harness::answer_of(answer).expect_err("the taken id is refused");
    assert_eq!(field_of(status), "append.events[1].id");
    assert_eq!(
        head(&mut client).await,
        before,
        "nothing refused was written"
    );
}

/// A request over a bound is refused with a message and an `ErrorInfo` naming the constant.
#[tokio::test]
async fn limits_are_named() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;

    let many_tags = pb::NewEvent {
        tags: (0..65).map(|tag_idx| format!("tag:{tag_idx}")).collect(),
        ..event("acme", "order-1", "OrderPlaced")
    };
    let status = failure(client.append(append_of(vec![many_tags])).await);
    assert_invalid(&status, "TAGS_PER_EVENT_MAX");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "LIMIT_EXCEEDED");
    assert_eq!(info.metadata["limit"], "TAGS_PER_EVENT_MAX");
    assert_eq!(info.metadata["max"], "64");
    assert_eq!(info.metadata["actual"], "65");
    let violations = status
        .get_details_bad_request()
        .expect("a BadRequest beside the ErrorInfo")
        .field_violations;
    assert_eq!(violations[0].field, "events[0].tags", "{violations:?}");

    let status = failure(
        client
            .read_log(pb::ReadLogRequest {
                consistency: 0,
                from_position: 1,
                direction: 0,
                limit: 10_001,
                filter: None,
            })
            .await,
    );
    assert_invalid(&status, "READ_EVENTS_MAX");

    let status = failure(
        client
            .get_descendants(pb::GetDescendantsRequest {
                id: "01890000-0000-7000-8000-000000000000".to_string(),
                depth: 1_001,
                limit: 10,
            })
            .await,
    );
    assert_invalid(&status, "GRAPH_DEPTH_MAX");

    // One byte over the append limit still fits the message limit, so the store refuses it
    // by name rather than the transport by size.
    let oversized = pb::NewEvent {
        payload: vec![b'x'; APPEND_BYTES_MAX + 1],
        ..event("acme", "order-1", "OrderPlaced")
    };
    let status = failure(client.append(append_of(vec![oversized])).await);
    assert_invalid(&status, "APPEND_BYTES_MAX");
    assert_eq!(head(&mut client).await, 0);
}

/// Ids the store does not know are NOT_FOUND.
#[tokio::test]
async fn unknown_ids_are_not_found() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let unknown = "01890000-0000-7000-8000-000000000000".to_string();

    let status = failure(
        client
            .get(pb::GetRequest {
                consistency: 0,
                id: unknown.clone(),
            })
            .await,
    );
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = failure(
        client
            .get_ancestors(pb::GetAncestorsRequest {
                id: unknown,
                depth: 1,
                limit: 10,
            })
            .await,
    );
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = failure(
        client
            .remove_gate(pb::RemoveGateRequest {
                name: "never-registered".to_string(),
            })
            .await,
    );
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

async fn register_unique_email(client: &mut Client) {
    client
        .register_gate(pb::RegisterGateRequest {
            definition: Some(pb::GateDefinition {
                name: "one-email".to_string(),
                scopes: vec!["acme".to_string()],
                types: vec![],
                rule: Some(pb::gate_definition::Rule::UniqueTag(pb::UniqueTagRule {
                    prefix: "email:".to_string(),
                })),
            }),
        })
        .await
        .expect("register the gate");
}

/// A gate's denial is FAILED_PRECONDITION with an `ErrorInfo` whose reason is the denial code
/// and whose metadata names the gate and the facts it saw; the append leaves nothing behind.
#[tokio::test]
async fn a_denial_carries_its_code_gate_and_facts() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    register_unique_email(&mut client).await;

    let with_email = |entity: &str| pb::NewEvent {
        tags: vec!["email:ada@example.com".to_string()],
        ..event("acme", entity, "UserRegistered")
    };
    append(&mut client, vec![with_email("user-1")]).await;
    let head_before = head(&mut client).await;

    let status = failure(client.append(append_of(vec![with_email("user-2")])).await);
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "TAG_TAKEN");
    assert_eq!(info.domain, "causeway");
    assert_eq!(info.metadata["gate"], "one-email");
    assert_eq!(info.metadata["tag"], "email:ada@example.com");
    assert_eq!(info.metadata["scope"], "acme");
    assert_eq!(
        head(&mut client).await,
        head_before,
        "a denied append writes nothing"
    );

    // The built-in DCB condition is a denial too, named `dcb`.
    let conditioned = pb::AppendRequest {
        condition: Some(pb::DcbCondition {
            query: Some(pb::Filter {
                items: vec![pb::QueryItem {
                    types: vec!["UserRegistered".to_string()],
                    tags: vec![],
                }],
                ..Default::default()
            }),
            after_position: 0,
        }),
        ..append_of(vec![event("acme", "user-3", "UserRegistered")])
    };
    let status = failure(client.append(conditioned).await);
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "DCB_CONDITION");
    assert_eq!(info.metadata["gate"], "dcb");
}

/// An expected-version conflict is FAILED_PRECONDITION with reason VERSION_CONFLICT and the
/// expected and actual versions.
#[tokio::test]
async fn a_version_conflict_names_expected_and_actual() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    append(&mut client, vec![event("acme", "order-9", "OrderPlaced")]).await;

    let stale = pb::AppendRequest {
        expected: vec![pb::ExpectedVersion {
            scope: "acme".to_string(),
            entity: "order-9".to_string(),
            kind: pb::ExpectedKind::Exact as i32,
            version: 5,
        }],
        ..append_of(vec![event("acme", "order-9", "OrderPaid")])
    };
    let status = failure(client.append(stale).await);
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "VERSION_CONFLICT");
    assert_eq!(info.metadata["expected"], "5");
    assert_eq!(info.metadata["actual"], "1");
    assert_eq!(info.metadata["scope"], "acme");
    assert_eq!(info.metadata["entity"], "order-9");

    let new_only = pb::AppendRequest {
        expected: vec![pb::ExpectedVersion {
            scope: "acme".to_string(),
            entity: "order-9".to_string(),
            kind: pb::ExpectedKind::NoStream as i32,
            version: 0,
        }],
        ..append_of(vec![event("acme", "order-9", "OrderPaid")])
    };
    let status = failure(client.append(new_only).await);
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.metadata["expected"], "no_stream");
}

/// The same idempotency key with other content is ALREADY_EXISTS, never a silent success.
#[tokio::test]
async fn a_reused_idempotency_key_with_other_content_already_exists() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let keyed = |entity: &str| pb::AppendRequest {
        idempotency_key: "once".to_string(),
        ..append_of(vec![event("acme", entity, "OrderPlaced")])
    };
    client.append(keyed("order-1")).await.expect("first use");
    let status = failure(client.append(keyed("order-2")).await);
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("once"), "{}", status.message());
    assert_eq!(head(&mut client).await, 1);
}
