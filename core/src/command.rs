//! Commands: what the store is asked to do, in a form every replica applies the same way.
//!
//! A client's [`Append`] (or a gate registration, a gate removal, a settings change) becomes a
//! [`Command`] when a node stamps it ([`crate::Store::stamp`] and its siblings): the node fixes
//! what must come from one place, the missing event ids and the hybrid logical timestamp. From
//! then on the command carries everything its outcome depends on, apart from the log itself, so
//! every replica that applies the same commands in the same order decides the same way and
//! writes the same bytes.
//!
//! A command has one canonical binary encoding ([`Command::encode`], [`Command::decode`]),
//! versioned and laid out in `docs/FORMAT.md`: what a replication log stores, and what the
//! idempotency request hash is taken over ([`request_hash`]), so a retried append is compared
//! by bytes that no compiler or library version can change. Decoding checks every length
//! against the bytes that remain (never trusting a length for an allocation), every string for
//! UTF-8 and every flag for 0 or 1, and refuses trailing bytes, with [`Error::InvalidInput`]
//! naming the byte offset; it checks the form, not the limits, which apply checks as for any
//! command.
//!
//! Only the store writes events in [`SYSTEM_SCOPE`]: an [`Action::Append`] that names a `$`
//! scope is refused, and the system events of gate and settings commands are built by the
//! writer from their typed content.

use std::collections::BTreeMap;

use crate::clock::Timestamp;
use crate::error::{Error, FieldError, Result};
use crate::event::{EventId, Hash, NewEvent, Position, Version};
use crate::gate::{GateDefinition, Rule};
use crate::limits::*;
use crate::query::{Filter, QueryItem};

/// The reserved scope of the store's own events: gate definitions, settings and denial
/// records. Scopes starting with `$` are refused in client appends.
pub const SYSTEM_SCOPE: &str = "$system";

/// The version of the command encoding this build writes and reads.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

/// A proposal: one or more events, appended atomically, and the conditions that must hold when
/// they are written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Append {
    /// The events, in the order they get positions.
    pub events: Vec<NewEvent>,
    /// Per-entity version conditions, checked before anything is written.
    pub expected: Vec<Expected>,
    /// A DCB condition: refuse if any event matching the query exists after a position.
    pub condition: Option<DcbCondition>,
    /// A retry with the same key and the same content returns the original receipt and writes
    /// nothing; the same key with other content is [`Error::IdempotencyConflict`]. Keys are
    /// remembered for the last [`IDEMPOTENCY_KEYS_MAX`] keyed appends, across restarts.
    pub idempotency_key: Option<String>,
    /// Gates to run in addition to those bound to the events' scopes and types.
    pub gates: Vec<String>,
    /// Causation parents may be ids from outside this store; without this every parent must
    /// exist (in the store or earlier in the append).
    pub external_causation: bool,
}

impl Append {
    /// An append of these events with no conditions.
    pub fn new(events: Vec<NewEvent>) -> Append {
        Append {
            events,
            ..Append::default()
        }
    }
}

/// A version condition on one entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The entity's scope.
    pub scope: String,
    /// The entity.
    pub entity: String,
    /// What its version must be.
    pub version: ExpectedVersion,
}

/// What an entity's version must be for an append to proceed.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No condition.
    #[default]
    Any,
    /// The entity has no events.
    NoStream,
    /// The entity has at least one event.
    Exists,
    /// The entity is at exactly this version (`Exact(Version(0))` is the same as `NoStream`).
    Exact(Version),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::Exists => f.write_str("exists"),
            ExpectedVersion::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// A Dynamic Consistency Boundary condition: the append is refused if any event matching
/// `query` exists after `after` (typically the position the client's decision was based on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DcbCondition {
    /// Which events would invalidate the decision (scopes, types, tags).
    pub query: Filter,
    /// The position the decision was based on.
    pub after: Position,
}

