//! Verification: re-reading the log's frames (each checked against its CRC) and re-hashing its
//! chain. Three callers: [`Store::verify`] walks the whole log and recomputes the digest;
//! [`Store::verify_range`] checks a bounded page from a position (the Verify RPC, which the
//! client continues page by page) or one sealed segment (the server's scrubber, which paces
//! itself through the `pace` callback).
//!
//! An event's hash covers its fields, its payload and the hash of the previous event of its
//! entity (`docs/FORMAT.md`). A range that starts mid-log takes that previous hash from the
//! stored hash of the entity's previous event (found through the index, read and CRC-checked
//! like any frame), so a range checks its own events' bytes and links; a break before it is
//! found by whoever checks the range that holds it.
//!
//! Invariants:
//! - Read side only: the same reader every read uses, the index's read lock held just long
//!   enough to look up locations, never the writer. Appends go on meanwhile.
//! - Only committed events are checked (up to the head loaded at the start).
//! - A break is named by position, segment file name (never a path), offset and what differs;
//!   a frame that fails its CRC is a break too, not an error, so a caller learns where it is.

use std::collections::HashMap;

use super::Store;
use super::reads::read_many;
use crate::codec;
use crate::error::{Error, Result};
use crate::event::{Direction, Event, Hash, Position};
use crate::limits::READ_EVENTS_MAX;
use crate::query::Filter;
use crate::segment::{self, FrameLoc};

/// Events read with one call while a range is verified: a few reads of up to 256 KiB each.
const VERIFY_CHUNK_EVENTS: u64 = 256;

/// The result of [`Store::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// The log digest recomputed from the events.
    pub digest: Hash,
    /// The first position whose hash does not match its bytes or chain, and why.
    pub first_break: Option<(Position, String)>,
}

/// Where verification found the chain or a frame broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// The position of the first event that does not verify.
    pub position: Position,
    /// The segment file that holds it (`{first:020}.seg`), never a path.
    pub segment: String,
    /// The byte offset of its frame in that file.
    pub offset: u64,
    /// What differs: the stored hash and the recomputed one, or the frame's damage.
    pub detail: String,
}

/// The result of [`Store::verify_range`]: one bounded page of verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyPage {
    /// Events checked and found whole.
    pub events: u64,
    /// Frame bytes read.
    pub bytes: u64,
    /// Where to continue: the position after the last event checked (the break's position when
    /// there is one).
    pub next: Position,
    /// True when the range was checked to its end (or to the committed head).
    pub end: bool,
    /// The first break found; the page stops there.
    pub first_break: Option<Break>,
}

impl Store {
    /// Walks the whole log, recomputing every event's hash from its bytes and the previous hash
    /// of its entity, and the log digest. Reports the first position whose stored hash does not
    /// match. Reads every byte: cost grows with the log.
    pub fn verify(&self) -> Result<VerifyReport> {
        let head = self.head().0;
        let mut chains: HashMap<(String, String), Hash> = HashMap::new();
        let mut digest = [0u8; 32];
        let mut position = 1;
        while position <= head {
            let batch = self.read_log(
                Position(position),
                Direction::Forward,
                READ_EVENTS_MAX,
                &Filter::default(),
            )?;
            for event in batch.events {
                let key = (event.scope.clone(), event.entity.clone());
                let prev_hash = chains.get(&key).copied().unwrap_or([0; 32]);
                let (_, recomputed) = codec::encode(&event, &prev_hash, None);
                if recomputed != event.hash {
                    let why = format!(
                        "event {} in {}/{} does not hash to its stored hash",
                        event.id, event.scope, event.entity
                    );
                    return Ok(VerifyReport {
                        events: event.position.0 - 1,
                        digest,
                        first_break: Some((event.position, why)),
                    });
                }
                digest = codec::next_digest(&digest, &event.hash);
                chains.insert(key, event.hash);
                position = event.position.0 + 1;
            }
            if batch.end {
                break;
            }
        }
        Ok(VerifyReport {
            events: head,
            digest,
            first_break: None,
        })
    }

