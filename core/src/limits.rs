//! Every bound of the core, in one place.
//!
//! Each constant is enforced where input enters the store (`Append` validation, read calls,
//! configuration) and reported by name in [`crate::Error::LimitExceeded`], so a client that hits
//! one learns which bound and by how much. The server's gRPC message limit equals
//! [`APPEND_BYTES_MAX`]. Change a bound here and its documentation in `docs/LIMITS.md` together.

/// Bytes of one append: the sum over its events of payload, names, tags and metadata. Matches the
/// gRPC request limit of the server, 16 MiB.
pub const APPEND_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Events in one append. A batch is one atomic unit; larger batches should be split by the caller.
pub const APPEND_EVENTS_MAX: usize = 10_000;
/// Bytes of a scope name (UTF-8).
pub const SCOPE_BYTES_MAX: usize = 128;
/// Bytes of an entity name (UTF-8).
pub const ENTITY_BYTES_MAX: usize = 256;
/// Bytes of an event type name (UTF-8).
pub const TYPE_BYTES_MAX: usize = 256;
/// Bytes of one tag (UTF-8).
pub const TAG_BYTES_MAX: usize = 256;
/// Tags on one event.
pub const TAGS_PER_EVENT_MAX: usize = 64;
/// Bytes of a content type such as `application/json`.
pub const CONTENT_TYPE_BYTES_MAX: usize = 128;
/// Entries in one event's metadata map.
pub const METADATA_ENTRIES_MAX: usize = 64;
/// Bytes of one metadata key.
pub const METADATA_KEY_BYTES_MAX: usize = 256;
/// Bytes of one metadata value.
pub const METADATA_VALUE_BYTES_MAX: usize = 4096;
/// Causation parents of one event.
pub const CAUSATION_PER_EVENT_MAX: usize = 64;
/// Events returned by one read call; callers page with the returned continuation. A forward
/// log page may exceed it by the rest of one append (fewer than [`APPEND_EVENTS_MAX`] events),
/// since it never ends inside an append.
pub const READ_EVENTS_MAX: usize = 10_000;
/// Record bytes one read call returns, so a page of large events stays bounded in memory. A
/// page always holds at least one event, however large, and a forward log page may exceed it by
/// the rest of one append (at most [`APPEND_BYTES_MAX`] of content plus record headers).
pub const READ_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Positions a filtered log read may examine before it returns what it has, so a sparse filter
/// cannot hold a reader for the length of the log. The continuation resumes the scan.
pub const READ_SCAN_MAX: usize = 100_000;
/// Scopes, types or tags named in one filter, and items in one query.
pub const FILTER_TERMS_MAX: usize = 64;
/// Answers of replicated log entries the store keeps, newest first, to answer an entry that is
/// applied again (at or below `Store::applied`) with its original answer; an older one is
/// answered `AlreadyApplied`. Kept in memory since the store opened: a replica that restarts
/// resumes after `Store::applied` and offers none of them again.
pub const APPLIED_ANSWERS_MAX: usize = 4096;
/// Appends waiting for the writer. When full, appenders block until it drains (backpressure).
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Appends the writer commits with one fsync (group commit).
pub const GROUP_APPENDS_MAX: usize = 1024;
/// Written groups waiting for the sync thread; past this, the writer waits for it.
pub const SYNCER_GROUPS_MAX: usize = 4;
/// How long the writer polls its queue before it sleeps, after syncing alone an append from
/// `Store::append_in_sequence` (one client's stream), in microseconds: the default of
/// `Config::writer_spin`. A client's next append comes back within it on the 2-CPU machine of
/// docs/BENCHMARKS.md, and a thread that sleeps there is woken late (a CPU that went idle
/// answers slowly).
pub const WRITER_SPIN_US_DEFAULT: u64 = 500;
/// Smallest allowed segment size; smaller values are refused in `Config`.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest allowed segment size: frame offsets are kept as 32-bit values in the index.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;
/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Scopes, or types, one gate definition names (its bindings, and an `allowed_types` list);
/// each name is bounded like the event field of its kind.
pub const GATE_BINDINGS_MAX: usize = 64;
/// Bytes of a gate name.
pub const GATE_NAME_BYTES_MAX: usize = 128;
/// Bytes of a CEL gate expression.
pub const GATE_EXPRESSION_BYTES_MAX: usize = 4096;
/// Nesting depth of a CEL gate expression's syntax tree (a literal or a name is depth 1; each
/// operator, call, selection, list, map or macro around it adds one). The parser and the
/// evaluator recurse once per level, so this bounds the stack a gate can use on the writer
/// thread: the evaluator's deepest frame chain at 64 levels is a few hundred KiB in a debug
/// build, well inside the writer's 2 MiB stack. 64 is far more than hand-written rules need
/// (`&&` and `||` chains are balanced by the parser, so 1,000 conditions are 11 levels), while
/// an arithmetic chain `a + b + ...` is left-nested and may hold at most 63 terms.
pub const GATE_EXPRESSION_DEPTH_MAX: usize = 64;
/// Nodes in a CEL gate expression's syntax tree, after macros are expanded (each `all`,
/// `exists`, `map` or `filter` adds about six nodes). A 4 KiB expression has at most a few
/// thousand; this bounds the memory a registered gate holds.
pub const GATE_EXPRESSION_NODES_MAX: usize = 8192;
/// Evaluation steps all CEL gates together may take for one append, over all its events. A step
/// is one syntax node evaluated, one comprehension iteration, one list or map element built,
/// compared or scanned, 64 bytes of a string or bytes value built or scanned, 8 bytes of JSON
/// payload decoded, one event a `count` or `exists` examines, and the regex work described in
/// docs/GATES.md. There is one writer thread for the whole store, so this bounds how long one
/// append's gates can hold every other append back: about 3 ms for the costliest expressions
/// measured (docs/BENCHMARKS.md). An append over it is refused with
/// [`crate::Error::LimitExceeded`] and nothing of it is written; a large append judged by
/// costly gates may have to be split.
pub const GATE_EVAL_STEPS_MAX: u64 = 100_000;
/// Bytes of a compiled regular expression in a CEL gate (`matches`), the regex crate's
/// `size_limit`; the same bound applies to its lazy DFA cache. Larger patterns are refused.
pub const CEL_REGEX_BYTES_MAX: usize = 64 * 1024;
/// Bytes of the lazy DFA cache one CEL `matches` search may use. A search that would clear it
/// more than twice while building a state for fewer than 32 bytes of input gives up instead
/// (the gate answers `CEL_ERROR`), which bounds a hostile pattern's cost to a few cache fills.
pub const CEL_REGEX_CACHE_BYTES: usize = 256 * 1024;
/// Payload bytes a CEL gate decodes as JSON; a larger payload is `null` to the expression.
pub const CEL_PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// Store-fact calls (`count`, `exists`, `version`) in one CEL evaluation.
pub const GATE_FACT_CALLS_MAX: usize = 16;
/// Events one `count` in a gate counts before it stops (the result saturates here).
pub const GATE_COUNT_MAX: u64 = 10_000;
/// Extra gates one append may name.
pub const APPEND_GATES_MAX: usize = 16;
/// Expected-version conditions in one append.
pub const APPEND_EXPECTATIONS_MAX: usize = 1024;
/// Gates registered in one store.
pub const GATES_MAX: usize = 1024;
/// Bytes of an idempotency key.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;
/// Idempotency keys remembered; the oldest (by position) is forgotten first, so a retry later
/// than this many keyed appends is treated as new.
pub const IDEMPOTENCY_KEYS_MAX: usize = 100_000;
/// Nodes one causal graph query returns before it sets `truncated`.
pub const GRAPH_NODES_MAX: usize = 10_000;
/// Depth of one ancestors or descendants query.
pub const GRAPH_DEPTH_MAX: u32 = 1_000;
