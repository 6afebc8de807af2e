//! Bad input on every RPC of `causeway.v1`, sent as raw gRPC frames so that what a generated
//! client cannot send (a string that is not UTF-8, a protobuf cut short, a wrong wire type, a
//! gzip body that does not inflate, a message over the size limit) is sent too.
//!
//! The property: every such request is answered with the documented code (INVALID_ARGUMENT
//! with a `google.rpc.BadRequest` naming the field, RESOURCE_EXHAUSTED for a message over the
//! limit), in a message under 1 KiB that names the field, the server stays SERVING, and the
//! log afterwards holds exactly what it held before. The bugs it catches: tonic's INTERNAL and
//! OUT_OF_RANGE reaching clients (and the log as server failures), an error that echoes a
//! megabyte of input, an unbounded name reaching the store, a refusal without a field.
//!
//! The table is checked against the service descriptors: a new RPC without a row fails the
//! test until its bad inputs are listed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::{
    Node, answer_of, event, every_rpc, health_of, pb, read_all, read_grpc_body, scratch,
};

const MIB: usize = 1024 * 1024;
/// The longest message any refusal may carry.
const MESSAGE_BYTES_MAX: usize = 1024;

/// One bad request and its answer.
struct Case {
    /// What is wrong, for the failure message.
    what: &'static str,
    /// The encoded request message (or, for `Frame::Gzip`, what follows the frame header).
    body: Vec<u8>,
    frame: Frame,
    code: Code,
    /// The field the BadRequest (and the message) must name.
    field: &'static str,
}

/// How the body is framed.
#[derive(Clone, Copy)]
enum Frame {
    /// One uncompressed message.
    Plain,
    /// A message flagged as gzip-compressed whose bytes are not gzip.
    BadGzip,
    /// Only a frame header claiming a message larger than any limit; no body follows.
    Oversized,
}

fn case(what: &'static str, request: impl Message, field: &'static str) -> Case {
    Case {
        what,
        body: request.encode_to_vec(),
        frame: Frame::Plain,
        code: Code::InvalidArgument,
        field,
    }
}

fn raw(what: &'static str, body: Vec<u8>, field: &'static str) -> Case {
    Case {
        what,
        body,
        frame: Frame::Plain,
        code: Code::InvalidArgument,
        field,
    }
}

/// A length-delimited field: `tag` then the length and the bytes.
fn len_field(field_number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(field_number << 3) | 2];
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

/// Two bytes that are not UTF-8.
const NOT_UTF8: &[u8] = &[0xff, 0xfe];

/// The cases every RPC gets, whatever its request: they fail before any field is read.
fn malformed() -> Vec<Case> {
    vec![
        // Field 15, which no request has: cut short before any field of the request.
        raw("a message cut short", vec![0x7a, 0x05, 0x01], "request"),
        raw("an invalid wire type", vec![0x0f], "request"),
        Case {
            what: "a gzip body that is not gzip",
            body: b"this is not gzip at all".to_vec(),
            frame: Frame::BadGzip,
            code: Code::InvalidArgument,
            field: "request",
        },
        Case {
            what: "a message over the size limit",
            body: Vec::new(),
            frame: Frame::Oversized,
            code: Code::ResourceExhausted,
            field: "",
        },
    ]
}

fn big(bytes: usize) -> String {
    "x".repeat(bytes)
}

fn append_of(events: Vec<pb::NewEvent>) -> pb::AppendRequest {
    pb::AppendRequest {
        events,
        ..Default::default()
    }
}

