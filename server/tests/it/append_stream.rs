//! `AppendStream`: appends over one stream, answered in order, refusals in place.

use std::time::Duration;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::harness::{
    Client, Node, answer_of, append_of, connect, event, pb, read_all, read_grpc_body, scratch,
};

/// How long any one answer may take before the test calls it a hang.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// An open append stream: where requests go, and its answers as results.
struct Stream {
    requests: Option<mpsc::Sender<pb::AppendStreamRequest>>,
    answers: tonic::Streaming<pb::AppendStreamResponse>,
}

impl Stream {
    async fn open(client: &mut Client) -> Stream {
        let (requests, taken) = mpsc::channel(1024);
        let answers = client
            .append_stream(ReceiverStream::new(taken))
            .await
            .expect("the stream opens")
            .into_inner();
        Stream {
            requests: Some(requests),
            answers,
        }
    }

    async fn send(&self, append: pb::AppendRequest) {
        self.requests
            .as_ref()
            .expect("the sending side is open")
            .send(pb::AppendStreamRequest {
                append: Some(append),
            })
            .await
            .expect("the request is queued");
    }

    /// Closes the sending side.
    fn close(&mut self) {
        self.requests = None;
    }

    /// Checks that the stream has ended without an error.
    async fn ends_ok(&mut self) {
        match self.answer().await {
            Err(None) => {}
            other => panic!("the stream goes on or fails: {other:?}"),
        }
    }

    /// The next answer: `Ok(Ok(receipt))`, `Ok(Err(refusal))`, or `Err` when the stream ended
    /// (`None` for its OK end).
    async fn answer(&mut self) -> Result<Result<pb::Receipt, Status>, Option<Status>> {
        let message = tokio::time::timeout(ANSWER_WAIT, self.answers.message())
            .await
            .expect("an answer in time");
        match message {
            Ok(Some(response)) => Ok(answer_of(response)),
            Ok(None) => Err(None),
            Err(status) => Err(Some(status)),
        }
    }
}

fn expecting(append: pb::AppendRequest, entity: &str, version: u64) -> pb::AppendRequest {
    pb::AppendRequest {
        expected: vec![pb::ExpectedVersion {
            scope: "acme".to_string(),
            entity: entity.to_string(),
            kind: if version == 0 {
                pb::ExpectedKind::NoStream
            } else {
                pb::ExpectedKind::Exact
            } as i32,
            version,
        }],
        ..append
    }
}

/// Thirty appends sent before any answer is read, each expecting the version the one before
/// it leaves (so they succeed only if they reach the log in the order sent), with a version
/// conflict and an invalid event among them. Every request gets its answer at its place, the
/// refusals carry the status a unary append gives (with its details), the stream goes on after
/// them, and the log holds exactly the acknowledged events at their receipts' positions.
/// Catches answers out of order, appends submitted out of order, and a refusal that ends the
/// stream.
#[tokio::test]
async fn appends_are_answered_in_order_and_a_refusal_does_not_end_the_stream() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = connect(node.addr).await;
    let mut stream = Stream::open(&mut client).await;
    let (conflict_idx, invalid_idx) = (10, 20);
    let mut version = 0;
    for idx in 0..30 {
        let append = append_of(vec![event("acme", "order-1", &format!("Step{idx}"))]);
        let append = match idx {
            _ if idx == conflict_idx => expecting(append, "order-1", version + 5),
            _ if idx == invalid_idx => append_of(vec![event("acme", "order-1", "")]),
            _ => {
                version += 1;
                expecting(append, "order-1", version - 1)
            }
        };
        stream.send(append).await;
    }
    stream.close();

    let mut positions = Vec::new();
    for idx in 0..30 {
        let answer = stream.answer().await.expect("an answer per request");
        match idx {
            _ if idx == conflict_idx => {
                let status = answer.expect_err("the conflict is refused");
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                let info = status.get_details_error_info().expect("an ErrorInfo");
                assert_eq!(info.reason, "VERSION_CONFLICT");
            }
            _ if idx == invalid_idx => {
                let status = answer.expect_err("the invalid event is refused");
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                let bad = status.get_details_bad_request().expect("a BadRequest");
                assert_eq!(bad.field_violations[0].field, "append.events[0].type");
            }
            _ => {
                let receipt = answer.unwrap_or_else(|status| panic!("append {idx}: {status:?}"));
                positions.push(receipt.events[0].position);
            }
        }
    }
    stream.ends_ok().await;
    assert_eq!(positions, (1..=28).collect::<Vec<u64>>());
    let events = read_all(&mut client, None).await;
    let types: Vec<&str> = events.iter().map(|event| event.r#type.as_str()).collect();
    let sent: Vec<String> = (0..30)
        .filter(|idx| *idx != conflict_idx && *idx != invalid_idx)
        .map(|idx| format!("Step{idx}"))
        .collect();
    assert_eq!(types, sent);
}

