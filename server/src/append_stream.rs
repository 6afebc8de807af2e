//! `AppendStream`: many appends over one bidirectional stream.
//!
//! A unary `Append` costs an HTTP/2 stream of its own: request headers, response headers and
//! trailers, a task, and the routing and layers of a call. On a stream each append is one
//! message each way. The store's work is the same: each append is checked and submitted as
//! `Append` submits it (`Service::submit`), and answered once its group is durable.
//!
//! The connection's task drives each stream: polled for the next answer, the stream reads and
//! submits requests until the oldest pending append is answered. So:
//! - requests are submitted in the order they arrive, so appends of one stream reach the log in
//!   that order, and answered in that order (the n-th answer answers the n-th request);
//! - at most [`APPEND_STREAM_PENDING_MAX`] appends are pending (submitted, not yet answered); the
//!   stream reads the next request only below that, so a client that sends faster than the
//!   store commits is held back by HTTP/2 flow control;
//! - a refused append is answered with the status `Append` would have returned, as a
//!   `google.rpc.Status`, and the stream goes on; each append counts against the principal's
//!   `requests_per_sec` as a call would;
//! - when the server admits no more appends at once (`pool_threads + pool_queue`), or the
//!   request budget has no room for the next message, the stream waits instead of refusing:
//!   a refusal in the middle of an in-order pipeline would fail every append after it;
//! - a client that stops reading answers fills the stream's HTTP/2 window; the connection then
//!   stops polling the stream, which stops reading requests, and nothing else waits for it.
//!   Each pending append holds its request's bytes in the request budget until it is answered,
//!   so what a stalled client makes the server keep is bounded there;
//! - the stream ends with an error only when a request cannot be read (it does not decode, or
//!   its frame is refused), when the caller's credentials no longer hold after a policy
//!   reload, or when the server shuts down (UNAVAILABLE); the appends already pending are
//!   answered first. A client that closes its side gets every pending answer, then the end of
//!   the stream.
//!
//! A client that goes away leaves its pending appends to commit, as a unary call's would.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use prost::Message as _;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Status, Streaming};

use crate::auth::{Action, Caller};
use crate::budget::{MessageBytes, StreamBytes};
use crate::convert;
use crate::limits::APPEND_STREAM_PENDING_MAX;
use crate::pb;
use crate::pb::append_stream_response::Answer as Outcome;
use crate::service::{Admission, Answer, Service, check_append};
use crate::status::{Error, to_status};

/// The method's name, in refusals and the audit log.
pub(crate) const METHOD: &str = "AppendStream";

/// The type of an answer, or of the status that ends the stream.
type Item = Result<pb::AppendStreamResponse, Status>;

/// One append stream's answers. The connection's task polls it for the next answer, and that
/// poll also reads and submits requests: no task of its own, so no hand-off between tasks per
/// append. When the connection cannot send (the client does not read), nothing polls it, and
/// no more requests are read.
pub struct AppendStreamStream {
    /// Everything between two answers; `None` once the stream has ended.
    state: Option<Box<State>>,
    /// The step producing the next answer, while one is under way.
    step: Option<Step>,
}

/// The work between two answers: it hands the state back with the answer.
type Step = Pin<Box<dyn Future<Output = (Box<State>, Option<Item>)> + Send>>;

/// What one append stream keeps between answers.
struct State {
    service: Service,
    caller: Caller,
    bytes: Option<StreamBytes>,
    requests: Streaming<pb::AppendStreamRequest>,
    pending: VecDeque<Pending>,
    /// Whether requests are still read: not after the client closed its side, a request failed
    /// or the server began shutting down.
    reading: bool,
    /// Why the stream ends early, sent once every pending append is answered.
    failed: Option<Status>,
    stopping: watch::Receiver<bool>,
}

/// Serves one append stream: its answers, as the connection takes them.
pub fn serve(
    service: Service,
    caller: Caller,
    bytes: Option<StreamBytes>,
    requests: Streaming<pb::AppendStreamRequest>,
) -> AppendStreamStream {
    let stopping = service.stopping();
    AppendStreamStream {
        state: Some(Box::new(State {
            service,
            caller,
            bytes,
            requests,
            pending: VecDeque::with_capacity(APPEND_STREAM_PENDING_MAX),
            reading: true,
            failed: None,
            stopping,
        })),
        step: None,
    }
}

impl Stream for AppendStreamStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        let step = match &mut this.step {
            Some(step) => step,
            None => match this.state.take() {
                Some(state) => this.step.insert(Box::pin(next_answer(state))),
                None => return Poll::Ready(None),
            },
        };
        let (state, item) = ready!(step.as_mut().poll(cx));
        this.step = None;
        if item.is_some() {
            this.state = Some(state);
        }
        Poll::Ready(item)
    }
}

