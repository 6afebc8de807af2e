//! The global budget of request bytes in flight: a tower layer around the gRPC server.
//!
//! Every call's request body is counted as its frames arrive, against one semaphore of bytes
//! shared by every connection (`--max-in-flight-request-bytes`). The bytes stay counted while
//! the call is handled: until its handler has answered (a unary call's whole life, a stream's
//! start) and its request body is gone, whichever is later.
//!
//! A streamed call (`AppendStream`) is counted message by message instead: its body follows
//! the gRPC framing, and each message that arrives whole is handed to the handler
//! ([`StreamBytes::take_message`]), which holds its bytes while it keeps the message (until
//! the append is answered). A stream's frame that does not fit beside the other calls' bytes
//! waits for room instead of failing the stream, so the stream stops reading while its own
//! pending appends, answered, give theirs back; a frame or message larger than the whole
//! budget is refused as a unary request would be.
//!
//! For every other call, a frame that does not fit ends the call with RESOURCE_EXHAUSTED
//! (reason `OVERLOADED`, limit `max_in_flight_request_bytes`) and a `RetryInfo` of
//! `RETRY_AFTER_OVERLOAD`, at once: such a client never waits on the budget, and the bytes it
//! had taken are given back.
//!
//! A request larger than the whole budget can never fit, however long it waits: it is refused
//! with RESOURCE_EXHAUSTED, reason `LIMIT_EXCEEDED`, and no `RetryInfo`, its message giving
//! the request's size and the budget. Its size is known from the length prefix of its first
//! gRPC message (5 + the length it declares) as soon as that arrives, or from the bytes the
//! call has sent so far, whichever is larger; so a 20 MiB request to a 1 MiB budget is
//! refused at its first frame, not after a retry loop that cannot end.
//!
//! Without it, the bounds on one request (`MESSAGE_BYTES_MAX`) and on connections and streams
//! multiply: 4,096 connections of 256 streams, each sending 20 MiB slowly, ask for terabytes.
//! With it, the request messages the server holds are at most the budget, plus the frames of
//! the calls refused as they arrive.
//!
//! What is counted is the bytes on the wire: the gRPC frames of the message, which equal its
//! decoded protobuf size (plus 5 bytes) unless the client compressed it. The decompressed copy
//! of a compressed request is not counted here; it is bounded per call by `MESSAGE_BYTES_MAX`.
//! The node-to-node `RaftService` is not counted: a client flood must not starve replication,
//! and its traffic comes only from peers (mutual TLS names them) that openraft paces.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;

use crate::status::{Error, to_status};

/// The path prefix of the node-to-node service, which the budget leaves out.
const UNCOUNTED_PREFIX: &str = "/causeway.cluster.v1.RaftService/";
/// The calls whose request is a stream of messages: each message's bytes are given back once
/// it has arrived whole, and the handler holds what it keeps ([`RequestBudget::hold`]).
const STREAMED_PATHS: [&str; 1] = ["/causeway.v1.EventStoreService/AppendStream"];

/// The budget every connection shares.
#[derive(Clone, Debug)]
pub struct RequestBudget {
    bytes: Arc<Semaphore>,
    max: usize,
}