/// Settings that change what apply writes. They are the same on every replica because they
/// are in the log: a [`Action::Configure`] command writes them as an event, and a store
/// rebuilds them from the log when it opens. Never a node flag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    /// Record every refused append as an `AppendDenied` event in [`SYSTEM_SCOPE`], so who was
    /// refused what is on the record. Off by default: each refusal then costs a write and a
    /// position.
    #[serde(default)]
    pub record_denials: bool,
}

/// The id of the replicated log entry a command was applied from: an opaque pair to the store,
/// ordered by `index`. The store persists it with what the entry writes, so that after a crash
/// it can say which entry it applied last ([`crate::Store::applied`]).
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
pub struct EntryId {
    /// The term (or epoch) the entry was proposed in.
    pub term: u64,
    /// The entry's index in the replicated log; strictly increasing along applies.
    pub index: u64,
}

/// What a command does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Appends events under conditions.
    Append {
        /// The append; after stamping every event `id` is `Some`.
        append: Append,
        /// blake3 of the append as the client sent it (before ids were assigned): what an
        /// idempotent retry is compared by. Zeros for an append without an idempotency key.
        request_hash: Hash,
    },
    /// Registers a gate, or replaces the registered gate of the same name. Checked (name,
    /// [`GATES_MAX`], compile) by the writer, so racing registrations cannot pass a bound.
    RegisterGate {
        /// The id of the `GateRegistered` event it writes.
        id: EventId,
        /// The gate.
        definition: GateDefinition,
    },
    /// Removes a registered gate.
    RemoveGate {
        /// The id of the `GateRemoved` event it writes.
        id: EventId,
        /// The gate's name.
        name: String,
    },
    /// Replaces the store's [`Settings`].
    Configure {
        /// The id of the `SettingsChanged` event it writes.
        id: EventId,
        /// The new settings, whole.
        settings: Settings,
    },
    /// Writes nothing: a replicated log's blank or membership entry, which still moves
    /// [`crate::Store::applied`].
    Noop,
}

/// A stamped command: an [`Action`] with its timestamp fixed, ready for deterministic apply. A
/// replication leader produces these with [`crate::Store::stamp`] and every replica applies the
/// same ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The proposal's timestamp; each event gets this or the smallest value above the previous
    /// event's timestamp, whichever is larger.
    pub timestamp: Timestamp,
    /// What to do.
    pub action: Action,
}

impl Command {
    /// An append command for events whose ids are already set, with the request hash taken
    /// over the append as given. [`crate::Store::stamp`] is the usual way to make one.
    pub fn append(timestamp: Timestamp, append: Append) -> Command {
        let request_hash = match append.idempotency_key {
            Some(_) => request_hash(&append),
            None => [0; 32],
        };
        Command {
            timestamp,
            action: Action::Append {
                append,
                request_hash,
            },
        }
    }

    /// A command that writes nothing.
    pub fn noop() -> Command {
        Command {
            timestamp: Timestamp::ZERO,
            action: Action::Noop,
        }
    }

