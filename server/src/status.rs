//! The one mapping from failures to gRPC statuses: [`to_status`].
//!
//! Every RPC answers an error through here, so the mapping is decided in one place and follows
//! gRPC's own guidance: bad input is INVALID_ARGUMENT with a message naming the field or the
//! limit (plus a `google.rpc.BadRequest` for a field the server checks, and an `ErrorInfo` with
//! reason `LIMIT_EXCEEDED` for a bound); a failed condition or gate is FAILED_PRECONDITION with
//! a `google.rpc.ErrorInfo` detail (domain `causeway`) that a client decodes instead of parsing
//! text; an idempotency key reused with other content is ALREADY_EXISTS; overload (a full pool,
//! too many subscriptions) is RESOURCE_EXHAUSTED; damaged data is DATA_LOSS; a store that cannot
//! serve right now (closed, poisoned by a failed fsync, an I/O error) is UNAVAILABLE, so a
//! client retries, later or on another replica, rather than treating it as its own mistake.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::limits::{
    ECHO_CHARS_MAX, RETRY_AFTER_NO_LEADER, RETRY_AFTER_OUTCOME_UNKNOWN, RETRY_AFTER_OVERLOAD,
    RETRY_AFTER_SHUTDOWN,
};
use crate::pool::PoolError;

/// The `domain` of every `ErrorInfo` this server attaches.
pub const ERROR_DOMAIN: &str = "causeway";
/// The `ErrorInfo` reason of an expected-version conflict.
pub const REASON_VERSION_CONFLICT: &str = "VERSION_CONFLICT";
/// The `ErrorInfo` reason of a request over a documented bound.
pub const REASON_LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
/// The `ErrorInfo` reason of a request refused because the server is at capacity.
pub const REASON_OVERLOADED: &str = "OVERLOADED";
/// The `ErrorInfo` reason of a request a cluster follower does not serve: the metadata names
/// the leader (`leader_id`, `leader_address`) when it is known.
pub const REASON_NOT_LEADER: &str = "NOT_LEADER";
/// The `ErrorInfo` reason of a write whose outcome the node cannot know (the leader changed or
/// the cluster did not commit it in time): it may or may not be in the log. A retry with the
/// same idempotency key is safe.
pub const REASON_OUTCOME_UNKNOWN: &str = "OUTCOME_UNKNOWN";
/// The response header (and `ErrorInfo` key) that carries the leader's address.
pub const LEADER_HEADER: &str = "x-causeway-leader";

/// Everything an RPC can fail with.
#[derive(Debug)]
pub enum Error {
    /// The store refused or failed the call.
    Core(causeway_core::Error),
    /// The store refused a part of the request at `field` (an event's name too long, empty, or
    /// with a control character): its status, with a `BadRequest` naming the field.
    Field {
        /// The part's path in the request (`events[2]`).
        field: String,
        /// The store's refusal.
        source: causeway_core::Error,
    },
    /// A request field could not be converted (a malformed UUID, an unknown enum value).
    InvalidArgument {
        /// The field, as a path in the request (`events[2].causation[0]`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The blocking pool refused or lost the call.
    Pool(PoolError),
    /// As many appends as the server admits are waiting for the writer.
    AppendsFull {
        /// The number of appends admitted at once.
        max: usize,
    },
    /// The request bytes in flight would go past `--max-in-flight-request-bytes`.
    RequestBytesFull {
        /// The configured budget, in bytes.
        max: usize,
    },
    /// One request is larger than the whole of `--max-in-flight-request-bytes`: it can never
    /// fit, so it is not worth retrying.
    RequestLargerThanBudget {
        /// The request's size, in bytes: its declared length, or what it sent before it was
        /// refused.
        request_bytes: usize,
        /// The configured budget, in bytes.
        max: usize,
    },
    /// The configured number of subscriptions is open.
    SubscriptionsFull {
        /// The configured maximum.
        max: usize,
    },
    /// This cluster node is not the leader, and the request needs one.
    NotLeader {
        /// The leader's node id and address, when this node knows them.
        leader: Option<(u64, String)>,
        /// Why (no leader elected yet, a new leader not yet confirmed, a follower).
        reason: String,
    },
    /// The cluster could not serve the request now (no quorum, a stopped Raft node, a write
    /// that was not committed in time); `outcome_unknown` says a write may still be applied.
    ClusterUnavailable {
        /// What happened.
        detail: String,
        /// True for a write that may or may not be in the log.
        outcome_unknown: bool,
    },
    /// The request cannot be carried out in this node's state (a cluster formed twice, a
    /// single node asked for cluster operations).
    Precondition(String),
    /// As many backups as the server runs at once are running.
    BackupsFull {
        /// `BACKUPS_MAX`.
        max: usize,
    },
    /// A failure on this node's own disk while serving an operation (a backup): reported
    /// without the paths the error names, which stay in the node's log.
    Local(causeway_core::Error),
    /// The server is shutting down (or its store closed).
    ShuttingDown {
        /// For a subscription, the position to resume from.
        resume_from: Option<u64>,
    },
}

/// At most `ECHO_CHARS_MAX` characters of a value a client sent, quoted (control characters
/// escaped), with its length when it was cut: a message never grows with the input.
pub fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS_MAX) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
    }
}

