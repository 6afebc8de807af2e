//! Causeway's own binary encoding of what the Raft storage keeps: log entries (one per segment
//! frame), the vote, memberships, and snapshot metadata. Never openraft's serde output, whose
//! bytes may change between engine versions: an upgrade of openraft changes this file's code,
//! never the bytes on disk. `docs/FORMAT.md` ("Raft log entry", "Raft vote") gives the layout.
//!
//! All integers are little-endian. Every decoder checks lengths and kinds and refuses trailing
//! bytes, so damage the frame CRC could not see (a bug, a format mix-up) is an error naming
//! what was wrong, never a wrong value.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use causeway_core::Command;
use openraft::{BasicNode, EntryPayload};

use bytes::Bytes;

use super::types::{Entry, LogId, Membership, Proposal, StoredMembership, Vote, log_id};
use crate::limits::{MEMBERSHIP_ADDR_BYTES_MAX, MEMBERSHIP_CONFIGS_MAX, MEMBERSHIP_NODES_MAX};

/// The version byte every encoded entry starts with.
pub const ENTRY_FORMAT_VERSION: u8 = 1;
/// Entry kind: a blank entry (a new leader's first).
pub const KIND_BLANK: u8 = 0;
/// Entry kind: a normal entry; its payload is [`Command::encode`].
pub const KIND_NORMAL: u8 = 1;
/// Entry kind: a membership entry; its payload is a membership (see [`put_membership`]).
pub const KIND_MEMBERSHIP: u8 = 2;

/// Bytes of an entry before its payload: version, kind, term, index.
const ENTRY_HEADER_BYTES: usize = 1 + 1 + 8 + 8;

/// Encodes one log entry: version, kind, term, index, then the kind's payload.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + 64);
    out.push(ENTRY_FORMAT_VERSION);
    let kind = match &entry.payload {
        EntryPayload::Blank => KIND_BLANK,
        EntryPayload::Normal(_) => KIND_NORMAL,
        EntryPayload::Membership(_) => KIND_MEMBERSHIP,
    };
    out.push(kind);
    out.extend_from_slice(&entry.log_id.leader_id.term.to_le_bytes());
    out.extend_from_slice(&entry.log_id.index.to_le_bytes());
    match &entry.payload {
        EntryPayload::Blank => {}
        EntryPayload::Normal(proposal) => out.extend_from_slice(proposal.encoded()),
        EntryPayload::Membership(membership) => put_membership(&mut out, membership),
    }
    out
}

/// Decodes one log entry; a normal entry keeps its command's encoding as a slice of `bytes`,
/// not a copy.
pub fn decode_entry(bytes: &Bytes) -> io::Result<Entry> {
    let mut reader = Reader::new(bytes, "raft log entry");
    let version = reader.u8()?;
    if version != ENTRY_FORMAT_VERSION {
        return Err(invalid(format!(
            "raft log entry format version {version} is not supported"
        )));
    }
    let kind = reader.u8()?;
    let term = reader.u64()?;
    let index = reader.u64()?;
    let payload = match kind {
        KIND_BLANK => EntryPayload::Blank,
        KIND_NORMAL => {
            let encoded = reader.rest();
            let command = Command::decode(encoded)
                .map_err(|err| invalid(format!("raft log entry {index}: {err}")))?;
            EntryPayload::Normal(Proposal::decoded(command, bytes.slice_ref(encoded)))
        }
        KIND_MEMBERSHIP => EntryPayload::Membership(get_membership(&mut reader)?),
        other => return Err(invalid(format!("raft log entry kind {other} is unknown"))),
    };
    reader.finish()?;
    Ok(Entry {
        log_id: log_id(term, index),
        payload,
    })
}

/// Reads only the log id of an encoded entry (the header), without decoding its payload.
pub fn decode_entry_id(bytes: &[u8]) -> io::Result<LogId> {
    let mut reader = Reader::new(bytes, "raft log entry");
    let version = reader.u8()?;
    if version != ENTRY_FORMAT_VERSION {
        return Err(invalid(format!(
            "raft log entry format version {version} is not supported"
        )));
    }
    let _kind = reader.u8()?;
    let term = reader.u64()?;
    let index = reader.u64()?;
    Ok(log_id(term, index))
}

/// Encodes a vote: term, voted-for node id, committed (0 or 1).
pub fn encode_vote(vote: &Vote) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.extend_from_slice(&vote.leader_id.term.to_le_bytes());
    out.extend_from_slice(&vote.leader_id.voted_for.to_le_bytes());
    out.push(u8::from(vote.committed));
    out
}

/// Decodes a vote.
pub fn decode_vote(bytes: &[u8]) -> io::Result<Vote> {
    let mut reader = Reader::new(bytes, "raft vote");
    let term = reader.u64()?;
    let voted_for = reader.u64()?;
    let committed = reader.bool()?;
    reader.finish()?;
    Ok(if committed {
        Vote::new_committed(term, voted_for)
    } else {
        Vote::new(term, voted_for)
    })
}

