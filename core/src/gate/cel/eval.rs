//! The CEL evaluator: walks a compiled [`Program`] for one event, charging every unit of work
//! to the append's [`Budget`] before doing it.
//!
//! The `cel` crate's own interpreter has no notion of a budget and recurses without bound, and
//! one writer thread runs every gate of every append, so this evaluator exists to make three
//! promises the writer relies on:
//!
//! - **Bounded time.** Every node evaluated, every comprehension iteration, every list or map
//!   element built, compared or scanned, every 64 bytes of a string or bytes value built or
//!   scanned, every 8 bytes of JSON payload decoded, the regex work (see [`regex_steps`]) and
//!   every event a `count` or `exists` examines is charged to the budget first; once the
//!   budget is exhausted evaluation stops with [`Fault::Exhausted`], which no `&&`, `||` or
//!   `@not_strictly_false` absorbs. The store facts scan the index with the budget that is left.
//! - **Bounded stack.** Evaluation recurses once per level of the syntax tree, which
//!   compilation bounds by `GATE_EXPRESSION_DEPTH_MAX`, and values nest no deeper than that
//!   plus the JSON decoder's own limit (128).
//! - **Determinism.** The same program, event and store give the same value and spend the same
//!   steps on every machine: maps are ordered, the wall clock is never read (`now_ms` is the
//!   proposal's timestamp), and every cost depends on sizes, never on timing.
//!
//! Errors follow CEL: an evaluation error is a value that `&&` and `||` absorb when the other
//! side decides the result (`false && error` is `false`), and a comprehension's accumulator
//! may hold one.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::compile::{Comprehension, Func, Node, Program, Step, Var};
use super::value::{Key, Type, Value, compare, equal, from_json, map_get, shorten, shown};
use crate::event::{Event, Position};
use crate::gate::{Budget, View};
use crate::limits::{
    CEL_PAYLOAD_BYTES_MAX, CEL_REGEX_BYTES_MAX, CEL_REGEX_CACHE_BYTES, GATE_COUNT_MAX,
    GATE_FACT_CALLS_MAX,
};
use crate::query::{Filter, QueryItem};

/// Bytes of a string or bytes value built, compared or scanned per step.
const STRING_BYTES_PER_STEP: u64 = 64;
/// Bytes of JSON payload decoded per step.
const JSON_BYTES_PER_STEP: u64 = 8;
/// Steps to build a list (an allocation), and per element built or copied.
const LIST_STEPS: u64 = 2;
const LIST_ELEMENT_STEPS: u64 = 2;
/// Steps to build a map, and per entry (an ordered-map insert).
const MAP_STEPS: u64 = 4;
const MAP_ENTRY_STEPS: u64 = 4;
/// Steps per candidate event a `count` or `exists` examines in the index: a seek in each
/// posting list of the query, and for an entity prefix that matches too many entities to
/// resolve one by one, a lookup and comparison of the candidate's entity name (measured at
/// 100 to 130 ns per candidate, four to six times a typical step).
const CANDIDATE_STEPS: u64 = 6;
/// Steps to compile a regular expression whose pattern is computed during evaluation (a
/// literal pattern is compiled once, at registration), plus one step per pattern byte.
const REGEX_COMPILE_STEPS: u64 = 2_000;

/// What stops an evaluation.
#[derive(Debug)]
pub(crate) enum Fault {
    /// The append's budget is spent; the append is refused with `LimitExceeded`.
    Exhausted,
    /// A CEL evaluation error (a missing key, a type mismatch, an overflow).
    Error(String),
}

type Eval<T> = Result<T, Fault>;

/// An evaluation result that may be a CEL error, which logic operators can absorb.
type Soft = Result<Value, String>;

fn error<T>(message: impl Into<String>) -> Eval<T> {
    Err(Fault::Error(message.into()))
}

/// What one evaluation sees: the event, its variables, the store and the budget.
pub(crate) struct Activation<'a> {
    pub(crate) event: &'a Event,
    /// The entity's version before this event.
    pub(crate) entity_version: i64,
    /// The proposal's timestamp in wall milliseconds.
    pub(crate) now_ms: i64,
    pub(crate) view: &'a dyn View,
    pub(crate) budget: &'a Budget,
}

/// Evaluates a program for one event.
pub(crate) fn evaluate(program: &Program, activation: &Activation<'_>) -> Eval<Value> {
    let mut machine = Machine {
        activation,
        locals: Vec::new(),
        fact_calls: 0,
        event: None,
        payload: None,
        payload_null: None,
    };
    match machine.eval(&program.root) {
        // An expression that failed after reading a payload that is null says why it is
        // null: "cannot select field total from null" alone never said the payload was not
        // JSON.
        Err(Fault::Error(why)) => match machine.payload_null {
            Some(note) => Err(Fault::Error(format!(
                "{why} (event.payload is null: {note})"
            ))),
            None => Err(Fault::Error(why)),
        },
        other => other,
    }
}