impl Error {
    /// An invalid field of a request.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A part of the request the core refused, its path under `prefix` (`""`, `append`,
    /// `filter`).
    pub fn field(prefix: &str, refusal: causeway_core::FieldError) -> Error {
        let refusal = refusal.within(prefix);
        Error::Field {
            field: refusal.field,
            source: *refusal.error,
        }
    }

    /// A store call's error, naming `field` in a BadRequest when it refuses the request's
    /// input (any other error keeps its own status). For refusals the store can only make
    /// while it runs, not in its validation: a page limit, a gate named but not registered.
    /// A refusal that names its own part (`InvalidField`) is named `field` all the same: the
    /// caller passes that part's path within the request.
    pub fn refused(field: impl Into<String>, err: causeway_core::Error) -> Error {
        let err = match err {
            causeway_core::Error::InvalidField { message, .. } => {
                causeway_core::Error::InvalidInput(message)
            }
            err => err,
        };
        let invalid = match &err {
            causeway_core::Error::InvalidInput(_) => true,
            // GATES_MAX is a quota (RESOURCE_EXHAUSTED), not a fault of the request.
            causeway_core::Error::LimitExceeded { limit, .. } => *limit != "GATES_MAX",
            _ => false,
        };
        if invalid {
            Error::Field {
                field: field.into(),
                source: err,
            }
        } else {
            Error::Core(err)
        }
    }
}

impl From<causeway_core::Error> for Error {
    fn from(err: causeway_core::Error) -> Error {
        Error::Core(err)
    }
}

impl From<PoolError> for Error {
    fn from(err: PoolError) -> Error {
        Error::Pool(err)
    }
}

/// Maps any failure of an RPC to the status the client sees. A status of the server's own
/// trouble (INTERNAL, UNAVAILABLE, DATA_LOSS, UNKNOWN) never names a path of this machine: a
/// file is named by its file name alone (`00000000000000000001.seg`), with the offset or
/// position, and the full detail goes to the server's log.
pub fn to_status(err: impl Into<Error>) -> Status {
    without_paths(status_of(err.into()))
}

