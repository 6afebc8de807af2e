//! `causeway-core`: the synchronous storage core of Causeway.
//!
//! An event store with a durable, checksummed, hash-chained log ([`store::Store`]), the clock
//! seam every timestamp comes through ([`clock`]), and the bounds every input is checked
//! against ([`limits`]). No async runtime and no networking: the server crate wraps this in gRPC
//! and replication, and embedders can use it directly.
//!
//! Reading order: [`event`] (what is stored), [`store`] (how it is written and read),
//! [`segment`] (the file format underneath), then [`index`](crate::store) and [`query`].

pub mod clock;
mod codec;
pub mod error;
pub mod event;
pub mod gate;
mod index;
pub mod limits;
pub mod query;
pub mod segment;
pub mod store;

pub use error::{Error, Result};
pub use event::{Direction, Event, EventId, Hash, NewEvent, Position, Version};
pub use query::{Filter, QueryItem};
pub use store::{Append, Command, Committed, Config, Durability, ReadBatch, Receipt, Store};
