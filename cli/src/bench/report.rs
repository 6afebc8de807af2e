//! What a bench run found, its verdict, and its two printed forms: a `key: value` listing for
//! people and one JSON document for programs (`--output json`).
//!
//! The verdict is strict: a run fails when any request failed (whatever its code), when the
//! head did not move by exactly the number of acknowledged events, or when a subscriber missed
//! an event. The report is printed either way, and `failures` says why.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use num_format::{Locale, ToFormattedString as _};
use serde_json::{Value, json};

use crate::bench::fsync::FsyncProbe;
use crate::bench::load::{ErrorCounts, Measured, per_second};
use crate::bench::subscribe::Deliveries;
use crate::bench::{BenchArgs, ReadVia, Workload};
use crate::table;

/// The head before and after the measured run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HeadCheck {
    /// The head position just before the run.
    pub before: u64,
    /// The head position just after it.
    pub after: u64,
    /// Events the server acknowledged during the run.
    pub acknowledged: u64,
}

impl HeadCheck {
    /// How far the head moved (negative if it went back, which it never should).
    pub fn moved(&self) -> i128 {
        i128::from(self.after) - i128::from(self.before)
    }

    /// True when the head moved by exactly the acknowledged events.
    pub fn ok(&self) -> bool {
        self.moved() == i128::from(self.acknowledged)
    }
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    /// What was asked for.
    pub args: BenchArgs,
    /// The server's address as given.
    pub server: String,
    /// The scope written to.
    pub scope: String,
    /// The gates registered for the run (and removed after it).
    pub gates: Vec<String>,
    /// The fsync probe, with `--fsync-probe`.
    pub fsync: Option<FsyncProbe>,
    /// The head ceiling, with `--ceiling`.
    pub ceiling: Option<Measured>,
    /// The workload's requests (for `subscribe`, the writer's appends).
    pub main: Measured,
    /// The head check.
    pub head: HeadCheck,
    /// What the subscribers received, for `subscribe`.
    pub deliveries: Option<Deliveries>,
}