fn status_of(err: Error) -> Status {
    use causeway_core::Error as Core;
    match err {
        // A refusal that names its part gets a BadRequest for it wherever it is answered.
        Error::Core(Core::InvalidField { field, message }) => status_of(Error::Field {
            field,
            source: Core::InvalidInput(message),
        }),
        Error::Core(err) => {
            // Local failures need an operator; a closed store is only a shutdown.
            if !err.is_deterministic() && !matches!(err, Core::Closed) {
                tracing::error!(%err, "a store call failed");
            }
            let message = client_message(&err);
            match err {
                // `InvalidField` is answered above, with its BadRequest.
                Core::InvalidInput(_) | Core::InvalidField { .. } => {
                    Status::invalid_argument(message)
                }
                Core::LimitExceeded {
                    limit,
                    max,
                    actual,
                    what,
                } => with_info(
                    // A bound on what the store holds (registered gates) is a quota, not bad
                    // input: the same request succeeds once there is room.
                    if limit == "GATES_MAX" {
                        Code::ResourceExhausted
                    } else {
                        Code::InvalidArgument
                    },
                    message,
                    REASON_LIMIT_EXCEEDED,
                    [
                        ("limit", limit.to_string()),
                        ("max", max.to_string()),
                        ("actual", actual.to_string()),
                        ("what", what),
                    ]
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value))
                    .collect(),
                ),
                Core::Conflict {
                    scope,
                    entity,
                    expected,
                    actual,
                } => with_info(
                    Code::FailedPrecondition,
                    message,
                    REASON_VERSION_CONFLICT,
                    [
                        ("scope", scope),
                        ("entity", entity),
                        ("expected", expected),
                        ("actual", actual.0.to_string()),
                    ]
                    .into_iter()
                    .map(|(key, value)| (key.to_string(), value))
                    .collect(),
                ),
                Core::Denied {
                    gate, code, facts, ..
                } => {
                    // The facts as the gate named them, and the gate under `gate` (which wins
                    // should a gate ever report a fact of that name).
                    let mut metadata: HashMap<String, String> = facts.into_iter().collect();
                    metadata.insert("gate".to_string(), gate);
                    with_info(Code::FailedPrecondition, message, &code, metadata)
                }
                Core::IdempotencyConflict { key } => with_info(
                    Code::AlreadyExists,
                    message,
                    "IDEMPOTENCY_KEY_REUSED",
                    HashMap::from([("idempotency_key".to_string(), key)]),
                ),
                Core::NotFound(_) => Status::not_found(message),
                Core::Corrupt { .. } => Status::data_loss(message),
                Core::Overloaded { limit, max } => with_info(
                    Code::ResourceExhausted,
                    message,
                    REASON_OVERLOADED,
                    HashMap::from([
                        ("limit".to_string(), limit.to_string()),
                        ("max".to_string(), max.to_string()),
                    ]),
                ),
                Core::Io { .. } | Core::Poisoned(_) | Core::Closed => Status::unavailable(message),
                // Both are found when a store opens or is set up, never in an RPC's own work.
                Core::Incompatible { .. } | Core::Unreplicable(_) => Status::internal(message),
                Core::AlreadyApplied { .. } => Status::aborted(message),
                Core::Locked { .. } | Core::Clock(_) => Status::internal(message),
            }
        }
        Error::Field { field, source } => {
            let status = status_of(Error::Core(source));
            let mut details = status.get_error_details();
            details.add_bad_request_violation(&field, status.message());
            // The path leads the message, as for every other INVALID_ARGUMENT.
            let message = format!("invalid {field}: {}", status.message());
            Status::with_error_details(status.code(), message, details)
        }
        Error::InvalidArgument { field, reason } => Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid {field}: {reason}"),
            ErrorDetails::with_bad_request_violation(field, reason),
        ),
        Error::Pool(PoolError::Full { queue }) => with_info(
            Code::ResourceExhausted,
            format!(
                "the server is busy: {queue} requests are queued (pool queue full); retry later"
            ),
            REASON_OVERLOADED,
            HashMap::from([("limit".to_string(), "pool_queue".to_string())]),
        ),
        Error::Pool(PoolError::Panicked) => {
            Status::internal("the request failed on a server bug; see the server log")
        }
        Error::Pool(PoolError::Stopped) | Error::ShuttingDown { resume_from: None } => {
            shutting_down("the server is shutting down".to_string())
        }
        Error::ShuttingDown {
            resume_from: Some(position),
        } => shutting_down(format!(
            "the server is shutting down; resume from position {position}"
        )),
        Error::AppendsFull { max } => with_info(
            Code::ResourceExhausted,
            format!(
                "the server is busy: {max} appends are waiting for the writer \
                 (pool_threads + pool_queue); retry later"
            ),
            REASON_OVERLOADED,
            HashMap::from([("limit".to_string(), "appends_in_flight".to_string())]),
        ),
        Error::NotLeader { leader, reason } => {
            let mut metadata = HashMap::new();
            let message = match &leader {
                Some((id, address)) => {
                    metadata.insert("leader_id".to_string(), id.to_string());
                    metadata.insert("leader_address".to_string(), address.clone());
                    format!("not the leader ({reason}); the leader is node {id} at {address}")
                }
                None => format!("not the leader ({reason}); no leader is known yet, retry shortly"),
            };
            let mut status = with_info(Code::Unavailable, message, REASON_NOT_LEADER, metadata);
            if let Some((_, address)) = leader
                && let Ok(value) = address.parse()
            {
                status.metadata_mut().insert(LEADER_HEADER, value);
            }
            status
        }
        Error::ClusterUnavailable {
            detail,
            outcome_unknown: true,
        } => with_info(
            Code::Unavailable,
            format!(
                "{detail}; the write may or may not be applied: sent again with the same \
                 idempotency key it is applied exactly once; without a key, read before \
                 writing it again"
            ),
            REASON_OUTCOME_UNKNOWN,
            HashMap::new(),
        ),
        Error::ClusterUnavailable {
            detail,
            outcome_unknown: false,
        } => Status::unavailable(detail),
        Error::Precondition(detail) => Status::failed_precondition(detail),
        Error::BackupsFull { max } => with_info(
            Code::ResourceExhausted,
            format!("{max} backups are running, the most at once (BACKUPS_MAX); retry later"),
            REASON_OVERLOADED,
            HashMap::from([("limit".to_string(), "BACKUPS_MAX".to_string())]),
        ),
        Error::Local(err) => {
            tracing::error!(%err, "a backup failed on this node");
            match err {
                causeway_core::Error::Corrupt { .. } => Status::data_loss(
                    "the node's store is damaged (the node's log names the file and offset)",
                ),
                causeway_core::Error::Io { source, .. } => Status::unavailable(format!(
                    "an i/o error on the node's disk ({}); the node's log has the details",
                    source.kind()
                )),
                causeway_core::Error::Closed => {
                    status_of(Error::Core(causeway_core::Error::Closed))
                }
                // Any other failure may name a path of this node; the log has it.
                _ => Status::internal("the backup failed on the node; its log has the details"),
            }
        }
        Error::RequestBytesFull { max } => with_info(
            Code::ResourceExhausted,
            format!(
                "the server is busy: requests in flight hold its budget of {max} bytes \
                 (max_in_flight_request_bytes); retry later"
            ),
            REASON_OVERLOADED,
            HashMap::from([(
                "limit".to_string(),
                "max_in_flight_request_bytes".to_string(),
            )]),
        ),
        Error::RequestLargerThanBudget { request_bytes, max } => with_info(
            Code::ResourceExhausted,
            format!(
                "the request is {request_bytes} bytes, more than the server's whole budget of \
                 {max} bytes for requests in flight (max_in_flight_request_bytes); it can never \
                 be accepted: send smaller requests or raise the budget"
            ),
            REASON_LIMIT_EXCEEDED,
            HashMap::from([
                (
                    "limit".to_string(),
                    "max_in_flight_request_bytes".to_string(),
                ),
                ("max".to_string(), max.to_string()),
                ("actual".to_string(), request_bytes.to_string()),
            ]),
        ),
        Error::SubscriptionsFull { max } => with_info(
            Code::ResourceExhausted,
            format!("{max} subscriptions are open, the configured maximum (max_subscriptions)"),
            REASON_OVERLOADED,
            HashMap::from([("limit".to_string(), "max_subscriptions".to_string())]),
        ),
    }
}

