//! The pipelined group commit: a thread that makes written groups durable and then finishes
//! them, in order, while the writer decides and writes the next ones.
//!
//! A log's writer writes a group (one `write` of many appends' frames), hands it here with a
//! [`SyncHandle`] for the bytes it wrote, and goes on with the next group. The syncer thread
//! takes every group that is waiting, syncs once for all of them (the newest handle covers
//! every earlier write to the same file, and a roll to a new segment synced the one it sealed),
//! and only then calls `finish` with their payloads, in the order they were handed over. So
//! concurrent writers share one fsync, and the disk's latency does not add to the writer's
//! work. It knows nothing of events or receipts: the event store's payload is its answers and
//! its new head; a replicated log's would be the entries to report flushed.
//!
//! Invariants:
//! - `finish` sees every group exactly once, in submission order, after the sync that covers
//!   it returned (or with the sync's error: a failed fsync leaves unknown bytes on disk, and
//!   the caller must not report any of those groups durable, nor retry the sync).
//! - A group with no handle (it wrote nothing) is still finished after the groups before it:
//!   its answers may depend on them.
//! - At most `depth` groups wait for the syncer; past that, [`Syncer::submit`] blocks, which
//!   is the writer's backpressure.
//! - Without durability ([`Syncer::start`] with `durable: false`) there is no thread: `submit`
//!   finishes each group at once on the caller's thread, unsynced.
//! - A caller with nothing else to do hands its group over with [`Syncer::submit_idle`]: when
//!   the thread has finished every earlier group, the caller syncs and finishes it itself, so
//!   a lone request crosses one thread fewer each way; under load, groups queue as above and
//!   the writing of one overlaps the sync of another.
//!
//! Metrics (through the `metrics` facade; free when no recorder is installed), labelled with
//! the thread's name: `causeway_fsync_duration_seconds` (each sync) and `causeway_fsync_groups`
//! (the groups one sync made durable).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::Result;
use crate::segment::SyncHandle;

/// One written group: what makes its bytes durable, and what to finish once they are.
pub struct Group<T> {
    /// Syncs the group's bytes; `None` when it wrote nothing that needs a sync.
    pub sync: Option<SyncHandle>,
    /// Handed to `finish` once the group is durable.
    pub payload: T,
}

/// What a syncer calls with the payloads of groups that are durable (`Ok`) or whose sync
/// failed (`Err`), in submission order.
pub type Finish<T> = Box<dyn FnMut(Vec<T>, Result<()>) + Send>;

/// A group commit pipeline; see the module documentation.
pub struct Syncer<T: Send + 'static> {
    /// To the syncer thread; `None` without durability, or once closed.
    sender: Option<SyncSender<Group<T>>>,
    thread: Option<JoinHandle<()>>,
    /// Finishes groups: on the thread, or on the caller's thread for a group it syncs itself
    /// ([`Syncer::submit_idle`]) and for every group without durability. `None` once closed.
    finish: Arc<Mutex<Option<Finish<T>>>>,
    /// Groups handed to the thread and not finished yet. Decremented only after their
    /// `finish` returned, so at zero every earlier group is finished.
    outstanding: Arc<AtomicUsize>,
    fsync_seconds: metrics::Histogram,
    groups_per_sync: metrics::Histogram,
}

