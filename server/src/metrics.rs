//! What the server counts, and the Prometheus recorder it is counted into.
//!
//! Everything goes through the `metrics` facade: the core records its fsync latency, commit
//! group sizes and write queue depth the same way, and a process without a recorder (the core's
//! own tests, a library user) pays next to nothing. [`install`] sets one Prometheus recorder per
//! process; the admin port renders it at `/metrics` after [`sample`] has set the gauges that
//! are read rather than counted (head, index memory, segments, subscriptions, Raft state).
//!
//! Names follow Prometheus conventions: a `causeway_` prefix, the unit last (`_seconds`,
//! `_bytes`), `_total` on counters. Labels are bounded sets: an RPC method is one the server
//! serves (any other is `unknown`), a gRPC code is one of seventeen, and a denial's gate and
//! code are those of a registered gate (at most `GATES_MAX`). docs/OPERATIONS.md lists them.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::cluster::node::ClusterNode;
use crate::live::LiveStore;
use crate::status::REASON_VERSION_CONFLICT;
use crate::subscribe::Hub;

/// Bucket bounds for durations, in seconds: 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
/// Bucket bounds for counts (group sizes, lags): powers of four up to about a million.
const COUNT_BUCKETS: &[f64] = &[
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
];
/// How often histograms and idle series are tidied when nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process's Prometheus recorder, once; later calls return the same handle. `None`
/// if another recorder was installed first (a library user's own).
pub fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), SECONDS_BUCKETS)
                .and_then(|builder| builder.set_buckets(COUNT_BUCKETS))
                .map(|builder| builder.build_recorder());
            let recorder = match recorder {
                Ok(recorder) => recorder,
                Err(err) => {
                    tracing::error!(%err, "metrics recorder not built; /metrics stays empty");
                    return None;
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
                return None;
            }
            describe();
            gauge!("causeway_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        "causeway_appends_total",
        "Append RPCs answered, by outcome: ok, denied, conflict, or the gRPC code of any other failure."
    );
    describe_counter!(
        "causeway_append_events_total",
        "Events in append RPCs answered, by the append's outcome (as causeway_appends_total)."
    );
    describe_counter!(
        "causeway_denials_total",
        "Appends refused by a gate, by gate name and the gate's code."
    );
    describe_counter!(
        "causeway_conflicts_total",
        "Appends refused because an expected version did not hold."
    );
    describe_counter!(
        "causeway_grpc_requests_total",
        "gRPC requests answered, by method and code (the code of a stream's first answer)."
    );
    describe_histogram!(
        "causeway_grpc_request_duration_seconds",
        Unit::Seconds,
        "Time from a gRPC request's arrival to its response headers, by method."
    );
    describe_histogram!(
        "causeway_fsync_duration_seconds",
        Unit::Seconds,
        "Time of each fsync of a log, by the thread that syncs (causeway-sync: the store; causeway-raft-sync: the Raft log)."
    );
    describe_histogram!(
        "causeway_fsync_groups",
        "Written groups one fsync made durable."
    );
    describe_histogram!(
        "causeway_commit_group_appends",
        "Appends (and other commands) the store's writer decided and wrote as one group."
    );
    describe_gauge!(
        "causeway_write_queue_depth",
        "Commands waiting for the store's writer."
    );
    describe_gauge!(
        "causeway_pool_queue_depth",
        "Store calls waiting for a thread of the blocking pool."
    );
    describe_counter!(
        "causeway_pool_refusals_total",
        "Store calls refused because the blocking pool's queue was full (RESOURCE_EXHAUSTED)."
    );
    describe_gauge!("causeway_subscriptions", "Subscriptions open.");
    describe_counter!(
        "causeway_scrub_bytes_total",
        Unit::Bytes,
        "Bytes of sealed segments the background scrubber has re-checked."
    );
    describe_counter!(
        "causeway_scrub_segments_total",
        "Sealed segments the background scrubber has re-checked."
    );
    describe_counter!(
        "causeway_scrub_passes_total",
        "Passes of the background scrubber over every sealed segment."
    );
    describe_counter!(
        "causeway_scrub_breaks_total",
        "Breaks (a damaged frame or a hash that differs) the background scrubber has found."
    );
    describe_gauge!(
        "causeway_subscription_buffered_bytes",
        Unit::Bytes,
        "Encoded bytes of messages queued in every subscription's buffer, not yet taken by its connection."
    );
    describe_gauge!(
        "causeway_request_bytes_in_flight",
        Unit::Bytes,
        "Bytes of requests counted against max_in_flight_request_bytes now."
    );
    describe_counter!(
        "causeway_request_budget_refusals_total",
        "Calls refused because their bytes did not fit in max_in_flight_request_bytes (RESOURCE_EXHAUSTED)."
    );
    describe_histogram!(
        "causeway_subscription_lag_events",
        "Positions between a subscription's read and the head, sampled at each read."
    );
    describe_gauge!(
        "causeway_tls_certificate_expiry_seconds",
        Unit::Seconds,
        "Seconds until the TLS certificate in use expires; negative once it has. Absent without TLS."
    );
    describe_gauge!("causeway_head_position", "The committed head of the log.");
    describe_gauge!(
        "causeway_index_memory_bytes",
        Unit::Bytes,
        "Approximate memory held by the store's indexes."
    );
    describe_gauge!("causeway_segments", "Segment files of the event log.");
    describe_gauge!(
        "causeway_segment_bytes",
        Unit::Bytes,
        "Bytes on disk of the event log's segment files, reserved space included."
    );
    describe_gauge!(
        "causeway_ready",
        "1 while the node serves (store open and writable, and in a cluster a leader known), else 0."
    );
    describe_gauge!(
        "causeway_build_info",
        "Always 1; the version label says which build runs."
    );
    describe_gauge!("causeway_raft_term", "The node's current Raft term.");
    describe_gauge!(
        "causeway_raft_role",
        "1 for the role the node has now (leader, follower, candidate, learner), 0 for the others."
    );
    describe_gauge!(
        "causeway_raft_commit_index",
        "The highest Raft log index this node knows committed."
    );
    describe_gauge!(
        "causeway_raft_applied_index",
        "The highest Raft log index applied to this node's store."
    );
    describe_gauge!(
        "causeway_raft_follower_lag_entries",
        "On the leader: entries each follower is behind the leader's last log index."
    );
}

