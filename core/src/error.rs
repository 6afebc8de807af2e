//! The one error type of `causeway-core`.
//!
//! Each variant says what the caller should do: fix the input (`InvalidInput`, `InvalidField`,
//! `LimitExceeded`),
//! look elsewhere (`NotFound`), stop and call an operator (`Corrupt`, `Poisoned`), or retry later
//! (`Io` on reads, `Overloaded` when the write queue is full, `Closed` after shutdown).
//! [`Error::is_deterministic`] separates answers that every replica would give for the same
//! command from local failures, which must stop a replica rather than let it diverge.

use std::path::{Path, PathBuf};

use crate::clock::ClockError;

/// The result type of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message names the field.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A part of the request is refused for what the store holds or the rest of the request
    /// says (an event id already taken, a causation parent later in the append, a gate that is
    /// not registered), which validation alone cannot see; `field` names the part.
    #[error("invalid input: {message}")]
    InvalidField {
        /// The part's path as the gRPC API names it, within the append (`events[1].id`,
        /// `events[0].causation[2]`, `gates[0]`).
        field: String,
        /// Why it was refused, naming the value.
        message: String,
    },

    /// The request passes a documented bound; `limit` is the constant's name.
    #[error("{what} is {actual}, over the limit {limit} = {max}")]
    LimitExceeded {
        /// The name of the bound, as in `limits.rs` (`APPEND_BYTES_MAX`).
        limit: &'static str,
        /// The bound's value.
        max: u64,
        /// The value the request had.
        actual: u64,
        /// What was measured, naming the field (`event 3 tags`).
        what: String,
    },

    /// An entity's version is not what the append expected.
    #[error("entity {scope}/{entity} is at version {actual}, expected {expected}")]
    Conflict {
        /// The entity's scope.
        scope: String,
        /// The entity.
        entity: String,
        /// What the append expected (`any`, `no_stream`, `exists` or a version).
        expected: String,
        /// The version it has.
        actual: crate::event::Version,
    },

    /// A gate or condition refused the append; nothing of it was written.
    #[error("denied by {gate} ({code}): {message}")]
    Denied {
        /// The gate's name (`dcb` and `causation` for the built-in conditions).
        gate: String,
        /// A stable, machine-readable code (`TAG_TAKEN`).
        code: String,
        /// A human-readable explanation.
        message: String,
        /// The facts the gate saw.
        facts: std::collections::BTreeMap<String, String>,
    },

    /// An idempotency key was reused with different content.
    #[error("idempotency key {key:?} was already used for a different append")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },

    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// Stored data fails a check: a bad checksum, a broken chain or an impossible value.
    #[error("corrupt data in {} at offset {offset}: {detail}", file.display())]
    Corrupt {
        /// The file that holds the damaged bytes.
        file: PathBuf,
        /// Byte offset of the damaged record within `file`.
        offset: u64,
        /// What failed.
        detail: String,
    },

    /// An I/O call failed.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// A write or fsync failed earlier, so the store refuses all further writes. The on-disk
    /// state after a failed fsync is unknown; reopening the store re-reads what is really there.
    #[error("the store refuses writes after an earlier write failure: {0}")]
    Poisoned(String),

    /// Another process or handle holds the data directory.
    #[error("data directory {} is locked by another store", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The clock gave an unusable reading.
    #[error(transparent)]
    Clock(#[from] ClockError),

    /// The writer's queue is full; nothing was queued. Only callers that asked not to wait
    /// ([`crate::Store::append_with`]) see this; retry later.
    #[error("the store is busy: the write queue is full ({limit} = {max}); retry later")]
    Overloaded {
        /// The name of the bound, as in `limits.rs` (`WRITE_QUEUE_MAX`).
        limit: &'static str,
        /// The bound's value.
        max: u64,
    },

    /// The store was closed while the call was waiting.
    #[error("the store is closed")]
    Closed,

    /// The log holds something this build cannot apply (a gate definition that no longer
    /// compiles, an unknown system event). The store does not open: going on would make this
    /// node decide differently from replicas that can apply it.
    #[error("the log at position {position} is incompatible with this build: {detail}")]
    Incompatible {
        /// The position of the event that cannot be applied.
        position: u64,
        /// What is wrong with it.
        detail: String,
    },

    /// The store is set up in a way that replication cannot keep the same on every node.
    #[error("this store cannot apply replicated entries: {0}")]
    Unreplicable(String),

    /// A replicated log entry at or below the last one applied: nothing was written.
    #[error("entry {} is at or below entry {}, the last applied", entry.index, applied.index)]
    AlreadyApplied {
        /// The entry offered.
        entry: crate::command::EntryId,
        /// The last entry applied.
        applied: crate::command::EntryId,
    },
}

