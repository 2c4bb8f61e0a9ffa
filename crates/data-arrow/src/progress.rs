//! Progress of long work over rows, as HF `datasets` shows `Map: 100% 25000/25000`: an
//! indicatif bar on a terminal; elsewhere (a redirected log) a plain line every ten
//! seconds and one at the end, for work that took more than a second.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static HIDDEN: AtomicBool = AtomicBool::new(false);

/// Hides (or shows again) every progress display of this process: a data-parallel
/// rank other than 0 does the same work as rank 0 and says nothing of it.
pub fn hide_progress(hidden: bool) {
    HIDDEN.store(hidden, Ordering::Relaxed);
}

fn hidden() -> bool {
    HIDDEN.load(Ordering::Relaxed)
}

/// Progress of `total` rows of one piece of work.
pub struct Progress {
    label: String,
    total: usize,
    bar: Option<ProgressBar>,
    started: Instant,
    /// Rows done and when a plain line was last written (no terminal).
    plain: Mutex<(usize, Instant)>,
}

impl Progress {
    /// `label` names the work (`Map (tokenize)`, `Evaluating`).
    pub fn new(label: impl Into<String>, total: usize) -> Self {
        let label = label.into();
        let bar = (std::io::stderr().is_terminal() && total > 0 && !hidden()).then(|| {
            let b = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{msg}: {percent:>3}% {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(label.clone());
            b
        });
        let now = Instant::now();
        Progress {
            label,
            total,
            bar,
            started: now,
            plain: Mutex::new((0, now)),
        }
    }

    /// `n` more rows done.
    pub fn inc(&self, n: usize) {
        if let Some(b) = &self.bar {
            b.inc(n as u64);
            return;
        }
        if let Ok(mut p) = self.plain.lock() {
            p.0 += n;
            if p.1.elapsed() >= Duration::from_secs(10) && !hidden() {
                p.1 = Instant::now();
                eprintln!(
                    "{}: {}/{} rows, {:.0} s",
                    self.label,
                    p.0,
                    self.total,
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Clears the bar (evaluation inside a training run, as HF's leaves none); the
    /// plain final line is as [`Progress::finish`]'s.
    pub fn finish_and_clear(&self) {
        match &self.bar {
            Some(b) => b.finish_and_clear(),
            None => self.finish(),
        }
    }

    /// The bar stays on screen, as tqdm's; without one, a final line for work that
    /// took more than a second.
    pub fn finish(&self) {
        match &self.bar {
            Some(b) => b.finish(),
            None => {
                let secs = self.started.elapsed().as_secs_f64();
                if secs > 1.0 && !hidden() {
                    eprintln!("{}: {} rows in {secs:.1} s", self.label, self.total);
                }
            }
        }
    }
}
