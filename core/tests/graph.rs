//! The causal graph queries (`ancestors`, `descendants`, `correlation`) against an in-memory model
//! of random DAGs, plus examples for their bounds and for causation parents from outside the store.
//!
//! Invariants checked:
//! - Correlation ids are assigned the documented way: the explicit one, else the first parent's,
//!   else the event's own id (also when the first parent is external, and so has none).
//! - A walk returns exactly the events within `depth` links of the start (the start included), in
//!   position order, when they fit in `limit`; `truncated` is then true iff more events lie beyond
//!   `depth`. When they do not fit, it returns `limit` of them, closed under BFS distance (a BFS
//!   prefix), with `truncated` set.
//! - Edges are exactly the causation links among the returned nodes, parent first, ordered by
//!   child position then by the child's parent order.
//! - A correlation is the event whose id it is plus every event carrying it, the first `limit` in
//!   position order, `truncated` iff there were more.
//! - The answers are the same after a reopen (the children and correlation indexes are rebuilt).
//! - Bounds: limit 0 is `InvalidInput`, a limit over `GRAPH_NODES_MAX` or a depth over
//!   `GRAPH_DEPTH_MAX` is `LimitExceeded` naming the constant, an unknown start is `NotFound`.
//! - A missing causation parent is refused unless `external_causation` is set; an external
//!   parent is simply absent from `ancestors`.
//!
//! `CAUSEWAY_GRAPH_CASES` overrides the number of cases (64).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use causeway_core::limits::{GRAPH_DEPTH_MAX, GRAPH_NODES_MAX};
use causeway_core::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