/// A refusal of one part of a request: the part's path, as the gRPC API names it
/// (`events[2].tags[0]`, `expected[1].entity`, `scopes[0]`), and the error. Validation returns
/// it so a server can say which field was wrong without parsing the message; the path is
/// relative to what was validated, and [`FieldError::within`] puts it inside a larger request.
#[derive(Debug)]
pub struct FieldError {
    /// The path of the refused part, relative to the value validated.
    pub field: String,
    /// Why it was refused: always `InvalidInput` or `LimitExceeded` (boxed, so the result of a
    /// check stays small).
    pub error: Box<Error>,
}

impl FieldError {
    /// A refusal of the part at `field`.
    pub fn new(field: impl Into<String>, error: Error) -> FieldError {
        FieldError {
            field: field.into(),
            error: Box::new(error),
        }
    }

    /// The same refusal with `prefix` before its path (`events[2]` and `scope` give
    /// `events[2].scope`; an empty path becomes `prefix` itself).
    pub fn within(self, prefix: &str) -> FieldError {
        let field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        FieldError { field, ..self }
    }
}

impl From<FieldError> for Error {
    fn from(refusal: FieldError) -> Error {
        *refusal.error
    }
}

impl Error {
    /// True when every replica applying the same command would return this same error, so it is
    /// an answer for the client. False for local failures (I/O, corruption, a poisoned store),
    /// which during replicated apply must stop the node instead of letting replicas diverge.
    pub fn is_deterministic(&self) -> bool {
        match self {
            Error::InvalidInput(_)
            | Error::InvalidField { .. }
            | Error::LimitExceeded { .. }
            | Error::NotFound(_)
            | Error::Conflict { .. }
            | Error::Denied { .. }
            | Error::IdempotencyConflict { .. }
            | Error::AlreadyApplied { .. } => true,
            Error::Corrupt { .. }
            | Error::Io { .. }
            | Error::Poisoned(_)
            | Error::Locked { .. }
            | Error::Clock(_)
            | Error::Overloaded { .. }
            | Error::Closed
            | Error::Incompatible { .. }
            | Error::Unreplicable(_) => false,
        }
    }

    /// A copy of a deterministic error (an answer), `None` for the others: an answer can be
    /// given again, a local failure cannot.
    pub(crate) fn clone_answer(&self) -> Option<Error> {
        Some(match self {
            Error::InvalidInput(message) => Error::InvalidInput(message.clone()),
            Error::InvalidField { field, message } => Error::InvalidField {
                field: field.clone(),
                message: message.clone(),
            },
            Error::LimitExceeded {
                limit,
                max,
                actual,
                what,
            } => Error::LimitExceeded {
                limit,
                max: *max,
                actual: *actual,
                what: what.clone(),
            },
            Error::NotFound(what) => Error::NotFound(what.clone()),
            Error::Conflict {
                scope,
                entity,
                expected,
                actual,
            } => Error::Conflict {
                scope: scope.clone(),
                entity: entity.clone(),
                expected: expected.clone(),
                actual: *actual,
            },
            Error::Denied {
                gate,
                code,
                message,
                facts,
            } => Error::Denied {
                gate: gate.clone(),
                code: code.clone(),
                message: message.clone(),
                facts: facts.clone(),
            },
            Error::IdempotencyConflict { key } => Error::IdempotencyConflict { key: key.clone() },
            Error::AlreadyApplied { entry, applied } => Error::AlreadyApplied {
                entry: *entry,
                applied: *applied,
            },
            _ => return None,
        })
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(file: &Path, offset: u64, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            file: file.to_path_buf(),
            offset,
            detail: detail.into(),
        }
    }
}