impl Report {
    /// Why the run failed; empty when it did not.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let failed = self.main.errors.total();
        if failed > 0 {
            failures.push(format!(
                "{} requests failed: {}",
                thousands(failed),
                self.main.errors.summary()
            ));
        }
        if let Some(ceiling) = self.ceiling.as_ref().filter(|c| c.errors.total() > 0) {
            failures.push(format!(
                "{} head requests of the ceiling failed: {}",
                thousands(ceiling.errors.total()),
                ceiling.errors.summary()
            ));
        }
        if !self.head.ok() {
            failures.push(format!(
                "head check failed: the head moved by {} (from {} to {}) but {} events were \
                 acknowledged; another writer on this server, refused appends recorded by \
                 --record-denials, or a request whose outcome is unknown breaks it",
                self.head.moved(),
                self.head.before,
                self.head.after,
                self.head.acknowledged
            ));
        }
        if let Some(deliveries) = &self.deliveries {
            if deliveries.missing() != 0 {
                failures.push(format!(
                    "subscribers received {} events, expected {} ({} subscribers x {})",
                    deliveries.delivered,
                    u128::from(deliveries.expected_each) * u128::from(deliveries.subscribers),
                    deliveries.subscribers,
                    deliveries.expected_each
                ));
            }
            if deliveries.errors.total() > 0 {
                failures.push(format!(
                    "subscriptions failed: {}",
                    deliveries.errors.summary()
                ));
            }
        }
        failures
    }

    /// The report as one JSON document.
    pub fn json(&self) -> Value {
        let args = &self.args;
        let failures = self.failures();
        let settings = json!({
            "connections": args.connections,
            "in_flight": args.in_flight,
            "requests": args.requests,
            "duration_s": args.duration.map(|duration| duration.as_secs_f64()),
            "warmup_s": args.warmup.as_secs_f64(),
            "events_per_request": args.events_per_request,
            "payload_bytes": args.payload_bytes,
            "entities": args.entities,
            "distribution": args.distribution.name(),
            "zipf_exponent": args.zipf_exponent,
            "expect": args.expect.name(),
            "gates": args.gates,
            "seed": args.seed,
            "append_via": args.append_via.name(),
            "read_via": args.read_via.name(),
            // A stream's pages are the server's size, not --read-batch.
            "read_batch": (args.read_via == ReadVia::Pages).then_some(args.read_batch),
            "subscribers": args.subscribers,
            "rate": args.rate,
            "compression": args.compression.name(),
            "threads": args.threads,
        });
        let main = &self.main;
        json!({
            "workload": args.workload.name(),
            "server": self.server,
            "scope": self.scope,
            "gates": self.gates,
            "settings": settings,
            "elapsed_s": main.elapsed().as_secs_f64(),
            "requests": { "ok": main.ok, "failed": main.errors.total() },
            "events": main.events,
            "requests_per_s": main.requests_per_s(),
            "events_per_s": main.events_per_s(),
            "latency_ms": latency_json(&main.latency),
            "errors": errors_json(&main.errors),
            "head_check": {
                "before": self.head.before,
                "after": self.head.after,
                "moved": self.head.moved() as i64,
                "acknowledged_events": self.head.acknowledged,
                "ok": self.head.ok(),
            },
            "ceiling": self.ceiling.as_ref().map(|ceiling| json!({
                "requests_per_s": ceiling.requests_per_s(),
                "latency_ms": latency_json(&ceiling.latency),
                "failed": ceiling.errors.total(),
                "ratio": ratio(main.requests_per_s(), ceiling.requests_per_s()),
            })),
            "fsync": self.fsync.as_ref().map(|probe| json!({
                "syncs_per_s": per_second(probe.syncs, probe.elapsed),
                "latency_ms": latency_json(&probe.latency),
            })),
            "subscribe": self.deliveries.as_ref().map(|deliveries| json!({
                "subscribers": deliveries.subscribers,
                "rate_target": deliveries.rate_target,
                "expected_each": deliveries.expected_each,
                "delivered": deliveries.delivered,
                "missing": deliveries.missing() as i64,
                "delivery_latency_ms": latency_json(&deliveries.latency),
                "errors": errors_json(&deliveries.errors),
            })),
            "ok": failures.is_empty(),
            "failures": failures,
        })
    }

    /// The report as a listing for people.
    pub fn table(&self) -> String {
        let args = &self.args;
        let main = &self.main;
        let mut fields: Vec<(&str, String)> = vec![
            ("workload", self.describe()),
            ("server", self.server.clone()),
            (
                "load",
                format!(
                    "{} connections, {} in flight, {} client threads, compression {}",
                    args.connections,
                    args.in_flight,
                    args.threads,
                    args.compression.name()
                ),
            ),
            ("measured", format!("{:.2} s", main.elapsed().as_secs_f64())),
            (
                "requests",
                format!(
                    "{} ok, {} failed",
                    thousands(main.ok),
                    thousands(main.errors.total())
                ),
            ),
            (
                "throughput",
                format!(
                    "{} requests/s, {} events/s",
                    rate(main.requests_per_s()),
                    rate(main.events_per_s())
                ),
            ),
            ("latency", latency_line(&main.latency)),
        ];
        if main.errors.total() > 0 {
            fields.push(("errors", main.errors.summary()));
            for (code, errors) in &main.errors.by_code {
                fields.push(("first error", format!("{code}: {}", errors.example)));
            }
        }
        if let Some(deliveries) = &self.deliveries {
            fields.push((
                "subscribers",
                format!(
                    "{} following at a target of {} appends/s; {} of {} deliveries",
                    deliveries.subscribers,
                    thousands(u64::from(deliveries.rate_target)),
                    thousands(deliveries.delivered),
                    thousands(deliveries.expected_each * deliveries.subscribers)
                ),
            ));
            fields.push(("delivery latency", latency_line(&deliveries.latency)));
        }
        let verdict = if self.head.ok() { "ok" } else { "FAILED" };
        fields.push((
            "head check",
            format!(
                "{verdict}: {} -> {}, moved {}, {} events acknowledged",
                self.head.before,
                self.head.after,
                self.head.moved(),
                thousands(self.head.acknowledged)
            ),
        ));
        if let Some(ceiling) = &self.ceiling {
            fields.push((
                "head ceiling",
                format!(
                    "{} requests/s, p50 {} ms; this run is {:.2}x of it",
                    rate(ceiling.requests_per_s()),
                    ms(ceiling.latency.value_at_quantile(0.5)),
                    ratio(main.requests_per_s(), ceiling.requests_per_s())
                ),
            ));
        }
        if let Some(probe) = &self.fsync {
            fields.push((
                "fsync 4 KiB",
                format!(
                    "{} syncs/s, p50 {} ms, p99 {} ms",
                    rate(per_second(probe.syncs, probe.elapsed)),
                    ms(probe.latency.value_at_quantile(0.5)),
                    ms(probe.latency.value_at_quantile(0.99))
                ),
            ));
        }
        if !self.gates.is_empty() {
            fields.push(("gates", self.gates.join(", ")));
        }
        for failure in self.failures() {
            fields.push(("FAILURE", failure));
        }
        table::listing(&fields)
    }

    /// `append, 1 event/request of 256 B, 10,000 entities uniform, expect none, scope ...`.
    fn describe(&self) -> String {
        let args = &self.args;
        let appends = format!(
            "{} event{} per request of {} B, {} entities {}, expect {}{}",
            args.events_per_request,
            if args.events_per_request == 1 {
                ""
            } else {
                "s"
            },
            args.payload_bytes,
            thousands(args.entities),
            args.distribution.name(),
            args.expect.name(),
            if args.gates { ", 3 CEL gates" } else { "" }
        );
        match args.workload {
            Workload::Append => format!("append, {appends}, scope {}", self.scope),
            Workload::Subscribe => format!(
                "subscribe, {} subscribers, writer {}, scope {}",
                args.subscribers, appends, self.scope
            ),
            Workload::Read => match args.read_via {
                ReadVia::Pages => format!(
                    "read, {} events per request from position 1",
                    args.read_batch
                ),
                ReadVia::Stream => "read, streamed: one Subscribe from position 1 per pass; a \
                                    request is one message of events (the server's page), and \
                                    the end of a pass one more"
                    .to_string(),
            },
            Workload::Head => "head".to_string(),
        }
    }
}

