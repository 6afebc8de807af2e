//! Gates: caller-defined conditions that every write must pass, checked by the writer atomically
//! with the append.
//!
//! A [`Gate`] is a pure, deterministic predicate over a [`Proposal`] (the events as they would
//! be committed) and a read-only [`View`] of the store. It must not read the wall clock or do
//! I/O: time comes from the proposal's timestamp, facts from the view. Because the writer runs
//! gates between taking an append off its queue and writing it, nothing can change between the
//! check and the act, and because every replica runs the same gates over the same log, every
//! replica reaches the same verdict.
//!
//! Gates come from two places: Rust code of an embedder ([`crate::store::Config::gates`]), and
//! [`GateDefinition`]s registered through the log itself (events in the reserved `$system`
//! scope), which name a built-in [`Rule`] or a CEL expression. A definition's version is the
//! position of the event that registered it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::error::{Error, FieldError, Result};
use crate::event::{Event, EventId, Position, Version};
use crate::event::{check_name, check_text};
use crate::limits::{
    GATE_BINDINGS_MAX, GATE_EVAL_STEPS_MAX, GATE_EXPRESSION_BYTES_MAX, GATE_NAME_BYTES_MAX,
    SCOPE_BYTES_MAX, TAG_BYTES_MAX, TYPE_BYTES_MAX,
};
use crate::query::Filter;

pub mod cel;

/// The gate name under which the store's DCB condition check denies an append.
pub const DCB_CHECK: &str = "dcb";
/// The gate name under which the store's causation check denies an append.
pub const CAUSATION_CHECK: &str = "causation";
/// Names a registered gate may not take: the store's own checks deny under them, and a
/// caller's gate of the same name would make its denials look like theirs. A name that looks
/// like one of them is refused too ([`reserved_lookalike`]).
pub const RESERVED_GATE_NAMES: [&str; 2] = [DCB_CHECK, CAUSATION_CHECK];

/// The reserved name `name` would pass for, if any: equal to it once both are reduced to their
/// Unicode confusable skeletons (UTS #39, which also drops invisible characters), lowercased,
/// and reduced again (some capitals have a prototype their lowercase forms lack, such as
/// Cherokee `Ꭰ` for `D`). So `DCB`, `ᎠᏟᏴ`, `dсb` with a Cyrillic `с`, fullwidth `ｄｃｂ` and
/// `dcb` with a zero-width space all answer `dcb`.
pub fn reserved_lookalike(name: &str) -> Option<&'static str> {
    let skeleton =
        |text: &str| -> String { unicode_security::confusable_detection::skeleton(text).collect() };
    let looks = |text: &str| skeleton(&skeleton(text).to_lowercase());
    let name = looks(name);
    RESERVED_GATE_NAMES
        .into_iter()
        .find(|reserved| looks(reserved) == name)
}

/// The events a gate judges, as they would be committed (positions, versions, ids, timestamps
/// and correlation ids assigned; `hash` is not yet computed and is all zeros).
#[derive(Clone, Copy, Debug)]
pub struct Proposal<'a> {
    /// The proposal's timestamp: the only notion of "now" a gate may use.
    pub timestamp: Timestamp,
    /// The events this gate is bound to (its scopes and types), in append order.
    pub events: &'a [&'a Event],
    /// Every event of the append, bound or not. Earlier events of the same append are not yet
    /// in the [`View`]; a gate that counts or looks things up must look here too.
    pub append: &'a [Event],
    /// The evaluation budget of the whole append, shared by every gate and every event it
    /// judges. CEL gates charge each step of their evaluation to it; a Rust gate may charge its
    /// own work, or ignore it.
    pub budget: &'a Budget,
}

impl Proposal<'_> {
    /// The events of the append that come before `event`.
    pub fn earlier(&self, event: &Event) -> impl Iterator<Item = &Event> {
        let position = event.position;
        self.append
            .iter()
            .filter(move |other| other.position < position)
    }
}

/// Work an append's gates may do, in deterministic steps (see
/// [`crate::limits::GATE_EVAL_STEPS_MAX`] for what a step is), shared by every gate that judges
/// the append.
///
/// - Once spent past its maximum it stays exhausted: every further charge fails, and the
///   writer refuses the append with [`Error::LimitExceeded`] naming the bound, whatever the
///   gate answered.
/// - Steps count work, never time, so every replica spends the same steps on the same append.
#[derive(Debug)]
pub struct Budget {
    limit: &'static str,
    max: u64,
    spent: Cell<u64>,
}

