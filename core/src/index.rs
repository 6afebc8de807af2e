//! The in-memory indexes over the event log.
//!
//! Payloads stay on disk; memory holds, per event, a 32-byte [`Meta`] (where its frame is, its
//! timestamp and its entity) plus one entry among the ids and in the posting lists of its scope,
//! type, tags and entity. An entity's posting list doubles as its version table: version `v` is
//! at `positions[v - 1]`.
//!
//! Opening a store builds all of this from the headers of the log's events
//! ([`Index::insert_header`], then [`Index::finish_open`]); the writer adds its events with
//! [`Index::insert`]. Opening is bounded by this code, so it avoids allocating per event and
//! looks each name up once.
//!
//! The writer inserts events before they are durable, so the index may run ahead of the
//! committed head. Every reader caps what it looks at by the committed head it loaded first;
//! positions past it are invisible. `docs/BENCHMARKS.md` reports the bytes per event.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::codec::{self, EventRecord};
use crate::event::{Direction, Event, EventId, Hash, Version};
use crate::query::{Filter, Plan};
use crate::segment::FrameLoc;

mod containers;

pub(crate) use containers::Chunked;
use containers::{Postings, Sharded, Symbols};

/// Entities a prefix may expand to before the read checks the prefix per event instead.
const PREFIX_ENTITIES_MAX: usize = 64;

/// What memory holds per event.
#[derive(Copy, Clone, Debug)]
struct Meta {
    offset: u32,
    body_len: u32,
    timestamp: Timestamp,
    entity: u32,
    /// True on the last event of its append, so a read can end its page on an append's end.
    /// It fills padding: `Meta` stays 32 bytes.
    append_last: bool,
}

/// The fields of one event that the index keeps, borrowed from an owned [`Event`] (the writer)
/// or from a record [`EventRecord`] decoded in place (opening a store), so that opening allocates
/// nothing per event beyond what the index keeps.
struct Entry<'a, Tags, Parents> {
    position: u64,
    version: u64,
    timestamp: Timestamp,
    id: EventId,
    correlation_id: EventId,
    scope: &'a str,
    entity: &'a str,
    event_type: &'a str,
    tags: Tags,
    causation: Parents,
    hash: &'a Hash,
    /// The event's entity as the writer looked it up ([`Index::insert_known`]); `None` to look
    /// it up here.
    entity_idx: Option<u32>,
}

/// One scope+entity stream.
#[derive(Clone, Debug)]
pub(crate) struct EntityState {
    name: u32,
    /// Positions of the entity's events; version `v` is at index `v - 1`.
    pub(crate) positions: Chunked<u64>,
    /// The hash of the entity's last event, the start of the next link of its chain.
    pub(crate) last_hash: Hash,
}

/// Event ids to positions.
///
/// Opening a store pushes the id of every event of the log onto `loaded` and sorts it once, in
/// [`Index::finish_open`]. A push is a sequential write, where inserting into a hash map of a
/// million ids costs two cache misses (it was the largest single cost of opening a store), and
/// `loaded` holds 24 bytes per id against about 50 in a hash map. The price is paid by lookups
/// of those ids: a binary search, 20 steps at 1M events, instead of one probe. A UUIDv7 id
/// newer than every indexed UUIDv7 is ruled out by one compare.
///
/// After open, the ids the store assigns come in ascending order (one UUIDv7 counter), so each
/// is pushed onto `ascending` for the same reasons; the writer paid two cache misses per event
/// to put them in a hash map. An id that is not a UUIDv7 past every indexed UUIDv7 (chosen by a
/// client, an audit record's derived id, or one stamped by one thread and queued after a later
/// one) goes into `other`. Only UUIDv7 ids count for `newest`: a v7 id never equals an id of
/// another version, so one client's UUIDv4 (most sort above every v7 id) does not end the fast
/// path for everyone. A client's v7 id from a clock ahead of the server's does, until the
/// server's clock passes it: its ids then go into `other`, correct but slower.
#[derive(Debug, Default)]
struct Ids {
    /// Ids of the events loaded at open, sorted by id when `sorted` is true.
    loaded: Vec<(EventId, u64)>,
    sorted: bool,
    /// UUIDv7 ids indexed since open that were past every indexed UUIDv7 when they came:
    /// ascending.
    ascending: Chunked<(EventId, u64)>,
    /// The other ids indexed since open.
    other: Sharded<EventId, u64>,
    /// The greatest indexed UUIDv7 id (as the u128 of its bytes), 0 when there is none.
    newest: u128,
}

/// The u128 of a UUIDv7 id's bytes, or `None` for an id of another version.
fn v7_key(id: &EventId) -> Option<u128> {
    (id.0.get_version_num() == 7).then(|| id.0.as_u128())
}

