//! The in-memory indexes over the event log.
//!
//! Payloads stay on disk; memory holds, per event, a 24-byte [`Meta`] (where its frame is, its
//! timestamp, and interned scope, entity and type) plus one entry in the id map and in the
//! posting lists of its scope, type, tags and entity. An entity's posting list doubles as its
//! version table: version `v` is at `positions[v - 1]`.
//!
//! The writer inserts events before they are durable, so the index may run ahead of the
//! committed head. Every reader caps what it looks at by the committed head it loaded first;
//! positions past it are invisible. `docs/BENCHMARKS.md` reports the bytes per event.

use std::collections::{BTreeMap, HashMap};

use crate::clock::Timestamp;
use crate::codec;
use crate::event::{Direction, Event, EventId, Hash, Version};
use crate::query::{Filter, Plan};
use crate::segment::FrameLoc;

/// Entities a prefix may expand to before the read checks the prefix per event instead.
const PREFIX_ENTITIES_MAX: usize = 64;

/// What memory holds per event.
#[derive(Copy, Clone, Debug)]
struct Meta {
    offset: u32,
    body_len: u32,
    timestamp: Timestamp,
    entity: u32,
}

/// One scope+entity stream.
#[derive(Clone, Debug)]
pub(crate) struct EntityState {
    name: u32,
    /// Positions of the entity's events; version `v` is at index `v - 1`.
    pub(crate) positions: Vec<u64>,
    /// The hash of the entity's last event, the start of the next link of its chain.
    pub(crate) last_hash: Hash,
}

/// Interned strings: scopes, entities, types and tags each stored once.
#[derive(Debug, Default)]
struct Symbols {
    by_name: HashMap<String, u32>,
    names: Vec<String>,
}

impl Symbols {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&sym) = self.by_name.get(name) {
            return sym;
        }
        let sym = u32::try_from(self.names.len()).expect("fewer than 2^32 distinct names");
        self.names.push(name.to_string());
        self.by_name.insert(name.to_string(), sym);
        sym
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    fn name(&self, sym: u32) -> &str {
        &self.names[sym as usize]
    }
}

/// The indexes, for positions `1..=last()`.
#[derive(Debug, Default)]
pub(crate) struct Index {
    symbols: Symbols,
    metas: Vec<Meta>,
    /// First positions of the segments, ascending: a position's segment is the last one at or
    /// before it.
    segments: Vec<u64>,
    ids: HashMap<EventId, u64>,
    entity_keys: HashMap<(u32, u32), u32>,
    entities: Vec<EntityState>,
    /// Entity names to entity indexes, for prefix queries.
    entity_names: BTreeMap<String, Vec<u32>>,
    by_scope: HashMap<u32, Vec<u64>>,
    by_type: HashMap<u32, Vec<u64>>,
    by_tag: HashMap<u32, Vec<u64>>,
    /// Causation parent id to the positions of its children.
    children: HashMap<EventId, Vec<u64>>,
    /// Correlation id to the positions of the events that carry it, except the event whose own
    /// id it is (most events start their own correlation; indexing those would double memory).
    correlated: HashMap<EventId, Vec<u64>>,
    digest: Hash,
}

