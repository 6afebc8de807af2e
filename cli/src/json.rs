//! The CLI's JSON forms of events, receipts, graphs and gates, and the reverse conversions
//! `verify` needs to read a receipt and events back.
//!
//! Conventions, the same in every command:
//! - hashes, digests and signatures are lowercase hex;
//! - timestamps are `{"wall": "2023-11-14T22:13:20.123Z", "logical": u32}`: the wall time as
//!   RFC 3339 in UTC (protobuf's JSON form of a Timestamp), with milliseconds, or nanoseconds
//!   if a server ever sent finer, so reading it back gives exactly what was received;
//! - an event's payload is given twice: `payload`, the payload as a string when it is valid
//!   UTF-8 (else `null`), for reading and for `jq`; and `payload_base64`, always present and
//!   exact, which is what `verify --offline` reads back (and it refuses an event whose
//!   `payload`, when present, is not those bytes as text, or `null` for bytes that are not UTF-8);
//! - gate rules use the shape of `docs/GATES.md` (`{"kind": "unique_tag", "prefix": ...}`).

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use causeway_client::pb;
use serde_json::{Map, Value, json};

/// An event as JSON.
pub fn event(event: &pb::Event) -> Value {
    json!({
        "position": event.position,
        "version": event.version,
        "timestamp": timestamp(event.timestamp.as_ref()),
        "id": event.id,
        "scope": event.scope,
        "entity": event.entity,
        "type": event.r#type,
        "tags": event.tags,
        "content_type": event.content_type,
        "metadata": event.metadata.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "causation": event.causation,
        "correlation_id": event.correlation_id,
        "hash": hex::encode(&event.hash),
        "payload": std::str::from_utf8(&event.payload).ok(),
        "payload_base64": BASE64.encode(&event.payload),
    })
}

/// Events as a JSON array.
pub fn events(events: &[pb::Event]) -> Value {
    Value::Array(events.iter().map(event).collect())
}

/// A receipt as JSON; [`receipt_from`] reads it back.
pub fn receipt(receipt: &pb::Receipt) -> Value {
    json!({
        "events": receipt.events.iter().map(|committed| json!({
            "id": committed.id,
            "position": committed.position,
            "version": committed.version,
            "timestamp": timestamp(committed.timestamp.as_ref()),
            "hash": hex::encode(&committed.hash),
            "prev_hash": hex::encode(&committed.prev_hash),
        })).collect::<Vec<_>>(),
        "gates": receipt.gates.iter().map(|gate| json!({
            "name": gate.name,
            "version": gate.version,
        })).collect::<Vec<_>>(),
        "digest": hex::encode(&receipt.digest),
        "signature_key_id": receipt.signature_key_id,
        "signature": hex::encode(&receipt.signature),
    })
}

/// A causal graph as JSON.
pub fn graph(graph: &pb::Graph) -> Value {
    json!({
        "nodes": events(&graph.nodes),
        "edges": graph.edges.iter().map(|edge| json!({
            "parent": edge.parent,
            "child": edge.child,
        })).collect::<Vec<_>>(),
        "truncated": graph.truncated,
    })
}

/// A gate in force as JSON.
pub fn gate(gate: &pb::RegisteredGate) -> Value {
    let definition = gate.definition.as_ref();
    json!({
        "name": gate.name,
        "version": gate.version,
        "scopes": definition.map(|definition| definition.scopes.clone()).unwrap_or_default(),
        "types": definition.map(|definition| definition.types.clone()).unwrap_or_default(),
        "rule": definition.and_then(|definition| definition.rule.as_ref()).map(rule),
    })
}

/// A gate rule as JSON, in the shape of `docs/GATES.md`.
pub fn rule(rule: &pb::gate_definition::Rule) -> Value {
    use pb::gate_definition::Rule;
    match rule {
        Rule::UniqueTag(rule) => json!({"kind": "unique_tag", "prefix": rule.prefix}),
        Rule::AllowedTypes(rule) => json!({"kind": "allowed_types", "types": rule.types}),
        Rule::CausationExists(_) => json!({"kind": "causation_exists"}),
        Rule::RateLimit(rule) => json!({
            "kind": "rate_limit",
            "max_events": rule.max_events,
            "window_ms": rule.window_ms,
        }),
        Rule::SizeLimit(rule) => {
            json!({"kind": "size_limit", "max_payload_bytes": rule.max_payload_bytes})
        }
        Rule::Cel(rule) => json!({"kind": "cel", "expression": rule.expression}),
    }
}

