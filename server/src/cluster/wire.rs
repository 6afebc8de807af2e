//! Conversions between openraft's messages and `causeway.cluster.v1`, in one place for both
//! directions (the sending node's network and the receiving node's service).
//!
//! Entries travel in Causeway's entry encoding ([`codec::encode_entry`]), the bytes a node
//! writes in its log; votes and log ids as small messages. A malformed message is an error
//! naming the field, never a panic: a peer's bytes are input like any other.

use std::io;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult,
    VoteRequest, VoteResponse,
};

use super::codec::{self, invalid};
use super::types::{Entry, LogId, TypeConfig, Vote, log_id};
use crate::cluster::pb;

/// The wire form of a vote.
pub fn vote_to_pb(vote: &Vote) -> pb::Vote {
    pb::Vote {
        term: vote.leader_id.term,
        node_id: vote.leader_id.voted_for,
        committed: vote.committed,
    }
}

/// A vote from the wire; `field` names it in the error when it is missing.
pub fn vote_from_pb(vote: Option<pb::Vote>, field: &str) -> io::Result<Vote> {
    let vote = vote.ok_or_else(|| invalid(format!("{field} is missing")))?;
    Ok(if vote.committed {
        Vote::new_committed(vote.term, vote.node_id)
    } else {
        Vote::new(vote.term, vote.node_id)
    })
}

/// The wire form of an optional log id.
pub fn log_id_to_pb(log_id: Option<&LogId>) -> Option<pb::LogId> {
    log_id.map(|log_id| pb::LogId {
        term: log_id.leader_id.term,
        index: log_id.index,
    })
}

/// An optional log id from the wire.
pub fn log_id_from_pb(log_id: Option<pb::LogId>) -> Option<LogId> {
    log_id.map(|log_id| self::log_id(log_id.term, log_id.index))
}

/// The wire form of an AppendEntries request, split into messages of at most `bytes_max`
/// entry bytes each (an entry larger than that goes alone), which together say what the
/// request says: each part follows the one before it (`prev_log_id` is the previous part's last
/// entry), and a part other than the last names as committed no entry past its own.
pub fn append_to_pb_parts(
    header: pb::Header,
    request: &AppendEntriesRequest<TypeConfig>,
    bytes_max: usize,
) -> Vec<pb::AppendEntriesRequest> {
    let vote = vote_to_pb(&request.vote);
    let mut parts = Vec::new();
    let mut prev = request.prev_log_id;
    let mut entries = Vec::new();
    let mut bytes = 0;
    for (entry_idx, entry) in request.entries.iter().enumerate() {
        let encoded = codec::encode_entry(entry);
        if !entries.is_empty() && bytes + encoded.len() > bytes_max {
            let last = request.entries[entry_idx - 1].log_id;
            let commit = request.leader_commit.map(|commit| commit.min(last));
            parts.push(pb::AppendEntriesRequest {
                header: Some(header.clone()),
                vote: Some(vote),
                prev_log_id: log_id_to_pb(prev.as_ref()),
                entries: std::mem::take(&mut entries),
                leader_commit: log_id_to_pb(commit.as_ref()),
            });
            prev = Some(last);
            bytes = 0;
        }
        bytes += encoded.len();
        entries.push(encoded.into());
    }
    parts.push(pb::AppendEntriesRequest {
        header: Some(header),
        vote: Some(vote),
        prev_log_id: log_id_to_pb(prev.as_ref()),
        entries,
        leader_commit: log_id_to_pb(request.leader_commit.as_ref()),
    });
    parts
}

/// An AppendEntries request from the wire.
pub fn append_from_pb(
    request: pb::AppendEntriesRequest,
) -> io::Result<AppendEntriesRequest<TypeConfig>> {
    let entries = request
        .entries
        .iter()
        .map(codec::decode_entry)
        .collect::<io::Result<Vec<_>>>()?;
    let vote_term = request.vote.as_ref().map_or(0, |vote| vote.term);
    let prev_log_id = log_id_from_pb(request.prev_log_id);
    check_entries_follow(prev_log_id.as_ref(), &entries, vote_term)?;
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(request.vote, "vote")?,
        prev_log_id,
        entries,
        leader_commit: log_id_from_pb(request.leader_commit),
    })
}

