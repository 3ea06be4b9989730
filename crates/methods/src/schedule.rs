//! Learning-rate schedules, evaluated per optimizer step.
//!
//! `step` is the 0-based index of the update about to be applied: the value
//! for `step = 0` is the learning rate of the very first update. Schedules
//! given in epochs convert with `epoch * steps_per_epoch`, or hold the rate
//! for a whole epoch with [`LrSchedule::PerEpoch`] (as MoCo's code and
//! lightly's benchmarks do).
//!
//! The momentum schedule of the key encoder (cosine from m0 to 1) belongs to
//! the EMA and lives in `mocca-queue`; both follow mocca-core's `half_cosine`.

use mocca_core::schedule::half_cosine;

use mocca_core::check::Invalid;

use crate::error::{config_err, Result};

/// How the linear warmup of [`LrSchedule::WarmupCosine`] counts its `W` steps (`s` from 0):
/// each reference code writes it its own way, and the first steps differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Warmup {
    /// `start + (base − start)·(s + 1)/W`: lightly's `cosine_warmup_schedule`; the first
    /// update is not wasted at `start = 0`, `base` is reached on the last warmup step.
    #[default]
    Lightly,
    /// `start + (base − start)·s/W`: moco-v3's `adjust_learning_rate`, the SimCLR and BYOL
    /// papers' code; the first update is at `start`, `base` comes on the first cosine step.
    FromZero,
    /// `start + (base − start)·s/(W − 1)`: PyTorch Lightning Bolts'
    /// `LinearWarmupCosineAnnealingLR`, which solo-learn steps per update; the first update is
    /// at `start`, `base` is reached on the last warmup step.
    Lightning,
}

/// A learning rate as a function of the step.
#[derive(Debug, Clone, PartialEq)]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant { lr: f64 },
    /// Linear warmup, then half-cosine decay, per step (SimCLR, MoCo v2 with
    /// `warmup_steps = 0`):
    /// ```text
    /// s < W:   lr = start + (base − start)·(s + 1)/W
    /// s ≥ W:   lr = final + (base − final)·½·(1 + cos(π·(s − W)/(T − W)))
    /// ```
    /// The warmup uses `s + 1` (as lightly's `cosine_warmup_schedule`) so the
    /// first update is not wasted at `start = 0`, and reaches `base` on the
    /// last warmup step; with `warmup_from_zero` it uses `s` (moco-v3's
    /// `adjust_learning_rate`, the SimCLR and BYOL papers' code): the first
    /// update is at `start`, the rate reaches `base` on the first cosine step. The cosine part is `torch.optim.lr_scheduler.
    /// CosineAnnealingLR` with `T_max = T − W`, stepped per iteration; steps
    /// past `T` stay at `final`.
    WarmupCosine {
        base_lr: f64,
        warmup_steps: u64,
        total_steps: u64,
        warmup_start_lr: f64,
        /// Which of the references' linear warmups.
        warmup: Warmup,
        final_lr: f64,
    },
    /// `torch.optim.lr_scheduler.StepLR`: `base·γ^⌊s / step_size⌋`.
    Step {
        base_lr: f64,
        step_size: u64,
        gamma: f64,
    },
    /// `torch.optim.lr_scheduler.MultiStepLR`: `base·γ^(number of milestones ≤ s)`
    /// (MoCo v1: milestones at epochs 120 and 160, γ = 0.1). Milestones are
    /// non-decreasing; a repeated one applies γ twice, as in PyTorch.
    MultiStep {
        base_lr: f64,
        milestones: Vec<u64>,
        gamma: f64,
    },
    /// `epochs` (a schedule whose steps are epochs) evaluated once per epoch:
    /// update `s` uses `epochs.lr_at(s / steps_per_epoch + first_epoch)`.
    /// This is how MoCo's `main_moco.py` and its CIFAR-10 colab set the rate
    /// (`adjust_learning_rate` at the start of each epoch, cosine
    /// `lr·½(1 + cos(π·epoch/epochs))`) and how lightly's benchmarks step
    /// `CosineAnnealingLR(optimizer, max_epochs)`, once after each epoch.
    /// `main_moco.py` and lightly count epochs from 0; the colab's loop runs
    /// `epoch in range(1, epochs + 1)`, so with `first_epoch = 1` its rate is
    /// already below the base in the first epoch and 0 in the last.
    PerEpoch {
        epochs: Box<LrSchedule>,
        steps_per_epoch: u64,
        first_epoch: u64,
    },
}