fn timestamp(timestamp: Option<&pb::HybridTimestamp>) -> Value {
    let logical = timestamp.map_or(0, |ts| ts.logical);
    let wall = timestamp.and_then(|ts| ts.wall).unwrap_or_default();
    json!({"wall": rfc3339(&wall), "logical": logical})
}

/// A protobuf Timestamp as RFC 3339 in UTC: with milliseconds (`2023-11-14T22:13:20.123Z`),
/// or nanoseconds when it is not whole milliseconds; one outside what RFC 3339 can write is
/// given as seconds and nanoseconds.
pub fn rfc3339(wall: &prost_types::Timestamp) -> String {
    let format = if wall.nanos % 1_000_000 == 0 {
        chrono::SecondsFormat::Millis
    } else {
        chrono::SecondsFormat::Nanos
    };
    u32::try_from(wall.nanos)
        .ok()
        .and_then(|nanos| chrono::DateTime::from_timestamp(wall.seconds, nanos))
        .map_or_else(
            || format!("{} s {} ns after 1970", wall.seconds, wall.nanos),
            |time| time.to_rfc3339_opts(format, true),
        )
}

/// Reads a receipt in the form [`receipt`] writes.
pub fn receipt_from(value: &Value) -> Result<pb::Receipt> {
    let object = object(value, "receipt")?;
    let events = array(object, "events", "receipt")?
        .iter()
        .enumerate()
        .map(|(event_idx, value)| {
            let what = format!("receipt events[{event_idx}]");
            let committed = self::object(value, &what)?;
            Ok(pb::Committed {
                id: string(committed, "id", &what)?,
                position: uint(committed, "position", &what)?,
                version: uint(committed, "version", &what)?,
                timestamp: Some(timestamp_from(committed, &what)?),
                hash: hex_field(committed, "hash", &what)?,
                prev_hash: hex_field(committed, "prev_hash", &what)?,
            })
        })
        .collect::<Result<_>>()?;
    let gates = match object.get("gates") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) => array(object, "gates", "receipt")?
            .iter()
            .enumerate()
            .map(|(gate_idx, value)| {
                let what = format!("receipt gates[{gate_idx}]");
                let gate = self::object(value, &what)?;
                Ok(pb::GatePass {
                    name: string(gate, "name", &what)?,
                    version: uint(gate, "version", &what)?,
                })
            })
            .collect::<Result<_>>()?,
    };
    Ok(pb::Receipt {
        events,
        gates,
        digest: hex_field(object, "digest", "receipt")?,
        signature_key_id: optional_string(object, "signature_key_id", "receipt")?,
        signature: match object.get("signature") {
            None | Some(Value::Null) => Vec::new(),
            Some(_) => hex_field(object, "signature", "receipt")?,
        },
    })
}

/// Reads events as `get`, `read` or `tail` print them: a JSON array of events, an object with
/// an `events` array, a single event, or one event per line.
pub fn events_from(text: &str) -> Result<Vec<pb::Event>> {
    let values: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(values)) => values,
        Ok(Value::Object(object)) => match object.get("events") {
            Some(Value::Array(values)) => values.clone(),
            _ => vec![Value::Object(object)],
        },
        Ok(_) => bail!("expected a JSON array or object of events"),
        Err(whole_err) => text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .enumerate()
            .map(|(line_idx, line)| {
                serde_json::from_str(line).with_context(|| {
                    format!(
                        "neither one JSON document ({whole_err}) nor one per line (line {})",
                        line_idx + 1
                    )
                })
            })
            .collect::<Result<_>>()?,
    };
    values
        .iter()
        .enumerate()
        .map(|(event_idx, value)| event_from(value, &format!("events[{event_idx}]")))
        .collect()
}

