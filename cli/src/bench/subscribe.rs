//! The `subscribe` workload: K subscribers follow the bench scope live while one writer
//! appends at a steady rate; the figure is the append-to-delivery latency.
//!
//! Each event carries its send time (Unix nanoseconds, metadata `sent_unix_ns`), taken just
//! before its append request is built; a subscriber subtracts it from its own wall clock when
//! the event arrives. Writer and subscribers run in this one process, so they read the same
//! clock, and the latency includes the append itself (fsync) as well as the delivery.
//!
//! The writer is an open loop: append `i` is due at `start + i / rate`, and a late one is sent
//! at once, so a slow server shows as latency rather than as a lower rate, up to `--in-flight`
//! appends outstanding (past that the writer waits, and the achieved rate falls below the
//! target; the report shows both). Every subscriber must receive every acknowledged event: after
//! the writer stops, the subscribers get [`DRAIN_WAIT`] to catch up, and any event missing then
//! is reported as a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use causeway_client::{FilterBuilder, pb};
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::Status;

use crate::bench::BenchArgs;
use crate::bench::load::{
    AppendGen, Bounds, Counters, Done, Measured, SENT_METADATA_KEY, Stub, new_histogram, record_ns,
    unix_ns,
};
use crate::bench::wire::Appender;

/// How long subscribers may take, after the writer's last answer, to deliver every event.
pub const DRAIN_WAIT: Duration = Duration::from_secs(10);
/// How long a new subscription may take to report that it follows the log.
pub const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);

/// What the subscribers received.
#[derive(Clone, Debug)]
pub struct Deliveries {
    /// Subscribers that followed the run.
    pub subscribers: u64,
    /// Events each should have received: every acknowledged append's events.
    pub expected_each: u64,
    /// Events received, over all subscribers.
    pub delivered: u64,
    /// Append-to-delivery latency in nanoseconds, of events sent in the measured window.
    pub latency: Histogram<u64>,
    /// Subscriptions that ended with an error, by code.
    pub errors: crate::bench::load::ErrorCounts,
    /// The writer's target rate, appends per second.
    pub rate_target: u32,
}

impl Deliveries {
    /// Events that some subscriber should have received and did not (negative: extra ones).
    pub fn missing(&self) -> i128 {
        i128::from(self.expected_each) * i128::from(self.subscribers) - i128::from(self.delivered)
    }
}

/// The connections of a subscribe run, each as a stub and as an appender.
#[derive(Clone, Copy, Debug)]
pub struct Connections<'a> {
    /// For the subscriptions.
    pub stubs: &'a [Stub],
    /// For the appends.
    pub appenders: &'a [Appender],
}