fn cases() -> u32 {
    std::env::var("CAUSEWAY_GRAPH_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

fn config() -> Config {
    Config {
        durability: Durability::Relaxed,
        ..Config::default()
    }
}

fn event(entity: &str) -> NewEvent {
    NewEvent::new("graph", entity, "Happened", b"x".to_vec())
}

/// Ids the test makes up, kept apart from store-assigned UUIDv7 ids (whose top bits are a
/// timestamp) and from each other by their top byte.
fn made_up_id(kind: u8, counter: u64) -> EventId {
    EventId(uuid::Uuid::from_u128(
        (u128::from(kind) << 120) | u128::from(counter),
    ))
}

const CLIENT_ID: u8 = 0xC1;
const EXTERNAL_ID: u8 = 0xE1;
const FRESH_CORRELATION: u8 = 0xF1;
const UNKNOWN_ID: u8 = 0xAA;

/// How a generated event picks its explicit correlation id.
#[derive(Clone, Debug)]
enum CorrelationPlan {
    /// None: the store derives it.
    Derived,
    /// The id of an event from an earlier append.
    EarlierEvent(Index),
    /// An id that is no event's.
    Fresh,
}

/// A parent choice: among all earlier events, or among the few most recent (for deep chains).
#[derive(Clone, Debug)]
struct ParentPlan {
    recent: bool,
    pick: Index,
}

#[derive(Clone, Debug)]
struct EventPlan {
    parents: Vec<ParentPlan>,
    /// Where to insert a causation parent from outside the store, if any.
    external: Option<Index>,
    correlation: CorrelationPlan,
    /// Assign the id in the client even when no later event of the append needs it.
    client_id: bool,
}

fn event_plan() -> impl Strategy<Value = EventPlan> {
    let parent =
        (any::<bool>(), any::<Index>()).prop_map(|(recent, pick)| ParentPlan { recent, pick });
    let correlation = prop_oneof![
        5 => Just(CorrelationPlan::Derived),
        1 => any::<Index>().prop_map(CorrelationPlan::EarlierEvent),
        1 => Just(CorrelationPlan::Fresh),
    ];
    (
        prop::collection::vec(parent, 0..=3),
        prop::option::weighted(0.1, any::<Index>()),
        correlation,
        any::<bool>(),
    )
        .prop_map(|(parents, external, correlation, client_id)| EventPlan {
            parents,
            external,
            correlation,
            client_id,
        })
}

#[derive(Copy, Clone, Debug)]
enum QueryKind {
    Ancestors,
    Descendants,
    Correlation,
}

#[derive(Clone, Debug)]
struct Query {
    kind: QueryKind,
    target: Index,
    depth: u32,
    limit: usize,
}

fn query() -> impl Strategy<Value = Query> {
    let kind = prop_oneof![
        Just(QueryKind::Ancestors),
        Just(QueryKind::Descendants),
        Just(QueryKind::Correlation),
    ];
    (kind, any::<Index>(), 0u32..=5, 1usize..=30).prop_map(|(kind, target, depth, limit)| Query {
        kind,
        target,
        depth,
        limit,
    })
}

/// Where an event's correlation id comes from, resolved once every id of its append is known.
#[derive(Copy, Clone, Debug)]
enum CorrelationSource {
    Explicit(EventId),
    Parent(usize),
    Own,
}

/// One committed event as the model sees it.
#[derive(Clone, Debug)]
struct Node {
    id: EventId,
    position: Position,
    /// Every causation parent, external ones included, in the order given.
    causation: Vec<EventId>,
    correlation_id: EventId,
}

#[derive(Default)]
struct Model {
    nodes: Vec<Node>,
    by_id: HashMap<EventId, usize>,
    children: Vec<Vec<usize>>,
}

impl Model {
    fn push(&mut self, node: Node) {
        let node_idx = self.nodes.len();
        for parent in &node.causation {
            if let Some(&parent_idx) = self.by_id.get(parent) {
                self.children[parent_idx].push(node_idx);
            }
        }
        self.by_id.insert(node.id, node_idx);
        self.nodes.push(node);
        self.children.push(Vec::new());
    }

    fn neighbours(&self, node_idx: usize, up: bool) -> Vec<usize> {
        if up {
            self.nodes[node_idx]
                .causation
                .iter()
                .filter_map(|parent| self.by_id.get(parent).copied())
                .collect()
        } else {
            self.children[node_idx].clone()
        }
    }

    /// BFS distance from `start` to every node reachable from it, with no depth bound.
    fn distances(&self, start: usize, up: bool) -> HashMap<usize, u32> {
        let mut distance = HashMap::from([(start, 0u32)]);
        let mut frontier = VecDeque::from([start]);
        while let Some(node_idx) = frontier.pop_front() {
            let next_distance = distance[&node_idx] + 1;
            for neighbour in self.neighbours(node_idx, up) {
                distance.entry(neighbour).or_insert_with(|| {
                    frontier.push_back(neighbour);
                    next_distance
                });
            }
        }
        distance
    }

    /// The causation edges among `ids`, ordered by child position then the child's parent order.
    fn edges_among(&self, ids: &[EventId]) -> Vec<Edge> {
        let members: HashSet<EventId> = ids.iter().copied().collect();
        let mut children: Vec<&Node> = ids.iter().map(|id| &self.nodes[self.by_id[id]]).collect();
        children.sort_by_key(|node| node.position);
        children
            .iter()
            .flat_map(|child| {
                child
                    .causation
                    .iter()
                    .filter(|parent| members.contains(parent))
                    .map(|&parent| Edge {
                        parent,
                        child: child.id,
                    })
            })
            .collect()
    }

    /// Every event of a correlation: the event whose id it is, and each event that carries it.
    fn correlation(&self, correlation_id: EventId) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&node_idx| {
                let node = &self.nodes[node_idx];
                node.id == correlation_id || node.correlation_id == correlation_id
            })
            .collect()
    }
}