/// Encodes an optional log id: a presence byte, then term and index when present.
pub fn put_log_id(out: &mut Vec<u8>, log_id: Option<&LogId>) {
    match log_id {
        None => out.push(0),
        Some(log_id) => {
            out.push(1);
            out.extend_from_slice(&log_id.leader_id.term.to_le_bytes());
            out.extend_from_slice(&log_id.index.to_le_bytes());
        }
    }
}

/// Decodes what [`put_log_id`] wrote.
pub fn get_log_id(reader: &mut Reader<'_>) -> io::Result<Option<LogId>> {
    if !reader.bool()? {
        return Ok(None);
    }
    let term = reader.u64()?;
    let index = reader.u64()?;
    Ok(Some(log_id(term, index)))
}

/// Encodes a membership: the number of joint configurations (u32), each as a count (u32) and
/// its voter ids (u64, ascending); then the number of nodes (u32), each as its id (u64) and
/// address (u32 length, UTF-8 bytes), ascending by id.
pub fn put_membership(out: &mut Vec<u8>, membership: &Membership) {
    let configs = membership.get_joint_config();
    out.extend_from_slice(&len_u32(configs.len()).to_le_bytes());
    for config in configs {
        out.extend_from_slice(&len_u32(config.len()).to_le_bytes());
        for id in config {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    let nodes: Vec<(&u64, &BasicNode)> = membership.nodes().collect();
    out.extend_from_slice(&len_u32(nodes.len()).to_le_bytes());
    for (id, node) in nodes {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&len_u32(node.addr.len()).to_le_bytes());
        out.extend_from_slice(node.addr.as_bytes());
    }
}

/// Decodes what [`put_membership`] wrote, refusing counts over the membership bounds and a
/// membership openraft would not accept (a voter without a node).
pub fn get_membership(reader: &mut Reader<'_>) -> io::Result<Membership> {
    let n_configs = reader.count(MEMBERSHIP_CONFIGS_MAX, "MEMBERSHIP_CONFIGS_MAX")?;
    let mut configs = Vec::with_capacity(n_configs);
    for _ in 0..n_configs {
        let n_voters = reader.count(MEMBERSHIP_NODES_MAX, "MEMBERSHIP_NODES_MAX")?;
        let mut config = BTreeSet::new();
        for _ in 0..n_voters {
            config.insert(reader.u64()?);
        }
        configs.push(config);
    }
    let n_nodes = reader.count(MEMBERSHIP_NODES_MAX, "MEMBERSHIP_NODES_MAX")?;
    let mut nodes = BTreeMap::new();
    for _ in 0..n_nodes {
        let id = reader.u64()?;
        let addr_len = reader.count(MEMBERSHIP_ADDR_BYTES_MAX, "MEMBERSHIP_ADDR_BYTES_MAX")?;
        let addr = String::from_utf8(reader.bytes(addr_len)?.to_vec())
            .map_err(|_| invalid("membership node address is not UTF-8".to_string()))?;
        nodes.insert(id, BasicNode { addr });
    }
    Membership::new(configs, nodes).map_err(|err| invalid(format!("membership: {err}")))
}

/// Encodes a membership with the log id that set it.
pub fn put_stored_membership(out: &mut Vec<u8>, stored: &StoredMembership) {
    put_log_id(out, stored.log_id().as_ref());
    put_membership(out, stored.membership());
}

/// Decodes what [`put_stored_membership`] wrote.
pub fn get_stored_membership(reader: &mut Reader<'_>) -> io::Result<StoredMembership> {
    let log_id = get_log_id(reader)?;
    let membership = get_membership(reader)?;
    Ok(StoredMembership::new(log_id, membership))
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).expect("membership counts are bounded far below u32::MAX")
}

/// An `InvalidData` I/O error: what openraft's storage traits carry.
pub fn invalid(detail: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail)
}

/// A cursor over encoded bytes that names what it decodes in its errors.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`, which hold a `what` (named in errors).
    pub fn new(bytes: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { bytes, at: 0, what }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> io::Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(invalid(format!(
                "{} is cut short at byte {} of {}",
                self.what,
                self.at,
                self.bytes.len()
            )));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// The next byte.
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// The next byte, which must be 0 or 1.
    pub fn bool(&mut self) -> io::Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(format!(
                "{} has flag byte {other} at {}, expected 0 or 1",
                self.what,
                self.at - 1
            ))),
        }
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> io::Result<u64> {
        let bytes = self.bytes(8)?.try_into().expect("8 bytes");
        Ok(u64::from_le_bytes(bytes))
    }

    /// The next little-endian u32, as a count no larger than `max` (the bound named `limit`).
    pub fn count(&mut self, max: usize, limit: &'static str) -> io::Result<usize> {
        let bytes = self.bytes(4)?.try_into().expect("4 bytes");
        let count = u32::from_le_bytes(bytes) as usize;
        if count > max {
            return Err(invalid(format!(
                "{} has a count of {count}, over the limit {limit} = {max}",
                self.what
            )));
        }
        Ok(count)
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.at..];
        self.at = self.bytes.len();
        out
    }

    /// Refuses bytes left over after the last field.
    pub fn finish(&self) -> io::Result<()> {
        if self.at != self.bytes.len() {
            return Err(invalid(format!(
                "{} has {} trailing bytes",
                self.what,
                self.bytes.len() - self.at
            )));
        }
        Ok(())
    }
}
