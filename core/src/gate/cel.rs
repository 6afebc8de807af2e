//! CEL gates: a gate whose rule is a Common Expression Language expression.
//!
//! The expression is compiled once, at registration, and evaluated once per bound event of a
//! proposal; it must return `true` for the proposal to pass. The `cel` crate parses it; this
//! module checks and evaluates it, because a gate runs on the store's one writer thread and a
//! client must not be able to stop or stall that thread with one:
//!
//! - `compile` parses on a thread of its own with a large stack, refuses an expression nested
//!   deeper than [`GATE_EXPRESSION_DEPTH_MAX`] or larger than [`GATE_EXPRESSION_NODES_MAX`]
//!   nodes (`LimitExceeded`), and refuses undefined names and unknown functions
//!   (`InvalidInput`), so what reaches the writer is shallow and fully resolved.
//! - `eval` charges every step to the append's [`Budget`] of [`GATE_EVAL_STEPS_MAX`], shared
//!   by every gate and every event of the append; exhausting it refuses the append with
//!   `LimitExceeded`. The store facts scan the index with what is left of it.
//!
//! Variables:
//! - `event`: a map with `id`, `scope`, `entity`, `type`, `tags` (list), `metadata` (map),
//!   `content_type`, `causation` (list of ids), `correlation_id`, `position`, `version`,
//!   `timestamp_ms`, and `payload`: the decoded JSON when the content type mentions `json` and
//!   the payload parses and fits [`CEL_PAYLOAD_BYTES_MAX`], else `null`.
//! - `entity_version`: the entity's version before this event.
//! - `now_ms`: the proposal's timestamp in wall milliseconds (never the wall clock).
//!
//! Functions (store facts), at most [`GATE_FACT_CALLS_MAX`] calls per evaluation:
//! - `count(query)`: events matching `query`, at most [`GATE_COUNT_MAX`].
//! - `exists(query)`: whether any event matches `query`.
//! - `version(scope, entity)`: an entity's current version.
//!
//! A query is a map with optional keys `scopes`, `types`, `tags` (lists of strings),
//! `entity_prefix` (string) and `after` (a position). Without `scopes` it looks in the event's
//! own scope. Events earlier in the same append are not counted.
//!
//! [`CEL_PAYLOAD_BYTES_MAX`]: crate::limits::CEL_PAYLOAD_BYTES_MAX
//! [`GATE_COUNT_MAX`]: crate::limits::GATE_COUNT_MAX
//! [`GATE_FACT_CALLS_MAX`]: crate::limits::GATE_FACT_CALLS_MAX
//! [`GATE_EXPRESSION_DEPTH_MAX`]: crate::limits::GATE_EXPRESSION_DEPTH_MAX
//! [`GATE_EXPRESSION_NODES_MAX`]: crate::limits::GATE_EXPRESSION_NODES_MAX
//! [`GATE_EVAL_STEPS_MAX`]: crate::limits::GATE_EVAL_STEPS_MAX

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::Result;
use crate::event::Event;
use crate::gate::{Budget, Denial, Gate, Proposal, View};

mod compile;
mod eval;
mod value;

use eval::{Activation, Fault};
use value::Value;

/// A compiled CEL gate.
pub struct CelGate {
    expression: String,
    program: compile::Program,
}

impl std::fmt::Debug for CelGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CelGate")
            .field("expression", &self.expression)
            .finish()
    }
}

impl CelGate {
    /// Compiles an expression. A syntax error, an undefined name or an unknown function is
    /// [`crate::Error::InvalidInput`] with a short reason; an expression nested too deep or too
    /// large is [`crate::Error::LimitExceeded`] naming the bound.
    pub fn compile(expression: &str) -> Result<CelGate> {
        let program = compile::compile(expression)?;
        Ok(CelGate {
            expression: expression.to_string(),
            program,
        })
    }

    fn evaluate(
        &self,
        proposal: &Proposal<'_>,
        event: &Event,
        view: &Arc<dyn View>,
        budget: &Budget,
    ) -> std::result::Result<bool, Fault> {
        let activation = Activation {
            event,
            entity_version: event.version.0 as i64 - 1,
            now_ms: proposal.timestamp.wall_ms() as i64,
            view: view.as_ref(),
            budget,
        };
        match eval::evaluate(&self.program, &activation)? {
            Value::Bool(passed) => Ok(passed),
            other => Err(Fault::Error(format!(
                "expression returned {}, not a bool",
                value::shown(&other)
            ))),
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
            match self.evaluate(proposal, event, view, proposal.budget) {
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
                Err(Fault::Exhausted) => {
                    // The writer refuses the append with `LimitExceeded` once the budget is
                    // exhausted, whatever this says.
                    let message = format!("evaluation budget exhausted at event {}", event.id);
                    return Err(Denial {
                        code: "GATE_EVAL_STEPS_MAX".to_string(),
                        message,
                        facts: facts(("spent", proposal.budget.spent().to_string())),
                    });
                }
                Err(Fault::Error(why)) => {
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
