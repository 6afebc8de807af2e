//! `causeway`: the command-line client of the Causeway event store.
//!
//! Appends events under conditions, reads them back, follows the log, draws the causal graph,
//! administers gates and verifies receipts (by the server, or offline with the server's public
//! key), administers a cluster (`cluster init`, membership changes, `cluster status`), takes
//! backups (`backup --to DIR`), and answers container health checks (`health`).
//! Every command talks to the server, or to a cluster's members, named by `--server` (or
//! `CAUSEWAY_SERVER`; several comma-separated, and requests follow the leader) through
//! `causeway_client`, except `verify --offline`, which needs no server. Output is a table for
//! people or JSON for programs (`--output json`); the JSON shapes are described in `json.rs`.
//! An error prints one line on stderr (`error: ...`, a denial with its gate, code and facts)
//! and exits with a status by its class (`exit.rs`: 1 usage, 2 refused, 3 not found,
//! 4 unavailable, 5 the server failed).

mod args;
mod bench;
mod cluster;
mod commands;
mod exit;
mod graph;
mod json;
mod table;

use std::process::ExitCode;

use clap::Parser as _;

/// jemalloc, as in `causewayd`: decoding a page of events is mostly small allocations, and
/// glibc's malloc spent a quarter of `causeway bench read`'s CPU (perf; docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with status 0; a usage error is status 1, not
            // clap's 2, which here means refused.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match commands::run(cli).await {
        Ok(code) => code,
        // The reader of our output went away (`causeway read log | head`): nothing is wrong.
        Err(err) if err.is::<commands::ClosedStdout>() => ExitCode::SUCCESS,
        Err(err) => {
            let chain = causeway_client::follow::error_chain(err.as_ref());
            eprintln!("error: {}", one_line(&chain));
            ExitCode::from(exit::status_of(&err))
        }
    }
}

/// Folds a multi-line message (a CEL parser's caret diagram, say) onto one line, so every error
/// is one line on stderr.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_folded_onto_one_line() {
        assert_eq!(
            one_line("bad input\n| x ==\n|   ^\n"),
            "bad input | x == |   ^"
        );
        assert_eq!(one_line("plain"), "plain");
    }
}
