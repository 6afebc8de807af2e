//! A checker for histories of an append-only replicated log: what concurrent clients did and
//! were told, what subscribers saw, and what the log holds once the cluster is healed.
//!
//! The tests record a [`History`] while they partition and kill nodes, then [`check`] judges
//! it against the final log and returns a [`Report`] of every [`Anomaly`] found, each with
//! its evidence. It knows nothing of the server: it is pure data and checks. The invariants:
//! - an acknowledged append is in the final log exactly once, at the position (and entity
//!   version) it was acknowledged with; a definitely failed one is not there at all; an
//!   unknown one may be either;
//! - the final log is gapless from position 1, no payload is in it twice, and each entity's
//!   versions run 1, 2, 3, ... in position order;
//! - whatever a read or a subscription returned is a contiguous run of the final log;
//! - a linearizable or `leader` read that reached the head saw everything acknowledged, and
//!   everything another such read saw, before it was invoked;
//! - all nodes' logs, and the final log, agree at every position they share.
//!
//! Payloads must be unique across a history's appends: they are how the checker ties an
//! entry of the log to the append that wrote it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Instant;

/// The most bytes of a payload an anomaly's description shows.
pub const PAYLOAD_SHOWN_BYTES_MAX: usize = 40;

/// How fresh a read asked to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Confirmed with a quorum: sees every write completed before it began.
    Linearizable,
    /// Served by the leader on its lease: sees every write completed before it began, as long
    /// as clocks agree (they do: every node runs on this machine).
    Leader,
    /// Served by any node from its own state: may be stale, never wrong about what it returns.
    Local,
}

/// What a client was told about an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Acknowledged: the payload is committed at `position`.
    Ok {
        /// The position the server acknowledged.
        position: u64,
        /// The entity and its version the server acknowledged, when the client recorded them.
        entity_version: Option<(String, u64)>,
    },
    /// Refused: a definite answer that nothing was written.
    Failed,
    /// No answer (a timeout, a lost connection): the payload may or may not be in the log.
    Unknown,
}

/// One thing that happened during a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A client appended one event.
    Append {
        /// Which client, as the test numbers them.
        client: usize,
        /// The event's payload, unique across the history.
        payload: Vec<u8>,
        /// When the client sent the request.
        invoked: Instant,
        /// When the client got its answer or gave up.
        completed: Instant,
        /// What it was told.
        outcome: AppendOutcome,
    },
    /// A client read a run of the log.
    Read {
        /// Which client, as the test numbers them.
        client: usize,
        /// How fresh the read asked to be.
        consistency: Consistency,
        /// When the client sent the request.
        invoked: Instant,
        /// When the client got its answer.
        completed: Instant,
        /// The position the read started at (1 for a read of the whole log).
        from: u64,
        /// What it returned, as (position, payload) in order; empty when nothing was at `from`.
        entries: Vec<(u64, Vec<u8>)>,
        /// True when the read reached the head (the response's `end`); false when a page
        /// limit cut it short, so the log may go on past its last entry.
        reached_end: bool,
    },
    /// What one subscription delivered, resumptions included, in order.
    Subscription {
        /// The node it was served by, for the evidence.
        node: String,
        /// The position it started from; the first event seen must be there.
        from: u64,
        /// The events delivered, as (position, payload).
        seen: Vec<(u64, Vec<u8>)>,
    },
}

/// One entry of the final log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalEntry {
    /// Its global position.
    pub position: u64,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its entity, scope included in whatever form the test uses throughout.
    pub entity: String,
    /// Its version within the entity.
    pub version: u64,
}

/// One node's log as read from that node alone, after healing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLog {
    /// The node's name.
    pub node: String,
    /// Its entries as (position, payload), in order; may start after 1 (a snapshot) and end
    /// early (a lagging node).
    pub entries: Vec<(u64, Vec<u8>)>,
}

/// Everything a run recorded, and the logs read once the cluster was healed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Appends, reads and subscriptions, in any order.
    pub operations: Vec<Operation>,
    /// The log read through the cluster after healing, in position order.
    pub final_log: Vec<FinalEntry>,
    /// Each node's own log after healing.
    pub node_logs: Vec<NodeLog>,
}

/// The operation that obliged a linearizable or `leader` read to reach a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Witness {
    /// An append acknowledged at that position before the read was invoked.
    Append,
    /// A linearizable or `leader` read that had seen that position before the read was invoked.
    Read,
}