/// Reads an event in the form [`event`] writes; the payload comes from `payload_base64`.
pub fn event_from(value: &Value, what: &str) -> Result<pb::Event> {
    let object = object(value, what)?;
    let strings = |key: &str| -> Result<Vec<String>> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(values)) => values
                .iter()
                .map(|value| {
                    value
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("{what}.{key} must hold strings"))
                })
                .collect(),
            Some(_) => bail!("{what}.{key} must be an array"),
        }
    };
    let metadata = match object.get("metadata") {
        None | Some(Value::Null) => Default::default(),
        Some(Value::Object(entries)) => entries
            .iter()
            .map(|(key, value)| {
                value
                    .as_str()
                    .map(|value| (key.clone(), value.to_string()))
                    .ok_or_else(|| anyhow!("{what}.metadata.{key} must be a string"))
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("{what}.metadata must be an object"),
    };
    let payload = match object.get("payload_base64") {
        Some(Value::String(text)) => BASE64
            .decode(text)
            .with_context(|| format!("{what}.payload_base64 is not valid base64"))?,
        _ => bail!("{what}.payload_base64 is missing: the exact payload bytes are needed"),
    };
    // The readable copy is what a person looks at: it must be the bytes that are checked.
    let text = std::str::from_utf8(&payload).ok();
    match object.get("payload") {
        None => {}
        Some(Value::String(shown)) if Some(shown.as_str()) == text => {}
        Some(Value::Null) if text.is_none() => {}
        Some(_) => bail!(
            "{what}.payload is not the payload that {what}.payload_base64 holds: the text \
             shown would not be the bytes checked"
        ),
    }
    Ok(pb::Event {
        position: uint(object, "position", what)?,
        version: uint(object, "version", what)?,
        timestamp: Some(timestamp_from(object, what)?),
        id: string(object, "id", what)?,
        scope: string(object, "scope", what)?,
        entity: string(object, "entity", what)?,
        r#type: string(object, "type", what)?,
        tags: strings("tags")?,
        payload,
        content_type: optional_string(object, "content_type", what)?,
        metadata,
        causation: strings("causation")?,
        correlation_id: string(object, "correlation_id", what)?,
        hash: hex_field(object, "hash", what)?,
    })
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| anyhow!("{what} must be a JSON object"))
}

fn array<'a>(object: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a Vec<Value>> {
    object
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("{what}.{key} must be an array"))
}

fn string(object: &Map<String, Value>, key: &str, what: &str) -> Result<String> {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{what}.{key} must be a string"))
}

fn optional_string(object: &Map<String, Value>, key: &str, what: &str) -> Result<String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(_) => string(object, key, what),
    }
}

fn uint(object: &Map<String, Value>, key: &str, what: &str) -> Result<u64> {
    object
        .get(key)
        .and_then(Value::as_u64)
        .ok_or_else(|| anyhow!("{what}.{key} must be a non-negative integer"))
}

fn timestamp_from(object: &Map<String, Value>, what: &str) -> Result<pb::HybridTimestamp> {
    let what = format!("{what}.timestamp");
    let timestamp = self::object(
        object
            .get("timestamp")
            .ok_or_else(|| anyhow!("{what} is missing"))?,
        &what,
    )?;
    let wall = string(timestamp, "wall", &what)?;
    let wall = chrono::DateTime::parse_from_rfc3339(&wall)
        .with_context(|| format!("{what}.wall is not an RFC 3339 time"))?;
    Ok(pb::HybridTimestamp {
        wall: Some(prost_types::Timestamp {
            seconds: wall.timestamp(),
            nanos: i32::try_from(wall.timestamp_subsec_nanos()).expect("below 2 * 10^9"),
        }),
        logical: u32::try_from(uint(timestamp, "logical", &what)?)
            .map_err(|_| anyhow!("{what}.logical does not fit 32 bits"))?,
    })
}

fn hex_field(object: &Map<String, Value>, key: &str, what: &str) -> Result<Vec<u8>> {
    hex::decode(string(object, key, what)?.trim())
        .with_context(|| format!("{what}.{key} is not hex"))
}

