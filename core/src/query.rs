//! Log filters and the posting-list plans that answer them without scanning the log.
//!
//! A [`Filter`] is what a caller asks for: scopes, an entity prefix, a DCB query (a list of
//! [`QueryItem`]s, OR-ed; within an item the types are OR-ed and every tag is required) and a
//! timestamp range. The index turns it into a `Plan` over sorted position lists (one per
//! scope, type, tag and entity). A plan answers one question, "the first matching position at or
//! after `p`" (or at or before, backwards), by binary search and leapfrog intersection, so a
//! sparse filter costs the matches it finds, not the length of the log.

use crate::clock::Timestamp;
use crate::error::{Error, FieldError, Result};
use crate::event::{Direction, Event, check_name, check_text};
use crate::index::Chunked;
use crate::limits::{
    ENTITY_BYTES_MAX, FILTER_TERMS_MAX, SCOPE_BYTES_MAX, TAG_BYTES_MAX, TYPE_BYTES_MAX,
};

/// Which events a log read or a subscription returns. An empty filter matches every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only events in one of these scopes; all scopes when empty.
    pub scopes: Vec<String>,
    /// Only events whose entity starts with this; any entity when empty.
    pub entity_prefix: String,
    /// A DCB query: an event matches when it matches any item; no restriction when empty.
    pub items: Vec<QueryItem>,
    /// Only events with a timestamp at or after this.
    pub since: Option<Timestamp>,
    /// Only events with a timestamp before this.
    pub until: Option<Timestamp>,
}

/// One item of a DCB query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryItem {
    /// The event must have one of these types; any type when empty.
    pub types: Vec<String>,
    /// The event must carry every one of these tags.
    pub tags: Vec<String>,
}