/// Builds the random DAG in `store` and in the model, checking each receipt on the way.
fn build(store: &Store, appends: &[Vec<EventPlan>]) -> Result<Model, TestCaseError> {
    let mut model = Model::default();
    let mut counter = 0u64;
    let mut next_id = |kind: u8| {
        counter += 1;
        made_up_id(kind, counter)
    };
    for plans in appends {
        let base = model.nodes.len();
        // Parent choices as global indexes; parents in this append need client-assigned ids.
        let parent_idxs: Vec<Vec<usize>> = plans
            .iter()
            .enumerate()
            .map(|(event_idx, plan)| {
                let n_earlier = base + event_idx;
                let mut chosen: Vec<usize> = Vec::new();
                if n_earlier == 0 {
                    return chosen;
                }
                for parent in &plan.parents {
                    let parent_idx = if parent.recent {
                        let window = n_earlier.min(4);
                        n_earlier - 1 - parent.pick.index(window)
                    } else {
                        parent.pick.index(n_earlier)
                    };
                    if !chosen.contains(&parent_idx) {
                        chosen.push(parent_idx);
                    }
                }
                chosen
            })
            .collect();
        let needs_client_id: HashSet<usize> = parent_idxs
            .iter()
            .flatten()
            .copied()
            .filter(|&idx| idx >= base)
            .collect();
        let client_ids: Vec<Option<EventId>> = plans
            .iter()
            .enumerate()
            .map(|(event_idx, plan)| {
                (plan.client_id || needs_client_id.contains(&(base + event_idx)))
                    .then(|| next_id(CLIENT_ID))
            })
            .collect();
        let mut new_events = Vec::new();
        let mut sources = Vec::new();
        let mut external_causation = false;
        for (event_idx, plan) in plans.iter().enumerate() {
            let id_of = |idx: usize| {
                if idx < base {
                    model.nodes[idx].id
                } else {
                    client_ids[idx - base].expect("parents in the same append have client ids")
                }
            };
            let mut causation: Vec<EventId> = parent_idxs[event_idx]
                .iter()
                .map(|&idx| id_of(idx))
                .collect();
            if let Some(at) = &plan.external {
                let at = at.index(causation.len() + 1);
                causation.insert(at, next_id(EXTERNAL_ID));
                external_causation = true;
            }
            let explicit = match &plan.correlation {
                CorrelationPlan::Derived => None,
                CorrelationPlan::EarlierEvent(pick) if base > 0 => {
                    Some(model.nodes[pick.index(base)].id)
                }
                CorrelationPlan::EarlierEvent(_) | CorrelationPlan::Fresh => {
                    Some(next_id(FRESH_CORRELATION))
                }
            };
            let source = match (explicit, causation.first()) {
                (Some(correlation_id), _) => CorrelationSource::Explicit(correlation_id),
                (None, Some(first)) => match model.by_id.get(first) {
                    Some(&idx) => CorrelationSource::Parent(idx),
                    None => match (base..base + event_idx)
                        .find(|&idx| client_ids[idx - base] == Some(*first))
                    {
                        Some(idx) => CorrelationSource::Parent(idx),
                        // An external first parent has no correlation id to inherit.
                        None => CorrelationSource::Own,
                    },
                },
                (None, None) => CorrelationSource::Own,
            };
            sources.push(source);
            new_events.push(NewEvent {
                id: client_ids[event_idx],
                causation,
                correlation_id: explicit,
                ..event(&format!("e-{}", (base + event_idx) % 3))
            });
        }
        let append = Append {
            external_causation,
            ..Append::new(new_events.clone())
        };
        let receipt = store
            .append(append)
            .map_err(|err| TestCaseError::fail(format!("append failed: {err}")))?;
        prop_assert_eq!(receipt.events.len(), plans.len());
        for (event_idx, committed) in receipt.events.iter().enumerate() {
            let node_idx = base + event_idx;
            prop_assert_eq!(committed.position, Position(node_idx as u64 + 1));
            if let Some(id) = client_ids[event_idx] {
                prop_assert_eq!(committed.id, id, "a client-assigned id is kept");
            }
            let correlation_id = match sources[event_idx] {
                CorrelationSource::Explicit(correlation_id) => correlation_id,
                CorrelationSource::Parent(parent_idx) => model.nodes[parent_idx].correlation_id,
                CorrelationSource::Own => committed.id,
            };
            model.push(Node {
                id: committed.id,
                position: committed.position,
                causation: new_events[event_idx].causation.clone(),
                correlation_id,
            });
        }
    }
    for node in &model.nodes {
        let stored = store
            .get(node.id)
            .map_err(|err| TestCaseError::fail(format!("get {}: {err}", node.id)))?;
        prop_assert_eq!(stored.position, node.position);
        prop_assert_eq!(&stored.causation, &node.causation);
        prop_assert_eq!(
            stored.correlation_id,
            node.correlation_id,
            "correlation id of the event at {}",
            node.position
        );
    }
    Ok(model)
}

/// Checks what every graph answers for: nodes in strict position order and equal to what `get`
/// returns, and edges exactly the model's among those nodes.
fn check_nodes_and_edges(
    store: &Store,
    model: &Model,
    graph: &Graph,
) -> Result<Vec<EventId>, TestCaseError> {
    let positions: Vec<Position> = graph.nodes.iter().map(|node| node.position).collect();
    prop_assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "nodes not in position order: {:?}",
        positions
    );
    for node in &graph.nodes {
        let stored = store
            .get(node.id)
            .map_err(|err| TestCaseError::fail(format!("get {}: {err}", node.id)))?;
        prop_assert_eq!(node, &stored);
    }
    let ids: Vec<EventId> = graph.nodes.iter().map(|node| node.id).collect();
    prop_assert_eq!(&graph.edges, &model.edges_among(&ids));
    Ok(ids)
}