/// A charge that took a [`Budget`] past its maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted;

impl Budget {
    /// A budget of `max` steps, reported as the bound named `limit`.
    pub fn new(limit: &'static str, max: u64) -> Budget {
        Budget {
            limit,
            max,
            spent: Cell::new(0),
        }
    }

    /// Spends `steps`; fails once the total passes the maximum (and on every charge after).
    pub fn charge(&self, steps: u64) -> std::result::Result<(), Exhausted> {
        let spent = self.spent.get().saturating_add(steps);
        self.spent.set(spent);
        if spent > self.max {
            return Err(Exhausted);
        }
        Ok(())
    }

    /// Steps spent so far (past the maximum once exhausted).
    pub fn spent(&self) -> u64 {
        self.spent.get()
    }

    /// Steps left before the budget is exhausted.
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.spent.get())
    }

    /// Whether a charge has passed the maximum.
    pub fn is_exhausted(&self) -> bool {
        self.spent.get() > self.max
    }

    /// The error an append gets when its gates exhaust the budget.
    pub fn error(&self, what: String) -> Error {
        Error::LimitExceeded {
            limit: self.limit,
            max: self.max,
            actual: self.spent.get(),
            what,
        }
    }
}

/// What a bounded scan of the index found: see [`View::count_within`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Matching events found, at most the `max` asked for.
    pub found: u64,
    /// Candidate events examined to find them.
    pub examined: u64,
    /// False when the scan stopped at its scan budget before it knew the answer.
    pub complete: bool,
}

/// A read-only view of the store as of just before the proposal. It is valid only during the
/// [`Gate::check`] call it is passed to: it sees events the writer has decided but not yet
/// made durable, which a view kept for later may find unreadable or never committed.
pub trait View: Send + Sync {
    /// The last position in the log before the proposal.
    fn head(&self) -> Position;
    /// The current version of an entity; `Version(0)` when it has no events.
    fn version(&self, scope: &str, entity: &str) -> Version;
    /// The last event of an entity, if any.
    fn last_event(&self, scope: &str, entity: &str) -> Result<Option<Event>>;
    /// How many events after `after` match `filter`, counting no further than `max` and
    /// examining at most `scan_max` candidates from the index. A query on scopes, types and tags
    /// examines only matching events; an entity prefix is checked candidate by candidate, so it
    /// may examine many events per match.
    fn count_within(&self, filter: &Filter, after: Position, max: u64, scan_max: u64) -> Scan;
    /// How many events after `after` match `filter`, counting no further than `max`; exact,
    /// however many candidates it examines.
    fn count(&self, filter: &Filter, after: Position, max: u64) -> u64 {
        self.count_within(filter, after, max, u64::MAX).found
    }
    /// Whether any event after `after` matches `filter`; exact.
    fn exists(&self, filter: &Filter, after: Position) -> bool {
        self.count(filter, after, 1) > 0
    }
    /// Whether an event with this id exists.
    fn event_exists(&self, id: EventId) -> bool;
    /// How many events of an entity have a timestamp at or after `since`.
    fn entity_events_since(&self, scope: &str, entity: &str, since: Timestamp) -> u64;
}

/// Why a gate refused a proposal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Denial {
    /// A stable, machine-readable code in upper snake case (`TAG_TAKEN`).
    pub code: String,
    /// A human-readable explanation with the values that matter.
    pub message: String,
    /// The facts the gate saw, by name (`tag`, `expected`, `actual`).
    pub facts: BTreeMap<String, String>,
}

impl Denial {
    /// A denial with a code, a message and facts given as pairs.
    pub fn new<const N: usize>(
        code: &str,
        message: impl Into<String>,
        facts: [(&str, String); N],
    ) -> Denial {
        Denial {
            code: code.to_string(),
            message: message.into(),
            facts: facts
                .into_iter()
                .map(|(key, value)| (key.to_string(), value))
                .collect(),
        }
    }
}

/// A condition on writes. Implementations must be deterministic: the same proposal and view
/// give the same answer on every replica, at any time.
pub trait Gate: Send + Sync + fmt::Debug {
    /// Accepts the proposal, or denies it with a reason.
    fn check(
        &self,
        proposal: &Proposal<'_>,
        view: &Arc<dyn View>,
    ) -> std::result::Result<(), Denial>;
}

