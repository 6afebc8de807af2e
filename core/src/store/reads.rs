//! Reads: everything that looks at the store without changing it, and the read-only [`View`]
//! gates decide with.
//!
//! Readers never see past the committed head they load first: the writer indexes events
//! before they are durable, so the index may run ahead of the head, and every read caps what
//! it looks at by the head. Every frame read checks its CRC and that it holds the position the
//! index expects, so damage is [`Error::Corrupt`] naming the file and offset, never data.
//!
//! The gates' view ([`StoreView`]) is the exception: it sees everything the writer has decided,
//! durable or not, because it runs inside the writer, between one decision and the next.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Committed, Shared, Store};
use crate::clock::Timestamp;
use crate::codec::EventRecord;
use crate::error::{Error, Result};
use crate::event::{Direction, Event, EventId, Hash, Position, Version, check_name};
use crate::gate::{Scan, View};
use crate::limits::*;
use crate::query::Filter;
use crate::segment::{self, FrameLoc};

/// A page of a log read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBatch {
    /// The matching events, in the direction read.
    pub events: Vec<Event>,
    /// Where to continue: the next position to examine. A subscription that gets no events can
    /// still report this as progress.
    pub next: Position,
    /// True when the read reached the end (the committed head forward, position 1 backward).
    pub end: bool,
}

fn check_limit(limit: usize) -> Result<()> {
    check_page_limit(limit, READ_EVENTS_MAX, "READ_EVENTS_MAX", "read limit")
}

/// Checks a caller's page size: at least 1, at most `max` (the bound named `name`).
pub(crate) fn check_page_limit(
    limit: usize,
    max: usize,
    name: &'static str,
    what: &str,
) -> Result<()> {
    if limit == 0 {
        return Err(Error::InvalidInput("limit must be at least 1".to_string()));
    }
    if limit > max {
        return Err(Error::LimitExceeded {
            limit: name,
            max: max as u64,
            actual: limit as u64,
            what: what.to_string(),
        });
    }
    Ok(())
}

impl Store {
    /// Whether no event after the committed head can be before `until`: timestamps grow with
    /// position, so once the head's event is at or past `until`, a filter bounded by it
    /// (`Filter::until`, exclusive) matches nothing appended later. False on an empty log. It
    /// reads the log, not a clock, so every replica answers the same for the same head.
    pub fn until_passed(&self, until: Timestamp) -> bool {
        let head = self.committed().head;
        let index = self.shared.index.read().expect("index lock poisoned");
        index.timestamp_at(head).is_some_and(|at| at >= until)
    }

    /// The committed head: the position of the last durable event, 0 when empty.
    pub fn head(&self) -> Position {
        Position(self.committed().head)
    }

    /// The log digest at the committed head.
    pub fn digest(&self) -> Hash {
        self.committed().digest
    }

    /// The committed head and the log digest at it, read together.
    pub fn head_and_digest(&self) -> (Position, Hash) {
        let Committed { head, digest, .. } = self.committed();
        (Position(head), digest)
    }

    /// The event with this id.
    pub fn get(&self, id: EventId) -> Result<Event> {
        let head = self.committed().head;
        let found = {
            let index = self.shared.index.read().expect("index lock poisoned");
            index
                .position_of(&id)
                .filter(|&p| p <= head)
                .map(|p| (p, index.loc(p)))
        };
        let (position, loc) = found.ok_or_else(|| Error::NotFound(format!("event {id}")))?;
        read_at(&self.shared, position, loc)
    }

    /// The current version of an entity; `Version(0)` when it has no events.
    pub fn version(&self, scope: &str, entity: &str) -> Version {
        let head = self.committed().head;
        self.shared
            .index
            .read()
            .expect("index lock poisoned")
            .version_at(scope, entity, head)
    }

    /// Reads up to `limit` events of one entity, starting at version `from` (inclusive) and going
    /// in `direction`. Backward from `Version(0)` or a version past the end starts at the last
    /// event. A page stops before it passes [`READ_BYTES_MAX`] of records (it always holds at
    /// least one event); continue from the last version returned.
    pub fn read_entity(
        &self,
        scope: &str,
        entity: &str,
        from: Version,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        self.read_entity_records(scope, entity, from, direction, limit, |record| {
            events.push(record.to_event());
            Ok(())
        })?;
        Ok(events)
    }

