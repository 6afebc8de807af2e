//! Exit statuses by failure class, so a script can tell a refusal from an outage without
//! parsing the message:
//!
//! | status | meaning | what to do |
//! |---|---|---|
//! | 0 | success | |
//! | 1 | usage or invalid input: bad flags, a field the server refused, an unreadable file | fix the command |
//! | 2 | refused: denied by a gate, a version conflict, an idempotency key reused, a receipt that does not verify, no credentials or no permission | re-read and decide (or fix the token) |
//! | 3 | not found | |
//! | 4 | unavailable: no connection (a TLS handshake the server ended, plaintext to a TLS port), overloaded, not serving, or a write's outcome unknown | retry later (with the same idempotency key), or fix the TLS flags the message names |
//! | 5 | the server failed: internal error, damaged data, an RPC it does not serve | report it |

use causeway_client::Error;
use causeway_client::backup::BackupError;
use tonic::Code;

/// Usage or invalid input.
pub const USAGE: u8 = 1;
/// Refused by a gate, a condition, a verification, or the server's permissions.
pub const REFUSED: u8 = 2;
/// Not found.
pub const NOT_FOUND: u8 = 3;
/// Unavailable or overloaded: retry later.
pub const UNAVAILABLE: u8 = 4;
/// The server failed.
pub const SERVER: u8 = 5;

/// The status for an error: by the client error or gRPC status in its chain, else usage (a
/// local failure: a file, an argument).
pub fn status_of(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(err) = cause.downcast_ref::<Error>() {
            return of_client(err);
        }
        // Transparent over the client error it wraps, so that error is not in the chain.
        if let Some(err) = cause.downcast_ref::<BackupError>() {
            return match err {
                BackupError::Server(err) => of_client(err),
                BackupError::Stream { .. } | BackupError::Checksum { .. } => SERVER,
                BackupError::NotEmpty(_) | BackupError::Io { .. } => USAGE,
            };
        }
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            return of_code(status.code());
        }
        if cause.downcast_ref::<tonic::transport::Error>().is_some() {
            return UNAVAILABLE;
        }
    }
    USAGE
}

fn of_client(err: &Error) -> u8 {
    match err {
        Error::InvalidAddress { .. } | Error::Tls { .. } | Error::SingleNode { .. } => USAGE,
        Error::Connect { .. }
        | Error::Handshake { .. }
        | Error::NotLeader { .. }
        | Error::LeaderUnknown { .. }
        | Error::OutcomeUnknown { .. } => UNAVAILABLE,
        Error::Denied { .. } | Error::Conflict { .. } | Error::IdempotencyConflict { .. } => {
            REFUSED
        }
        Error::MissingField(_) => SERVER,
        Error::Status(status) => of_code(status.code()),
    }
}

fn of_code(code: Code) -> u8 {
    match code {
        Code::InvalidArgument | Code::OutOfRange => USAGE,
        Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::Aborted
        | Code::PermissionDenied
        | Code::Unauthenticated => REFUSED,
        Code::NotFound => NOT_FOUND,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled => {
            UNAVAILABLE
        }
        Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => SERVER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_class() {
        let denied = anyhow::Error::new(Error::Denied {
            gate: "small".to_string(),
            code: "CEL_FALSE".to_string(),
            message: String::new(),
            facts: Default::default(),
        });
        assert_eq!(status_of(&denied), REFUSED);
        let missing = anyhow::Error::new(Error::Status(tonic::Status::not_found("no event")));
        assert_eq!(status_of(&missing), NOT_FOUND);
        let down =
            anyhow::Error::new(tonic::Status::unavailable("closed")).context("reading the log");
        assert_eq!(status_of(&down), UNAVAILABLE);
        let broken = anyhow::Error::new(tonic::Status::data_loss("frame 7"));
        assert_eq!(status_of(&broken), SERVER);
        let damaged_backup = anyhow::Error::new(BackupError::Server(Error::Status(
            tonic::Status::data_loss("the log is broken at position 7"),
        )));
        assert_eq!(status_of(&damaged_backup), SERVER);
        let backups_full = anyhow::Error::new(BackupError::Server(Error::Status(
            tonic::Status::resource_exhausted("BACKUPS_MAX"),
        )));
        assert_eq!(status_of(&backups_full), UNAVAILABLE);
        let not_empty = anyhow::Error::new(BackupError::NotEmpty("backup".into()));
        assert_eq!(status_of(&not_empty), USAGE);
        assert_eq!(
            status_of(&anyhow::anyhow!("receipt.json: no such file")),
            USAGE
        );
    }
}
