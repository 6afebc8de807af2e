//! What an operator and generic tools rely on: gRPC health, reflection (v1 and v1alpha),
//! compressed requests, and settings from flags, environment and a file.

use tonic::codec::CompressionEncoding;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{Node, append, connect, event, health_of, pb, read_all, scratch};

const SERVICE_NAME: &str = "causeway.v1.EventStoreService";

/// Health answers SERVING for the server ("") and for the event store service.
#[tokio::test]
async fn health_reports_serving() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    // Asks "" and SERVICE_NAME, in that order.
    assert_eq!(health_of(&node).await, [ServingStatus::Serving as i32; 2]);
}

/// Reflection lists the event store, health and reflection services through both v1 and
/// v1alpha, and serves the descriptor of the event store's file.
#[tokio::test]
async fn reflection_lists_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let requests = vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    SERVICE_NAME.to_string(),
                ),
            ),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection v1")
        .into_inner();
    let listed = responses
        .message()
        .await
        .expect("a response")
        .expect("not the end");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for expected in [
        SERVICE_NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
    let file = responses
        .message()
        .await
        .expect("a response")
        .expect("not the end");
    let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        file.message_response
    else {
        panic!("expected a file descriptor, got {file:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    let mut reflection = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let listed = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection v1alpha")
        .into_inner()
        .message()
        .await
        .expect("a response")
        .expect("not the end");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("expected a service list, got {listed:?}");
    };
    assert!(
        list.service
            .iter()
            .any(|service| service.name == SERVICE_NAME)
    );
}

/// Requests compressed with gzip or zstd are accepted, and compressed responses read back.
#[tokio::test]
async fn gzip_and_zstd_requests_are_accepted() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    for (encoding_idx, encoding) in [CompressionEncoding::Gzip, CompressionEncoding::Zstd]
        .into_iter()
        .enumerate()
    {
        let mut client = connect(node.addr)
            .await
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let payload = vec![b'z'; 64 * 1024];
        let receipt = append(
            &mut client,
            vec![pb::NewEvent {
                payload: payload.clone(),
                ..event("acme", &format!("compressed-{encoding_idx}"), "Squeezed")
            }],
        )
        .await;
        let got = client
            .get(pb::GetRequest {
                consistency: 0,
                id: receipt.events[0].id.clone(),
            })
            .await
            .expect("get, compressed")
            .into_inner()
            .event
            .expect("an event");
        assert_eq!(got.payload, payload, "{encoding:?}");
    }
}

/// A client that accepts gzip (as Python's and Node's gRPC clients do without being asked)
/// gets plain answers unless the server was started with `--compress-responses`: compressing
/// every answer took most of the server's CPU in such clients' reads.
#[tokio::test]
async fn answers_are_compressed_only_when_the_server_is_told_to() {
    let dir = scratch();
    for (flags, compressed) in [(&[][..], false), (&["--compress-responses"][..], true)] {
        let node = Node::start(&dir.path().join(format!("data-{compressed}")), flags);
        let mut client = connect(node.addr)
            .await
            .accept_compressed(CompressionEncoding::Gzip);
        let receipt = append(
            &mut client,
            vec![pb::NewEvent {
                payload: vec![b'z'; 4096],
                ..event("acme", "compressible", "Squeezed")
            }],
        )
        .await;
        let answer = client
            .get(pb::GetRequest {
                consistency: 0,
                id: receipt.events[0].id.clone(),
            })
            .await
            .expect("get");
        let encoding = answer
            .metadata()
            .get("grpc-encoding")
            .map(|value| value.to_str().expect("ascii").to_string());
        assert_eq!(
            encoding.as_deref(),
            compressed.then_some("gzip"),
            "flags {flags:?}"
        );
        let event = answer.into_inner().event.expect("an event");
        assert_eq!(event.payload, vec![b'z'; 4096]);
    }
}

/// A flag wins over the file (the file's listen address would not bind), the environment
/// wins over the file (the data lands where CAUSEWAY_DATA_DIR says), and a bad setting stops
/// the server with a message naming it.
#[tokio::test]
async fn settings_come_from_flags_environment_and_file() {
    let dir = scratch();
    let from_env = dir.path().join("from-env");
    let from_file = dir.path().join("from-file");
    let config = dir.path().join("causeway.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"192.0.2.1:1\"\npool_threads = 2\n",
            from_file.to_str().expect("utf-8 path")
        ),
    )
    .expect("write the config file");
    let node = Node::start_with_env(
        &from_env,
        &["--config", config.to_str().expect("utf-8 path")],
        &[("CAUSEWAY_DATA_DIR", from_env.to_str().expect("utf-8 path"))],
    );
    let mut client = node.client().await;
    append(&mut client, vec![event("acme", "order-1", "Placed")]).await;
    assert_eq!(read_all(&mut client, None).await.len(), 1);
    assert!(
        from_env.join("events").is_dir(),
        "the environment's data directory is used"
    );
    assert!(!from_file.exists(), "the file's data directory is not");
    drop(node);

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_causewayd"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(["--pool-threads", "0"])
        .arg("--data-dir")
        .arg(dir.path().join("unused"))
        .output()
        .expect("run causewayd");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("pool_threads"), "{stderr}");
}

/// The server lets clients send HTTP/2 frames of up to `HTTP2_FRAME_BYTES_MAX`, so a batch
/// append arrives in one DATA frame: its SETTINGS frame, the first thing it sends on a
/// connection, says so.
#[test]
fn the_server_accepts_large_http2_frames() {
    use std::io::{Read, Write};

    const SETTINGS: u8 = 0x4;
    const MAX_FRAME_SIZE: u16 = 0x5;
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut stream = std::net::TcpStream::connect(node.addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    // The client preface, then an empty SETTINGS frame.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .expect("send the preface");
    let mut header = [0u8; 9];
    stream
        .read_exact(&mut header)
        .expect("the server's first frame");
    assert_eq!(
        header[3], SETTINGS,
        "the server's preface is a SETTINGS frame"
    );
    let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).expect("the settings");
    let max_frame_size = payload.chunks_exact(6).find_map(|setting| {
        (u16::from_be_bytes([setting[0], setting[1]]) == MAX_FRAME_SIZE)
            .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
    });
    assert_eq!(
        max_frame_size,
        Some(causeway_server::limits::HTTP2_FRAME_BYTES_MAX)
    );
}

/// Reflection describes the google.rpc error details a failed call carries, so a generic
/// client decodes a denial's `ErrorInfo` without a copy of googleapis.
#[tokio::test]
async fn reflection_describes_the_error_details_a_status_carries() {
    use tonic_reflection::pb::v1;
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", node.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let symbols = [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "google.rpc.RetryInfo",
    ];
    let requests: Vec<v1::ServerReflectionRequest> = symbols
        .iter()
        .map(|symbol| v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    symbol.to_string(),
                ),
            ),
        })
        .collect();
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection v1")
        .into_inner();
    for symbol in symbols {
        let answer = responses
            .message()
            .await
            .expect("a response")
            .expect("not the end");
        let Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
            answer.message_response
        else {
            panic!("{symbol}: expected a file descriptor, got {answer:?}");
        };
        let described = files.file_descriptor_proto.iter().any(|bytes| {
            let file = <prost_types::FileDescriptorProto as prost::Message>::decode(&bytes[..])
                .expect("a file descriptor");
            file.package() == "google.rpc"
                && file
                    .message_type
                    .iter()
                    .any(|message| Some(message.name()) == symbol.strip_prefix("google.rpc."))
        });
        assert!(described, "{symbol} is described");
    }
}