/// A gate as registered through the log: a name, what it is bound to, and its rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GateDefinition {
    /// The gate's name, unique in the store; a new definition with the same name replaces it.
    pub name: String,
    /// The scopes whose events it judges; every scope when empty.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The event types it judges; every type when empty.
    #[serde(default)]
    pub types: Vec<String>,
    /// What it checks.
    pub rule: Rule,
}

/// The rules a registered gate can carry.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rule {
    /// A tag that starts with `prefix` may appear at most once in a scope (`email:` makes every
    /// `email:x` tag unique).
    UniqueTag {
        /// The tag prefix this uniqueness applies to.
        prefix: String,
    },
    /// Only these event types may be written.
    AllowedTypes {
        /// The allowed types.
        types: Vec<String>,
    },
    /// Every causation parent must exist, even when the append marks causation external.
    CausationExists,
    /// At most `max_events` events per entity within any `window_ms`, measured on event
    /// timestamps (never the wall clock).
    RateLimit {
        /// Events allowed in the window, the proposed ones included.
        max_events: u64,
        /// The window length in milliseconds.
        window_ms: u64,
    },
    /// Bounds tighter than the store's own limits.
    SizeLimit {
        /// The largest payload, in bytes.
        max_payload_bytes: u64,
    },
    /// A Common Expression Language expression that must evaluate to `true`; see
    /// [`cel::CelGate`] for the variables and functions it can use.
    Cel {
        /// The expression.
        expression: String,
    },
}