/// A filter resolved against the index: a plan plus the checks the plan leaves to each event.
pub(crate) struct Resolved<'a> {
    plan: Plan<'a>,
    prefix: Option<&'a str>,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
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

    /// Adds the next event. `event` may lack its payload; `loc` is where its frame lives.
    /// Adds the next event, or says why it cannot be next (a gap in positions or versions)
    /// without changing anything. `event` may lack its payload; `loc` is where its frame lives.
    pub(crate) fn insert(&mut self, event: &Event, loc: FrameLoc) -> Result<(), String> {
        let position = event.position.0;
        if position != self.last() + 1 {
            return Err(format!(
                "event at position {position} where position {} was expected",
                self.last() + 1
            ));
        }
        let known = self
            .symbols
            .get(&event.scope)
            .zip(self.symbols.get(&event.entity))
            .and_then(|key| self.entity_keys.get(&key))
            .map_or(0, |&entity_idx| {
                self.entities[entity_idx as usize].positions.len() as u64
            });
        if event.version.0 != known + 1 {
            return Err(format!(
                "event at version {} of {}/{} where version {} was expected",
                event.version,
                event.scope,
                event.entity,
                known + 1
            ));
        }
        let scope = self.symbols.intern(&event.scope);
        let name = self.symbols.intern(&event.entity);
        let entity_idx = match self.entity_keys.get(&(scope, name)) {
            Some(&entity_idx) => entity_idx,
            None => {
                let entity_idx =
                    u32::try_from(self.entities.len()).expect("fewer than 2^32 entities");
                self.entities.push(EntityState {
                    name,
                    positions: Vec::new(),
                    last_hash: [0; 32],
                });
                self.entity_keys.insert((scope, name), entity_idx);
                self.entity_names
                    .entry(event.entity.clone())
                    .or_default()
                    .push(entity_idx);
                entity_idx
            }
        };
        let entity = &mut self.entities[entity_idx as usize];
        entity.positions.push(position);
        entity.last_hash = event.hash;
        let event_type = self.symbols.intern(&event.event_type);
        self.by_scope.entry(scope).or_default().push(position);
        self.by_type.entry(event_type).or_default().push(position);
        for tag in &event.tags {
            let tag = self.symbols.intern(tag);
            self.by_tag.entry(tag).or_default().push(position);
        }
        self.ids.insert(event.id, position);
        for parent in &event.causation {
            self.children.entry(*parent).or_default().push(position);
        }
        if event.correlation_id != event.id {
            self.correlated
                .entry(event.correlation_id)
                .or_default()
                .push(position);
        }
        self.digest = codec::next_digest(&self.digest, &event.hash);
        self.metas.push(Meta {
            offset: loc.offset as u32,
            body_len: loc.body_len,
            timestamp: event.timestamp,
            entity: entity_idx,
        });
        Ok(())
    }

    /// Makes room for `n_events` more events, so a rebuild does not rehash as it grows.
    pub(crate) fn reserve(&mut self, n_events: usize) {
        self.metas.reserve(n_events);
        self.ids.reserve(n_events);
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

    /// The position of the event with this id, committed or not.
    pub(crate) fn position_of(&self, id: &EventId) -> Option<u64> {
        self.ids.get(id).copied()
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
        let key = (self.symbols.get(scope)?, self.symbols.get(entity)?);
        self.entity_keys
            .get(&key)
            .map(|&entity_idx| &self.entities[entity_idx as usize])
    }

    /// The current version of an entity among positions up to `head`.
    pub(crate) fn version_at(&self, scope: &str, entity: &str, head: u64) -> Version {
        let positions = self
            .entity(scope, entity)
            .map(|state| state.positions.as_slice())
            .unwrap_or_default();
        Version(positions.partition_point(|&p| p <= head) as u64)
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
        let visible = &state.positions[..state.positions.partition_point(|&p| p <= head)];
        match direction {
            Direction::Forward => {
                let start = from.0.max(1) as usize - 1;
                visible.iter().skip(start).take(limit).copied().collect()
            }
            Direction::Backward => {
                let end = (from.0 as usize).min(visible.len());
                visible[..end].iter().rev().take(limit).copied().collect()
            }
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
                .filter_map(|scope| self.list(&self.by_scope, scope))
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
                        .filter_map(|t| self.list(&self.by_type, t))
                        .collect();
                    match non_empty_union(lists) {
                        Some(plan) => parts.push(plan),
                        None => continue,
                    }
                }
                let tags: Option<Vec<Plan<'a>>> = item
                    .tags
                    .iter()
                    .map(|tag| self.list(&self.by_tag, tag))
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
        Some(Resolved {
            plan,
            prefix,
            since: filter.since,
            until: filter.until,
        })
    }

    /// The next matching position from `from` in `direction`, within `1..=head`, examining at most
    /// `budget` candidates. Returns the match (if any) and the candidates examined.
    pub(crate) fn next_match(
        &self,
        resolved: &Resolved<'_>,
        from: u64,
        direction: Direction,
        head: u64,
        budget: usize,
    ) -> (Option<u64>, usize) {
        let mut cursor = from;
        let mut examined = 0;
        while examined < budget && (1..=head).contains(&cursor) {
            let Some(candidate) = resolved
                .plan
                .seek(cursor, direction)
                .filter(|p| (1..=head).contains(p))
            else {
                return (None, examined);
            };
            examined += 1;
            if self.keeps(resolved, candidate) {
                return (Some(candidate), examined);
            }
            cursor = match direction {
                Direction::Forward => candidate + 1,
                Direction::Backward => candidate - 1,
            };
        }
        (None, examined)
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

    /// The first position whose timestamp is at or after `ts`, or `last() + 1`. Timestamps
    /// increase with position, so this is a binary search.
    pub(crate) fn first_at_or_after(&self, ts: Timestamp) -> u64 {
        self.metas.partition_point(|meta| meta.timestamp < ts) as u64 + 1
    }

    fn keeps(&self, resolved: &Resolved<'_>, position: u64) -> bool {
        let meta = &self.metas[(position - 1) as usize];
        let after_since = resolved.since.is_none_or(|since| meta.timestamp >= since);
        let before_until = resolved.until.is_none_or(|until| meta.timestamp < until);
        let prefix_ok = resolved.prefix.is_none_or(|prefix| {
            let name = self.entities[meta.entity as usize].name;
            self.symbols.name(name).starts_with(prefix)
        });
        after_since && before_until && prefix_ok
    }

    fn list<'a>(&'a self, lists: &'a HashMap<u32, Vec<u64>>, name: &str) -> Option<Plan<'a>> {
        let sym = self.symbols.get(name)?;
        lists.get(&sym).map(|list| Plan::List(list))
    }

    /// Approximate heap bytes held by the index, for the memory report.
    pub(crate) fn heap_bytes(&self) -> usize {
        let lists = |map: &HashMap<u32, Vec<u64>>| -> usize {
            map.values()
                .map(|list| list.capacity() * 8 + 48)
                .sum::<usize>()
                + map.capacity() * 40
        };
        let names: usize = self
            .symbols
            .names
            .iter()
            .map(|name| 2 * (name.capacity() + 24) + 16)
            .sum();
        let entities: usize = self
            .entities
            .iter()
            .map(|state| state.positions.capacity() * 8 + std::mem::size_of::<EntityState>() + 16)
            .sum();
        self.metas.capacity() * std::mem::size_of::<Meta>()
            + self.ids.capacity() * (std::mem::size_of::<(EventId, u64)>() + 1)
            + lists(&self.by_scope)
            + lists(&self.by_type)
            + lists(&self.by_tag)
            + names
            + entities
            + self
                .entity_names
                .keys()
                .map(|name| name.capacity() + 24 + 32)
                .sum::<usize>()
    }
}

fn non_empty_union(mut plans: Vec<Plan<'_>>) -> Option<Plan<'_>> {
    match plans.len() {
        0 => None,
        1 => plans.pop(),
        _ => Some(Plan::Union(plans)),
    }
}