/// A store error's message as a client may read it: files by name, never by path. Every other
/// error's own message names no path.
fn client_message(err: &causeway_core::Error) -> String {
    use causeway_core::Error as Core;
    match err {
        Core::Corrupt {
            file,
            offset,
            detail,
        } => format!(
            "corrupt data in {} at offset {offset}: {detail}",
            file_name(file)
        ),
        Core::Io { path, source } => format!("i/o error on {}: {source}", file_name(path)),
        Core::Locked { .. } => "the data directory is locked by another store".to_string(),
        _ => err.to_string(),
    }
}

/// The last part of a path (`00000000000000000001.seg`), or a placeholder when it has none.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "a file of the store".to_string())
}

/// The status with every absolute path in its message cut to its last part, for the codes
/// that report the server's own trouble; the whole message is logged when one was cut. A
/// backstop behind `client_message`: texts built from other errors (an fsync failure kept as
/// the store's poison reason, a Raft storage error) may carry a path.
fn without_paths(status: Status) -> Status {
    if !matches!(
        status.code(),
        Code::Internal | Code::Unavailable | Code::DataLoss | Code::Unknown
    ) || !status.message().contains('/')
    {
        return status;
    }
    let message = strip_paths(status.message());
    if message == status.message() {
        return status;
    }
    tracing::warn!(
        detail = status.message(),
        "an error was sent without its paths"
    );
    Status::with_details_and_metadata(
        status.code(),
        message,
        status.details().to_vec().into(),
        status.metadata().clone(),
    )
}