/// An append of the stream that was submitted (or refused) and awaits its turn to be answered.
struct Pending {
    n_events: u64,
    answer: Result<Answer, Status>,
    /// The request's bytes, counted in the request budget until it is answered.
    _held: Option<MessageBytes>,
}

/// Reads and submits requests until the oldest pending append is answered, and gives its
/// answer; or the status that ends the stream; or `None` at its end.
async fn next_answer(mut state: Box<State>) -> (Box<State>, Option<Item>) {
    let state_ref = &mut *state;
    loop {
        let may_read = state_ref.reading && state_ref.pending.len() < APPEND_STREAM_PENDING_MAX;
        let oldest = async {
            match state_ref.pending.front_mut() {
                Some(Pending {
                    answer: Ok(answer), ..
                }) => Some(answer.await),
                Some(Pending {
                    answer: Err(status),
                    ..
                }) => Some(Err(status.clone())),
                None => None,
            }
        };
        let stopping = &mut state_ref.stopping;
        tokio::select! {
            // Answers first: they free room for more requests.
            biased;
            Some(result) = oldest => {
                // Dropped with the answer, giving back the request's bytes.
                let done = state_ref.pending.pop_front().expect("the oldest pending append");
                crate::metrics::append_answered(done.n_events, result.as_ref().map(|_| ()));
                let answer = match result {
                    Ok(receipt) => Outcome::Receipt(convert::receipt(receipt)),
                    Err(status) => Outcome::Error(rpc_status(&status)),
                };
                let message = pb::AppendStreamResponse {
                    answer: Some(answer),
                };
                return (state, Some(Ok(message)));
            }
            // At shutdown: no more requests; the pending ones are answered.
            () = async { drop(stopping.wait_for(|stopping| *stopping).await) }, if state_ref.reading => {
                state_ref.failed = Some(to_status(Error::ShuttingDown { resume_from: None }));
                state_ref.reading = false;
            }
            request = state_ref.requests.message(), if may_read => {
                match request {
                    Ok(Some(request)) => {
                        // The request's bytes, held until it is answered.
                        let held = state_ref.bytes.as_ref().map(StreamBytes::take_message);
                        if let Err(status) = state_ref.caller.refresh(METHOD, Action::Append) {
                            state_ref.failed = Some(status);
                            state_ref.reading = false;
                            continue;
                        }
                        let (n_events, answer) =
                            admit(&state_ref.service, &state_ref.caller, request).await;
                        state_ref.pending.push_back(Pending {
                            n_events,
                            answer,
                            _held: held,
                        });
                    }
                    Ok(None) => state_ref.reading = false,
                    Err(status) => {
                        // tonic's decoding faults, restated as the unary calls' are.
                        let restated = crate::malformed::restate(status.code(), status.message());
                        state_ref.failed = Some(restated.unwrap_or(status));
                        state_ref.reading = false;
                    }
                }
            }
            else => break,
        }
    }
    let failed = state.failed.take();
    (state, failed.map(Err))
}

/// Takes one request of the stream: counts it against the principal's rate and submits its
/// append. Gives its events' count and its answer (or refusal).
async fn admit(
    service: &Service,
    caller: &Caller,
    request: pb::AppendStreamRequest,
) -> (u64, Result<Answer, Status>) {
    let Some(append) = request.append else {
        return (
            0,
            Err(to_status(Error::invalid("append", "it is required"))),
        );
    };
    let n_events = append.events.len() as u64;
    if let Err(status) = caller.check_rate(METHOD) {
        return (n_events, Err(status));
    }
    (n_events, submit(service, caller, append).await)
}

/// Checks one append of the stream as `Append` checks it and submits it.
async fn submit(
    service: &Service,
    caller: &Caller,
    append: pb::AppendRequest,
) -> Result<Answer, Status> {
    check_append(caller, METHOD, &append)?;
    let append = convert::append(append, "append.").map_err(to_status)?;
    let append = service.reached(caller.clone(), METHOD, append).await?;
    service.submit(append, true, Admission::Wait, true).await
}

/// A refusal as the `google.rpc.Status` an answer carries: the code, the message and the
/// details a unary call sends in `grpc-status-details-bin`.
fn rpc_status(status: &Status) -> tonic_types::Status {
    let details = tonic_types::Status::decode(status.details())
        .map(|decoded| decoded.details)
        .unwrap_or_default();
    tonic_types::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details,
    }
}