/// One violated invariant, with its evidence. `op_index` fields index `History::operations`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Anomaly {
    /// Two appends carry one payload, so the checker cannot tell them apart: a harness bug.
    PayloadReused {
        /// The payload.
        payload: Vec<u8>,
        /// The appends that carry it.
        op_indices: Vec<usize>,
    },
    /// An acknowledged append is not in the final log: an acknowledged write was lost.
    LostAck {
        /// The append.
        op_index: usize,
        /// Its client.
        client: usize,
        /// Its payload.
        payload: Vec<u8>,
        /// The position it was acknowledged at.
        position: u64,
    },
    /// An acknowledged append is in the final log at another position than acknowledged.
    MisplacedAck {
        /// The append.
        op_index: usize,
        /// Its client.
        client: usize,
        /// Its payload.
        payload: Vec<u8>,
        /// The position it was acknowledged at.
        acked_position: u64,
        /// Where the final log has it.
        final_position: u64,
    },
    /// An acknowledged append's entity version is not the one the final log gives it.
    MisversionedAck {
        /// The append.
        op_index: usize,
        /// Its client.
        client: usize,
        /// Its payload.
        payload: Vec<u8>,
        /// The entity and version it was acknowledged with.
        acked: (String, u64),
        /// The entity and version the final log gives it.
        found: (String, u64),
    },
    /// A payload is in the final log more than once: a write applied twice.
    Duplicate {
        /// The payload.
        payload: Vec<u8>,
        /// Every position holding it.
        positions: Vec<u64>,
    },
    /// An append the client was told failed is in the final log.
    FailedButPresent {
        /// The append.
        op_index: usize,
        /// Its client.
        client: usize,
        /// Its payload.
        payload: Vec<u8>,
        /// Where the final log has it.
        position: u64,
    },
    /// The final log skips positions `missing_from..=missing_to`.
    LogGap {
        /// The first missing position.
        missing_from: u64,
        /// The last missing position.
        missing_to: u64,
    },
    /// The final log goes back or repeats a position.
    LogDisorder {
        /// The index of the offending entry in the final log.
        index: usize,
        /// Its position.
        position: u64,
        /// The position of the entry before it.
        previous: u64,
    },
    /// An entity's versions skip or repeat in the final log.
    EntityVersionGap {
        /// The entity.
        entity: String,
        /// The position of the offending entry.
        position: u64,
        /// The version that should be there.
        expected_version: u64,
        /// The version that is there.
        found_version: u64,
    },
    /// A read's entries are not one run of positions starting at its `from`.
    ReadNotContiguous {
        /// The read.
        op_index: usize,
        /// Its client.
        client: usize,
        /// The position that should come next.
        expected_position: u64,
        /// The position that did.
        found_position: u64,
    },
    /// A read returned an entry the final log does not hold at that position: it saw a write
    /// that was later lost or overwritten, or invented one.
    DivergentRead {
        /// The read.
        op_index: usize,
        /// Its client.
        client: usize,
        /// Its consistency.
        consistency: Consistency,
        /// The position.
        position: u64,
        /// What the read returned there.
        read_payload: Vec<u8>,
        /// What the final log holds there, if anything.
        final_payload: Option<Vec<u8>>,
    },
    /// A linearizable or `leader` read that reached the head missed a position it was obliged
    /// to see.
    StaleRead {
        /// The read.
        op_index: usize,
        /// Its client.
        client: usize,
        /// The last position it covered (`from - 1` when it returned nothing).
        read_through: u64,
        /// The position it had to reach.
        required: u64,
        /// What obliged it.
        witness: Witness,
        /// The operation that obliged it.
        witness_op_index: usize,
    },
    /// A subscription skipped, repeated or reordered a position.
    SubscriptionGap {
        /// The subscription.
        op_index: usize,
        /// Its node.
        node: String,
        /// The index into what it saw.
        seen_index: usize,
        /// The position that should have come.
        expected_position: u64,
        /// The position that did.
        found_position: u64,
    },
    /// A subscription delivered an entry the final log does not hold at that position.
    SubscriptionDivergent {
        /// The subscription.
        op_index: usize,
        /// Its node.
        node: String,
        /// The position.
        position: u64,
        /// What it delivered there.
        seen_payload: Vec<u8>,
        /// What the final log holds there, if anything.
        final_payload: Option<Vec<u8>>,
    },
    /// A node's log skips, repeats or reorders a position.
    NodeLogGap {
        /// The node.
        node: String,
        /// The position that should have come.
        expected_position: u64,
        /// The position that did.
        found_position: u64,
    },
    /// Two logs hold different payloads at one position (the first such position per pair).
    NodeDivergence {
        /// One node (or "final log").
        node_a: String,
        /// The other.
        node_b: String,
        /// The position.
        position: u64,
        /// What `node_a` holds there.
        payload_a: Vec<u8>,
        /// What `node_b` holds there.
        payload_b: Vec<u8>,
    },
}

/// How much of each kind a history held, to show a test exercised what it meant to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Appends acknowledged.
    pub appends_ok: usize,
    /// Appends definitely refused.
    pub appends_failed: usize,
    /// Appends without an answer.
    pub appends_unknown: usize,
    /// Appends without an answer that are in the final log.
    pub unknown_present: usize,
    /// Appends without an answer that are not in the final log.
    pub unknown_absent: usize,
    /// Linearizable reads.
    pub reads_linearizable: usize,
    /// Leader reads.
    pub reads_leader: usize,
    /// Local reads.
    pub reads_local: usize,
    /// Entries returned by reads, all levels.
    pub entries_read: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Events delivered to subscriptions.
    pub events_seen: usize,
    /// Entries in the final log.
    pub final_positions: usize,
    /// Entries in the final log that no recorded append wrote.
    pub final_unrecorded: usize,
    /// Node logs compared.
    pub node_logs: usize,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Every violated invariant, empty for a valid history.
    pub anomalies: Vec<Anomaly>,
    /// How much of each kind the history held.
    pub counts: Counts,
}

impl Report {
    /// True when no invariant was violated.
    pub fn is_valid(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// Panics with every anomaly listed unless the history was valid.
    pub fn assert_valid(&self) {
        assert!(self.is_valid(), "the history is not valid:\n{self}");
    }
}

/// Checks a history against every invariant in the module docs.
pub fn check(history: &History) -> Report {
    let mut report = Report::default();
    let log = FinalLog::new(&history.final_log);
    report.counts.final_positions = history.final_log.len();
    check_final_log(history, &log, &mut report);
    check_appends(history, &log, &mut report);
    check_reads(history, &log, &mut report);
    check_subscriptions(history, &log, &mut report);
    check_node_logs(history, &mut report);
    report
}

/// The final log indexed by position and by payload.
struct FinalLog<'a> {
    by_position: BTreeMap<u64, &'a FinalEntry>,
    by_payload: HashMap<&'a [u8], Vec<u64>>,
}

