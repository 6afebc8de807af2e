//! [`AppendStream`]: many appends over one `AppendStream` call, for a writer with many to send.
//!
//! Each append is one message each way instead of an HTTP/2 call of its own, and several in
//! flight share the server's fsync: on the project's 2-core machine, 1-event appends at 16 in
//! flight went from about 19,000/s as calls to 27,000/s as messages (docs/BENCHMARKS.md).
//!
//! The server submits the appends of a stream in the order they arrive and answers them in
//! that order, so the n-th answer is the n-th append's. A refusal is the answer of its append
//! only: the stream goes on. The stream itself fails when the server cannot read a request,
//! when the connection drops, or when the node is shutting down; the appends sent and not yet
//! answered then have an unknown outcome (send them again with an idempotency key to apply them
//! exactly once). A stream stays on the node it was opened on: it does not follow a new leader
//! (a follower answers each append with [`Error::NotLeader`] naming the leader).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::append::AppendBuilder;
use crate::error::Error;
use crate::pb;
use crate::pb::append_stream_response::Answer;

/// The most appends a stream holds unanswered: the server's bound on a stream's pending
/// appends. [`AppendStream::send`] waits when this many are unanswered and the server has not
/// taken more, so a sender that never reads answers stops there.
pub const APPEND_STREAM_WINDOW: usize = 64;

/// An open `AppendStream`: send appends, then take their answers in order.
///
/// ```no_run
/// # async fn run(client: causeway_client::Client) -> Result<(), causeway_client::Error> {
/// use causeway_client::{AppendBuilder, EventBuilder};
///
/// let mut stream = client.append_stream().await?;
/// for n in 0..1000 {
///     let append = AppendBuilder::new().event(EventBuilder::new("acme", "meter-1", "Reading"));
///     stream.send(append).await?;
///     // Keep a window in flight: take an answer once it is full.
///     if stream.unanswered() == 32 {
///         let receipt = stream.answer().await?.expect("one is unanswered")?;
///         println!("#{n}: position {}", receipt.events[0].position);
///     }
/// }
/// stream.close();
/// while let Some(answer) = stream.answer().await? {
///     let _receipt = answer?;
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AppendStream {
    requests: Option<mpsc::Sender<pb::AppendStreamRequest>>,
    answers: Streaming<pb::AppendStreamResponse>,
    unanswered: usize,
}

impl AppendStream {
    /// Wraps an opened call: `requests` feeds the call's request stream.
    pub(crate) fn new(
        requests: mpsc::Sender<pb::AppendStreamRequest>,
        answers: Streaming<pb::AppendStreamResponse>,
    ) -> AppendStream {
        AppendStream {
            requests: Some(requests),
            answers,
            unanswered: 0,
        }
    }

    /// Sends an append. Its answer comes from [`AppendStream::answer`], after those of the
    /// appends sent before it. Waits while the stream is full (see [`APPEND_STREAM_WINDOW`]).
    pub async fn send(&mut self, append: AppendBuilder) -> Result<(), Error> {
        let requests = self.requests.as_ref().ok_or_else(|| {
            Error::Status(tonic::Status::failed_precondition(
                "the append stream's sending side is closed",
            ))
        })?;
        let request = pb::AppendStreamRequest {
            append: Some(append.build()),
        };
        requests.send(request).await.map_err(|_| {
            Error::Status(tonic::Status::unavailable(
                "the append stream ended before the append was sent",
            ))
        })?;
        self.unanswered += 1;
        Ok(())
    }

    /// Appends sent and not yet answered.
    pub fn unanswered(&self) -> usize {
        self.unanswered
    }

    /// The answer to the oldest unanswered append: its receipt, or its refusal as
    /// [`Client::append`](crate::Client::append) would have returned it. `Ok(None)` when no
    /// append is unanswered. `Err` when the stream failed: every unanswered append's outcome
    /// is then unknown.
    pub async fn answer(&mut self) -> Result<Option<Result<pb::Receipt, Error>>, Error> {
        if self.unanswered == 0 {
            return Ok(None);
        }
        let response = self.answers.message().await?.ok_or_else(|| {
            Error::Status(tonic::Status::unavailable(
                "the server ended the append stream with appends unanswered",
            ))
        })?;
        self.unanswered -= 1;
        Ok(Some(match response.answer {
            Some(Answer::Receipt(receipt)) => Ok(receipt),
            Some(Answer::Error(status)) => Err(Error::from(tonic::Status::with_details(
                tonic::Code::from(status.code),
                status.message.clone(),
                prost::Message::encode_to_vec(&status).into(),
            ))),
            None => Err(Error::MissingField("answer")),
        }))
    }

    /// Closes the sending side. The unanswered appends are still answered; after the last,
    /// the server ends the stream.
    pub fn close(&mut self) {
        self.requests = None;
    }
}

/// Opens the request side of a stream: the sender [`AppendStream`] keeps and the stream the
/// call sends.
pub(crate) fn request_channel() -> (
    mpsc::Sender<pb::AppendStreamRequest>,
    ReceiverStream<pb::AppendStreamRequest>,
) {
    let (requests, taken) = mpsc::channel(APPEND_STREAM_WINDOW);
    (requests, ReceiverStream::new(taken))
}