impl LrSchedule {
    /// Cosine decay from `base_lr` to 0 over `total_steps`, no warmup (the MoCo
    /// v2 / MoCo CIFAR-10 recipe, per step instead of per epoch).
    pub fn cosine(base_lr: f64, total_steps: u64) -> Self {
        Self::WarmupCosine {
            base_lr,
            warmup_steps: 0,
            total_steps,
            warmup_start_lr: 0.0,
            warmup: Warmup::Lightly,
            final_lr: 0.0,
        }
    }

    /// `epochs` held for whole epochs of `steps_per_epoch` updates, counted from
    /// `first_epoch` (see [`LrSchedule::PerEpoch`]).
    pub fn per_epoch(epochs: LrSchedule, steps_per_epoch: u64, first_epoch: u64) -> Self {
        Self::PerEpoch {
            epochs: Box::new(epochs),
            steps_per_epoch,
            first_epoch,
        }
    }

    /// Rejects negative or non-finite rates, zero step sizes and unsorted
    /// milestones. Legal schedules that cannot train as meant (a warmup longer
    /// than the run, a rate of 0 throughout) are [`warnings`](Self::warnings).
    pub fn validate(&self) -> Result<()> {
        let field = |name: &str, rule: std::result::Result<(), Invalid>| {
            rule.map_err(|e| config_err(format!("{name} {e}")))
        };
        let rate = |name: &str, v: f64| field(name, rules::rate(v));
        match self {
            Self::Constant { lr } => rate("lr", *lr),
            Self::WarmupCosine {
                base_lr,
                total_steps,
                warmup_start_lr,
                final_lr,
                ..
            } => {
                rate("base lr", *base_lr)?;
                rate("warmup start lr", *warmup_start_lr)?;
                rate("final lr", *final_lr)?;
                if *total_steps == 0 {
                    return Err(config_err("cosine schedule needs total_steps > 0"));
                }
                // A warmup longer than the run is legal (the rate rises for the whole run);
                // `warnings` names it.
                Ok(())
            }
            Self::Step {
                base_lr,
                step_size,
                gamma,
            } => {
                rate("base lr", *base_lr)?;
                field("gamma", rules::gamma(*gamma))?;
                if *step_size == 0 {
                    return Err(config_err("step schedule needs step_size > 0"));
                }
                Ok(())
            }
            Self::MultiStep {
                base_lr,
                milestones,
                gamma,
            } => {
                rate("base lr", *base_lr)?;
                field("gamma", rules::gamma(*gamma))?;
                field("milestones", rules::milestones(milestones))
            }
            Self::PerEpoch {
                epochs,
                steps_per_epoch,
                ..
            } => {
                if *steps_per_epoch == 0 {
                    return Err(config_err("a per-epoch schedule needs steps_per_epoch > 0"));
                }
                epochs.validate()
            }
        }
    }

    /// The learning rate of update `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        match self {
            Self::Constant { lr } => *lr,
            Self::WarmupCosine {
                base_lr,
                warmup_steps,
                total_steps,
                warmup_start_lr,
                warmup,
                final_lr,
            } => {
                if step < *warmup_steps {
                    let (s, w) = match warmup {
                        Warmup::Lightly => (step + 1, *warmup_steps),
                        Warmup::FromZero => (step, *warmup_steps),
                        // One warmup step is all at `start` (as Lightning Bolts computes it).
                        Warmup::Lightning => (step, warmup_steps.saturating_sub(1).max(1)),
                    };
                    warmup_start_lr + (base_lr - warmup_start_lr) * s as f64 / w as f64
                } else {
                    let span = total_steps.saturating_sub(*warmup_steps);
                    let t = step - warmup_steps;
                    if span == 0 || t >= span {
                        return *final_lr;
                    }
                    let angle = std::f64::consts::PI * t as f64 / span as f64;
                    half_cosine(*base_lr, *final_lr, angle)
                }
            }
            Self::Step {
                base_lr,
                step_size,
                gamma,
            } => base_lr * gamma.powi((step / step_size) as i32),
            Self::MultiStep {
                base_lr,
                milestones,
                gamma,
            } => {
                let passed = milestones.iter().filter(|&&m| m <= step).count();
                base_lr * gamma.powi(passed as i32)
            }
            Self::PerEpoch {
                epochs,
                steps_per_epoch,
                first_epoch,
            } => epochs.lr_at(step / steps_per_epoch.max(&1) + first_epoch),
        }
    }
}

