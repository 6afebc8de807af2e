//! Events: what a caller proposes ([`NewEvent`]), what the store commits ([`Event`]), and the
//! numbers that must not mix ([`Position`], [`Version`], [`EventId`]).
//!
//! A [`NewEvent`] carries only what the caller decides. The store assigns the rest on commit:
//! the position (global, dense, from 1), the version (per scope and entity, dense, from 1), the
//! hybrid logical timestamp, the correlation id when none is given, and the hash that chains the
//! event to the previous one of its entity. Validation against `limits.rs` lives here, next to
//! the fields it checks.

use std::collections::BTreeMap;
use std::fmt;

use crate::clock::Timestamp;
use crate::error::{Error, FieldError, Result};
use crate::limits::*;

/// A global log position. Positions are dense and gapless from 1; `Position(0)` means "before
/// the first event" (the head of an empty store).
#[derive(
    Copy,
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

/// A per-entity version. Versions are dense from 1 within one scope and entity; `Version(0)`
/// means the entity has no events.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

/// An event's id: a UUID, version 7 when the store assigns it (time-ordered).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub uuid::Uuid);

/// The blake3 hash that chains an event to the previous event of its entity.
pub type Hash = [u8; 32];

/// Which way a read walks.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    /// Oldest to newest.
    #[default]
    Forward,
    /// Newest to oldest.
    Backward,
}

/// An event as proposed by a caller. Fields the store assigns are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewEvent {
    /// The event's id; the store assigns a UUIDv7 when `None`. A duplicate id is refused.
    pub id: Option<EventId>,
    /// The isolation boundary, such as a tenant (`acme`).
    pub scope: String,
    /// The stream key inside the scope (`order-507`).
    pub entity: String,
    /// The event type (`OrderPlaced`).
    pub event_type: String,
    /// Strings for queries that cross entities (`customer:42`). Order is kept; duplicates are
    /// refused.
    pub tags: Vec<String>,
    /// The event body. The store never looks inside it. It may be a slice of a larger buffer
    /// (a server decodes it from the request without copying), which lives as long as any
    /// clone of it: copy it out (`Bytes::copy_from_slice`) to keep it beyond the append.
    pub payload: bytes::Bytes,
    /// The payload's media type (`application/json`); may be empty.
    pub content_type: String,
    /// Free-form string pairs; sorted by key, so their order never changes a hash.
    pub metadata: BTreeMap<String, String>,
    /// The ids of the events that caused this one.
    pub causation: Vec<EventId>,
    /// The conversation or saga this event belongs to; when `None` the store uses the first
    /// parent's correlation id, else the event's own id.
    pub correlation_id: Option<EventId>,
}

/// A committed event, as read back from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Global position, from 1.
    pub position: Position,
    /// Version within `scope` and `entity`, from 1.
    pub version: Version,
    /// The hybrid logical timestamp; strictly increasing along positions.
    pub timestamp: Timestamp,
    /// The event's id.
    pub id: EventId,
    /// The scope.
    pub scope: String,
    /// The entity within the scope.
    pub entity: String,
    /// The event type.
    pub event_type: String,
    /// The tags, in the order given.
    pub tags: Vec<String>,
    /// The payload's media type.
    pub content_type: String,
    /// The metadata.
    pub metadata: BTreeMap<String, String>,
    /// The causation parents.
    pub causation: Vec<EventId>,
    /// The correlation id (assigned when the proposal had none).
    pub correlation_id: EventId,
    /// blake3 over this event's canonical bytes and the previous hash of its entity.
    pub hash: Hash,
    /// The payload. In an event being appended (as a gate sees it) it may share the buffer of
    /// the request it came in; see [`NewEvent::payload`].
    pub payload: bytes::Bytes,
}