impl Ids {
    /// Adds an id indexed after open.
    fn insert_written(&mut self, id: EventId, position: u64) {
        match v7_key(&id) {
            Some(key) if key > self.newest => {
                self.ascending.push((id, position));
                self.newest = key;
            }
            _ => self.other.insert(id, position),
        }
    }

    fn sort(&mut self) {
        // UUIDs order as their big-endian bytes, so as the u128 of them; comparing integers is
        // quicker than comparing byte arrays.
        self.loaded.sort_unstable_by_key(|(id, _)| id.0.as_u128());
        self.sorted = true;
    }

    fn get(&self, id: &EventId) -> Option<u64> {
        // The ids the store assigns are UUIDv7 from one counter, so they ascend: a new one is
        // past every indexed UUIDv7, and checking that it is unused, which the writer does for
        // every event, costs one compare and no lookup.
        if v7_key(id).is_some_and(|key| key > self.newest) {
            return None;
        }
        let key = id.0.as_u128();
        if let Some(&position) = self.other.get(id) {
            return Some(position);
        }
        debug_assert!(
            self.sorted || self.loaded.is_empty(),
            "ids are looked up only after the store opened"
        );
        let key_of = |(indexed, _): &(EventId, u64)| indexed.0.as_u128();
        let at = self.ascending.partition_point(|entry| key_of(entry) < key);
        if let Some(&(_, position)) = self.ascending.get(at).filter(|entry| key_of(entry) == key) {
            return Some(position);
        }
        let found = self.loaded.binary_search_by_key(&key, key_of);
        found.ok().map(|idx| self.loaded[idx].1)
    }

    fn heap_bytes(&self) -> usize {
        (self.loaded.capacity() + self.ascending.capacity()) * std::mem::size_of::<(EventId, u64)>()
            + self.other.heap_bytes(|_, _| 0)
    }
}

/// The indexes, for positions `1..=last()`.
#[derive(Debug, Default)]
pub(crate) struct Index {
    metas: Chunked<Meta>,
    /// First positions of the segments, ascending: a position's segment is the last one at or
    /// before it.
    segments: Vec<u64>,
    ids: Ids,
    /// Entity names (the `entity` of events, in every scope).
    entity_symbols: Symbols,
    /// Scope and entity name symbols to entity indexes.
    entity_keys: Sharded<(u32, u32), u32>,
    /// The entity inserted last: its key in `entity_keys` and its index (see `Symbols::last`).
    last_entity: Option<((u32, u32), u32)>,
    entities: Vec<EntityState>,
    /// Entity names to entity indexes, for prefix queries.
    entity_names: BTreeMap<String, Vec<u32>>,
    by_scope: Postings,
    by_type: Postings,
    by_tag: Postings,
    /// Causation parent id to the positions of its children.
    children: Sharded<EventId, Vec<u64>>,
    /// Correlation id to the positions of the events that carry it, except the event whose own
    /// id it is (most events start their own correlation; indexing those would double memory).
    correlated: Sharded<EventId, Vec<u64>>,
    digest: Hash,
    /// The last position of the append being inserted: the first event of every append carries
    /// the append's event count in its trailer, and events are inserted in position order.
    append_end: u64,
}

/// A filter resolved against the index: a plan plus the checks the plan leaves to each event.
pub(crate) struct Resolved<'a> {
    plan: Plan<'a>,
    prefix: Option<&'a str>,
    /// The positions the filter's time bounds leave, from the index's timestamps (which
    /// increase with position): a read never examines an event outside them, however many
    /// there are, and needs no time check on the events inside.
    within: std::ops::RangeInclusive<u64>,
}

/// What [`Index::next_match`] found.
pub(crate) struct Seek {
    /// The first match, if one was found within the bounds and the budget.
    pub(crate) found: Option<u64>,
    /// Candidates examined.
    pub(crate) examined: usize,
    /// Where a read that ran out of budget goes on: past every candidate examined.
    pub(crate) resume: u64,
}

impl Index {
    /// The last indexed position (committed or not); 0 when empty.
    pub(crate) fn last(&self) -> u64 {
        self.metas.len() as u64
    }

    /// The running digest over every indexed event's hash.
    pub(crate) fn digest(&self) -> Hash {
        self.digest
    }

    /// The timestamp of the last indexed event.
    pub(crate) fn last_timestamp(&self) -> Timestamp {
        self.metas
            .last()
            .map(|meta| meta.timestamp)
            .unwrap_or_default()
    }

