//! A bounded blocking pool: a fixed number of std threads behind a bounded queue.
//!
//! The core is synchronous (appends wait for fsync, reads may wait for the disk), so no store
//! call may run on an async worker thread: it would stall every connection that worker serves.
//! Every store call goes through [`Pool::run`] instead, which hands the closure to a pool thread
//! and returns a future of its result.
//!
//! Invariants:
//! - At most `threads` closures run at once and at most `queue` wait; [`Pool::run`] never
//!   blocks and never waits for room: a full queue is [`PoolError::Full`] at once (the service
//!   answers RESOURCE_EXHAUSTED), so overload shows as fast errors rather than as latency.
//! - A closure that panics is answered with [`PoolError::Panicked`]; its thread keeps serving.
//! - Dropping the pool closes the queue: the threads finish what is queued, then exit. The drop
//!   does not wait for them, so it never blocks an async worker that happens to drop the last
//!   handle.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a closure did not run to completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// Every thread is busy and the queue is full; the closure was not queued.
    Full {
        /// The queue's capacity.
        queue: usize,
    },
    /// The closure panicked (a bug); its thread survived.
    Panicked,
    /// The pool is shutting down.
    Stopped,
}

/// A fixed set of threads running closures from a bounded queue.
#[derive(Debug)]
pub struct Pool {
    sender: SyncSender<Job>,
    queue: usize,
    /// `causeway_pool_queue_depth` and `causeway_pool_refusals_total`, taken once (a lookup
    /// per call otherwise).
    queue_depth: metrics::Gauge,
    refusals: metrics::Counter,
}

impl Pool {
    /// Starts `threads` threads (named `causeway-pool-N`) behind a queue of `queue` closures.
    /// Both must be at least 1; the configuration checks their upper bounds.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Pool> {
        assert!(
            threads >= 1 && queue >= 1,
            "the configuration ensures a pool of at least one thread and one queue slot"
        );
        let (sender, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let queue_depth = metrics::gauge!("causeway_pool_queue_depth");
        for thread_idx in 0..threads {
            let receiver = receiver.clone();
            let taken = queue_depth.clone();
            std::thread::Builder::new()
                .name(format!("causeway-pool-{thread_idx}"))
                .spawn(move || work(&receiver, &taken))?;
        }
        Ok(Pool {
            sender,
            queue,
            queue_depth,
            refusals: metrics::counter!("causeway_pool_refusals_total"),
        })
    }

    /// Queues `job` and returns a future of its result. The queueing happens now, before the
    /// future is polled: when the queue is full the future is ready at once with
    /// [`PoolError::Full`], and `job` is dropped without running.
    pub fn run<T, F>(&self, job: F) -> impl Future<Output = Result<T, PoolError>> + Send + use<T, F>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let wrapped: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(job)).map_err(|_| PoolError::Panicked);
            // The caller may have gone away (a cancelled RPC); the result is then unwanted.
            let _ = reply.send(result);
        });
        // Counted before the send, so the taking thread's decrement never runs first.
        self.queue_depth.increment(1.0);
        let queued = self.sender.try_send(wrapped).map_err(|err| {
            self.queue_depth.decrement(1.0);
            match err {
                TrySendError::Full(_) => {
                    self.refusals.increment(1);
                    PoolError::Full { queue: self.queue }
                }
                TrySendError::Disconnected(_) => PoolError::Stopped,
            }
        });
        async move {
            queued?;
            answer.await.map_err(|_| PoolError::Stopped)?
        }
    }
}

/// A pool thread: takes closures until the queue is closed and empty.
fn work(receiver: &Mutex<Receiver<Job>>, queue_depth: &metrics::Gauge) {
    loop {
        // Holding the lock while waiting is fine: only one idle thread waits on the queue; the
        // others wait for the lock, and every closure runs after the lock is released.
        let job = receiver
            .lock()
            .expect("no thread panics holding the queue lock")
            .recv();
        match job {
            Ok(job) => {
                queue_depth.decrement(1.0);
                let panicked = catch_unwind(AssertUnwindSafe(job)).is_err();
                if panicked {
                    tracing::error!("a pool job panicked");
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[tokio::test]
    async fn runs_closures_and_returns_their_results() {
        let pool = Pool::new(2, 4).expect("threads start");
        let first = pool.run(|| 6 * 7);
        let second = pool.run(|| String::from("on a pool thread"));
        assert_eq!(first.await, Ok(42));
        assert_eq!(second.await, Ok("on a pool thread".to_string()));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = Pool::new(1, 1).expect("threads start");
        let barrier = Arc::new(Barrier::new(2));
        let blocked = barrier.clone();
        // The first closure occupies the only thread until the barrier opens; wait until it
        // is running so the queue is empty again.
        let (started, running) = std::sync::mpsc::channel();
        let first = pool.run(move || {
            started.send(()).expect("test waits");
            blocked.wait();
            1
        });
        running.recv().expect("first closure starts");
        let second = pool.run(|| 2);
        let third = pool.run(|| 3);
        assert_eq!(third.await, Err(PoolError::Full { queue: 1 }));
        barrier.wait();
        assert_eq!(first.await, Ok(1));
        assert_eq!(second.await, Ok(2));
    }

    #[tokio::test]
    async fn a_panicking_closure_does_not_kill_its_thread() {
        let pool = Pool::new(1, 1).expect("threads start");
        let panicked = pool.run(|| -> u32 { panic!("a bug in a job") });
        assert_eq!(panicked.await, Err(PoolError::Panicked));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }
}