/// Counts an answered append of `n_events` events: by outcome, and a denial by gate and code.
pub fn append_answered(n_events: u64, result: Result<(), &Status>) {
    let outcome = match result {
        Ok(()) => "ok",
        Err(status) => refusal(status),
    };
    counter!("causeway_appends_total", "outcome" => outcome).increment(1);
    counter!("causeway_append_events_total", "outcome" => outcome).increment(n_events);
}

/// What a failed append counts as: a conflict, a denial (counted by gate and code), or its code.
fn refusal(status: &Status) -> &'static str {
    if status.code() == Code::FailedPrecondition
        && let Some(info) = status.get_details_error_info()
    {
        if info.reason == REASON_VERSION_CONFLICT {
            counter!("causeway_conflicts_total").increment(1);
            return "conflict";
        }
        if let Some(gate) = info.metadata.get("gate") {
            counter!("causeway_denials_total", "gate" => gate.clone(), "code" => info.reason)
                .increment(1);
            return "denied";
        }
    }
    code_name(status.code())
}

/// A gRPC code as the protocol spells it (`INVALID_ARGUMENT`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Sets the gauges that are read rather than counted, just before a scrape renders them.
pub fn sample(store: &LiveStore, cluster: Option<&ClusterNode>, hub: &Hub) {
    let store = store.get();
    gauge!("causeway_head_position").set(store.head().0 as f64);
    gauge!("causeway_index_memory_bytes").set(store.index_heap_bytes() as f64);
    match store.disk_usage() {
        Ok((n_segments, bytes)) => {
            gauge!("causeway_segments").set(n_segments as f64);
            gauge!("causeway_segment_bytes").set(bytes as f64);
        }
        Err(err) => tracing::warn!(%err, "reading the segment sizes for /metrics"),
    }
    gauge!("causeway_subscriptions").set(hub.open() as f64);
    if let Some(seconds) = crate::tls::certificate_expiry_seconds(std::time::SystemTime::now()) {
        gauge!("causeway_tls_certificate_expiry_seconds").set(seconds);
    }
    if let Some(node) = cluster {
        sample_raft(node);
    }
}

fn sample_raft(node: &ClusterNode) {
    use crate::pb::NodeRole;
    let status = node.status();
    gauge!("causeway_raft_term").set(status.term as f64);
    let role = status.role();
    for (each, name) in [
        (NodeRole::Leader, "leader"),
        (NodeRole::Follower, "follower"),
        (NodeRole::Candidate, "candidate"),
        (NodeRole::Learner, "learner"),
        (NodeRole::Shutdown, "shutdown"),
    ] {
        gauge!("causeway_raft_role", "role" => name).set(if each == role { 1.0 } else { 0.0 });
    }
    gauge!("causeway_raft_commit_index").set(status.committed_index as f64);
    gauge!("causeway_raft_applied_index").set(status.applied_index as f64);
    for replication in status.replication {
        gauge!("causeway_raft_follower_lag_entries", "follower" => replication.node_id.to_string())
            .set(replication.lag as f64);
    }
}
