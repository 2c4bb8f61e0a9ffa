//! Learning-rate schedules as HF `get_scheduler`: the multiplier of the base rate
//! after `step` optimizer steps (the rate the next update uses).

use serde::{Deserialize, Serialize};

/// HF's `lr_scheduler_type` (`linear`, `cosine`, `constant`, `constant_with_warmup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerType {
    /// Warm-up from 0, then linear decay to 0 at the last step.
    Linear,
    /// Warm-up, then half a cosine wave down to 0.
    Cosine,
    /// The base rate throughout (HF ignores warm-up here).
    Constant,
    /// Warm-up, then the base rate.
    ConstantWithWarmup,
}

/// A schedule over `total_steps` optimizer steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: SchedulerType,
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// HF's warm-up: `warmup_steps` when > 0, else `ceil(warmup_ratio * total)`.
    pub fn new(
        kind: SchedulerType,
        base_lr: f64,
        warmup_steps: usize,
        warmup_ratio: f64,
        total_steps: usize,
    ) -> Self {
        let warmup_steps = if warmup_steps > 0 {
            warmup_steps
        } else {
            (warmup_ratio * total_steps as f64).ceil() as usize
        };
        Schedule {
            kind,
            base_lr,
            warmup_steps,
            total_steps,
        }
    }

    /// The multiplier after `step` optimizer steps.
    pub fn factor(&self, step: usize) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let warming = self.kind != SchedulerType::Constant && step < self.warmup_steps;
        if warming {
            return s / w.max(1.0);
        }
        match self.kind {
            SchedulerType::Constant | SchedulerType::ConstantWithWarmup => 1.0,
            SchedulerType::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            SchedulerType::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }

    /// The learning rate of the update that follows `step` completed steps.
    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    // Every value below is what transformers 5.23's `get_scheduler(name, SGD(lr=base),
    // num_warmup_steps, num_training_steps).get_last_lr()` gives after `step` steps
    // (run with torch 2.11 on CPU): base lr 1e-3 (2e-5, 5e-5 where noted), 10 warm-up
    // steps, 100 total.
    #[test]
    fn linear_with_warmup() {
        let s = Schedule::new(SchedulerType::Linear, 1e-3, 10, 0.0, 100);
        close(s.lr(0), 0.0);
        close(s.lr(5), 5e-4);
        close(s.lr(10), 1e-3);
        close(s.lr(55), 5e-4);
        close(s.lr(91), 1e-4);
        close(s.lr(100), 0.0);
        close(s.lr(120), 0.0);
    }

    #[test]
    fn cosine_with_warmup() {
        let s = Schedule::new(SchedulerType::Cosine, 1e-3, 10, 0.0, 100);
        close(s.lr(3), 3e-4);
        close(s.lr(10), 1e-3);
        close(s.lr(55), 5e-4);
        // progress 15/90 = 1/6: 0.5 * (1 + cos(pi/6))
        close(s.lr(25), 9.330127018922193e-4);
        close(s.lr(100), 0.0);
    }

    #[test]
    fn constant_and_constant_with_warmup() {
        let c = Schedule::new(SchedulerType::Constant, 2e-5, 10, 0.0, 100);
        close(c.lr(0), 2e-5);
        close(c.lr(99), 2e-5);
        let w = Schedule::new(SchedulerType::ConstantWithWarmup, 2e-5, 10, 0.0, 100);
        close(w.lr(0), 0.0);
        close(w.lr(4), 8e-6);
        close(w.lr(10), 2e-5);
        close(w.lr(99), 2e-5);
    }

    #[test]
    fn warmup_ratio_rounds_up_and_linear_without_warmup_starts_at_base() {
        let s = Schedule::new(SchedulerType::Linear, 5e-5, 0, 0.06, 250);
        assert_eq!(s.warmup_steps, 15);
        let s = Schedule::new(SchedulerType::Linear, 5e-5, 0, 0.0, 250);
        close(s.lr(0), 5e-5);
        close(s.lr(125), 2.5e-5);
        close(s.lr(249), 2e-7);
    }
}