/// A schedule that is legal but cannot train as meant, found before the first step
/// ([`LrSchedule::warnings`]); each says why in its `Display`.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleWarning {
    /// Every one of the run's `steps` updates has learning rate 0: nothing trains.
    NoStepTrains { steps: u64 },
    /// The linear warmup (`warmup_steps`) is as long as the run (`total_steps`) or longer:
    /// the rate never reaches its base value (it ends at `last_lr`).
    WarmupCoversRun {
        warmup_steps: u64,
        total_steps: u64,
        last_lr: f64,
    },
    /// A quarter of the run or more (`steps_at_zero` of `total_steps`) has
    /// learning rate 0 — the MoCo colab's per-epoch cosine counted from epoch
    /// 1 spends its whole last epoch there, a third of a 3-epoch run. Methods
    /// that need a start-up epoch before their losses carry information (a
    /// memory bank's positives are random until each image's first visit;
    /// docs/results.md) then stop learning just as they could start.
    MuchOfRunAtZero {
        steps_at_zero: u64,
        total_steps: u64,
    },
}

impl std::fmt::Display for ScheduleWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoStepTrains { steps } => write!(
                f,
                "every one of the run's {steps} steps has learning rate 0, so nothing will train"
            ),
            Self::WarmupCoversRun {
                warmup_steps,
                total_steps,
                last_lr,
            } => write!(
                f,
                "the warmup ({warmup_steps} steps) is not shorter than the run ({total_steps} \
                 steps): the learning rate never reaches its base value (it ends at {last_lr:.3e})"
            ),
            Self::MuchOfRunAtZero {
                steps_at_zero,
                total_steps,
            } => write!(
                f,
                "{steps_at_zero} of the run's {total_steps} steps ({:.0} %) have learning rate 0",
                100.0 * *steps_at_zero as f64 / *total_steps as f64
            ),
        }
    }
}

impl LrSchedule {
    /// What keeps a run of `total_steps` updates from training as meant, if anything: a
    /// learning rate of 0 at every step (a zero base rate, a per-epoch cosine counted from
    /// epoch 1 over a one-epoch run, a γ of 0 from step 0), or a warmup at least as long as
    /// the run. Evaluates the rate of every step (cheap: a few ns each).
    pub fn warnings(&self, total_steps: u64) -> Vec<ScheduleWarning> {
        let mut out = Vec::new();
        let at_zero = (0..total_steps).filter(|&s| self.lr_at(s) == 0.0).count() as u64;
        if total_steps > 0 && at_zero == total_steps {
            out.push(ScheduleWarning::NoStepTrains { steps: total_steps });
        } else if at_zero > 0 && 4 * at_zero >= total_steps {
            out.push(ScheduleWarning::MuchOfRunAtZero {
                steps_at_zero: at_zero,
                total_steps,
            });
        }
        if let Some(warmup_steps) = self.warmup_steps() {
            if total_steps > 0 && warmup_steps >= total_steps {
                out.push(ScheduleWarning::WarmupCoversRun {
                    warmup_steps,
                    total_steps,
                    last_lr: self.lr_at(total_steps - 1),
                });
            }
        }
        out
    }

    /// The warmup's length in steps, if the schedule has one.
    fn warmup_steps(&self) -> Option<u64> {
        match self {
            Self::WarmupCosine { warmup_steps, .. } if *warmup_steps > 0 => Some(*warmup_steps),
            Self::PerEpoch {
                epochs,
                steps_per_epoch,
                ..
            } => epochs.warmup_steps().map(|e| e * steps_per_epoch),
            _ => None,
        }
    }
}

/// The rules [`LrSchedule::validate`] applies, for the trainer's config file to apply under its
/// own keys (`schedule.gamma`, ...).
pub mod rules {
    use mocca_core::check::{self, Invalid};

