//! `causewayd`: reads the configuration, sets up logging, and serves until SIGINT or SIGTERM.
//!
//! The first line on stdout is `listening on ADDR`, printed once the store is open and the
//! address bound, so scripts and tests that pass `--listen 127.0.0.1:0` learn the port. Logs go
//! to stderr; `RUST_LOG` filters them (default `info`).

use std::io::IsTerminal;

use causeway_server::{Config, Server, shutdown_signal};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    if let Some(restored) = causeway_server::restore::run_if_requested() {
        return restored;
    }
    let config = Config::load()?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into log files or collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.async_threads)
        .enable_all()
        .thread_name("causeway-async")
        .build()?;
    runtime.block_on(async {
        let server = Server::bind(&config).await?;
        println!("listening on {}", server.local_addr());
        server.serve(shutdown_signal()).await?;
        Ok(())
    })
}