    /// Checks the committed events from `from` through `through` (capped at the head): each
    /// frame against its CRC and each event's hash against its bytes and its entity's previous
    /// hash. Stops at the first break, or once about `max_bytes` of frames were read (at least
    /// one chunk), and says where to go on. `pace` is called with the bytes of each chunk read,
    /// before the next: a caller that must not hog the disk sleeps in it.
    pub fn verify_range(
        &self,
        from: Position,
        through: Position,
        max_bytes: u64,
        pace: &mut dyn FnMut(u64),
    ) -> Result<VerifyPage> {
        let last = through.0.min(self.head().0);
        let mut page = VerifyPage {
            events: 0,
            bytes: 0,
            next: Position(from.0.max(1)),
            end: false,
            first_break: None,
        };
        // Each entity's last hash seen in this range: the link its next event must carry.
        let mut chains: HashMap<(String, String), Hash> = HashMap::new();
        while page.next.0 <= last && page.bytes < max_bytes {
            let chunk_last = last.min(page.next.0 + VERIFY_CHUNK_EVENTS - 1);
            let locs: Vec<(u64, FrameLoc)> = {
                let index = self.shared.index.read().expect("index lock poisoned");
                (page.next.0..=chunk_last)
                    .map(|position| (position, index.loc(position)))
                    .collect()
            };
            let events = match read_many(&self.shared, &locs) {
                Ok(events) => events,
                Err(Error::Corrupt {
                    file,
                    offset,
                    detail,
                }) => {
                    // The frame at fault is the one at `offset` of `file` (segments share
                    // offsets, so both must match); before it, all were whole.
                    let position = locs
                        .iter()
                        .find(|(_, loc)| {
                            loc.offset == offset
                                && file.file_name()
                                    == segment::segment_path(&self.shared.events_dir, loc.segment)
                                        .file_name()
                        })
                        .map_or(page.next.0, |&(position, _)| position);
                    page.events += position - page.next.0;
                    page.next = Position(position);
                    page.first_break = Some(Break {
                        position: Position(position),
                        segment: segment::file_name_of(&file),
                        offset,
                        detail,
                    });
                    return Ok(page);
                }
                Err(err) => return Err(err),
            };
            let mut chunk_bytes = 0;
            for (event, &(position, loc)) in events.iter().zip(&locs) {
                let key = (event.scope.clone(), event.entity.clone());
                let prev_hash = match chains.get(&key) {
                    Some(hash) => *hash,
                    None => match self.previous_hash(event) {
                        Ok(hash) => hash,
                        Err(Error::Corrupt {
                            file,
                            offset,
                            detail,
                        }) => {
                            page.next = Position(position);
                            page.first_break = Some(Break {
                                position: Position(position),
                                segment: segment::file_name_of(&file),
                                offset,
                                detail: format!(
                                    "the previous event of {}/{} cannot be read: {detail}",
                                    event.scope, event.entity
                                ),
                            });
                            return Ok(page);
                        }
                        Err(err) => return Err(err),
                    },
                };
                let (_, recomputed) = codec::encode(event, &prev_hash, None);
                if recomputed != event.hash {
                    page.next = Position(position);
                    page.first_break = Some(Break {
                        position: Position(position),
                        segment: segment::file_name_of(&segment::segment_path(
                            &self.shared.events_dir,
                            loc.segment,
                        )),
                        offset: loc.offset,
                        detail: format!(
                            "event {} (version {} of {}/{}) stores hash {} but its bytes and \
                             its entity's previous hash give {}",
                            event.id,
                            event.version.0,
                            event.scope,
                            event.entity,
                            hex(&event.hash),
                            hex(&recomputed)
                        ),
                    });
                    page.bytes += chunk_bytes;
                    pace(chunk_bytes);
                    return Ok(page);
                }
                chains.insert(key, event.hash);
                chunk_bytes += loc.end() - loc.offset;
                page.events += 1;
                page.next = Position(position + 1);
            }
            page.bytes += chunk_bytes;
            pace(chunk_bytes);
        }
        page.end = page.next.0 > last;
        Ok(page)
    }

    /// The first and last position of every sealed segment whose events are all committed,
    /// oldest first: what a scrubber re-reads (the active segment is still being written).
    pub fn sealed_segments(&self) -> Vec<(Position, Position)> {
        let head = self.head().0;
        let firsts = self
            .shared
            .index
            .read()
            .expect("index lock poisoned")
            .segments_through(u64::MAX);
        firsts
            .windows(2)
            .map(|pair| (pair[0], pair[1] - 1))
            .filter(|&(first, last)| first <= last && last <= head)
            .map(|(first, last)| (Position(first), Position(last)))
            .collect()
    }

    /// The stored hash of the event before `event` in its entity (zeros for a first event):
    /// the link `event`'s hash must have been taken over.
    fn previous_hash(&self, event: &Event) -> Result<Hash> {
        if event.version.0 <= 1 {
            return Ok([0; 32]);
        }
        let loc = {
            let index = self.shared.index.read().expect("index lock poisoned");
            index
                .position_at(&event.scope, &event.entity, event.version.0 - 1)
                .map(|position| (position, index.loc(position)))
        };
        let Some(loc) = loc else {
            // The index knows no such version: the stored version itself is wrong. A link no
            // hash can have makes the event fail rather than pass.
            return Ok([0xff; 32]);
        };
        let previous = read_many(&self.shared, &[loc])?;
        Ok(previous.first().map_or([0; 32], |event| event.hash))
    }
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}
