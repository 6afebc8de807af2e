//! Every conversion between the wire (`pb`) and the core's types, in one file.
//!
//! Wire types never reach the core: requests are converted here first, and replies are built
//! here from core values. Conversion checks only what the wire can get wrong and the core cannot
//! see (a UUID that does not parse, an unknown enum value, a hash of the wrong length, a
//! timestamp the core cannot represent) and names the field as a path in the request
//! (`events[2].causation[0]`). Names and bounds are the core's to check, with its own
//! messages: its validation is called here, before any store call, so that a refusal names
//! the field in a `google.rpc.BadRequest` (the store checks the same again). Empty strings
//! stand for absent optional values, as proto3 has it.

use causeway_core::clock::Timestamp;
use causeway_core::command::check_append;
use causeway_core::event::check_name;
use causeway_core::gate::check_gate_name;
use causeway_core::limits::{APPEND_EVENTS_MAX, ENTITY_BYTES_MAX, SCOPE_BYTES_MAX};
use causeway_core::receipt::Signature;
use causeway_core::store::RegisteredGate;
use causeway_core::{
    Append, Committed, DcbCondition, Direction, Event, EventId, Expected, ExpectedVersion, Filter,
    GateDefinition, GatePass, Graph, NewEvent, Position, QueryItem, Receipt, Rule, Version,
};
use prost::Message as _;

use crate::cluster::node::Consistency;
use crate::limits::SIGNATURE_KEY_ID_BYTES_MAX;
use crate::pb;
use crate::status::{Error, echo};

type Result<T, E = Error> = std::result::Result<T, E>;

/// An append request, with `prefix` naming where it sits in the request (`""` or `"append."`).
pub fn append(request: pb::AppendRequest, prefix: &str) -> Result<Append> {
    let events = request
        .events
        .into_iter()
        .enumerate()
        .map(|(event_idx, event)| {
            let field = || format!("{prefix}events[{event_idx}]");
            new_event(event, field)
        })
        .collect::<Result<_>>()?;
    let expected = request
        .expected
        .into_iter()
        .enumerate()
        .map(|(expected_idx, expected)| {
            expected_version(expected, &format!("{prefix}expected[{expected_idx}]"))
        })
        .collect::<Result<_>>()?;
    let condition = request
        .condition
        .map(|condition| {
            Ok::<_, Error>(DcbCondition {
                query: filter(condition.query, &format!("{prefix}condition.query"))?,
                after: Position(condition.after_position),
            })
        })
        .transpose()?;
    for (gate_idx, gate) in request.gates.iter().enumerate() {
        // A name no gate can have is refused here rather than looked up (and echoed).
        check_gate_name(gate)
            .map_err(|source| Error::refused(format!("{prefix}gates[{gate_idx}]"), source))?;
    }
    let append = Append {
        events,
        expected,
        condition,
        idempotency_key: non_empty(request.idempotency_key),
        gates: request.gates,
        external_causation: request.external_causation,
    };
    // The store checks the same again; checked here, a refusal names the field's path in a
    // BadRequest (`events[2].tags[0]`), as every INVALID_ARGUMENT does.
    check_append(&append).map_err(|refusal| Error::field(prefix.trim_end_matches('.'), refusal))?;
    for (event_idx, event) in append.events.iter().enumerate() {
        let field = |name: &str| format!("{prefix}events[{event_idx}].{name}");
        check_display(&event.scope, || field("scope"))?;
        check_display(&event.entity, || field("entity"))?;
        check_display(&event.event_type, || field("type"))?;
        for (tag_idx, tag) in event.tags.iter().enumerate() {
            check_display(tag, || field(&format!("tags[{tag_idx}]")))?;
        }
        for key in event.metadata.keys() {
            // A map has no index to name the key by: the reason quotes it, escaped.
            if let Some(reason) = display_refusal(key) {
                return Err(Error::invalid(
                    field("metadata"),
                    format!("key {:?} {reason}", causeway_core::command::short(key)),
                ));
            }
        }
    }
    Ok(append)
}

/// Refuses a name holding a Unicode bidirectional embedding, override or isolate control
/// (U+202A to U+202E, U+2066 to U+2069, the characters rustc's `text_direction_codepoint` lints
/// name): it would make the name display as another one in a terminal, the console or a log
/// ("Trojan Source"). The implicit marks (U+200E, U+200F, U+061C) stay allowed: right-to-left
/// text uses them. Checked here, on new input only, and not by the core's validation, which
/// replicas run again when they apply: an entry a leader of an older version accepted must be
/// applied the same way everywhere.
fn check_display(name: &str, field: impl FnOnce() -> String) -> Result<()> {
    match display_refusal(name) {
        None => Ok(()),
        Some(reason) => Err(Error::invalid(field(), reason)),
    }
}