/// A stream that carries many times the server's request budget is never refused for it,
/// whether it sends one append at a time or all at once: each message's bytes are given back
/// once it is answered, and a message that does not fit waits for room (its own stream's
/// answers make it). Catches a stream whose bytes add up for its whole life, and one that its
/// own pending appends end with OVERLOADED.
#[tokio::test]
async fn a_long_stream_gives_its_request_bytes_back() {
    let dir = scratch();
    let budget = 64 * 1024;
    let node = Node::start(
        &dir.path().join("data"),
        &["--max-in-flight-request-bytes", &budget.to_string()],
    );
    let mut client = connect(node.addr).await;
    let payload_bytes = 8 * 1024;
    let n_appends = 4 * budget / payload_bytes;
    let big = |idx: usize| {
        append_of(vec![pb::NewEvent {
            payload: vec![b'7'; payload_bytes],
            content_type: "application/octet-stream".to_string(),
            ..event("acme", &format!("big-{idx}"), "Big")
        }])
    };
    let mut stream = Stream::open(&mut client).await;
    for idx in 0..n_appends {
        stream.send(big(idx)).await;
        let answer = stream.answer().await.expect("an answer");
        answer.unwrap_or_else(|status| panic!("append {idx}: {status:?}"));
    }
    stream.close();
    stream.ends_ok().await;

    let mut stream = Stream::open(&mut client).await;
    for idx in 0..n_appends {
        stream.send(big(n_appends + idx)).await;
    }
    stream.close();
    for idx in 0..n_appends {
        let answer = stream.answer().await.expect("an answer");
        answer.unwrap_or_else(|status| panic!("pipelined append {idx}: {status:?}"));
    }
    stream.ends_ok().await;
    assert_eq!(read_all(&mut client, None).await.len(), 2 * n_appends);
}

/// Streams whose appends together are more than the server admits at once (`pool_threads +
/// pool_queue`, here 2) wait for room instead of refusing: every stream's appends, each
/// expecting the version the one before it leaves, all commit. Catches a stream that answers
/// RESOURCE_EXHAUSTED in the middle of an in-order pipeline, failing every append after it.
#[tokio::test]
async fn streams_wait_for_admission_instead_of_breaking_their_order() {
    let dir = scratch();
    let node = Node::start(
        &dir.path().join("data"),
        &["--pool-threads", "1", "--pool-queue", "1"],
    );
    let mut client = connect(node.addr).await;
    let (n_streams, n_appends) = (4, 30);
    let mut streams = Vec::new();
    for stream_idx in 0..n_streams {
        let stream = Stream::open(&mut client).await;
        let entity = format!("order-{stream_idx}");
        for version in 0..n_appends {
            let append = append_of(vec![event("acme", &entity, "Step")]);
            stream.send(expecting(append, &entity, version)).await;
        }
        streams.push(stream);
    }
    for (stream_idx, mut stream) in streams.into_iter().enumerate() {
        stream.close();
        for idx in 0..n_appends {
            let answer = stream.answer().await.expect("an answer");
            answer.unwrap_or_else(|status| panic!("stream {stream_idx}, append {idx}: {status:?}"));
        }
        stream.ends_ok().await;
    }
    assert_eq!(
        read_all(&mut client, None).await.len() as u64,
        n_streams * n_appends
    );
}