/// A compiled CEL regular expression: a lazy DFA that gives up rather than thrash.
///
/// A regex engine is linear in its input only while its DFA's states fit its cache; a pattern
/// such as `(?:[a-q][^u-z]{20}x|...)` over 60 KB of random text makes a lazy DFA clear its
/// cache again and again, and the `regex` crate then falls back to an NFA simulation whose cost
/// is the pattern's states times the input: 1.5 s of writer time for one append, inside the
/// step budget (found from outside). So matching runs on `regex-automata`'s lazy DFA alone,
/// with a bounded cache ([`CEL_REGEX_CACHE_BYTES`]) that is cleared at most twice before the
/// search gives up when it builds a state for fewer than 32 bytes of input: then `matches`
/// fails (the gate answers `CEL_ERROR`), the same way on every replica, since the cache's work
/// depends only on the pattern and the input. Unicode word boundaries (`\b`) quit on non-ASCII
/// input in the same way.
#[derive(Debug)]
pub(crate) struct Pattern {
    dfa: regex_automata::hybrid::dfa::DFA,
}

impl Pattern {
    /// Whether the pattern matches anywhere in `text`; an error when the search gave up.
    fn is_match(&self, text: &str) -> Result<bool, String> {
        let mut cache = self.dfa.create_cache();
        let input = regex_automata::Input::new(text).earliest(true);
        self.dfa
            .try_search_fwd(&mut cache, &input)
            .map(|found| found.is_some())
            .map_err(|err| {
                format!(
                    "regular expression gave up on {} bytes of input ({}): its lazy DFA needs \
                     more than CEL_REGEX_CACHE_BYTES = {CEL_REGEX_CACHE_BYTES} bytes",
                    text.len(),
                    shorten(&err.to_string())
                )
            })
    }
}

/// Compiles a regular expression within [`CEL_REGEX_BYTES_MAX`] (its NFA) and
/// [`CEL_REGEX_CACHE_BYTES`] (its lazy DFA's cache).
pub(crate) fn regex(pattern: &str) -> Result<Pattern, String> {
    use regex_automata::hybrid::dfa::DFA;
    use regex_automata::nfa::thompson;
    let dfa = DFA::builder()
        .configure(
            DFA::config()
                .cache_capacity(CEL_REGEX_CACHE_BYTES)
                .minimum_cache_clear_count(Some(2))
                .minimum_bytes_per_state(Some(32)),
        )
        .thompson(thompson::Config::new().nfa_size_limit(Some(CEL_REGEX_BYTES_MAX)))
        .build(pattern)
        .map_err(|err| {
            // The build error's own text is general ("error building NFA"); the cause is below.
            let mut why = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            if why.contains("limit") || why.contains("too big") {
                format!(
                    "regular expression {:?} compiles to more than CEL_REGEX_BYTES_MAX = {CEL_REGEX_BYTES_MAX} bytes",
                    shorten(pattern)
                )
            } else {
                format!(
                    "regular expression {:?} is invalid: {}",
                    shorten(pattern),
                    shorten(why.rsplit(": ").next().unwrap_or_default())
                )
            }
        })?;
    Ok(Pattern { dfa })
}

/// Steps to run a compiled regular expression over `haystack_bytes`: one per byte. A lazy DFA
/// that keeps its states in its cache costs about a nanosecond a byte, but one that keeps
/// rebuilding them (a pattern of many states over random text) costs about 40 ns a byte here,
/// a step's worth (docs/BENCHMARKS.md, "Worst case one client can impose on the writer through
/// a gate"). So a 64 KiB payload can be matched once per append, not a hundred times.
fn regex_steps(haystack_bytes: usize) -> u64 {
    1 + haystack_bytes as u64
}

struct Machine<'a> {
    activation: &'a Activation<'a>,
    /// Comprehension variables by slot; a slot may hold a CEL error.
    locals: Vec<Soft>,
    fact_calls: usize,
    /// The `event` map, built on first use of `event` as a whole.
    event: Option<Value>,
    /// The decoded payload, built on first use.
    payload: Option<Value>,
    /// Why the payload read as null, when it did.
    payload_null: Option<String>,
}

