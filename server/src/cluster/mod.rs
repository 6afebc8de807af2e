//! Replication storage: what a Causeway node keeps for openraft, in Causeway's own formats.
//!
//! openraft (pinned exactly, see the workspace manifest) runs the consensus; this module tree
//! is the only code that names it. It gives openraft two things:
//!
//! - the **Raft log** ([`log::LogStore`]): entries in the core's segment log, one CRC'd frame
//!   per entry, and the vote and last purged log id in metafiles;
//! - the **state machine** ([`state::StateMachine`]): the core [`causeway_core::Store`],
//!   which applies each entry's stamped command at its log id, and snapshots made of store
//!   checkpoints.
//!
//! # What is durable when
//!
//! - A vote: before `save_vote` returns (after the log entries appended before it).
//! - An entry: when openraft is told it is flushed, which happens after the fsync of the frame
//!   (a group commit thread syncs many appends at once). That is the acknowledgement path: a
//!   leader counts its own entry toward a quorum only once it is on disk.
//! - A purge: the last purged log id before any segment is removed.
//! - Applied state: the store writes without waiting for the disk (the Raft log is the durable
//!   copy, so the write path pays one fsync per group, the log's). `applied_state` syncs the
//!   store and reports only what that sync covered; after a crash openraft re-applies the
//!   entries after it, and the store, deciding them on the same log, gives the same answers.
//! - A membership: synced beside the store before its entry is applied (see `state.rs`).
//! - A snapshot install: at the single rename of the state machine's `CURRENT` file.
//! - The committed log id is not saved: a restarted node learns it from the leader.
//!
//! # On disk (`<data>/raft/`)
//!
//! `log/` (segments), `VOTE`, `PURGED`, and `state/` (`CURRENT`, one store generation
//! `{G:020}/` with `store/` and `MEMBERSHIP`, `snapshots/`). `docs/FORMAT.md` gives the bytes
//! of an entry, the vote and the memberships.
//!
//! # Why this shape
//!
//! Entries and votes are encoded by [`codec`], never by serde over openraft's types: the
//! engine is an alpha whose types move between releases, and an upgrade must change code, not
//! the meaning of bytes already on disk. The log reuses the segment log (checksums, torn-tail
//! recovery, copy-on-cut truncation, crash-safe purge) rather than a second storage engine.
//!
//! # Serving (`node.rs`, `network.rs`, `rpc.rs`, `admin.rs`)
//!
//! [`node::ClusterNode`] runs openraft over these two; [`network`] sends Raft traffic to the
//! other nodes and [`rpc`] receives it (`causeway.cluster.v1.RaftService`, checking every
//! request's target node id and cluster id, see [`identity`]); [`admin`] serves the public
//! `causeway.v1.ClusterService`. The public `EventStoreService` asks the node to write through
//! the log and to clear reads at a consistency level.
//!
//! Reading order: [`types`], [`codec`], [`log`], [`state`], [`identity`], [`wire`],
//! [`network`], [`rpc`], [`node`], [`admin`].

use std::io;

pub mod admin;
pub mod codec;
pub mod identity;
pub mod log;
pub mod network;
pub mod node;
pub mod rpc;
pub mod state;
pub mod types;
pub mod wire;

/// The node-to-node API, `causeway.cluster.v1`.
pub mod pb {
    #![allow(missing_docs)]
    tonic::include_proto!("causeway.cluster.v1");
}

#[cfg(test)]
mod tests;

/// A core error as the I/O error openraft's storage traits carry. The message keeps the
/// core's detail (file, offset) for the log line that reports why the node stopped.
fn core_error(err: causeway_core::Error) -> io::Error {
    io::Error::other(err)
}