/// Why [`check_display`] refuses `name`, if it does.
fn display_refusal(name: &str) -> Option<String> {
    const BIDI_CONTROLS: [char; 9] = [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}',
    ];
    // Each of them is encoded in UTF-8 starting with 0xE2: most names are done by one scan.
    if !name.as_bytes().contains(&0xE2) {
        return None;
    }
    let control = name.chars().find(|c| BIDI_CONTROLS.contains(c))?;
    Some(format!(
        "contains the bidirectional control character U+{:04X}, which would change how the name \
         is displayed",
        control as u32
    ))
}

/// A new event; `field` names it in the request, and is built only for an error (an append
/// may carry thousands of events).
fn new_event(event: pb::NewEvent, field: impl Fn() -> String) -> Result<NewEvent> {
    let causation = event
        .causation
        .iter()
        .enumerate()
        .map(|(parent_idx, parent)| {
            parse_event_id(parent, || format!("{}.causation[{parent_idx}]", field()))
        })
        .collect::<Result<_>>()?;
    let optional_id = |text: &str, name: &str| {
        (!text.is_empty())
            .then(|| parse_event_id(text, || format!("{}.{name}", field())))
            .transpose()
    };
    Ok(NewEvent {
        id: optional_id(&event.id, "id")?,
        correlation_id: optional_id(&event.correlation_id, "correlation_id")?,
        causation,
        scope: event.scope,
        entity: event.entity,
        event_type: event.r#type,
        tags: event.tags,
        payload: event.payload,
        content_type: event.content_type,
        metadata: event.metadata,
    })
}

fn expected_version(expected: pb::ExpectedVersion, field: &str) -> Result<Expected> {
    let kind = pb::ExpectedKind::try_from(expected.kind).map_err(|_| {
        Error::invalid(
            format!("{field}.kind"),
            format!("{} is not an ExpectedKind", expected.kind),
        )
    })?;
    let version = match kind {
        pb::ExpectedKind::Unspecified | pb::ExpectedKind::Any => ExpectedVersion::Any,
        pb::ExpectedKind::NoStream => ExpectedVersion::NoStream,
        pb::ExpectedKind::Exists => ExpectedVersion::Exists,
        pb::ExpectedKind::Exact => ExpectedVersion::Exact(Version(expected.version)),
    };
    if kind != pb::ExpectedKind::Exact && expected.version != 0 {
        return Err(Error::invalid(
            format!("{field}.version"),
            format!(
                "{} is set, but only EXPECTED_KIND_EXACT takes a version",
                expected.version
            ),
        ));
    }
    Ok(Expected {
        scope: expected.scope,
        entity: expected.entity,
        version,
    })
}

/// A filter; absent is the empty filter, which matches every event.
pub fn filter(filter: Option<pb::Filter>, field: &str) -> Result<Filter> {
    let Some(filter) = filter else {
        return Ok(Filter::default());
    };
    let filter = Filter {
        scopes: filter.scopes,
        entity_prefix: filter.entity_prefix,
        items: filter
            .items
            .into_iter()
            .map(|item| QueryItem {
                types: item.types,
                tags: item.tags,
            })
            .collect(),
        since: filter
            .since
            .map(|since| timestamp(since, &format!("{field}.since")))
            .transpose()?,
        until: filter
            .until
            .map(|until| timestamp(until, &format!("{field}.until")))
            .transpose()?,
    };
    filter
        .check()
        .map_err(|refusal| Error::field(field, refusal))?;
    Ok(filter)
}

/// The scope and entity a read names, checked as a write checks them (the `$system` scope
/// may be read: it holds the gate definitions, for audit).
pub fn read_entity_names(scope: &str, entity: &str) -> Result<()> {
    check_name("scope", scope, SCOPE_BYTES_MAX, "SCOPE_BYTES_MAX")
        .map_err(|source| Error::refused("scope", source))?;
    check_name("entity", entity, ENTITY_BYTES_MAX, "ENTITY_BYTES_MAX")
        .map_err(|source| Error::refused("entity", source))
}

