//! `causewayd`: the Causeway event store served over gRPC.
//!
//! The server wraps the synchronous core (`causeway-core`) in `causeway.v1.EventStoreService`.
//! No store call runs on an async worker: every one goes through a bounded blocking pool, and a
//! full pool is RESOURCE_EXHAUSTED at once. Subscriptions are async tasks fed by one thread that
//! watches the committed head, so an idle subscriber holds no thread. Alongside the API it
//! serves gRPC health and reflection, an admin HTTP port (metrics, health, a web console),
//! backups, and it shuts down gracefully on SIGINT or SIGTERM, closing the store only after
//! requests in flight have finished.
//!
//! Reading order: [`config`] (how it is started), [`server`] (what it serves and how it stops),
//! [`service`] (the RPCs), [`subscribe`] (the live tail), [`pool`] (where store calls run),
//! then [`convert`] and [`status`] (the edge between wire and core), [`wire`] (log reads
//! encoded straight from the stored records), and [`limits`].
//! [`operations`] serves backups, shipping files as [`checkpoint`] does for snapshots too, and
//! [`restore`] is `causewayd restore`, which makes a data directory of a backup. The
//! operator's side: [`monitor`] (the admin port and readiness), [`metrics`], [`observe`] (every
//! RPC counted and its failures logged), [`malformed`] (requests tonic could not decode,
//! answered as bad input), [`budget`] (the bytes of requests in flight), [`console`],
//! [`incoming`] (bounded listeners) and [`tls`] (TLS on
//! both ports and between nodes, reloaded when its files change). [`auth`] decides who a
//! request comes from and what it may do in which scope (`--auth-file`).

/// The generated protobuf types and gRPC server of `causeway.v1`.
pub mod pb {
    #![allow(missing_docs)]
    tonic::include_proto!("causeway.v1");
    /// The file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("causeway_descriptor");
}

pub mod append_stream;
pub mod auth;
pub mod budget;
pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod console;
pub mod convert;
#[doc(hidden)]
pub mod fuzzing;
pub mod incoming;
pub mod limits;
pub mod live;
pub mod malformed;
pub mod metrics;
pub mod monitor;
pub mod observe;
pub mod operations;
pub mod pool;
pub mod reload;
pub mod repair;
pub mod restore;
pub mod scrub;
pub mod server;
pub mod service;
pub mod status;
pub mod subscribe;
pub mod tls;
pub mod wire;

pub use config::Config;
pub use server::{Server, StartError, shutdown_signal};
