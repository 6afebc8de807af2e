//! The client's one error type, decoded from the server's `tonic::Status`.
//!
//! The server follows gRPC's error guidance (see the service comment in `causeway.proto`), and
//! this module turns the cases a caller acts on into variants: a refused append
//! (FAILED_PRECONDITION with a `google.rpc.ErrorInfo` detail) becomes [`Error::Denied`], or
//! [`Error::Conflict`] when the reason is [`VERSION_CONFLICT_REASON`]; a reused idempotency key
//! (ALREADY_EXISTS) becomes [`Error::IdempotencyConflict`]; a follower's redirect (UNAVAILABLE
//! with the [`LEADER_METADATA_KEY`] header, or reason [`NOT_LEADER_REASON`] naming the leader's
//! address) becomes [`Error::NotLeader`], and the same refusal without an address (an election
//! under way) [`Error::LeaderUnknown`]; a write the cluster may or may not have applied
//! (reason [`OUTCOME_UNKNOWN_REASON`]) becomes [`Error::OutcomeUnknown`]. A TLS handshake the
//! server ended, or a plaintext client at a TLS port, is [`Error::Handshake`], whose message
//! says what is likely wrong (the router decides it from the transport error). Everything else keeps
//! the raw status in [`Error::Status`], so nothing the server said is lost.

use std::collections::BTreeMap;
use std::fmt;

use tonic::Code;
use tonic_types::StatusExt;

/// The response metadata key that carries the leader's address on a follower's UNAVAILABLE.
pub const LEADER_METADATA_KEY: &str = "x-causeway-leader";
/// The `ErrorInfo` metadata key that names the gate of a denial; every other key is a fact.
pub const GATE_METADATA_KEY: &str = "gate";
/// The `ErrorInfo` reason of a failed expected-version condition.
pub const VERSION_CONFLICT_REASON: &str = "VERSION_CONFLICT";
/// The `ErrorInfo` reason of a request refused by a cluster node that is not the leader.
pub const NOT_LEADER_REASON: &str = "NOT_LEADER";
/// The `ErrorInfo` metadata key of a [`NOT_LEADER_REASON`] refusal that names the leader's
/// address (HOST:PORT), when the refusing node knows it.
pub const LEADER_ADDRESS_INFO_KEY: &str = "leader_address";
/// The `ErrorInfo` reason of a write whose outcome the cluster cannot know: the leader changed
/// under it, or it was not committed in time.
pub const OUTCOME_UNKNOWN_REASON: &str = "OUTCOME_UNKNOWN";