/// `text` with each word that starts with `/` (after a space, a quote, a bracket or `=`)
/// replaced by its last path component.
pub fn strip_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut after_boundary = true;
    while let Some(c) = rest.chars().next() {
        if c == '/' && after_boundary {
            let end = rest
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | ']' | ','))
                .unwrap_or(rest.len());
            let path = &rest[..end];
            let trimmed = path.trim_end_matches([':', '.', ';']);
            let last = trimmed.rsplit('/').find(|part| !part.is_empty());
            out.push_str(last.unwrap_or("(a path)"));
            out.push_str(&path[trimmed.len()..]);
            rest = &rest[end..];
            after_boundary = false;
            continue;
        }
        after_boundary = c.is_whitespace() || matches!(c, '"' | '\'' | '(' | '[' | '=' | ':');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A status with an `ErrorInfo`, and a `RetryInfo` when the same request is worth sending
/// again after a pause: an overloaded server, a cluster with no leader yet, a write whose
/// outcome is unknown (with its idempotency key).
pub(crate) fn with_info(
    code: Code,
    message: String,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    let retry_after = match reason {
        REASON_OVERLOADED => Some(RETRY_AFTER_OVERLOAD),
        REASON_OUTCOME_UNKNOWN => Some(RETRY_AFTER_OUTCOME_UNKNOWN),
        // Without a leader to go to, wait for an election; with one, go there at once.
        REASON_NOT_LEADER if !metadata.contains_key("leader_address") => {
            Some(RETRY_AFTER_NO_LEADER)
        }
        _ => None,
    };
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, message, details)
}