/// Checks one `ancestors` (`up`) or `descendants` query against the model's BFS distances.
fn check_walk(store: &Store, model: &Model, query: &Query, up: bool) -> Result<(), TestCaseError> {
    let start = query.target.index(model.nodes.len());
    let start_id = model.nodes[start].id;
    let graph = if up {
        store.ancestors(start_id, query.depth, query.limit)
    } else {
        store.descendants(start_id, query.depth, query.limit)
    }
    .map_err(|err| TestCaseError::fail(format!("{query:?}: {err}")))?;
    let ids = check_nodes_and_edges(store, model, &graph)?;

    let distance = model.distances(start, up);
    let within: BTreeSet<usize> = distance
        .iter()
        .filter(|&(_, &d)| d <= query.depth)
        .map(|(&idx, _)| idx)
        .collect();
    let beyond = distance.len() > within.len();
    let returned: BTreeSet<usize> = ids.iter().map(|id| model.by_id[id]).collect();
    prop_assert!(returned.contains(&start), "the start event is returned");
    if within.len() <= query.limit {
        prop_assert_eq!(
            &returned,
            &within,
            "every event within depth {} of {} is returned",
            query.depth,
            start
        );
        prop_assert_eq!(
            graph.truncated,
            beyond,
            "truncated must say whether events lie beyond depth {} ({} within, {} reachable)",
            query.depth,
            within.len(),
            distance.len()
        );
    } else {
        prop_assert_eq!(returned.len(), query.limit);
        prop_assert!(
            returned.is_subset(&within),
            "only events within depth are returned"
        );
        prop_assert!(graph.truncated, "a walk cut by its limit is truncated");
        // A BFS prefix: nothing nearer than a returned event is left out.
        let farthest = returned
            .iter()
            .map(|idx| distance[idx])
            .max()
            .expect("the start is returned");
        for (&idx, &d) in &distance {
            if d < farthest {
                prop_assert!(
                    returned.contains(&idx),
                    "event {} at distance {} left out while one at {} is returned",
                    idx,
                    d,
                    farthest
                );
            }
        }
    }
    Ok(())
}

/// The ids worth asking `correlation` about: every correlation id in use, every event id (most are
/// their own correlation's root, some are not), and one unknown id.
fn correlation_candidates(model: &Model) -> Vec<EventId> {
    let mut candidates: BTreeSet<EventId> = BTreeSet::new();
    for node in &model.nodes {
        candidates.insert(node.id);
        candidates.insert(node.correlation_id);
    }
    candidates.insert(made_up_id(UNKNOWN_ID, 1));
    candidates.into_iter().collect()
}

fn check_correlation(store: &Store, model: &Model, query: &Query) -> Result<(), TestCaseError> {
    let candidates = correlation_candidates(model);
    let correlation_id = candidates[query.target.index(candidates.len())];
    let graph = store
        .correlation(correlation_id, query.limit)
        .map_err(|err| TestCaseError::fail(format!("{query:?}: {err}")))?;
    let ids = check_nodes_and_edges(store, model, &graph)?;
    let expected: Vec<EventId> = model
        .correlation(correlation_id)
        .into_iter()
        .take(query.limit)
        .map(|idx| model.nodes[idx].id)
        .collect();
    prop_assert_eq!(&ids, &expected, "correlation {}", correlation_id);
    prop_assert_eq!(
        graph.truncated,
        model.correlation(correlation_id).len() > query.limit
    );
    Ok(())
}

