//! Drawing a causal graph (`pb::Graph`: nodes and parent → child edges) as an indented text
//! tree or as Graphviz DOT.
//!
//! A causal graph is a DAG, not a tree: an event with two parents appears under both. The tree
//! prints such an event's subtree once and marks later appearances `(shown above)`, so output
//! stays linear in the graph's size. Nodes come in position order, which is a causal order, and
//! siblings are printed in that order too, so the output is deterministic.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use causeway_client::pb;

/// Which way the tree walks the edges.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Walk {
    /// From causes to effects: a node's children are the events it caused (descendants,
    /// correlations).
    Down,
    /// From effects to causes: a node's children are its causation parents (ancestors).
    Up,
}

/// One line describing an event: type, scope/entity, version, position and id.
pub fn label(event: &pb::Event) -> String {
    format!(
        "{} {}/{} v{} #{} {}",
        event.r#type, event.scope, event.entity, event.version, event.position, event.id
    )
}

/// The graph as an indented tree. With `root`, the tree starts at that event (the one an
/// ancestors or descendants query started from); otherwise at every node without an incoming
/// link in the walk's direction. Nodes no root reaches are drawn as roots of their own.
pub fn tree(graph: &pb::Graph, walk: Walk, root: Option<&str>) -> String {
    let by_id: HashMap<&str, &pb::Event> = graph
        .nodes
        .iter()
        .map(|event| (event.id.as_str(), event))
        .collect();
    let mut next: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut has_incoming: HashSet<&str> = HashSet::new();
    for edge in &graph.edges {
        let (from, to) = match walk {
            Walk::Down => (edge.parent.as_str(), edge.child.as_str()),
            Walk::Up => (edge.child.as_str(), edge.parent.as_str()),
        };
        if by_id.contains_key(from) && by_id.contains_key(to) {
            next.entry(from).or_default().push(to);
            has_incoming.insert(to);
        }
    }
    let position = |id: &str| by_id.get(id).map_or(u64::MAX, |event| event.position);
    for targets in next.values_mut() {
        targets.sort_by_key(|id| position(id));
        targets.dedup();
    }

    let mut roots: Vec<&str> = match root.filter(|id| by_id.contains_key(id)) {
        Some(id) => vec![id],
        None => graph
            .nodes
            .iter()
            .map(|event| event.id.as_str())
            .filter(|id| !has_incoming.contains(id))
            .collect(),
    };
    let mut out = String::new();
    let mut shown: HashSet<&str> = HashSet::new();
    let mut root_idx = 0;
    loop {
        while root_idx < roots.len() {
            let id = roots[root_idx];
            root_idx += 1;
            if shown.contains(id) {
                continue;
            }
            draw(&mut out, id, "", None, &by_id, &next, &mut shown);
        }
        // Anything still undrawn (a cut-off part of the walk) becomes a root of its own.
        match graph
            .nodes
            .iter()
            .find(|event| !shown.contains(event.id.as_str()))
        {
            Some(event) => roots.push(event.id.as_str()),
            None => break,
        }
    }
    if graph.truncated {
        out.push_str("(truncated: the depth or node limit cut the walk short)\n");
    }
    out
}

/// Draws `id` and, the first time it is seen, its subtree. `last` is `None` for a root, else
/// whether this node is the last of its siblings.
fn draw<'a>(
    out: &mut String,
    id: &'a str,
    indent: &str,
    last: Option<bool>,
    by_id: &HashMap<&'a str, &'a pb::Event>,
    next: &HashMap<&'a str, Vec<&'a str>>,
    shown: &mut HashSet<&'a str>,
) {
    let branch = match last {
        None => "",
        Some(false) => "├─ ",
        Some(true) => "└─ ",
    };
    let text = by_id
        .get(id)
        .map_or_else(|| id.to_string(), |event| label(event));
    if !shown.insert(id) {
        let _ = writeln!(out, "{indent}{branch}{text} (shown above)");
        return;
    }
    let _ = writeln!(out, "{indent}{branch}{text}");
    let child_indent = match last {
        None => indent.to_string(),
        Some(false) => format!("{indent}│  "),
        Some(true) => format!("{indent}   "),
    };
    let children = next.get(id).map_or(&[][..], Vec::as_slice);
    for (child_idx, child) in children.iter().enumerate() {
        let is_last = child_idx + 1 == children.len();
        draw(out, child, &child_indent, Some(is_last), by_id, next, shown);
    }
}

