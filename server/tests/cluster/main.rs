//! Support for the cluster integration tests: a TCP proxy that partitions, delays and cuts the
//! links between nodes, and a checker that judges a recorded history of a replicated log.
//!
//! - `proxy`: partitions without root: one proxy per pair of nodes and direction of dialling.
//! - `history`: the invariants a history of appends, reads and subscriptions must keep.

// Scenarios that use every helper come with the cluster mode; until then some go unused.
#![allow(dead_code)]

mod history;
mod nodes;
mod proxy;
mod replication;
