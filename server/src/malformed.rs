//! Requests that never reach a handler because tonic could not decode them, answered as
//! gRPC's conventions say rather than as tonic does: a tower layer around every service.
//!
//! tonic reads a request's frames and decodes its message before the handler runs, and answers
//! what it cannot decode itself: a protobuf it cannot parse (cut short, a wrong wire type, a
//! string that is not UTF-8) and a body it cannot decompress are INTERNAL, a message over the
//! size limit is OUT_OF_RANGE. Those are the client's faults, not the server's: this layer
//! turns them into INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the field (the path
//! prost reports, such as `events.scope`, or `request` for the message as a whole), and a
//! message over a limit into RESOURCE_EXHAUSTED with an `ErrorInfo` (reason `LIMIT_EXCEEDED`).
//! The observe layer, outside this one, then logs them as refused requests, not as failures.
//!
//! A call to a service or method this server does not serve is UNIMPLEMENTED from tonic with an
//! empty message; the layer names the path, and for the cluster's services on a single node
//! says why they are absent.
//!
//! These refusals end the call before any message, so their status is in the response's
//! headers (a trailers-only response). tonic's own texts are recognised by their opening
//! words, which no status of a handler's own begins with (a client-streaming handler that
//! passes on tonic's error for a later message is restated too, as it should be); the
//! integration tests send each kind of malformed request, so a tonic upgrade that rewords one
//! is noticed.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use tonic::{Code, Status};

use crate::status::{Error, REASON_LIMIT_EXCEEDED, to_status, with_info};

/// The BadRequest field of a fault in the request as a whole (its framing, its compression,
/// a message cut short before any field).
pub const WHOLE_REQUEST: &str = "request";
/// Characters of a decompressor's or decoder's own description, or of an unknown path, a
/// message repeats.
const DETAIL_CHARS_MAX: usize = 120;

/// The services only a cluster member serves, by their paths' prefix.
const CLUSTER_SERVICES: [&str; 2] = [
    "/causeway.v1.ClusterService/",
    "/causeway.cluster.v1.RaftService/",
];

/// The layer: wrap a service in [`Malformed`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MalformedLayer {
    /// Whether this node is a cluster member (serves `ClusterService` and `RaftService`).
    pub clustered: bool,
}

impl<S> tower::Layer<S> for MalformedLayer {
    type Service = Malformed<S>;

    fn layer(&self, inner: S) -> Malformed<S> {
        Malformed {
            inner,
            clustered: self.clustered,
        }
    }
}

/// A service whose undecodable requests are answered INVALID_ARGUMENT or RESOURCE_EXHAUSTED,
/// and whose unknown paths are named.
#[derive(Clone, Debug)]
pub struct Malformed<S> {
    inner: S,
    clustered: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Body, ResBody> tower::Service<Request<Body>> for Malformed<S>
where
    S: tower::Service<Request<Body>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // A shared handle on the request's bytes, not a copy of the path.
        let uri = request.uri().clone();
        let clustered = self.clustered;
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some(status) = Status::from_header_map(response.headers()).and_then(|status| {
                restate(status.code(), status.message())
                    .or_else(|| unknown_path(&status, uri.path(), clustered))
            }) {
                replace_status(response.headers_mut(), &status);
            }
            Ok(response)
        })
    }
}

/// The status a client should see for one tonic produced while decoding a request; `None`
/// for every other status, which is left as it is.
pub fn restate(code: Code, message: &str) -> Option<Status> {
    const DECODE: &str = "failed to decode Protobuf message: ";
    const TOO_LARGE: &str = "Error, decoded message length too large";
    const INFLATED_TOO_LARGE: &str = "Error decompressing: size limit";
    const DECOMPRESS: &str = "Error decompressing: ";
    const FLAG: &str = "protocol error: received message with";
    match code {
        Code::Internal if message.starts_with(DECODE) => {
            let (field, detail) = decode_fault(&message[DECODE.len()..]);
            Some(invalid(
                &field,
                format!("the request message does not decode: {}", cut(detail)),
            ))
        }
        Code::Internal if message.starts_with(DECOMPRESS) => {
            let detail = message[DECOMPRESS.len()..].trim_end_matches(", while sending request");
            Some(invalid(
                WHOLE_REQUEST,
                format!("the request message does not decompress: {}", cut(detail)),
            ))
        }
        Code::Internal if message.starts_with(FLAG) => Some(invalid(
            WHOLE_REQUEST,
            "the request message's compressed flag is not 0 or 1, or is 1 without a \
             grpc-encoding"
                .to_string(),
        )),
        Code::Internal if message == "Unexpected EOF decoding stream." => Some(invalid(
            WHOLE_REQUEST,
            "the request ends inside a message (its frame is cut short)".to_string(),
        )),
        Code::Internal if message == "Missing request message." => Some(invalid(
            WHOLE_REQUEST,
            "the request holds no message".to_string(),
        )),
        Code::OutOfRange if message.starts_with(TOO_LARGE) => {
            let (found, limit) = numbers(message);
            Some(too_large(
                format!("the request message is {found} bytes, over the limit of {limit} bytes"),
                limit,
            ))
        }
        Code::ResourceExhausted if message.starts_with(INFLATED_TOO_LARGE) => {
            let (limit, _) = numbers(message);
            Some(too_large(
                format!("the request message decompresses to more than the limit of {limit} bytes"),
                limit,
            ))
        }
        _ => None,
    }
}