impl GateDefinition {
    /// Checks names and bounds and compiles the rule, so a bad definition is refused at
    /// registration with the reason (for CEL, the parser's message).
    pub fn compile(&self) -> Result<Arc<dyn Gate>> {
        if self.name.is_empty()
            || self.name.len() > GATE_NAME_BYTES_MAX
            || self
                .name
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::InvalidInput(format!(
                "gate name {:?} ({} bytes) must be 1 to {GATE_NAME_BYTES_MAX} bytes without spaces or control characters",
                crate::command::short(&self.name),
                self.name.len()
            )));
        }
        check_names("scopes", &self.scopes, SCOPE_BYTES_MAX, "SCOPE_BYTES_MAX")?;
        if let Some(scope) = self.scopes.iter().find(|scope| scope.starts_with('$')) {
            return Err(Error::InvalidInput(format!(
                "gate scope {:?} is reserved (scopes starting with $)",
                crate::command::short(scope)
            )));
        }
        check_names("types", &self.types, TYPE_BYTES_MAX, "TYPE_BYTES_MAX")?;
        match &self.rule {
            Rule::AllowedTypes { types } => {
                check_names("allowed types", types, TYPE_BYTES_MAX, "TYPE_BYTES_MAX")?;
            }
            Rule::UniqueTag { prefix } if prefix.len() > TAG_BYTES_MAX => {
                return Err(Error::LimitExceeded {
                    limit: "TAG_BYTES_MAX",
                    max: TAG_BYTES_MAX as u64,
                    actual: prefix.len() as u64,
                    what: "unique_tag prefix bytes".to_string(),
                });
            }
            _ => {}
        }
        let gate: Arc<dyn Gate> = match &self.rule {
            Rule::UniqueTag { prefix } => Arc::new(UniqueTag {
                prefix: prefix.clone(),
            }),
            Rule::AllowedTypes { types } => Arc::new(AllowedTypes {
                types: types.clone(),
            }),
            Rule::CausationExists => Arc::new(CausationExists),
            Rule::RateLimit {
                max_events,
                window_ms,
            } => {
                if *window_ms == 0 {
                    return Err(Error::InvalidInput(
                        "rate_limit window_ms must be at least 1".to_string(),
                    ));
                }
                Arc::new(RateLimit {
                    max_events: *max_events,
                    window_ms: *window_ms,
                })
            }
            Rule::SizeLimit { max_payload_bytes } => Arc::new(SizeLimit {
                max_payload_bytes: *max_payload_bytes,
            }),
            Rule::Cel { expression } => {
                if expression.len() > GATE_EXPRESSION_BYTES_MAX {
                    return Err(Error::LimitExceeded {
                        limit: "GATE_EXPRESSION_BYTES_MAX",
                        max: GATE_EXPRESSION_BYTES_MAX as u64,
                        actual: expression.len() as u64,
                        what: format!("gate {} expression bytes", self.name),
                    });
                }
                Arc::new(cel::CelGate::compile(expression)?)
            }
        };
        Ok(gate)
    }

    /// Checks the definition as a new registration must pass, saying which field was refused
    /// (`name`, `scopes[2]`, `allowed_types.types[0]`, `cel.expression`), and compiles it.
    /// Stricter than [`GateDefinition::compile`] alone: each scope and type is checked as an
    /// event's field of its kind (no control characters either), and a `$` scope is refused.
    /// `compile` keeps the rules the log was written under, since every replica compiles
    /// every definition in its log again, and one that no longer compiled would stop it.
    pub fn check(&self) -> Result<Arc<dyn Gate>, FieldError> {
        check_gate_name(&self.name).map_err(|err| FieldError::new("name", err))?;
        if let Some(reserved) = reserved_lookalike(&self.name) {
            let what = if self.name == reserved {
                "is reserved".to_string()
            } else {
                format!("looks like the reserved name {reserved:?}")
            };
            return Err(FieldError::new(
                "name",
                Error::InvalidInput(format!(
                    "gate name {:?} {what}: the store's own {reserved} check denies under it",
                    self.name
                )),
            ));
        }
        let lists: [(&str, &str, &[String], usize, &'static str); 3] = [
            (
                "scopes",
                "gate scope",
                &self.scopes,
                SCOPE_BYTES_MAX,
                "SCOPE_BYTES_MAX",
            ),
            (
                "types",
                "gate type",
                &self.types,
                TYPE_BYTES_MAX,
                "TYPE_BYTES_MAX",
            ),
            (
                "allowed_types.types",
                "gate allowed type",
                match &self.rule {
                    Rule::AllowedTypes { types } => types,
                    _ => &[],
                },
                TYPE_BYTES_MAX,
                "TYPE_BYTES_MAX",
            ),
        ];
        for (field, what, names, max, limit) in lists {
            if names.len() > GATE_BINDINGS_MAX {
                return Err(FieldError::new(
                    field,
                    Error::LimitExceeded {
                        limit: "GATE_BINDINGS_MAX",
                        max: GATE_BINDINGS_MAX as u64,
                        actual: names.len() as u64,
                        what: format!("{what}s"),
                    },
                ));
            }
            for (name_idx, name) in names.iter().enumerate() {
                let refusal = |err| FieldError::new(format!("{field}[{name_idx}]"), err);
                check_name(format_args!("{what} {name_idx}"), name, max, limit).map_err(refusal)?;
                if field == "scopes" && name.starts_with('$') {
                    return Err(refusal(Error::InvalidInput(format!(
                        "gate scope {:?} is reserved (scopes starting with $)",
                        crate::command::short(name)
                    ))));
                }
            }
        }
        let rule_field = match &self.rule {
            Rule::UniqueTag { prefix } => {
                check_text("unique_tag prefix", prefix, TAG_BYTES_MAX, "TAG_BYTES_MAX")
                    .map_err(|err| FieldError::new("unique_tag.prefix", err))?;
                "unique_tag"
            }
            Rule::AllowedTypes { .. } => "allowed_types",
            Rule::CausationExists => "causation_exists",
            Rule::RateLimit { .. } => "rate_limit.window_ms",
            Rule::SizeLimit { .. } => "size_limit",
            Rule::Cel { .. } => "cel.expression",
        };
        // The name and the lists passed stricter checks above, so what is left is the rule's.
        let gate = self
            .compile()
            .map_err(|err| FieldError::new(rule_field, err))?;
        check_cost(&gate, self).map_err(|err| FieldError::new(rule_field, err))?;
        Ok(gate)
    }

    /// Whether the gate judges this event.
    pub fn binds(&self, event: &Event) -> bool {
        (self.scopes.is_empty() || self.scopes.contains(&event.scope))
            && (self.types.is_empty() || self.types.contains(&event.event_type))
    }
}