/// A gate's name, as registering one checks it.
pub fn gate_name(name: &str, field: &str) -> Result<()> {
    check_gate_name(name).map_err(|source| Error::refused(field, source))
}

/// A hybrid timestamp from the wire. The wall time must be whole milliseconds from the epoch
/// to [`Timestamp::WALL_MS_MAX`]: a sub-millisecond `nanos`, a negative `seconds` or a later
/// time is refused naming the part (`{field}.wall.nanos`), never rounded, so a filter means
/// exactly what the client sent. An absent `wall` is the epoch, as protobuf defaults it.
fn timestamp(timestamp: pb::HybridTimestamp, field: &str) -> Result<Timestamp> {
    let wall_ms = match timestamp.wall {
        None => 0,
        Some(wall) => wall_ms(wall, &format!("{field}.wall"))?,
    };
    let logical = u16::try_from(timestamp.logical).map_err(|_| {
        Error::invalid(
            format!("{field}.logical"),
            format!("{} is over {}", timestamp.logical, u16::MAX),
        )
    })?;
    Ok(Timestamp::new(wall_ms, logical))
}

fn wall_ms(wall: prost_types::Timestamp, field: &str) -> Result<u64> {
    let seconds = u64::try_from(wall.seconds).map_err(|_| {
        Error::invalid(
            format!("{field}.seconds"),
            format!("{} is before the epoch", wall.seconds),
        )
    })?;
    if !(0..1_000_000_000).contains(&wall.nanos) || wall.nanos % NANOS_PER_MS != 0 {
        return Err(Error::invalid(
            format!("{field}.nanos"),
            format!(
                "{} is not whole milliseconds below one second (the clock keeps milliseconds)",
                wall.nanos
            ),
        ));
    }
    let millis = u64::try_from(wall.nanos / NANOS_PER_MS).expect("checked non-negative");
    match seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(millis))
    {
        Some(wall_ms) if wall_ms <= Timestamp::WALL_MS_MAX => Ok(wall_ms),
        _ => Err(Error::invalid(
            format!("{field}.seconds"),
            format!(
                "{} s is past the latest wall time, {} ms",
                wall.seconds,
                Timestamp::WALL_MS_MAX
            ),
        )),
    }
}

/// Nanoseconds in one millisecond, the clock's resolution.
const NANOS_PER_MS: i32 = 1_000_000;

/// A read direction; unspecified reads forward.
pub fn direction(value: i32, field: &str) -> Result<Direction> {
    match pb::Direction::try_from(value) {
        Ok(pb::Direction::Unspecified | pb::Direction::Forward) => Ok(Direction::Forward),
        Ok(pb::Direction::Backward) => Ok(Direction::Backward),
        Err(_) => Err(Error::invalid(field, format!("{value} is not a Direction"))),
    }
}

/// A read consistency level; unspecified is linearizable, the safe default.
pub fn consistency(value: i32, field: &str) -> Result<Consistency> {
    match pb::ReadConsistency::try_from(value) {
        Ok(pb::ReadConsistency::Unspecified | pb::ReadConsistency::Linearizable) => {
            Ok(Consistency::Linearizable)
        }
        Ok(pb::ReadConsistency::Leader) => Ok(Consistency::Leader),
        Ok(pb::ReadConsistency::Local) => Ok(Consistency::Local),
        Err(_) => Err(Error::invalid(
            field,
            format!("{value} is not a ReadConsistency"),
        )),
    }
}

/// An event id given as a UUID string.
pub fn event_id(text: &str, field: &str) -> Result<EventId> {
    parse_event_id(text, || field.to_string())
}

/// An event id: a UUID other than the nil one, which names no event. A bad value is repeated
/// in the error only up to `ECHO_CHARS_MAX` characters.
fn parse_event_id(text: &str, field: impl FnOnce() -> String) -> Result<EventId> {
    match uuid::Uuid::parse_str(text) {
        Ok(id) if id.is_nil() => Err(Error::invalid(
            field(),
            "it is the nil UUID, which names no event",
        )),
        Ok(id) => Ok(EventId(id)),
        Err(err) => Err(Error::invalid(
            field(),
            format!("{} is not a UUID: {err}", echo(text)),
        )),
    }
}

fn non_empty(text: String) -> Option<String> {
    if text.is_empty() { None } else { Some(text) }
}