/// Runs the workload: subscribes `--subscribers` times to `scope` over the connections, then
/// appends from `generator` at `--rate` per second within `bounds`, at most `--in-flight`
/// outstanding.
pub async fn run(
    connections: Connections<'_>,
    args: &BenchArgs,
    scope: &str,
    mut generator: AppendGen,
    bounds: Bounds,
    counters: Arc<Counters>,
) -> Result<(Measured, Deliveries)> {
    let (subscribers, rate, in_flight) = (args.subscribers, args.rate, args.in_flight as usize);
    let (stop, stopped) = watch::channel(false);
    let mut followers = Vec::new();
    for subscriber_idx in 0..subscribers as usize {
        let stub = connections.stubs[subscriber_idx % connections.stubs.len()].clone();
        let stream = open(stub, scope).await?;
        let received = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(follow(
            stream,
            received.clone(),
            bounds.measure_from,
            stopped.clone(),
        ));
        followers.push((received, task));
    }

    // The writer: an open loop of appends on the connections in turn.
    let permits = Arc::new(Semaphore::new(in_flight));
    let (answers, mut answered) = mpsc::unbounded_channel();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let mut append_idx: u32 = 0;
    while bounds.admit(&counters) {
        tokio::time::sleep_until((start + interval * append_idx).into()).await;
        append_idx = append_idx.saturating_add(1);
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let appenders = connections.appenders;
        let mut appender = appenders[append_idx as usize % appenders.len()].clone();
        let (request, _) = generator.next();
        let answers = answers.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let sent_at = Instant::now();
            let answer = appender.append(request).await.map(|receipt| {
                let n_events = receipt.events.len() as u64;
                Done {
                    events: n_events,
                    appended: n_events,
                }
            });
            let done_at = Instant::now();
            if answer.is_err() {
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
            counters.finished.fetch_add(1, Ordering::Relaxed);
            // The receiver lives until every permit is back, so this send cannot fail.
            let _ = answers.send((answer, done_at - sent_at, done_at));
            drop(permit);
        });
    }
    // Every permit back means every append has answered.
    let _all = permits
        .acquire_many(in_flight as u32)
        .await
        .expect("the semaphore is never closed");
    drop(answers);
    let mut measured = Measured::new(bounds.measure_from);
    while let Some((answer, latency, done_at)) = answered.recv().await {
        measured.record(answer, latency, done_at);
    }

    // Let the subscribers catch up, then stop them.
    let expected_each = measured.appended;
    let drain_until = Instant::now() + DRAIN_WAIT;
    while Instant::now() < drain_until
        && followers.iter().any(|(received, task)| {
            received.load(Ordering::Relaxed) < expected_each && !task.is_finished()
        })
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(true);
    let mut deliveries = Deliveries {
        subscribers: u64::from(subscribers),
        expected_each,
        delivered: 0,
        latency: new_histogram(),
        errors: Default::default(),
        rate_target: rate,
    };
    for (received, task) in followers {
        let (latency, ended) = task.await.context("a subscriber task panicked")?;
        deliveries.delivered += received.load(Ordering::Relaxed);
        deliveries
            .latency
            .add(&latency)
            .expect("every histogram has the same bounds");
        if let Some(status) = ended {
            deliveries.errors.record(status);
        }
    }
    Ok((measured, deliveries))
}

/// Subscribes from now to `scope` and waits until the subscription follows the log.
async fn open(mut stub: Stub, scope: &str) -> Result<tonic::Streaming<pb::SubscribeResponse>> {
    let request = pb::SubscribeRequest {
        start: Some(pb::subscribe_request::Start::FromNow(true)),
        filter: Some(FilterBuilder::new().scope(scope).build()),
    };
    let mut stream = stub
        .subscribe(request)
        .await
        .context("cannot subscribe")?
        .into_inner();
    let first = tokio::time::timeout(SUBSCRIBE_WAIT, stream.message())
        .await
        .context("a subscription did not report caught up in time")?
        .context("a subscription failed before it caught up")?;
    match first.and_then(|message| message.message) {
        Some(pb::subscribe_response::Message::CaughtUp(_)) => Ok(stream),
        other => bail!("a subscription from now began with {other:?}, not caught up"),
    }
}

/// Counts and times every event until told to stop or the stream ends; returns the latencies
/// and the status the stream ended with, if it failed.
async fn follow(
    mut stream: tonic::Streaming<pb::SubscribeResponse>,
    received: Arc<AtomicU64>,
    measure_from: Instant,
    mut stop: watch::Receiver<bool>,
) -> (Histogram<u64>, Option<Status>) {
    let mut latency = new_histogram();
    // Sends before this wall-clock time belong to the warm-up.
    let (now, now_ns) = (Instant::now(), unix_ns());
    let measure_from_ns = if measure_from >= now {
        now_ns.saturating_add(nanos(measure_from - now))
    } else {
        now_ns.saturating_sub(nanos(now - measure_from))
    };
    loop {
        let message = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return (latency, None),
            message = stream.message() => message,
        };
        let batch = match message {
            Ok(Some(pb::SubscribeResponse {
                message: Some(pb::subscribe_response::Message::Events(batch)),
            })) => batch,
            Ok(Some(_)) => continue,
            Ok(None) => return (latency, None),
            Err(status) => return (latency, Some(status)),
        };
        let now_ns = unix_ns();
        for event in &batch.events {
            let sent_ns = event
                .metadata
                .get(SENT_METADATA_KEY)
                .and_then(|sent| sent.parse::<u64>().ok());
            if let Some(sent_ns) = sent_ns.filter(|&sent_ns| sent_ns >= measure_from_ns) {
                record_ns(
                    &mut latency,
                    Duration::from_nanos(now_ns.saturating_sub(sent_ns)),
                );
            }
        }
        received.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
