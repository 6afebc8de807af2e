//! `causewayd`: reads the configuration, sets up logging, and serves until SIGINT or SIGTERM;
//! `causewayd restore --from DIR --data-dir NEW` makes a data directory of a backup instead,
//! and `causewayd repair --data-dir DIR --truncate-at-frame N` cuts a damaged log (`repair.rs`).
//!
//! The first line on stdout is `listening on ADDR`, printed once the store is open and the
//! address bound, so scripts and tests that pass `--listen 127.0.0.1:0` learn the port; the
//! second is `admin on ADDR` (or `admin off`). Logs go to stderr, as text at a terminal and as
//! JSON lines otherwise (`--log-format`); `RUST_LOG` filters them (default `info`). The first
//! log line gives the version and the effective configuration. A start-up failure is one line
//! on stderr and exit status 1, whatever `RUST_BACKTRACE` says.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use causeway_server::config::LogFormat;
use causeway_server::{Config, Server, shutdown_signal};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of the system allocator: glibc's gave whole pages back to the kernel and
/// faulted them in again, zeroed, for the buffers that Raft traffic allocates and frees per
/// batch (a seventh of a cluster node's CPU went to clearing pages; mimalloc, which purges
/// freed pages at once, was worse). Measured in docs/BENCHMARKS.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    if let Some(exit) = causeway_server::repair::run_if_requested() {
        return exit;
    }
    if let Some(restored) = causeway_server::restore::run_if_requested() {
        return match restored {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("causewayd restore: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("causewayd: {err}");
            return ExitCode::FAILURE;
        }
    };
    let json = init_logs(config.log_format);
    log_start(&config, json);
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: a JSON line among JSON lines, else a plain one.
            if json {
                tracing::error!(error = %err, "causewayd stopped");
            } else {
                eprintln!("causewayd: {err}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    // One async thread (the default on two CPUs) is a current-thread runtime, whose queue is
    // first in, first out: the answers of a commit group all reach HTTP/2 before their
    // connection is polled, and leave in one write. The multi-thread scheduler runs a task
    // woken by the running one next (its LIFO slot), so each answer was flushed by itself
    // (docs/BENCHMARKS.md, "One write for a group's answers").
    let mut builder = if config.async_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(config.async_threads);
        builder
    };
    let runtime = builder.enable_all().thread_name("causeway-async").build()?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        let admin = server
            .admin_addr()
            .map_or_else(|| "off".to_string(), |addr| format!("on {addr}"));
        // Both lines in one write, and a reader that has gone away is no failure: a script
        // may read the first line and close the pipe.
        {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(
                stdout,
                "listening on {}\nadmin {admin}\n",
                server.local_addr()
            )
            .and_then(|()| stdout.flush());
        }
        server.serve(shutdown_signal()).await?;
        Ok(())
    })
}

/// Sets up logging; says whether lines are JSON.
fn init_logs(format: Option<LogFormat>) -> bool {
    let at_terminal = std::io::stderr().is_terminal();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // A log line that cannot be written (a full disk under the log file) is dropped;
        // reporting it would print to the same stderr, which panics when that fails.
        .log_internal_errors(false)
        .with_env_filter(filter);
    match format.unwrap_or(if at_terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    }) {
        // Colour codes only for a person at a terminal, never into log files or collectors.
        LogFormat::Text => {
            logs.with_ansi(at_terminal).init();
            false
        }
        LogFormat::Json => {
            logs.json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .init();
            true
        }
    }
}

/// The first log line: what runs, with which settings (there are no secrets among them: the
/// signing key is named by its file, never read into the log; so are the TLS files).
fn log_start(config: &Config, json: bool) {
    let data_dir = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %data_dir.display(),
        listen = %config.listen,
        admin_listen = config.admin_listen.map(|addr| addr.to_string()),
        durability = ?config.durability,
        async_threads = config.async_threads,
        pool_threads = config.pool_threads,
        pool_queue = config.pool_queue,
        max_subscriptions = config.max_subscriptions,
        max_connections = config.max_connections,
        max_in_flight_request_bytes = config.max_in_flight_request_bytes,
        max_connection_age_secs = config.max_connection_age.map(|age| age.as_secs()),
        log_format = if json { "json" } else { "text" },
        signing_key = config.signing_key.as_ref().map(|path| path.display().to_string()),
        record_denials = config.record_denials,
        scrub_bytes_per_sec = config.scrub_bytes_per_sec,
        writer_spin_us = config.writer_spin.as_micros() as u64,
        tls_cert = config.tls.as_ref().map(|tls| tls.cert.display().to_string()),
        tls_client_ca = config
            .tls
            .as_ref()
            .and_then(|tls| tls.client_ca.as_ref())
            .map(|ca| ca.display().to_string()),
        insecure = config.insecure,
        compress_responses = config.compress_responses,
        node_id = config.cluster.as_ref().map(|cluster| cluster.node_id),
        advertise = config.cluster.as_ref().map(|cluster| cluster.advertise.as_str()),
        heartbeat_ms = config.cluster.as_ref().map(|cluster| cluster.heartbeat.as_millis() as u64),
        election_timeout_ms = config
            .cluster
            .as_ref()
            .map(|cluster| cluster.election_timeout.as_millis() as u64),
        snapshot_entries = config.cluster.as_ref().map(|cluster| cluster.snapshot_entries),
        log_keep_entries = config.cluster.as_ref().map(|cluster| cluster.log_keep_entries),
        "causewayd {} starting",
        env!("CARGO_PKG_VERSION")
    );
}