    /// [`Store::read_entity`] without making owned events: `each` sees every event of the page
    /// borrowed from its stored record, in the order read, as [`Store::read_log_records`] does.
    pub fn read_entity_records(
        &self,
        scope: &str,
        entity: &str,
        from: Version,
        direction: Direction,
        limit: usize,
        each: impl FnMut(&EventRecord<'_>) -> Result<()>,
    ) -> Result<()> {
        check_limit(limit)?;
        // Names no write could store are refused, not looked up: the same rules as appends.
        check_name("scope", scope, SCOPE_BYTES_MAX, "SCOPE_BYTES_MAX")?;
        check_name("entity", entity, ENTITY_BYTES_MAX, "ENTITY_BYTES_MAX")?;
        let head = self.committed().head;
        let from = match (direction, from) {
            (Direction::Backward, Version(0)) => Version(u64::MAX),
            _ => from,
        };
        let locs: Vec<(u64, FrameLoc)> = {
            let index = self.shared.index.read().expect("index lock poisoned");
            let positions = index.entity_positions(scope, entity, from, direction, limit, head);
            let mut read_bytes = 0u64;
            positions
                .into_iter()
                .map(|p| (p, index.loc(p)))
                .take_while(|(_, loc)| {
                    // The first event always comes back, however large; later ones only while the
                    // page stays within READ_BYTES_MAX. The caller continues from the last one.
                    let first = read_bytes == 0;
                    read_bytes += u64::from(loc.body_len).max(1);
                    first || read_bytes <= READ_BYTES_MAX as u64
                })
                .collect()
        };
        visit_many(&self.shared, &locs, each)
    }

    /// Reads up to `limit` events of the log that match `filter`, starting at `from` (inclusive)
    /// and going in `direction`. Backward from `Position(0)` or past the head starts at the head.
    /// A sparse filter returns early after examining [`READ_SCAN_MAX`] candidates, and a page
    /// stops before it passes [`READ_BYTES_MAX`] of records; continue from [`ReadBatch::next`].
    ///
    /// A forward page never ends inside an append: when `limit` or the byte budget stops it
    /// after an event that is not its append's last, the page goes on to hold every matching
    /// event of that append too, and `next` is the position after the append. So a page may
    /// exceed `limit` and the byte budget by at most one append: fewer than
    /// [`APPEND_EVENTS_MAX`] events, whose records hold at most [`APPEND_BYTES_MAX`] of content
    /// plus each record's header. A subscription that sends each page as one message thereby
    /// delivers every append whole. Backward pages are cut where the bounds fall, inside an
    /// append if need be: reading backward is for finding recent events, not for following.
    pub fn read_log(
        &self,
        from: Position,
        direction: Direction,
        limit: usize,
        filter: &Filter,
    ) -> Result<ReadBatch> {
        self.read_log_bytes(from, direction, limit, READ_BYTES_MAX, filter)
    }

    /// [`Store::read_log`] with a byte budget of `max_bytes` of records instead of
    /// [`READ_BYTES_MAX`], for a caller that sends each page as one message of bounded size.
    /// `max_bytes` must be 1 to [`READ_BYTES_MAX`]; a forward page may still exceed it by one
    /// append, as [`Store::read_log`] says.
    pub fn read_log_bytes(
        &self,
        from: Position,
        direction: Direction,
        limit: usize,
        max_bytes: usize,
        filter: &Filter,
    ) -> Result<ReadBatch> {
        let mut events = Vec::new();
        let (next, end) =
            self.read_log_records(from, direction, limit, max_bytes, filter, |record| {
                events.push(record.to_event());
                Ok(())
            })?;
        Ok(ReadBatch { events, next, end })
    }

    /// [`Store::read_log_bytes`] without making owned events: `each` sees every event of the
    /// page borrowed from its stored record, in the order read, and nothing is allocated per
    /// event. For a caller that turns records straight into another encoding (a server writing
    /// its wire format). Returns where to continue and whether the read reached the end, as
    /// [`ReadBatch`] does; an error from `each` ends the read and is returned.
    pub fn read_log_records(
        &self,
        from: Position,
        direction: Direction,
        limit: usize,
        max_bytes: usize,
        filter: &Filter,
        each: impl FnMut(&EventRecord<'_>) -> Result<()>,
    ) -> Result<(Position, bool)> {
        check_limit(limit)?;
        if !(1..=READ_BYTES_MAX).contains(&max_bytes) {
            return Err(Error::InvalidInput(format!(
                "max_bytes is {max_bytes}; it must be 1 to {READ_BYTES_MAX} (READ_BYTES_MAX)"
            )));
        }
        filter.check()?;
        let head = self.committed().head;
        let mut cursor = match direction {
            Direction::Forward => from.0.max(1),
            Direction::Backward if from.0 == 0 || from.0 > head => head,
            Direction::Backward => from.0,
        };
        let mut locs = Vec::new();
        let mut read_bytes = 0u64;
        let mut end = false;
        {
            let index = self.shared.index.read().expect("index lock poisoned");
            match index.resolve(filter) {
                None => {
                    end = true;
                    cursor = match direction {
                        Direction::Forward => head.max(cursor - 1) + 1,
                        Direction::Backward => 0,
                    };
                }
                Some(resolved) => {
                    let mut budget = READ_SCAN_MAX;
                    while locs.len() < limit {
                        let seek = index.next_match(&resolved, cursor, direction, head, budget);
                        budget -= seek.examined;
                        let Some(position) = seek.found else {
                            cursor = if budget > 0 {
                                end = true;
                                match direction {
                                    Direction::Forward => head.max(cursor - 1) + 1,
                                    Direction::Backward => 0,
                                }
                            } else {
                                // Out of budget: the next page starts past what this one
                                // examined, so a reader that follows `next` always moves on.
                                seek.resume
                            };
                            break;
                        };
                        let loc = index.loc(position);
                        if !locs.is_empty()
                            && read_bytes + u64::from(loc.body_len) > max_bytes as u64
                        {
                            // The page is full by size; the caller continues from here.
                            break;
                        }
                        read_bytes += u64::from(loc.body_len);
                        locs.push((position, loc));
                        cursor = match direction {
                            Direction::Forward => position + 1,
                            Direction::Backward => position - 1,
                        };
                    }
                    if direction == Direction::Forward
                        && let Some(&(last_included, _)) = locs.last()
                    {
                        // Finish the append of the last event included: the rest of its
                        // matches, whatever the limit, the bytes or the scan budget say. The
                        // head only moves by whole appends, so the append's end is visible.
                        let append_last = index.append_last(last_included).min(head);
                        if append_last >= cursor {
                            let mut rest = cursor;
                            while let Some(position) = index
                                .next_match(&resolved, rest, direction, append_last, usize::MAX)
                                .found
                            {
                                locs.push((position, index.loc(position)));
                                rest = position + 1;
                            }
                            cursor = append_last + 1;
                        }
                    }
                }
            }
        }
        let end = end
            || (direction == Direction::Forward && cursor > head)
            || (direction == Direction::Backward && cursor == 0);
        visit_many(&self.shared, &locs, each)?;
        Ok((Position(cursor), end))
    }

    /// Blocks until the committed head reaches `position` or `timeout` passes, and returns the
    /// head then. Returns [`Error::Closed`] if the store closes while waiting.
    pub fn wait_for(&self, position: Position, timeout: Duration) -> Result<Position> {
        let deadline_ns = self
            .shared
            .clock
            .now_mono_ns()
            .saturating_add(timeout.as_nanos() as u64);
        let mut committed = self.shared.committed.lock().expect("commit lock poisoned");
        loop {
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if committed.head >= position.0 {
                return Ok(Position(committed.head));
            }
            let now_ns = self.shared.clock.now_mono_ns();
            if now_ns >= deadline_ns {
                return Ok(Position(committed.head));
            }
            let wait = Duration::from_nanos(deadline_ns - now_ns);
            committed = self
                .shared
                .head_moved
                .wait_timeout(committed, wait)
                .expect("commit lock poisoned")
                .0;
        }
    }

    /// The committed position of an event id.
    pub(crate) fn position(&self, id: &EventId) -> Option<u64> {
        let head = self.committed().head;
        self.shared
            .index
            .read()
            .expect("index lock poisoned")
            .position_of(id)
            .filter(|&p| p <= head)
    }

    /// Committed positions of the children of `parent`.
    pub(crate) fn children_positions(&self, parent: &EventId) -> Vec<u64> {
        let head = self.committed().head;
        let index = self.shared.index.read().expect("index lock poisoned");
        index
            .children_of(parent)
            .iter()
            .copied()
            .filter(|&p| p <= head)
            .collect()
    }

    /// Committed positions of the events of a correlation.
    pub(crate) fn correlation_positions(&self, correlation_id: &EventId) -> Vec<u64> {
        let head = self.committed().head;
        let mut positions = self
            .shared
            .index
            .read()
            .expect("index lock poisoned")
            .correlation(correlation_id);
        positions.retain(|&p| p <= head);
        positions
    }

    /// The committed event at `position`.
    pub(crate) fn event_at(&self, position: u64) -> Result<Event> {
        read_position(&self.shared, position)
    }
}

/// Reads the indexed event at `position`.
pub(super) fn read_position(shared: &Shared, position: u64) -> Result<Event> {
    let loc = shared
        .index
        .read()
        .expect("index lock poisoned")
        .loc(position);
    read_at(shared, position, loc)
}

/// Reads and checks the event at `position`.
pub(super) fn read_at(shared: &Shared, position: u64, loc: segment::FrameLoc) -> Result<Event> {
    let mut events = read_many(shared, &[(position, loc)])?;
    Ok(events.pop().expect("one frame read gives one event"))
}

/// Reads and checks the events at `locs`, each a position and where its frame lives, in order.
/// Frames that lie end to end, as a page of the log does, are read together.
pub(super) fn read_many(shared: &Shared, locs: &[(u64, segment::FrameLoc)]) -> Result<Vec<Event>> {
    let mut events = Vec::with_capacity(locs.len());
    visit_many(shared, locs, |record| {
        events.push(record.to_event());
        Ok(())
    })?;
    Ok(events)
}

/// Hands each frame of `locs` to `each` as a record view, after checking that it decodes and
/// holds the position the index expects.
fn visit_many(
    shared: &Shared,
    locs: &[(u64, segment::FrameLoc)],
    mut each: impl FnMut(&EventRecord<'_>) -> Result<()>,
) -> Result<()> {
    shared.reader.read_each(locs, |position, loc, record| {
        let corrupt = |detail| {
            let path = segment::segment_path(&shared.events_dir, loc.segment);
            Error::corrupt(&path, loc.offset, detail)
        };
        let record = EventRecord::parse(record).map_err(corrupt)?;
        if record.position.0 != position {
            return Err(corrupt(format!(
                "frame {position} holds position {}",
                record.position
            )));
        }
        each(&record)
    })
}

/// The store as gates see it: everything indexed so far, written or durable. Each call takes the
/// index lock briefly; only the writer changes the index, and it is busy deciding, so the view
/// is stable for the whole decision.
pub(super) struct StoreView {
    pub(super) shared: Arc<Shared>,
}

impl View for StoreView {
    fn head(&self) -> Position {
        Position(
            self.shared
                .index
                .read()
                .expect("index lock poisoned")
                .last(),
        )
    }

    fn version(&self, scope: &str, entity: &str) -> Version {
        let index = self.shared.index.read().expect("index lock poisoned");
        Version(index.last_version(scope, entity))
    }

    fn last_event(&self, scope: &str, entity: &str) -> Result<Option<Event>> {
        let found = {
            let index = self.shared.index.read().expect("index lock poisoned");
            index
                .entity(scope, entity)
                .and_then(|state| state.positions.last().copied())
                .map(|position| (position, index.loc(position)))
        };
        found
            .map(|(position, loc)| read_at(&self.shared, position, loc))
            .transpose()
    }

    fn count_within(&self, filter: &Filter, after: Position, max: u64, scan_max: u64) -> Scan {
        // The DCB condition calls this through `count`, with no scan budget: a condition that
        // gave up early would accept an append it should refuse. Gates pass their remaining
        // evaluation budget, since an entity prefix matching very many entities is checked
        // event by event and could otherwise walk the whole log.
        let index = self.shared.index.read().expect("index lock poisoned");
        let mut scan = Scan {
            found: 0,
            examined: 0,
            complete: true,
        };
        let Some(resolved) = index.resolve(filter) else {
            return scan;
        };
        let head = index.last();
        // Saturating: a position past any log is a valid (if pointless) condition, never a panic.
        let mut cursor = after.0.saturating_add(1);
        while scan.found < max {
            let budget = scan_max.saturating_sub(scan.examined);
            if budget == 0 {
                scan.complete = false;
                break;
            }
            let seek = index.next_match(
                &resolved,
                cursor,
                crate::event::Direction::Forward,
                head,
                usize::try_from(budget).unwrap_or(usize::MAX),
            );
            scan.examined += seek.examined as u64;
            let Some(position) = seek.found else {
                // Stopped by the budget, or at the end of the matches.
                scan.complete = scan.examined < scan_max;
                break;
            };
            scan.found += 1;
            cursor = position + 1;
        }
        scan
    }

    fn event_exists(&self, id: EventId) -> bool {
        self.shared
            .index
            .read()
            .expect("index lock poisoned")
            .position_of(&id)
            .is_some()
    }

    fn entity_events_since(&self, scope: &str, entity: &str, since: Timestamp) -> u64 {
        self.shared
            .index
            .read()
            .expect("index lock poisoned")
            .entity_events_since(scope, entity, since)
    }
}