    /// Records that a segment starts at `first_position`.
    pub(crate) fn add_segment(&mut self, first_position: u64) {
        if self.segments.last() != Some(&first_position) {
            debug_assert!(
                self.segments
                    .last()
                    .is_none_or(|&last| last < first_position)
            );
            self.segments.push(first_position);
        }
    }

    /// [`Index::insert_known`] with the entity looked up here.
    #[cfg(test)]
    pub(crate) fn insert(
        &mut self,
        event: &Event,
        loc: FrameLoc,
        append_events: Option<u16>,
    ) -> Result<(), String> {
        self.insert_known(event, loc, append_events, None)
    }

    /// Adds the next event, or says why it cannot be next (a gap in positions or versions)
    /// without changing anything. `event` may lack its payload; `loc` is where its frame lives.
    /// `append_events` is the event count of the append `event` starts, on the first event of
    /// an append (its trailer's `n_events`), `None` on the others. `entity_idx` is the event's
    /// entity as the writer looked it up before ([`Index::entity_idx`]), so the insert skips
    /// that lookup; `None` looks it up here (an entity that had no event then, or a caller that
    /// did not look). The index must not have changed since but by the writer's own inserts.
    pub(crate) fn insert_known(
        &mut self,
        event: &Event,
        loc: FrameLoc,
        append_events: Option<u16>,
        entity_idx: Option<u32>,
    ) -> Result<(), String> {
        self.insert_entry(
            Entry {
                position: event.position.0,
                version: event.version.0,
                timestamp: event.timestamp,
                id: event.id,
                correlation_id: event.correlation_id,
                scope: &event.scope,
                entity: &event.entity,
                event_type: &event.event_type,
                tags: event.tags.iter().map(String::as_str),
                causation: event.causation.iter().copied(),
                hash: &event.hash,
                entity_idx,
            },
            loc,
            append_events,
        )?;
        self.ids.insert_written(event.id, event.position.0);
        Ok(())
    }

    /// [`Index::insert`] from a header decoded in place, as opening a store reads them. Call
    /// [`Index::finish_open`] after the last one.
    pub(crate) fn insert_header(
        &mut self,
        header: &EventRecord<'_>,
        loc: FrameLoc,
    ) -> Result<(), String> {
        self.insert_entry(
            Entry {
                position: header.position.0,
                version: header.version.0,
                timestamp: header.timestamp,
                id: header.id,
                correlation_id: header.correlation_id,
                scope: header.scope,
                entity: header.entity,
                event_type: header.event_type,
                tags: header.tags,
                causation: header.causation,
                hash: header.hash,
                entity_idx: None,
            },
            loc,
            header.trailer.as_ref().map(|trailer| trailer.n_events),
        )?;
        self.ids.loaded.push((header.id, header.position.0));
        if let Some(key) = v7_key(&header.id) {
            self.ids.newest = self.ids.newest.max(key);
        }
        self.ids.sorted = false;
        Ok(())
    }

    /// Ends opening: sorts the ids loaded by [`Index::insert_header`], so they can be found.
    pub(crate) fn finish_open(&mut self) {
        self.ids.sort();
    }