/// Entries must continue the log right after `prev` (index 0 after none), without a gap, with
/// terms that never fall and never pass the sender's vote. openraft takes the entries as they
/// come, and a log that is handed a gap stops the node, so a malformed request is refused here.
fn check_entries_follow(prev: Option<&LogId>, entries: &[Entry], vote_term: u64) -> io::Result<()> {
    let mut next_index = match prev {
        Some(prev) => prev.index.checked_add(1).ok_or_else(|| {
            invalid("prev_log_id.index is the largest index; no entry can follow it".into())
        })?,
        None => 0,
    };
    let mut term_floor = prev.map_or(0, |prev| prev.leader_id.term);
    for (entry_idx, entry) in entries.iter().enumerate() {
        if entry.log_id.index != next_index {
            return Err(invalid(format!(
                "entries[{entry_idx}] has index {}, but {next_index} comes next after \
                 prev_log_id",
                entry.log_id.index
            )));
        }
        let term = entry.log_id.leader_id.term;
        if term < term_floor || term > vote_term {
            return Err(invalid(format!(
                "entries[{entry_idx}] has term {term}, outside {term_floor}..={vote_term} \
                 (the term before it, and the sender's vote)"
            )));
        }
        term_floor = term;
        next_index = next_index.saturating_add(1);
    }
    Ok(())
}

/// The wire form of an AppendEntries response.
pub fn append_response_to_pb(
    response: &AppendEntriesResponse<TypeConfig>,
) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as Outcome;
    let result = match response {
        AppendEntriesResponse::Success => Outcome::Success(true),
        AppendEntriesResponse::PartialSuccess(matched) => {
            Outcome::PartialSuccess(pb::PartialSuccess {
                matched: log_id_to_pb(matched.as_ref()),
            })
        }
        AppendEntriesResponse::Conflict => Outcome::Conflict(true),
        AppendEntriesResponse::HigherVote(vote) => Outcome::HigherVote(vote_to_pb(vote)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

/// An AppendEntries response from the wire.
pub fn append_response_from_pb(
    response: pb::AppendEntriesResponse,
) -> io::Result<AppendEntriesResponse<TypeConfig>> {
    use pb::append_entries_response::Result as Outcome;
    Ok(match response.result {
        Some(Outcome::Success(_)) => AppendEntriesResponse::Success,
        Some(Outcome::PartialSuccess(partial)) => {
            AppendEntriesResponse::PartialSuccess(log_id_from_pb(partial.matched))
        }
        Some(Outcome::Conflict(_)) => AppendEntriesResponse::Conflict,
        Some(Outcome::HigherVote(vote)) => {
            AppendEntriesResponse::HigherVote(vote_from_pb(Some(vote), "higher_vote")?)
        }
        None => return Err(invalid("append entries response has no result".to_string())),
    })
}

/// The wire form of a vote request.
pub fn vote_request_to_pb(
    header: pb::Header,
    request: &VoteRequest<TypeConfig>,
) -> pb::VoteRequest {
    pb::VoteRequest {
        header: Some(header),
        vote: Some(vote_to_pb(&request.vote)),
        last_log_id: log_id_to_pb(request.last_log_id.as_ref()),
        leadership_transfer: request.leadership_transfer,
    }
}

/// A vote request from the wire.
pub fn vote_request_from_pb(request: pb::VoteRequest) -> io::Result<VoteRequest<TypeConfig>> {
    let mut vote_request = VoteRequest::new(
        vote_from_pb(request.vote, "vote")?,
        log_id_from_pb(request.last_log_id),
    );
    vote_request.leadership_transfer = request.leadership_transfer;
    Ok(vote_request)
}

/// The wire form of a vote response.
pub fn vote_response_to_pb(response: &VoteResponse<TypeConfig>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&response.vote)),
        vote_granted: response.vote_granted,
        last_log_id: log_id_to_pb(response.last_log_id.as_ref()),
    }
}

/// A vote response from the wire.
pub fn vote_response_from_pb(response: pb::VoteResponse) -> io::Result<VoteResponse<TypeConfig>> {
    Ok(VoteResponse::new(
        vote_from_pb(response.vote, "vote")?,
        log_id_from_pb(response.last_log_id),
        response.vote_granted,
    ))
}

/// The wire form of one answer of a StreamAppend stream.
pub fn stream_result_to_pb(result: &StreamAppendResult<TypeConfig>) -> pb::StreamAppendResponse {
    use pb::stream_append_response::Result as Outcome;
    let result = match result {
        Ok(matched) => Outcome::Accepted(pb::Accepted {
            last_log_id: log_id_to_pb(matched.as_ref()),
        }),
        Err(StreamAppendError::Conflict(at)) => {
            Outcome::Conflict(log_id_to_pb(Some(at)).expect("a log id is present"))
        }
        Err(StreamAppendError::HigherVote(vote)) => Outcome::HigherVote(vote_to_pb(vote)),
    };
    pb::StreamAppendResponse {
        result: Some(result),
    }
}