impl<'a> FinalLog<'a> {
    fn new(entries: &'a [FinalEntry]) -> FinalLog<'a> {
        let mut by_position = BTreeMap::new();
        let mut by_payload: HashMap<&[u8], Vec<u64>> = HashMap::new();
        for entry in entries {
            // A repeated position is reported by the order check; the first one stands.
            by_position.entry(entry.position).or_insert(entry);
            by_payload
                .entry(entry.payload.as_slice())
                .or_default()
                .push(entry.position);
        }
        FinalLog {
            by_position,
            by_payload,
        }
    }

    fn payload_at(&self, position: u64) -> Option<&'a [u8]> {
        self.by_position
            .get(&position)
            .map(|entry| entry.payload.as_slice())
    }

    fn positions_of(&self, payload: &[u8]) -> &[u64] {
        self.by_payload.get(payload).map_or(&[], Vec::as_slice)
    }
}

/// Positions gapless and in order, no payload twice, entity versions gapless.
fn check_final_log(history: &History, log: &FinalLog<'_>, report: &mut Report) {
    let mut previous = 0;
    for (index, entry) in history.final_log.iter().enumerate() {
        if entry.position <= previous {
            report.anomalies.push(Anomaly::LogDisorder {
                index,
                position: entry.position,
                previous,
            });
            continue;
        }
        if entry.position > previous + 1 {
            report.anomalies.push(Anomaly::LogGap {
                missing_from: previous + 1,
                missing_to: entry.position - 1,
            });
        }
        previous = entry.position;
    }

    let mut duplicates: Vec<_> = log
        .by_payload
        .iter()
        .filter(|(_, positions)| positions.len() > 1)
        .map(|(payload, positions)| Anomaly::Duplicate {
            payload: payload.to_vec(),
            positions: positions.clone(),
        })
        .collect();
    // Hash order is arbitrary; reports should read the same on every run.
    duplicates.sort_by_key(|anomaly| match anomaly {
        Anomaly::Duplicate { positions, .. } => positions.first().copied(),
        _ => None,
    });
    report.anomalies.extend(duplicates);

    let mut versions: HashMap<&str, u64> = HashMap::new();
    for entry in log.by_position.values() {
        let last_version = versions.entry(entry.entity.as_str()).or_default();
        if entry.version != *last_version + 1 {
            report.anomalies.push(Anomaly::EntityVersionGap {
                entity: entry.entity.clone(),
                position: entry.position,
                expected_version: *last_version + 1,
                found_version: entry.version,
            });
        }
        *last_version = entry.version;
    }
}

/// Acknowledged appends present once where acknowledged, failed ones absent.
fn check_appends(history: &History, log: &FinalLog<'_>, report: &mut Report) {
    let mut appends_by_payload: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (op_index, operation) in history.operations.iter().enumerate() {
        let Operation::Append {
            client,
            payload,
            outcome,
            ..
        } = operation
        else {
            continue;
        };
        appends_by_payload
            .entry(payload.as_slice())
            .or_default()
            .push(op_index);
        let client = *client;
        let final_positions = log.positions_of(payload);
        match outcome {
            AppendOutcome::Ok {
                position,
                entity_version,
            } => {
                report.counts.appends_ok += 1;
                let Some(&final_position) = final_positions.first() else {
                    report.anomalies.push(Anomaly::LostAck {
                        op_index,
                        client,
                        payload: payload.clone(),
                        position: *position,
                    });
                    continue;
                };
                if !final_positions.contains(position) {
                    report.anomalies.push(Anomaly::MisplacedAck {
                        op_index,
                        client,
                        payload: payload.clone(),
                        acked_position: *position,
                        final_position,
                    });
                    continue;
                }
                if let Some(acked) = entity_version
                    && let Some(entry) = log.by_position.get(position)
                    && (entry.entity.as_str(), entry.version) != (acked.0.as_str(), acked.1)
                {
                    report.anomalies.push(Anomaly::MisversionedAck {
                        op_index,
                        client,
                        payload: payload.clone(),
                        acked: acked.clone(),
                        found: (entry.entity.clone(), entry.version),
                    });
                }
            }
            AppendOutcome::Failed => {
                report.counts.appends_failed += 1;
                if let Some(&position) = final_positions.first() {
                    report.anomalies.push(Anomaly::FailedButPresent {
                        op_index,
                        client,
                        payload: payload.clone(),
                        position,
                    });
                }
            }
            AppendOutcome::Unknown => {
                report.counts.appends_unknown += 1;
                if final_positions.is_empty() {
                    report.counts.unknown_absent += 1;
                } else {
                    report.counts.unknown_present += 1;
                }
            }
        }
    }

    let mut reused: Vec<_> = appends_by_payload
        .iter()
        .filter(|(_, op_indices)| op_indices.len() > 1)
        .map(|(payload, op_indices)| Anomaly::PayloadReused {
            payload: payload.to_vec(),
            op_indices: op_indices.clone(),
        })
        .collect();
    reused.sort_by_key(|anomaly| match anomaly {
        Anomaly::PayloadReused { op_indices, .. } => op_indices.first().copied(),
        _ => None,
    });
    report.anomalies.extend(reused);
    report.counts.final_unrecorded = history
        .final_log
        .iter()
        .filter(|entry| !appends_by_payload.contains_key(entry.payload.as_slice()))
        .count();
}

/// A position some operation had established by the time it completed.
struct Established {
    completed: Instant,
    position: u64,
    witness: Witness,
    op_index: usize,
}

