//! Compiling a CEL expression: parse it with the `cel` crate's parser, check it against the
//! gate bounds, and lower it into the [`Node`] tree the evaluator walks.
//!
//! The parser (ANTLR-generated) recurses once per nesting level of the source, as do the
//! conversion of its parse tree, the drop of a deep tree, and any walk of the resulting AST.
//! A 4 KiB expression can nest 4,000 levels (`((((1))))`, `!!!!true`, `1+1+...+1`), which
//! overflows a normal thread's stack and aborts the process. So everything that touches the
//! unchecked input runs on a thread of its own with [`PARSE_STACK_BYTES`] of stack, joined
//! at once: the parse, the depth check (iterative), the lowering, and the drop of the `cel`
//! AST. Only a [`Node`] tree no deeper than [`GATE_EXPRESSION_DEPTH_MAX`] leaves that thread,
//! so every later walk of it (evaluation, drop) is shallow enough for any thread.
//!
//! The lowering resolves what can be known before evaluation, and refuses at registration
//! what could only fail later:
//! - every name is a variable (`event`, `entity_version`, `now_ms`), a type name (`int`), or
//!   a comprehension variable in scope: anything else is an undefined name;
//! - every call is a function the evaluator implements, with an arity it accepts;
//! - `matches` with a literal pattern compiles the regular expression now, bounded by
//!   [`CEL_REGEX_BYTES_MAX`].
//!
//! Error messages quote at most a short prefix of the client's text.

use std::sync::Arc;

use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, operators,
};

use super::value::{Type, Value, shorten};
use crate::error::{Error, Result};
#[cfg(doc)]
use crate::limits::CEL_REGEX_BYTES_MAX;
use crate::limits::{GATE_EXPRESSION_DEPTH_MAX, GATE_EXPRESSION_NODES_MAX};

/// Stack of the parsing thread. Measured on 4 KiB inputs of every nesting shape (parentheses,
/// lists, maps, calls, unary minus and not, selections, indexes, arithmetic chains,
/// ternaries): a debug build needs up to 16 MiB, a release build under 1 MiB. The memory is
/// reserved, not touched, until the parser uses it.
const PARSE_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of the parser's message kept in an error: a syntax error lists every token it
/// expected, and a 4 KiB input can yield tens of KiB of messages.
const PARSE_MESSAGE_BYTES_MAX: usize = 160;

/// A compiled expression, ready to evaluate.
#[derive(Debug)]
pub(crate) struct Program {
    pub(crate) root: Node,
}

/// A node of a compiled expression. Names are resolved: variables to [`Var`], functions to
/// [`Func`]; comprehension variables to slots.
#[derive(Debug)]
pub(crate) enum Node {
    Const(Value),
    Var(Var),
    /// A comprehension variable: the index of its slot in the evaluator's local stack.
    Local(usize),
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// `operand.field`, or `has(operand.field)` when `test`.
    Select {
        operand: Box<Node>,
        field: Arc<str>,
        test: bool,
    },
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Conditional(Box<Node>, Box<Node>, Box<Node>),
    /// The loop condition of `all` and `exists`: true unless its operand is exactly false.
    NotStrictlyFalse(Box<Node>),
    /// A function or operator; a member call's target is the first argument.
    Call(Func, Vec<Node>),
    Comprehension(Box<Comprehension>),
}

/// The variables an expression can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Var {
    Event,
    EntityVersion,
    NowMs,
}

/// The functions and operators the evaluator implements.
#[derive(Debug)]
pub(crate) enum Func {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Neg,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Index,
    Size,
    Contains,
    StartsWith,
    EndsWith,
    /// `matches` with a pattern known at registration, compiled then.
    MatchesCompiled(Arc<super::eval::Pattern>),
    /// `matches` with a pattern computed at evaluation, compiled then (and charged for).
    Matches,
    ToInt,
    ToUInt,
    ToDouble,
    ToString,
    ToBytes,
    ToBool,
    TypeOf,
    Dyn,
    Count,
    Exists,
    Version,
}

