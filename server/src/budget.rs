//! The global budget of request bytes in flight: a tower layer around the gRPC server.
//!
//! Every call's request body is counted as its frames arrive, against one semaphore of bytes
//! shared by every connection (`--max-in-flight-request-bytes`). The bytes stay counted while
//! the call is handled: until its handler has answered (a unary call's whole life, a stream's
//! start) and its request body is gone, whichever is later. A frame that does not fit ends the
//! call with RESOURCE_EXHAUSTED (reason `OVERLOADED`, limit `max_in_flight_request_bytes`) and
//! a `RetryInfo` of `RETRY_AFTER_OVERLOAD`, at once: a client never waits on the budget, and
//! the bytes it had taken are given back.
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
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;

use crate::status::{Error, to_status};

/// The path prefix of the node-to-node service, which the budget leaves out.
const UNCOUNTED_PREFIX: &str = "/causeway.cluster.v1.RaftService/";

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

/// The bytes one call holds, given back when the last of its holders (the request body and the
/// response future) is dropped.
#[derive(Debug)]
struct Held {
    budget: RequestBudget,
    bytes: AtomicUsize,
}

impl Held {
    /// Counts `n_bytes` more, or refuses the call.
    fn take(&self, n_bytes: usize) -> Result<(), Status> {
        let refused = || {
            metrics::counter!("causeway_request_budget_refusals_total").increment(1);
            to_status(Error::RequestBytesFull {
                max: self.budget.max,
            })
        };
        let n_permits = u32::try_from(n_bytes).map_err(|_| refused())?;
        let permit = self
            .budget
            .bytes
            .try_acquire_many(n_permits)
            .map_err(|_| refused())?;
        permit.forget();
        self.bytes.fetch_add(n_bytes, Ordering::Relaxed);
        metrics::gauge!("causeway_request_bytes_in_flight").increment(n_bytes as f64);
        Ok(())
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
        });
        let request = request.map(|body| {
            Body::new(Counted {
                inner: body,
                held: held.clone(),
            })
        });
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
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
            && let Err(refused) = self.held.take(data.len())
        {
            return Poll::Ready(Some(Err(refused)));
        }
        polled
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
        });
        first.take(60).expect("60 of 100 fit");
        first.take(30).expect("90 of 100 fit");
        assert_eq!(budget.in_flight(), 90);
        let second = Held {
            budget: budget.clone(),
            bytes: AtomicUsize::new(0),
        };
        let refused = second.take(20).expect_err("110 of 100 do not fit");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let retry = refused.get_details_retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(crate::limits::RETRY_AFTER_OVERLOAD));
        drop(first);
        assert_eq!(budget.in_flight(), 0);
        second.take(100).expect("the whole budget is free again");
        drop(second);
        assert_eq!(budget.in_flight(), 0);
    }
}