impl Machine<'_> {
    fn charge(&self, steps: u64) -> Eval<()> {
        self.activation
            .budget
            .charge(steps)
            .map_err(|_| Fault::Exhausted)
    }

    fn charge_bytes(&self, bytes: usize) -> Eval<()> {
        self.charge(1 + bytes as u64 / STRING_BYTES_PER_STEP)
    }

    /// CEL equality, charging each comparison before it is made.
    fn equal(&self, left: &Value, right: &Value) -> Eval<bool> {
        let budget = self.activation.budget;
        equal(left, right, &mut |steps| budget.charge(steps).is_ok()).ok_or(Fault::Exhausted)
    }

    /// Evaluates, keeping a CEL error as a value; only exhaustion stops.
    fn soft(&mut self, node: &Node) -> Eval<Soft> {
        match self.eval(node) {
            Ok(value) => Ok(Ok(value)),
            Err(Fault::Error(message)) => Ok(Err(message)),
            Err(Fault::Exhausted) => Err(Fault::Exhausted),
        }
    }

    fn eval(&mut self, node: &Node) -> Eval<Value> {
        self.charge(1)?;
        match node {
            Node::Const(value) => Ok(value.clone()),
            Node::Var(Var::Event) => self.event_map(),
            Node::Var(Var::EntityVersion) => Ok(Value::Int(self.activation.entity_version)),
            Node::Var(Var::NowMs) => Ok(Value::Int(self.activation.now_ms)),
            Node::Local(slot) => self.locals[*slot].clone().map_err(Fault::Error),
            Node::List(elements) => {
                self.charge(LIST_STEPS + LIST_ELEMENT_STEPS * elements.len() as u64)?;
                let mut list = Vec::with_capacity(elements.len());
                for element in elements {
                    list.push(self.eval(element)?);
                }
                Ok(Value::List(Arc::new(list)))
            }
            Node::Map(entries) => {
                self.charge(MAP_STEPS + MAP_ENTRY_STEPS * entries.len() as u64)?;
                let mut map = BTreeMap::new();
                for (key_node, value_node) in entries {
                    let key = self.eval(key_node)?;
                    let Some(key) = key.to_key() else {
                        return error(format!("a map key cannot be {}", shown(&key)));
                    };
                    let value = self.eval(value_node)?;
                    if map.insert(key.clone(), value).is_some() {
                        return error(format!(
                            "map literal has the key {} twice",
                            shown(&key.to_value())
                        ));
                    }
                }
                Ok(Value::Map(Arc::new(map)))
            }
            Node::Select {
                operand,
                field,
                test,
            } => {
                if matches!(**operand, Node::Var(Var::Event)) {
                    // `event.field` builds only that field (and decodes the payload only when
                    // it is the one asked for).
                    self.charge(1)?;
                    return match self.event_field(field)? {
                        Some(value) if !*test => Ok(value),
                        found if *test => Ok(Value::Bool(found.is_some())),
                        _ => error(format!("no such key: {}", shorten(field))),
                    };
                }
                let operand = self.eval(operand)?;
                select(&operand, field, *test)
            }
            Node::And(left, right) => self.logic(left, right, false),
            Node::Or(left, right) => self.logic(left, right, true),
            Node::Not(operand) => match self.eval(operand)? {
                Value::Bool(b) => Ok(Value::Bool(!b)),
                other => error(format!("no such overload: !{}", type_name(&other))),
            },
            Node::NotStrictlyFalse(operand) => match self.soft(operand)? {
                Ok(Value::Bool(false)) => Ok(Value::Bool(false)),
                _ => Ok(Value::Bool(true)),
            },
            Node::Conditional(condition, then, otherwise) => match self.eval(condition)? {
                Value::Bool(true) => self.eval(then),
                Value::Bool(false) => self.eval(otherwise),
                other => error(format!(
                    "a condition must be a bool, not {}",
                    type_name(&other)
                )),
            },
            Node::Call(func, args) => self.call(func, args),
            Node::Comprehension(comprehension) => {
                let base = self.locals.len();
                let result = self.comprehension(comprehension);
                self.locals.truncate(base);
                result
            }
        }
    }

    /// `&&` (when `or` is false) and `||`, commutative over errors as CEL has them: the side
    /// that decides the result wins over an error on the other side.
    fn logic(&mut self, left: &Node, right: &Node, or: bool) -> Eval<Value> {
        let decisive = or;
        let left = self.soft(left)?;
        if matches!(left, Ok(Value::Bool(b)) if b == decisive) {
            return Ok(Value::Bool(decisive));
        }
        let right = self.soft(right)?;
        if matches!(right, Ok(Value::Bool(b)) if b == decisive) {
            return Ok(Value::Bool(decisive));
        }
        let op = if or { "||" } else { "&&" };
        match (left, right) {
            (Ok(Value::Bool(_)), Ok(Value::Bool(_))) => Ok(Value::Bool(!decisive)),
            (Err(message), _) | (Ok(Value::Bool(_)), Err(message)) => error(message),
            (Ok(Value::Bool(_)), Ok(other)) | (Ok(other), _) => {
                error(format!("no such overload: {op} on {}", type_name(&other)))
            }
        }
    }

    fn comprehension(&mut self, comprehension: &Comprehension) -> Eval<Value> {
        let range = self.eval(&comprehension.range)?;
        let items: Vec<Value> = match &range {
            Value::List(list) => {
                self.charge(list.len() as u64)?;
                list.iter().cloned().collect()
            }
            Value::Map(map) => {
                self.charge(map.len() as u64)?;
                map.keys().map(Key::to_value).collect()
            }
            other => {
                return error(format!(
                    "a macro needs a list or map, not {}",
                    type_name(other)
                ));
            }
        };
        drop(range);
        let init = self.soft(&comprehension.init)?;
        let slot = comprehension.slot;
        debug_assert_eq!(
            self.locals.len(),
            slot,
            "slots are assigned in nesting order"
        );
        self.locals.push(init);
        self.locals.push(Ok(Value::Null));
        for item in items {
            self.charge(1)?;
            self.locals[slot + 1] = Ok(item);
            match self.eval(&comprehension.cond)? {
                Value::Bool(true) => {}
                Value::Bool(false) => break,
                other => {
                    return error(format!(
                        "a loop condition must be a bool, not {}",
                        type_name(&other)
                    ));
                }
            }
            match &comprehension.step {
                Step::Push(element) => {
                    let element = self.eval(element)?;
                    self.push(slot, element)?;
                }
                Step::PushIf(filter, element) => match self.eval(filter)? {
                    Value::Bool(true) => {
                        let element = self.eval(element)?;
                        self.push(slot, element)?;
                    }
                    Value::Bool(false) => {}
                    other => {
                        return error(format!(
                            "a filter must be a bool, not {}",
                            type_name(&other)
                        ));
                    }
                },
                Step::Replace(step) => self.locals[slot] = self.soft(step)?,
            }
        }
        self.eval(&comprehension.result)
    }

    /// Appends to the list accumulator in `slot`, in place: the accumulator's only reference
    /// is the slot, since no expression can name it.
    fn push(&mut self, slot: usize, element: Value) -> Eval<()> {
        self.charge(LIST_ELEMENT_STEPS)?;
        match &mut self.locals[slot] {
            Ok(Value::List(list)) => {
                Arc::make_mut(list).push(element);
                Ok(())
            }
            Ok(other) => error(format!("cannot append to {}, not a list", type_name(other))),
            Err(message) => error(message.clone()),
        }
    }

    fn call(&mut self, func: &Func, arg_nodes: &[Node]) -> Eval<Value> {
        let mut args = Vec::with_capacity(arg_nodes.len());
        for node in arg_nodes {
            args.push(self.eval(node)?);
        }
        match (func, args.as_slice()) {
            (Func::Add, [a, b]) => self.add(a, b),
            (Func::Sub | Func::Mul | Func::Div | Func::Rem, [a, b]) => arithmetic(func, a, b),
            (Func::Neg, [a]) => match a {
                Value::Int(i) => i
                    .checked_neg()
                    .map(Value::Int)
                    .ok_or_else(|| Fault::Error("integer overflow in -".to_string())),
                Value::Double(d) => Ok(Value::Double(-d)),
                other => error(format!("no such overload: -{}", type_name(other))),
            },
            (Func::Eq | Func::Ne, [a, b]) => {
                let same = self.equal(a, b)?;
                Ok(Value::Bool(same == matches!(func, Func::Eq)))
            }
            (Func::Lt | Func::Le | Func::Gt | Func::Ge, [a, b]) => {
                self.charge_bytes(a.bytes_len().min(b.bytes_len()))?;
                let Some(ordering) = compare(a, b) else {
                    return error(format!(
                        "no such overload: {} < {}",
                        type_name(a),
                        type_name(b)
                    ));
                };
                Ok(Value::Bool(match func {
                    Func::Lt => ordering.is_lt(),
                    Func::Le => ordering.is_le(),
                    Func::Gt => ordering.is_gt(),
                    _ => ordering.is_ge(),
                }))
            }
            (Func::In, [needle, haystack]) => match haystack {
                Value::List(list) => {
                    for item in list.iter() {
                        if self.equal(needle, item)? {
                            return Ok(Value::Bool(true));
                        }
                    }
                    Ok(Value::Bool(false))
                }
                Value::Map(map) => {
                    self.charge_bytes(needle.bytes_len())?;
                    Ok(Value::Bool(map_get(map, needle).is_some()))
                }
                other => error(format!("no such overload: in {}", type_name(other))),
            },
            (Func::Index, [container, key]) => index(container, key),
            (Func::Size, [value]) => match value {
                Value::String(s) => {
                    self.charge_bytes(s.len())?;
                    Ok(Value::Int(s.chars().count() as i64))
                }
                Value::Bytes(b) => Ok(Value::Int(b.len() as i64)),
                Value::List(list) => Ok(Value::Int(list.len() as i64)),
                Value::Map(map) => Ok(Value::Int(map.len() as i64)),
                other => error(format!("no such overload: size({})", type_name(other))),
            },
            (
                Func::Contains | Func::StartsWith | Func::EndsWith,
                [Value::String(text), Value::String(part)],
            ) => {
                self.charge_bytes(text.len() + part.len())?;
                Ok(Value::Bool(match func {
                    Func::Contains => text.contains(&**part),
                    Func::StartsWith => text.starts_with(&**part),
                    _ => text.ends_with(&**part),
                }))
            }
            (Func::MatchesCompiled(pattern), [Value::String(text), _]) => {
                self.charge(regex_steps(text.len()))?;
                pattern
                    .is_match(text)
                    .map(Value::Bool)
                    .map_err(Fault::Error)
            }
            (Func::Matches, [Value::String(text), Value::String(pattern)]) => {
                self.charge(REGEX_COMPILE_STEPS + pattern.len() as u64)?;
                let compiled = regex(pattern).map_err(Fault::Error)?;
                self.charge(regex_steps(text.len()))?;
                compiled
                    .is_match(text)
                    .map(Value::Bool)
                    .map_err(Fault::Error)
            }
            (Func::ToInt, [value]) => self.convert_int(value),
            (Func::ToUInt, [value]) => self.convert_uint(value),
            (Func::ToDouble, [value]) => match value {
                Value::Int(i) => Ok(Value::Double(*i as f64)),
                Value::UInt(u) => Ok(Value::Double(*u as f64)),
                Value::Double(d) => Ok(Value::Double(*d)),
                Value::String(s) => {
                    self.charge_bytes(s.len())?;
                    s.parse::<f64>()
                        .map(Value::Double)
                        .or_else(|_| error(format!("cannot convert {} to double", shown(value))))
                }
                other => error(format!("no such overload: double({})", type_name(other))),
            },
            (Func::ToString, [value]) => {
                self.charge_bytes(value.bytes_len())?;
                Ok(match value {
                    Value::String(_) => value.clone(),
                    Value::Int(i) => Value::string(&i.to_string()),
                    Value::UInt(u) => Value::string(&u.to_string()),
                    Value::Double(d) => Value::string(&d.to_string()),
                    Value::Bool(b) => Value::string(&b.to_string()),
                    Value::Bytes(b) => match std::str::from_utf8(b) {
                        Ok(text) => Value::string(text),
                        Err(_) => return error("bytes are not valid UTF-8"),
                    },
                    other => {
                        return error(format!("no such overload: string({})", type_name(other)));
                    }
                })
            }
            (Func::ToBytes, [value]) => match value {
                Value::Bytes(_) => Ok(value.clone()),
                Value::String(s) => {
                    self.charge_bytes(s.len())?;
                    Ok(Value::Bytes(Arc::from(s.as_bytes())))
                }
                other => error(format!("no such overload: bytes({})", type_name(other))),
            },
            (Func::ToBool, [value]) => match value {
                Value::Bool(_) => Ok(value.clone()),
                Value::String(s) => match &**s {
                    "true" | "True" | "TRUE" | "t" | "1" => Ok(Value::Bool(true)),
                    "false" | "False" | "FALSE" | "f" | "0" => Ok(Value::Bool(false)),
                    _ => error(format!("cannot convert {} to bool", shown(value))),
                },
                other => error(format!("no such overload: bool({})", type_name(other))),
            },
            (Func::TypeOf, [value]) => Ok(Value::Type(value.type_of())),
            (Func::Dyn, [value]) => Ok(value.clone()),
            (Func::Count | Func::Exists, [query]) => {
                self.fact(func_name(func))?;
                let (filter, after) = self.query(query)?;
                let max = if matches!(func, Func::Count) {
                    GATE_COUNT_MAX
                } else {
                    1
                };
                let budget = self.activation.budget;
                let scan = self.activation.view.count_within(
                    &filter,
                    after,
                    max,
                    budget.remaining() / CANDIDATE_STEPS,
                );
                self.charge(scan.examined * CANDIDATE_STEPS)?;
                if !scan.complete {
                    // Stopped by the budget before it knew the answer: exhaust the budget, so
                    // the append is refused for it rather than judged on a guess.
                    self.charge(budget.remaining() + 1)?;
                }
                Ok(match func {
                    Func::Count => Value::Int(scan.found as i64),
                    _ => Value::Bool(scan.found > 0),
                })
            }
            (Func::Version, [Value::String(scope), Value::String(entity)]) => {
                self.fact("version")?;
                self.charge_bytes(scope.len() + entity.len())?;
                let version = self.activation.view.version(scope, entity);
                Ok(Value::Int(version.0 as i64))
            }
            (func, args) => {
                let types: Vec<&str> = args.iter().map(type_name).collect();
                error(format!(
                    "no such overload: {} on ({})",
                    func_name(func),
                    types.join(", ")
                ))
            }
        }
    }

    fn add(&mut self, a: &Value, b: &Value) -> Eval<Value> {
        match (a, b) {
            (Value::String(x), Value::String(y)) => {
                self.charge_bytes(x.len() + y.len())?;
                let mut joined = String::with_capacity(x.len() + y.len());
                joined.push_str(x);
                joined.push_str(y);
                Ok(Value::String(Arc::from(joined)))
            }
            (Value::Bytes(x), Value::Bytes(y)) => {
                self.charge_bytes(x.len() + y.len())?;
                Ok(Value::Bytes(Arc::from([&x[..], &y[..]].concat())))
            }
            (Value::List(x), Value::List(y)) => {
                self.charge(LIST_STEPS + LIST_ELEMENT_STEPS * (x.len() + y.len()) as u64)?;
                let mut joined = Vec::with_capacity(x.len() + y.len());
                joined.extend(x.iter().cloned());
                joined.extend(y.iter().cloned());
                Ok(Value::List(Arc::new(joined)))
            }
            _ => arithmetic(&Func::Add, a, b),
        }
    }

    fn convert_int(&mut self, value: &Value) -> Eval<Value> {
        let out_of_range = || error(format!("{} is out of the int range", shown(value)));
        match value {
            Value::Int(_) => Ok(value.clone()),
            Value::UInt(u) => i64::try_from(*u)
                .map(Value::Int)
                .or_else(|_| out_of_range()),
            Value::Double(d) => {
                if d.is_finite() && *d > -9.223_372_036_854_776e18 && *d < 9.223_372_036_854_776e18
                {
                    Ok(Value::Int(d.trunc() as i64))
                } else {
                    out_of_range()
                }
            }
            Value::String(s) => {
                self.charge_bytes(s.len())?;
                s.parse::<i64>()
                    .map(Value::Int)
                    .or_else(|_| error(format!("cannot convert {} to int", shown(value))))
            }
            other => error(format!("no such overload: int({})", type_name(other))),
        }
    }

    fn convert_uint(&mut self, value: &Value) -> Eval<Value> {
        let out_of_range = || error(format!("{} is out of the uint range", shown(value)));
        match value {
            Value::UInt(_) => Ok(value.clone()),
            Value::Int(i) => u64::try_from(*i)
                .map(Value::UInt)
                .or_else(|_| out_of_range()),
            Value::Double(d) => {
                if d.is_finite() && *d > -1.0 && *d < 1.844_674_407_370_955_2e19 {
                    Ok(Value::UInt(d.trunc() as u64))
                } else {
                    out_of_range()
                }
            }
            Value::String(s) => {
                self.charge_bytes(s.len())?;
                s.parse::<u64>()
                    .map(Value::UInt)
                    .or_else(|_| error(format!("cannot convert {} to uint", shown(value))))
            }
            other => error(format!("no such overload: uint({})", type_name(other))),
        }
    }

    /// Counts a store-fact call against `GATE_FACT_CALLS_MAX` (per evaluation).
    fn fact(&mut self, name: &str) -> Eval<()> {
        self.fact_calls += 1;
        if self.fact_calls > GATE_FACT_CALLS_MAX {
            return error(format!(
                "{name}: more than GATE_FACT_CALLS_MAX = {GATE_FACT_CALLS_MAX} store facts"
            ));
        }
        Ok(())
    }

    /// Reads a query map into a filter and an `after` position.
    fn query(&mut self, query: &Value) -> Eval<(Filter, Position)> {
        let Value::Map(map) = query else {
            return error(format!("a query must be a map, not {}", type_name(query)));
        };
        self.charge(map.len() as u64)?;
        let get = |key: &str| map.get(&Key::String(Arc::from(key)));
        let strings = |key: &str| -> Eval<Option<Vec<String>>> {
            match get(key) {
                None => Ok(None),
                Some(Value::List(values)) => {
                    self.charge(values.len() as u64)?;
                    values
                        .iter()
                        .map(|value| match value {
                            Value::String(text) => Ok(text.to_string()),
                            other => {
                                error(format!("query {key} holds {}, not a string", shown(other)))
                            }
                        })
                        .collect::<Eval<Vec<_>>>()
                        .map(Some)
                }
                Some(other) => error(format!("query {key} is {}, not a list", shown(other))),
            }
        };
        let scopes =
            strings("scopes")?.unwrap_or_else(|| vec![self.activation.event.scope.clone()]);
        let types = strings("types")?.unwrap_or_default();
        let tags = strings("tags")?.unwrap_or_default();
        let entity_prefix = match get("entity_prefix") {
            None => String::new(),
            Some(Value::String(prefix)) => prefix.to_string(),
            Some(other) => {
                return error(format!(
                    "query entity_prefix is {}, not a string",
                    shown(other)
                ));
            }
        };
        let after = match get("after") {
            None => Position(0),
            Some(Value::Int(after)) if *after >= 0 => Position(*after as u64),
            Some(Value::UInt(after)) => Position(*after),
            Some(other) => {
                return error(format!("query after is {}, not a position", shown(other)));
            }
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
        filter
            .validate()
            .map_err(|err| Fault::Error(shorten(&err.to_string())))?;
        Ok((filter, after))
    }

    /// The whole `event` map, built once per evaluation.
    fn event_map(&mut self) -> Eval<Value> {
        if let Some(event) = &self.event {
            return Ok(event.clone());
        }
        let mut map = BTreeMap::new();
        for field in EVENT_FIELDS {
            let value = self.event_field(field)?.expect("every listed field exists");
            map.insert(Key::String(Arc::from(*field)), value);
        }
        let event = Value::Map(Arc::new(map));
        self.event = Some(event.clone());
        Ok(event)
    }

    /// One field of `event`, charged by its size; `None` for a field it does not have.
    fn event_field(&mut self, field: &str) -> Eval<Option<Value>> {
        let event = self.activation.event;
        let text = |machine: &Machine<'_>, text: &str| -> Eval<Value> {
            machine.charge_bytes(text.len())?;
            Ok(Value::string(text))
        };
        let strings = |machine: &Machine<'_>, values: &mut dyn Iterator<Item = String>| {
            let mut list = Vec::new();
            for value in values {
                machine.charge_bytes(value.len())?;
                list.push(Value::string(&value));
            }
            Ok::<_, Fault>(Value::List(Arc::new(list)))
        };
        Ok(Some(match field {
            "id" => text(self, &event.id.to_string())?,
            "scope" => text(self, &event.scope)?,
            "entity" => text(self, &event.entity)?,
            "type" => text(self, &event.event_type)?,
            "content_type" => text(self, &event.content_type)?,
            "correlation_id" => text(self, &event.correlation_id.to_string())?,
            "tags" => strings(self, &mut event.tags.iter().cloned())?,
            "causation" => strings(self, &mut event.causation.iter().map(ToString::to_string))?,
            "metadata" => {
                let mut map = BTreeMap::new();
                for (key, value) in &event.metadata {
                    self.charge_bytes(key.len() + value.len())?;
                    map.insert(Key::String(Arc::from(key.as_str())), Value::string(value));
                }
                Value::Map(Arc::new(map))
            }
            "position" => Value::Int(event.position.0 as i64),
            "version" => Value::Int(event.version.0 as i64),
            "timestamp_ms" => Value::Int(event.timestamp.wall_ms() as i64),
            "payload" => self.payload()?,
            _ => return Ok(None),
        }))
    }

    /// The payload as decoded JSON when the content type mentions `json`, it fits
    /// `CEL_PAYLOAD_BYTES_MAX` and it parses; else null. Decoded once per evaluation.
    fn payload(&mut self) -> Eval<Value> {
        if let Some(payload) = &self.payload {
            return Ok(payload.clone());
        }
        let event = self.activation.event;
        let payload = if !event.content_type.contains("json") {
            self.payload_null = Some(format!(
                "its content type {:?} does not say JSON",
                shorten(&event.content_type)
            ));
            Value::Null
        } else if event.payload.len() > CEL_PAYLOAD_BYTES_MAX {
            self.payload_null = Some(format!(
                "it is {} bytes, over CEL_PAYLOAD_BYTES_MAX = {CEL_PAYLOAD_BYTES_MAX}",
                event.payload.len()
            ));
            Value::Null
        } else {
            self.charge(1 + event.payload.len() as u64 / JSON_BYTES_PER_STEP)?;
            match serde_json::from_slice::<serde_json::Value>(&event.payload) {
                Ok(json) => {
                    let mut nodes = 0;
                    let value = from_json(&json, &mut nodes);
                    // A JSON node is at least one byte, so the bytes already charged cover
                    // the conversion; charge the nodes too, as elements built.
                    self.charge(nodes)?;
                    value
                }
                Err(err) => {
                    self.payload_null = Some(format!("it is not valid JSON ({err})"));
                    Value::Null
                }
            }
        };
        self.payload = Some(payload.clone());
        Ok(payload)
    }
}