/// One answer of a StreamAppend stream from the wire.
pub fn stream_result_from_pb(
    response: pb::StreamAppendResponse,
) -> io::Result<StreamAppendResult<TypeConfig>> {
    use pb::stream_append_response::Result as Outcome;
    Ok(match response.result {
        Some(Outcome::Accepted(accepted)) => Ok(log_id_from_pb(accepted.last_log_id)),
        Some(Outcome::Conflict(at)) => Err(StreamAppendError::Conflict(log_id(at.term, at.index))),
        Some(Outcome::HigherVote(vote)) => Err(StreamAppendError::HigherVote(vote_from_pb(
            Some(vote),
            "higher_vote",
        )?)),
        None => return Err(invalid("stream append response has no result".to_string())),
    })
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;

    use super::*;

    fn append(
        prev: Option<(u64, u64)>,
        entries: &[(u64, u64)],
        vote_term: u64,
    ) -> pb::AppendEntriesRequest {
        pb::AppendEntriesRequest {
            header: None,
            vote: Some(pb::Vote {
                term: vote_term,
                node_id: 1,
                committed: true,
            }),
            prev_log_id: prev.map(|(term, index)| pb::LogId { term, index }),
            entries: entries
                .iter()
                .map(|(term, index)| {
                    codec::encode_entry(&Entry {
                        log_id: log_id(*term, *index),
                        payload: EntryPayload::Blank,
                    })
                    .into()
                })
                .collect(),
            leader_commit: None,
        }
    }

    /// A batch over the byte budget goes as parts that each continue the one before and
    /// decode as a request of their own, an entry over the budget alone, and no part but the
    /// last names a commit past its own entries. Catches parts that leave a gap (the target
    /// refuses them) or name a commit the target does not hold yet.
    #[test]
    fn a_batch_over_the_byte_budget_goes_as_parts_that_follow_each_other() {
        let entry = |index: u64| Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Blank,
        };
        let request = AppendEntriesRequest {
            vote: vote_from_pb(
                Some(pb::Vote {
                    term: 2,
                    node_id: 1,
                    committed: true,
                }),
                "vote",
            )
            .expect("a vote"),
            prev_log_id: Some(log_id(1, 9)),
            entries: (10..15).map(entry).collect(),
            leader_commit: Some(log_id(2, 13)),
        };
        let one = codec::encode_entry(&entry(10)).len();
        let parts = append_to_pb_parts(pb::Header::default(), &request, 2 * one);
        let parts: Vec<_> = parts
            .into_iter()
            .map(|part| append_from_pb(part).expect("each part is a request of its own"))
            .collect();
        let shape: Vec<_> = parts
            .iter()
            .map(|part| {
                (
                    part.prev_log_id.map(|id| id.index),
                    part.entries
                        .iter()
                        .map(|e| e.log_id.index)
                        .collect::<Vec<_>>(),
                    part.leader_commit.map(|id| id.index),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (Some(9), vec![10, 11], Some(11)),
                (Some(11), vec![12, 13], Some(13)),
                (Some(13), vec![14], Some(13)),
            ]
        );
        let alone = append_to_pb_parts(pb::Header::default(), &request, 1);
        assert_eq!(alone.len(), 5, "each entry over the budget goes alone");
        let whole = append_to_pb_parts(pb::Header::default(), &request, usize::MAX);
        assert_eq!(whole.len(), 1);
    }

    #[test]
    fn entries_that_follow_prev_are_taken() {
        for request in [
            append(None, &[(1, 0), (1, 1)], 1),
            append(Some((1, 4)), &[(1, 5), (2, 6), (3, 7)], 3),
            append(Some((2, 9)), &[], 2),
        ] {
            append_from_pb(request).expect("well-formed entries");
        }
    }

    #[test]
    fn a_gap_a_falling_term_or_a_term_past_the_vote_is_refused() {
        let cases = [
            (append(Some((1, 10)), &[(1, 12345678)], 1), "comes next"),
            (append(Some((1, 10)), &[(1, 11), (1, 13)], 1), "comes next"),
            (append(None, &[(1, 1)], 1), "comes next"),
            (append(Some((1, 10)), &[(1, 10)], 1), "comes next"),
            (append(Some((1, u64::MAX)), &[(1, 0)], 1), "largest index"),
            (append(Some((3, 10)), &[(2, 11)], 3), "outside"),
            (append(Some((1, 10)), &[(2, 11), (1, 12)], 2), "outside"),
            (append(Some((1, 10)), &[(5, 11)], 4), "outside"),
        ];
        for (case_idx, (request, expected)) in cases.into_iter().enumerate() {
            let err = append_from_pb(request).expect_err("a malformed append");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "case {case_idx}");
            assert!(err.to_string().contains(expected), "case {case_idx}: {err}");
        }
    }
}
