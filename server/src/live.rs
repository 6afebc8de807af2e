//! The store a server answers from. A single node opens one store for its life; a cluster node
//! replaces its store when it installs a snapshot (the state machine switches to a new store
//! generation), so everything that reads the store takes it from here for each call, never
//! keeping one across calls.
//!
//! Replacing is one pointer swap under a lock. A read that took the old store just before the
//! swap finishes on it (or gets `Closed`, answered UNAVAILABLE, if the old store closed first);
//! positions only grow across a swap, since a snapshot a node installs is ahead of what it had.

use std::sync::{Arc, RwLock};

use causeway_core::Store;

/// A shared handle on the current store.
#[derive(Clone, Debug)]
pub struct LiveStore(Arc<RwLock<Arc<Store>>>);

impl LiveStore {
    /// A handle on `store`.
    pub fn new(store: Arc<Store>) -> LiveStore {
        LiveStore(Arc::new(RwLock::new(store)))
    }

    /// The current store.
    pub fn get(&self) -> Arc<Store> {
        self.0.read().expect("live store lock poisoned").clone()
    }

    /// Makes `store` current and returns the one it replaces.
    pub fn replace(&self, store: Arc<Store>) -> Arc<Store> {
        std::mem::replace(
            &mut *self.0.write().expect("live store lock poisoned"),
            store,
        )
    }
}
