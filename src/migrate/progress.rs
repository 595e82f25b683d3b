//! Progress of a long walk: a bar on a terminal, plain periodic lines otherwise (logs, CI,
//! pipes), both on stderr so stdout keeps only the summary.

use std::io::IsTerminal as _;
use std::sync::mpsc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// What the reporter shows at one moment.
pub struct Snapshot {
    /// Work done (bytes or objects, as `unit` says).
    pub done: u64,
    /// Work known so far (grows while listings are still running).
    pub total: u64,
    /// Short text beside the bar.
    pub message: String,
    /// The full line printed when there is no terminal.
    pub line: String,
}

/// Reports progress on stderr while some work runs.
pub struct Progress {
    bar: Option<ProgressBar>,
    interval: Duration,
}

impl Progress {
    /// A bar if stderr is a terminal, else a line every `interval` (none if zero).
    /// `bytes` says whether `done`/`total` count bytes (shown with units and a rate) or
    /// objects.
    pub fn new(interval: Duration, bytes: bool) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            // The bar takes whatever width the figures leave.
            let template = if bytes {
                "[{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}"
            } else {
                "[{wide_bar}] {pos}/{len} {per_sec} eta {eta} {msg}"
            };
            ProgressBar::new(0).with_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            )
        });
        Progress { bar, interval }
    }

    /// Prints a line above the bar (or plainly) without garbling it.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Runs `work`, showing `snapshot()` meanwhile: the bar is refreshed five times a
    /// second, a plain line printed every interval. The reporter stops when `work` returns.
    pub fn run<R>(&self, snapshot: impl Fn() -> Snapshot + Sync, work: impl FnOnce() -> R) -> R {
        let period = match (&self.bar, self.interval.is_zero()) {
            (Some(_), _) => Duration::from_millis(200),
            (None, true) => return work(),
            (None, false) => self.interval,
        };
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let snapshot = &snapshot;
            scope.spawn(move || {
                // The channel is the clock: it times out every period and ends the loop as
                // soon as the work is done.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    let now = snapshot();
                    match &self.bar {
                        Some(bar) => {
                            bar.set_length(now.total);
                            bar.set_position(now.done);
                            bar.set_message(now.message);
                            bar.tick();
                        }
                        None => eprintln!("{}", now.line),
                    }
                }
            });
            let result = work();
            drop(stop);
            result
        })
    }

    /// Removes the bar (the summary follows on its own).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `bytes` as MiB with two decimals.
pub fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}