    /// The canonical bytes of this command (`docs/FORMAT.md`, "Command").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        out.push(COMMAND_FORMAT_VERSION);
        let kind = match &self.action {
            Action::Append { .. } => KIND_APPEND,
            Action::RegisterGate { .. } => KIND_REGISTER_GATE,
            Action::RemoveGate { .. } => KIND_REMOVE_GATE,
            Action::Configure { .. } => KIND_CONFIGURE,
            Action::Noop => KIND_NOOP,
        };
        out.push(kind);
        out.extend_from_slice(&self.timestamp.to_u64().to_le_bytes());
        match &self.action {
            Action::Append {
                append,
                request_hash,
            } => {
                out.extend_from_slice(request_hash);
                put_append(&mut out, append);
            }
            Action::RegisterGate { id, definition } => {
                out.extend_from_slice(id.as_bytes());
                put_definition(&mut out, definition);
            }
            Action::RemoveGate { id, name } => {
                out.extend_from_slice(id.as_bytes());
                put_str(&mut out, name);
            }
            Action::Configure { id, settings } => {
                out.extend_from_slice(id.as_bytes());
                put_bool(&mut out, settings.record_denials);
            }
            Action::Noop => {}
        }
        out
    }

    /// Decodes what [`Command::encode`] wrote. Anything else (cut short, an unknown version or
    /// kind, a length past the end, a string that is not UTF-8, a flag that is not 0 or 1,
    /// bytes left over) is [`Error::InvalidInput`] naming the offset.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        let mut reader = Reader { bytes, offset: 0 };
        let command = reader.command().map_err(|why| {
            Error::InvalidInput(format!(
                "malformed command at byte {}: {why}",
                reader.offset
            ))
        })?;
        if reader.offset != bytes.len() {
            return Err(Error::InvalidInput(format!(
                "malformed command: {} bytes left over after byte {}",
                bytes.len() - reader.offset,
                reader.offset
            )));
        }
        Ok(command)
    }

    fn encoded_len_hint(&self) -> usize {
        match &self.action {
            Action::Append { append, .. } => {
                64 + append
                    .events
                    .iter()
                    .map(|event| 96 + event.size_bytes())
                    .sum::<usize>()
            }
            _ => 256,
        }
    }
}

/// blake3 over the canonical encoding of an append as the client sent it (every field of every
/// event, ids only where the client gave them, and every condition), under its own domain
/// string. Two sends of the same request hash the same; any difference in content hashes
/// differently; and the bytes hashed are those of [`Command::encode`], so no change of compiler
/// or library changes a stored hash.
pub fn request_hash(append: &Append) -> Hash {
    let mut encoded = Vec::with_capacity(
        64 + append
            .events
            .iter()
            .map(|event| 96 + event.size_bytes())
            .sum::<usize>(),
    );
    encoded.extend_from_slice(b"causeway.request.v2\0");
    put_append(&mut encoded, append);
    *blake3::hash(&encoded).as_bytes()
}

/// Checks an append against every bound and rule that needs no store. `$` scopes are refused:
/// only the store writes [`SYSTEM_SCOPE`].
pub(crate) fn validate_append(append: &Append) -> Result<()> {
    check_append(append).map_err(Error::from)
}

/// The checks of `validate_append`, saying which field of the append was refused
/// (`events[2].scope`, `expected[0].entity`, `idempotency_key`, `condition.query.scopes[1]`).
/// A server runs it before queueing an append, to name the field; the store runs it again.
pub fn check_append(append: &Append) -> Result<(), FieldError> {
    check_events(&append.events)?;
    if let Some(event_idx) = append
        .events
        .iter()
        .position(|event| event.scope.starts_with('$'))
    {
        return Err(FieldError::new(
            format!("events[{event_idx}].scope"),
            Error::InvalidInput(format!(
                "event {event_idx} scope {:?} is reserved (scopes starting with $)",
                short(&append.events[event_idx].scope)
            )),
        ));
    }
    let counts = [
        (
            "APPEND_EXPECTATIONS_MAX",
            APPEND_EXPECTATIONS_MAX,
            append.expected.len(),
            "expected versions in the append",
            "expected",
        ),
        (
            "APPEND_GATES_MAX",
            APPEND_GATES_MAX,
            append.gates.len(),
            "gates named in the append",
            "gates",
        ),
    ];
    for (limit, max, actual, what, field) in counts {
        if actual > max {
            return Err(FieldError::new(
                field,
                Error::LimitExceeded {
                    limit,
                    max: max as u64,
                    actual: actual as u64,
                    what: what.to_string(),
                },
            ));
        }
    }
    for (expected_idx, expected) in append.expected.iter().enumerate() {
        // Bounded like an event's scope and entity: the names are echoed in a conflict. (No
        // check for control characters: the log has always accepted them here, and a replica
        // applying an older entry must decide as the leader did.)
        let names = [
            ("scope", &expected.scope, SCOPE_BYTES_MAX, "SCOPE_BYTES_MAX"),
            (
                "entity",
                &expected.entity,
                ENTITY_BYTES_MAX,
                "ENTITY_BYTES_MAX",
            ),
        ];
        for (field, value, max, limit) in names {
            let refusal =
                |error| FieldError::new(format!("expected[{expected_idx}].{field}"), error);
            if value.is_empty() {
                return Err(refusal(Error::InvalidInput(format!(
                    "expected {expected_idx} needs a scope and an entity; its {field} is empty"
                ))));
            }
            if value.len() > max {
                return Err(refusal(Error::LimitExceeded {
                    limit,
                    max: max as u64,
                    actual: value.len() as u64,
                    what: format!("expected {expected_idx} {field} bytes"),
                }));
            }
        }
    }
    if let Some(condition) = &append.condition {
        // Counts only: the names in a condition are bounded where requests come in
        // (`Filter::check`), while what the log accepts stays as it always was, so a replica
        // applying an older entry decides as its leader did.
        condition
            .query
            .check_counts()
            .map_err(|refusal| refusal.within("condition.query"))?;
        if condition.query.is_empty() {
            return Err(FieldError::new(
                "condition.query",
                Error::InvalidInput(
                    "condition query is empty; it would match every event".to_string(),
                ),
            ));
        }
    }
    if let Some(key) = &append.idempotency_key
        && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX)
    {
        return Err(FieldError::new(
            "idempotency_key",
            Error::InvalidInput(format!(
                "idempotency_key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes (IDEMPOTENCY_KEY_BYTES_MAX)"
            )),
        ));
    }
    Ok(())
}