/// The graph as a Graphviz `digraph`: one box per event, one arrow per causation link from
/// cause to effect. `root` (the queried event) is drawn bold.
pub fn dot(graph: &pb::Graph, root: Option<&str>) -> String {
    let mut out = String::from("digraph causeway {\n");
    out.push_str("  rankdir=TB;\n");
    out.push_str("  node [shape=box, fontname=\"monospace\"];\n");
    for event in &graph.nodes {
        let label = format!(
            "{}\\n{}/{} v{}\\n#{} {}",
            escape(&event.r#type),
            escape(&event.scope),
            escape(&event.entity),
            event.version,
            event.position,
            escape(&event.id)
        );
        let style = if root == Some(event.id.as_str()) {
            ", style=bold"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{label}\"{style}];",
            escape(&event.id)
        );
    }
    for edge in &graph.edges {
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\";",
            escape(&edge.parent),
            escape(&edge.child)
        );
    }
    if graph.truncated {
        out.push_str("  // truncated: the depth or node limit cut the walk short\n");
    }
    out.push_str("}\n");
    out
}

/// Escapes a string for a DOT double-quoted string.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, position: u64, event_type: &str) -> pb::Event {
        pb::Event {
            id: id.to_string(),
            position,
            version: position,
            scope: "acme".to_string(),
            entity: "order-1".to_string(),
            r#type: event_type.to_string(),
            ..pb::Event::default()
        }
    }

    fn edge(parent: &str, child: &str) -> pb::Edge {
        pb::Edge {
            parent: parent.to_string(),
            child: child.to_string(),
        }
    }

    /// a causes b and c; b and c both cause d (a diamond).
    fn diamond() -> pb::Graph {
        pb::Graph {
            nodes: vec![
                event("a", 1, "Placed"),
                event("b", 2, "Paid"),
                event("c", 3, "Packed"),
                event("d", 4, "Shipped"),
            ],
            edges: vec![
                edge("a", "b"),
                edge("a", "c"),
                edge("b", "d"),
                edge("c", "d"),
            ],
            truncated: false,
        }
    }

    #[test]
    fn tree_down_draws_children_once_and_marks_repeats() {
        let text = tree(&diamond(), Walk::Down, None);
        assert_eq!(
            text,
            "Placed acme/order-1 v1 #1 a\n\
             ├─ Paid acme/order-1 v2 #2 b\n\
             │  └─ Shipped acme/order-1 v4 #4 d\n\
             └─ Packed acme/order-1 v3 #3 c\n\
             \u{20}  └─ Shipped acme/order-1 v4 #4 d (shown above)\n"
        );
    }

    #[test]
    fn tree_up_starts_at_the_root_and_walks_to_causes() {
        let mut graph = diamond();
        graph.truncated = true;
        let text = tree(&graph, Walk::Up, Some("d"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Shipped acme/order-1 v4 #4 d");
        assert_eq!(lines[1], "├─ Paid acme/order-1 v2 #2 b");
        assert_eq!(lines[2], "│  └─ Placed acme/order-1 v1 #1 a");
        assert_eq!(lines[3], "└─ Packed acme/order-1 v3 #3 c");
        assert_eq!(lines[4], "   └─ Placed acme/order-1 v1 #1 a (shown above)");
        assert!(lines[5].starts_with("(truncated"), "{text}");
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn tree_draws_unlinked_events_as_their_own_roots() {
        let graph = pb::Graph {
            nodes: vec![event("a", 1, "Placed"), event("z", 9, "Noted")],
            edges: vec![],
            truncated: false,
        };
        assert_eq!(
            tree(&graph, Walk::Down, Some("a")),
            "Placed acme/order-1 v1 #1 a\nNoted acme/order-1 v9 #9 z\n"
        );
    }

    #[test]
    fn dot_has_a_node_per_event_and_an_arrow_per_link() {
        let mut graph = diamond();
        graph.nodes[0].r#type = "Say \"hi\"".to_string();
        let text = dot(&graph, Some("a"));
        assert!(text.starts_with("digraph causeway {\n"), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
        assert!(
            text.contains(r#"  "a" [label="Say \"hi\"\nacme/order-1 v1\n#1 a", style=bold];"#),
            "{text}"
        );
        assert!(text.contains(r#"  "d" [label="Shipped\nacme/order-1 v4\n#4 d"];"#));
        for (parent, child) in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")] {
            assert!(
                text.contains(&format!("  \"{parent}\" -> \"{child}\";\n")),
                "{text}"
            );
        }
        assert_eq!(text.matches(" -> ").count(), 4);
        assert_eq!(text.matches("[label=").count(), 4);
    }
}
