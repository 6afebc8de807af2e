//! The CLI's human-readable output: aligned tables and `key: value` listings.
//!
//! Everything here returns a `String` so it can be tested without a terminal. Payloads are shown
//! as text when they are valid UTF-8 (control characters escaped, long ones cut with `…`), else
//! as a byte count; `--output json` gives the exact bytes.

use std::fmt::Write as _;

use causeway_client::pb;
use comfy_table::{Table, presets};

use base64::Engine as _;

use crate::json::BASE64;

/// Characters of payload shown in a table cell before it is cut.
pub const PAYLOAD_CELL_CHARS_MAX: usize = 60;
/// Hex digits of a hash shown in a table cell.
pub const HASH_CELL_DIGITS: usize = 16;

/// Columns padded to their widest cell (by display width), two spaces apart, with no lines
/// drawn; the last column is not padded and no line ends in spaces.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_header(header.to_vec())
        .add_rows(rows.iter().cloned());
    let last_column_idx = header.len().saturating_sub(1);
    for (column_idx, column) in table.column_iter_mut().enumerate() {
        let right = if column_idx == last_column_idx { 0 } else { 2 };
        column.set_padding((0, right));
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Events as a table, one row each.
pub fn events(events: &[pb::Event]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            vec![
                event.position.to_string(),
                event.version.to_string(),
                timestamp(event.timestamp.as_ref()),
                event.scope.clone(),
                event.entity.clone(),
                event.r#type.clone(),
                event.id.clone(),
                payload_cell(&event.payload),
            ]
        })
        .collect();
    render(
        &[
            "POSITION",
            "VERSION",
            "TIMESTAMP",
            "SCOPE",
            "ENTITY",
            "TYPE",
            "ID",
            "PAYLOAD",
        ],
        &rows,
    )
}

/// One event on one line, for output that streams (`tail`), where columns cannot be aligned.
pub fn event_line(event: &pb::Event) -> String {
    format!(
        "#{} {} {}/{} v{} {} {} {}",
        event.position,
        timestamp(event.timestamp.as_ref()),
        event.scope,
        event.entity,
        event.version,
        event.r#type,
        event.id,
        payload_cell(&event.payload)
    )
}