/// Reads are runs of the final log; linearizable ones that reached the head are not stale.
fn check_reads(history: &History, log: &FinalLog<'_>, report: &mut Report) {
    let mut established = Vec::new();
    for (op_index, operation) in history.operations.iter().enumerate() {
        match operation {
            Operation::Append {
                completed,
                outcome: AppendOutcome::Ok { position, .. },
                ..
            } => established.push(Established {
                completed: *completed,
                position: *position,
                witness: Witness::Append,
                op_index,
            }),
            Operation::Read {
                consistency: Consistency::Linearizable | Consistency::Leader,
                completed,
                entries,
                ..
            } => {
                if let Some((position, _)) = entries.last() {
                    established.push(Established {
                        completed: *completed,
                        position: *position,
                        witness: Witness::Read,
                        op_index,
                    });
                }
            }
            _ => {}
        }
    }
    // Sorted by completion with the running maximum, so "the furthest position established
    // before an instant" is one binary search.
    established.sort_by_key(|established| established.completed);
    let mut furthest: Vec<&Established> = Vec::with_capacity(established.len());
    for next in &established {
        let best = match furthest.last() {
            Some(previous) if previous.position >= next.position => *previous,
            _ => next,
        };
        furthest.push(best);
    }

    for (op_index, operation) in history.operations.iter().enumerate() {
        let Operation::Read {
            client,
            consistency,
            invoked,
            from,
            entries,
            reached_end,
            ..
        } = operation
        else {
            continue;
        };
        let client = *client;
        match consistency {
            Consistency::Linearizable => report.counts.reads_linearizable += 1,
            Consistency::Leader => report.counts.reads_leader += 1,
            Consistency::Local => report.counts.reads_local += 1,
        }
        report.counts.entries_read += entries.len();

        let mut expected_position = *from;
        for (position, payload) in entries {
            if *position != expected_position {
                report.anomalies.push(Anomaly::ReadNotContiguous {
                    op_index,
                    client,
                    expected_position,
                    found_position: *position,
                });
            }
            expected_position = position + 1;
            let final_payload = log.payload_at(*position);
            if final_payload != Some(payload.as_slice()) {
                report.anomalies.push(Anomaly::DivergentRead {
                    op_index,
                    client,
                    consistency: *consistency,
                    position: *position,
                    read_payload: payload.clone(),
                    final_payload: final_payload.map(<[u8]>::to_vec),
                });
            }
        }

        if *consistency == Consistency::Local || !reached_end {
            continue;
        }
        let n_before = established.partition_point(|established| established.completed < *invoked);
        let Some(required) = n_before.checked_sub(1).map(|index| furthest[index]) else {
            continue;
        };
        let read_through = entries
            .last()
            .map_or(from.saturating_sub(1), |(position, _)| *position);
        if required.position >= *from && read_through < required.position {
            report.anomalies.push(Anomaly::StaleRead {
                op_index,
                client,
                read_through,
                required: required.position,
                witness: required.witness,
                witness_op_index: required.op_index,
            });
        }
    }
}

/// Each subscription is a contiguous run of the final log from where it started.
fn check_subscriptions(history: &History, log: &FinalLog<'_>, report: &mut Report) {
    for (op_index, operation) in history.operations.iter().enumerate() {
        let Operation::Subscription { node, from, seen } = operation else {
            continue;
        };
        report.counts.subscriptions += 1;
        report.counts.events_seen += seen.len();
        let mut expected_position = *from;
        for (seen_index, (position, payload)) in seen.iter().enumerate() {
            if *position != expected_position {
                report.anomalies.push(Anomaly::SubscriptionGap {
                    op_index,
                    node: node.clone(),
                    seen_index,
                    expected_position,
                    found_position: *position,
                });
            }
            expected_position = position + 1;
            let final_payload = log.payload_at(*position);
            if final_payload != Some(payload.as_slice()) {
                report.anomalies.push(Anomaly::SubscriptionDivergent {
                    op_index,
                    node: node.clone(),
                    position: *position,
                    seen_payload: payload.clone(),
                    final_payload: final_payload.map(<[u8]>::to_vec),
                });
            }
        }
    }
}

/// The name the final log goes by when it is compared with the nodes' logs.
const FINAL_LOG_NAME: &str = "final log";

/// Each node's log is a run; every two logs (the final one included) agree where they overlap.
fn check_node_logs(history: &History, report: &mut Report) {
    report.counts.node_logs = history.node_logs.len();
    let mut logs: Vec<(&str, BTreeMap<u64, &[u8]>)> = Vec::new();
    for node_log in &history.node_logs {
        let mut expected_position = None;
        for (position, _) in &node_log.entries {
            if let Some(expected_position) = expected_position
                && *position != expected_position
            {
                report.anomalies.push(Anomaly::NodeLogGap {
                    node: node_log.node.clone(),
                    expected_position,
                    found_position: *position,
                });
            }
            expected_position = Some(position + 1);
        }
        logs.push((node_log.node.as_str(), by_position(&node_log.entries)));
    }
    logs.push((
        FINAL_LOG_NAME,
        history
            .final_log
            .iter()
            .map(|entry| (entry.position, entry.payload.as_slice()))
            .collect(),
    ));

    for (a_index, (node_a, log_a)) in logs.iter().enumerate() {
        for (node_b, log_b) in &logs[a_index + 1..] {
            let divergence = log_a.iter().find_map(|(position, payload_a)| {
                let payload_b = log_b.get(position)?;
                (payload_a != payload_b).then_some((*position, *payload_a, *payload_b))
            });
            if let Some((position, payload_a, payload_b)) = divergence {
                report.anomalies.push(Anomaly::NodeDivergence {
                    node_a: node_a.to_string(),
                    node_b: node_b.to_string(),
                    position,
                    payload_a: payload_a.to_vec(),
                    payload_b: payload_b.to_vec(),
                });
            }
        }
    }
}

