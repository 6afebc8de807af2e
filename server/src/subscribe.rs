//! Subscriptions: catch up from the log, then follow it live.
//!
//! Each subscription is one async task (a `Feed`) that reads the log forward in pages of
//! [`SUBSCRIBE_READ_EVENTS_MAX`] events and [`SUBSCRIBE_PAGE_BYTES_MAX`] bytes through the
//! blocking pool, with the subscriber's filter, and pushes each page as one message into a
//! channel bounded both in messages ([`SUBSCRIBE_BUFFER_MESSAGES`]) and in encoded bytes
//! ([`SUBSCRIBE_BUFFER_BYTES_MAX`]: a message takes its bytes from the subscription's own
//! semaphore before it is queued, and gives them back when the connection takes it; one larger
//! than the whole budget waits for an empty buffer) that the connection drains. The bytes
//! queued over every subscription are the gauge `causeway_subscription_buffered_bytes`. Subscription
//! calls take one of [`subscribe_reads_max`] read permits before they go to the pool, so
//! however many subscribers a commit wakes, they hold only that many of the pool's threads and
//! queue slots, and appends keep the rest. When a read reaches the head the task sends `CaughtUp` (once) and waits for the head
//! to move. It learns that from [`LiveStore::head`], a `tokio::sync::watch` the committing thread
//! updates, so an idle subscription holds no thread at all, only a task waiting on the channel.
//!
//! A filter with `until` ends its subscription (OK) once the read that reached the head started
//! with the head's event at or past `until`: timestamps grow with position, so no later event
//! can match. The test reads the log, never a clock, so a follower ends it as its leader would.
//!
//! The contract is etcd's watch contract:
//! - ordered and without duplicates or gaps: each read starts where the last one ended
//!   (the `next` of `Store::read_log_records`) and events are sent in the order read;
//! - atomic per append: the head only moves by whole appends and a forward page of the core
//!   never ends inside one, so the (matching) events of one append arrive in one `EventBatch`;
//! - resumable: every position below the next one to read has been delivered or filtered out,
//!   so a client resumes from the last position it saw plus one, also after a restart;
//! - with progress: a `Checkpoint` reports the last position examined when the filter skipped
//!   events, at most once per [`CHECKPOINT_INTERVAL`], and is flushed when the log goes quiet.
//!
//! Each event is delivered only if the subscriber's principal may `subscribe` in its scope
//! (`auth/`); the rest are skipped like events the filter leaves out, so resuming and progress
//! markers work the same. After a policy reload the subscription proves its credential again
//! before its next read, and ends if the new policy refuses it. A principal holds at most its `subscriptions_max` open at once.
//!
//! A slow consumer fills its own buffer and its task waits for room; writers and other
//! subscribers never wait for it. A subscriber that goes away is noticed on the next send (or
//! at once while idle) and its task ends, returning its slot of `max_subscriptions`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use causeway_core::{Direction, Filter, Position};
use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use crate::auth::{Action, Caller, SubscriptionSlot};
use crate::convert;
#[cfg(doc)]
use crate::limits::subscribe_reads_max;
use crate::limits::{
    CHECKPOINT_INTERVAL, SUBSCRIBE_BUFFER_BYTES_MAX, SUBSCRIBE_BUFFER_MESSAGES,
    SUBSCRIBE_PAGE_BYTES_MAX, SUBSCRIBE_READ_EVENTS_MAX, SUBSCRIBE_RETRY_DELAY_MAX,
};
use crate::live::LiveStore;
use crate::pb;
use crate::pb::subscribe_response::Message;
use crate::pool::{Pool, PoolError};
use crate::status::{Error, to_status};
use crate::wire::EventBatch;

/// The stream a `Subscribe` call answers with: what the subscription's task queued, each
/// message's bytes given back to the subscription's buffer as the connection takes it.
#[derive(Debug)]
pub struct SubscribeStream {
    receiver: mpsc::Receiver<Queued>,
}

impl tokio_stream::Stream for SubscribeStream {
    type Item = Result<pb::SubscribeResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The message's `BufferedBytes` drops here, as the connection takes the message.
        self.receiver
            .poll_recv(cx)
            .map(|queued| queued.map(|queued| queued.response))
    }
}

/// A message in a subscription's buffer with the bytes it holds there.
#[derive(Debug)]
struct Queued {
    response: Result<pb::SubscribeResponse, Status>,
    _bytes: BufferedBytes,
}

