//! CEL gates: a gate whose rule is a Common Expression Language expression.
//!
//! The expression is compiled once, at registration, and evaluated once per bound event of a
//! proposal; it must return `true` for the proposal to pass. CEL has no loops or recursion, and
//! the inputs are bounded (the expression by [`GATE_EXPRESSION_BYTES_MAX`], the payload a gate
//! may see by [`CEL_PAYLOAD_BYTES_MAX`], store facts by [`GATE_FACT_CALLS_MAX`] calls that each
//! count at most [`GATE_COUNT_MAX`] events), so evaluation cost is bounded.
//!
//! Variables:
//! - `event`: a map with `id`, `scope`, `entity`, `type`, `tags` (list), `metadata` (map),
//!   `content_type`, `causation` (list of ids), `correlation_id`, `position`, `version`,
//!   `timestamp_ms`, and `payload`: the decoded JSON when the content type mentions `json` and
//!   the payload parses and fits [`CEL_PAYLOAD_BYTES_MAX`], else `null`.
//! - `entity_version`: the entity's version before this event.
//! - `now_ms`: the proposal's timestamp in wall milliseconds (never the wall clock).
//!
//! Functions (store facts):
//! - `count(query)`: events matching `query`, at most [`GATE_COUNT_MAX`].
//! - `exists(query)`: whether any event matches `query`.
//! - `version(scope, entity)`: an entity's current version.
//!
//! A query is a map with optional keys `scopes`, `types`, `tags` (lists of strings),
//! `entity_prefix` (string) and `after` (a position). Without `scopes` it looks in the event's
//! own scope. Events earlier in the same append are not counted.
//!
//! [`GATE_EXPRESSION_BYTES_MAX`]: crate::limits::GATE_EXPRESSION_BYTES_MAX

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cel::extractors::Arguments;
use cel::objects::Key;
use cel::{Context, Env, ExecutionError, Program, Value};

use crate::error::{Error, Result};
use crate::event::{Event, Position};
use crate::gate::{Denial, Gate, Proposal, View};
use crate::limits::{CEL_PAYLOAD_BYTES_MAX, GATE_COUNT_MAX, GATE_FACT_CALLS_MAX};
use crate::query::{Filter, QueryItem};

/// A compiled CEL gate.
pub struct CelGate {
    expression: String,
    env: Arc<Env>,
    program: Program,
}

impl std::fmt::Debug for CelGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelGate")
            .field("expression", &self.expression)
            .finish()
    }
}

impl CelGate {
    /// Compiles an expression; a syntax error is [`Error::InvalidInput`] with the parser's
    /// message.
    pub fn compile(expression: &str) -> Result<CelGate> {
        let env = Arc::new(Env::stdlib());
        let program = env.compile(expression).map_err(|err| {
            Error::InvalidInput(format!("cel expression does not compile: {err}"))
        })?;
        Ok(CelGate {
            expression: expression.to_string(),
            env,
            program,
        })
    }

    fn evaluate(
        &self,
        proposal: &Proposal<'_>,
        event: &Event,
        view: &Arc<dyn View>,
    ) -> std::result::Result<bool, String> {
        let mut context = Context::with_env(self.env.clone());
        context.add_variable_from_value("event", event_value(event));
        context.add_variable_from_value("entity_version", Value::Int(event.version.0 as i64 - 1));
        context.add_variable_from_value("now_ms", Value::Int(proposal.timestamp.wall_ms() as i64));
        let calls = Arc::new(AtomicUsize::new(0));
        let fact = |calls: &Arc<AtomicUsize>,
                    name: &'static str|
         -> std::result::Result<(), ExecutionError> {
            if calls.fetch_add(1, Ordering::Relaxed) >= GATE_FACT_CALLS_MAX {
                return Err(ExecutionError::function_error(
                    name,
                    format!("more than GATE_FACT_CALLS_MAX = {GATE_FACT_CALLS_MAX} store facts"),
                ));
            }
            Ok(())
        };
        let (count_view, count_calls, scope) = (view.clone(), calls.clone(), event.scope.clone());
        context
            .add_function(
                "count",
                move |Arguments(args): Arguments| -> std::result::Result<Value, ExecutionError> {
                    fact(&count_calls, "count")?;
                    let (filter, after) = query(&args, &scope, "count")?;
                    Ok(Value::Int(
                        count_view.count(&filter, after, GATE_COUNT_MAX) as i64
                    ))
                },
            )
            .map_err(|err| format!("{err:?}"))?;
        let (exists_view, exists_calls, scope) = (view.clone(), calls.clone(), event.scope.clone());
        context
            .add_function(
                "exists",
                move |Arguments(args): Arguments| -> std::result::Result<Value, ExecutionError> {
                    fact(&exists_calls, "exists")?;
                    let (filter, after) = query(&args, &scope, "exists")?;
                    Ok(Value::Bool(exists_view.exists(&filter, after)))
                },
            )
            .map_err(|err| format!("{err:?}"))?;
        let (version_view, version_calls) = (view.clone(), calls);
        context
            .add_function(
                "version",
                move |scope: Arc<String>,
                      entity: Arc<String>|
                      -> std::result::Result<Value, ExecutionError> {
                    fact(&version_calls, "version")?;
                    Ok(Value::Int(version_view.version(&scope, &entity).0 as i64))
                },
            )
            .map_err(|err| format!("{err:?}"))?;
        match self.program.execute(&context) {
            Ok(Value::Bool(passed)) => Ok(passed),
            Ok(other) => Err(format!("expression returned {other:?}, not a bool")),
            Err(err) => Err(format!("{err:?}")),
        }
    }
}