fn check_queries(store: &Store, model: &Model, queries: &[Query]) -> Result<(), TestCaseError> {
    for query in queries {
        match query.kind {
            QueryKind::Ancestors => check_walk(store, model, query, true)?,
            QueryKind::Descendants => check_walk(store, model, query, false)?,
            QueryKind::Correlation => check_correlation(store, model, query)?,
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random DAGs built over several appends (parents from earlier appends and from earlier in
    /// the same append, some external, some explicit correlations) answer every graph query as the
    /// model does, before and after a reopen.
    #[test]
    fn graph_queries_match_the_model(
        appends in prop::collection::vec(prop::collection::vec(event_plan(), 1..=4), 1..=12),
        queries in prop::collection::vec(query(), 1..=24),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), config()).unwrap();
        let model = build(&store, &appends)?;
        check_queries(&store, &model, &queries)?;
        store.close().unwrap();
        drop(store);
        let store = Store::open(dir.path(), config()).unwrap();
        check_queries(&store, &model, &queries)?;
    }
}

fn ids(graph: &Graph) -> Vec<EventId> {
    graph.nodes.iter().map(|node| node.id).collect()
}

/// Appends one event with these parents and returns its id.
fn append_child(store: &Store, causation: Vec<EventId>) -> EventId {
    let receipt = store
        .append(Append::new(vec![NewEvent {
            causation,
            ..event("e")
        }]))
        .unwrap();
    receipt.events[0].id
}

/// Bad limits and depths are refused by name before anything is read; an unknown start event is
/// `NotFound`; the largest allowed limit and depth are accepted.
#[test]
fn bounds_are_enforced_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let root = append_child(&store, Vec::new());
    let child = append_child(&store, vec![root]);

    let over_nodes = GRAPH_NODES_MAX + 1;
    let over_depth = GRAPH_DEPTH_MAX + 1;
    type Walk = fn(&Store, EventId, u32, usize) -> Result<Graph>;
    // Each walk starts where it has one link to follow.
    let walks: [(&str, Walk, EventId); 2] = [
        ("ancestors", Store::ancestors, child),
        ("descendants", Store::descendants, root),
    ];
    for (name, walk, start) in walks {
        let walk = |id, depth, limit| walk(&store, id, depth, limit);
        let zero = walk(start, 1, 0);
        assert!(
            matches!(zero, Err(Error::InvalidInput(_))),
            "{name} limit 0: {zero:?}"
        );
        let nodes = walk(start, 1, over_nodes);
        assert!(
            matches!(nodes, Err(Error::LimitExceeded { limit: "GRAPH_NODES_MAX", max, actual, .. })
                if max == GRAPH_NODES_MAX as u64 && actual == over_nodes as u64),
            "{name} limit over the max: {nodes:?}"
        );
        let depth = walk(start, over_depth, 10);
        assert!(
            matches!(depth, Err(Error::LimitExceeded { limit: "GRAPH_DEPTH_MAX", max, actual, .. })
                if max == u64::from(GRAPH_DEPTH_MAX) && actual == u64::from(over_depth)),
            "{name} depth over the max: {depth:?}"
        );
        let unknown = walk(made_up_id(UNKNOWN_ID, 1), 1, 10);
        assert!(
            matches!(unknown, Err(Error::NotFound(_))),
            "{name} of an unknown event: {unknown:?}"
        );
        let widest = walk(start, GRAPH_DEPTH_MAX, GRAPH_NODES_MAX).unwrap();
        assert_eq!(
            widest.nodes.len(),
            2,
            "{name} at the largest bounds sees both events"
        );
        assert!(!widest.truncated);
    }

    let zero = store.correlation(root, 0);
    assert!(
        matches!(zero, Err(Error::InvalidInput(_))),
        "correlation limit 0: {zero:?}"
    );
    let nodes = store.correlation(root, over_nodes);
    assert!(
        matches!(
            nodes,
            Err(Error::LimitExceeded {
                limit: "GRAPH_NODES_MAX",
                ..
            })
        ),
        "correlation limit over the max: {nodes:?}"
    );
    assert_eq!(
        ids(&store.correlation(root, GRAPH_NODES_MAX).unwrap()),
        [root, child]
    );
    let unknown = store.correlation(made_up_id(UNKNOWN_ID, 1), 10).unwrap();
    assert!(
        unknown.nodes.is_empty() && unknown.edges.is_empty() && !unknown.truncated,
        "{unknown:?}"
    );
}