/// Encoded bytes of one queued message, counted in the subscription's buffer (its permits)
/// and in `causeway_subscription_buffered_bytes` until it is dropped.
#[derive(Debug)]
struct BufferedBytes {
    n_bytes: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl BufferedBytes {
    fn new(n_bytes: usize, permit: Option<OwnedSemaphorePermit>) -> BufferedBytes {
        metrics::gauge!("causeway_subscription_buffered_bytes").increment(n_bytes as f64);
        BufferedBytes {
            n_bytes,
            _permit: permit,
        }
    }
}

impl Drop for BufferedBytes {
    fn drop(&mut self) {
        metrics::gauge!("causeway_subscription_buffered_bytes").decrement(self.n_bytes as f64);
    }
}

/// How long a subscription waits to hand its final status to a consumer whose buffer is full
/// before it ends the stream without it.
const FINAL_STATUS_WAIT: Duration = Duration::from_secs(1);

/// What every subscription shares: the store, the pool, the head, the limit on open
/// subscriptions, the permits for pool calls and the shutdown flag.
#[derive(Clone, Debug)]
pub struct Hub {
    store: LiveStore,
    pool: Arc<Pool>,
    permits: Arc<Semaphore>,
    /// One per subscription call on the pool, running or queued.
    reads: Arc<Semaphore>,
    max_subscriptions: usize,
    head: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
}

impl Hub {
    /// A hub allowing `max_subscriptions` open subscriptions, whose calls hold at most
    /// `max_reads` of the pool's slots at once (see [`subscribe_reads_max`]); `stopping` turns
    /// true when the server shuts down, which ends every subscription with UNAVAILABLE and
    /// where to resume.
    pub fn new(
        store: LiveStore,
        pool: Arc<Pool>,
        max_subscriptions: usize,
        max_reads: usize,
        head: watch::Receiver<u64>,
        stopping: watch::Receiver<bool>,
    ) -> Hub {
        Hub {
            store,
            pool,
            permits: Arc::new(Semaphore::new(max_subscriptions)),
            reads: Arc::new(Semaphore::new(max_reads)),
            max_subscriptions,
            head,
            stopping,
        }
    }

    /// Subscriptions open now.
    pub fn open(&self) -> usize {
        self.max_subscriptions - self.permits.available_permits()
    }

    /// The committed head as the committing thread publishes it (`LiveStore::head`): what a live reader outside the
    /// hub (the console's tail) waits on instead of holding a pool thread.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.head.clone()
    }

    /// Turns true when the server shuts down; live readers end then.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.clone()
    }

    /// Starts a subscription: checks the request, takes a slot, fixes the start position, and
    /// spawns the task that feeds the returned stream. Every refusal happens here, as the
    /// call's status, before any message is streamed.
    pub async fn subscribe(
        &self,
        request: pb::SubscribeRequest,
        caller: Caller,
    ) -> Result<SubscribeStream, Status> {
        use pb::subscribe_request::Start;
        let filter = Arc::new(convert::filter(request.filter, "filter").map_err(to_status)?);
        let from = match request.start {
            None => {
                return Err(to_status(Error::invalid(
                    "start",
                    "set from_position (the last position seen plus one) or from_now",
                )));
            }
            Some(Start::FromNow(false)) => {
                return Err(to_status(Error::invalid(
                    "start.from_now",
                    "it is false; set from_position to start from a position",
                )));
            }
            Some(Start::FromNow(true)) => None,
            Some(Start::FromPosition(position)) => Some(position.max(1)),
        };
        if *self.stopping.borrow() {
            return Err(to_status(Error::ShuttingDown { resume_from: None }));
        }
        let slot = caller.open_subscription()?;
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            to_status(Error::SubscriptionsFull {
                max: self.max_subscriptions,
            })
        })?;
        let store = self.store.get();
        let checked = filter.clone();
        let _read = self
            .reads
            .acquire()
            .await
            .map_err(|_| to_status(Error::ShuttingDown { resume_from: None }))?;
        let next = self
            .pool
            .run(move || {
                checked.validate()?;
                Ok::<_, causeway_core::Error>(from.unwrap_or(store.head().0 + 1))
            })
            .await
            .map_err(to_status)?
            .map_err(to_status)?;
        let (sender, receiver) = mpsc::channel(SUBSCRIBE_BUFFER_MESSAGES);
        let feed = Feed {
            store: self.store.clone(),
            pool: self.pool.clone(),
            reads: self.reads.clone(),
            filter,
            next,
            buffer: Arc::new(Semaphore::new(SUBSCRIBE_BUFFER_BYTES_MAX)),
            reported: next - 1,
            last_sent: Instant::now(),
            caught_up: false,
            sender,
            head: self.head.clone(),
            stopping: self.stopping.clone(),
            caller,
            _permit: permit,
            _slot: slot,
        };
        tokio::spawn(feed.run());
        Ok(SubscribeStream { receiver })
    }
}