/// Every field of one event, one per line.
pub fn event_detail(event: &pb::Event) -> String {
    let mut metadata: Vec<(&String, &String)> = event.metadata.iter().collect();
    metadata.sort();
    let metadata: Vec<String> = metadata
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let payload = match std::str::from_utf8(&event.payload) {
        Ok(text) => text.to_string(),
        Err(_) => format!(
            "({} bytes, not UTF-8; base64 {})",
            event.payload.len(),
            BASE64.encode(&event.payload)
        ),
    };
    let fields = [
        ("id", event.id.clone()),
        ("position", event.position.to_string()),
        ("version", event.version.to_string()),
        ("timestamp", timestamp(event.timestamp.as_ref())),
        ("scope", event.scope.clone()),
        ("entity", event.entity.clone()),
        ("type", event.r#type.clone()),
        ("tags", event.tags.join(", ")),
        ("content type", event.content_type.clone()),
        ("metadata", metadata.join(", ")),
        ("causation", event.causation.join(", ")),
        ("correlation", event.correlation_id.clone()),
        ("hash", hex::encode(&event.hash)),
        ("payload", payload),
    ];
    listing(&fields)
}

/// A receipt: a row per event, then the gates, the digest and the signature.
pub fn receipt(receipt: &pb::Receipt) -> String {
    let rows: Vec<Vec<String>> = receipt
        .events
        .iter()
        .map(|committed| {
            vec![
                committed.position.to_string(),
                committed.version.to_string(),
                timestamp(committed.timestamp.as_ref()),
                committed.id.clone(),
                short_hash(&committed.hash),
            ]
        })
        .collect();
    let mut out = render(&["POSITION", "VERSION", "TIMESTAMP", "ID", "HASH"], &rows);
    let gates: Vec<String> = receipt
        .gates
        .iter()
        .map(|gate| format!("{}@{}", gate.name, gate.version))
        .collect();
    let signature = if receipt.signature.is_empty() {
        "unsigned".to_string()
    } else {
        format!("signed by key {:?}", receipt.signature_key_id)
    };
    out.push_str(&listing(&[
        (
            "gates passed",
            if gates.is_empty() {
                "none".to_string()
            } else {
                gates.join(", ")
            },
        ),
        ("digest", hex::encode(&receipt.digest)),
        ("signature", signature),
    ]));
    out
}

/// The gates in force.
pub fn gates(gates: &[pb::RegisteredGate]) -> String {
    let rows: Vec<Vec<String>> = gates
        .iter()
        .map(|gate| {
            let definition = gate.definition.as_ref();
            let list = |items: Option<&Vec<String>>| match items {
                Some(items) if !items.is_empty() => items.join(","),
                _ => "*".to_string(),
            };
            vec![
                gate.name.clone(),
                gate.version.to_string(),
                list(definition.map(|definition| &definition.scopes)),
                list(definition.map(|definition| &definition.types)),
                definition
                    .and_then(|definition| definition.rule.as_ref())
                    .map_or_else(|| "(built in)".to_string(), rule),
            ]
        })
        .collect();
    render(&["NAME", "VERSION", "SCOPES", "TYPES", "RULE"], &rows)
}

/// A gate rule in one short phrase.
pub fn rule(rule: &pb::gate_definition::Rule) -> String {
    use pb::gate_definition::Rule;
    match rule {
        Rule::UniqueTag(rule) => format!("unique tag {}*", rule.prefix),
        Rule::AllowedTypes(rule) => format!("allowed types {}", rule.types.join(",")),
        Rule::CausationExists(_) => "causation exists".to_string(),
        Rule::RateLimit(rule) => {
            format!("rate limit {} per {} ms", rule.max_events, rule.window_ms)
        }
        Rule::SizeLimit(rule) => format!("max payload {} bytes", rule.max_payload_bytes),
        Rule::Cel(rule) => format!("cel {}", rule.expression),
    }
}

/// `key: value` lines with the values aligned.
pub fn listing(fields: &[(&str, String)]) -> String {
    let width = fields
        .iter()
        .map(|(key, _)| key.len() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (key, value) in fields {
        let key = format!("{key}:");
        let _ = writeln!(out, "{}", format!("{key:<width$} {value}").trim_end());
    }
    out
}

/// A hybrid timestamp's wall clock as RFC 3339 in UTC with milliseconds
/// (`2023-11-14T22:13:20.000Z`). The logical counter, which only orders events within one
/// millisecond (as their positions already do), is in the JSON output.
pub fn timestamp(timestamp: Option<&pb::HybridTimestamp>) -> String {
    crate::json::rfc3339(&timestamp.and_then(|ts| ts.wall).unwrap_or_default())
}

fn short_hash(hash: &[u8]) -> String {
    let mut text = hex::encode(hash);
    text.truncate(HASH_CELL_DIGITS);
    text
}

/// A payload for a table cell: escaped text cut at [`PAYLOAD_CELL_CHARS_MAX`], or a byte count.
fn payload_cell(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => {
            // Only control characters are escaped, so a row stays one line and JSON stays
            // readable.
            let mut escaped = String::with_capacity(text.len());
            for c in text.chars() {
                if c.is_control() {
                    escaped.extend(c.escape_default());
                } else {
                    escaped.push(c);
                }
            }
            if escaped.chars().count() > PAYLOAD_CELL_CHARS_MAX {
                let cut: String = escaped.chars().take(PAYLOAD_CELL_CHARS_MAX - 1).collect();
                format!("{cut}…")
            } else {
                escaped
            }
        }
        Err(_) => format!("({} bytes)", payload.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let text = render(
            &["A", "BB", "C"],
            &[
                vec!["long".into(), "x".into(), "end".into()],
                vec!["s".into(), "yy".into(), "".into()],
            ],
        );
        assert_eq!(text, "A     BB  C\nlong  x   end\ns     yy\n");
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc() {
        let ts = |wall_ms, logical| {
            timestamp(Some(&causeway_client::timestamp::hybrid(wall_ms, logical)))
        };
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(1_700_000_000_123, 0), "2023-11-14T22:13:20.123Z");
        assert_eq!(ts(951_782_400_000, 2), "2000-02-29T00:00:00.000Z");
        assert_eq!(ts(1_900_000_000_123, 5), "2030-03-17T17:46:40.123Z");
        assert_eq!(timestamp(None), "1970-01-01T00:00:00.000Z");
        let past_chrono = pb::HybridTimestamp {
            wall: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            logical: 0,
        };
        assert_eq!(
            timestamp(Some(&past_chrono)),
            format!("{} s 0 ns after 1970", i64::MAX)
        );
    }

    #[test]
    fn payload_cells_escape_cut_and_count() {
        assert_eq!(payload_cell(b"a\nb"), "a\\nb");
        assert_eq!(
            payload_cell(br#"{"a":1}"#),
            r#"{"a":1}"#,
            "quotes stay as they are"
        );
        let long = "x".repeat(100);
        let cell = payload_cell(long.as_bytes());
        assert_eq!(cell.chars().count(), PAYLOAD_CELL_CHARS_MAX);
        assert!(cell.ends_with('…'));
        assert_eq!(payload_cell(&[0xff, 0xfe]), "(2 bytes)");
    }

    #[test]
    fn receipt_lists_events_gates_digest_and_signature() {
        let text = receipt(&pb::Receipt {
            events: vec![pb::Committed {
                id: "id-1".into(),
                position: 12,
                version: 3,
                timestamp: None,
                hash: vec![0xab; 32],
                prev_hash: vec![0; 32],
            }],
            gates: vec![pb::GatePass {
                name: "one-email".into(),
                version: 4,
            }],
            digest: vec![1; 32],
            signature_key_id: "k1".into(),
            signature: vec![2; 64],
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("POSITION  VERSION  TIMESTAMP"),
            "{text}"
        );
        assert!(lines[1].starts_with("12        3        1970-"), "{text}");
        assert!(lines[1].ends_with(&"ab".repeat(8)), "{text}");
        assert_eq!(lines[2], "gates passed: one-email@4");
        assert_eq!(lines[3], format!("digest:       {}", "01".repeat(32)));
        assert_eq!(lines[4], "signature:    signed by key \"k1\"");
    }
}