/// Standard base64 (RFC 4648): written with padding, read with or without it. Trailing bits
/// that are not zero are refused, so one text decodes from one byte string only.
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_event() -> pb::Event {
        pb::Event {
            position: 7,
            version: 2,
            timestamp: Some(causeway_client::timestamp::hybrid(1_700_000_000_000, 3)),
            id: "01890a5d-ac96-774b-bcce-b302099a8057".to_string(),
            scope: "acme".to_string(),
            entity: "order-1".to_string(),
            r#type: "OrderPaid".to_string(),
            tags: vec!["customer:42".to_string()],
            payload: vec![0, 159, 146, 150, 255],
            content_type: "application/octet-stream".to_string(),
            metadata: [("k".to_string(), "v".to_string())].into_iter().collect(),
            causation: vec!["01890a5d-ac96-7c4e-9a1f-3d2b8e6f0a11".to_string()],
            correlation_id: "01890a5d-0000-7000-8000-000000000042".to_string(),
            hash: vec![0xab; 32],
        }
    }

    #[test]
    fn payload_base64_is_read_with_or_without_padding_and_refuses_junk() {
        let read = |payload_base64: &str| {
            let mut value = event(&sample_event());
            value["payload_base64"] = Value::String(payload_base64.to_string());
            value.as_object_mut().expect("an object").remove("payload");
            events_from(&value.to_string()).map(|events| events[0].payload.clone())
        };
        assert_eq!(read("Zm9vYg==").expect("padded"), b"foob");
        assert_eq!(read("Zm9vYg").expect("unpadded"), b"foob");
        assert!(read("Zm9v!").is_err());
        assert!(read("Z").is_err());
        assert_eq!(read("Zm9vYg=").expect("part of its padding"), b"foob");
        assert!(
            read("Zm9vYg===").is_err(),
            "more padding than a quantum has"
        );
    }

    #[test]
    fn a_payload_text_that_is_not_the_checked_bytes_is_refused() {
        let text = event(&pb::Event {
            payload: br#"{"total":12}"#.to_vec(),
            ..sample_event()
        });
        let read = |value: &Value| events_from(&value.to_string()).map(|events| events.len());
        assert_eq!(read(&text).expect("as written"), 1);
        let mut edited = text.clone();
        edited["payload"] = Value::String(r#"{"total":99}"#.to_string());
        let refused = read(&edited).expect_err("edited text").to_string();
        assert!(refused.contains("events[0].payload"), "{refused}");
        let mut nulled = text;
        nulled["payload"] = Value::Null;
        assert!(read(&nulled).is_err(), "text bytes shown as binary");
        let mut binary = event(&sample_event());
        binary["payload"] = Value::String("anything".to_string());
        assert!(read(&binary).is_err(), "binary bytes shown as text");
    }

    #[test]
    fn event_json_round_trips_with_a_binary_payload() {
        let original = sample_event();
        let value = event(&original);
        assert_eq!(value["payload"], Value::Null, "not UTF-8, so no text form");
        assert_eq!(value["payload_base64"], "AJ+Slv8=");
        assert_eq!(value["hash"], "ab".repeat(32));
        let text =
            serde_json::to_string(&events(std::slice::from_ref(&original))).expect("serializes");
        assert_eq!(events_from(&text).expect("parses"), vec![original.clone()]);
        // One event per line, as `tail --output json` prints them.
        let lines = format!("{value}\n{value}\n");
        assert_eq!(events_from(&lines).expect("parses").len(), 2);
    }

    #[test]
    fn text_payloads_are_shown_as_text() {
        let value = event(&pb::Event {
            payload: br#"{"total":12}"#.to_vec(),
            ..sample_event()
        });
        assert_eq!(value["payload"], r#"{"total":12}"#);
    }

    #[test]
    fn receipt_json_round_trips() {
        let original = pb::Receipt {
            events: vec![pb::Committed {
                id: "01890a5d-ac96-774b-bcce-b302099a8057".to_string(),
                position: 3,
                version: 1,
                timestamp: Some(causeway_client::timestamp::hybrid(5, 1)),
                hash: vec![1; 32],
                prev_hash: vec![0; 32],
            }],
            gates: vec![pb::GatePass {
                name: "one-email".to_string(),
                version: 1,
            }],
            digest: vec![9; 32],
            signature_key_id: "k1".to_string(),
            signature: vec![4; 64],
        };
        let value = receipt(&original);
        assert_eq!(value["signature"], "04".repeat(64));
        assert_eq!(
            value["events"][0]["timestamp"],
            json!({"wall": "1970-01-01T00:00:00.005Z", "logical": 1})
        );
        assert_eq!(receipt_from(&value).expect("parses"), original);
        let broken = json!({"events": [{"id": "x"}], "digest": ""});
        let error = receipt_from(&broken).expect_err("position is missing");
        assert!(
            error.to_string().contains("receipt events[0].position"),
            "{error}"
        );
    }
}