/// Why a feed stops.
enum Stop {
    /// The subscriber went away; nothing more to say.
    Gone,
    /// The filter's `until` is behind the log: everything it can match was delivered, and the
    /// stream ends with OK.
    Done,
    /// The subscription ends with this status.
    Fail(Status),
}

/// One subscription's task.
struct Feed {
    store: LiveStore,
    pool: Arc<Pool>,
    reads: Arc<Semaphore>,
    filter: Arc<Filter>,
    /// The next position to read; everything below it was delivered or filtered out.
    next: u64,
    /// The subscription's buffer, in encoded bytes: [`SUBSCRIBE_BUFFER_BYTES_MAX`] permits.
    buffer: Arc<Semaphore>,
    /// The last position the subscriber has been told about, by an event or a marker.
    reported: u64,
    last_sent: Instant,
    caught_up: bool,
    sender: mpsc::Sender<Queued>,
    head: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    /// Who subscribed: events in scopes it may not subscribe to are skipped.
    caller: Caller,
    _permit: OwnedSemaphorePermit,
    /// The principal's slot of its `subscriptions_max`.
    _slot: SubscriptionSlot,
}

impl Feed {
    async fn run(mut self) {
        let stop = loop {
            if let Err(stop) = self.step().await {
                break stop;
            }
        };
        if let Stop::Fail(status) = stop {
            // The status follows every message already queued; a consumer that does not make
            // room in time gets the stream's end without it, and resumes as after any break.
            let queued = Queued {
                response: Err(status),
                _bytes: BufferedBytes::new(0, None),
            };
            let _ = tokio::time::timeout(FINAL_STATUS_WAIT, self.sender.send(queued)).await;
        }
    }

    /// One read, what it produced sent, and (at the head) the wait for more.
    async fn step(&mut self) -> Result<(), Stop> {
        self.caller
            .refresh("Subscribe", Action::Subscribe)
            .map_err(Stop::Fail)?;
        let (page, head) = self.read().await?;
        let examined = page.next.0 - 1;
        metrics::histogram!("causeway_subscription_lag_events")
            .record(head.saturating_sub(examined) as f64);
        let delivered = !page.events.is_empty();
        if delivered {
            // One page, one message: the page holds whole appends and its budget keeps the
            // message within SUBSCRIBE_MESSAGE_BYTES_MAX, so it is never cut.
            self.send(Message::Events(page.events)).await?;
            self.reported = page.last;
        }
        self.next = page.next.0;
        if page.end {
            if !self.caught_up {
                // From a position past the head, `examined` is below the start; the head is
                // then the honest answer, and every position up to it is below the start.
                let position = examined.min(head);
                self.send(Message::CaughtUp(pb::CaughtUp { position }))
                    .await?;
                self.caught_up = true;
                self.reported = self.reported.max(examined);
            }
            if page.passed {
                return Err(Stop::Done);
            }
            self.wait_for_head().await
        } else {
            if !delivered && self.checkpoint_due() {
                self.checkpoint().await?;
            }
            Ok(())
        }
    }

