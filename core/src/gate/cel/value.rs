//! The values a CEL gate computes with: null, bool, int, uint, double, string, bytes, list, map
//! and type, as the CEL specification defines them.
//!
//! Invariants:
//! - Maps are ordered (`BTreeMap`), so iterating one, printing one or comparing two gives the
//!   same order, and the same step count, on every machine.
//! - Values are shared with `Arc` and never mutated once shared, so a value is cheap to copy
//!   into a variable; the one exception, a comprehension appending to its own accumulator,
//!   happens only while it holds the sole reference.
//! - Equality is CEL's: numbers compare by value across int, uint and double; values of other
//!   different types are unequal rather than an error. Ordering is defined for numbers,
//!   strings, bytes and bools only.
//! - Nothing here holds the budget: the evaluator charges before it calls in, and equality,
//!   whose work depends on the values' shapes, asks the evaluator before each comparison.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A CEL value.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    String(Arc<str>),
    Bytes(Arc<[u8]>),
    List(Arc<Vec<Value>>),
    Map(Arc<BTreeMap<Key, Value>>),
    Type(Type),
}

/// A map key: CEL allows bool, int, uint and string keys.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Bool(bool),
    Int(i64),
    UInt(u64),
    String(Arc<str>),
}

/// The type of a value, as `type(x)` returns it and the type names (`int`, `string`) denote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Type {
    Null,
    Bool,
    Int,
    UInt,
    Double,
    String,
    Bytes,
    List,
    Map,
    /// The type of types: what `type(int)` is.
    Meta,
}

impl Type {
    /// The type a name denotes, for the names CEL predefines.
    pub(crate) fn named(name: &str) -> Option<Type> {
        Some(match name {
            "null_type" => Type::Null,
            "bool" => Type::Bool,
            "int" => Type::Int,
            "uint" => Type::UInt,
            "double" => Type::Double,
            "string" => Type::String,
            "bytes" => Type::Bytes,
            "list" => Type::List,
            "map" => Type::Map,
            "type" => Type::Meta,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Type::Null => "null_type",
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
}

impl Value {
    pub(crate) fn string(text: &str) -> Value {
        Value::String(Arc::from(text))
    }

    pub(crate) fn type_of(&self) -> Type {
        match self {
            Value::Null => Type::Null,
            Value::Bool(_) => Type::Bool,
            Value::Int(_) => Type::Int,
            Value::UInt(_) => Type::UInt,
            Value::Double(_) => Type::Double,
            Value::String(_) => Type::String,
            Value::Bytes(_) => Type::Bytes,
            Value::List(_) => Type::List,
            Value::Map(_) => Type::Map,
            Value::Type(_) => Type::Meta,
        }
    }

    /// The value as a map key, when its type can be one.
    pub(crate) fn to_key(&self) -> Option<Key> {
        match self {
            Value::Bool(b) => Some(Key::Bool(*b)),
            Value::Int(i) => Some(Key::Int(*i)),
            Value::UInt(u) => Some(Key::UInt(*u)),
            Value::String(s) => Some(Key::String(s.clone())),
            _ => None,
        }
    }

    /// Bytes held by a string or bytes value (0 for anything else).
    pub(crate) fn bytes_len(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        }
    }
}

impl Key {
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Key::Bool(b) => Value::Bool(*b),
            Key::Int(i) => Value::Int(*i),
            Key::UInt(u) => Value::UInt(*u),
            Key::String(s) => Value::String(s.clone()),
        }
    }
}

/// Looks a key up in a map, with CEL's numeric equality: `m[1]` finds the key `1u`, and an
/// integral double finds the int or uint key of the same value.
pub(crate) fn map_get<'m>(map: &'m BTreeMap<Key, Value>, key: &Value) -> Option<&'m Value> {
    if let Some(exact) = key.to_key().and_then(|key| map.get(&key)) {
        return Some(exact);
    }
    let (as_int, as_uint) = match key {
        Value::Int(i) => (None, u64::try_from(*i).ok()),
        Value::UInt(u) => (i64::try_from(*u).ok(), None),
        Value::Double(d) if d.fract() == 0.0 => (
            (*d >= -9.223_372_036_854_776e18 && *d < 9.223_372_036_854_776e18).then_some(*d as i64),
            (*d >= 0.0 && *d < 1.844_674_407_370_955_2e19).then_some(*d as u64),
        ),
        _ => (None, None),
    };
    as_int
        .and_then(|i| map.get(&Key::Int(i)))
        .or_else(|| as_uint.and_then(|u| map.get(&Key::UInt(u))))
}