fn check_events(events: &[NewEvent]) -> Result<(), FieldError> {
    if events.is_empty() {
        return Err(FieldError::new(
            "events",
            Error::InvalidInput("an append needs at least one event".to_string()),
        ));
    }
    if events.len() > APPEND_EVENTS_MAX {
        return Err(FieldError::new(
            "events",
            Error::LimitExceeded {
                limit: "APPEND_EVENTS_MAX",
                max: APPEND_EVENTS_MAX as u64,
                actual: events.len() as u64,
                what: "events in the append".to_string(),
            },
        ));
    }
    let mut append_bytes = 0;
    let mut ids = std::collections::HashSet::with_capacity(events.len());
    for (event_idx, event) in events.iter().enumerate() {
        event
            .check(event_idx)
            .map_err(|refusal| refusal.within(&format!("events[{event_idx}]")))?;
        append_bytes += event.size_bytes();
        if let Some(id) = event.id
            && !ids.insert(id)
        {
            return Err(FieldError::new(
                format!("events[{event_idx}].id"),
                Error::InvalidInput(format!(
                    "event {event_idx} id {id} appears twice in the append"
                )),
            ));
        }
    }
    if append_bytes > APPEND_BYTES_MAX {
        return Err(FieldError::new(
            "events",
            Error::LimitExceeded {
                limit: "APPEND_BYTES_MAX",
                max: APPEND_BYTES_MAX as u64,
                actual: append_bytes as u64,
                what: "append bytes".to_string(),
            },
        ));
    }
    Ok(())
}