impl EventId {
    /// Parses the canonical hyphenated form.
    pub fn parse(text: &str) -> Result<EventId> {
        uuid::Uuid::parse_str(text)
            .map(EventId)
            .map_err(|err| Error::InvalidInput(format!("event id {text:?} is not a uuid: {err}")))
    }

    /// The 16 bytes of the id, big-endian as in RFC 9562.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The canonical hyphenated form, as `Display` writes it, in one allocation of its exact
    /// size (`to_string` grows its string through the formatter).
    pub fn to_text(self) -> String {
        let mut buffer = uuid::Uuid::encode_buffer();
        self.0.hyphenated().encode_lower(&mut buffer).to_owned()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl NewEvent {
    /// A proposal with the three required names and a payload; other fields empty.
    pub fn new(
        scope: impl Into<String>,
        entity: impl Into<String>,
        event_type: impl Into<String>,
        payload: impl Into<bytes::Bytes>,
    ) -> NewEvent {
        NewEvent {
            scope: scope.into(),
            entity: entity.into(),
            event_type: event_type.into(),
            payload: payload.into(),
            ..NewEvent::default()
        }
    }

    /// Bytes this event counts against [`APPEND_BYTES_MAX`].
    pub fn size_bytes(&self) -> usize {
        let tags: usize = self.tags.iter().map(String::len).sum();
        let metadata: usize = self
            .metadata
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum();
        self.scope.len()
            + self.entity.len()
            + self.event_type.len()
            + self.content_type.len()
            + tags
            + metadata
            + 16 * self.causation.len()
            + self.payload.len()
    }

    /// Checks every field against its bound; `event_idx` names the event in the message.
    pub fn validate(&self, event_idx: usize) -> Result<()> {
        self.check(event_idx).map_err(Error::from)
    }

    /// [`NewEvent::validate`], saying which field was refused: its path within the event
    /// (`scope`, `tags[3]`, `metadata`, `causation[1]`).
    pub fn check(&self, event_idx: usize) -> Result<(), FieldError> {
        // The names in messages are written only when a check fails: this runs for every event
        // of every append, on the leader and again on each replica's apply.
        let at = |field: &'static str| {
            Lazy(move |f: &mut fmt::Formatter<'_>| write!(f, "event {event_idx} {field}"))
        };
        let names = [
            ("scope", &self.scope, SCOPE_BYTES_MAX, "SCOPE_BYTES_MAX"),
            ("entity", &self.entity, ENTITY_BYTES_MAX, "ENTITY_BYTES_MAX"),
            ("type", &self.event_type, TYPE_BYTES_MAX, "TYPE_BYTES_MAX"),
        ];
        for (field, value, max, limit) in names {
            check_name(at(field), value, max, limit).map_err(|err| FieldError::new(field, err))?;
        }
        check_count(
            at("tags"),
            self.tags.len(),
            TAGS_PER_EVENT_MAX,
            "TAGS_PER_EVENT_MAX",
        )
        .map_err(|err| FieldError::new("tags", err))?;
        for (tag_idx, tag) in self.tags.iter().enumerate() {
            let field = || format!("tags[{tag_idx}]");
            check_name(
                Lazy(|f: &mut fmt::Formatter<'_>| write!(f, "event {event_idx} tag {tag_idx}")),
                tag,
                TAG_BYTES_MAX,
                "TAG_BYTES_MAX",
            )
            .map_err(|err| FieldError::new(field(), err))?;
            if self.tags[..tag_idx].contains(tag) {
                return Err(FieldError::new(
                    field(),
                    Error::InvalidInput(format!(
                        "event {event_idx} tag {:?} appears twice",
                        crate::command::short(tag)
                    )),
                ));
            }
        }
        if self.content_type.len() > CONTENT_TYPE_BYTES_MAX {
            return Err(FieldError::new(
                "content_type",
                over(
                    at("content_type bytes"),
                    self.content_type.len(),
                    CONTENT_TYPE_BYTES_MAX,
                    "CONTENT_TYPE_BYTES_MAX",
                ),
            ));
        }
        check_count(
            at("metadata entries"),
            self.metadata.len(),
            METADATA_ENTRIES_MAX,
            "METADATA_ENTRIES_MAX",
        )
        .map_err(|err| FieldError::new("metadata", err))?;
        for (key, value) in &self.metadata {
            check_name(
                at("metadata key"),
                key,
                METADATA_KEY_BYTES_MAX,
                "METADATA_KEY_BYTES_MAX",
            )
            .map_err(|err| FieldError::new("metadata", err))?;
            if value.len() > METADATA_VALUE_BYTES_MAX {
                let what = format!(
                    "event {event_idx} metadata value of {:?} bytes",
                    crate::command::short(key)
                );
                return Err(FieldError::new(
                    "metadata",
                    over(
                        &what,
                        value.len(),
                        METADATA_VALUE_BYTES_MAX,
                        "METADATA_VALUE_BYTES_MAX",
                    ),
                ));
            }
        }
        check_count(
            at("causation parents"),
            self.causation.len(),
            CAUSATION_PER_EVENT_MAX,
            "CAUSATION_PER_EVENT_MAX",
        )
        .map_err(|err| FieldError::new("causation", err))?;
        for (parent_idx, parent) in self.causation.iter().enumerate() {
            let field = || format!("causation[{parent_idx}]");
            if self.causation[..parent_idx].contains(parent) {
                return Err(FieldError::new(
                    field(),
                    Error::InvalidInput(format!(
                        "event {event_idx} names causation parent {parent} twice"
                    )),
                ));
            }
            if self.id == Some(*parent) {
                return Err(FieldError::new(
                    field(),
                    Error::InvalidInput(format!(
                        "event {event_idx} names itself as its causation parent"
                    )),
                ));
            }
        }
        Ok(())
    }
}

/// A name for a message, written only if a message is made (`std::fmt::from_fn` once the
/// minimum Rust version reaches 1.93).
struct Lazy<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result>(F);

impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> fmt::Display for Lazy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f)
    }
}