/// The cases of each RPC, by full method path.
fn cases() -> Vec<(&'static str, Vec<Case>)> {
    let ok = || event("acme", "order-1", "OrderPlaced");
    let id = "01890000-0000-7000-8000-000000000001".to_string();
    vec![
        (
            "/causeway.v1.EventStoreService/Append",
            vec![
                case(
                    "a 1 MiB scope",
                    append_of(vec![pb::NewEvent {
                        scope: big(MIB),
                        ..ok()
                    }]),
                    "events[0].scope",
                ),
                case(
                    "a reserved scope",
                    append_of(vec![ok(), event("$system", "gates", "GateRegistered")]),
                    "events[1].scope",
                ),
                case(
                    "an empty type",
                    append_of(vec![event("acme", "order-1", "")]),
                    "events[0].type",
                ),
                case(
                    "a tag with a control character",
                    append_of(vec![pb::NewEvent {
                        tags: vec!["ok".to_string(), "bad\u{1b}[2J".to_string()],
                        ..ok()
                    }]),
                    "events[0].tags[1]",
                ),
                case(
                    "an entity that displays reversed (U+202E)",
                    append_of(vec![pb::NewEvent {
                        entity: "invoice-\u{202E}fdp.exe".to_string(),
                        ..ok()
                    }]),
                    "events[0].entity",
                ),
                case(
                    "a metadata key with an isolate (U+2066)",
                    append_of(vec![pb::NewEvent {
                        metadata: [("\u{2066}user".to_string(), "x".to_string())].into(),
                        ..ok()
                    }]),
                    "events[0].metadata",
                ),
                case(
                    "a 1 MiB idempotency key",
                    pb::AppendRequest {
                        idempotency_key: big(MIB),
                        ..append_of(vec![ok()])
                    },
                    "idempotency_key",
                ),
                case(
                    "a 1 MiB expected entity",
                    pb::AppendRequest {
                        expected: vec![pb::ExpectedVersion {
                            scope: "acme".to_string(),
                            entity: big(MIB),
                            kind: pb::ExpectedKind::NoStream as i32,
                            version: 0,
                        }],
                        ..append_of(vec![ok()])
                    },
                    "expected[0].entity",
                ),
                case(
                    "an unknown expected kind",
                    pb::AppendRequest {
                        expected: vec![pb::ExpectedVersion {
                            scope: "acme".to_string(),
                            entity: "order-1".to_string(),
                            kind: 99,
                            version: 0,
                        }],
                        ..append_of(vec![ok()])
                    },
                    "expected[0].kind",
                ),
                case(
                    "a 1 MiB gate name",
                    pb::AppendRequest {
                        gates: vec![big(MIB)],
                        ..append_of(vec![ok()])
                    },
                    "gates[0]",
                ),
                case(
                    "a 1 MiB tag in the condition",
                    pb::AppendRequest {
                        condition: Some(pb::DcbCondition {
                            query: Some(pb::Filter {
                                items: vec![pb::QueryItem {
                                    types: vec![],
                                    tags: vec![big(MIB)],
                                }],
                                ..Default::default()
                            }),
                            after_position: 0,
                        }),
                        ..append_of(vec![ok()])
                    },
                    "condition.query.items[0].tags[0]",
                ),
                case("no events", append_of(vec![]), "events"),
                raw(
                    "a scope that is not UTF-8",
                    len_field(1, &len_field(2, NOT_UTF8)),
                    "events.scope",
                ),
                raw(
                    "a wire type other than the field's",
                    // `events` (a message) sent as a varint.
                    vec![0x08, 0x01],
                    "events",
                ),
            ],
        ),
        (
            // Refusals of an append come as the stream's answers; a request that does not
            // decode ends the stream (`send`).
            "/causeway.v1.EventStoreService/AppendStream",
            vec![
                case(
                    "no append",
                    pb::AppendStreamRequest { append: None },
                    "append",
                ),
                case(
                    "a 1 MiB type",
                    pb::AppendStreamRequest {
                        append: Some(append_of(vec![pb::NewEvent {
                            r#type: big(MIB),
                            ..ok()
                        }])),
                    },
                    "append.events[0].type",
                ),
            ],
        ),
        (
            "/causeway.v1.EventStoreService/DryRun",
            vec![
                case("no append", pb::DryRunRequest { append: None }, "append"),
                case(
                    "a 1 MiB entity",
                    pb::DryRunRequest {
                        append: Some(append_of(vec![pb::NewEvent {
                            entity: big(MIB),
                            ..ok()
                        }])),
                    },
                    "append.events[0].entity",
                ),
            ],
        ),
        (
            "/causeway.v1.EventStoreService/Get",
            vec![
                case(
                    "a 1 MiB id",
                    pb::GetRequest {
                        id: big(MIB),
                        consistency: 0,
                    },
                    "id",
                ),
                case(
                    "an unknown consistency",
                    pb::GetRequest {
                        id: id.clone(),
                        consistency: 42,
                    },
                    "consistency",
                ),
                raw("an id that is not UTF-8", len_field(1, NOT_UTF8), "id"),
            ],
        ),
        (
            "/causeway.v1.EventStoreService/ReadEntity",
            vec![
                case(
                    "a 1 MiB entity",
                    pb::ReadEntityRequest {
                        scope: "acme".to_string(),
                        entity: big(MIB),
                        limit: 10,
                        ..Default::default()
                    },
                    "entity",
                ),
                case(
                    "a scope with a control character",
                    pb::ReadEntityRequest {
                        scope: "ac\nme".to_string(),
                        entity: "order-1".to_string(),
                        limit: 10,
                        ..Default::default()
                    },
                    "scope",
                ),
                case(
                    "a limit of 0",
                    pb::ReadEntityRequest {
                        scope: "acme".to_string(),
                        entity: "order-1".to_string(),
                        limit: 0,
                        ..Default::default()
                    },
                    "limit",
                ),
                case(
                    "an unknown direction",
                    pb::ReadEntityRequest {
                        scope: "acme".to_string(),
                        entity: "order-1".to_string(),
                        limit: 10,
                        direction: 9,
                        ..Default::default()
                    },
                    "direction",
                ),
            ],
        ),
        (
            "/causeway.v1.EventStoreService/ReadLog",
            vec![
                case(
                    "a 1 MiB entity prefix",
                    pb::ReadLogRequest {
                        limit: 10,
                        filter: Some(pb::Filter {
                            entity_prefix: big(MIB),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    "filter.entity_prefix",
                ),
                case(
                    "an empty scope",
                    pb::ReadLogRequest {
                        limit: 10,
                        filter: Some(pb::Filter {
                            scopes: vec![String::new()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    "filter.scopes[0]",
                ),
                case(
                    "a limit over READ_EVENTS_MAX",
                    pb::ReadLogRequest {
                        limit: 20_000,
                        ..Default::default()
                    },
                    "limit",
                ),
                case(
                    "an unknown direction",
                    pb::ReadLogRequest {
                        limit: 10,
                        direction: 7,
                        ..Default::default()
                    },
                    "direction",
                ),
            ],
        ),
        (
            "/causeway.v1.EventStoreService/Head",
            vec![case(
                "an unknown consistency",
                pb::HeadRequest { consistency: 77 },
                "consistency",
            )],
        ),
        (
            "/causeway.v1.EventStoreService/Subscribe",
            vec![case(
                "a 1 MiB scope",
                pb::SubscribeRequest {
                    start: Some(pb::subscribe_request::Start::FromPosition(1)),
                    filter: Some(pb::Filter {
                        scopes: vec![big(MIB)],
                        ..Default::default()
                    }),
                },
                "filter.scopes[0]",
            )],
        ),
        (
            "/causeway.v1.EventStoreService/GetAncestors",
            vec![
                case(
                    "a depth over GRAPH_DEPTH_MAX",
                    pb::GetAncestorsRequest {
                        id: id.clone(),
                        depth: 5000,
                        limit: 10,
                    },
                    "depth",
                ),
                case(
                    "the nil id",
                    pb::GetAncestorsRequest {
                        id: "00000000-0000-0000-0000-000000000000".to_string(),
                        depth: 1,
                        limit: 10,
                    },
                    "id",
                ),
            ],
        ),
        (
            "/causeway.v1.EventStoreService/GetDescendants",
            vec![case(
                "a limit over GRAPH_NODES_MAX",
                pb::GetDescendantsRequest {
                    id: id.clone(),
                    depth: 1,
                    limit: 100_000,
                },
                "limit",
            )],
        ),
        (
            "/causeway.v1.EventStoreService/GetCorrelation",
            vec![case(
                "a 1 MiB correlation id",
                pb::GetCorrelationRequest {
                    correlation_id: big(MIB),
                    limit: 10,
                },
                "correlation_id",
            )],
        ),
        (
            "/causeway.v1.EventStoreService/RegisterGate",
            vec![
                case(
                    "no definition",
                    pb::RegisterGateRequest { definition: None },
                    "definition",
                ),
                case(
                    "a 1 MiB scope",
                    gate(vec![big(MIB)], "true".to_string()),
                    "definition.scopes[0]",
                ),
                case(
                    "a $system scope",
                    gate(vec!["$system".to_string()], "true".to_string()),
                    "definition.scopes[0]",
                ),
                case(
                    "a 1 MiB name",
                    pb::RegisterGateRequest {
                        definition: Some(pb::GateDefinition {
                            name: big(MIB),
                            ..gate(vec![], "true".to_string())
                                .definition
                                .expect("a definition")
                        }),
                    },
                    "definition.name",
                ),
                case(
                    "the name of the store's causation check",
                    pb::RegisterGateRequest {
                        definition: Some(pb::GateDefinition {
                            name: "causation".to_string(),
                            ..gate(vec![], "false".to_string())
                                .definition
                                .expect("a definition")
                        }),
                    },
                    "definition.name",
                ),
                case(
                    "a name with a right-to-left isolate (U+2067)",
                    pb::RegisterGateRequest {
                        definition: Some(pb::GateDefinition {
                            name: "limits\u{2067}".to_string(),
                            ..gate(vec![], "true".to_string())
                                .definition
                                .expect("a definition")
                        }),
                    },
                    "definition.name",
                ),
                case(
                    "an allowed type with a right-to-left override (U+202E)",
                    pb::RegisterGateRequest {
                        definition: Some(pb::GateDefinition {
                            rule: Some(pb::gate_definition::Rule::AllowedTypes(
                                pb::AllowedTypesRule {
                                    types: vec!["A".to_string(), "B\u{202E}xyz".to_string()],
                                },
                            )),
                            ..gate(vec![], "true".to_string())
                                .definition
                                .expect("a definition")
                        }),
                    },
                    "definition.allowed_types.types[1]",
                ),
                case(
                    "a unique tag prefix with an isolate (U+2066)",
                    pb::RegisterGateRequest {
                        definition: Some(pb::GateDefinition {
                            rule: Some(pb::gate_definition::Rule::UniqueTag(pb::UniqueTagRule {
                                prefix: "email\u{2066}:".to_string(),
                            })),
                            ..gate(vec![], "true".to_string())
                                .definition
                                .expect("a definition")
                        }),
                    },
                    "definition.unique_tag.prefix",
                ),
                case(
                    "a scope with a bidi embedding (U+202B)",
                    gate(vec!["acme\u{202B}".to_string()], "true".to_string()),
                    "definition.scopes[0]",
                ),
                case(
                    "a 4 KB expression that does not parse",
                    gate(
                        vec![],
                        format!("event.payload.total < ({}", "1 + ".repeat(1000)),
                    ),
                    "definition.cel.expression",
                ),
                case(
                    "a 4 KB expression of unknown names",
                    gate(
                        vec![],
                        (0..400)
                            .map(|name_idx| format!("n{name_idx}"))
                            .collect::<Vec<_>>()
                            .join(" || "),
                    ),
                    "definition.cel.expression",
                ),
            ],
        ),
        (
            "/causeway.v1.EventStoreService/ListGates",
            // No fields: the malformed cases alone.
            vec![],
        ),
        (
            "/causeway.v1.EventStoreService/RemoveGate",
            vec![
                case(
                    "a 1 MiB name",
                    pb::RemoveGateRequest { name: big(MIB) },
                    "name",
                ),
                case(
                    "an empty name",
                    pb::RemoveGateRequest {
                        name: String::new(),
                    },
                    "name",
                ),
            ],
        ),
        (
            "/causeway.v1.EventStoreService/VerifyReceipt",
            vec![
                case(
                    "no receipt",
                    pb::VerifyReceiptRequest { receipt: None },
                    "receipt",
                ),
                case(
                    "an event id that is not a UUID",
                    pb::VerifyReceiptRequest {
                        receipt: Some(pb::Receipt {
                            events: vec![pb::Committed {
                                id: big(MIB),
                                timestamp: Some(pb::HybridTimestamp::default()),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                    },
                    "receipt.events[0].id",
                ),
            ],
        ),
        (
            "/causeway.v1.OperationsService/Backup",
            // No fields: the malformed cases alone.
            vec![],
        ),
        (
            "/causeway.v1.OperationsService/Verify",
            // No value of its two numbers is refused (a start past the head answers an empty
            // page, a byte count past the limit is capped): the malformed cases alone.
            vec![],
        ),
        (
            "/causeway.v1.ClusterService/InitCluster",
            vec![case(
                "a voter with node id 0",
                pb::InitClusterRequest {
                    voters: vec![pb::ClusterNode {
                        node_id: 0,
                        address: "127.0.0.1:1".to_string(),
                    }],
                },
                "voters[0].node_id",
            )],
        ),
        (
            "/causeway.v1.ClusterService/AddLearner",
            vec![
                case("no node", pb::AddLearnerRequest { node: None }, "node"),
                case(
                    "a 1 MiB address",
                    pb::AddLearnerRequest {
                        node: Some(pb::ClusterNode {
                            node_id: 2,
                            address: big(MIB),
                        }),
                    },
                    "node.address",
                ),
            ],
        ),
        (
            "/causeway.v1.ClusterService/PromoteVoter",
            vec![case(
                "node id 0",
                pb::PromoteVoterRequest { node_id: 0 },
                "node_id",
            )],
        ),
        (
            "/causeway.v1.ClusterService/RemoveNode",
            vec![case(
                "node id 0",
                pb::RemoveNodeRequest { node_id: 0 },
                "node_id",
            )],
        ),
        (
            "/causeway.v1.ClusterService/TransferLeader",
            vec![case(
                "node id 0",
                pb::TransferLeaderRequest { node_id: 0 },
                "node_id",
            )],
        ),
        (
            "/causeway.v1.ClusterService/GetClusterStatus",
            // No fields: the malformed cases alone.
            vec![],
        ),
    ]
}

fn gate(scopes: Vec<String>, expression: String) -> pb::RegisterGateRequest {
    pb::RegisterGateRequest {
        definition: Some(pb::GateDefinition {
            name: "bad-input".to_string(),
            scopes,
            types: vec![],
            rule: Some(pb::gate_definition::Rule::Cel(pb::CelRule { expression })),
        }),
    }
}

/// Sends one framed request on `channel` and returns the status the server ends it with. Every
/// refusal here comes before any response message, so the status is in the headers.
async fn send(channel: &mut Channel, path: &str, case: &Case) -> Status {
    let mut frame = Vec::with_capacity(case.body.len() + 5);
    let (flag, len) = match case.frame {
        Frame::Plain => (0u8, case.body.len() as u32),
        Frame::BadGzip => (1, case.body.len() as u32),
        Frame::Oversized => (0, 64 * MIB as u32),
    };
    frame.push(flag);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&case.body);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if matches!(case.frame, Frame::BadGzip) {
        request = request.header("grpc-encoding", "gzip");
    }
    let request = request
        .body(tonic::body::Body::new(axum::body::Body::from(frame)))
        .expect("a request");
    std::future::poll_fn(|cx| tower::Service::poll_ready(channel, cx))
        .await
        .expect("the channel is ready");
    let response = tower::Service::call(channel, request)
        .await
        .expect("an HTTP response");
    if path.ends_with("/AppendStream") && Status::from_header_map(response.headers()).is_none() {
        // A stream answers each request in a message, and ends with its own status.
        let (messages, status) = read_grpc_body(response.into_body()).await;
        return match messages.first() {
            Some(message) => answer_of(
                pb::AppendStreamResponse::decode(message.clone()).expect("an answer decodes"),
            )
            .expect_err("a bad request is refused"),
            None => status,
        };
    }
    Status::from_header_map(response.headers()).unwrap_or_else(|| {
        panic!(
            "{path}: the refusal ends the call before any message, so its status is in the \
             headers: {:?}",
            response.headers()
        )
    })
}

/// A port free now, for a node that must advertise its own address.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
}

/// Every bad request of the table, on every RPC, through one cluster member (so that the
/// cluster service is served too): each answered with its code and field in a short message;
/// the node keeps serving, and nothing reached the log.
#[tokio::test]
async fn bad_input_on_every_rpc_is_refused_naming_the_field() {
    let dir = scratch();
    let addr = free_port().to_string();
    let node = Node::start(
        &dir.path().join("data"),
        &["--listen", &addr, "--node-id", "1", "--advertise", &addr],
    );
    let channel = Channel::from_shared(format!("http://{}", node.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut cluster = pb::cluster_service_client::ClusterServiceClient::new(channel.clone());
    cluster
        .init_cluster(pb::InitClusterRequest { voters: vec![] })
        .await
        .expect("a cluster of this node alone");
    let mut client = node.client().await;
    let started = Instant::now();
    let accepted = loop {
        match client
            .append(append_of(vec![event("acme", "order-1", "OrderPlaced")]))
            .await
        {
            Ok(response) => break response.into_inner(),
            Err(status) if started.elapsed() < Duration::from_secs(20) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the node never became leader: {status:?}"),
        }
    };
    assert!(accepted.receipt.is_some());
    // Health follows readiness on a timer (READINESS_INTERVAL), so it may still say NOT_SERVING
    // from before the election: wait for SERVING, so that the end checks it stayed so.
    let started = Instant::now();
    while health_of(&node).await != [1, 1] {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the leader never reported SERVING"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = read_all(&mut client, None).await;

    let table = cases();
    let listed: BTreeSet<String> = table.iter().map(|(rpc, _)| rpc.to_string()).collect();
    assert_eq!(
        listed,
        every_rpc(),
        "every RPC of causeway.v1 has a row in the table (an empty one if it has no fields)"
    );
    let mut channel = channel;
    for (rpc, field_cases) in table {
        for case in malformed().into_iter().chain(field_cases) {
            let status = send(&mut channel, rpc, &case).await;
            let context = format!("{rpc}, {}: {status:?}", case.what);
            assert_eq!(status.code(), case.code, "{context}");
            assert!(
                status.message().len() < MESSAGE_BYTES_MAX,
                "{context}: a {} byte message",
                status.message().len()
            );
            if case.code == Code::InvalidArgument {
                let bad_request = status
                    .get_details_bad_request()
                    .unwrap_or_else(|| panic!("{context}: no BadRequest"));
                assert_eq!(
                    bad_request.field_violations[0].field, case.field,
                    "{context}"
                );
                assert!(
                    status.message().contains(case.field),
                    "{context}: the message names the field"
                );
            } else {
                assert!(
                    status.message().contains("limit"),
                    "{context}: the message names the limit"
                );
            }
        }
    }

    assert_eq!(
        health_of(&node).await,
        vec![1, 1],
        "the server and the store service stay SERVING"
    );
    let after = read_all(&mut client, None).await;
    assert_eq!(after, before, "no refused request wrote anything");
    let gates = client
        .list_gates(pb::ListGatesRequest {})
        .await
        .expect("list gates")
        .into_inner()
        .gates;
    assert!(
        gates.iter().all(|gate| gate.name != "bad-input"),
        "no refused gate was registered"
    );
    let log = node.log();
    let refusals: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "rpc failed" || line["message"] == "rpc failed")
        .collect();
    assert!(!refusals.is_empty(), "refusals are logged:\n{log}");
    for line in refusals {
        let code = line["code"].as_str().or(line["fields"]["code"].as_str());
        assert!(
            !matches!(code, Some("INTERNAL" | "OUT_OF_RANGE" | "UNKNOWN")),
            "no bad request is answered as a server failure: {line}"
        );
        if matches!(code, Some("INVALID_ARGUMENT" | "RESOURCE_EXHAUSTED")) {
            assert_eq!(
                line["level"], "INFO",
                "a refusal is not a server failure: {line}"
            );
        }
    }
}

/// Right-to-left names are not bad input: a Hebrew entity with a right-to-left mark (U+200F)
/// and an Arabic tag with an Arabic letter mark (U+061C) are appended as sent, while the
/// embeddings, overrides and isolates of the table above are refused. Catches a bidi check
/// that refuses the marks right-to-left text needs.
#[tokio::test]
async fn right_to_left_names_with_their_marks_are_appended() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let entity = "הזמנה\u{200F}-7";
    let tag = "لقب:\u{061C}عميل";
    let appended = client
        .append(append_of(vec![pb::NewEvent {
            tags: vec![tag.to_string()],
            ..event("acme", entity, "OrderPlaced")
        }]))
        .await
        .expect("a right-to-left entity and tag are valid names")
        .into_inner();
    assert!(appended.receipt.is_some());
    let events = read_all(&mut client, None).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].entity, entity);
    assert_eq!(events[0].tags, vec![tag.to_string()]);
}

/// A metadata key with a bidi control is named in the refusal, escaped: a map has no index to
/// point at, and quoting the key raw would carry the control into the caller's terminal.
/// Catches a refusal that says only `events[0].metadata`, or one that quotes the key as sent.
#[tokio::test]
async fn a_refused_metadata_key_is_quoted_escaped() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = node.client().await;
    let status = client
        .append(append_of(vec![pb::NewEvent {
            metadata: [
                ("tenant".to_string(), "a".to_string()),
                ("user\u{2066}id".to_string(), "b".to_string()),
            ]
            .into(),
            ..event("acme", "order-1", "OrderPlaced")
        }]))
        .await
        .expect_err("a metadata key with an isolate is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let message = status.message();
    assert!(
        message.contains(r"user\u{2066}id"),
        "names the key, escaped: {message}"
    );
    assert!(
        !message.contains('\u{2066}'),
        "never the raw control: {message}"
    );
}