/// A client's string as an error shows it: at most 64 bytes, cut at a character boundary. Public
/// so a server that refuses on the store's behalf words the refusal as the store does.
pub fn short(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

const KIND_APPEND: u8 = 1;
const KIND_REGISTER_GATE: u8 = 2;
const KIND_REMOVE_GATE: u8 = 3;
const KIND_CONFIGURE: u8 = 4;
const KIND_NOOP: u8 = 5;

const RULE_UNIQUE_TAG: u8 = 1;
const RULE_ALLOWED_TYPES: u8 = 2;
const RULE_CAUSATION_EXISTS: u8 = 3;
const RULE_RATE_LIMIT: u8 = 4;
const RULE_SIZE_LIMIT: u8 = 5;
const RULE_CEL: u8 = 6;

const EXPECT_ANY: u8 = 0;
const EXPECT_NO_STREAM: u8 = 1;
const EXPECT_EXISTS: u8 = 2;
const EXPECT_EXACT: u8 = 3;

fn put_u32(out: &mut Vec<u8>, value: usize) {
    let value = u32::try_from(value).expect("every length is bounded far below 4 GiB");
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, value: &str) {
    put_u32(out, value.len());
    out.extend_from_slice(value.as_bytes());
}

fn put_strs(out: &mut Vec<u8>, values: &[String]) {
    put_u32(out, values.len());
    for value in values {
        put_str(out, value);
    }
}

fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

fn put_id(out: &mut Vec<u8>, id: Option<&EventId>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(id.as_bytes());
        }
    }
}

fn put_timestamp(out: &mut Vec<u8>, timestamp: Option<Timestamp>) {
    match timestamp {
        None => out.push(0),
        Some(timestamp) => {
            out.push(1);
            out.extend_from_slice(&timestamp.to_u64().to_le_bytes());
        }
    }
}

fn put_append(out: &mut Vec<u8>, append: &Append) {
    put_u32(out, append.events.len());
    for event in &append.events {
        put_id(out, event.id.as_ref());
        put_str(out, &event.scope);
        put_str(out, &event.entity);
        put_str(out, &event.event_type);
        put_str(out, &event.content_type);
        put_strs(out, &event.tags);
        put_u32(out, event.metadata.len());
        for (key, value) in &event.metadata {
            put_str(out, key);
            put_str(out, value);
        }
        put_u32(out, event.causation.len());
        for parent in &event.causation {
            out.extend_from_slice(parent.as_bytes());
        }
        put_id(out, event.correlation_id.as_ref());
        put_u32(out, event.payload.len());
        out.extend_from_slice(&event.payload);
    }
    put_u32(out, append.expected.len());
    for expected in &append.expected {
        put_str(out, &expected.scope);
        put_str(out, &expected.entity);
        match expected.version {
            ExpectedVersion::Any => out.push(EXPECT_ANY),
            ExpectedVersion::NoStream => out.push(EXPECT_NO_STREAM),
            ExpectedVersion::Exists => out.push(EXPECT_EXISTS),
            ExpectedVersion::Exact(version) => {
                out.push(EXPECT_EXACT);
                out.extend_from_slice(&version.0.to_le_bytes());
            }
        }
    }
    match &append.condition {
        None => out.push(0),
        Some(condition) => {
            out.push(1);
            put_filter(out, &condition.query);
            out.extend_from_slice(&condition.after.0.to_le_bytes());
        }
    }
    match &append.idempotency_key {
        None => out.push(0),
        Some(key) => {
            out.push(1);
            put_str(out, key);
        }
    }
    put_strs(out, &append.gates);
    put_bool(out, append.external_causation);
}

fn put_filter(out: &mut Vec<u8>, filter: &Filter) {
    put_strs(out, &filter.scopes);
    put_str(out, &filter.entity_prefix);
    put_u32(out, filter.items.len());
    for item in &filter.items {
        put_strs(out, &item.types);
        put_strs(out, &item.tags);
    }
    put_timestamp(out, filter.since);
    put_timestamp(out, filter.until);
}

fn put_definition(out: &mut Vec<u8>, definition: &GateDefinition) {
    put_str(out, &definition.name);
    put_strs(out, &definition.scopes);
    put_strs(out, &definition.types);
    match &definition.rule {
        Rule::UniqueTag { prefix } => {
            out.push(RULE_UNIQUE_TAG);
            put_str(out, prefix);
        }
        Rule::AllowedTypes { types } => {
            out.push(RULE_ALLOWED_TYPES);
            put_strs(out, types);
        }
        Rule::CausationExists => out.push(RULE_CAUSATION_EXISTS),
        Rule::RateLimit {
            max_events,
            window_ms,
        } => {
            out.push(RULE_RATE_LIMIT);
            out.extend_from_slice(&max_events.to_le_bytes());
            out.extend_from_slice(&window_ms.to_le_bytes());
        }
        Rule::SizeLimit { max_payload_bytes } => {
            out.push(RULE_SIZE_LIMIT);
            out.extend_from_slice(&max_payload_bytes.to_le_bytes());
        }
        Rule::Cel { expression } => {
            out.push(RULE_CEL);
            put_str(out, expression);
        }
    }
}

