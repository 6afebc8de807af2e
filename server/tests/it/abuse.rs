//! Abuse that needs no credentials: a client that opens and resets streams in a loop, a
//! subscriber that never reads, and requests that hold more bytes than the server budgets.
//! Each is bounded by the server (`docs/LIMITS.md`, "Abuse"), and the bound is checked through
//! the metrics the server exports, never by how long something took.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tonic::Code;
use tonic_types::StatusExt;

use crate::harness::{Node, append_of, connect, event, head, http_get, pb, scratch};

/// How long any one call may take before the test calls it a hang (not a performance bound).
const CALL_WAIT: Duration = Duration::from_secs(20);
/// `SUBSCRIBE_BUFFER_BYTES_MAX` in `server/src/limits.rs`.
const SUBSCRIBE_BUFFER_BYTES_MAX: f64 = 8.0 * 1024.0 * 1024.0;
/// `RETRY_AFTER_OVERLOAD` in `server/src/limits.rs`.
const RETRY_AFTER_OVERLOAD: Duration = Duration::from_millis(100);

/// One sample of a metric without labels from the node's `/metrics`; 0 when it is absent.
fn sample(node: &Node, name: &str) -> f64 {
    let admin = node.admin.expect("the node has an admin port");
    let (status, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "{body}");
    let samples: HashMap<&str, f64> = body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series, value.parse().ok()?)))
        .collect();
    samples.get(name).copied().unwrap_or(0.0)
}

/// Polls `name` until `done` holds for it, at most `CALL_WAIT`; returns the last sample.
async fn wait_for_metric(node: &Node, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + CALL_WAIT;
    loop {
        let value = sample(node, name);
        if done(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A raw HTTP/2 connection (no gRPC client in between), to send what a well-behaved client
/// never would.
async fn raw_connection(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to causewayd");
    let (send, connection) = h2::client::handshake(tcp)
        .await
        .expect("an HTTP/2 handshake");
    tokio::spawn(async move {
        // The server may close an abusive connection; that ends this task, nothing more.
        let _ = connection.await;
    });
    send
}

/// The headers of a gRPC `Append` call.
fn append_call() -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri("http://causeway/causeway.v1.EventStoreService/Append")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request")
}

/// A client that opens streams and resets them at once, in a loop ("rapid reset",
/// CVE-2023-44487), does not stop other clients from being served: every append of a second
/// client is acknowledged while it runs, and the server answers afterwards. Catches a server
/// without a bound on streams reset before it accepted them, which spends itself on streams
/// that no longer exist.
#[tokio::test]
async fn rapid_reset_does_not_starve_other_clients() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let addr = node.addr;
    let abuser = tokio::spawn(async move {
        let mut n_resets = 0u64;
        // A new connection whenever the server sends one away (GOAWAY), as an attacker would.
        'connections: for _ in 0..20 {
            let mut send = raw_connection(addr).await;
            for _ in 0..5_000 {
                send = match send.ready().await {
                    Ok(send) => send,
                    Err(_) => continue 'connections,
                };
                let Ok((_response, mut stream)) = send.send_request(append_call(), false) else {
                    continue 'connections;
                };
                stream.send_reset(h2::Reason::CANCEL);
                n_resets += 1;
            }
        }
        n_resets
    });
    let mut client = connect(node.addr).await;
    let n_appends = 50u64;
    for append_idx in 0..n_appends {
        let request = append_of(vec![event("acme", &format!("calm-{append_idx}"), "Calm")]);
        tokio::time::timeout(CALL_WAIT, client.append(request))
            .await
            .expect("an append is answered while streams are reset")
            .expect("and acknowledged");
    }
    let n_resets = abuser.await.expect("the abusing task runs");
    assert!(n_resets > 0, "the abusing client reset no stream");
    let mut fresh = connect(node.addr).await;
    assert_eq!(head(&mut fresh).await, n_appends);
}

/// A subscriber that never reads its stream holds at most `SUBSCRIBE_BUFFER_BYTES_MAX` of
/// queued messages on the server, however much is written: the buffered bytes the server
/// reports fill up to the bound and stay under it. Catches a buffer bounded only in messages,
/// where 16 messages of up to 29 MiB each could wait for one stalled subscriber.
#[tokio::test]
async fn a_subscriber_that_never_reads_holds_at_most_its_buffer() {
    let dir = scratch();
    let node = Node::start(&dir.path().join("data"), &[]);
    let mut stalled = connect(node.addr).await;
    let stream = stalled
        .subscribe(pb::SubscribeRequest {
            filter: None,
            start: Some(pb::subscribe_request::Start::FromPosition(1)),
        })
        .await
        .expect("the subscription starts")
        .into_inner();
    let mut writer = connect(node.addr).await;
    let n_appends = 64u64;
    let n_events_per_append = 4u64;
    for append_idx in 0..n_appends {
        let events = (0..n_events_per_append)
            .map(|event_idx| pb::NewEvent {
                payload: vec![b'x'; 256 * 1024],
                ..event("acme", &format!("big-{append_idx}-{event_idx}"), "Big")
            })
            .collect();
        writer
            .append(append_of(events))
            .await
            .expect("the append succeeds");
    }
    assert_eq!(head(&mut writer).await, n_appends * n_events_per_append);
    // 64 MiB written and none of it read: the buffer fills, then stays within its bound.
    let filled = wait_for_metric(&node, "causeway_subscription_buffered_bytes", |bytes| {
        bytes >= 1024.0 * 1024.0
    })
    .await;
    let mut most = filled;
    for _ in 0..20 {
        let buffered = sample(&node, "causeway_subscription_buffered_bytes");
        assert!(
            buffered <= SUBSCRIBE_BUFFER_BYTES_MAX,
            "{buffered} bytes buffered for one subscriber, over {SUBSCRIBE_BUFFER_BYTES_MAX}"
        );
        most = most.max(buffered);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most <= SUBSCRIBE_BUFFER_BYTES_MAX, "{most}");
    assert_eq!(sample(&node, "causeway_subscriptions"), 1.0);
    drop(stream);
    // The subscriber gone, its buffer is given back.
    wait_for_metric(&node, "causeway_subscription_buffered_bytes", |bytes| {
        bytes == 0.0
    })
    .await;
}

