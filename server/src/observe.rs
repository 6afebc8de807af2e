//! Every gRPC request, measured and, when it fails, logged: a tower layer around the whole
//! server.
//!
//! For each request it counts `causeway_grpc_requests_total{service, method, code}` and records
//! `causeway_grpc_request_duration_seconds{service, method}`, the time to the response's headers (for a
//! unary call, its whole time; for a stream, the time to its start). A request that fails
//! writes one log line (target `causeway::rpc`) with the method, the code, the peer, the
//! duration, the start of the message, and the request id from an `x-request-id` header when
//! the client sent one. The code comes from the `grpc-status` header: a refusal that ends a
//! call before any message carries it there; a stream that fails later ends with trailers this
//! layer does not read, and counts as the OK it started with.
//!
//! Labels stay bounded: an unimplemented path (anything a client can invent) is counted as the
//! service and method `unknown`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use tonic::Code;
use tonic::transport::server::TcpConnectInfo;

use crate::limits::{LOG_MESSAGE_CHARS_MAX, REQUEST_ID_CHARS_MAX};
use crate::metrics::code_name;

/// The layer: wrap a service in [`Observed`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner }
    }
}

/// A service whose requests are measured and whose failures are logged.
#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Body, ResBody> tower::Service<Request<Body>> for Observed<S>
where
    S: tower::Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    Body: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let method = request.uri().path().to_string();
        let peer = request
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr);
        let request_id = request.headers().get("x-request-id").map(|value| {
            cut(
                &String::from_utf8_lossy(value.as_bytes()),
                REQUEST_ID_CHARS_MAX,
            )
        });
        // The service that was polled ready serves this call; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            let elapsed = started.elapsed();
            let code = grpc_code(response.headers());
            let (service, method) = match method.trim_start_matches('/').split_once('/') {
                Some((service, method)) if code != Code::Unimplemented => {
                    (service.to_string(), method.to_string())
                }
                _ => ("unknown".to_string(), "unknown".to_string()),
            };
            metrics::counter!(
                "causeway_grpc_requests_total",
                "service" => service.clone(),
                "method" => method.clone(),
                "code" => code_name(code),
            )
            .increment(1);
            metrics::histogram!(
                "causeway_grpc_request_duration_seconds",
                "service" => service.clone(),
                "method" => method.clone(),
            )
            .record(elapsed);
            if code != Code::Ok {
                log_failure(
                    &service,
                    &method,
                    code,
                    peer,
                    elapsed,
                    request_id.as_deref(),
                    response.headers(),
                );
            }
            Ok(response)
        })
    }
}

/// The code a response's headers carry; OK when they carry none (it comes in the trailers).
fn grpc_code(headers: &HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

fn log_failure(
    service: &str,
    method: &str,
    code: Code,
    peer: Option<std::net::SocketAddr>,
    elapsed: std::time::Duration,
    request_id: Option<&str>,
    headers: &HeaderMap,
) {
    let detail = headers
        .get("grpc-message")
        .map(|value| percent_decode(value.as_bytes()))
        .map(|message| cut(&message, LOG_MESSAGE_CHARS_MAX))
        .unwrap_or_default();
    let duration_ms = elapsed.as_secs_f64() * 1000.0;
    let code = code_name(code);
    let peer = peer.map(|peer| peer.to_string());
    // The server's own trouble is a warning; a client's refused request is information.
    match code {
        "INTERNAL" | "UNAVAILABLE" | "DATA_LOSS" | "UNKNOWN" => tracing::warn!(
            target: "causeway::rpc",
            service, method, code, peer, duration_ms, request_id, detail, "rpc failed"
        ),
        _ => tracing::info!(
            target: "causeway::rpc",
            service, method, code, peer, duration_ms, request_id, detail, "rpc failed"
        ),
    }
}

/// At most `chars_max` characters of `text`, with the length said when it was cut, and control
/// characters escaped (`\n`, `\u{1b}`), so a client's text cannot start a forged log line or
/// drive a terminal.
fn cut(text: &str, chars_max: usize) -> String {
    let n_chars = text.chars().count();
    let kept: String = text
        .chars()
        .take(chars_max)
        .flat_map(|char| {
            let escaped: Vec<char> = if char.is_control() {
                char.escape_default().collect()
            } else {
                vec![char]
            };
            escaped
        })
        .collect();
    if n_chars <= chars_max {
        kept
    } else {
        format!("{kept}... ({n_chars} characters)")
    }
}

/// Decodes the `%XX` escapes gRPC uses in `grpc-message`.
fn percent_decode(bytes: &[u8]) -> String {
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut byte_idx = 0;
    while byte_idx < bytes.len() {
        let byte = bytes[byte_idx];
        if byte == b'%'
            && let Some(hex) = bytes.get(byte_idx + 1..byte_idx + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(value) = u8::from_str_radix(hex, 16)
        {
            decoded.push(value);
            byte_idx += 3;
            continue;
        }
        decoded.push(byte);
        byte_idx += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_decoded_and_cut() {
        assert_eq!(
            percent_decode(b"invalid id: 100%25 bad%20"),
            "invalid id: 100% bad "
        );
        assert_eq!(percent_decode(b"trailing %2"), "trailing %2");
        assert_eq!(cut("abcdef", 3), "abc... (6 characters)");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("a\nb\u{1b}[2J", 10), "a\\nb\\u{1b}[2J");
    }

    #[test]
    fn a_missing_status_is_ok_and_a_present_one_is_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_code(&headers), Code::Ok);
        headers.insert("grpc-status", "9".parse().expect("header value"));
        assert_eq!(grpc_code(&headers), Code::FailedPrecondition);
    }
}
