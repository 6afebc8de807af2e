//! Integration tests of `causewayd`: real server processes on 127.0.0.1, driven through the
//! generated gRPC client, one module per scenario.
//!
//! - `unary`: the normal path of every unary RPC.
//! - `append_stream`: appends over one stream: order, refusals in place, the request budget.
//! - `auth`: principals and permissions on every RPC, filtered reads and subscriptions,
//!   policy reload, JWT and mTLS identities, per-principal limits.
//! - `abuse`: rapid reset, a subscriber that never reads, and the budget of request bytes.
//! - `errors`: bad input, limits, unknown ids, denials and conflicts, and their statuses.
//! - `bad_input`: malformed, oversized and out-of-range input on every RPC, as raw frames.
//! - `overload`: a full pool and too many subscriptions are refused at once, nothing hangs.
//! - `shutdown`: SIGTERM with appends in flight loses nothing acknowledged.
//! - `subscribe`: the subscription contract under concurrent writers, and resuming it.
//! - `operations`: health, reflection, compression, and where settings come from.
//! - `backup`: backup under load, restore into a fresh node, damaged backups refused.
//! - `monitor`: the admin port's metrics and readiness, health after a failed write, and logs.
//! - `console`: the web console's JSON API and live tail on the admin port, and its bounds.
//! - `integrity`: segments edited on disk: Verify and the scrubber name a tampered event,
//!   recovery quarantines a damaged tail, `causewayd repair` cuts what open refuses.
//! - `tls`: TLS and mutual TLS handshakes, node identity between peers, reload, and the
//!   refusal of plaintext beyond loopback.

mod abuse;
mod append_stream;
mod auth;
mod backup;
mod bad_input;
mod console;
mod errors;
mod harness;
mod integrity;
mod monitor;
mod operations;
mod overload;
mod shutdown;
mod subscribe;
mod tls;
mod unary;