    fn insert_entry<'a>(
        &mut self,
        entry: Entry<'a, impl Iterator<Item = &'a str>, impl Iterator<Item = EventId>>,
        loc: FrameLoc,
        append_events: Option<u16>,
    ) -> Result<(), String> {
        let position = entry.position;
        if position != self.last() + 1 {
            return Err(format!(
                "event at position {position} where position {} was expected",
                self.last() + 1
            ));
        }
        // One lookup of each name serves both the version check and the insert: name lookups (a
        // SipHash and a compare each) are a large part of opening a store, where nearly every
        // name is already known.
        let scope = self.by_scope.symbols.find(entry.scope);
        let known_entity = match entry.entity_idx {
            Some(entity_idx) => {
                debug_assert_eq!(
                    self.entity_idx(entry.scope, entry.entity),
                    Some(entity_idx),
                    "the writer's entity of {}/{}",
                    entry.scope,
                    entry.entity
                );
                Some(entity_idx)
            }
            None => scope
                .zip(self.entity_symbols.find(entry.entity))
                .and_then(|key| match self.last_entity {
                    Some((last_key, entity_idx)) if last_key == key => Some(entity_idx),
                    _ => {
                        let entity_idx = self.entity_keys.get(&key).copied()?;
                        self.last_entity = Some((key, entity_idx));
                        Some(entity_idx)
                    }
                }),
        };
        let known_version = known_entity.map_or(0, |entity_idx| {
            self.entities[entity_idx as usize].positions.len() as u64
        });
        if entry.version != known_version + 1 {
            return Err(format!(
                "event at version {} of {}/{} where version {} was expected",
                entry.version,
                entry.scope,
                entry.entity,
                known_version + 1
            ));
        }
        let scope = scope.unwrap_or_else(|| self.by_scope.intern(entry.scope));
        self.by_scope.push(scope, position);
        let entity_idx = known_entity.unwrap_or_else(|| self.add_entity(scope, entry.entity));
        let entity = &mut self.entities[entity_idx as usize];
        entity.positions.push(position);
        entity.last_hash = *entry.hash;
        let event_type = self.by_type.intern(entry.event_type);
        self.by_type.push(event_type, position);
        for tag in entry.tags {
            let tag = self.by_tag.intern(tag);
            self.by_tag.push(tag, position);
        }
        for parent in entry.causation {
            self.children.entry(parent).or_default().push(position);
        }
        if entry.correlation_id != entry.id {
            self.correlated
                .entry(entry.correlation_id)
                .or_default()
                .push(position);
        }
        self.digest = codec::next_digest(&self.digest, entry.hash);
        if let Some(n_events) = append_events.filter(|&n_events| n_events > 0) {
            // A new append ends the one before it, even one whose tail a crash took (the
            // segment log drops torn batches whole, so that is a safeguard, not a path).
            if let Some(previous) = self.metas.last_mut() {
                previous.append_last = true;
            }
            self.append_end = position + u64::from(n_events) - 1;
        }
        self.metas.push(Meta {
            offset: loc.offset as u32,
            body_len: loc.body_len,
            timestamp: entry.timestamp,
            entity: entity_idx,
            // An event past the end of the last known append (none carried a trailer) is taken
            // as an append of its own.
            append_last: position >= self.append_end,
        });
        Ok(())
    }

    /// Starts the stream of a new entity in an interned scope; returns its index.
    fn add_entity(&mut self, scope: u32, entity: &str) -> u32 {
        let name = self.entity_symbols.intern(entity);
        let entity_idx = u32::try_from(self.entities.len()).expect("fewer than 2^32 entities");
        self.entities.push(EntityState {
            name,
            positions: Chunked::default(),
            last_hash: [0; 32],
        });
        self.entity_keys.insert((scope, name), entity_idx);
        self.last_entity = Some(((scope, name), entity_idx));
        self.entity_names
            .entry(entity.to_string())
            .or_default()
            .push(entity_idx);
        entity_idx
    }

    /// Makes room for the ids of `n_events` more events, so a rebuild does not move them as it
    /// grows (the other per-event vectors are [`Chunked`], and never move).
    pub(crate) fn reserve(&mut self, n_events: usize) {
        self.ids.loaded.reserve_exact(n_events);
    }

    /// The last position of the append that holds `position`, among the indexed events: where a
    /// page may end. At most `APPEND_EVENTS_MAX - 1` positions past `position`.
    pub(crate) fn append_last(&self, position: u64) -> u64 {
        let mut last = position;
        while last < self.last() && !self.metas[(last - 1) as usize].append_last {
            last += 1;
        }
        last
    }

    /// Where the frame of `position` lives.
    pub(crate) fn loc(&self, position: u64) -> FrameLoc {
        let meta = &self.metas[(position - 1) as usize];
        let segment_idx = self.segments.partition_point(|&first| first <= position) - 1;
        FrameLoc {
            segment: self.segments[segment_idx],
            offset: u64::from(meta.offset),
            body_len: meta.body_len,
        }
    }

    /// The current version of an entity, every indexed event counted: 0 when it has none.
    pub(crate) fn last_version(&self, scope: &str, entity: &str) -> u64 {
        self.entity(scope, entity)
            .map_or(0, |state| state.positions.len() as u64)
    }

    /// The hash of an entity's last indexed event, where its next event's chain link starts:
    /// zeros when it has none.
    pub(crate) fn last_hash(&self, scope: &str, entity: &str) -> Hash {
        self.entity(scope, entity)
            .map_or([0; 32], |state| state.last_hash)
    }

    /// The position of an entity's event at `version` (from 1), if it has one.
    pub(crate) fn position_at(&self, scope: &str, entity: &str, version: u64) -> Option<u64> {
        let version_idx = usize::try_from(version.checked_sub(1)?).ok()?;
        self.entity(scope, entity)?
            .positions
            .get(version_idx)
            .copied()
    }

    /// The first positions of the segments that hold positions up to `head`, ascending; one
    /// segment (the first) when the log is empty.
    pub(crate) fn segments_through(&self, head: u64) -> Vec<u64> {
        let n_segments = self
            .segments
            .partition_point(|&first| first <= head.max(1))
            .max(1);
        self.segments[..n_segments].to_vec()
    }

    /// The position of the event with this id, committed or not.
    pub(crate) fn position_of(&self, id: &EventId) -> Option<u64> {
        self.ids.get(id)
    }

    /// Positions of the events that name `parent` as a cause.
    pub(crate) fn children_of(&self, parent: &EventId) -> &[u64] {
        self.children
            .get(parent)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Whether any indexed event names `id` as a causation parent.
    pub(crate) fn has_children(&self, id: &EventId) -> bool {
        self.children.contains_key(id)
    }

    /// Positions of the events of a correlation, in position order.
    pub(crate) fn correlation(&self, correlation_id: &EventId) -> Vec<u64> {
        let mut positions: Vec<u64> = self
            .correlated
            .get(correlation_id)
            .cloned()
            .unwrap_or_default();
        if let Some(root) = self.position_of(correlation_id) {
            let at = positions.partition_point(|&p| p < root);
            positions.insert(at, root);
        }
        positions
    }

    /// The stream of `scope`/`entity`, if it has any event.
    pub(crate) fn entity(&self, scope: &str, entity: &str) -> Option<&EntityState> {
        self.entity_idx(scope, entity)
            .map(|entity_idx| self.entity_at(entity_idx))
    }

    /// Where the stream of `scope`/`entity` is kept, if it has any event: three name lookups,
    /// which a writer makes once per event and carries to [`Index::entity_at`] and
    /// [`Index::insert_known`].
    pub(crate) fn entity_idx(&self, scope: &str, entity: &str) -> Option<u32> {
        let key = (
            self.by_scope.symbols.get(scope)?,
            self.entity_symbols.get(entity)?,
        );
        self.entity_keys.get(&key).copied()
    }

    /// The stream kept at an [`Index::entity_idx`].
    pub(crate) fn entity_at(&self, entity_idx: u32) -> &EntityState {
        &self.entities[entity_idx as usize]
    }

    /// The current version of an entity among positions up to `head`.
    pub(crate) fn version_at(&self, scope: &str, entity: &str, head: u64) -> Version {
        let visible = self
            .entity(scope, entity)
            .map_or(0, |state| state.positions.partition_point(|&p| p <= head));
        Version(visible as u64)
    }

    /// Positions of an entity's events from version `from` in `direction`, up to `head`.
    pub(crate) fn entity_positions(
        &self,
        scope: &str,
        entity: &str,
        from: Version,
        direction: Direction,
        limit: usize,
        head: u64,
    ) -> Vec<u64> {
        let Some(state) = self.entity(scope, entity) else {
            return Vec::new();
        };
        let n_visible = state.positions.partition_point(|&p| p <= head);
        let at = |version_idx: usize| state.positions[version_idx];
        match direction {
            Direction::Forward => (from.0.max(1) as usize - 1..n_visible)
                .take(limit)
                .map(at)
                .collect(),
            Direction::Backward => (0..(from.0 as usize).min(n_visible))
                .rev()
                .take(limit)
                .map(at)
                .collect(),
        }
    }

    /// Resolves a filter to a plan; `None` when it can match nothing (it names an unknown tag,
    /// say).
    pub(crate) fn resolve<'a>(&'a self, filter: &'a Filter) -> Option<Resolved<'a>> {
        let mut required = Vec::new();
        if !filter.scopes.is_empty() {
            let lists: Vec<Plan<'a>> = filter
                .scopes
                .iter()
                .filter_map(|scope| list(&self.by_scope, scope))
                .collect();
            required.push(non_empty_union(lists)?);
        }
        if !filter.items.iter().all(|item| item.is_empty()) {
            let mut items = Vec::new();
            for item in &filter.items {
                let mut parts = Vec::new();
                if !item.types.is_empty() {
                    let lists = item
                        .types
                        .iter()
                        .filter_map(|t| list(&self.by_type, t))
                        .collect();
                    match non_empty_union(lists) {
                        Some(plan) => parts.push(plan),
                        None => continue,
                    }
                }
                let tags: Option<Vec<Plan<'a>>> = item
                    .tags
                    .iter()
                    .map(|tag| list(&self.by_tag, tag))
                    .collect();
                let Some(tags) = tags else { continue };
                parts.extend(tags);
                items.push(if parts.is_empty() {
                    Plan::All
                } else {
                    Plan::And(parts)
                });
            }
            required.push(non_empty_union(items)?);
        }
        let mut prefix = None;
        if !filter.entity_prefix.is_empty() {
            let matching: Vec<u32> = self
                .entity_names
                .range::<str, _>((
                    std::ops::Bound::Included(filter.entity_prefix.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(name, _)| name.starts_with(&filter.entity_prefix))
                .flat_map(|(_, entity_idxs)| entity_idxs.iter().copied())
                .take(PREFIX_ENTITIES_MAX + 1)
                .collect();
            if matching.len() > PREFIX_ENTITIES_MAX {
                prefix = Some(filter.entity_prefix.as_str());
            } else {
                let lists = matching
                    .iter()
                    .map(|&idx| Plan::List(&self.entities[idx as usize].positions))
                    .collect();
                required.push(non_empty_union(lists)?);
            }
        }
        let plan = match required.len() {
            0 => Plan::All,
            1 => required.pop().expect("one plan"),
            _ => Plan::And(required),
        };
        let first = filter
            .since
            .map_or(1, |since| self.first_at_or_after(since));
        let last = filter
            .until
            .map_or(u64::MAX, |until| self.first_at_or_after(until) - 1);
        Some(Resolved {
            plan,
            prefix,
            within: first..=last,
        })
    }

    /// The next matching position from `from` in `direction`, within `1..=head` and the
    /// filter's time bounds, examining at most `budget` candidates. A forward read starts no
    /// earlier than the first position the bounds leave, a backward one no later than the last.
    pub(crate) fn next_match(
        &self,
        resolved: &Resolved<'_>,
        from: u64,
        direction: Direction,
        head: u64,
        budget: usize,
    ) -> Seek {
        let within = (*resolved.within.start()).max(1)..=(*resolved.within.end()).min(head);
        let mut cursor = match direction {
            Direction::Forward => from.max(*within.start()),
            Direction::Backward => from.min(*within.end()),
        };
        let mut examined = 0;
        while examined < budget && within.contains(&cursor) {
            let Some(candidate) = resolved
                .plan
                .seek(cursor, direction)
                .filter(|p| within.contains(p))
            else {
                break;
            };
            examined += 1;
            if self.keeps(resolved, candidate) {
                return Seek {
                    found: Some(candidate),
                    examined,
                    resume: candidate,
                };
            }
            cursor = match direction {
                Direction::Forward => candidate + 1,
                Direction::Backward => candidate - 1,
            };
        }
        Seek {
            found: None,
            examined,
            resume: cursor,
        }
    }

    /// How many events of an entity have a timestamp at or after `since`.
    pub(crate) fn entity_events_since(&self, scope: &str, entity: &str, since: Timestamp) -> u64 {
        let Some(state) = self.entity(scope, entity) else {
            return 0;
        };
        let older = state
            .positions
            .partition_point(|&p| self.metas[(p - 1) as usize].timestamp < since);
        (state.positions.len() - older) as u64
    }

    /// The timestamp of the event at `position`, if it is indexed.
    pub(crate) fn timestamp_at(&self, position: u64) -> Option<Timestamp> {
        let idx = usize::try_from(position.checked_sub(1)?).ok()?;
        self.metas.get(idx).map(|meta| meta.timestamp)
    }

    /// The first position whose timestamp is at or after `ts`, or `last() + 1`. Timestamps
    /// increase with position, so this is a binary search.
    pub(crate) fn first_at_or_after(&self, ts: Timestamp) -> u64 {
        self.metas.partition_point(|meta| meta.timestamp < ts) as u64 + 1
    }

    fn keeps(&self, resolved: &Resolved<'_>, position: u64) -> bool {
        resolved.prefix.is_none_or(|prefix| {
            let meta = &self.metas[(position - 1) as usize];
            let name = self.entities[meta.entity as usize].name;
            self.entity_symbols.name(name).starts_with(prefix)
        })
    }

    /// Approximate heap bytes held by the index, for the memory report.
    pub(crate) fn heap_bytes(&self) -> usize {
        let entities: usize = self
            .entities
            .iter()
            .map(|state| state.positions.capacity() * 8 + std::mem::size_of::<EntityState>() + 16)
            .sum();
        self.metas.capacity() * std::mem::size_of::<Meta>()
            + self.ids.heap_bytes()
            + self.by_scope.heap_bytes()
            + self.by_type.heap_bytes()
            + self.by_tag.heap_bytes()
            + self.entity_symbols.heap_bytes()
            + self.entity_keys.heap_bytes(|_, _| 0)
            + entities
            + self
                .children
                .heap_bytes(|_, positions| positions.capacity() * 8)
            + self
                .correlated
                .heap_bytes(|_, positions| positions.capacity() * 8)
            + self
                .entity_names
                .keys()
                .map(|name| name.capacity() + 24 + 32)
                .sum::<usize>()
    }
}

/// The plan that reads the list of `name`, if any event carries it.
fn list<'a>(postings: &'a Postings, name: &str) -> Option<Plan<'a>> {
    postings.list(name).map(Plan::List)
}

