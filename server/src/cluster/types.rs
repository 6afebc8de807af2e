//! The types openraft is instantiated with: what a log entry carries ([`Proposal`]), what applying
//! it answers ([`Response`]), and the [`TypeConfig`] that ties them to node ids and terms.
//!
//! The leader id is openraft's standard one (at most one leader per term), so a log id is a
//! term and an index, exactly the core's [`EntryId`]: the state machine records the same pair in
//! the store that the log keeps in its frames.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

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
/// Cheap to clone (openraft clones entries to replicate them, and the log keeps its newest ones
/// for replication): the clones share the command and its encoded bytes ([`Command::encode`]),
/// made at most once per node, when the entry is first written to the log or sent, or kept
/// from the bytes it was decoded from. The state machine takes the command out to apply it
/// ([`Proposal::take_command`]), so an entry the log still holds is not copied event by event
/// on every replica; the clones keep the bytes, which is all replication reads.
#[derive(Clone)]
pub struct Proposal {
    shared: Arc<Shared>,
}

struct Shared {
    /// The command until the state machine takes it.
    command: Mutex<Option<Command>>,
    encoded: OnceLock<Bytes>,
    /// What [`fmt::Display`] says, kept once the command is taken.
    summary: Summary,
}

#[derive(Clone, Copy, Debug)]
enum Summary {
    Append(usize),
    RegisterGate,
    RemoveGate,
    Configure,
    Noop,
}

impl Summary {
    fn of(command: &Command) -> Summary {
        match &command.action {
            causeway_core::Action::Append { append, .. } => Summary::Append(append.events.len()),
            causeway_core::Action::RegisterGate { .. } => Summary::RegisterGate,
            causeway_core::Action::RemoveGate { .. } => Summary::RemoveGate,
            causeway_core::Action::Configure { .. } => Summary::Configure,
            causeway_core::Action::Noop => Summary::Noop,
        }
    }
}

impl Proposal {
    /// A proposal of `command`.
    pub fn new(command: Command) -> Proposal {
        Proposal::with(command, OnceLock::new())
    }

    /// A proposal decoded from `encoded`, which it keeps as its encoding.
    pub fn decoded(command: Command, encoded: Bytes) -> Proposal {
        Proposal::with(command, OnceLock::from(encoded))
    }

    fn with(command: Command, encoded: OnceLock<Bytes>) -> Proposal {
        Proposal {
            shared: Arc::new(Shared {
                summary: Summary::of(&command),
                command: Mutex::new(Some(command)),
                encoded,
            }),
        }
    }

    fn command(&self) -> MutexGuard<'_, Option<Command>> {
        // The lock is held only to encode or take the command, neither of which panics.
        self.shared
            .command
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The command, for the state machine to apply: taken out of the clones the first time
    /// (they keep the encoded bytes), decoded from the bytes for any later apply of the same
    /// entry.
    pub fn take_command(self) -> Result<Command, Error> {
        let encoded = self.encoded().clone();
        match self.command().take() {
            Some(command) => Ok(command),
            None => Command::decode(&encoded),
        }
    }

    /// The command's encoding, made on first use.
    pub fn encoded(&self) -> &Bytes {
        self.shared.encoded.get_or_init(|| {
            let command = self.command();
            Bytes::from(
                command
                    .as_ref()
                    .expect("a command is taken only after it is encoded")
                    .encode(),
            )
        })
    }
}

impl PartialEq for Proposal {
    /// Equal commands have equal encodings: the encoding is the on-disk format.
    fn eq(&self, other: &Proposal) -> bool {
        self.encoded() == other.encoded()
    }
}

impl Eq for Proposal {}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proposal")
            .field("summary", &self.shared.summary)
            .field("encoded_bytes", &self.shared.encoded.get().map(Bytes::len))
            .finish()
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.shared.summary {
            Summary::Append(n_events) => return write!(f, "append of {n_events} events"),
            Summary::RegisterGate => "gate registration",
            Summary::RemoveGate => "gate removal",
            Summary::Configure => "settings change",
            Summary::Noop => "no-op",
        })
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