    /// Reads the next page and the head after it on the pool, holding a read permit while the
    /// call is queued or running; a full pool is retried with a growing pause, since the
    /// subscription is already open. The page's events are encoded for the wire on the pool
    /// thread, straight from their records; those in scopes the caller may not subscribe to
    /// are skipped there.
    async fn read(&mut self) -> Result<(Page, u64), Stop> {
        let mut delay = Duration::from_millis(1);
        loop {
            let permit = tokio::select! {
                permit = self.reads.clone().acquire_owned() => {
                    permit.map_err(|_| self.shutting_down())?
                }
                () = self.sender.closed() => return Err(Stop::Gone),
                () = stopped(self.stopping.clone()) => return Err(self.shutting_down()),
            };
            let store = self.store.get();
            let used = store.clone();
            let filter = self.filter.clone();
            let next = Position(self.next);
            let caller = self.caller.clone();
            let reported = self.reported;
            let read = self.pool.run(move || {
                // Before the read: the head it judges is one the read reaches, so nothing
                // committed after the page's end can fall inside the filter's time range.
                let passed = filter.until.is_some_and(|until| store.until_passed(until));
                let mut events = EventBatch::new();
                let mut last = reported;
                let (next, end) = store.read_log_records(
                    next,
                    Direction::Forward,
                    SUBSCRIBE_READ_EVENTS_MAX,
                    SUBSCRIBE_PAGE_BYTES_MAX,
                    &filter,
                    |record| {
                        if caller.may(Action::Subscribe, record.scope) {
                            events.push(record);
                            last = record.position.0;
                        }
                        Ok(())
                    },
                )?;
                let page = Page {
                    events,
                    last,
                    next,
                    end,
                    passed,
                };
                Ok::<_, causeway_core::Error>((page, store.head().0))
            });
            let answer = read.await;
            drop(permit);
            match answer {
                Ok(Ok(answer)) => return Ok(answer),
                // A cluster node replaced its store (a snapshot install): read the new one.
                Ok(Err(causeway_core::Error::Closed)) if !Arc::ptr_eq(&used, &self.store.get()) => {
                }
                Ok(Err(causeway_core::Error::Closed)) | Err(PoolError::Stopped) => {
                    return Err(self.shutting_down());
                }
                Ok(Err(err)) => return Err(Stop::Fail(to_status(err))),
                Err(PoolError::Full { .. }) => {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.sender.closed() => return Err(Stop::Gone),
                        () = stopped(self.stopping.clone()) => return Err(self.shutting_down()),
                    }
                    delay = (delay * 2).min(SUBSCRIBE_RETRY_DELAY_MAX);
                }
                Err(err) => return Err(Stop::Fail(to_status(err))),
            }
        }
    }

    /// Waits until the head reaches `next`, flushing a due checkpoint meanwhile.
    async fn wait_for_head(&mut self) -> Result<(), Stop> {
        loop {
            if *self.head.borrow_and_update() >= self.next {
                return Ok(());
            }
            let pending = self.next - 1 > self.reported;
            let flush_at = self.last_sent + CHECKPOINT_INTERVAL;
            tokio::select! {
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return Err(self.shutting_down());
                    }
                }
                () = self.sender.closed() => return Err(Stop::Gone),
                () = stopped(self.stopping.clone()) => return Err(self.shutting_down()),
                () = tokio::time::sleep_until(flush_at), if pending => self.checkpoint().await?,
            }
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.next - 1 > self.reported && self.last_sent.elapsed() >= CHECKPOINT_INTERVAL
    }

    async fn checkpoint(&mut self) -> Result<(), Stop> {
        let position = self.next - 1;
        self.send(Message::Checkpoint(pb::Checkpoint { position }))
            .await?;
        self.reported = position;
        Ok(())
    }

    /// Queues one message, waiting for room (its bytes in the buffer, then a message slot);
    /// gives up if the subscriber goes away or the server shuts down meanwhile.
    async fn send(&mut self, message: Message) -> Result<(), Stop> {
        let response = pb::SubscribeResponse {
            message: Some(message),
        };
        let n_bytes = response.encoded_len();
        // A message larger than the whole buffer takes all of it: it waits for the buffer to
        // empty and is then queued alone.
        let n_permits = u32::try_from(n_bytes.min(SUBSCRIBE_BUFFER_BYTES_MAX))
            .expect("SUBSCRIBE_BUFFER_BYTES_MAX fits in u32");
        let permit = tokio::select! {
            permit = self.buffer.clone().acquire_many_owned(n_permits) => {
                permit.expect("the buffer's semaphore is never closed")
            }
            () = self.sender.closed() => return Err(Stop::Gone),
            () = stopped(self.stopping.clone()) => return Err(self.shutting_down()),
        };
        let queued = Queued {
            response: Ok(response),
            _bytes: BufferedBytes::new(n_bytes, Some(permit)),
        };
        tokio::select! {
            sent = self.sender.send(queued) => {
                sent.map_err(|_| Stop::Gone)?;
                self.last_sent = Instant::now();
                Ok(())
            }
            () = stopped(self.stopping.clone()) => Err(self.shutting_down()),
        }
    }

    /// The end of a subscription at shutdown, saying where to resume: after the last position
    /// the subscriber was told about, which is never past what it received.
    fn shutting_down(&self) -> Stop {
        Stop::Fail(to_status(Error::ShuttingDown {
            resume_from: Some(self.reported + 1),
        }))
    }
}

/// A page of the log as a subscription sends it.
struct Page {
    /// The events delivered, encoded.
    events: EventBatch,
    /// The position of the last event delivered; the one reported before when none is.
    last: u64,
    /// The next position to read.
    next: Position,
    /// Whether the read reached the head.
    end: bool,
    /// Whether the filter's `until` was behind the head before the read: with `end`, nothing
    /// later can match.
    passed: bool,
}

/// Resolves once the server is shutting down (or the flag's sender is gone, which is the same).
async fn stopped(mut stopping: watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}
