//! Learning rate: linear warm-up to the peak, then cosine decay to `min_lr` at `max_steps`.
//! A pure function of the step, so a resumed run needs no scheduler state.

use crate::options::TrainOptions;

/// Learning rate of optimizer step `step` (0-based).
pub fn learning_rate(o: &TrainOptions, step: u64) -> f64 {
    if step < o.warmup_steps {
        return o.lr * (step + 1) as f64 / o.warmup_steps as f64;
    }
    let span = o.max_steps.saturating_sub(o.warmup_steps).max(1) as f64;
    let progress = ((step - o.warmup_steps) as f64 / span).min(1.0);
    o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays() {
        let o = TrainOptions {
            lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 10,
            max_steps: 110,
            ..Default::default()
        };
        assert!((learning_rate(&o, 0) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&o, 9) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&o, 10) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&o, 60) - 0.55).abs() < 1e-12);
        assert!((learning_rate(&o, 110) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&o, 500) - 0.1).abs() < 1e-12);
    }
}