/// A parent that is not in the store is refused, and nothing is written, unless the append says
/// its causation may be external; then `ancestors` shows only the parents the store has, and an
/// external first parent leaves the event its own correlation.
#[test]
fn external_causation_parents_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let known = append_child(&store, Vec::new());
    let outside = made_up_id(EXTERNAL_ID, 1);

    let refused = store.append(Append::new(vec![NewEvent {
        causation: vec![outside, known],
        ..event("e")
    }]));
    assert!(
        matches!(&refused, Err(Error::Denied { gate, code, .. }) if gate == "causation" && code == "CAUSATION_MISSING"),
        "{refused:?}"
    );
    assert_eq!(store.head(), Position(1), "a refused append writes nothing");

    let receipt = store
        .append(Append {
            external_causation: true,
            ..Append::new(vec![NewEvent {
                causation: vec![outside, known],
                ..event("e")
            }])
        })
        .unwrap();
    let child = receipt.events[0].id;
    let stored = store.get(child).unwrap();
    assert_eq!(
        stored.causation,
        [outside, known],
        "the external parent is kept in the event"
    );
    assert_eq!(
        stored.correlation_id, child,
        "an external first parent has no correlation to inherit"
    );

    let up = store.ancestors(child, 5, 10).unwrap();
    assert_eq!(ids(&up), [known, child]);
    assert_eq!(
        up.edges,
        [Edge {
            parent: known,
            child
        }]
    );
    assert!(!up.truncated);
    let external_only = append_external_only(&store, outside);
    let up = store.ancestors(external_only, 0, 10).unwrap();
    assert_eq!(ids(&up), [external_only]);
    assert!(
        !up.truncated,
        "an external parent is not more to see beyond depth 0"
    );

    let missing = store.descendants(outside, 1, 10);
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
}

fn append_external_only(store: &Store, outside: EventId) -> EventId {
    let receipt = store
        .append(Append {
            external_causation: true,
            ..Append::new(vec![NewEvent {
                causation: vec![outside],
                ..event("e")
            }])
        })
        .unwrap();
    receipt.events[0].id
}

/// A chain `a -> b -> c` with a shortcut `a -> c`: walks from either end see the whole diamond
/// within one link, with every edge, and are not truncated since nothing lies beyond.
#[test]
fn a_shortcut_within_depth_is_not_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let a = append_child(&store, Vec::new());
    let b = append_child(&store, vec![a]);
    let c = append_child(&store, vec![b, a]);
    let all_edges = [
        Edge {
            parent: a,
            child: b,
        },
        Edge {
            parent: b,
            child: c,
        },
        Edge {
            parent: a,
            child: c,
        },
    ];

    let up = store.ancestors(c, 1, 10).unwrap();
    assert_eq!(ids(&up), [a, b, c]);
    assert_eq!(up.edges, all_edges);
    let down = store.descendants(a, 1, 10).unwrap();
    assert_eq!(ids(&down), [a, b, c]);
    assert_eq!(down.edges, all_edges);
    assert!(
        !up.truncated,
        "ancestors: every ancestor was returned, so nothing was cut short"
    );
    assert!(
        !down.truncated,
        "descendants: every descendant was returned, so nothing was cut short"
    );
}

/// Depth and limit cut a chain where documented: depth 0 is the event alone, truncated when it
/// has a neighbour; a limit smaller than the chain returns the nearest events.
#[test]
fn depth_and_limit_cut_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), config()).unwrap();
    let mut chain = vec![append_child(&store, Vec::new())];
    for _ in 0..4 {
        let last = *chain.last().unwrap();
        chain.push(append_child(&store, vec![last]));
    }
    let alone = store.descendants(chain[0], 0, 10).unwrap();
    assert_eq!(ids(&alone), [chain[0]]);
    assert!(alone.edges.is_empty());
    assert!(alone.truncated);
    let leaf = store.descendants(chain[4], 0, 10).unwrap();
    assert!(!leaf.truncated, "a leaf has nothing below it");

    let two = store.ancestors(chain[4], 2, 10).unwrap();
    assert_eq!(ids(&two), chain[2..]);
    assert!(two.truncated);
    let exact = store.ancestors(chain[4], 4, 10).unwrap();
    assert_eq!(ids(&exact), chain);
    assert!(!exact.truncated, "depth 4 reaches the root of a chain of 5");

    let limited = store.descendants(chain[0], 10, 3).unwrap();
    assert_eq!(ids(&limited), chain[..3]);
    assert_eq!(limited.edges.len(), 2);
    assert!(limited.truncated);
    let fits = store.descendants(chain[0], 10, 5).unwrap();
    assert_eq!(ids(&fits), chain);
    assert!(
        !fits.truncated,
        "a limit equal to the whole answer is not truncation"
    );
}