/// A comprehension (what the macros `all`, `exists`, `exists_one`, `map` and `filter` expand
/// into). Inside `cond`, `step` and `result` the accumulator is in slot `slot` and the element
/// in slot `slot + 1`.
#[derive(Debug)]
pub(crate) struct Comprehension {
    pub(crate) range: Node,
    pub(crate) init: Node,
    pub(crate) slot: usize,
    pub(crate) cond: Node,
    pub(crate) step: Step,
    pub(crate) result: Node,
}

/// How a comprehension's accumulator changes per element.
#[derive(Debug)]
pub(crate) enum Step {
    /// `@result + [element]` (from `map`): appended in place rather than copied each time.
    Push(Node),
    /// `filter ? @result + [element] : @result` (from `map` with a filter, and `filter`).
    PushIf(Node, Node),
    /// Any other step: the accumulator becomes the value.
    Replace(Node),
}

/// Parses, checks and lowers an expression, on a thread with a stack large enough for any
/// input of at most `GATE_EXPRESSION_BYTES_MAX` bytes.
pub(crate) fn compile(expression: &str) -> Result<Program> {
    let source = expression.to_string();
    let parser = std::thread::Builder::new()
        .name("causeway-cel-compile".to_string())
        .stack_size(PARSE_STACK_BYTES)
        .spawn(move || compile_here(&source))
        .map_err(|err| Error::InvalidInput(format!("cel expression not compiled: {err}")))?;
    match parser.join() {
        Ok(compiled) => compiled,
        // The parser is third-party code; a panic in it refuses the expression, nothing more.
        Err(_) => Err(Error::InvalidInput(
            "cel expression does not compile: the parser failed on it".to_string(),
        )),
    }
}

/// [`compile`]'s body; the deep trees it builds are dropped before it returns.
fn compile_here(source: &str) -> Result<Program> {
    let parsed = cel::parser::Parser::new()
        .max_recursion_depth(u16::try_from(GATE_EXPRESSION_DEPTH_MAX).expect("a small bound"))
        .parse(source);
    let ast = match parsed {
        Ok(ast) => ast,
        Err(errors) => return Err(parse_error(source, &errors)),
    };
    let (depth, n_nodes) = measure(&ast);
    if depth > GATE_EXPRESSION_DEPTH_MAX {
        return Err(too_deep(depth as u64));
    }
    if n_nodes > GATE_EXPRESSION_NODES_MAX {
        return Err(Error::LimitExceeded {
            limit: "GATE_EXPRESSION_NODES_MAX",
            max: GATE_EXPRESSION_NODES_MAX as u64,
            actual: n_nodes as u64,
            what: "cel expression syntax nodes".to_string(),
        });
    }
    let root = Lowering { locals: Vec::new() }.lower(&ast)?;
    Ok(Program { root })
}

fn too_deep(actual: u64) -> Error {
    Error::LimitExceeded {
        limit: "GATE_EXPRESSION_DEPTH_MAX",
        max: GATE_EXPRESSION_DEPTH_MAX as u64,
        actual,
        what: "cel expression nesting depth".to_string(),
    }
}