fn non_empty_union(mut plans: Vec<Plan<'_>>) -> Option<Plan<'_>> {
    match plans.len() {
        0 => None,
        1 => plans.pop(),
        _ => Some(Plan::Union(plans)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The index built the way a store builds it: the log's events from decoded headers at open,
    //! then the writer's owned events. Ids from both parts are found, streams and posting lists
    //! match the events, each kind of name has its own names, and a refused insert changes
    //! nothing.

    use super::*;
    use std::collections::HashMap;

    use crate::query::QueryItem;

    const N_OPEN: u64 = 30;
    const N_EVENTS: u64 = 50;

    /// Ids in no particular order, as clients may choose them.
    fn id(position: u64) -> EventId {
        EventId(uuid::Uuid::from_u128(u128::from((position * 37) % 101) + 1))
    }

    fn entity_name(position: u64) -> String {
        if position.is_multiple_of(3) {
            format!("customer-{}", position % 2)
        } else {
            format!("order-{}", position % 4)
        }
    }

    /// The events of a small log, with versions counted per scope and entity.
    fn events() -> Vec<Event> {
        let mut versions: HashMap<(String, String), u64> = HashMap::new();
        (1..=N_EVENTS)
            .map(|position| {
                let scope = if position.is_multiple_of(2) {
                    "acme"
                } else {
                    "globex"
                };
                let entity = entity_name(position);
                let version = versions
                    .entry((scope.to_string(), entity.clone()))
                    .or_default();
                *version += 1;
                let event_type = format!("Type{}", position % 3);
                let tag = format!("tag:{}", position % 5);
                event(position, *version, [scope, &entity, &event_type, &tag])
            })
            .collect()
    }

    /// The event at `position` and `version` with these scope, entity, type and tag.
    fn event(position: u64, version: u64, [scope, entity, event_type, tag]: [&str; 4]) -> Event {
        Event {
            position: crate::event::Position(position),
            version: Version(version),
            timestamp: Timestamp::new(1_000 + position, 0),
            id: id(position),
            scope: scope.to_string(),
            entity: entity.to_string(),
            event_type: event_type.to_string(),
            tags: vec![tag.to_string()],
            content_type: String::new(),
            metadata: BTreeMap::new(),
            causation: vec![],
            correlation_id: id(position),
            hash: [position as u8; 32],
            payload: bytes::Bytes::new(),
        }
    }

    fn loc(position: u64) -> FrameLoc {
        FrameLoc {
            segment: 1,
            offset: 32 + position * 100,
            body_len: 90,
        }
    }

    /// An index of [`N_OPEN`] events loaded as at open, then the rest from the writer.
    fn index() -> Index {
        let mut index = Index::default();
        index.add_segment(1);
        for event in events().iter().take(N_OPEN as usize) {
            let (record, _) = codec::encode(event, &[0; 32], None);
            let header = EventRecord::parse(&record).unwrap();
            index.insert_header(&header, loc(event.position.0)).unwrap();
        }
        index.finish_open();
        for event in events().iter().skip(N_OPEN as usize) {
            index.insert(event, loc(event.position.0), None).unwrap();
        }
        index
    }

    #[test]
    fn ids_loaded_at_open_and_written_after_are_both_found() {
        let index = index();
        assert_eq!(index.last(), N_EVENTS);
        for position in 1..=N_EVENTS {
            assert_eq!(index.position_of(&id(position)), Some(position));
            assert_eq!(index.loc(position), loc(position));
        }
        // Past every id, before every id, and between ids (position 51 would have had it).
        for unknown in [1_000, 0, (51 * 37) % 101 + 1] {
            let unknown = EventId(uuid::Uuid::from_u128(unknown));
            assert_eq!(index.position_of(&unknown), None, "{unknown}");
        }
    }

    #[test]
    fn streams_and_posting_lists_match_the_events() {
        let index = index();
        let events = events();
        for event in &events {
            let expected: Vec<u64> = events
                .iter()
                .filter(|other| other.scope == event.scope && other.entity == event.entity)
                .map(|other| other.position.0)
                .collect();
            let state = index.entity(&event.scope, &event.entity).unwrap();
            assert_eq!(
                state.positions.iter().copied().collect::<Vec<_>>(),
                expected,
                "{}/{}",
                event.scope,
                event.entity
            );
            assert_eq!(state.last_hash, [*expected.last().unwrap() as u8; 32]);
        }
        let filter = Filter {
            scopes: vec!["acme".to_string()],
            items: vec![QueryItem {
                types: vec!["Type1".to_string()],
                tags: vec!["tag:2".to_string()],
            }],
            ..Filter::default()
        };
        let resolved = index.resolve(&filter).unwrap();
        let mut found = Vec::new();
        let mut from = 1;
        while let Some(position) = index
            .next_match(&resolved, from, Direction::Forward, N_EVENTS, 1000)
            .found
        {
            found.push(position);
            from = position + 1;
        }
        let expected: Vec<u64> = events
            .iter()
            .filter(|event| {
                event.scope == "acme" && event.event_type == "Type1" && event.tags[0] == "tag:2"
            })
            .map(|event| event.position.0)
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(found, expected);
        // A name known as a tag is not a type: each kind has its own names.
        let crossed = Filter {
            items: vec![QueryItem {
                types: vec!["tag:2".to_string()],
                tags: vec![],
            }],
            ..Filter::default()
        };
        assert!(index.resolve(&crossed).is_none());
    }

    #[test]
    fn the_same_name_in_another_scope_or_kind_is_another_stream() {
        // Consecutive events that share an entity name but not a scope, and a name used as a
        // type and then as a tag: the index remembers the last name of each kind, and must
        // not take one for the other.
        let cases = [
            ["acme", "x", "Placed", "x"],
            ["globex", "x", "x", "Placed"],
            ["acme", "x", "Placed", "x"],
            ["acme", "y", "Placed", "x"],
        ];
        let mut versions: HashMap<(&str, &str), u64> = HashMap::new();
        let mut index = Index::default();
        index.add_segment(1);
        for (position, names) in (1u64..).zip(cases) {
            let version = versions.entry((names[0], names[1])).or_default();
            *version += 1;
            let event = event(position, *version, names);
            index.insert(&event, loc(position), None).unwrap();
        }
        let entity = |scope, name| index.entity(scope, name).unwrap().positions.iter().copied();
        assert!(entity("acme", "x").eq([1, 3]));
        assert!(entity("globex", "x").eq([2]));
        assert!(entity("acme", "y").eq([4]));
        let list = |postings: &Postings, name| -> Vec<u64> {
            postings.list(name).unwrap().iter().copied().collect()
        };
        assert_eq!(list(&index.by_type, "Placed"), [1, 3, 4]);
        assert_eq!(list(&index.by_type, "x"), [2]);
        assert_eq!(list(&index.by_tag, "x"), [1, 3, 4]);
        assert_eq!(list(&index.by_tag, "Placed"), [2]);
    }

    #[test]
    fn an_id_of_another_version_above_every_v7_id_does_not_end_the_fast_path() {
        let v7 = |seconds| {
            let ts = uuid::Timestamp::from_unix(uuid::NoContext, seconds, 0);
            EventId(uuid::Uuid::new_v7(ts))
        };
        // Not a UUIDv7 (version 15), and above every v7 id.
        let highest = EventId(uuid::Uuid::from_u128(u128::MAX));
        let ids = [v7(1_000), highest, v7(2_000), v7(1_500)];
        let mut index = Index::default();
        index.add_segment(1);
        for (position, id) in (1u64..).zip(ids) {
            let event = Event {
                id,
                correlation_id: id,
                ..event(position, position, ["s", "e", "T", "t"])
            };
            index.insert(&event, loc(position), None).unwrap();
        }
        assert_eq!(
            index
                .ids
                .ascending
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            vec![ids[0], ids[2]],
            "v7 ids past every indexed v7 id are pushed, whatever else is indexed"
        );
        for (position, id) in (1u64..).zip(ids) {
            assert_eq!(index.position_of(&id), Some(position), "{id}");
        }
        assert_eq!(index.position_of(&v7(3_000)), None);
        assert_eq!(index.position_of(&v7(1_200)), None);
    }

    /// The append-end flag lives in padding: memory per event does not grow.
    #[test]
    fn meta_stays_32_bytes() {
        assert_eq!(std::mem::size_of::<Meta>(), 32);
    }

    #[test]
    fn an_event_out_of_order_is_refused_and_changes_nothing() {
        let mut index = index();
        let digest = index.digest();
        let mut next = events()[0].clone();
        next.position = crate::event::Position(N_EVENTS + 1);
        next.id = EventId(uuid::Uuid::from_u128(5_000));
        // Its entity already has events, so version 1 is a gap backwards.
        let err = index.insert(&next, loc(N_EVENTS + 1), None).unwrap_err();
        assert!(err.contains("where version"), "{err}");
        next.position = crate::event::Position(N_EVENTS + 2);
        let err = index.insert(&next, loc(N_EVENTS + 2), None).unwrap_err();
        assert!(err.contains("where position"), "{err}");
        assert_eq!(index.last(), N_EVENTS);
        assert_eq!(index.digest(), digest);
        assert_eq!(index.position_of(&next.id), None);
    }
}