impl Filter {
    /// True when the filter restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
            && self.entity_prefix.is_empty()
            && self.items.iter().all(QueryItem::is_empty)
            && self.since.is_none()
            && self.until.is_none()
    }

    /// Checks the filter against [`FILTER_TERMS_MAX`].
    pub fn validate(&self) -> Result<()> {
        self.check_counts().map_err(Error::from)
    }

    /// [`Filter::validate`], saying which list is too long (`scopes`, `items[2].tags`).
    pub fn check_counts(&self) -> Result<(), FieldError> {
        let mut counts = vec![
            (
                "filter scopes".to_string(),
                "scopes".to_string(),
                self.scopes.len(),
            ),
            (
                "filter items".to_string(),
                "items".to_string(),
                self.items.len(),
            ),
        ];
        for (item_idx, item) in self.items.iter().enumerate() {
            counts.push((
                "query item types".to_string(),
                format!("items[{item_idx}].types"),
                item.types.len(),
            ));
            counts.push((
                "query item tags".to_string(),
                format!("items[{item_idx}].tags"),
                item.tags.len(),
            ));
        }
        for (what, field, count) in counts {
            if count > FILTER_TERMS_MAX {
                return Err(FieldError::new(
                    field,
                    Error::LimitExceeded {
                        limit: "FILTER_TERMS_MAX",
                        max: FILTER_TERMS_MAX as u64,
                        actual: count as u64,
                        what,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Checks the counts and every name: each scope, type and tag as a write checks the field
    /// of its kind (non-empty, within its bound, no control characters), and the entity prefix
    /// within `ENTITY_BYTES_MAX`. A name no write could store is refused rather than looked up.
    /// Reads check this; an append's condition is checked for counts alone by the store (see
    /// `check_append`), and for names where requests come in.
    pub fn check(&self) -> Result<(), FieldError> {
        self.check_counts()?;
        for (scope_idx, scope) in self.scopes.iter().enumerate() {
            check_name(
                format_args!("filter scope {scope_idx}"),
                scope,
                SCOPE_BYTES_MAX,
                "SCOPE_BYTES_MAX",
            )
            .map_err(|err| FieldError::new(format!("scopes[{scope_idx}]"), err))?;
        }
        check_text(
            "filter entity_prefix",
            &self.entity_prefix,
            ENTITY_BYTES_MAX,
            "ENTITY_BYTES_MAX",
        )
        .map_err(|err| FieldError::new("entity_prefix", err))?;
        for (item_idx, item) in self.items.iter().enumerate() {
            let lists = [
                ("types", &item.types, TYPE_BYTES_MAX, "TYPE_BYTES_MAX"),
                ("tags", &item.tags, TAG_BYTES_MAX, "TAG_BYTES_MAX"),
            ];
            for (field, names, max, limit) in lists {
                for (name_idx, name) in names.iter().enumerate() {
                    check_name(
                        format_args!("query item {item_idx} {field} {name_idx}"),
                        name,
                        max,
                        limit,
                    )
                    .map_err(|err| {
                        FieldError::new(format!("items[{item_idx}].{field}[{name_idx}]"), err)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Whether one event matches, by its fields alone. The index answers the same question
    /// faster; this is the definition it must agree with.
    pub fn matches(&self, event: &Event) -> bool {
        let in_scope = self.scopes.is_empty() || self.scopes.contains(&event.scope);
        let in_items = self.items.iter().all(QueryItem::is_empty)
            || self.items.iter().any(|item| item.matches(event));
        let after_since = self.since.is_none_or(|since| event.timestamp >= since);
        let before_until = self.until.is_none_or(|until| event.timestamp < until);
        in_scope
            && event.entity.starts_with(&self.entity_prefix)
            && in_items
            && after_since
            && before_until
    }
}

impl QueryItem {
    /// True when the item restricts nothing.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.tags.is_empty()
    }

    /// Whether one event matches this item.
    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.event_type))
            && self.tags.iter().all(|tag| event.tags.contains(tag))
    }
}

/// A set of positions, described by sorted position lists.
#[derive(Clone, Debug)]
pub(crate) enum Plan<'a> {
    /// Every position.
    All,
    /// The positions in one sorted list.
    List(&'a Chunked<u64>),
    /// Positions in any child.
    Union(Vec<Plan<'a>>),
    /// Positions in every child.
    And(Vec<Plan<'a>>),
}

impl Plan<'_> {
    /// The first position of the set at or after `from` (forward), or at or before it (backward).
    pub(crate) fn seek(&self, from: u64, direction: Direction) -> Option<u64> {
        match self {
            Plan::All => Some(from),
            Plan::List(list) => match direction {
                Direction::Forward => list.get(list.partition_point(|&p| p < from)).copied(),
                Direction::Backward => list
                    .partition_point(|&p| p <= from)
                    .checked_sub(1)
                    .map(|idx| list[idx]),
            },
            Plan::Union(children) => {
                let found = children
                    .iter()
                    .filter_map(|child| child.seek(from, direction));
                match direction {
                    Direction::Forward => found.min(),
                    Direction::Backward => found.max(),
                }
            }
            Plan::And(children) => {
                // Leapfrog: each child moves the candidate past its own gaps until all agree.
                let mut candidate = from;
                loop {
                    let mut agreed = true;
                    for child in children {
                        let found = child.seek(candidate, direction)?;
                        if found != candidate {
                            candidate = found;
                            agreed = false;
                        }
                    }
                    if agreed {
                        return Some(candidate);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn walk(plan: &Plan<'_>, head: u64, direction: Direction) -> Vec<u64> {
        let mut found = Vec::new();
        let mut cursor = if direction == Direction::Forward {
            1
        } else {
            head
        };
        while let Some(p) = plan
            .seek(cursor, direction)
            .filter(|&p| (1..=head).contains(&p))
        {
            found.push(p);
            cursor = match direction {
                Direction::Forward => p + 1,
                Direction::Backward => p - 1,
            };
        }
        found
    }

    proptest! {
        /// Union and intersection plans agree with set operations, in both directions.
        #[test]
        fn plans_agree_with_set_algebra(a in prop::collection::btree_set(1u64..200, 0..60),
                                        b in prop::collection::btree_set(1u64..200, 0..60),
                                        c in prop::collection::btree_set(1u64..200, 0..60)) {
            let (a, b, c): (Vec<u64>, Vec<u64>, Vec<u64>) = (a.into_iter().collect(), b.into_iter().collect(), c.into_iter().collect());
            let lists: Vec<Chunked<u64>> = [&a, &b, &c].into_iter().map(|list| list.iter().copied().collect()).collect();
            let plan = Plan::Union(vec![Plan::And(vec![Plan::List(&lists[0]), Plan::List(&lists[1])]), Plan::List(&lists[2])]);
            let expected: Vec<u64> = (1..200).filter(|p| (a.contains(p) && b.contains(p)) || c.contains(p)).collect();
            prop_assert_eq!(walk(&plan, 199, Direction::Forward), expected.clone());
            let mut backward = expected;
            backward.reverse();
            prop_assert_eq!(walk(&plan, 199, Direction::Backward), backward);
        }
    }
}
