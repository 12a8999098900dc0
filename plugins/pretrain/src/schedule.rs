//! The schedules of DINOv2 training (dinov2 `utils/utils.py::CosineScheduler`, dinov2.md §2.4),
//! indexed per iteration.

/// Iterations per "epoch" in dinov2, whatever the dataset size.
pub const OFFICIAL_EPOCH_LENGTH: usize = 1250;

/// `freeze` iterations at 0, a linear warm-up from `start` to `base` over `warmup` iterations
/// (both ends included, as `numpy.linspace`), then a half cosine from `base` to `final_value` over
/// the remaining iterations; `final_value` from `total` on.
#[derive(Debug, Clone, PartialEq)]
pub struct CosineSchedule {
    values: Vec<f64>,
    final_value: f64,
}

impl CosineSchedule {
    /// The schedule; `warmup + freeze` larger than `total` is cut at `total`.
    pub fn new(
        base: f64,
        final_value: f64,
        total: usize,
        warmup: usize,
        start: f64,
        freeze: usize,
    ) -> Self {
        let mut values = vec![0.0; freeze.min(total)];
        for i in 0..warmup {
            let v = if warmup == 1 {
                start
            } else {
                start + (base - start) * i as f64 / (warmup - 1) as f64
            };
            values.push(v);
        }
        let rest = total.saturating_sub(warmup + freeze);
        for i in 0..rest {
            let cos = (std::f64::consts::PI * i as f64 / rest as f64).cos();
            values.push(final_value + 0.5 * (base - final_value) * (1.0 + cos));
        }
        values.truncate(total);
        Self {
            values,
            final_value,
        }
    }

    /// A constant schedule.
    pub fn constant(value: f64) -> Self {
        Self {
            values: Vec::new(),
            final_value: value,
        }
    }

    /// The value at iteration `it`.
    pub fn at(&self, it: usize) -> f64 {
        self.values.get(it).copied().unwrap_or(self.final_value)
    }

    /// Sets the first `iterations` values to 0 (the prototypes' learning rate during the first
    /// epoch).
    pub fn zero_first(&mut self, iterations: usize) {
        let n = iterations.min(self.values.len());
        self.values[..n].fill(0.0);
    }
}

/// The learning rate for a total batch: `base · sqrt(batch / 1024)` (`sqrt_wrt_1024`).
pub fn scaled_lr(base: f64, total_batch: usize) -> f64 {
    base * (total_batch as f64 / 1024.0).sqrt()
}