/// A gate definition; the rule is required.
pub fn gate_definition(
    definition: Option<pb::GateDefinition>,
    field: &str,
) -> Result<GateDefinition> {
    use pb::gate_definition::Rule as Wire;
    let definition =
        definition.ok_or_else(|| Error::invalid(field, "a gate definition is required"))?;
    let rule = match definition.rule {
        None => {
            return Err(Error::invalid(
                format!("{field}.rule"),
                "one rule is required",
            ));
        }
        Some(Wire::UniqueTag(rule)) => Rule::UniqueTag {
            prefix: rule.prefix,
        },
        Some(Wire::AllowedTypes(rule)) => Rule::AllowedTypes { types: rule.types },
        Some(Wire::CausationExists(_)) => Rule::CausationExists,
        Some(Wire::RateLimit(rule)) => Rule::RateLimit {
            max_events: rule.max_events,
            window_ms: rule.window_ms,
        },
        Some(Wire::SizeLimit(rule)) => Rule::SizeLimit {
            max_payload_bytes: rule.max_payload_bytes,
        },
        Some(Wire::Cel(rule)) => Rule::Cel {
            expression: rule.expression,
        },
    };
    check_display(&definition.name, || format!("{field}.name"))?;
    match &rule {
        Rule::UniqueTag { prefix } => {
            check_display(prefix, || format!("{field}.unique_tag.prefix"))?;
        }
        Rule::AllowedTypes { types } => {
            for (type_idx, event_type) in types.iter().enumerate() {
                check_display(event_type, || {
                    format!("{field}.allowed_types.types[{type_idx}]")
                })?;
            }
        }
        _ => {}
    }
    for (scope_idx, scope) in definition.scopes.iter().enumerate() {
        check_display(scope, || format!("{field}.scopes[{scope_idx}]"))?;
    }
    for (type_idx, event_type) in definition.types.iter().enumerate() {
        check_display(event_type, || format!("{field}.types[{type_idx}]"))?;
    }
    Ok(GateDefinition {
        name: definition.name,
        scopes: definition.scopes,
        types: definition.types,
        rule,
    })
}