/// Reads a command, checking every length against what remains. Errors are short reasons; the
/// caller adds the offset.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

type Read<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    fn take(&mut self, n_bytes: usize) -> Read<&'a [u8]> {
        let rest = &self.bytes[self.offset..];
        if rest.len() < n_bytes {
            return Err(format!("needs {n_bytes} bytes, {} remain", rest.len()));
        }
        self.offset += n_bytes;
        Ok(&rest[..n_bytes])
    }

    fn u8(&mut self) -> Read<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Read<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bool(&mut self) -> Read<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(format!("flag is {other}, not 0 or 1")),
        }
    }

    /// A count of items that take at least `min_item_bytes` each: more than the bytes left
    /// could hold is refused before anything is allocated for them.
    fn count(&mut self, min_item_bytes: usize) -> Read<usize> {
        let count = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        let left = self.bytes.len() - self.offset;
        if count.saturating_mul(min_item_bytes.max(1)) > left {
            return Err(format!(
                "count {count} does not fit in the {left} bytes left"
            ));
        }
        Ok(count)
    }

    fn bytes(&mut self) -> Read<&'a [u8]> {
        let len = self.count(1)?;
        self.take(len)
    }

    fn str(&mut self) -> Read<String> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| "a string is not UTF-8".to_string())
    }

    fn strs(&mut self) -> Read<Vec<String>> {
        let count = self.count(4)?;
        (0..count).map(|_| self.str()).collect()
    }

    fn id(&mut self) -> Read<EventId> {
        let bytes: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
        Ok(EventId(uuid::Uuid::from_bytes(bytes)))
    }

    fn optional_id(&mut self) -> Read<Option<EventId>> {
        if self.bool()? {
            self.id().map(Some)
        } else {
            Ok(None)
        }
    }

    fn optional_timestamp(&mut self) -> Read<Option<Timestamp>> {
        if self.bool()? {
            Ok(Some(Timestamp::from_u64(self.u64()?)))
        } else {
            Ok(None)
        }
    }

    fn hash(&mut self) -> Read<Hash> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }

    fn command(&mut self) -> Read<Command> {
        let version = self.u8()?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(format!(
                "command format version {version} is not supported (this build reads {COMMAND_FORMAT_VERSION})"
            ));
        }
        let kind = self.u8()?;
        let timestamp = Timestamp::from_u64(self.u64()?);
        let action = match kind {
            KIND_APPEND => {
                let request_hash = self.hash()?;
                Action::Append {
                    append: self.append()?,
                    request_hash,
                }
            }
            KIND_REGISTER_GATE => Action::RegisterGate {
                id: self.id()?,
                definition: self.definition()?,
            },
            KIND_REMOVE_GATE => Action::RemoveGate {
                id: self.id()?,
                name: self.str()?,
            },
            KIND_CONFIGURE => Action::Configure {
                id: self.id()?,
                settings: Settings {
                    record_denials: self.bool()?,
                },
            },
            KIND_NOOP => Action::Noop,
            other => return Err(format!("unknown command kind {other}")),
        };
        Ok(Command { timestamp, action })
    }

    fn append(&mut self) -> Read<Append> {
        // The smallest event: id flag, four empty names, three empty lists, correlation flag,
        // empty payload.
        let n_events = self.count(1 + 4 * 4 + 3 * 4 + 1 + 4)?;
        let mut events = Vec::with_capacity(n_events);
        for _ in 0..n_events {
            let id = self.optional_id()?;
            let scope = self.str()?;
            let entity = self.str()?;
            let event_type = self.str()?;
            let content_type = self.str()?;
            let tags = self.strs()?;
            let n_entries = self.count(8)?;
            let mut metadata = BTreeMap::new();
            let mut last_key: Option<String> = None;
            for _ in 0..n_entries {
                let key = self.str()?;
                let value = self.str()?;
                // Canonical: keys ascend, as a map writes them; anything else has a second
                // encoding of the same command.
                if last_key.as_ref().is_some_and(|last| *last >= key) {
                    return Err("metadata keys are not in ascending order".to_string());
                }
                last_key = Some(key.clone());
                metadata.insert(key, value);
            }
            let n_parents = self.count(16)?;
            let causation = (0..n_parents)
                .map(|_| self.id())
                .collect::<Read<Vec<_>>>()?;
            let correlation_id = self.optional_id()?;
            let payload = bytes::Bytes::copy_from_slice(self.bytes()?);
            events.push(NewEvent {
                id,
                scope,
                entity,
                event_type,
                tags,
                payload,
                content_type,
                metadata,
                causation,
                correlation_id,
            });
        }
        let n_expected = self.count(4 + 4 + 1)?;
        let mut expected = Vec::with_capacity(n_expected);
        for _ in 0..n_expected {
            let scope = self.str()?;
            let entity = self.str()?;
            let version = match self.u8()? {
                EXPECT_ANY => ExpectedVersion::Any,
                EXPECT_NO_STREAM => ExpectedVersion::NoStream,
                EXPECT_EXISTS => ExpectedVersion::Exists,
                EXPECT_EXACT => ExpectedVersion::Exact(Version(self.u64()?)),
                other => return Err(format!("unknown expected version kind {other}")),
            };
            expected.push(Expected {
                scope,
                entity,
                version,
            });
        }
        let condition = if self.bool()? {
            let query = self.filter()?;
            let after = Position(self.u64()?);
            Some(DcbCondition { query, after })
        } else {
            None
        };
        let idempotency_key = if self.bool()? {
            Some(self.str()?)
        } else {
            None
        };
        let gates = self.strs()?;
        let external_causation = self.bool()?;
        Ok(Append {
            events,
            expected,
            condition,
            idempotency_key,
            gates,
            external_causation,
        })
    }

    fn filter(&mut self) -> Read<Filter> {
        let scopes = self.strs()?;
        let entity_prefix = self.str()?;
        let n_items = self.count(8)?;
        let mut items = Vec::with_capacity(n_items);
        for _ in 0..n_items {
            items.push(QueryItem {
                types: self.strs()?,
                tags: self.strs()?,
            });
        }
        Ok(Filter {
            scopes,
            entity_prefix,
            items,
            since: self.optional_timestamp()?,
            until: self.optional_timestamp()?,
        })
    }

    fn definition(&mut self) -> Read<GateDefinition> {
        let name = self.str()?;
        let scopes = self.strs()?;
        let types = self.strs()?;
        let rule = match self.u8()? {
            RULE_UNIQUE_TAG => Rule::UniqueTag {
                prefix: self.str()?,
            },
            RULE_ALLOWED_TYPES => Rule::AllowedTypes {
                types: self.strs()?,
            },
            RULE_CAUSATION_EXISTS => Rule::CausationExists,
            RULE_RATE_LIMIT => Rule::RateLimit {
                max_events: self.u64()?,
                window_ms: self.u64()?,
            },
            RULE_SIZE_LIMIT => Rule::SizeLimit {
                max_payload_bytes: self.u64()?,
            },
            RULE_CEL => Rule::Cel {
                expression: self.str()?,
            },
            other => return Err(format!("unknown gate rule kind {other}")),
        };
        Ok(GateDefinition {
            name,
            scopes,
            types,
            rule,
        })
    }
}
