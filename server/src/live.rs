//! The store a server answers from. A single node opens one store for its life; a cluster node
//! replaces its store when it installs a snapshot (the state machine switches to a new store
//! generation), so everything that reads the store takes it from here for each call, never
//! keeping one across calls.
//!
//! Replacing is one pointer swap under a lock. A read that took the old store just before the
//! swap finishes on it (or gets `Closed`, answered UNAVAILABLE, if the old store closed first);
//! positions only grow across a swap, since a snapshot a node installs is ahead of what it had.
//!
//! It also publishes the committed head on a `tokio::sync::watch` ([`LiveStore::head`]) for
//! subscriptions and the console's live tail: each store it holds calls back with every new
//! head ([`Store::set_head_listener`]) on the thread that commits, so no thread waits for the
//! head and a commit wakes only the tasks that follow it. The value never goes back, also
//! across a swap.

use std::sync::{Arc, RwLock};

use causeway_core::Store;
use tokio::sync::watch;

/// A shared handle on the current store.
#[derive(Clone, Debug)]
pub struct LiveStore(Arc<Live>);

#[derive(Debug)]
struct Live {
    store: RwLock<Arc<Store>>,
    head: watch::Sender<u64>,
}

impl LiveStore {
    /// A handle on `store`.
    pub fn new(store: Arc<Store>) -> LiveStore {
        let (head, _) = watch::channel(0);
        follow_head(&store, &head);
        LiveStore(Arc::new(Live {
            store: RwLock::new(store),
            head,
        }))
    }

    /// The current store.
    pub fn get(&self) -> Arc<Store> {
        self.0
            .store
            .read()
            .expect("live store lock poisoned")
            .clone()
    }

    /// Makes `store` current and returns the one it replaces.
    pub fn replace(&self, store: Arc<Store>) -> Arc<Store> {
        follow_head(&store, &self.0.head);
        std::mem::replace(
            &mut *self.0.store.write().expect("live store lock poisoned"),
            store,
        )
    }

    /// The committed head of the current store, as it moves.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.0.head.subscribe()
    }
}

/// Publishes `store`'s committed heads on `head`, never moving it back.
fn follow_head(store: &Store, head: &watch::Sender<u64>) {
    let head = head.clone();
    store.set_head_listener(Arc::new(move |position| {
        head.send_if_modified(|seen| {
            let moved = position.0 > *seen;
            if moved {
                *seen = position.0;
            }
            moved
        });
    }));
}