/// Everything a call through [`crate::Client`] can fail with.
///
/// A `tonic::Status` from a call made some other way (through [`crate::Client::raw`]) turns
/// into the same variants:
///
/// ```
/// use std::collections::HashMap;
///
/// use causeway_client::Error;
/// use tonic_types::{ErrorDetails, StatusExt as _};
///
/// let facts = HashMap::from([
///     ("gate".to_string(), "one-email".to_string()),
///     ("tag".to_string(), "email:a@x".to_string()),
/// ]);
/// let status = tonic::Status::with_error_details(
///     tonic::Code::FailedPrecondition,
///     "tag email:a@x is taken in scope acme",
///     ErrorDetails::with_error_info("TAG_TAKEN", "causeway", facts),
/// );
/// match Error::from(status) {
///     Error::Denied { gate, code, facts, .. } => {
///         assert_eq!((gate.as_str(), code.as_str()), ("one-email", "TAG_TAKEN"));
///         assert_eq!(facts["tag"], "email:a@x");
///     }
///     other => panic!("not a denial: {other}"),
/// }
/// // Whatever the client does not model keeps its status and code.
/// let missing = Error::from(tonic::Status::not_found("no event 42"));
/// assert_eq!(missing.code(), Some(tonic::Code::NotFound));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server address could not be parsed into a URI.
    #[error("invalid server address {address:?}: {detail}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it was refused.
        detail: String,
    },

    /// The TLS files could not be used (unreadable, a certificate without its key).
    #[error("TLS: {detail}")]
    Tls {
        /// What is wrong, naming the file.
        detail: String,
    },

    /// The connection to the server could not be established.
    #[error("cannot connect to {address}: {detail}")]
    Connect {
        /// The address dialled (every one, comma-separated, when none of several answered).
        address: String,
        /// The transport's explanation, with its causes (per address, when several).
        detail: String,
    },

    /// The connection was made but the server and the client do not agree on how to talk: a
    /// TLS handshake the server ended (a client certificate it requires and did not get, or
    /// refused), or a plaintext client at a TLS port. Nothing of the request was done; the
    /// client's settings need a change, so it is not sent again.
    #[error("{detail}")]
    Handshake {
        /// The address dialled (HOST:PORT).
        address: String,
        /// What is likely wrong at the address, and the settings that fix it.
        detail: String,
    },

    /// This node is a follower; writes must go to the leader. Nothing of the request was done,
    /// so sending it to the leader is always safe ([`crate::Client`] does so by itself).
    #[error("this node is not the leader; the leader is at {leader}")]
    NotLeader {
        /// The leader's address, as the follower reported it.
        leader: String,
    },

    /// A cluster node refused the request because it knows no leader it could name (an
    /// election is under way, or a new leader has not yet confirmed its lease). Nothing of the
    /// request was done: retry after a short pause.
    #[error("this node knows no leader: {message}")]
    LeaderUnknown {
        /// The server's explanation.
        message: String,
    },

    /// A write may or may not have been applied: the leader changed while it was being
    /// committed, or the cluster did not commit it in time. Re-sending it with the same
    /// idempotency key applies it exactly once; without a key, read before writing again.
    #[error("the outcome of the write is unknown: {message}")]
    OutcomeUnknown {
        /// The server's explanation.
        message: String,
    },

    /// The server runs as a single node: it serves no cluster administration.
    #[error(
        "the server at {address} runs as a single node, not as a cluster member; restart it \
         with --node-id N (and --advertise HOST:PORT) to grow it into a cluster"
    )]
    SingleNode {
        /// The address asked.
        address: String,
    },

    /// A gate or condition refused the append; nothing of it was written.
    #[error("denied by gate {gate} ({code}): {message}{}", FactList(facts))]
    Denied {
        /// The gate's name (`dcb` and `causation` for the built-in conditions).
        gate: String,
        /// The stable, machine-readable denial code (`TAG_TAKEN`).
        code: String,
        /// The server's human-readable explanation.
        message: String,
        /// The facts the gate saw, by name.
        facts: BTreeMap<String, String>,
    },

    /// An entity's version is not what the append expected: re-read and decide again.
    #[error("version conflict: {message}")]
    Conflict {
        /// The entity's scope (empty when the server did not say).
        scope: String,
        /// The entity (empty when the server did not say).
        entity: String,
        /// What the append expected (`any`, `no_stream`, `exists` or a version).
        expected: String,
        /// The version the entity has.
        actual: String,
        /// The server's explanation.
        message: String,
    },

    /// The idempotency key was already used for an append with other content.
    #[error("idempotency conflict: {message}")]
    IdempotencyConflict {
        /// The server's explanation, which names the key.
        message: String,
    },

    /// The server's answer lacks a field this client needs; the server is too old or broken.
    #[error("the server's response has no {0}")]
    MissingField(&'static str),

    /// Any other failure, as the server (or the transport) reported it.
    #[error("{} ({}): {}", code_name(.0.code()), .0.code().description(), .0.message())]
    Status(tonic::Status),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        match status.code() {
            Code::FailedPrecondition => match status.get_details_error_info() {
                Some(info) => {
                    let mut facts: BTreeMap<String, String> = info.metadata.into_iter().collect();
                    let gate = facts.remove(GATE_METADATA_KEY).unwrap_or_default();
                    if info.reason == VERSION_CONFLICT_REASON {
                        let mut fact = |key: &str| facts.remove(key).unwrap_or_default();
                        Error::Conflict {
                            scope: fact("scope"),
                            entity: fact("entity"),
                            expected: fact("expected"),
                            actual: fact("actual"),
                            message: status.message().to_string(),
                        }
                    } else {
                        // The server's message may repeat the gate and code in front (the
                        // core's own wording); keep only the explanation.
                        let repeated = format!("denied by {gate} ({}): ", info.reason);
                        let message = status.message();
                        Error::Denied {
                            message: message
                                .strip_prefix(&repeated)
                                .unwrap_or(message)
                                .to_string(),
                            gate,
                            code: info.reason,
                            facts,
                        }
                    }
                }
                None => Error::Status(status),
            },
            Code::AlreadyExists => Error::IdempotencyConflict {
                message: status.message().to_string(),
            },
            Code::Unavailable => {
                let info = status.get_details_error_info();
                let reason = info.as_ref().map(|info| info.reason.as_str());
                let header_leader = status
                    .metadata()
                    .get(LEADER_METADATA_KEY)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string);
                let info_leader = info
                    .as_ref()
                    .and_then(|info| info.metadata.get(LEADER_ADDRESS_INFO_KEY))
                    .cloned();
                let leader = header_leader
                    .filter(|leader| !leader.is_empty())
                    .or(info_leader.filter(|leader| !leader.is_empty()));
                let message = status.message().to_string();
                match (reason, leader) {
                    (Some(OUTCOME_UNKNOWN_REASON), _) => Error::OutcomeUnknown { message },
                    (_, Some(leader)) => Error::NotLeader { leader },
                    (Some(NOT_LEADER_REASON), None) => Error::LeaderUnknown { message },
                    _ => Error::Status(status),
                }
            }
            _ => Error::Status(status),
        }
    }
}