/// A request the server cannot decode ends the stream with INVALID_ARGUMENT, after the answers
/// to the requests before it; those appends stand. Catches a decode error that drops the
/// pending answers or leaves the stream open.
#[tokio::test]
async fn a_request_that_does_not_decode_ends_the_stream_after_the_answers_before_it() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut client = connect(node.addr).await;
    // Two well-formed messages, then one cut short, framed by hand on one HTTP/2 stream.
    let mut body = Vec::new();
    for idx in 0..2 {
        let request = pb::AppendStreamRequest {
            append: Some(append_of(vec![event("acme", &format!("ok-{idx}"), "Fine")])),
        };
        frame(&mut body, &request.encode_to_vec());
    }
    let good = body.clone();
    frame(&mut body, &[0x0a, 0x05, 0x01]);
    let messages = raw_stream(node.addr, body).await;
    let (answers, status) = messages;
    assert_eq!(answers.len(), 2, "{answers:?}");
    for answer in answers {
        answer_of(answer).expect("the appends before the bad request are committed");
    }
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(read_all(&mut client, None).await.len(), 2);

    // A stream that ends right after a message's prefix, before its body: tonic alone takes
    // that for a clean end and drops the message.
    let mut cut = good;
    cut.push(0);
    cut.extend_from_slice(&100u32.to_be_bytes());
    let (answers, status) = raw_stream(node.addr, cut).await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("cut short"), "{status:?}");
}

/// Appends a gRPC message frame of `message` to `body`.
fn frame(body: &mut Vec<u8>, message: &[u8]) {
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
}

/// Sends `body` as the whole request of an AppendStream call and reads every answer and the
/// final status.
async fn raw_stream(
    addr: std::net::SocketAddr,
    body: Vec<u8>,
) -> (Vec<pb::AppendStreamResponse>, Status) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("a valid uri")
        .connect()
        .await
        .expect("connect");
    let request = http::Request::builder()
        .method("POST")
        .uri("/causeway.v1.EventStoreService/AppendStream")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(axum::body::Body::from(body)))
        .expect("a request");
    let mut channel = channel;
    std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx))
        .await
        .expect("the channel is ready");
    let response = tower::Service::call(&mut channel, request)
        .await
        .expect("an HTTP response");
    if let Some(status) = Status::from_header_map(response.headers()) {
        return (Vec::new(), status);
    }
    let (messages, status) = read_grpc_body(response.into_body()).await;
    let answers = messages
        .into_iter()
        .map(|message| pb::AppendStreamResponse::decode(message).expect("an answer decodes"))
        .collect();
    (answers, status)
}

/// The client library's `AppendStream`, used as its documentation shows: a window of appends in
/// flight, answers taken in order, a conflict answered as `Error::Conflict` while the stream
/// goes on, and the rest drained after `close`. Catches answers matched to the wrong appends
/// and a refusal mapped to another error than `Client::append` gives.
#[tokio::test]
async fn the_client_librarys_append_stream_keeps_a_window_and_maps_refusals() {
    use causeway_client::{AppendBuilder, Error, EventBuilder, Expected};
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let client = causeway_client::Client::connect(&node.addr.to_string())
        .await
        .expect("connect");
    let mut stream = client.append_stream().await.expect("the stream opens");
    let (n_appends, window, conflict_idx) = (100u64, 10, 50u64);
    let mut answers = Vec::new();
    for idx in 0..n_appends {
        let event = EventBuilder::new("acme", "meter-1", "Reading");
        let expected = if idx == conflict_idx {
            Expected::Exact(idx + 7)
        } else {
            Expected::Any
        };
        let append = AppendBuilder::new()
            .event(event)
            .expect("acme", "meter-1", expected);
        stream.send(append).await.expect("sent");
        if stream.unanswered() == window {
            answers.push(
                stream
                    .answer()
                    .await
                    .expect("the stream holds")
                    .expect("one"),
            );
        }
    }
    stream.close();
    while let Some(answer) = stream.answer().await.expect("the stream holds") {
        answers.push(answer);
    }
    assert_eq!(answers.len() as u64, n_appends);
    let mut positions = Vec::new();
    for (idx, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(receipt) => positions.push(receipt.events[0].position),
            Err(Error::Conflict { actual, .. }) if idx as u64 == conflict_idx => {
                assert_eq!(actual, conflict_idx.to_string(), "the version before it");
            }
            Err(err) => panic!("append {idx}: {err:?}"),
        }
    }
    assert_eq!(positions, (1..n_appends).collect::<Vec<u64>>());
}