/// The fields of `event`, as the module documentation of `gate::cel` lists them.
const EVENT_FIELDS: &[&str] = &[
    "id",
    "scope",
    "entity",
    "type",
    "tags",
    "metadata",
    "content_type",
    "causation",
    "correlation_id",
    "position",
    "version",
    "timestamp_ms",
    "payload",
];

fn select(operand: &Value, field: &str, test: bool) -> Eval<Value> {
    match operand {
        Value::Map(map) => {
            let found = map.get(&Key::String(Arc::from(field)));
            match (found, test) {
                (_, true) => Ok(Value::Bool(found.is_some())),
                (Some(value), false) => Ok(value.clone()),
                (None, false) => error(format!("no such key: {}", shorten(field))),
            }
        }
        other => error(format!(
            "cannot select field {} from {}",
            shorten(field),
            type_name(other)
        )),
    }
}

fn index(container: &Value, key: &Value) -> Eval<Value> {
    match container {
        Value::List(list) => {
            let idx = match key {
                Value::Int(i) => usize::try_from(*i).ok(),
                Value::UInt(u) => usize::try_from(*u).ok(),
                Value::Double(d) if d.fract() == 0.0 && *d >= 0.0 => Some(*d as usize),
                other => {
                    return error(format!(
                        "a list index must be a number, not {}",
                        type_name(other)
                    ));
                }
            };
            match idx.and_then(|idx| list.get(idx)) {
                Some(value) => Ok(value.clone()),
                None => error(format!(
                    "index {} out of range for a list of {}",
                    shown(key),
                    list.len()
                )),
            }
        }
        Value::Map(map) => match map_get(map, key) {
            Some(value) => Ok(value.clone()),
            None => error(format!("no such key: {}", shown(key))),
        },
        other => error(format!("cannot index {}", type_name(other))),
    }
}