fn by_position(entries: &[(u64, Vec<u8>)]) -> BTreeMap<u64, &[u8]> {
    entries
        .iter()
        .map(|(position, payload)| (*position, payload.as_slice()))
        .collect()
}

/// A payload as text when it is printable ASCII, else as hex, cut at
/// [`PAYLOAD_SHOWN_BYTES_MAX`].
struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(PAYLOAD_SHOWN_BYTES_MAX)];
        if shown
            .iter()
            .all(|byte| byte.is_ascii_graphic() || *byte == b' ')
        {
            write!(f, "{:?}", String::from_utf8_lossy(shown))?;
        } else {
            f.write_str("0x")?;
            for byte in shown {
                write!(f, "{byte:02x}")?;
            }
        }
        if self.0.len() > shown.len() {
            write!(f, "...(+{} bytes)", self.0.len() - shown.len())?;
        }
        Ok(())
    }
}

/// What a log holds at a position, for the evidence: a payload or nothing.
struct ShownAt<'a>(Option<&'a [u8]>);

impl fmt::Display for ShownAt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(payload) => write!(f, "{}", Shown(payload)),
            None => f.write_str("nothing"),
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::PayloadReused {
                payload,
                op_indices,
            } => write!(
                f,
                "payload reused: appends {op_indices:?} all carry {} (a harness bug: payloads must be unique)",
                Shown(payload)
            ),
            Anomaly::LostAck {
                op_index,
                client,
                payload,
                position,
            } => write!(
                f,
                "lost ack: append #{op_index} by client {client} of {} was acknowledged at position {position} but is not in the final log",
                Shown(payload)
            ),
            Anomaly::MisplacedAck {
                op_index,
                client,
                payload,
                acked_position,
                final_position,
            } => write!(
                f,
                "misplaced ack: append #{op_index} by client {client} of {} was acknowledged at position {acked_position} but the final log has it at {final_position}",
                Shown(payload)
            ),
            Anomaly::MisversionedAck {
                op_index,
                client,
                payload,
                acked,
                found,
            } => write!(
                f,
                "misversioned ack: append #{op_index} by client {client} of {} was acknowledged as {} version {} but the final log has {} version {}",
                Shown(payload),
                acked.0,
                acked.1,
                found.0,
                found.1
            ),
            Anomaly::Duplicate { payload, positions } => write!(
                f,
                "duplicate: {} is in the final log at positions {positions:?}",
                Shown(payload)
            ),
            Anomaly::FailedButPresent {
                op_index,
                client,
                payload,
                position,
            } => write!(
                f,
                "failed but present: append #{op_index} by client {client} of {} was refused but the final log has it at position {position}",
                Shown(payload)
            ),
            Anomaly::LogGap {
                missing_from,
                missing_to,
            } => write!(
                f,
                "log gap: the final log has no positions {missing_from}..={missing_to}"
            ),
            Anomaly::LogDisorder {
                index,
                position,
                previous,
            } => write!(
                f,
                "log disorder: entry {index} of the final log is at position {position}, after position {previous}"
            ),
            Anomaly::EntityVersionGap {
                entity,
                position,
                expected_version,
                found_version,
            } => write!(
                f,
                "entity version gap: entity {entity} is at version {found_version} at position {position}, expected {expected_version}"
            ),
            Anomaly::ReadNotContiguous {
                op_index,
                client,
                expected_position,
                found_position,
            } => write!(
                f,
                "read not contiguous: read #{op_index} by client {client} returned position {found_position} where {expected_position} should come"
            ),
            Anomaly::DivergentRead {
                op_index,
                client,
                consistency,
                position,
                read_payload,
                final_payload,
            } => write!(
                f,
                "divergent read: {consistency:?} read #{op_index} by client {client} returned {} at position {position} but the final log holds {} there",
                Shown(read_payload),
                ShownAt(final_payload.as_deref())
            ),
            Anomaly::StaleRead {
                op_index,
                client,
                read_through,
                required,
                witness,
                witness_op_index,
            } => {
                let witness = match witness {
                    Witness::Append => "append",
                    Witness::Read => "read",
                };
                write!(
                    f,
                    "stale read: read #{op_index} by client {client} reached the head at position {read_through}, but {witness} #{witness_op_index} had established position {required} before it was invoked"
                )
            }
            Anomaly::SubscriptionGap {
                op_index,
                node,
                seen_index,
                expected_position,
                found_position,
            } => write!(
                f,
                "subscription gap: subscription #{op_index} on {node} delivered position {found_position} as its event {seen_index}, where {expected_position} should come"
            ),
            Anomaly::SubscriptionDivergent {
                op_index,
                node,
                position,
                seen_payload,
                final_payload,
            } => write!(
                f,
                "subscription divergent: subscription #{op_index} on {node} delivered {} at position {position} but the final log holds {} there",
                Shown(seen_payload),
                ShownAt(final_payload.as_deref())
            ),
            Anomaly::NodeLogGap {
                node,
                expected_position,
                found_position,
            } => write!(
                f,
                "node log gap: the log of {node} has position {found_position} where {expected_position} should come"
            ),
            Anomaly::NodeDivergence {
                node_a,
                node_b,
                position,
                payload_a,
                payload_b,
            } => write!(
                f,
                "node divergence: at position {position} {node_a} holds {} and {node_b} holds {}",
                Shown(payload_a),
                Shown(payload_b)
            ),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = &self.counts;
        writeln!(
            f,
            "appends: {} ok, {} failed, {} unknown ({} present, {} absent); reads: {} linearizable, {} leader, {} local ({} entries); subscriptions: {} ({} events); final log: {} positions ({} unrecorded); node logs: {}",
            counts.appends_ok,
            counts.appends_failed,
            counts.appends_unknown,
            counts.unknown_present,
            counts.unknown_absent,
            counts.reads_linearizable,
            counts.reads_leader,
            counts.reads_local,
            counts.entries_read,
            counts.subscriptions,
            counts.events_seen,
            counts.final_positions,
            counts.final_unrecorded,
            counts.node_logs,
        )?;
        for anomaly in &self.anomalies {
            writeln!(f, "- {anomaly}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! A valid history passes; each anomaly is found, with its evidence, in a history broken
    //! in exactly that one way.

    use std::time::Duration;

    use super::*;

    /// A fixed origin for the histories' instants, `ms` milliseconds after it.
    fn at(origin: Instant, ms: u64) -> Instant {
        origin + Duration::from_millis(ms)
    }

    fn append(
        origin: Instant,
        client: usize,
        payload: &str,
        span_ms: (u64, u64),
        outcome: AppendOutcome,
    ) -> Operation {
        Operation::Append {
            client,
            payload: payload.as_bytes().to_vec(),
            invoked: at(origin, span_ms.0),
            completed: at(origin, span_ms.1),
            outcome,
        }
    }

    fn ok(position: u64, entity: &str, version: u64) -> AppendOutcome {
        AppendOutcome::Ok {
            position,
            entity_version: Some((entity.to_string(), version)),
        }
    }

    fn run(entries: &[(u64, &str)]) -> Vec<(u64, Vec<u8>)> {
        entries
            .iter()
            .map(|(position, payload)| (*position, payload.as_bytes().to_vec()))
            .collect()
    }

    fn read(
        origin: Instant,
        client: usize,
        consistency: Consistency,
        span_ms: (u64, u64),
        from: u64,
        entries: &[(u64, &str)],
        reached_end: bool,
    ) -> Operation {
        Operation::Read {
            client,
            consistency,
            invoked: at(origin, span_ms.0),
            completed: at(origin, span_ms.1),
            from,
            entries: run(entries),
            reached_end,
        }
    }

    fn entry(position: u64, payload: &str, entity: &str, version: u64) -> FinalEntry {
        FinalEntry {
            position,
            payload: payload.as_bytes().to_vec(),
            entity: entity.to_string(),
            version,
        }
    }

    const LOG: [(u64, &str); 5] = [(1, "a1"), (2, "b1"), (3, "a2"), (4, "u1"), (5, "b2")];

    /// Three clients on two entities: acknowledged, refused and unanswered appends (one of
    /// them written, one not), reads at every level (a stale local one, a truncated one, a
    /// window), two subscriptions and three nodes, one lagging.
    fn valid(origin: Instant) -> History {
        let operations = vec![
            append(origin, 0, "a1", (0, 10), ok(1, "order-1", 1)),
            append(origin, 1, "b1", (5, 15), ok(2, "order-2", 1)),
            append(origin, 0, "a2", (20, 30), ok(3, "order-1", 2)),
            append(origin, 1, "u1", (20, 40), AppendOutcome::Unknown),
            append(origin, 2, "f1", (25, 35), AppendOutcome::Failed),
            append(origin, 2, "u2", (36, 50), AppendOutcome::Unknown),
            append(origin, 1, "b2", (41, 60), ok(5, "order-2", 3)),
            read(
                origin,
                2,
                Consistency::Linearizable,
                (31, 33),
                1,
                &LOG[..3],
                true,
            ),
            read(origin, 0, Consistency::Leader, (70, 75), 1, &LOG, true),
            read(origin, 0, Consistency::Local, (12, 14), 1, &LOG[..1], true),
            read(
                origin,
                1,
                Consistency::Linearizable,
                (61, 65),
                4,
                &LOG[3..],
                true,
            ),
            read(
                origin,
                2,
                Consistency::Linearizable,
                (66, 68),
                1,
                &LOG[..2],
                false,
            ),
            Operation::Subscription {
                node: "n1".to_string(),
                from: 1,
                seen: run(&LOG),
            },
            Operation::Subscription {
                node: "n2".to_string(),
                from: 3,
                seen: run(&LOG[2..4]),
            },
        ];
        let final_log = vec![
            entry(1, "a1", "order-1", 1),
            entry(2, "b1", "order-2", 1),
            entry(3, "a2", "order-1", 2),
            entry(4, "u1", "order-2", 2),
            entry(5, "b2", "order-2", 3),
        ];
        let node_logs = vec![
            NodeLog {
                node: "n1".to_string(),
                entries: run(&LOG),
            },
            NodeLog {
                node: "n2".to_string(),
                entries: run(&LOG[..4]),
            },
            NodeLog {
                node: "n3".to_string(),
                entries: run(&LOG[1..]),
            },
        ];
        History {
            operations,
            final_log,
            node_logs,
        }
    }

    /// Asserts the report holds `expected` among its anomalies.
    fn assert_found(history: &History, expected: Anomaly) {
        let report = check(history);
        assert!(
            report.anomalies.contains(&expected),
            "expected {expected:?} among the anomalies:\n{report}"
        );
        assert!(!report.to_string().is_empty());
    }

    #[test]
    fn a_valid_history_passes_and_is_counted() {
        let report = check(&valid(Instant::now()));
        report.assert_valid();
        assert_eq!(
            report.counts,
            Counts {
                appends_ok: 4,
                appends_failed: 1,
                appends_unknown: 2,
                unknown_present: 1,
                unknown_absent: 1,
                reads_linearizable: 3,
                reads_leader: 1,
                reads_local: 1,
                entries_read: 13,
                subscriptions: 2,
                events_seen: 7,
                final_positions: 5,
                final_unrecorded: 0,
                node_logs: 3,
            }
        );
    }

    #[test]
    fn an_empty_history_passes() {
        check(&History::default()).assert_valid();
    }

    #[test]
    fn a_lost_ack_is_found() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history
            .operations
            .push(append(origin, 2, "c1", (70, 80), ok(6, "order-3", 1)));
        assert_found(
            &history,
            Anomaly::LostAck {
                op_index: 14,
                client: 2,
                payload: b"c1".to_vec(),
                position: 6,
            },
        );
    }

    #[test]
    fn a_misplaced_ack_is_found() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history.operations[6] = append(origin, 1, "b2", (41, 60), ok(4, "order-2", 3));
        assert_found(
            &history,
            Anomaly::MisplacedAck {
                op_index: 6,
                client: 1,
                payload: b"b2".to_vec(),
                acked_position: 4,
                final_position: 5,
            },
        );
    }

    #[test]
    fn a_misversioned_ack_is_found() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history.operations[6] = append(origin, 1, "b2", (41, 60), ok(5, "order-2", 2));
        assert_found(
            &history,
            Anomaly::MisversionedAck {
                op_index: 6,
                client: 1,
                payload: b"b2".to_vec(),
                acked: ("order-2".to_string(), 2),
                found: ("order-2".to_string(), 3),
            },
        );
    }

    #[test]
    fn a_duplicate_is_found() {
        let mut history = valid(Instant::now());
        history.final_log.push(entry(6, "a1", "order-1", 3));
        assert_found(
            &history,
            Anomaly::Duplicate {
                payload: b"a1".to_vec(),
                positions: vec![1, 6],
            },
        );
    }

    #[test]
    fn a_failed_append_that_is_present_is_found() {
        let mut history = valid(Instant::now());
        history.final_log.push(entry(6, "f1", "order-1", 3));
        assert_found(
            &history,
            Anomaly::FailedButPresent {
                op_index: 4,
                client: 2,
                payload: b"f1".to_vec(),
                position: 6,
            },
        );
    }

    #[test]
    fn a_reused_payload_is_found() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history
            .operations
            .push(append(origin, 2, "a1", (70, 80), AppendOutcome::Unknown));
        assert_found(
            &history,
            Anomaly::PayloadReused {
                payload: b"a1".to_vec(),
                op_indices: vec![0, 14],
            },
        );
    }

    #[test]
    fn a_gap_in_the_final_log_is_found() {
        let mut history = valid(Instant::now());
        history.final_log.remove(3);
        assert_found(
            &history,
            Anomaly::LogGap {
                missing_from: 4,
                missing_to: 4,
            },
        );
    }

    #[test]
    fn a_final_log_out_of_order_is_found() {
        let mut history = valid(Instant::now());
        history.final_log.swap(1, 2);
        assert_found(
            &history,
            Anomaly::LogDisorder {
                index: 2,
                position: 2,
                previous: 3,
            },
        );
    }

    #[test]
    fn an_entity_version_gap_is_found() {
        let mut history = valid(Instant::now());
        history.final_log[4].version = 4;
        assert_found(
            &history,
            Anomaly::EntityVersionGap {
                entity: "order-2".to_string(),
                position: 5,
                expected_version: 3,
                found_version: 4,
            },
        );
    }

    #[test]
    fn a_stale_linearizable_read_is_found() {
        let origin = Instant::now();
        for consistency in [Consistency::Linearizable, Consistency::Leader] {
            let mut history = valid(origin);
            // b2 was acknowledged at 5 by 60 ms; this read began later and stopped at 3.
            history
                .operations
                .push(read(origin, 0, consistency, (61, 62), 1, &LOG[..3], true));
            assert_found(
                &history,
                Anomaly::StaleRead {
                    op_index: 14,
                    client: 0,
                    read_through: 3,
                    required: 5,
                    witness: Witness::Append,
                    witness_op_index: 6,
                },
            );
        }
    }

    #[test]
    fn an_empty_window_that_misses_an_ack_is_stale() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history.operations.push(read(
            origin,
            0,
            Consistency::Linearizable,
            (61, 62),
            5,
            &[],
            true,
        ));
        assert_found(
            &history,
            Anomaly::StaleRead {
                op_index: 14,
                client: 0,
                read_through: 4,
                required: 5,
                witness: Witness::Append,
                witness_op_index: 6,
            },
        );
    }

    #[test]
    fn a_linearizable_read_behind_an_earlier_one_is_stale() {
        let origin = Instant::now();
        let mut history = valid(origin);
        // u3 was never acknowledged, so only the first read obliges the second to see it.
        history
            .operations
            .push(append(origin, 2, "u3", (70, 90), AppendOutcome::Unknown));
        history.final_log.push(entry(6, "u3", "order-1", 3));
        let mut seen = LOG.to_vec();
        seen.push((6, "u3"));
        history.operations.push(read(
            origin,
            1,
            Consistency::Linearizable,
            (80, 81),
            1,
            &seen,
            true,
        ));
        history.operations.push(read(
            origin,
            0,
            Consistency::Linearizable,
            (82, 83),
            1,
            &LOG,
            true,
        ));
        assert_found(
            &history,
            Anomaly::StaleRead {
                op_index: 16,
                client: 0,
                read_through: 5,
                required: 6,
                witness: Witness::Read,
                witness_op_index: 15,
            },
        );
    }

    #[test]
    fn stale_local_reads_or_reads_cut_short_are_allowed() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history.operations.push(read(
            origin,
            0,
            Consistency::Local,
            (61, 62),
            1,
            &LOG[..3],
            true,
        ));
        for consistency in [Consistency::Linearizable, Consistency::Leader] {
            history
                .operations
                .push(read(origin, 0, consistency, (61, 62), 1, &LOG[..3], false));
        }
        check(&history).assert_valid();
    }

    #[test]
    fn a_divergent_read_is_found() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history.operations.push(read(
            origin,
            1,
            Consistency::Local,
            (61, 62),
            1,
            &[(1, "a1"), (2, "zz")],
            true,
        ));
        assert_found(
            &history,
            Anomaly::DivergentRead {
                op_index: 14,
                client: 1,
                consistency: Consistency::Local,
                position: 2,
                read_payload: b"zz".to_vec(),
                final_payload: Some(b"b1".to_vec()),
            },
        );
    }

    #[test]
    fn a_read_past_the_final_log_is_divergent() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history.operations.push(read(
            origin,
            1,
            Consistency::Leader,
            (61, 62),
            5,
            &[(5, "b2"), (6, "ghost")],
            true,
        ));
        assert_found(
            &history,
            Anomaly::DivergentRead {
                op_index: 14,
                client: 1,
                consistency: Consistency::Leader,
                position: 6,
                read_payload: b"ghost".to_vec(),
                final_payload: None,
            },
        );
    }

    #[test]
    fn a_read_with_a_hole_is_found() {
        let origin = Instant::now();
        let mut history = valid(origin);
        history.operations.push(read(
            origin,
            1,
            Consistency::Local,
            (61, 62),
            1,
            &[(1, "a1"), (3, "a2")],
            true,
        ));
        assert_found(
            &history,
            Anomaly::ReadNotContiguous {
                op_index: 14,
                client: 1,
                expected_position: 2,
                found_position: 3,
            },
        );
    }

    #[test]
    fn a_subscription_gap_is_found() {
        let mut history = valid(Instant::now());
        history.operations[12] = Operation::Subscription {
            node: "n1".to_string(),
            from: 1,
            seen: run(&[(1, "a1"), (2, "b1"), (4, "u1"), (5, "b2")]),
        };
        assert_found(
            &history,
            Anomaly::SubscriptionGap {
                op_index: 12,
                node: "n1".to_string(),
                seen_index: 2,
                expected_position: 3,
                found_position: 4,
            },
        );
    }

    #[test]
    fn a_subscription_duplicate_and_a_late_start_are_found() {
        let mut history = valid(Instant::now());
        history.operations[12] = Operation::Subscription {
            node: "n1".to_string(),
            from: 1,
            seen: run(&[(2, "b1"), (3, "a2"), (3, "a2")]),
        };
        assert_found(
            &history,
            Anomaly::SubscriptionGap {
                op_index: 12,
                node: "n1".to_string(),
                seen_index: 0,
                expected_position: 1,
                found_position: 2,
            },
        );
        assert_found(
            &history,
            Anomaly::SubscriptionGap {
                op_index: 12,
                node: "n1".to_string(),
                seen_index: 2,
                expected_position: 4,
                found_position: 3,
            },
        );
    }

    #[test]
    fn a_subscription_that_diverges_is_found() {
        let mut history = valid(Instant::now());
        history.operations[13] = Operation::Subscription {
            node: "n2".to_string(),
            from: 3,
            seen: run(&[(3, "a2"), (4, "xx")]),
        };
        assert_found(
            &history,
            Anomaly::SubscriptionDivergent {
                op_index: 13,
                node: "n2".to_string(),
                position: 4,
                seen_payload: b"xx".to_vec(),
                final_payload: Some(b"u1".to_vec()),
            },
        );
    }

    #[test]
    fn node_divergence_is_found() {
        let mut history = valid(Instant::now());
        history.node_logs[2].entries[1].1 = b"x".to_vec();
        assert_found(
            &history,
            Anomaly::NodeDivergence {
                node_a: "n1".to_string(),
                node_b: "n3".to_string(),
                position: 3,
                payload_a: b"a2".to_vec(),
                payload_b: b"x".to_vec(),
            },
        );
        assert_found(
            &history,
            Anomaly::NodeDivergence {
                node_a: "n3".to_string(),
                node_b: FINAL_LOG_NAME.to_string(),
                position: 3,
                payload_a: b"x".to_vec(),
                payload_b: b"a2".to_vec(),
            },
        );
    }

    #[test]
    fn a_gap_in_a_node_log_is_found() {
        let mut history = valid(Instant::now());
        history.node_logs[0].entries.remove(2);
        assert_found(
            &history,
            Anomaly::NodeLogGap {
                node: "n1".to_string(),
                expected_position: 3,
                found_position: 4,
            },
        );
    }

    #[test]
    fn anomalies_read_as_sentences_with_their_evidence() {
        let lost = Anomaly::LostAck {
            op_index: 3,
            client: 1,
            payload: b"w1-7".to_vec(),
            position: 42,
        };
        assert_eq!(
            lost.to_string(),
            "lost ack: append #3 by client 1 of \"w1-7\" was acknowledged at position 42 but is not in the final log"
        );
        let divergent = Anomaly::DivergentRead {
            op_index: 9,
            client: 0,
            consistency: Consistency::Leader,
            position: 7,
            read_payload: vec![0, 255],
            final_payload: None,
        };
        assert_eq!(
            divergent.to_string(),
            "divergent read: Leader read #9 by client 0 returned 0x00ff at position 7 but the final log holds nothing there"
        );
        let long = Anomaly::Duplicate {
            payload: vec![b'p'; PAYLOAD_SHOWN_BYTES_MAX + 5],
            positions: vec![1, 2],
        };
        assert!(long.to_string().contains("...(+5 bytes)"), "{long}");
    }
}