/// CEL equality. `charge` is called with the steps each comparison costs before it is made
/// (one per element, one per 64 bytes of a string or bytes value); once it returns false the
/// comparison stops and the result is `None`.
pub(crate) fn equal(
    left: &Value,
    right: &Value,
    charge: &mut impl FnMut(u64) -> bool,
) -> Option<bool> {
    if !charge(1) {
        return None;
    }
    Some(match (left, right) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::String(a), Value::String(b)) => {
            if !charge((a.len().min(b.len()) / 64) as u64) {
                return None;
            }
            a == b
        }
        (Value::Bytes(a), Value::Bytes(b)) => {
            if !charge((a.len().min(b.len()) / 64) as u64) {
                return None;
            }
            a == b
        }
        (Value::List(a), Value::List(b)) => {
            if a.len() != b.len() {
                return Some(false);
            }
            for (x, y) in a.iter().zip(b.iter()) {
                if !equal(x, y, charge)? {
                    return Some(false);
                }
            }
            true
        }
        (Value::Map(a), Value::Map(b)) => {
            if a.len() != b.len() {
                return Some(false);
            }
            for (key, value) in a.iter() {
                match b.get(key) {
                    Some(other) if equal(value, other, charge)? => {}
                    _ => return Some(false),
                }
            }
            true
        }
        (Value::Type(a), Value::Type(b)) => a == b,
        _ => compare_numbers(left, right) == Some(Ordering::Equal),
    })
}

/// CEL ordering, for `<`, `<=`, `>` and `>=`; `None` when the two cannot be ordered.
pub(crate) fn compare(left: &Value, right: &Value) -> Option<Ordering> {
    match (left, right) {
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
        _ => compare_numbers(left, right),
    }
}

