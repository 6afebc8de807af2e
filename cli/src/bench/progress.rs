//! Progress while a phase runs, on stderr so stdout keeps only the report: an indicatif bar
//! when stderr is a terminal, else a plain line when the phase starts and one per second, and
//! nothing with `--quiet`.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bench::load::{Counters, per_second};
use crate::bench::report::thousands;

/// How often the bar is redrawn.
const BAR_TICK: Duration = Duration::from_millis(100);
/// How often a plain progress line is printed.
const LINE_TICK: Duration = Duration::from_secs(1);

/// How progress is shown.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A bar that redraws in place.
    Bar,
    /// A plain line per second.
    Lines,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// The bar for a terminal, lines otherwise, nothing when `quiet`.
    pub fn detect(quiet: bool) -> Mode {
        if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        }
    }

    /// Prints one note (a plain line, or above the bar), unless quiet.
    pub fn note(self, text: &str) {
        if self != Mode::Quiet {
            eprintln!("{text}");
        }
    }
}

/// A running progress display; [`Progress::finish`] stops it.
#[derive(Debug)]
pub struct Progress {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows the progress of phase `label`, which ends after `requests` requests or `duration`.
    pub fn start(
        mode: Mode,
        label: &str,
        requests: Option<u64>,
        duration: Option<Duration>,
        counters: Arc<Counters>,
    ) -> Progress {
        let (stop, stopped) = watch::channel(false);
        let label = label.to_string();
        let task = match mode {
            Mode::Quiet => None,
            Mode::Bar => Some(tokio::spawn(bar(
                label, requests, duration, counters, stopped,
            ))),
            Mode::Lines => {
                eprintln!("bench {label}: running");
                Some(tokio::spawn(lines(label, counters, stopped)))
            }
        };
        Progress { stop, task }
    }

    /// Stops the display and clears the bar.
    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn status_line(counters: &Counters, elapsed: Duration) -> String {
    let finished = counters.finished.load(Ordering::Relaxed);
    let failed = counters.failed.load(Ordering::Relaxed);
    format!(
        "{} requests, {}/s, {} errors",
        thousands(finished),
        thousands(per_second(finished, elapsed).round() as u64),
        thousands(failed)
    )
}

async fn bar(
    label: String,
    requests: Option<u64>,
    duration: Option<Duration>,
    counters: Arc<Counters>,
    mut stopped: watch::Receiver<bool>,
) {
    // Whichever bound comes first ends the phase; the bar follows the count when there is one.
    let (length, template) = match (requests, duration) {
        (Some(requests), _) => (
            requests,
            "{prefix} [{elapsed}] {wide_bar} {pos}/{len} {msg}",
        ),
        (None, Some(duration)) => (
            u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            "{prefix} [{elapsed}] {wide_bar} {msg}",
        ),
        (None, None) => (0, "{prefix} [{elapsed}] {msg}"),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let progress = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_prefix(label);
    let start = Instant::now();
    let mut ticker = tokio::time::interval(BAR_TICK);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            _ = ticker.tick() => {}
        }
        let elapsed = start.elapsed();
        let position = match requests {
            Some(_) => counters.finished.load(Ordering::Relaxed),
            None => u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        };
        progress.set_position(position.min(length));
        progress.set_message(status_line(&counters, elapsed));
    }
    progress.finish_and_clear();
}

async fn lines(label: String, counters: Arc<Counters>, mut stopped: watch::Receiver<bool>) {
    let start = Instant::now();
    let mut ticker = tokio::time::interval(LINE_TICK);
    // The first tick is immediate; the start line was already printed.
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        let elapsed = start.elapsed();
        eprintln!(
            "bench {label}: {:.1} s, {}",
            elapsed.as_secs_f64(),
            status_line(&counters, elapsed)
        );
    }
}
