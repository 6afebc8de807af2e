//! [`FilterBuilder`]: which events a log read, a subscription or a DCB condition matches.
//!
//! An empty filter matches every event. Scopes narrow to any of the listed scopes, the prefix to
//! entities starting with it, and the query items (DCB style) to events that match any one item,
//! where an item matches an event whose type is one of its types (any type when none) and that
//! carries all of its tags.

use crate::pb;

/// Builds a `pb::Filter`.
///
/// ```
/// use causeway_client::FilterBuilder;
///
/// // Orders of acme placed or paid by customer 42.
/// let filter = FilterBuilder::new()
///     .scope("acme")
///     .entity_prefix("order-")
///     .item(["OrderPlaced", "OrderPaid"], ["customer:42"])
///     .build();
/// assert_eq!(filter.scopes, ["acme"]);
/// assert_eq!(filter.items[0].types, ["OrderPlaced", "OrderPaid"]);
/// assert_eq!(filter.items[0].tags, ["customer:42"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterBuilder {
    filter: pb::Filter,
}

impl FilterBuilder {
    /// A filter that matches every event.
    pub fn new() -> FilterBuilder {
        FilterBuilder::default()
    }

    /// Adds a scope; the filter matches events of any added scope.
    pub fn scope(mut self, scope: impl Into<String>) -> FilterBuilder {
        self.filter.scopes.push(scope.into());
        self
    }

    /// Only entities whose name starts with `prefix`.
    pub fn entity_prefix(mut self, prefix: impl Into<String>) -> FilterBuilder {
        self.filter.entity_prefix = prefix.into();
        self
    }

    /// Adds a query item: events whose type is one of `types` (any when empty) and that carry
    /// every one of `tags`. The filter matches events that match any item.
    pub fn item<T, G>(mut self, types: T, tags: G) -> FilterBuilder
    where
        T: IntoIterator,
        T::Item: Into<String>,
        G: IntoIterator,
        G::Item: Into<String>,
    {
        self.filter.items.push(pb::QueryItem {
            types: types.into_iter().map(Into::into).collect(),
            tags: tags.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Only events at or after this timestamp.
    pub fn since(mut self, wall_ms: u64, logical: u32) -> FilterBuilder {
        self.filter.since = Some(crate::timestamp::hybrid(wall_ms, logical));
        self
    }

    /// Only events before this timestamp. A subscription with it ends once the log's newest
    /// event is at or past it.
    pub fn until(mut self, wall_ms: u64, logical: u32) -> FilterBuilder {
        self.filter.until = Some(crate::timestamp::hybrid(wall_ms, logical));
        self
    }

    /// The wire message.
    pub fn build(self) -> pb::Filter {
        self.filter
    }
}

impl From<FilterBuilder> for pb::Filter {
    fn from(builder: FilterBuilder) -> pb::Filter {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::wall_ms;

    #[test]
    fn builder_sets_scopes_prefix_items_and_time_range() {
        let filter = FilterBuilder::new()
            .scope("acme")
            .scope("globex")
            .entity_prefix("order-")
            .item(["OrderPlaced", "OrderPaid"], ["customer:42"])
            .item(Vec::<String>::new(), ["vip"])
            .since(10, 1)
            .until(20, 0)
            .build();
        assert_eq!(filter.scopes, ["acme", "globex"]);
        assert_eq!(filter.entity_prefix, "order-");
        assert_eq!(filter.items.len(), 2);
        assert_eq!(filter.items[0].types, ["OrderPlaced", "OrderPaid"]);
        assert_eq!(filter.items[0].tags, ["customer:42"]);
        assert!(filter.items[1].types.is_empty());
        assert_eq!(
            filter.since.map(|ts| (wall_ms(&ts), ts.logical)),
            Some((Ok(10), 1))
        );
        assert_eq!(
            filter.until.map(|ts| (wall_ms(&ts), ts.logical)),
            Some((Ok(20), 0))
        );
        assert_eq!(FilterBuilder::new().build(), pb::Filter::default());
    }
}