/// `+` on numbers, `-`, `*`, `/` and `%`: both operands of the same numeric type (CEL does not
/// convert implicitly); integer overflow and division by zero are errors.
fn arithmetic(func: &Func, a: &Value, b: &Value) -> Eval<Value> {
    let name = func_name(func);
    let overflow = || Fault::Error(format!("integer overflow in {name}"));
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let (x, y) = (*x, *y);
            if y == 0 && matches!(func, Func::Div | Func::Rem) {
                return error(format!("division by zero in {name}"));
            }
            let result = match func {
                Func::Add => x.checked_add(y),
                Func::Sub => x.checked_sub(y),
                Func::Mul => x.checked_mul(y),
                Func::Div => x.checked_div(y),
                _ => x.checked_rem(y),
            };
            result.map(Value::Int).ok_or_else(overflow)
        }
        (Value::UInt(x), Value::UInt(y)) => {
            let (x, y) = (*x, *y);
            if y == 0 && matches!(func, Func::Div | Func::Rem) {
                return error(format!("division by zero in {name}"));
            }
            let result = match func {
                Func::Add => x.checked_add(y),
                Func::Sub => x.checked_sub(y),
                Func::Mul => x.checked_mul(y),
                Func::Div => x.checked_div(y),
                _ => x.checked_rem(y),
            };
            result.map(Value::UInt).ok_or_else(overflow)
        }
        (Value::Double(x), Value::Double(y)) if !matches!(func, Func::Rem) => {
            Ok(Value::Double(match func {
                Func::Add => x + y,
                Func::Sub => x - y,
                Func::Mul => x * y,
                _ => x / y,
            }))
        }
        _ => error(format!(
            "no such overload: {} {name} {}",
            type_name(a),
            type_name(b)
        )),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value.type_of() {
        Type::Null => "null",
        Type::Bool => "bool",
        Type::Int => "int",
        Type::UInt => "uint",
        Type::Double => "double",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::List => "list",
        Type::Map => "map",
        Type::Meta => "type",
    }
}

fn func_name(func: &Func) -> &'static str {
    match func {
        Func::Add => "+",
        Func::Sub => "-",
        Func::Mul => "*",
        Func::Div => "/",
        Func::Rem => "%",
        Func::Neg => "-",
        Func::Eq => "==",
        Func::Ne => "!=",
        Func::Lt => "<",
        Func::Le => "<=",
        Func::Gt => ">",
        Func::Ge => ">=",
        Func::In => "in",
        Func::Index => "[]",
        Func::Size => "size",
        Func::Contains => "contains",
        Func::StartsWith => "startsWith",
        Func::EndsWith => "endsWith",
        Func::MatchesCompiled(_) | Func::Matches => "matches",
        Func::ToInt => "int",
        Func::ToUInt => "uint",
        Func::ToDouble => "double",
        Func::ToString => "string",
        Func::ToBytes => "bytes",
        Func::ToBool => "bool",
        Func::TypeOf => "type",
        Func::Dyn => "dyn",
        Func::Count => "count",
        Func::Exists => "exists",
        Func::Version => "version",
    }
}