/// tonic's UNIMPLEMENTED for a path no service answers, which carries no message, with one
/// that names the path; `None` for every other status.
fn unknown_path(status: &Status, path: &str, clustered: bool) -> Option<Status> {
    if status.code() != Code::Unimplemented || !status.message().is_empty() {
        return None;
    }
    let shown = cut(path);
    let message = match CLUSTER_SERVICES
        .iter()
        .find(|prefix| path.starts_with(*prefix))
    {
        Some(prefix) if !clustered => format!(
            "{shown}: this server runs as a single node (started without a node id), so it \
             serves no {}",
            prefix.trim_matches('/')
        ),
        _ => format!("{shown}: this server has no such service or method"),
    };
    Some(Status::unimplemented(message))
}

fn invalid(field: &str, reason: String) -> Status {
    to_status(Error::invalid(field, reason))
}

fn too_large(message: String, limit: u64) -> Status {
    with_info(
        Code::ResourceExhausted,
        message,
        REASON_LIMIT_EXCEEDED,
        HashMap::from([
            ("limit".to_string(), "MESSAGE_BYTES_MAX".to_string()),
            ("max".to_string(), limit.to_string()),
        ]),
    )
}

/// Splits prost's description (`NewEvent.scope: AppendRequest.events: invalid string value:
/// data is not UTF-8 encoded`: the innermost field first) into the field's path in the request
/// (`events.scope`) and what was wrong.
fn decode_fault(description: &str) -> (String, &str) {
    let mut fields = Vec::new();
    let mut rest = description;
    while let Some((step, after)) = rest.split_once(": ") {
        let Some((message, field)) = step.split_once('.') else {
            break;
        };
        let is_name = |text: &str| {
            !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !is_name(message) || !is_name(field) {
            break;
        }
        fields.push(field);
        rest = after;
    }
    if fields.is_empty() {
        return (WHOLE_REQUEST.to_string(), rest);
    }
    fields.reverse();
    (fields.join("."), rest)
}

/// The first two numbers in tonic's size-limit messages (found and limit, or only the limit);
/// 0 for one that is missing.
fn numbers(message: &str) -> (u64, u64) {
    let mut numbers = message
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.parse::<u64>().ok());
    let first = numbers.next().unwrap_or(0);
    let second = numbers.next().unwrap_or(first);
    (first, second)
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(DETAIL_CHARS_MAX) {
        None => text.to_string(),
        Some((end, _)) => format!("{}...", &text[..end]),
    }
}

/// Puts `status` in place of the status a trailers-only response carried.
fn replace_status(headers: &mut HeaderMap, status: &Status) {
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        headers.remove(name);
    }
    if let Err(err) = status.add_header(headers) {
        // Only a message that cannot be a header fails here, and these are plain ASCII.
        tracing::warn!(%err, "a malformed request's status could not be restated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn a_decode_error_names_the_field_prost_names() {
        let status = restate(
            Code::Internal,
            "failed to decode Protobuf message: NewEvent.scope: AppendRequest.events: \
             invalid string value: data is not UTF-8 encoded",
        )
        .expect("restated");
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status.get_details_bad_request().expect("a BadRequest");
        assert_eq!(bad_request.field_violations[0].field, "events.scope");
        assert!(status.message().contains("not UTF-8"), "{status:?}");
    }

    #[test]
    fn a_message_cut_short_is_the_whole_request() {
        let status = restate(
            Code::Internal,
            "failed to decode Protobuf message: buffer underflow",
        )
        .expect("restated");
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad_request = status.get_details_bad_request().expect("a BadRequest");
        assert_eq!(bad_request.field_violations[0].field, WHOLE_REQUEST);
    }

    #[test]
    fn an_oversized_message_is_resource_exhausted() {
        let status = restate(
            Code::OutOfRange,
            "Error, decoded message length too large: found 20971521 bytes, the limit is: \
             20971520 bytes",
        )
        .expect("restated");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("20971521"), "{status:?}");
        assert!(status.message().contains("20971520"), "{status:?}");
    }

    #[test]
    fn an_unknown_path_is_named() {
        let tonic = Status::unimplemented("");
        let cluster = "/causeway.v1.ClusterService/Status";
        let single = unknown_path(&tonic, cluster, false).expect("restated");
        assert_eq!(single.code(), Code::Unimplemented);
        assert!(single.message().contains("single node"), "{single:?}");
        assert!(single.message().starts_with(cluster), "{single:?}");
        let member = unknown_path(&tonic, cluster, true).expect("restated");
        assert!(
            member.message().contains("no such service or method"),
            "{member:?}"
        );
        let other = unknown_path(&tonic, "/x.Y/Z", false).expect("restated");
        assert!(other.message().starts_with("/x.Y/Z: "), "{other:?}");
        // A handler's own UNIMPLEMENTED keeps its words.
        let own = Status::unimplemented("compression gzip is not supported");
        assert!(unknown_path(&own, cluster, false).is_none());
    }

    #[test]
    fn handler_statuses_are_left_alone() {
        assert!(restate(Code::Internal, "the request failed on a server bug").is_none());
        assert!(restate(Code::OutOfRange, "anything").is_none());
        assert!(
            restate(
                Code::InvalidArgument,
                "failed to decode Protobuf message: x"
            )
            .is_none()
        );
    }
}
