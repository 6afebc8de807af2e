//! `causeway-core`: the synchronous storage core of Causeway.
//!
//! An event store with a durable, checksummed, hash-chained log ([`store::Store`]), the gates
//! every write must pass ([`gate`]), receipts that prove what was written ([`receipt`]), the
//! causal graph ([`graph`]), the clock seam every timestamp comes through ([`clock`]), and the
//! bounds every input is checked against ([`limits`]). No async runtime and no networking: the
//! server crate wraps this in gRPC and replication, and embedders can use it directly.
//!
//! Reading order: [`event`] (what is stored), [`command`] (what a write asks for, and its
//! canonical encoding), [`store`] (how it is written and read), [`gate`] (what a write must
//! pass), [`segment`] (the file format underneath), [`disk`] (the seam every write and sync
//! goes through), then [`query`], [`graph`] and [`receipt`].

pub mod clock;
pub mod command;
pub mod disk;
pub mod error;
pub mod event;
pub mod gate;
pub mod graph;
pub mod limits;
pub mod metafile;
pub mod query;
pub mod receipt;
pub mod segment;
pub mod store;
pub mod syncer;

#[doc(hidden)]
pub mod fuzzing;

mod codec;
mod index;

pub use codec::{EventRecord, Gates, Ids, StrBytes, Strs, TrailerRef};
pub use command::{
    Action, Append, Command, DcbCondition, EntryId, Expected, ExpectedVersion, Settings,
};
pub use error::{Error, FieldError, Result};
pub use event::{Direction, Event, EventId, Hash, NewEvent, Position, Version};
pub use gate::{Denial, Gate, GateDefinition, Rule};
pub use graph::{Edge, Graph};
pub use query::{Filter, QueryItem};
pub use receipt::{Committed, GatePass, Receipt, Signer};
pub use store::{Config, Durability, Grouped, ReadBatch, RustGate, Spent, Store, StoreId};