impl Error {
    /// The gRPC code of a [`Error::Status`], `None` for the typed variants.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

/// Renders facts as ` [key=value, ...]`, or nothing when there are none.
struct FactList<'a>(&'a BTreeMap<String, String>);

impl fmt::Display for FactList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(" [")?;
        for (fact_idx, (key, value)) in self.0.iter().enumerate() {
            if fact_idx > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{key}={value}")?;
        }
        f.write_str("]")
    }
}

/// The canonical upper-case name of a gRPC code (`NOT_FOUND`), as gRPC documents them.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tonic::metadata::{MetadataMap, MetadataValue};
    use tonic_types::ErrorDetails;

    use super::*;

    fn with_info(code: Code, message: &str, reason: &str, metadata: &[(&str, &str)]) -> Error {
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let details = ErrorDetails::with_error_info(reason, "causeway", metadata);
        Error::from(tonic::Status::with_error_details(code, message, details))
    }

    #[test]
    fn failed_precondition_with_error_info_is_denied_with_gate_and_facts() {
        let error = with_info(
            Code::FailedPrecondition,
            "tag email:a@x is taken in scope acme",
            "TAG_TAKEN",
            &[
                ("gate", "one-email"),
                ("tag", "email:a@x"),
                ("scope", "acme"),
            ],
        );
        let Error::Denied {
            gate,
            code,
            message,
            facts,
        } = &error
        else {
            panic!("expected Denied, got {error:?}");
        };
        assert_eq!(gate, "one-email");
        assert_eq!(code, "TAG_TAKEN");
        assert_eq!(message, "tag email:a@x is taken in scope acme");
        assert_eq!(facts.len(), 2, "the gate name is not a fact: {facts:?}");
        assert_eq!(facts["tag"], "email:a@x");
        assert_eq!(facts["scope"], "acme");
        assert_eq!(
            error.to_string(),
            "denied by gate one-email (TAG_TAKEN): tag email:a@x is taken in scope acme \
             [scope=acme, tag=email:a@x]"
        );
    }

    #[test]
    fn a_message_that_repeats_gate_and_code_is_not_repeated_again() {
        let error = with_info(
            Code::FailedPrecondition,
            "denied by one-email (TAG_TAKEN): tag email:a is already taken",
            "TAG_TAKEN",
            &[("gate", "one-email")],
        );
        assert_eq!(
            error.to_string(),
            "denied by gate one-email (TAG_TAKEN): tag email:a is already taken"
        );
    }

    #[test]
    fn version_conflict_reason_is_conflict() {
        let error = with_info(
            Code::FailedPrecondition,
            "entity acme/order-7 is at version 4, expected 3",
            VERSION_CONFLICT_REASON,
            &[
                ("gate", "expected_version"),
                ("scope", "acme"),
                ("entity", "order-7"),
                ("expected", "3"),
                ("actual", "4"),
            ],
        );
        let Error::Conflict {
            scope,
            entity,
            expected,
            actual,
            message,
        } = &error
        else {
            panic!("expected Conflict, got {error:?}");
        };
        assert_eq!(
            (scope.as_str(), entity.as_str()),
            ("acme", "order-7"),
            "scope and entity come from the metadata"
        );
        assert_eq!((expected.as_str(), actual.as_str()), ("3", "4"));
        assert_eq!(message, "entity acme/order-7 is at version 4, expected 3");
    }

    #[test]
    fn failed_precondition_without_details_stays_a_status() {
        let error = Error::from(tonic::Status::failed_precondition("no details"));
        assert_eq!(error.code(), Some(Code::FailedPrecondition));
    }

    #[test]
    fn already_exists_is_idempotency_conflict() {
        let error = Error::from(tonic::Status::already_exists("key k was used"));
        let Error::IdempotencyConflict { message } = &error else {
            panic!("expected IdempotencyConflict, got {error:?}");
        };
        assert_eq!(message, "key k was used");
    }

    #[test]
    fn unavailable_with_leader_metadata_is_not_leader() {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            LEADER_METADATA_KEY,
            MetadataValue::from_static("10.0.0.2:7420"),
        );
        let status =
            tonic::Status::with_metadata(Code::Unavailable, "not the leader", metadata.clone());
        let error = Error::from(status);
        let Error::NotLeader { leader } = &error else {
            panic!("expected NotLeader, got {error:?}");
        };
        assert_eq!(leader, "10.0.0.2:7420");

        let plain = Error::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(plain.code(), Some(Code::Unavailable));
    }

    #[test]
    fn cluster_refusals_decode_by_their_reason() {
        let named = with_info(
            Code::Unavailable,
            "not the leader (a follower); the leader is node 2 at 10.0.0.2:7000",
            NOT_LEADER_REASON,
            &[
                ("leader_id", "2"),
                (LEADER_ADDRESS_INFO_KEY, "10.0.0.2:7000"),
            ],
        );
        let Error::NotLeader { leader } = &named else {
            panic!("expected NotLeader, got {named:?}");
        };
        assert_eq!(
            leader, "10.0.0.2:7000",
            "the address in the ErrorInfo is enough"
        );

        let unknown = with_info(
            Code::Unavailable,
            "not the leader (an election); no leader is known yet, retry shortly",
            NOT_LEADER_REASON,
            &[],
        );
        let Error::LeaderUnknown { message } = &unknown else {
            panic!("expected LeaderUnknown, got {unknown:?}");
        };
        assert!(message.contains("retry shortly"), "{message}");

        let outcome = with_info(
            Code::Unavailable,
            "the leader changed while the write was proposed",
            OUTCOME_UNKNOWN_REASON,
            &[],
        );
        let Error::OutcomeUnknown { message } = &outcome else {
            panic!("expected OutcomeUnknown, got {outcome:?}");
        };
        assert_eq!(message, "the leader changed while the write was proposed");
        assert!(
            outcome
                .to_string()
                .starts_with("the outcome of the write is unknown"),
            "{outcome}"
        );

        let other = with_info(Code::Unavailable, "shutting down", "SOMETHING_ELSE", &[]);
        assert_eq!(other.code(), Some(Code::Unavailable));
    }

    #[test]
    fn other_codes_keep_the_status_and_name_the_code() {
        let error = Error::from(tonic::Status::not_found("event 42 not found"));
        assert_eq!(error.code(), Some(Code::NotFound));
        let text = error.to_string();
        assert!(text.starts_with("NOT_FOUND"), "{text}");
        assert!(text.ends_with("event 42 not found"), "{text}");
    }
}