    /// A learning rate (base, warmup start, final): `>= 0`.
    pub fn rate(v: f64) -> Result<(), Invalid> {
        check::non_negative(v)
    }

    /// The decay factor of `StepLR` / `MultiStepLR`: `>= 0` (0 stops training at the first
    /// milestone, which is legal; a negative one would make the rate negative).
    pub fn gamma(v: f64) -> Result<(), Invalid> {
        check::non_negative(v)
    }

    /// Milestones never decrease. Repeats are allowed and apply γ once per repeat, as the
    /// `Counter` in PyTorch's `MultiStepLR` does.
    pub fn milestones<T: PartialOrd + std::fmt::Debug>(m: &[T]) -> Result<(), Invalid> {
        if m.windows(2).any(|w| w[0] > w[1]) {
            return Err(Invalid::new(format!("must not decrease, got {m:?}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lightning_warmup_matches_solo_learns_scheduler_step_by_step() {
        // solo-learn's LinearWarmupCosineAnnealingLR(warmup_epochs=5, max_epochs=20,
        // warmup_start_lr=3e-5, eta_min=0) on SGD(lr=0.3), stepped once per update
        // (vturrisi/solo-learn 9187ea39, solo/utils/lr_scheduler.py, run with torch 2.15).
        let want = [
            3e-05,
            0.0750225,
            0.150015,
            0.22500750000000003,
            0.30000000000000004,
            0.3,
            0.29672214011007086,
            0.2870318186463901,
            0.27135254915624213,
            0.25036959095382877,
            0.22500000000000003,
            0.19635254915624215,
            0.16567926949014805,
            0.13432073050985202,
            0.10364745084375791,
            0.07500000000000004,
            0.04963040904617132,
            0.0286474508437579,
            0.012968181353609854,
            0.003277859889929147,
        ];
        let s = LrSchedule::WarmupCosine {
            base_lr: 0.3,
            warmup_steps: 5,
            total_steps: 20,
            warmup_start_lr: 3e-5,
            warmup: Warmup::Lightning,
            final_lr: 0.0,
        };
        for (step, w) in want.iter().enumerate() {
            let got = s.lr_at(step as u64);
            assert!((got - w).abs() < 1e-15, "step {step}: {got} vs {w}");
        }
    }

    #[test]
    fn a_warmup_from_zero_starts_at_zero_and_reaches_base_on_the_first_cosine_step() {
        let s = LrSchedule::WarmupCosine {
            base_lr: 1.0,
            warmup_steps: 4,
            total_steps: 12,
            warmup_start_lr: 0.0,
            warmup: Warmup::FromZero,
            final_lr: 0.0,
        };
        // moco-v3: lr = base * epoch / warmup with epoch = step / steps_per_epoch.
        let got: Vec<f64> = (0..5).map(|t| s.lr_at(t)).collect();
        assert_eq!(got, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn warmup_rises_linearly_and_reaches_base_on_its_last_step() {
        let s = LrSchedule::WarmupCosine {
            base_lr: 0.4,
            warmup_steps: 4,
            total_steps: 14,
            warmup_start_lr: 0.0,
            warmup: Warmup::Lightly,
            final_lr: 0.0,
        };
        close(s.lr_at(0), 0.1);
        close(s.lr_at(1), 0.2);
        close(s.lr_at(3), 0.4);
    }

    #[test]
    fn cosine_after_warmup_follows_the_half_cosine() {
        let s = LrSchedule::WarmupCosine {
            base_lr: 0.4,
            warmup_steps: 4,
            total_steps: 14,
            warmup_start_lr: 0.0,
            warmup: Warmup::Lightly,
            final_lr: 0.01,
        };
        close(s.lr_at(4), 0.4);
        // Halfway through the 10 cosine steps: the mean of base and final.
        close(s.lr_at(9), 0.205);
        close(
            s.lr_at(6),
            0.01 + 0.39 * 0.5 * (1.0 + (std::f64::consts::PI * 0.2).cos()),
        );
        close(s.lr_at(14), 0.01);
        close(s.lr_at(1000), 0.01);
    }

    #[test]
    fn plain_cosine_starts_at_base() {
        let s = LrSchedule::cosine(0.06, 100);
        close(s.lr_at(0), 0.06);
        close(s.lr_at(50), 0.03);
    }

    #[test]
    fn step_schedule_decays_every_step_size() {
        let s = LrSchedule::Step {
            base_lr: 1.0,
            step_size: 10,
            gamma: 0.5,
        };
        close(s.lr_at(9), 1.0);
        close(s.lr_at(10), 0.5);
        close(s.lr_at(25), 0.25);
    }

    #[test]
    fn multistep_counts_passed_milestones() {
        let s = LrSchedule::MultiStep {
            base_lr: 0.03,
            milestones: vec![120, 160],
            gamma: 0.1,
        };
        close(s.lr_at(119), 0.03);
        close(s.lr_at(120), 0.003);
        close(s.lr_at(160), 0.0003);
    }

    #[test]
    fn a_warmup_longer_than_the_run_is_legal_and_named() {
        let s = LrSchedule::WarmupCosine {
            base_lr: 0.1,
            warmup_steps: 11,
            total_steps: 10,
            warmup_start_lr: 0.0,
            warmup: Warmup::Lightly,
            final_lr: 0.0,
        };
        assert!(s.validate().is_ok());
        assert_eq!(
            s.warnings(10),
            vec![ScheduleWarning::WarmupCoversRun {
                warmup_steps: 11,
                total_steps: 10,
                last_lr: 0.1 * 10.0 / 11.0,
            }]
        );
    }

    #[test]
    fn the_colab_cosine_over_one_epoch_trains_no_step() {
        // Epochs counted from 1: a one-epoch run is at the cosine's end, lr 0, for every step.
        let s = LrSchedule::per_epoch(LrSchedule::cosine(0.06, 1), 97, 1);
        assert_eq!(
            s.warnings(97),
            vec![ScheduleWarning::NoStepTrains { steps: 97 }]
        );
    }

    #[test]
    fn the_colab_cosine_over_a_few_epochs_spends_its_last_one_at_zero_and_says_so() {
        for (epochs, named) in [(2, true), (3, true), (4, true), (5, false), (200, false)] {
            let s = LrSchedule::per_epoch(LrSchedule::cosine(0.03, epochs), 195, 1);
            let w = s.warnings(epochs * 195);
            let want = if named {
                vec![ScheduleWarning::MuchOfRunAtZero {
                    steps_at_zero: 195,
                    total_steps: epochs * 195,
                }]
            } else {
                vec![]
            };
            assert_eq!(w, want, "{epochs} epochs");
        }
        let w = ScheduleWarning::MuchOfRunAtZero {
            steps_at_zero: 195,
            total_steps: 585,
        };
        assert_eq!(
            w.to_string(),
            "195 of the run's 585 steps (33 %) have learning rate 0"
        );
    }

    #[test]
    fn a_zero_learning_rate_trains_no_step() {
        let s = LrSchedule::Constant { lr: 0.0 };
        assert_eq!(
            s.warnings(5),
            vec![ScheduleWarning::NoStepTrains { steps: 5 }]
        );
        assert!(LrSchedule::Constant { lr: 0.1 }.warnings(5).is_empty());
    }

    #[test]
    fn a_per_epoch_warmup_is_counted_in_steps() {
        let inner = LrSchedule::WarmupCosine {
            base_lr: 0.1,
            warmup_steps: 3,
            total_steps: 3,
            warmup_start_lr: 0.0,
            warmup: Warmup::Lightly,
            final_lr: 0.0,
        };
        let s = LrSchedule::per_epoch(inner, 10, 0);
        let w = s.warnings(30);
        assert!(
            matches!(
                w.as_slice(),
                [ScheduleWarning::WarmupCoversRun {
                    warmup_steps: 30,
                    total_steps: 30,
                    ..
                }]
            ),
            "{w:?}"
        );
    }

    #[test]
    fn repeated_milestones_apply_gamma_per_repeat() {
        let s = LrSchedule::MultiStep {
            base_lr: 1.0,
            milestones: vec![2, 2],
            gamma: 0.5,
        };
        assert!(s.validate().is_ok());
        close(s.lr_at(1), 1.0);
        close(s.lr_at(2), 0.25);
    }

    #[test]
    fn per_epoch_cosine_from_epoch_one_is_the_moco_colab_schedule() {
        // adjust_learning_rate: lr·½(1 + cos(π·epoch/epochs)), epoch = 1..=epochs.
        let s = LrSchedule::per_epoch(LrSchedule::cosine(0.03, 10), 195, 1);
        let colab = |epoch: f64| 0.03 * 0.5 * (1.0 + (std::f64::consts::PI * epoch / 10.0).cos());
        close(s.lr_at(0), colab(1.0));
        close(s.lr_at(194), colab(1.0));
        close(s.lr_at(195), colab(2.0));
        close(s.lr_at(9 * 195), 0.0);
        close(s.lr_at(10 * 195 - 1), 0.0);
    }

    #[test]
    fn per_epoch_cosine_from_epoch_zero_is_cosine_annealing_stepped_per_epoch() {
        // lightly: CosineAnnealingLR(optim, max_epochs), scheduler.step() after each epoch.
        let s = LrSchedule::per_epoch(LrSchedule::cosine(0.12, 10), 195, 0);
        close(s.lr_at(0), 0.12);
        close(s.lr_at(194), 0.12);
        close(s.lr_at(5 * 195), 0.06);
    }

    #[test]
    fn per_epoch_needs_steps_in_an_epoch() {
        let s = LrSchedule::per_epoch(LrSchedule::cosine(0.1, 10), 0, 0);
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("steps_per_epoch"));
    }

    #[test]
    fn gamma_zero_is_allowed_and_a_negative_one_is_not() {
        let s = |gamma| LrSchedule::MultiStep {
            base_lr: 0.1,
            milestones: vec![3],
            gamma,
        };
        assert!(s(0.0).validate().is_ok());
        close(s(0.0).lr_at(3), 0.0);
        assert_eq!(
            s(-0.1).validate().unwrap_err().to_string(),
            "invalid configuration: gamma must be finite and >= 0, got -0.1"
        );
    }

    #[test]
    fn the_milestone_rule_allows_repeats_and_rejects_a_decrease() {
        assert!(rules::milestones(&[120, 120, 160]).is_ok());
        assert_eq!(
            rules::milestones(&[5, 3]).unwrap_err().to_string(),
            "must not decrease, got [5, 3]"
        );
    }

    #[test]
    fn unsorted_milestones_are_rejected() {
        let s = LrSchedule::MultiStep {
            base_lr: 0.1,
            milestones: vec![5, 3],
            gamma: 0.1,
        };
        assert!(s.validate().is_err());
    }
}

/// The momentum `m` of a momentum (EMA) encoder as a function of the step:
/// `θ_ema ← m·θ_ema + (1 − m)·θ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MomentumSchedule {
    /// The same `m` at every step (MoCo v1/v2's 0.999).
    Constant(f64),
    /// BYOL's cosine increase (Grill et al. 2020, Sec. 3.2):
    /// `m = end − (end − base)·(cos(π·t/total_steps) + 1)/2`, from `base` at step 0 to `end`
    /// at `total_steps` and after it. `end` is 1 in BYOL, lightly and moco-v3, solo-learn's
    /// `final_tau` (0.999 in its MoCo V2+ recipes). lightly's `cosine_schedule(t, max_steps,
    /// base, 1)` is `total_steps = max_steps − 1`; moco-v3's `adjust_moco_momentum` is
    /// `total_steps` = its epochs (per step: epochs × steps per epoch).
    Cosine {
        base: f64,
        end: f64,
        total_steps: u64,
    },
}

impl MomentumSchedule {
    /// `m` of update `step` (0-based).
    pub fn at(&self, step: u64) -> f64 {
        match *self {
            Self::Constant(m) => m,
            Self::Cosine {
                base,
                end,
                total_steps,
            } => mocca_queue::cosine_momentum_to(base, end, step as usize, total_steps as usize),
        }
    }

    /// `m` (the base and the end) must lie in [0, 1].
    pub fn validate(&self) -> Result<()> {
        let ms = match *self {
            Self::Constant(m) => vec![m],
            Self::Cosine { base, end, .. } => vec![base, end],
        };
        if let Some(m) = ms.into_iter().find(|m| !(0.0..=1.0).contains(m)) {
            return Err(config_err(format!(
                "the momentum must lie in [0, 1], got {m}"
            )));
        }
        Ok(())
    }
}