/// Judges a plain event it binds (its first scope and type, an entity `probe`, stamped now, no
/// payload, tags or metadata) against a store with nothing in it, as registration does: a gate
/// that spends more than [`GATE_EVAL_STEPS_MAX`] steps even there would refuse every append it
/// judges, so it is refused at registration instead, naming the bound. What the gate answers
/// is not looked at; a cost that grows with the event or the store, or that a gate saves only
/// for an event like this one, can show only on an append. Not part of
/// [`GateDefinition::compile`], which gates already in a log must keep passing; it runs where
/// a registration is checked, never where a log is applied, so reading the clock is harmless.
fn check_cost(gate: &Arc<dyn Gate>, definition: &GateDefinition) -> Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64);
    let timestamp = Timestamp::new(now_ms, 0);
    let first = |names: &[String], otherwise: &str| {
        names
            .first()
            .cloned()
            .unwrap_or_else(|| otherwise.to_string())
    };
    let event = Event {
        position: Position(1),
        version: Version(1),
        timestamp,
        id: EventId(uuid::Uuid::from_u128(1)),
        scope: first(&definition.scopes, "probe"),
        entity: "probe".to_string(),
        event_type: first(&definition.types, "Probe"),
        tags: Vec::new(),
        content_type: String::new(),
        metadata: BTreeMap::new(),
        causation: Vec::new(),
        correlation_id: EventId(uuid::Uuid::from_u128(1)),
        hash: [0; 32],
        payload: bytes::Bytes::new(),
    };
    let budget = Budget::new("GATE_EVAL_STEPS_MAX", GATE_EVAL_STEPS_MAX);
    let view: Arc<dyn View> = Arc::new(EmptyView);
    let proposal = Proposal {
        timestamp,
        events: &[&event],
        append: std::slice::from_ref(&event),
        budget: &budget,
    };
    let _ = gate.check(&proposal, &view);
    if budget.is_exhausted() {
        return Err(budget.error(
            "evaluation steps of the gate on a plain event it binds (it would refuse every \
             append it judges)"
                .to_string(),
        ));
    }
    Ok(())
}

/// A store with no events, for [`check_cost`].
struct EmptyView;

impl View for EmptyView {
    fn head(&self) -> Position {
        Position(0)
    }

    fn version(&self, _scope: &str, _entity: &str) -> Version {
        Version(0)
    }

    fn last_event(&self, _scope: &str, _entity: &str) -> Result<Option<Event>> {
        Ok(None)
    }

    fn count_within(&self, _filter: &Filter, _after: Position, _max: u64, _scan_max: u64) -> Scan {
        Scan {
            found: 0,
            examined: 0,
            complete: true,
        }
    }

    fn event_exists(&self, _id: EventId) -> bool {
        false
    }

    fn entity_events_since(&self, _scope: &str, _entity: &str, _since: Timestamp) -> u64 {
        0
    }
}

/// Checks a gate's name, as registering or removing a gate does: 1 to
/// [`GATE_NAME_BYTES_MAX`] bytes, without spaces or control characters.
pub fn check_gate_name(name: &str) -> Result<()> {
    check_name(
        "gate name",
        name,
        GATE_NAME_BYTES_MAX,
        "GATE_NAME_BYTES_MAX",
    )?;
    if name.chars().any(char::is_whitespace) {
        return Err(Error::InvalidInput(format!(
            "gate name {:?} contains a space",
            crate::command::short(name)
        )));
    }
    Ok(())
}

/// A list of names as a denial shows it: the first eight, then how many more.
fn short_list(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
    match names.len().checked_sub(shown.len()) {
        Some(0) | None => shown.join(","),
        Some(more) => format!("{},... ({more} more)", shown.join(",")),
    }
}

/// Checks one list of names of a gate definition: at most [`GATE_BINDINGS_MAX`] of them, each
/// 1 to `max_bytes` bytes (the bound an event's field of the same kind has).
fn check_names(what: &str, names: &[String], max_bytes: usize, limit: &'static str) -> Result<()> {
    if names.len() > GATE_BINDINGS_MAX {
        return Err(Error::LimitExceeded {
            limit: "GATE_BINDINGS_MAX",
            max: GATE_BINDINGS_MAX as u64,
            actual: names.len() as u64,
            what: format!("gate {what}"),
        });
    }
    if let Some(name) = names.iter().find(|name| name.len() > max_bytes) {
        return Err(Error::LimitExceeded {
            limit,
            max: max_bytes as u64,
            actual: name.len() as u64,
            what: format!("bytes of one of the gate {what}"),
        });
    }
    if names.iter().any(String::is_empty) {
        return Err(Error::InvalidInput(format!(
            "gate {what} holds an empty name"
        )));
    }
    Ok(())
}

/// Built-in: a tag with a prefix at most once per scope.
#[derive(Debug)]
struct UniqueTag {
    prefix: String,
}