impl Gate for CelGate {
    fn check(
        &self,
        proposal: &Proposal<'_>,
        view: &Arc<dyn View>,
    ) -> std::result::Result<(), Denial> {
        for event in proposal.events {
            let facts = |extra: (&str, String)| {
                let mut facts = BTreeMap::from([
                    ("expression".to_string(), self.expression.clone()),
                    ("event_id".to_string(), event.id.to_string()),
                ]);
                facts.insert(extra.0.to_string(), extra.1);
                facts
            };
            match self.evaluate(proposal, event, view) {
                Ok(true) => {}
                Ok(false) => {
                    let message = format!(
                        "expression is false for event {} ({})",
                        event.id, event.event_type
                    );
                    return Err(Denial {
                        code: "CEL_FALSE".to_string(),
                        message,
                        facts: facts(("type", event.event_type.clone())),
                    });
                }
                Err(why) => {
                    let message = format!("expression failed for event {}: {why}", event.id);
                    return Err(Denial {
                        code: "CEL_ERROR".to_string(),
                        message,
                        facts: facts(("error", why)),
                    });
                }
            }
        }
        Ok(())
    }
}

fn event_value(event: &Event) -> Value {
    let strings = |values: &[String]| {
        Value::List(Arc::new(
            values
                .iter()
                .map(|value| Value::from(value.as_str()))
                .collect(),
        ))
    };
    let metadata: std::collections::HashMap<String, Value> = event
        .metadata
        .iter()
        .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
        .collect();
    let causation: Vec<String> = event.causation.iter().map(ToString::to_string).collect();
    let fields: Vec<(&str, Value)> = vec![
        ("id", Value::from(event.id.to_string())),
        ("scope", Value::from(event.scope.as_str())),
        ("entity", Value::from(event.entity.as_str())),
        ("type", Value::from(event.event_type.as_str())),
        ("tags", strings(&event.tags)),
        ("metadata", Value::from(metadata)),
        ("content_type", Value::from(event.content_type.as_str())),
        ("causation", strings(&causation)),
        (
            "correlation_id",
            Value::from(event.correlation_id.to_string()),
        ),
        ("position", Value::Int(event.position.0 as i64)),
        ("version", Value::Int(event.version.0 as i64)),
        ("timestamp_ms", Value::Int(event.timestamp.wall_ms() as i64)),
        ("payload", payload_value(event)),
    ];
    let map: std::collections::HashMap<String, Value> = fields
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
    Value::from(map)
}

fn payload_value(event: &Event) -> Value {
    if !event.content_type.contains("json") || event.payload.len() > CEL_PAYLOAD_BYTES_MAX {
        return Value::Null;
    }
    serde_json::from_slice::<serde_json::Value>(&event.payload)
        .ok()
        .and_then(|json| cel::to_value(json).ok())
        .unwrap_or(Value::Null)
}

/// Reads a query map argument into a filter and an `after` position.
fn query(
    args: &[Value],
    own_scope: &str,
    function: &str,
) -> std::result::Result<(Filter, Position), ExecutionError> {
    let bad = |why: String| ExecutionError::function_error(function, why);
    let [Value::Map(map)] = args else {
        return Err(bad("takes one map argument".to_string()));
    };
    let strings = |key: &str| -> std::result::Result<Option<Vec<String>>, ExecutionError> {
        match map.map.get(&Key::String(Arc::new(key.to_string()))) {
            None => Ok(None),
            Some(Value::List(values)) => values
                .iter()
                .map(|value| match value {
                    Value::String(text) => Ok(text.to_string()),
                    other => Err(bad(format!("{key} holds {other:?}, not a string"))),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(bad(format!("{key} is {other:?}, not a list"))),
        }
    };
    let scopes = strings("scopes")?.unwrap_or_else(|| vec![own_scope.to_string()]);
    let types = strings("types")?.unwrap_or_default();
    let tags = strings("tags")?.unwrap_or_default();
    let entity_prefix = match map
        .map
        .get(&Key::String(Arc::new("entity_prefix".to_string())))
    {
        None => String::new(),
        Some(Value::String(prefix)) => prefix.to_string(),
        Some(other) => return Err(bad(format!("entity_prefix is {other:?}, not a string"))),
    };
    let after = match map.map.get(&Key::String(Arc::new("after".to_string()))) {
        None => Position(0),
        Some(Value::Int(after)) if *after >= 0 => Position(*after as u64),
        Some(Value::UInt(after)) => Position(*after),
        Some(other) => return Err(bad(format!("after is {other:?}, not a position"))),
    };
    let items = if types.is_empty() && tags.is_empty() {
        Vec::new()
    } else {
        vec![QueryItem { types, tags }]
    };
    let filter = Filter {
        scopes,
        entity_prefix,
        items,
        ..Filter::default()
    };
    filter.validate().map_err(|err| bad(err.to_string()))?;
    Ok((filter, after))
}