/// UNAVAILABLE for a server that is shutting down, with a `RetryInfo`: another node, or this
/// one restarted, will serve.
fn shutting_down(message: String) -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(RETRY_AFTER_SHUTDOWN));
    Status::with_error_details(Code::Unavailable, message, details)
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::Version;
    use std::collections::BTreeMap;

    #[test]
    fn refusals_worth_retrying_say_when() {
        let overloaded = to_status(Error::AppendsFull { max: 8 });
        let retry = overloaded.get_details_retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(RETRY_AFTER_OVERLOAD));
        let no_leader = to_status(Error::NotLeader {
            leader: None,
            reason: "an election is under way".to_string(),
        });
        let retry = no_leader.get_details_retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(RETRY_AFTER_NO_LEADER));
        let redirected = to_status(Error::NotLeader {
            leader: Some((2, "10.0.0.2:7420".to_string())),
            reason: "this node is a follower".to_string(),
        });
        assert!(
            redirected.get_details_retry_info().is_none(),
            "go to the leader now"
        );
        let stopping = to_status(Error::ShuttingDown {
            resume_from: Some(9),
        });
        let retry = stopping.get_details_retry_info().expect("a RetryInfo");
        assert_eq!(retry.retry_delay, Some(RETRY_AFTER_SHUTDOWN));
        let conflict = to_status(causeway_core::Error::Conflict {
            scope: "acme".to_string(),
            entity: "o-1".to_string(),
            expected: "no_stream".to_string(),
            actual: causeway_core::Version(1),
        });
        assert!(
            conflict.get_details_retry_info().is_none(),
            "re-read, not retry"
        );
    }

    #[test]
    fn a_denial_carries_its_code_gate_and_facts() {
        let status = to_status(causeway_core::Error::Denied {
            gate: "one-email".to_string(),
            code: "TAG_TAKEN".to_string(),
            message: "tag email:a is already taken".to_string(),
            facts: BTreeMap::from([("tag".to_string(), "email:a".to_string())]),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status
            .get_details_error_info()
            .expect("an ErrorInfo detail");
        assert_eq!(info.reason, "TAG_TAKEN");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["gate"], "one-email");
        assert_eq!(info.metadata["tag"], "email:a");
    }

    #[test]
    fn a_conflict_names_expected_and_actual() {
        let status = to_status(causeway_core::Error::Conflict {
            scope: "acme".to_string(),
            entity: "order-7".to_string(),
            expected: "3".to_string(),
            actual: Version(4),
        });
        assert_eq!(status.code(), Code::FailedPrecondition);
        let info = status
            .get_details_error_info()
            .expect("an ErrorInfo detail");
        assert_eq!(info.reason, REASON_VERSION_CONFLICT);
        assert_eq!(info.metadata["expected"], "3");
        assert_eq!(info.metadata["actual"], "4");
        assert_eq!(info.metadata["entity"], "order-7");
    }

    #[test]
    fn overload_and_store_failures_map_to_retryable_codes() {
        let full = to_status(PoolError::Full { queue: 8 });
        assert_eq!(full.code(), Code::ResourceExhausted);
        assert_eq!(
            to_status(causeway_core::Error::Closed).code(),
            Code::Unavailable
        );
        assert_eq!(
            to_status(causeway_core::Error::Poisoned("fsync failed".into())).code(),
            Code::Unavailable
        );
    }

    #[test]
    fn server_failures_name_files_not_paths() {
        let corrupt = to_status(causeway_core::Error::Corrupt {
            file: "/var/lib/causeway/events/00000000000000000001.seg".into(),
            offset: 4096,
            detail: "bad checksum".to_string(),
        });
        assert_eq!(corrupt.code(), Code::DataLoss);
        assert!(!corrupt.message().contains("/var"), "{corrupt:?}");
        assert!(
            corrupt
                .message()
                .contains("00000000000000000001.seg at offset 4096")
        );
        let io = to_status(causeway_core::Error::Io {
            path: "/srv/data/events".into(),
            source: std::io::Error::other("disk gone"),
        });
        assert_eq!(io.code(), Code::Unavailable);
        assert!(!io.message().contains("/srv"), "{io:?}");
        let poisoned = to_status(causeway_core::Error::Poisoned(
            "i/o error on /srv/data/events/00000000000000000002.seg: No space left".to_string(),
        ));
        assert_eq!(
            poisoned.message(),
            "the store refuses writes after an earlier write failure: i/o error on \
             00000000000000000002.seg: No space left"
        );
        let cluster = to_status(Error::ClusterUnavailable {
            detail: "raft log (\"/data/raft/log-7\"): denied".to_string(),
            outcome_unknown: false,
        });
        assert_eq!(cluster.message(), "raft log (\"log-7\"): denied");
    }
}