impl Gate for UniqueTag {
    fn check(
        &self,
        proposal: &Proposal<'_>,
        view: &Arc<dyn View>,
    ) -> std::result::Result<(), Denial> {
        for event in proposal.events {
            for tag in event
                .tags
                .iter()
                .filter(|tag| tag.starts_with(&self.prefix))
            {
                let earlier = proposal
                    .earlier(event)
                    .any(|other| other.scope == event.scope && other.tags.contains(tag));
                let filter = Filter {
                    scopes: vec![event.scope.clone()],
                    items: vec![crate::QueryItem {
                        types: vec![],
                        tags: vec![tag.clone()],
                    }],
                    ..Filter::default()
                };
                if earlier || view.exists(&filter, Position(0)) {
                    let message = format!("tag {tag} is already taken in scope {}", event.scope);
                    return Err(Denial::new(
                        "TAG_TAKEN",
                        message,
                        [("scope", event.scope.clone()), ("tag", tag.clone())],
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Built-in: only listed types.
#[derive(Debug)]
struct AllowedTypes {
    types: Vec<String>,
}

impl Gate for AllowedTypes {
    fn check(
        &self,
        proposal: &Proposal<'_>,
        _view: &Arc<dyn View>,
    ) -> std::result::Result<(), Denial> {
        match proposal
            .events
            .iter()
            .find(|event| !self.types.contains(&event.event_type))
        {
            None => Ok(()),
            Some(event) => {
                let message = format!(
                    "type {} is not allowed in scope {}",
                    event.event_type, event.scope
                );
                Err(Denial::new(
                    "TYPE_NOT_ALLOWED",
                    message,
                    [
                        ("type", event.event_type.clone()),
                        ("allowed", short_list(&self.types)),
                    ],
                ))
            }
        }
    }
}

/// Built-in: every parent exists, in the store or earlier in the append.
#[derive(Debug)]
struct CausationExists;

impl Gate for CausationExists {
    fn check(
        &self,
        proposal: &Proposal<'_>,
        view: &Arc<dyn View>,
    ) -> std::result::Result<(), Denial> {
        for event in proposal.events {
            for parent in &event.causation {
                let in_append = proposal.earlier(event).any(|other| other.id == *parent);
                if !in_append && !view.event_exists(*parent) {
                    let message = format!(
                        "causation parent {parent} of event {} does not exist",
                        event.id
                    );
                    return Err(Denial::new(
                        "CAUSATION_MISSING",
                        message,
                        [("parent", parent.to_string())],
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Built-in: events per entity per window of event time.
#[derive(Debug)]
struct RateLimit {
    max_events: u64,
    window_ms: u64,
}

impl Gate for RateLimit {
    fn check(
        &self,
        proposal: &Proposal<'_>,
        view: &Arc<dyn View>,
    ) -> std::result::Result<(), Denial> {
        let since = Timestamp::new(
            proposal
                .timestamp
                .wall_ms()
                .saturating_sub(self.window_ms - 1),
            0,
        );
        for event in proposal.events {
            let same_entity =
                |other: &&Event| other.scope == event.scope && other.entity == event.entity;
            let in_append = proposal.earlier(event).filter(same_entity).count() as u64 + 1;
            let seen = view.entity_events_since(&event.scope, &event.entity, since) + in_append;
            if seen > self.max_events {
                let message = format!(
                    "entity {} would have {seen} events within {} ms, over {}",
                    event.entity, self.window_ms, self.max_events
                );
                return Err(Denial::new(
                    "RATE_LIMITED",
                    message,
                    [
                        ("entity", event.entity.clone()),
                        ("events", seen.to_string()),
                        ("max_events", self.max_events.to_string()),
                        ("window_ms", self.window_ms.to_string()),
                    ],
                ));
            }
        }
        Ok(())
    }
}

/// Built-in: payload size.
#[derive(Debug)]
struct SizeLimit {
    max_payload_bytes: u64,
}

impl Gate for SizeLimit {
    fn check(
        &self,
        proposal: &Proposal<'_>,
        _view: &Arc<dyn View>,
    ) -> std::result::Result<(), Denial> {
        match proposal
            .events
            .iter()
            .find(|event| event.payload.len() as u64 > self.max_payload_bytes)
        {
            None => Ok(()),
            Some(event) => {
                let message = format!(
                    "payload of {} bytes is over {}",
                    event.payload.len(),
                    self.max_payload_bytes
                );
                Err(Denial::new(
                    "TOO_LARGE",
                    message,
                    [
                        ("payload_bytes", event.payload.len().to_string()),
                        ("max_payload_bytes", self.max_payload_bytes.to_string()),
                    ],
                ))
            }
        }
    }
}