/// Orders two numbers of any numeric types by value; NaN is unordered.
fn compare_numbers(left: &Value, right: &Value) -> Option<Ordering> {
    match (left, right) {
        (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
        (Value::UInt(a), Value::UInt(b)) => Some(a.cmp(b)),
        (Value::Int(a), Value::UInt(b)) => Some(i128::from(*a).cmp(&i128::from(*b))),
        (Value::UInt(a), Value::Int(b)) => Some(i128::from(*a).cmp(&i128::from(*b))),
        (Value::Double(a), Value::Double(b)) => a.partial_cmp(b),
        (Value::Double(a), Value::Int(b)) => compare_double_int(*a, i128::from(*b)),
        (Value::Double(a), Value::UInt(b)) => compare_double_int(*a, i128::from(*b)),
        (Value::Int(a), Value::Double(b)) => {
            compare_double_int(*b, i128::from(*a)).map(Ordering::reverse)
        }
        (Value::UInt(a), Value::Double(b)) => {
            compare_double_int(*b, i128::from(*a)).map(Ordering::reverse)
        }
        _ => None,
    }
}

/// Compares a double with an integer exactly (no rounding of the integer to a double).
fn compare_double_int(double: f64, int: i128) -> Option<Ordering> {
    if double.is_nan() {
        return None;
    }
    // Every i64 and u64 lies strictly inside ±2^127, so an infinite or huge double is ordered
    // by its sign alone; otherwise compare the integral part, then the fraction.
    if double >= 1.7e38 {
        return Some(Ordering::Greater);
    }
    if double <= -1.7e38 {
        return Some(Ordering::Less);
    }
    let whole = double.trunc() as i128;
    match whole.cmp(&int) {
        Ordering::Equal if double.fract() > 0.0 => Some(Ordering::Greater),
        Ordering::Equal if double.fract() < 0.0 => Some(Ordering::Less),
        other => Some(other),
    }
}

/// At most this many bytes of a value are shown in an error message: values come from clients.
const SHOWN_BYTES_MAX: usize = 64;

/// A short rendering of a value for error messages, cut at [`SHOWN_BYTES_MAX`] bytes.
pub(crate) fn shown(value: &Value) -> String {
    let mut text = String::new();
    let _ = write_value(&mut text, value);
    shorten(&text)
}

/// Cuts client text to [`SHOWN_BYTES_MAX`] bytes on a character boundary, marking the cut.
pub(crate) fn shorten(text: &str) -> String {
    if text.len() <= SHOWN_BYTES_MAX {
        return text.to_string();
    }
    let mut end = SHOWN_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Writes a value, stopping early once well past what [`shown`] keeps.
fn write_value(out: &mut String, value: &Value) -> fmt::Result {
    use fmt::Write;
    if out.len() > SHOWN_BYTES_MAX {
        return Ok(());
    }
    match value {
        Value::Null => out.write_str("null"),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Int(i) => write!(out, "{i}"),
        Value::UInt(u) => write!(out, "{u}u"),
        Value::Double(d) => write!(out, "{d:?}"),
        Value::String(s) => write!(out, "{:?}", &s[..floor_boundary(s, SHOWN_BYTES_MAX + 1)]),
        Value::Bytes(b) => write!(out, "b{:?}", &b[..b.len().min(SHOWN_BYTES_MAX + 1)]),
        Value::Type(t) => out.write_str(t.name()),
        Value::List(list) => {
            out.write_char('[')?;
            for (idx, item) in list.iter().enumerate() {
                if out.len() > SHOWN_BYTES_MAX {
                    break;
                }
                if idx > 0 {
                    out.write_str(", ")?;
                }
                write_value(out, item)?;
            }
            out.write_char(']')
        }
        Value::Map(map) => {
            out.write_char('{')?;
            for (idx, (key, item)) in map.iter().enumerate() {
                if out.len() > SHOWN_BYTES_MAX {
                    break;
                }
                if idx > 0 {
                    out.write_str(", ")?;
                }
                write_value(out, &key.to_value())?;
                out.write_str(": ")?;
                write_value(out, item)?;
            }
            out.write_char('}')
        }
    }
}

/// The largest character boundary of `text` at or below `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    let mut end = at.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Converts decoded JSON into a value: objects become maps with string keys, non-negative
/// integers uint, negative integers int and other numbers double (as the `cel` crate's
/// conversion did, so gates registered before keep their verdicts). Returns the value and the
/// nodes converted.
pub(crate) fn from_json(json: &serde_json::Value, nodes: &mut u64) -> Value {
    *nodes += 1;
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(number) => {
            if let Some(u) = number.as_u64() {
                Value::UInt(u)
            } else if let Some(i) = number.as_i64() {
                Value::Int(i)
            } else {
                Value::Double(number.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::string(s),
        serde_json::Value::Array(items) => Value::List(Arc::new(
            items.iter().map(|item| from_json(item, nodes)).collect(),
        )),
        serde_json::Value::Object(fields) => Value::Map(Arc::new(
            fields
                .iter()
                .map(|(key, item)| (Key::String(Arc::from(key.as_str())), from_json(item, nodes)))
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_value_across_types() {
        let eq = |a: &Value, b: &Value| equal(a, b, &mut |_| true).expect("unbounded");
        assert!(eq(&Value::Int(1), &Value::UInt(1)));
        assert!(eq(&Value::Double(1.0), &Value::Int(1)));
        assert!(!eq(&Value::Double(1.5), &Value::Int(1)));
        assert!(!eq(&Value::Int(-1), &Value::UInt(u64::MAX)));
        assert!(!eq(&Value::string("1"), &Value::Int(1)));
        assert_eq!(
            compare(&Value::Double(-0.5), &Value::Int(0)),
            Some(Ordering::Less)
        );
        assert_eq!(
            compare(&Value::Double(f64::INFINITY), &Value::UInt(u64::MAX)),
            Some(Ordering::Greater)
        );
        assert_eq!(compare(&Value::Double(f64::NAN), &Value::Int(0)), None);
    }

    #[test]
    fn shown_values_are_short() {
        let long = Value::string(&"é".repeat(1000));
        assert!(shown(&long).len() <= SHOWN_BYTES_MAX + 8);
        let list = Value::List(Arc::new(vec![long; 1000]));
        assert!(shown(&list).len() <= SHOWN_BYTES_MAX + 8);
    }
}