/// `a / b`, 0 when `b` is 0.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn latency_json(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return Value::Null;
    }
    let at = |quantile| histogram.value_at_quantile(quantile) as f64 / 1e6;
    json!({
        "count": histogram.len(),
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "p99_9": at(0.999),
        "max": histogram.max() as f64 / 1e6,
        "mean": histogram.mean() / 1e6,
    })
}

fn latency_line(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "none measured".to_string();
    }
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.9)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max())
    )
}

fn errors_json(errors: &ErrorCounts) -> Value {
    let by_code: BTreeMap<&str, Value> = errors
        .by_code
        .iter()
        .map(|(code, errors)| {
            (
                *code,
                json!({
                    "count": errors.count,
                    "reasons": errors.reasons,
                    "example": errors.example,
                }),
            )
        })
        .collect();
    json!(by_code)
}

/// Nanoseconds as milliseconds with three decimals.
fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

/// A rate rounded to a whole number, with thousands separators.
fn rate(per_second: f64) -> String {
    thousands(per_second.round() as u64)
}

/// `12,345,678`.
pub fn thousands(n: u64) -> String {
    n.to_formatted_string(&Locale::en)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_head_check_needs_an_exact_match() {
        let check = |after| HeadCheck {
            before: 10,
            after,
            acknowledged: 5,
        };
        assert!(check(15).ok());
        assert!(!check(16).ok(), "a foreign event");
        assert!(!check(14).ok(), "an acknowledged event that is not there");
        assert_eq!(check(16).moved(), 6);
    }
}
