//! The types openraft is instantiated with: what a log entry carries ([`Proposal`]), what applying
//! it answers ([`Response`]), and the [`TypeConfig`] that ties them to node ids and terms.
//!
//! The leader id is openraft's standard one (at most one leader per term), so a log id is a
//! term and an index, exactly the core's [`EntryId`]: the state machine records the same pair in
//! the store that the log keeps in its frames.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use causeway_core::{Command, EntryId, Error, Receipt};
use openraft::vote::leader_id_std;

openraft::declare_raft_types!(
    /// Causeway's openraft type configuration: u64 node ids and terms, nodes known by address,
    /// one leader per term, entries that carry stamped commands.
    pub TypeConfig:
        D = Proposal,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Term = u64,
        LeaderId = leader_id_std::LeaderId<u64, u64>,
);

/// A log id: the term of the leader that proposed an entry and the entry's index.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote: a term, the node voted for, and whether a quorum granted it.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A log entry as openraft hands it to storage.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A membership (joint configurations of voters, and every node's address).
pub type Membership = openraft::Membership<u64, openraft::BasicNode>;
/// A membership with the log id of the entry that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers: the last log id it includes and the membership in effect there.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// The payload of a normal entry: a command the leader stamped (ids and timestamp fixed), which
/// every replica applies with the same result.
///
/// Cheap to clone (openraft clones entries to replicate them): the command is shared, and so
/// are its encoded bytes ([`Command::encode`]), made at most once per node, when the entry is
/// first written to the log or sent, or kept from the bytes it was decoded from.
#[derive(Clone, Debug)]
pub struct Proposal {
    command: Arc<Command>,
    encoded: Arc<OnceLock<Bytes>>,
}

impl Proposal {
    /// A proposal of `command`.
    pub fn new(command: Command) -> Proposal {
        Proposal {
            command: Arc::new(command),
            encoded: Arc::new(OnceLock::new()),
        }
    }

    /// A proposal decoded from `encoded`, which it keeps as its encoding.
    pub fn decoded(command: Command, encoded: Bytes) -> Proposal {
        Proposal {
            command: Arc::new(command),
            encoded: Arc::new(OnceLock::from(encoded)),
        }
    }

    /// The command.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// The command, copied only when another clone still holds it.
    pub fn into_command(self) -> Command {
        Arc::try_unwrap(self.command).unwrap_or_else(|shared| (*shared).clone())
    }

    /// The command's encoding, made on first use.
    pub fn encoded(&self) -> &Bytes {
        self.encoded
            .get_or_init(|| Bytes::from(self.command.encode()))
    }
}

impl PartialEq for Proposal {
    fn eq(&self, other: &Proposal) -> bool {
        self.command == other.command
    }
}

impl Eq for Proposal {}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.command.action {
            causeway_core::Action::Append { append, .. } => {
                return write!(f, "append of {} events", append.events.len());
            }
            causeway_core::Action::RegisterGate { .. } => "gate registration",
            causeway_core::Action::RemoveGate { .. } => "gate removal",
            causeway_core::Action::Configure { .. } => "settings change",
            causeway_core::Action::Noop => "no-op",
        };
        f.write_str(kind)
    }
}

/// What applying one entry answered. Both variants are answers for the client and the same on
/// every replica; an error that is not deterministic never becomes a response (it stops the
/// node as a storage error).
#[derive(Debug)]
pub enum Response {
    /// The command was applied (for a blank or membership entry: the receipt of a no-op).
    Applied(Receipt),
    /// The store refused the command deterministically (a gate denial, a failed condition, a
    /// reused idempotency key with other content); nothing of it was written.
    Refused(Error),
}

/// The core's name for a log id.
pub fn entry_id(log_id: &LogId) -> EntryId {
    EntryId {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

/// openraft's name for a core entry id.
pub fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(leader_id_std::CommittedLeaderId::new(term), index)
}
