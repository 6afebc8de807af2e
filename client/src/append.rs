//! Builders for an append: [`EventBuilder`] for one proposed event, [`AppendBuilder`] for the
//! events and the conditions that must hold when they are written.
//!
//! The builders only assemble a `pb::AppendRequest`; the server validates every field against
//! its documented bounds (`core/src/limits.rs`) and refuses bad input with INVALID_ARGUMENT, so
//! there is one source of truth for what is valid.

use std::fmt;
use std::str::FromStr;

use crate::pb;

/// One proposed event. Fields the store assigns on commit (position, version, timestamp, hash)
/// do not exist here.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventBuilder {
    event: pb::NewEvent,
}

impl EventBuilder {
    /// An event with its three required names, an empty payload and nothing else.
    pub fn new(
        scope: impl Into<String>,
        entity: impl Into<String>,
        event_type: impl Into<String>,
    ) -> EventBuilder {
        EventBuilder {
            event: pb::NewEvent {
                scope: scope.into(),
                entity: entity.into(),
                r#type: event_type.into(),
                ..pb::NewEvent::default()
            },
        }
    }

    /// Fixes the event's id (a UUID string); without one the server assigns a UUIDv7. A fixed
    /// id makes a retry without an idempotency key detectable: the second write is refused.
    pub fn id(mut self, id: impl Into<String>) -> EventBuilder {
        self.event.id = id.into();
        self
    }

    /// The payload bytes; the store never looks inside them.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> EventBuilder {
        self.event.payload = payload.into();
        self
    }

    /// A JSON payload, with content type `application/json` (so CEL gates can read it).
    pub fn json(mut self, value: &serde_json::Value) -> EventBuilder {
        self.event.payload = value.to_string().into_bytes();
        self.event.content_type = "application/json".to_string();
        self
    }

    /// The payload's media type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> EventBuilder {
        self.event.content_type = content_type.into();
        self
    }

    /// Adds a tag (`customer:42`); tags must be unique within the event.
    pub fn tag(mut self, tag: impl Into<String>) -> EventBuilder {
        self.event.tags.push(tag.into());
        self
    }

    /// Adds (or replaces) a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> EventBuilder {
        self.event.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds a causation parent: the id of an event that caused this one. The parent must exist
    /// unless the append allows external causation.
    pub fn caused_by(mut self, parent_id: impl Into<String>) -> EventBuilder {
        self.event.causation.push(parent_id.into());
        self
    }

    /// The correlation id; without one the store uses the first parent's, else the event's own.
    pub fn correlation_id(mut self, correlation_id: impl Into<String>) -> EventBuilder {
        self.event.correlation_id = correlation_id.into();
        self
    }

    /// The wire message.
    pub fn build(self) -> pb::NewEvent {
        self.event
    }
}

impl From<EventBuilder> for pb::NewEvent {
    fn from(builder: EventBuilder) -> pb::NewEvent {
        builder.build()
    }
}

/// What an entity's version must be for an append to proceed. It parses from and prints as
/// the CLI's `--expect` values.
///
/// ```
/// use causeway_client::Expected;
///
/// assert_eq!("no-stream".parse(), Ok(Expected::NoStream));
/// assert_eq!("3".parse(), Ok(Expected::Exact(3)));
/// assert!("three".parse::<Expected>().is_err());
/// assert_eq!(Expected::Exact(3).to_string(), "3");
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Expected {
    /// No condition.
    #[default]
    Any,
    /// The entity has no events.
    NoStream,
    /// The entity has at least one event.
    Exists,
    /// The entity is at exactly this version (`Exact(0)` is the same as `NoStream`).
    Exact(u64),
}

impl Expected {
    /// The wire condition for one entity.
    pub fn to_pb(self, scope: impl Into<String>, entity: impl Into<String>) -> pb::ExpectedVersion {
        let (kind, version) = match self {
            Expected::Any => (pb::ExpectedKind::Any, 0),
            Expected::NoStream => (pb::ExpectedKind::NoStream, 0),
            Expected::Exists => (pb::ExpectedKind::Exists, 0),
            Expected::Exact(version) => (pb::ExpectedKind::Exact, version),
        };
        pb::ExpectedVersion {
            scope: scope.into(),
            entity: entity.into(),
            kind: kind.into(),
            version,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Any => f.write_str("any"),
            Expected::NoStream => f.write_str("no-stream"),
            Expected::Exists => f.write_str("exists"),
            Expected::Exact(version) => write!(f, "{version}"),
        }
    }
}

impl FromStr for Expected {
    type Err = String;

    /// Parses `any`, `no-stream` (or `no_stream`), `exists`, or a version number.
    fn from_str(text: &str) -> Result<Expected, String> {
        match text {
            "any" => Ok(Expected::Any),
            "no-stream" | "no_stream" => Ok(Expected::NoStream),
            "exists" => Ok(Expected::Exists),
            _ => text
                .parse::<u64>()
                .map(Expected::Exact)
                .map_err(|_| format!("{text:?} is not any, no-stream, exists or a version number")),
        }
    }
}

/// An append: events written atomically (all or none, consecutive positions) and the
/// conditions that must hold at commit time.
///
/// ```
/// use causeway_client::{AppendBuilder, EventBuilder, Expected, pb};
///
/// let request: pb::AppendRequest = AppendBuilder::new()
///     .event(
///         EventBuilder::new("acme", "order-7", "OrderPlaced")
///             .json(&serde_json::json!({"total": 12}))
///             .tag("customer:42"),
///     )
///     .expect("acme", "order-7", Expected::NoStream)
///     .idempotency_key("place-order-7")
///     .build();
/// assert_eq!(request.events[0].content_type, "application/json");
/// assert_eq!(request.events[0].payload, br#"{"total":12}"#);
/// assert_eq!(request.expected[0].kind(), pb::ExpectedKind::NoStream);
/// assert_eq!(request.idempotency_key, "place-order-7");
/// // `Any` is no condition at all, so it adds nothing to the request.
/// let unconditional = AppendBuilder::new().expect("acme", "order-7", Expected::Any).build();
/// assert!(unconditional.expected.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AppendBuilder {
    request: pb::AppendRequest,
}