/// Checks a name as every write checks an event's: non-empty, at most `max` bytes (`limit` is
/// the bound's name), and free of control characters, which would make logs and CLI output
/// ambiguous. `what` names it in the message (`event 2 scope`, `filter scope 0`); the value is
/// repeated at most 64 bytes long. Reads check the names they are given by the same rule.
pub fn check_name(
    what: impl fmt::Display,
    value: &str,
    max: usize,
    limit: &'static str,
) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidInput(format!("{what} is empty")));
    }
    check_text(what, value, max, limit)
}

/// [`check_name`] for a value that may be empty (an entity prefix, a tag prefix).
pub fn check_text(
    what: impl fmt::Display,
    value: &str,
    max: usize,
    limit: &'static str,
) -> Result<()> {
    if value.len() > max {
        return Err(over(format_args!("{what} bytes"), value.len(), max, limit));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidInput(format!(
            "{what} {:?} contains a control character",
            crate::command::short(value)
        )));
    }
    Ok(())
}

fn check_count(
    what: impl fmt::Display,
    count: usize,
    max: usize,
    limit: &'static str,
) -> Result<()> {
    if count > max {
        return Err(over(what, count, max, limit));
    }
    Ok(())
}

fn over(what: impl fmt::Display, actual: usize, max: usize, limit: &'static str) -> Error {
    Error::LimitExceeded {
        limit,
        max: max as u64,
        actual: actual as u64,
        what: what.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn to_text_is_the_display_form() {
        let ids = [
            uuid::Uuid::nil(),
            uuid::Uuid::max(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
        ];
        for id in ids.map(EventId) {
            let text = id.to_text();
            assert_eq!(text, id.to_string());
            assert_eq!(text.capacity(), 36, "one allocation of the exact size");
            assert_eq!(EventId::parse(&text).unwrap(), id);
        }
    }
}
