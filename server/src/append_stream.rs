//! `AppendStream`: many appends over one bidirectional stream.
//!
//! A unary `Append` costs an HTTP/2 stream of its own: request headers, response headers and
//! trailers, a task, and the routing and layers of a call. On a stream each append is one
//! message each way. The store's work is the same: each append is checked and submitted as
//! `Append` submits it ([`Service::submit`]), and answered once its group is durable.
//!
//! One task per stream reads requests and answers them:
//! - requests are submitted in the order they arrive, so appends of one stream reach the log in
//!   that order, and answered in that order (the n-th answer answers the n-th request);
//! - at most [`APPEND_STREAM_PENDING_MAX`] appends are pending (submitted, not yet answered); the
//!   task reads the next request only below that, so a client that sends faster than the
//!   store commits is held back by HTTP/2 flow control;
//! - a refused append is answered with the status `Append` would have returned, as a
//!   `google.rpc.Status`, and the stream goes on;
//! - answers go out through a channel of [`APPEND_STREAM_PENDING_MAX`] messages: a client that
//!   stops reading them stops the task (and so its reading of requests), never the store;
//! - the stream ends with an error only when a request cannot be read (it does not decode, or
//!   its frame is refused), or when the caller's credentials no longer hold after a policy
//!   reload; the appends already pending are answered first. A client that closes its side
//!   gets every pending answer, then the end of the stream.
//!
//! A client that goes away leaves its pending appends to commit, as a unary call's would.

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use prost::Message as _;

use crate::auth::{Action, Caller};
use crate::budget::{HeldBytes, RequestBudget};
use crate::convert;
use crate::limits::APPEND_STREAM_PENDING_MAX;
use crate::pb;
use crate::pb::append_stream_response::Answer as Outcome;
use crate::service::{Answer, Service, check_append};
use crate::status::{Error, to_status};

/// The answers of one append stream, as the connection takes them.
pub type AppendStreamStream = ReceiverStream<Result<pb::AppendStreamResponse, Status>>;

/// The method's name, in refusals and the audit log.
const METHOD: &str = "AppendStream";

/// Starts the task that serves one append stream, and gives back its answers.
pub fn serve(
    service: Service,
    caller: Caller,
    budget: Option<RequestBudget>,
    requests: Streaming<pb::AppendStreamRequest>,
) -> AppendStreamStream {
    let (answers, taken) = mpsc::channel(APPEND_STREAM_PENDING_MAX);
    tokio::spawn(run(service, caller, budget, requests, answers));
    ReceiverStream::new(taken)
}

/// An append of the stream that was submitted (or refused) and awaits its turn to be answered.
struct Pending {
    n_events: u64,
    answer: Result<Answer, Status>,
    /// The request's bytes, counted against the request budget until it is answered.
    _held: Option<HeldBytes>,
}

async fn run(
    service: Service,
    mut caller: Caller,
    budget: Option<RequestBudget>,
    mut requests: Streaming<pb::AppendStreamRequest>,
    answers: mpsc::Sender<Result<pb::AppendStreamResponse, Status>>,
) {
    let mut pending: VecDeque<Pending> = VecDeque::with_capacity(APPEND_STREAM_PENDING_MAX);
    let mut reading = true;
    // Why the stream ends early, sent once every pending append is answered.
    let mut failed: Option<Status> = None;
    let mut stopping = service.stopping();
    loop {
        let may_read = reading && pending.len() < APPEND_STREAM_PENDING_MAX;
        let oldest = async {
            match pending.front_mut() {
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
        tokio::select! {
            // Answers first: they free room for more requests.
            biased;
            Some(result) = oldest => {
                let done = pending.pop_front().expect("the oldest pending append");
                crate::metrics::append_answered(done.n_events, result.as_ref().map(|_| ()));
                let answer = match result {
                    Ok(receipt) => Outcome::Receipt(convert::receipt(receipt)),
                    Err(status) => Outcome::Error(rpc_status(&status)),
                };
                let message = pb::AppendStreamResponse {
                    answer: Some(answer),
                };
                if answers.send(Ok(message)).await.is_err() {
                    // The client went away; what is pending commits without it.
                    return;
                }
            }
            // At shutdown: no more requests; the pending ones are answered.
            () = async { drop(stopping.wait_for(|stopping| *stopping).await) }, if reading => {
                failed = Some(to_status(Error::ShuttingDown { resume_from: None }));
                reading = false;
            }
            request = requests.message(), if may_read => {
                match request {
                    Ok(Some(request)) => {
                        if let Err(status) = caller.refresh(METHOD, Action::Append) {
                            failed = Some(status);
                            reading = false;
                            continue;
                        }
                        let (n_events, answer, held) =
                            admit(&service, &caller, budget.as_ref(), request).await;
                        pending.push_back(Pending {
                            n_events,
                            answer,
                            _held: held,
                        });
                    }
                    Ok(None) => reading = false,
                    Err(status) => {
                        // tonic's decoding faults, restated as the unary calls' are.
                        let restated = crate::malformed::restate(status.code(), status.message());
                        failed = Some(restated.unwrap_or(status));
                        reading = false;
                    }
                }
            }
            else => break,
        }
    }
    if let Some(status) = failed {
        let _ = answers.send(Err(status)).await;
    }
}

/// Takes one request of the stream: holds its bytes against the request budget and submits its
/// append. Gives its events' count, its answer (or refusal), and the bytes held.
async fn admit(
    service: &Service,
    caller: &Caller,
    budget: Option<&RequestBudget>,
    request: pb::AppendStreamRequest,
) -> (u64, Result<Answer, Status>, Option<HeldBytes>) {
    let Some(append) = request.append else {
        return (
            0,
            Err(to_status(Error::invalid("append", "it is required"))),
            None,
        );
    };
    let n_events = append.events.len() as u64;
    match budget
        .map(|budget| budget.hold(append.encoded_len()))
        .transpose()
    {
        Ok(held) => (n_events, submit(service, caller, append).await, held),
        Err(status) => (n_events, Err(status), None),
    }
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
    service.submit(append).await
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