/// A short report of the parser's first error: its position, the start of its message, and
/// the source just before the position.
fn parse_error(source: &str, errors: &cel::ParseErrors) -> Error {
    let Some(first) = errors.errors.first() else {
        return Error::InvalidInput("cel expression does not compile".to_string());
    };
    if errors
        .errors
        .iter()
        .any(|error| error.msg.contains("Recursion limit"))
    {
        // The parser stops at its own nesting limit, which is ours; what it reports after
        // that is noise from its error recovery.
        return too_deep(GATE_EXPRESSION_DEPTH_MAX as u64 + 1);
    }
    let (line, column) = first.pos;
    let near = usize::try_from(line - 1)
        .ok()
        .and_then(|line_idx| source.lines().nth(line_idx))
        .map(|text| {
            // The (at most) 64 bytes of the line that end where the parser stopped.
            let mut end = usize::try_from(column).unwrap_or(0).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mut start = end.saturating_sub(64);
            while !text.is_char_boundary(start) {
                start += 1;
            }
            text[start..end].to_string()
        })
        .unwrap_or_default();
    let mut message = first.msg.clone();
    if message.len() > PARSE_MESSAGE_BYTES_MAX {
        let mut end = PARSE_MESSAGE_BYTES_MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    let more = match errors.errors.len() {
        1 => String::new(),
        n => format!(" ({} more errors)", n - 1),
    };
    Error::InvalidInput(format!(
        "cel expression does not compile: {message} at {line}:{column} near {near:?}{more}"
    ))
}

/// The depth and node count of an AST, walked with an explicit stack: the tree may be as deep
/// as the input is long.
fn measure(root: &IdedExpr) -> (usize, usize) {
    let mut stack = vec![(root, 1usize)];
    let (mut depth_max, mut n_nodes) = (0, 0);
    while let Some((node, depth)) = stack.pop() {
        n_nodes += 1;
        depth_max = depth_max.max(depth);
        children(&node.expr, &mut |child| stack.push((child, depth + 1)));
    }
    (depth_max, n_nodes)
}

/// Calls `visit` on each direct child of an expression.
fn children<'a>(expr: &'a Expr, visit: &mut impl FnMut(&'a IdedExpr)) {
    match expr {
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                visit(target);
            }
            call.args.iter().for_each(&mut *visit);
        }
        Expr::Comprehension(comprehension) => {
            visit(&comprehension.iter_range);
            visit(&comprehension.accu_init);
            visit(&comprehension.loop_cond);
            visit(&comprehension.loop_step);
            visit(&comprehension.result);
        }
        Expr::List(list) => list.elements.iter().for_each(&mut *visit),
        Expr::Map(map) => {
            for entry in &map.entries {
                if let EntryExpr::MapEntry(entry) = &entry.expr {
                    visit(&entry.key);
                    visit(&entry.value);
                }
            }
        }
        Expr::Struct(structure) => {
            for entry in &structure.entries {
                if let EntryExpr::StructField(field) = &entry.expr {
                    visit(&field.value);
                }
            }
        }
        Expr::Select(select) => visit(&select.operand),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

/// Lowers a checked (shallow) AST; `locals` are the comprehension variables in scope, by slot.
struct Lowering {
    locals: Vec<String>,
}

fn invalid(what: &str, name: &str) -> Error {
    Error::InvalidInput(format!("cel expression {what} {:?}", shorten(name)))
}

impl Lowering {
    fn lower(&mut self, expr: &IdedExpr) -> Result<Node> {
        Ok(match &expr.expr {
            Expr::Literal(literal) => Node::Const(literal_value(literal)),
            Expr::Ident(name) => self.name(name)?,
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return Err(invalid("uses an optional element in", "list"));
                }
                Node::List(
                    list.elements
                        .iter()
                        .map(|element| self.lower(element))
                        .collect::<Result<_>>()?,
                )
            }
            Expr::Map(map) => {
                let mut entries = Vec::with_capacity(map.entries.len());
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(entry) if !entry.optional => {
                            entries.push((self.lower(&entry.key)?, self.lower(&entry.value)?));
                        }
                        _ => return Err(invalid("has an unsupported entry in", "map")),
                    }
                }
                Node::Map(entries)
            }
            Expr::Select(select) => Node::Select {
                operand: Box::new(self.lower(&select.operand)?),
                field: Arc::from(select.field.as_str()),
                test: select.test,
            },
            Expr::Call(call) => self.call(call)?,
            Expr::Comprehension(comprehension) => self.comprehension(comprehension)?,
            Expr::Struct(structure) => {
                return Err(invalid("uses a message literal", &structure.type_name));
            }
            Expr::Unspecified => return Err(invalid("has an empty", "expression")),
        })
    }

    fn name(&self, name: &str) -> Result<Node> {
        if let Some(slot) = self.locals.iter().rposition(|local| local == name) {
            return Ok(Node::Local(slot));
        }
        Ok(match name {
            "event" => Node::Var(Var::Event),
            "entity_version" => Node::Var(Var::EntityVersion),
            "now_ms" => Node::Var(Var::NowMs),
            _ => match Type::named(name) {
                Some(named) => Node::Const(Value::Type(named)),
                None => return Err(invalid("uses the undefined name", name)),
            },
        })
    }

    fn call(&mut self, call: &CallExpr) -> Result<Node> {
        let name = call.func_name.as_str();
        let n_args = call.args.len();
        let boxed = |lowering: &mut Lowering, idx: usize| -> Result<Box<Node>> {
            Ok(Box::new(lowering.lower(&call.args[idx])?))
        };
        if call.target.is_none() {
            match (name, n_args) {
                (operators::LOGICAL_AND, 2) => {
                    return Ok(Node::And(boxed(self, 0)?, boxed(self, 1)?));
                }
                (operators::LOGICAL_OR, 2) => {
                    return Ok(Node::Or(boxed(self, 0)?, boxed(self, 1)?));
                }
                (operators::LOGICAL_NOT, 1) => return Ok(Node::Not(boxed(self, 0)?)),
                (operators::NOT_STRICTLY_FALSE, 1) => {
                    return Ok(Node::NotStrictlyFalse(boxed(self, 0)?));
                }
                (operators::CONDITIONAL, 3) => {
                    return Ok(Node::Conditional(
                        boxed(self, 0)?,
                        boxed(self, 1)?,
                        boxed(self, 2)?,
                    ));
                }
                _ => {}
            }
        }
        let func = match (call.target.is_some(), name, n_args) {
            (false, operators::ADD, 2) => Func::Add,
            (false, operators::SUBSTRACT, 2) => Func::Sub,
            (false, operators::MULTIPLY, 2) => Func::Mul,
            (false, operators::DIVIDE, 2) => Func::Div,
            (false, operators::MODULO, 2) => Func::Rem,
            (false, operators::NEGATE, 1) => Func::Neg,
            (false, operators::EQUALS, 2) => Func::Eq,
            (false, operators::NOT_EQUALS, 2) => Func::Ne,
            (false, operators::LESS, 2) => Func::Lt,
            (false, operators::LESS_EQUALS, 2) => Func::Le,
            (false, operators::GREATER, 2) => Func::Gt,
            (false, operators::GREATER_EQUALS, 2) => Func::Ge,
            (false, operators::IN, 2) => Func::In,
            (false, operators::INDEX, 2) => Func::Index,
            (_, "size", 1) | (true, "size", 0) => Func::Size,
            (true, "contains", 1) => Func::Contains,
            (true, "startsWith", 1) => Func::StartsWith,
            (true, "endsWith", 1) => Func::EndsWith,
            (true, "matches", 1) | (false, "matches", 2) => {
                let pattern = call.args.last().expect("matches has a pattern");
                match &pattern.expr {
                    Expr::Literal(LiteralValue::String(text)) => {
                        let regex = super::eval::regex(text.inner())
                            .map_err(|why| Error::InvalidInput(format!("cel expression {why}")))?;
                        Func::MatchesCompiled(Arc::new(regex))
                    }
                    _ => Func::Matches,
                }
            }
            (false, "int", 1) => Func::ToInt,
            (false, "uint", 1) => Func::ToUInt,
            (false, "double", 1) => Func::ToDouble,
            (false, "string", 1) => Func::ToString,
            (false, "bytes", 1) => Func::ToBytes,
            (false, "bool", 1) => Func::ToBool,
            (false, "type", 1) => Func::TypeOf,
            (false, "dyn", 1) => Func::Dyn,
            (false, "count", 1) => Func::Count,
            (false, "exists", 1) => Func::Exists,
            (false, "version", 2) => Func::Version,
            _ => {
                let shape = if call.target.is_some() {
                    format!("x.{name}() with {n_args} arguments")
                } else {
                    format!("{name}() with {n_args} arguments")
                };
                return Err(Error::InvalidInput(format!(
                    "cel expression calls an unknown function {:?}",
                    shorten(&shape)
                )));
            }
        };
        let mut args = Vec::with_capacity(n_args + 1);
        if let Some(target) = &call.target {
            args.push(self.lower(target)?);
        }
        for arg in &call.args {
            args.push(self.lower(arg)?);
        }
        Ok(Node::Call(func, args))
    }

    fn comprehension(&mut self, comprehension: &ComprehensionExpr) -> Result<Node> {
        if comprehension.iter_var2.is_some() {
            return Err(invalid(
                "uses a two-variable comprehension over",
                &comprehension.iter_var,
            ));
        }
        let range = self.lower(&comprehension.iter_range)?;
        let init = self.lower(&comprehension.accu_init)?;
        let slot = self.locals.len();
        self.locals.push(comprehension.accu_var.clone());
        self.locals.push(comprehension.iter_var.clone());
        let lowered = (|| {
            let cond = self.lower(&comprehension.loop_cond)?;
            let step = self.step(&comprehension.loop_step, &comprehension.accu_var)?;
            let result = self.lower(&comprehension.result)?;
            Ok::<_, Error>((cond, step, result))
        })();
        self.locals.truncate(slot);
        let (cond, step, result) = lowered?;
        Ok(Node::Comprehension(Box::new(Comprehension {
            range,
            init,
            slot,
            cond,
            step,
            result,
        })))
    }

    /// Recognizes the accumulating steps of `map` and `filter`, so the evaluator appends in
    /// place instead of copying the list every iteration (which would make them quadratic).
    fn step(&mut self, step: &IdedExpr, accu: &str) -> Result<Step> {
        let is_accu = |expr: &IdedExpr| matches!(&expr.expr, Expr::Ident(name) if name == accu);
        // `@result + [element]`: the element, if `expr` has that shape.
        let pushed = |expr: &'_ IdedExpr| -> Option<IdedExpr> {
            match &expr.expr {
                Expr::Call(call)
                    if call.func_name == operators::ADD
                        && call.target.is_none()
                        && call.args.len() == 2
                        && is_accu(&call.args[0]) =>
                {
                    match &call.args[1].expr {
                        Expr::List(list)
                            if list.elements.len() == 1 && list.optional_indices.is_empty() =>
                        {
                            Some(list.elements[0].clone())
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
        };
        if let Some(element) = pushed(step) {
            return Ok(Step::Push(self.lower(&element)?));
        }
        if let Expr::Call(call) = &step.expr
            && call.func_name == operators::CONDITIONAL
            && call.target.is_none()
            && call.args.len() == 3
            && is_accu(&call.args[2])
            && let Some(element) = pushed(&call.args[1])
        {
            let filter = self.lower(&call.args[0])?;
            return Ok(Step::PushIf(filter, self.lower(&element)?));
        }
        Ok(Step::Replace(self.lower(step)?))
    }
}

fn literal_value(literal: &LiteralValue) -> Value {
    match literal {
        LiteralValue::Boolean(b) => Value::Bool(*b.inner()),
        LiteralValue::Bytes(b) => Value::Bytes(Arc::from(b.inner())),
        LiteralValue::Double(d) => Value::Double(*d.inner()),
        LiteralValue::Int(i) => Value::Int(*i.inner()),
        LiteralValue::Null => Value::Null,
        LiteralValue::String(s) => Value::string(s.inner()),
        LiteralValue::UInt(u) => Value::UInt(*u.inner()),
    }
}