impl RequestBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> RequestBudget {
        RequestBudget {
            bytes: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Bytes of requests counted now.
    pub fn in_flight(&self) -> usize {
        self.max - self.bytes.available_permits()
    }

    /// The configured budget.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// The bytes of a streamed call's messages that have arrived whole, for its handler to hold
/// while it keeps each one (an append stream: until the append is answered). Found in the
/// request's extensions.
#[derive(Clone, Debug)]
pub struct StreamBytes(Arc<Held>);

impl StreamBytes {
    /// Holds the bytes of the oldest message that arrived whole and was not taken yet (the one
    /// the handler just decoded): counted until the guard is dropped.
    pub fn take_message(&self) -> MessageBytes {
        let n_bytes = self
            .0
            .messages
            .lock()
            .expect("the message sizes' lock")
            .pop_front()
            .unwrap_or(0);
        MessageBytes {
            held: self.0.clone(),
            n_bytes,
        }
    }
}

/// One message's bytes, counted in the budget until dropped.
#[derive(Debug)]
pub struct MessageBytes {
    held: Arc<Held>,
    n_bytes: usize,
}

impl Drop for MessageBytes {
    fn drop(&mut self) {
        self.held.give(self.n_bytes);
    }
}

/// The bytes one call holds, given back when the last of its holders (the request body and the
/// response future) is dropped.
#[derive(Debug)]
struct Held {
    budget: RequestBudget,
    bytes: AtomicUsize,
    /// For a streamed call: the sizes of the messages that arrived whole and that its handler
    /// has not taken yet ([`StreamBytes::take_message`]).
    messages: std::sync::Mutex<std::collections::VecDeque<usize>>,
}

/// The gRPC length prefix of a message: a compressed flag and a big-endian 32-bit length.
const GRPC_PREFIX_BYTES: usize = 5;

/// The bytes of the message whose frame begins with `data` (its prefix and its body), when the
/// prefix is whole.
fn declared_bytes(data: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = data.get(1..GRPC_PREFIX_BYTES)?.try_into().ok()?;
    Some(GRPC_PREFIX_BYTES + u32::from_be_bytes(prefix) as usize)
}

impl Held {
    /// Counts `n_bytes` more, or refuses the call: as too large when the call's bytes (those
    /// held, these, or the `declared` size of its message) exceed the whole budget, as
    /// overloaded when they only do not fit beside the other calls'.
    fn take(&self, n_bytes: usize, declared: Option<usize>) -> Result<(), Status> {
        self.check_size(n_bytes, declared)?;
        self.try_take(n_bytes)
    }

    /// Refuses the call as too large when its bytes (those held, `n_bytes` more, or the
    /// `declared` size of its message) exceed the whole budget.
    fn check_size(&self, n_bytes: usize, declared: Option<usize>) -> Result<(), Status> {
        let held = self.bytes.load(Ordering::Relaxed);
        self.check_fits(held.saturating_add(n_bytes).max(declared.unwrap_or(0)))
    }

    /// Refuses the call as too large when `request_bytes` exceed the whole budget. For a
    /// streamed call these are one frame's or one message's, not the stream's.
    fn check_fits(&self, request_bytes: usize) -> Result<(), Status> {
        let max = self.budget.max;
        if request_bytes > max {
            metrics::counter!("causeway_request_budget_refusals_total").increment(1);
            return Err(to_status(Error::RequestLargerThanBudget {
                request_bytes,
                max,
            }));
        }
        Ok(())
    }

    /// Counts `n_bytes` more if they fit beside the other calls' now, or refuses the call as
    /// overloaded.
    fn try_take(&self, n_bytes: usize) -> Result<(), Status> {
        let max = self.budget.max;
        let refused = || {
            metrics::counter!("causeway_request_budget_refusals_total").increment(1);
            to_status(Error::RequestBytesFull { max })
        };
        let n_permits = u32::try_from(n_bytes).map_err(|_| refused())?;
        let permit = self
            .budget
            .bytes
            .try_acquire_many(n_permits)
            .map_err(|_| refused())?;
        permit.forget();
        self.counted(n_bytes);
        Ok(())
    }

    /// Counts `n_bytes` whose permits were taken.
    fn counted(&self, n_bytes: usize) {
        self.bytes.fetch_add(n_bytes, Ordering::Relaxed);
        metrics::gauge!("causeway_request_bytes_in_flight").increment(n_bytes as f64);
    }

    /// Records the sizes of messages that arrived whole, for the handler to take in order.
    fn completed(&self, sizes: Vec<usize>) {
        if !sizes.is_empty() {
            self.messages
                .lock()
                .expect("the message sizes' lock")
                .extend(sizes);
        }
    }

    /// Gives back `n_bytes` of those counted.
    fn give(&self, n_bytes: usize) {
        if n_bytes > 0 {
            self.bytes.fetch_sub(n_bytes, Ordering::Relaxed);
            metrics::gauge!("causeway_request_bytes_in_flight").decrement(n_bytes as f64);
            self.budget.bytes.add_permits(n_bytes);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let n_bytes = *self.bytes.get_mut();
        if n_bytes > 0 {
            metrics::gauge!("causeway_request_bytes_in_flight").decrement(n_bytes as f64);
        }
        self.budget.bytes.add_permits(n_bytes);
    }
}

/// The layer: wrap a service in [`Budgeted`].
#[derive(Clone, Debug)]
pub struct BudgetLayer {
    budget: RequestBudget,
}

impl BudgetLayer {
    /// Counts every call against `budget`.
    pub fn new(budget: RequestBudget) -> BudgetLayer {
        BudgetLayer { budget }
    }
}

impl<S> tower::Layer<S> for BudgetLayer {
    type Service = Budgeted<S>;

    fn layer(&self, inner: S) -> Budgeted<S> {
        Budgeted {
            inner,
            budget: self.budget.clone(),
        }
    }
}

/// A service whose requests' bytes count against the budget.
#[derive(Clone, Debug)]
pub struct Budgeted<S> {
    inner: S,
    budget: RequestBudget,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> tower::Service<Request<Body>> for Budgeted<S>
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
        if request.uri().path().starts_with(UNCOUNTED_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        let held = Arc::new(Held {
            budget: self.budget.clone(),
            bytes: AtomicUsize::new(0),
            messages: Default::default(),
        });
        let streamed = STREAMED_PATHS.contains(&request.uri().path());
        let mut request = request.map(|body| {
            Body::new(Counted {
                inner: body,
                held: held.clone(),
                first: true,
                framing: streamed.then(Framing::default),
                waiting: None,
            })
        });
        if streamed {
            request.extensions_mut().insert(StreamBytes(held.clone()));
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(held);
            response
        })
    }
}

/// A request body that counts its data frames against the call's [`Held`] bytes.
struct Counted {
    inner: Body,
    held: Arc<Held>,
    /// No data frame has arrived yet: the next one begins the first message.
    first: bool,
    /// For a streamed call: where its body is in the gRPC framing, to hand each message's
    /// bytes to the handler once it is whole.
    framing: Option<Framing>,
    /// For a streamed call: a frame that did not fit beside the other calls' bytes, with its
    /// size and the messages it completes, waiting for room.
    waiting: Option<Waiting>,
}

/// A streamed call's frame waiting for room in the budget.
struct Waiting {
    frame: Frame<Bytes>,
    n_bytes: usize,
    completed: Vec<usize>,
    room: Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>,
}

/// Where a stream of gRPC messages is in its framing.
#[derive(Debug, Default)]
struct Framing {
    /// The prefix of the current message, as far as it has arrived.
    prefix: [u8; GRPC_PREFIX_BYTES],
    prefix_len: usize,
    /// Bytes of the current message's body still to come, once its prefix is whole.
    body_left: usize,
}

impl Framing {
    /// Follows `data` through the framing. Gives the bytes of each message it completed (prefix
    /// and body), and the size of the largest message whose prefix it completed.
    fn feed(&mut self, mut data: &[u8]) -> (Vec<usize>, Option<usize>) {
        let mut completed = Vec::new();
        let mut declared: Option<usize> = None;
        while !data.is_empty() {
            if self.prefix_len < GRPC_PREFIX_BYTES {
                let n = (GRPC_PREFIX_BYTES - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
                self.prefix_len += n;
                data = &data[n..];
                if self.prefix_len < GRPC_PREFIX_BYTES {
                    break;
                }
                let size = declared_bytes(&self.prefix).expect("a whole prefix");
                declared = declared.max(Some(size));
                self.body_left = size - GRPC_PREFIX_BYTES;
            }
            let n = self.body_left.min(data.len());
            self.body_left -= n;
            data = &data[n..];
            if self.body_left == 0 {
                completed.push(
                    GRPC_PREFIX_BYTES
                        + u32::from_be_bytes(self.prefix[1..].try_into().expect("4 bytes"))
                            as usize,
                );
                self.prefix_len = 0;
            }
        }
        (completed, declared)
    }

    /// Whether a message has begun and not ended.
    fn inside_message(&self) -> bool {
        self.prefix_len > 0
    }
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(waiting) = &mut this.waiting {
            let room = ready!(waiting.room.as_mut().poll(cx));
            let Waiting {
                frame,
                n_bytes,
                completed,
                ..
            } = this.waiting.take().expect("a frame waits");
            let Ok(permit) = room else {
                return Poll::Ready(Some(Err(Status::unavailable(
                    "the server is shutting down",
                ))));
            };
            permit.forget();
            this.held.counted(n_bytes);
            this.held.completed(completed);
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            // tonic takes a stream that ends right after a message's prefix for one that ended
            // cleanly, and would drop that message without a word.
            None if this.framing.as_ref().is_some_and(Framing::inside_message) => {
                return Poll::Ready(Some(Err(to_status(Error::invalid(
                    crate::malformed::WHOLE_REQUEST,
                    "the request ends inside a message (its frame is cut short)",
                )))));
            }
            other => return Poll::Ready(other),
        };
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let n_bytes = data.len();
        let Some(framing) = &mut this.framing else {
            // A first frame too short for the whole prefix is rare (h2 sends the prefix with
            // the body); the bytes sent so far still bound the request's size.
            let declared = if this.first {
                declared_bytes(data)
            } else {
                None
            };
            this.first = false;
            if let Err(refused) = this.held.take(n_bytes, declared) {
                return Poll::Ready(Some(Err(refused)));
            }
            return Poll::Ready(Some(Ok(frame)));
        };
        // A streamed call: a frame that does not fit waits for room (the stream's own pending
        // messages free theirs as they are answered), unless it could never fit.
        let (completed, declared) = framing.feed(data);
        if let Err(refused) = this.held.check_fits(n_bytes.max(declared.unwrap_or(0))) {
            return Poll::Ready(Some(Err(refused)));
        }
        if this.held.try_take(n_bytes).is_ok() {
            this.held.completed(completed);
            return Poll::Ready(Some(Ok(frame)));
        }
        let n_permits = u32::try_from(n_bytes).expect("a frame is under 4 GiB");
        this.waiting = Some(Waiting {
            frame,
            n_bytes,
            completed,
            room: Box::pin(this.held.budget.bytes.clone().acquire_many_owned(n_permits)),
        });
        self.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn bytes_are_given_back_when_the_call_ends_and_a_refusal_says_when_to_retry() {
        let budget = RequestBudget::new(100);
        let first = Arc::new(Held {
            budget: budget.clone(),
            bytes: AtomicUsize::new(0),
            messages: Default::default(),
        });
        first.take(60, None).expect("60 of 100 fit");
        first.take(30, None).expect("90 of 100 fit");
        assert_eq!(budget.in_flight(), 90);
        let second = Held {
            budget: budget.clone(),
            bytes: AtomicUsize::new(0),
            messages: Default::default(),
        };
        let refused = second.take(20, None).expect_err("110 of 100 do not fit");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let retry = refused.get_details_retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(crate::limits::RETRY_AFTER_OVERLOAD));
        drop(first);
        assert_eq!(budget.in_flight(), 0);
        second
            .take(100, None)
            .expect("the whole budget is free again");
        drop(second);
        assert_eq!(budget.in_flight(), 0);
    }

    /// Messages of a stream, cut into frames at every possible place (inside a prefix, between
    /// messages, several messages in one frame): each message's bytes are reported once, when
    /// its last byte arrives, and each prefix's size when the prefix is whole.
    #[test]
    fn a_stream_reports_each_message_when_it_is_whole_however_it_is_framed() {
        let sizes = [3usize, 0, 70, 1];
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for size in sizes {
            stream.push(0);
            stream.extend_from_slice(&(size as u32).to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, size));
            ends.push(stream.len());
        }
        for piece in 1..=stream.len() {
            let mut framing = Framing::default();
            let (mut completed, mut at) = (Vec::new(), 0);
            for frame in stream.chunks(piece) {
                let (sizes, declared) = framing.feed(frame);
                at += frame.len();
                for n_bytes in sizes {
                    completed.push((at, n_bytes));
                }
                assert!(
                    declared.is_none_or(|declared| declared <= 75),
                    "{declared:?}"
                );
            }
            let sizes: Vec<usize> = completed.iter().map(|(_, n_bytes)| *n_bytes).collect();
            assert_eq!(sizes, [8, 5, 75, 6], "frames of {piece} bytes");
            assert!(!framing.inside_message(), "frames of {piece} bytes");
            for (at, _) in &completed {
                assert!(
                    ends.iter().any(|end| end <= at && at - end < piece),
                    "frames of {piece}: reported at {at}, messages end at {ends:?}"
                );
            }
        }
    }

    #[test]
    fn a_request_larger_than_the_whole_budget_is_refused_without_retry_info() {
        let budget = RequestBudget::new(100);
        let held = Held {
            budget: budget.clone(),
            bytes: AtomicUsize::new(0),
            messages: Default::default(),
        };
        // A first frame of 10 bytes whose prefix declares a 200-byte message.
        let mut frame = vec![0u8];
        frame.extend_from_slice(&200u32.to_be_bytes());
        frame.extend_from_slice(&[0; 5]);
        let refused = held
            .take(frame.len(), declared_bytes(&frame))
            .expect_err("205 bytes never fit in 100");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.get_details_retry_info().is_none(), "{refused:?}");
        let info = refused.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "LIMIT_EXCEEDED");
        assert_eq!(
            info.metadata.get("limit").map(String::as_str),
            Some("max_in_flight_request_bytes")
        );
        assert!(refused.message().contains("205 bytes"), "{refused:?}");
        assert!(refused.message().contains("100 bytes"), "{refused:?}");
        assert_eq!(budget.in_flight(), 0);

        // Without a prefix, the bytes sent so far tell the same.
        held.take(60, None).expect("60 of 100 fit");
        let refused = held.take(60, None).expect_err("120 never fit in 100");
        assert!(refused.get_details_retry_info().is_none(), "{refused:?}");
    }
}
