//! `causeway-client`: talk to a Causeway server over gRPC.
//!
//! [`Client`] connects to a server, or to a cluster through any of its members (following the
//! leader by itself), and has one typed method per RPC of `causeway.v1`; [`AppendBuilder`] and
//! [`EventBuilder`] assemble appends with their conditions, and [`FilterBuilder`] the filters
//! of reads and subscriptions; [`AppendStream`] sends many appends over one stream. Failures
//! come back as one small [`Error`] whose variants say what to do: re-read on
//! [`Error::Conflict`], show the gate and facts of [`Error::Denied`], resend with the same
//! idempotency key on [`Error::OutcomeUnknown`]. [`ClusterAdmin`] forms a cluster, changes its
//! members and shows every member's state. [`receipt::verify`] checks a receipt offline against
//! the events and the server's public key, with no server involved. [`backup::backup`] writes a
//! node's store into a backup directory, checking every byte. [`timestamp`] converts the wire's
//! hybrid timestamps to and from milliseconds. [`Tls`] reaches a server that serves TLS, with a
//! client certificate for mutual TLS. The wire types are in [`pb`], generated from
//! `proto/causeway/v1`.
//!
//! The crate depends on the protobuf API only, never on `causeway-core`: it is the reference
//! for what a client in any language needs.

/// The generated protobuf types and gRPC client of `causeway.v1`.
pub mod pb {
    #![allow(missing_docs)]
    tonic::include_proto!("causeway.v1");
}

pub mod append;
pub mod backup;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod credentials;
pub mod error;
pub mod filter;
pub mod follow;
pub mod receipt;
pub mod stream;
pub mod timestamp;
pub mod tls;

pub use append::{AppendBuilder, EventBuilder, Expected};
pub use backup::{Backup, BackupError};
pub use client::{Client, Start, SubscribeItem};
pub use cluster::{ClusterAdmin, ClusterView, MemberStatus};
pub use credentials::{Credentials, InvalidToken};
pub use error::Error;
pub use filter::FilterBuilder;
pub use receipt::ReceiptError;
pub use stream::AppendStream;
pub use tls::Tls;