impl<T: Send + 'static> Syncer<T> {
    /// Starts a pipeline. With `durable`, a thread named `name` syncs and finishes groups, up
    /// to `depth` of them waiting; without, `submit` finishes each group itself.
    pub fn start(
        name: &str,
        depth: usize,
        durable: bool,
        finish: Finish<T>,
    ) -> std::io::Result<Syncer<T>> {
        let finish = Arc::new(Mutex::new(Some(finish)));
        let outstanding = Arc::new(AtomicUsize::new(0));
        let fsync_seconds =
            metrics::histogram!("causeway_fsync_duration_seconds", "syncer" => name.to_string());
        let groups_per_sync =
            metrics::histogram!("causeway_fsync_groups", "syncer" => name.to_string());
        let mut syncer = Syncer {
            sender: None,
            thread: None,
            finish: finish.clone(),
            outstanding: outstanding.clone(),
            fsync_seconds: fsync_seconds.clone(),
            groups_per_sync: groups_per_sync.clone(),
        };
        if !durable {
            return Ok(syncer);
        }
        let (sender, receiver) = sync_channel::<Group<T>>(depth);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut groups = vec![first];
                    while let Ok(more) = receiver.try_recv() {
                        groups.push(more);
                    }
                    let n_groups = groups.len();
                    sync_and_finish(&finish, groups, &fsync_seconds, &groups_per_sync);
                    outstanding.fetch_sub(n_groups, Ordering::Release);
                }
            })?;
        syncer.sender = Some(sender);
        syncer.thread = Some(thread);
        Ok(syncer)
    }

    /// Hands over a written group. Blocks while `depth` groups wait for the syncer.
    pub fn submit(&mut self, group: Group<T>) {
        match &self.sender {
            Some(sender) => {
                self.outstanding.fetch_add(1, Ordering::Relaxed);
                sender
                    .send(group)
                    .expect("the syncer thread runs until its sender is dropped");
            }
            None => {
                let mut finish = self.finish.lock().expect("finish lock poisoned");
                let finish = finish
                    .as_mut()
                    .expect("a group was submitted after the syncer was closed");
                finish(vec![group.payload], Ok(()));
            }
        }
    }

    /// Hands over a written group when the caller has nothing to do meanwhile (no more work
    /// waiting for it). If the thread has finished every earlier group, this one is synced and
    /// finished here, on the caller's thread, which saves two thread hand-offs per group at
    /// low concurrency; otherwise it is queued behind them as by [`Syncer::submit`]. Either
    /// way groups finish in submission order. Gives whether the group was synced here.
    pub fn submit_idle(&mut self, group: Group<T>) -> bool {
        if self.sender.is_none() || self.outstanding.load(Ordering::Acquire) != 0 {
            self.submit(group);
            return false;
        }
        sync_and_finish(
            &self.finish,
            vec![group],
            &self.fsync_seconds,
            &self.groups_per_sync,
        );
        true
    }

    /// Finishes every group handed over so far and stops the thread.
    pub fn close(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .expect("the syncer thread does not panic: finish catches its callers' panics");
        }
        self.finish.lock().expect("finish lock poisoned").take();
    }
}

/// Syncs once for `groups` (the newest handle covers every earlier group: a roll syncs the
/// segment it seals) and finishes them.
fn sync_and_finish<T>(
    finish: &Mutex<Option<Finish<T>>>,
    groups: Vec<Group<T>>,
    fsync_seconds: &metrics::Histogram,
    groups_per_sync: &metrics::Histogram,
) {
    let started = Instant::now();
    let synced = groups
        .iter()
        .rev()
        .find_map(|group| group.sync.as_ref())
        .map_or(Ok(()), SyncHandle::sync);
    fsync_seconds.record(started.elapsed());
    groups_per_sync.record(groups.len() as f64);
    let mut finish = finish.lock().expect("finish lock poisoned");
    if let Some(finish) = finish.as_mut() {
        finish(
            groups.into_iter().map(|group| group.payload).collect(),
            synced,
        );
    }
}

impl<T: Send + 'static> Drop for Syncer<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Groups are finished once each, in the order they were handed over, in both modes; a
    /// group with no handle waits for the ones before it.
    #[test]
    fn groups_finish_once_and_in_order() {
        for durable in [true, false] {
            let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
            let record = seen.clone();
            let mut syncer = Syncer::start(
                "test-sync",
                2,
                durable,
                Box::new(move |payloads: Vec<u32>, synced| {
                    synced.unwrap();
                    record.lock().unwrap().extend(payloads);
                }),
            )
            .unwrap();
            for payload in 0..100 {
                syncer.submit(Group {
                    sync: None,
                    payload,
                });
            }
            syncer.close();
            assert_eq!(*seen.lock().unwrap(), (0..100).collect::<Vec<_>>());
        }
    }
}