/// With a budget of 1 MiB of requests in flight, a request that holds 900 KiB while it
/// arrives slowly leaves no room for a 300 KiB append: it is refused with RESOURCE_EXHAUSTED,
/// reason OVERLOADED, naming `max_in_flight_request_bytes`, with a RetryInfo. Once the slow
/// request is gone the same append succeeds. Catches requests whose bytes are held without
/// a bound across calls and connections.
#[tokio::test]
async fn the_request_budget_refuses_past_it_with_retry_info() {
    let dir = scratch();
    let node = Node::start(
        &dir.path().join("data"),
        &["--max-in-flight-request-bytes", "1048576"],
    );
    // A message that says it is 1,000 KiB long (within the budget), of which 900 KiB arrive
    // and the rest never does.
    let mut send = raw_connection(node.addr)
        .await
        .ready()
        .await
        .expect("the connection is ready");
    let (_response, mut slow) = send
        .send_request(append_call(), false)
        .expect("the stream opens");
    let mut partial = vec![0u8];
    partial.extend_from_slice(&(1000u32 * 1024).to_be_bytes());
    partial.extend(std::iter::repeat_n(0u8, 900 * 1024));
    slow.send_data(Bytes::from(partial), false)
        .expect("the frames are queued");
    wait_for_metric(&node, "causeway_request_bytes_in_flight", |bytes| {
        bytes >= 900.0 * 1024.0
    })
    .await;

    let mut client = connect(node.addr).await;
    let request = append_of(vec![pb::NewEvent {
        payload: vec![b'x'; 300 * 1024],
        ..event("acme", "after-the-budget", "Budgeted")
    }]);
    let refused = tokio::time::timeout(CALL_WAIT, client.append(request.clone()))
        .await
        .expect("the refusal comes at once")
        .expect_err("no room in the budget");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let info = refused.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "OVERLOADED");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("max_in_flight_request_bytes")
    );
    let retry = refused.get_details_retry_info().expect("a RetryInfo");
    assert_eq!(retry.retry_delay, Some(RETRY_AFTER_OVERLOAD));
    assert!(sample(&node, "causeway_request_budget_refusals_total") >= 1.0);

    // The slow request cancelled, its bytes come back and the append fits.
    slow.send_reset(h2::Reason::CANCEL);
    wait_for_metric(&node, "causeway_request_bytes_in_flight", |bytes| {
        bytes == 0.0
    })
    .await;
    tokio::time::timeout(CALL_WAIT, client.append(request))
        .await
        .expect("answered")
        .expect("acknowledged once the budget has room");
    assert_eq!(head(&mut client).await, 1);
}

/// With a budget of 1 MiB of requests in flight and nothing else in flight, a 2 MiB append can
/// never fit: it is refused at once with RESOURCE_EXHAUSTED, reason LIMIT_EXCEEDED, naming
/// `max_in_flight_request_bytes`, its message giving the request's size and the budget, and
/// without a RetryInfo; an append within the budget is still acknowledged. Catches a refusal
/// that tells a client to retry a request that cannot ever succeed.
#[tokio::test]
async fn a_request_larger_than_the_whole_budget_is_not_retryable() {
    let dir = scratch();
    let node = Node::start(
        &dir.path().join("data"),
        &["--max-in-flight-request-bytes", "1048576"],
    );
    let mut client = connect(node.addr).await;
    let request = append_of(vec![pb::NewEvent {
        payload: vec![b'x'; 2 * 1024 * 1024],
        ..event("acme", "too-large", "Budgeted")
    }]);
    let refused = tokio::time::timeout(CALL_WAIT, client.append(request))
        .await
        .expect("the refusal comes at once")
        .expect_err("larger than the whole budget");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let info = refused.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, "LIMIT_EXCEEDED");
    assert_eq!(
        info.metadata.get("limit").map(String::as_str),
        Some("max_in_flight_request_bytes")
    );
    assert!(
        refused.get_details_retry_info().is_none(),
        "no RetryInfo: {refused:?}"
    );
    let request_bytes: usize = info.metadata["actual"].parse().expect("a size");
    assert!(request_bytes > 2 * 1024 * 1024, "{info:?}");
    assert!(
        refused
            .message()
            .contains(&format!("{request_bytes} bytes"))
            && refused.message().contains("1048576 bytes"),
        "{refused:?}"
    );

    let fits = append_of(vec![pb::NewEvent {
        payload: vec![b'x'; 300 * 1024],
        ..event("acme", "fits", "Budgeted")
    }]);
    tokio::time::timeout(CALL_WAIT, client.append(fits))
        .await
        .expect("answered")
        .expect("an append within the budget is acknowledged");
    assert_eq!(head(&mut client).await, 1);
}