impl AppendBuilder {
    /// An append with no events and no conditions.
    pub fn new() -> AppendBuilder {
        AppendBuilder::default()
    }

    /// Adds an event; events get positions in the order added.
    pub fn event(mut self, event: impl Into<pb::NewEvent>) -> AppendBuilder {
        self.request.events.push(event.into());
        self
    }

    /// Adds a version condition on one entity; [`Expected::Any`] adds nothing.
    pub fn expect(
        mut self,
        scope: impl Into<String>,
        entity: impl Into<String>,
        expected: Expected,
    ) -> AppendBuilder {
        if expected != Expected::Any {
            self.request.expected.push(expected.to_pb(scope, entity));
        }
        self
    }

    /// Sets the DCB condition: refuse the append if any event matching `query` exists after
    /// `after_position` (the position the caller's decision was based on).
    pub fn condition(mut self, query: pb::Filter, after_position: u64) -> AppendBuilder {
        self.request.condition = Some(pb::DcbCondition {
            query: Some(query),
            after_position,
        });
        self
    }

    /// Sets the idempotency key: a retry with the same key and content returns the original
    /// receipt and writes nothing; other content under the same key is refused.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> AppendBuilder {
        self.request.idempotency_key = key.into();
        self
    }

    /// Names a gate to run beyond those bound to the events' scopes and types.
    pub fn gate(mut self, name: impl Into<String>) -> AppendBuilder {
        self.request.gates.push(name.into());
        self
    }

    /// Allows causation parents that are not in the store (events of another system). Gates
    /// with the `causation_exists` rule still insist.
    pub fn external_causation(mut self, allow: bool) -> AppendBuilder {
        self.request.external_causation = allow;
        self
    }

    /// The wire request.
    pub fn build(self) -> pb::AppendRequest {
        self.request
    }
}

impl From<AppendBuilder> for pb::AppendRequest {
    fn from(builder: AppendBuilder) -> pb::AppendRequest {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterBuilder;

    #[test]
    fn builder_fills_every_field_of_the_request() {
        let request = AppendBuilder::new()
            .event(
                EventBuilder::new("acme", "order-7", "OrderPlaced")
                    .id("01890a5d-ac96-774b-bcce-b302099a8057")
                    .json(&serde_json::json!({"total": 12}))
                    .tag("customer:42")
                    .tag("region:eu")
                    .metadata("source", "web")
                    .caused_by("01890a5d-ac96-7c4e-9a1f-3d2b8e6f0a11")
                    .correlation_id("01890a5d-0000-7000-8000-000000000042"),
            )
            .event(EventBuilder::new("acme", "order-7", "OrderPaid").payload(vec![1, 2]))
            .expect("acme", "order-7", Expected::Exact(3))
            .expect("acme", "order-8", Expected::Any)
            .expect("acme", "order-9", Expected::NoStream)
            .condition(FilterBuilder::new().scope("acme").build(), 41)
            .idempotency_key("place-7")
            .gate("fraud")
            .external_causation(true)
            .build();

        assert_eq!(request.events.len(), 2);
        let placed = &request.events[0];
        assert_eq!(placed.id, "01890a5d-ac96-774b-bcce-b302099a8057");
        assert_eq!(
            (
                placed.scope.as_str(),
                placed.entity.as_str(),
                placed.r#type.as_str()
            ),
            ("acme", "order-7", "OrderPlaced")
        );
        assert_eq!(placed.payload, br#"{"total":12}"#);
        assert_eq!(placed.content_type, "application/json");
        assert_eq!(placed.tags, ["customer:42", "region:eu"]);
        assert_eq!(placed.metadata["source"], "web");
        assert_eq!(placed.causation, ["01890a5d-ac96-7c4e-9a1f-3d2b8e6f0a11"]);
        assert_eq!(
            placed.correlation_id,
            "01890a5d-0000-7000-8000-000000000042"
        );
        assert_eq!(request.events[1].payload, [1, 2]);
        assert_eq!(
            request.events[1].content_type, "",
            "no content type unless set"
        );

        assert_eq!(request.expected.len(), 2, "Expected::Any adds no condition");
        assert_eq!(request.expected[0].kind(), pb::ExpectedKind::Exact);
        assert_eq!(request.expected[0].version, 3);
        assert_eq!(request.expected[1].entity, "order-9");
        assert_eq!(request.expected[1].kind(), pb::ExpectedKind::NoStream);

        let condition = request.condition.expect("condition set");
        assert_eq!(condition.after_position, 41);
        assert_eq!(condition.query.expect("query set").scopes, ["acme"]);
        assert_eq!(request.idempotency_key, "place-7");
        assert_eq!(request.gates, ["fraud"]);
        assert!(request.external_causation);
    }

    #[test]
    fn expected_parses_and_prints_every_kind() {
        for (text, expected) in [
            ("any", Expected::Any),
            ("no-stream", Expected::NoStream),
            ("exists", Expected::Exists),
            ("7", Expected::Exact(7)),
        ] {
            assert_eq!(text.parse::<Expected>(), Ok(expected));
            assert_eq!(expected.to_string(), text);
        }
        assert_eq!("no_stream".parse::<Expected>(), Ok(Expected::NoStream));
        assert!("-1".parse::<Expected>().is_err());
        assert!("latest".parse::<Expected>().is_err());
    }
}