/// A receipt sent back for verification.
pub fn receipt_from_wire(receipt: pb::Receipt, field: &str) -> Result<Receipt> {
    // A receipt names the events of one append, so it can name no more than an append holds;
    // without this bound a small request could make the server load a huge set of events.
    if receipt.events.len() > APPEND_EVENTS_MAX {
        return Err(Error::invalid(
            format!("{field}.events"),
            format!(
                "{} events is over the limit APPEND_EVENTS_MAX = {APPEND_EVENTS_MAX}",
                receipt.events.len()
            ),
        ));
    }
    if receipt.signature_key_id.len() > SIGNATURE_KEY_ID_BYTES_MAX {
        return Err(Error::invalid(
            format!("{field}.signature_key_id"),
            format!(
                "{} bytes, over the limit SIGNATURE_KEY_ID_BYTES_MAX = \
                 {SIGNATURE_KEY_ID_BYTES_MAX}",
                receipt.signature_key_id.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(receipt.events.len());
    if let Some(duplicate) = receipt
        .events
        .iter()
        .position(|committed| !seen.insert(committed.id.as_str()))
    {
        return Err(Error::invalid(
            format!("{field}.events[{duplicate}].id"),
            "it appears twice",
        ));
    }
    let events = receipt
        .events
        .into_iter()
        .enumerate()
        .map(|(event_idx, committed)| {
            let field = format!("{field}.events[{event_idx}]");
            let timestamp = committed
                .timestamp
                .ok_or_else(|| Error::invalid(format!("{field}.timestamp"), "it is required"))?;
            Ok(Committed {
                id: event_id(&committed.id, &format!("{field}.id"))?,
                position: Position(committed.position),
                version: Version(committed.version),
                timestamp: self::timestamp(timestamp, &format!("{field}.timestamp"))?,
                hash: hash(&committed.hash, &format!("{field}.hash"))?,
                prev_hash: hash(&committed.prev_hash, &format!("{field}.prev_hash"))?,
            })
        })
        .collect::<Result<_>>()?;
    let gates = receipt
        .gates
        .into_iter()
        .map(|gate| GatePass {
            name: gate.name,
            version: gate.version,
        })
        .collect();
    let signature = match (
        receipt.signature_key_id.is_empty(),
        receipt.signature.is_empty(),
    ) {
        (true, true) => None,
        (_, false) => Some(Signature {
            key_id: receipt.signature_key_id,
            bytes: receipt.signature.as_slice().try_into().map_err(|_| {
                Error::invalid(
                    format!("{field}.signature"),
                    format!(
                        "{} bytes; an Ed25519 signature has 64",
                        receipt.signature.len()
                    ),
                )
            })?,
        }),
        (false, true) => {
            return Err(Error::invalid(
                format!("{field}.signature"),
                "it is empty but signature_key_id is set",
            ));
        }
    };
    Ok(Receipt {
        events,
        gates,
        digest: hash(&receipt.digest, &format!("{field}.digest"))?,
        signature,
    })
}

fn hash(bytes: &[u8], field: &str) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| Error::invalid(field, format!("{} bytes; a hash has 32", bytes.len())))
}

/// A committed event on the wire.
pub fn event(event: Event) -> pb::Event {
    pb::Event {
        position: event.position.0,
        version: event.version.0,
        timestamp: Some(wire_timestamp(event.timestamp)),
        id: event.id.to_text(),
        scope: event.scope,
        entity: event.entity,
        r#type: event.event_type,
        tags: event.tags,
        payload: event.payload,
        content_type: event.content_type,
        metadata: event.metadata,
        causation: event.causation.into_iter().map(EventId::to_text).collect(),
        correlation_id: event.correlation_id.to_text(),
        hash: event.hash.to_vec(),
    }
}

fn wire_timestamp(timestamp: Timestamp) -> pb::HybridTimestamp {
    let wall_ms = timestamp.wall_ms();
    pb::HybridTimestamp {
        logical: u32::from(timestamp.logical()),
        wall: Some(prost_types::Timestamp {
            seconds: i64::try_from(wall_ms / 1000).expect("below 2^48 / 1000"),
            nanos: i32::try_from(wall_ms % 1000).expect("below 1000") * NANOS_PER_MS,
        }),
    }
}

/// A receipt on the wire.
pub fn receipt(receipt: Receipt) -> pb::Receipt {
    let (signature_key_id, signature) = match receipt.signature {
        Some(signature) => (signature.key_id, signature.bytes.to_vec()),
        None => (String::new(), Vec::new()),
    };
    pb::Receipt {
        events: receipt
            .events
            .into_iter()
            .map(|committed| pb::Committed {
                id: committed.id.to_text(),
                position: committed.position.0,
                version: committed.version.0,
                timestamp: Some(wire_timestamp(committed.timestamp)),
                hash: committed.hash.to_vec(),
                prev_hash: committed.prev_hash.to_vec(),
            })
            .collect(),
        gates: receipt
            .gates
            .into_iter()
            .map(|gate| pb::GatePass {
                name: gate.name,
                version: gate.version,
            })
            .collect(),
        digest: receipt.digest.to_vec(),
        signature_key_id,
        signature,
    }
}

/// A part of the causal graph on the wire, cut to [`crate::limits::READ_BATCH_BYTES_MAX`]
/// (setting `truncated` when cut).
pub fn graph(graph: Graph) -> pb::Graph {
    let mut batches = split_by_bytes(
        graph.nodes.into_iter().map(event).collect(),
        crate::limits::READ_BATCH_BYTES_MAX,
    );
    let cut = batches.len() > 1;
    let nodes = if batches.is_empty() {
        Vec::new()
    } else {
        batches.swap_remove(0)
    };
    let kept: std::collections::HashSet<&str> = nodes.iter().map(|node| node.id.as_str()).collect();
    let edges = graph
        .edges
        .iter()
        .map(|edge| pb::Edge {
            parent: edge.parent.to_text(),
            child: edge.child.to_text(),
        })
        .filter(|edge| kept.contains(edge.parent.as_str()) && kept.contains(edge.child.as_str()))
        .collect();
    pb::Graph {
        nodes,
        edges,
        truncated: graph.truncated || cut,
    }
}

/// A gate in force on the wire.
pub fn registered_gate(gate: RegisteredGate) -> pb::RegisteredGate {
    pb::RegisteredGate {
        name: gate.name,
        version: gate.version,
        definition: gate.definition.map(wire_gate_definition),
    }
}

fn wire_gate_definition(definition: GateDefinition) -> pb::GateDefinition {
    use pb::gate_definition::Rule as Wire;
    let rule = match definition.rule {
        Rule::UniqueTag { prefix } => Wire::UniqueTag(pb::UniqueTagRule { prefix }),
        Rule::AllowedTypes { types } => Wire::AllowedTypes(pb::AllowedTypesRule { types }),
        Rule::CausationExists => Wire::CausationExists(pb::CausationExistsRule {}),
        Rule::RateLimit {
            max_events,
            window_ms,
        } => Wire::RateLimit(pb::RateLimitRule {
            max_events,
            window_ms,
        }),
        Rule::SizeLimit { max_payload_bytes } => {
            Wire::SizeLimit(pb::SizeLimitRule { max_payload_bytes })
        }
        Rule::Cel { expression } => Wire::Cel(pb::CelRule { expression }),
    };
    pb::GateDefinition {
        name: definition.name,
        scopes: definition.scopes,
        types: definition.types,
        rule: Some(rule),
    }
}

/// Splits events, in order, into runs whose encoded size stays within `budget_bytes`. A run
/// holds at least one event, so an event larger than the budget travels alone.
pub fn split_by_bytes(events: Vec<pb::Event>, budget_bytes: usize) -> Vec<Vec<pb::Event>> {
    let mut batches: Vec<Vec<pb::Event>> = Vec::new();
    let mut batch_bytes = 0;
    for event in events {
        // Each event in a repeated field costs its length, a tag byte and a length prefix.
        let event_bytes =
            event.encoded_len() + 1 + prost::length_delimiter_len(event.encoded_len());
        match batches.last_mut() {
            Some(batch) if batch_bytes + event_bytes <= budget_bytes => {
                batch_bytes += event_bytes;
                batch.push(event);
            }
            _ => {
                batch_bytes = event_bytes;
                batches.push(vec![event]);
            }
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_causation_id_names_its_path() {
        let request = pb::AppendRequest {
            events: vec![pb::NewEvent {
                scope: "acme".into(),
                entity: "order-1".into(),
                r#type: "OrderPlaced".into(),
                causation: vec!["not-a-uuid".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        match append(request, "append.") {
            Err(Error::InvalidArgument { field, .. }) => {
                assert_eq!(field, "append.events[0].causation[0]")
            }
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn a_logical_counter_over_16_bits_is_refused() {
        let wire = pb::Filter {
            since: Some(pb::HybridTimestamp {
                wall: None,
                logical: 70_000,
            }),
            ..Default::default()
        };
        match filter(Some(wire), "filter") {
            Err(Error::InvalidArgument { field, .. }) => assert_eq!(field, "filter.since.logical"),
            other => panic!("expected an invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn wall_times_round_trip_in_whole_milliseconds() {
        for wall_ms in [0, 1, 999, 1_700_000_000_123, Timestamp::WALL_MS_MAX] {
            let core = Timestamp::new(wall_ms, 9);
            let wire = wire_timestamp(core);
            assert_eq!(wire.wall.map(|wall| wall.nanos % NANOS_PER_MS), Some(0));
            assert_eq!(timestamp(wire, "t").expect("valid"), core);
        }
    }

    #[test]
    fn wall_times_the_clock_cannot_hold_are_refused_naming_the_part() {
        let refused = |seconds, nanos| {
            let wire = pb::Filter {
                until: Some(pb::HybridTimestamp {
                    wall: Some(prost_types::Timestamp { seconds, nanos }),
                    logical: 0,
                }),
                ..Default::default()
            };
            match filter(Some(wire), "filter") {
                Err(Error::InvalidArgument { field, .. }) => field,
                other => panic!("expected an invalid argument, got {other:?}"),
            }
        };
        assert_eq!(refused(1, 500), "filter.until.wall.nanos");
        assert_eq!(refused(1, -1_000_000), "filter.until.wall.nanos");
        assert_eq!(refused(1, 1_000_000_000), "filter.until.wall.nanos");
        assert_eq!(refused(-1, 0), "filter.until.wall.seconds");
        assert_eq!(refused(i64::MAX, 0), "filter.until.wall.seconds");
    }

    #[test]
    fn split_keeps_order_and_puts_a_large_event_alone() {
        let small = |position| pb::Event {
            position,
            payload: vec![0; 10].into(),
            ..Default::default()
        };
        let large = pb::Event {
            position: 3,
            payload: vec![0; 1000].into(),
            ..Default::default()
        };
        let batches = split_by_bytes(vec![small(1), small(2), large, small(4)], 100);
        let positions: Vec<Vec<u64>> = batches
            .iter()
            .map(|batch| batch.iter().map(|event| event.position).collect())
            .collect();
        assert_eq!(positions, vec![vec![1, 2], vec![3], vec![4]]);
    }
}
