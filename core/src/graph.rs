//! Causal graph queries: the ancestors and descendants of an event, and every event of a
//! correlation, as nodes and edges.
//!
//! Edges come from each event's causation list (parent → child). The index keeps children per
//! parent and events per correlation id, so descendants and correlations are index walks;
//! ancestors follow the causation lists stored in the events themselves. Every query is bounded
//! by a node limit (at most [`GRAPH_NODES_MAX`]) and a depth (at most [`GRAPH_DEPTH_MAX`]), and
//! says when it stopped early with `truncated`. Nodes come back in position order, which is a
//! causal order: a parent always has a lower position than its children.

use std::collections::{BTreeMap, HashSet, VecDeque};

use crate::error::{Error, Result};
use crate::event::{Event, EventId};
use crate::limits::{GRAPH_DEPTH_MAX, GRAPH_NODES_MAX};
use crate::store::Store;

/// A part of the causal graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Graph {
    /// The events, in position order.
    pub nodes: Vec<Event>,
    /// Causation edges between nodes, parent first, ordered by child position then parent order.
    pub edges: Vec<Edge>,
    /// True when the limit or the depth cut the walk short.
    pub truncated: bool,
}

/// One causation link.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    /// The cause.
    pub parent: EventId,
    /// The effect.
    pub child: EventId,
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Walk {
    Up,
    Down,
}

impl Store {
    /// The event and its causes, to `depth` links up, at most `limit` nodes.
    pub fn ancestors(&self, id: EventId, depth: u32, limit: usize) -> Result<Graph> {
        self.walk(id, depth, limit, Walk::Up)
    }

    /// The event and its effects, to `depth` links down, at most `limit` nodes.
    pub fn descendants(&self, id: EventId, depth: u32, limit: usize) -> Result<Graph> {
        self.walk(id, depth, limit, Walk::Down)
    }

    /// Every event of a correlation (the event whose id it is, and each event that carries it),
    /// at most `limit`, in position order. The event whose id it is belongs to it even when that
    /// event itself carries another correlation id.
    pub fn correlation(&self, correlation_id: EventId, limit: usize) -> Result<Graph> {
        check_graph_limit(limit)?;
        let positions = self.correlation_positions(&correlation_id);
        let truncated = positions.len() > limit;
        let nodes = positions
            .into_iter()
            .take(limit)
            .map(|position| self.event_at(position))
            .collect::<Result<Vec<_>>>()?;
        Ok(Graph {
            edges: edges_among(&nodes),
            nodes,
            truncated,
        })
    }

    fn walk(&self, id: EventId, depth: u32, limit: usize, direction: Walk) -> Result<Graph> {
        check_graph_limit(limit)?;
        if depth > GRAPH_DEPTH_MAX {
            return Err(Error::LimitExceeded {
                limit: "GRAPH_DEPTH_MAX",
                max: u64::from(GRAPH_DEPTH_MAX),
                actual: u64::from(depth),
                what: "graph depth".to_string(),
            });
        }
        let start = self.get(id)?;
        let mut found: BTreeMap<u64, Event> = BTreeMap::new();
        let mut seen: HashSet<EventId> = HashSet::from([start.id]);
        let mut frontier = VecDeque::from([(start, 0u32)]);
        let mut truncated = false;
        while let Some((event, level)) = frontier.pop_front() {
            if found.len() == limit {
                truncated = true;
                break;
            }
            let next: Vec<u64> = if level == depth {
                // Stopping at the depth only truncates if there was more to see: a neighbour
                // not yet seen (in breadth-first order, everything nearer is already seen).
                let more = match direction {
                    Walk::Up => event
                        .causation
                        .iter()
                        .any(|parent| !seen.contains(parent) && self.position(parent).is_some()),
                    Walk::Down => self.children_positions(&event.id).into_iter().any(|child| {
                        self.event_at(child)
                            .map(|child| !seen.contains(&child.id))
                            .unwrap_or(true)
                    }),
                };
                truncated |= more;
                Vec::new()
            } else {
                match direction {
                    Walk::Up => event
                        .causation
                        .iter()
                        .filter_map(|parent| self.position(parent))
                        .collect(),
                    Walk::Down => self.children_positions(&event.id),
                }
            };
            for position in next {
                let neighbour = self.event_at(position)?;
                if seen.insert(neighbour.id) {
                    frontier.push_back((neighbour, level + 1));
                }
            }
            found.insert(event.position.0, event);
        }
        let nodes: Vec<Event> = found.into_values().collect();
        Ok(Graph {
            edges: edges_among(&nodes),
            nodes,
            truncated,
        })
    }
}

/// The causation edges whose both ends are among `nodes`.
fn edges_among(nodes: &[Event]) -> Vec<Edge> {
    let ids: HashSet<EventId> = nodes.iter().map(|node| node.id).collect();
    nodes
        .iter()
        .flat_map(|child| {
            child
                .causation
                .iter()
                .filter(|parent| ids.contains(parent))
                .map(|&parent| Edge {
                    parent,
                    child: child.id,
                })
        })
        .collect()
}

fn check_graph_limit(limit: usize) -> Result<()> {
    crate::store::check_page_limit(limit, GRAPH_NODES_MAX, "GRAPH_NODES_MAX", "graph limit")
}
