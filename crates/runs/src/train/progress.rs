//! The progress line on stderr: epoch, bar, step, loss, lr, images/s, ETA,
//! and the collapse monitor's last reading (`std√d` and RankMe, and the word
//! `collapsing` when [`CollapseMetrics::collapsing`] says so; the step where
//! it first says so is also announced on a line of its own).
//!
//! On a terminal it redraws one line in place (at most 10 times a second); when
//! stderr is a file or a pipe (CI logs, tests) it prints a plain line every
//! `plain_every` steps instead, so logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use mocca_methods::CollapseMetrics;

pub struct Progress {
    tty: bool,
    total_steps: u64,
    steps_per_epoch: u64,
    epochs: usize,
    batch_size: usize,
    /// Steps done when this process started (resume) and when.
    start_step: u64,
    started: Instant,
    last_draw: Option<Instant>,
    plain_every: u64,
    /// Exponential moving average of the loss, for a steadier display.
    loss_ema: Option<f64>,
    /// The collapse monitor's last reading.
    collapse: Option<CollapseMetrics>,
}

/// What one step reports to the progress line.
pub struct StepView {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
}

impl Progress {
    pub fn new(
        epochs: usize,
        steps_per_epoch: u64,
        batch_size: usize,
        start_step: u64,
        plain_every: u64,
    ) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            total_steps: epochs as u64 * steps_per_epoch,
            steps_per_epoch,
            epochs,
            batch_size,
            start_step,
            started: Instant::now(),
            last_draw: None,
            plain_every: plain_every.max(1),
            loss_ema: None,
            collapse: None,
        }
    }

    /// The collapse monitor read step `step`: shown on the progress line from
    /// now on; the first reading that says "collapsing" (and the first after
    /// a recovery) also gets a line of its own.
    pub fn collapse(&mut self, step: u64, metrics: &CollapseMetrics) {
        let was = self.collapse.is_some_and(|m| m.collapsing());
        self.collapse = Some(*metrics);
        if metrics.collapsing() && !was {
            self.break_line();
            eprintln!("step {step}: {}", collapse_warning(metrics));
        }
    }

    /// Source images per second since this process started training.
    pub fn images_per_s(&self, step: u64) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            (step - self.start_step) as f64 * self.batch_size as f64 / secs
        }
    }

    pub fn update(&mut self, v: &StepView) {
        self.loss_ema = Some(match self.loss_ema {
            Some(e) if v.loss.is_finite() => 0.9 * e + 0.1 * v.loss,
            _ => v.loss,
        });
        let now = Instant::now();
        let last_step = v.step == self.total_steps;
        if self.tty {
            if !last_step
                && self
                    .last_draw
                    .is_some_and(|t| now - t < Duration::from_millis(100))
            {
                return;
            }
            self.last_draw = Some(now);
            let line = self.line(v);
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{line}\x1b[K");
            let _ = err.flush();
        } else if v.step.is_multiple_of(self.plain_every) || last_step {
            eprintln!("{}", self.line(v));
        }
    }

    /// Ends the in-place line before other output (kNN results, messages).
    pub fn break_line(&mut self) {
        if self.tty && self.last_draw.is_some() {
            eprintln!();
            self.last_draw = None;
        }
    }

    pub fn line(&self, v: &StepView) -> String {
        let spe = self.steps_per_epoch.max(1);
        let epoch = ((v.step.saturating_sub(1)) / spe) as usize + 1;
        let in_epoch = v.step - (epoch as u64 - 1) * spe;
        let width = 24usize;
        let filled = (in_epoch as usize * width / spe as usize).min(width);
        let bar: String = "#".repeat(filled) + &".".repeat(width - filled);
        let ips = self.images_per_s(v.step);
        let done = v.step - self.start_step;
        let eta = if done > 0 {
            let per_step = self.started.elapsed().as_secs_f64() / done as f64;
            fmt_duration(per_step * (self.total_steps - v.step) as f64)
        } else {
            "--:--".into()
        };
        let mut line = format!(
            "epoch {epoch}/{} [{bar}] {in_epoch}/{spe}  loss {:.4}  lr {:.4e}  {:.0} img/s  ETA {eta}",
            self.epochs,
            self.loss_ema.unwrap_or(v.loss),
            v.lr,
            ips
        );
        if let Some(m) = &self.collapse {
            line.push_str(&collapse_summary(m));
        }
        line
    }
}

/// The progress line's part: `  std√d 0.83 rank 41.2` (`  collapsing` after it when so).
pub fn collapse_summary(m: &CollapseMetrics) -> String {
    let verdict = if m.collapsing() { "  collapsing" } else { "" };
    format!(
        "  std√d {:.2} rank {:.1}{verdict}",
        m.normalized_std(),
        m.rank_me
    )
}

fn collapse_warning(m: &CollapseMetrics) -> String {
    format!(
        "the embeddings are collapsing: std of the normalised embeddings x sqrt(d) {:.3} \
         (1 when spread), effective rank {:.1} of {} (see mocca_methods::collapse)",
        m.normalized_std(),
        m.rank_me,
        m.max_rank()
    )
}

/// `h:mm:ss` or `m:ss`.
pub fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "--:--".into();
    }
    let s = secs.round() as u64;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_clock_times() {
        assert_eq!(fmt_duration(59.4), "0:59");
        assert_eq!(fmt_duration(61.0), "1:01");
        assert_eq!(fmt_duration(3600.0 + 125.0), "1:02:05");
        assert_eq!(fmt_duration(f64::NAN), "--:--");
    }

    #[test]
    fn line_shows_epoch_position_loss_and_lr() {
        let p = Progress::new(3, 10, 64, 0, 1);
        let line = p.line(&StepView {
            step: 15,
            loss: 6.5,
            lr: 0.06,
        });
        assert!(
            line.starts_with("epoch 2/3 [############............] 5/10"),
            "{line}"
        );
        assert!(
            line.contains("loss 6.5000") && line.contains("lr 6.0000e-2"),
            "{line}"
        );
    }

    #[test]
    fn line_shows_the_collapse_monitor_and_its_verdict() {
        let mut p = Progress::new(3, 10, 64, 0, 1);
        let view = StepView {
            step: 10,
            loss: 6.5,
            lr: 0.06,
        };
        assert!(!p.line(&view).contains("std"), "{}", p.line(&view));
        let mut m = CollapseMetrics {
            batch: 64,
            dim: 16,
            embedding_std: 0.2,
            rank_me: 12.34,
            alignment: None,
            uniformity: -3.0,
        };
        p.collapse(10, &m);
        let line = p.line(&view);
        assert!(line.ends_with("  std√d 0.80 rank 12.3"), "{line}");
        m.embedding_std = 0.001;
        m.rank_me = 1.2;
        p.collapse(20, &m);
        assert!(
            p.line(&view).ends_with("std√d 0.00 rank 1.2  collapsing"),
            "{}",
            p.line(&view)
        );
    }

    #[test]
    fn last_step_of_an_epoch_fills_the_bar() {
        let p = Progress::new(2, 4, 8, 0, 1);
        let line = p.line(&StepView {
            step: 4,
            loss: 1.0,
            lr: 0.1,
        });
        assert!(
            line.contains("epoch 1/2 [########################] 4/4"),
            "{line}"
        );
    }
}
