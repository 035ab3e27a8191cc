//! Per-metric error scales: eq. 7 over standardised squared errors (`scale_errors: true`;
//! off by default).
//!
//! Metrics differ in how well any autoencoder can reconstruct their last step: a noisy
//! latency keeps a large squared error in normal operation, an error ratio that sits at
//! zero a tiny one. Averaged as they are (eq. 7), the noisy metrics drown a fault that
//! moves only a quiet one. So each metric's squared error is divided by its typical
//! value for this entity before the mean: the median of that metric's last-step error
//! over up to [`FIT_WINDOWS`] windows spread evenly over the entity's history (the same
//! history the normaliser fits on), floored at [`SCALE_FLOOR`], a residual of a tenth of
//! a robust sigma, so that the floor only caps how much a flat metric's first deviation
//! weighs.
//!
//! Why it is off by default: the same small scale makes every ordinary step of a flat
//! metric (an offered workload, a load average) weigh many times its scale, like a
//! fault. Scaling wins where faults sit in flat metrics and loses overall on the lab's
//! held-out recordings; the figures and how the floor was chosen are in
//! `models/uniad.md` and `models/train/uniad/STUDIES.md`.
//!
//! Scales are refitted lazily: after `max(W, n / 32)` new points (n = history points at
//! the last fit), or at once when the set of metrics that go into the model changes. A
//! refit runs the model on [`FIT_WINDOWS`] windows, so at most one window per new point
//! is added to the cost of scoring (the bench `uniad` measures it: `detector_n8`).
//! Scales are not persisted: the first cycle after a restart has the history and refits
//! them.

use smallvec::SmallVec;

use crate::normalize::median_in_place;
use crate::series::EntityView;

/// Most windows the median is taken over (evenly spread; the last one always included).
pub(super) const FIT_WINDOWS: usize = 64;
/// Smallest scale (squared robust sigmas).
pub(super) const SCALE_FLOOR: f64 = 0.01;
/// Refit after this fraction of the history is new (as the normaliser), and no sooner
/// than after one window of new points.
const REFIT_DIVISOR: usize = 32;

/// The fitted scales of one entity.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ErrorScales {
    /// View positions of the metrics the scales belong to, in model input order.
    metrics: SmallVec<[usize; 8]>,
    /// One scale per entry of `metrics`.
    scales: SmallVec<[f64; 8]>,
    /// `end_ms` of the view at the fit.
    end_ms: i64,
    /// History points at the fit.
    points: usize,
}

impl ErrorScales {
    /// Scales from the per-window errors `errors[window][metric]` of `metrics`.
    pub(super) fn fit(
        metrics: &[usize],
        errors: &[Vec<f64>],
        end_ms: i64,
        points: usize,
    ) -> ErrorScales {
        let mut column = Vec::with_capacity(errors.len());
        let scales = (0..metrics.len())
            .map(|m| {
                column.clear();
                column.extend(errors.iter().filter_map(|e| e.get(m).copied()));
                median(&mut column).max(SCALE_FLOOR)
            })
            .collect();
        ErrorScales {
            metrics: metrics.into(),
            scales,
            end_ms,
            points,
        }
    }

    /// `true` when these scales do not fit `metrics` any more or enough is new (windows
    /// of `w` points).
    pub(super) fn is_due(&self, metrics: &[usize], view: &EntityView<'_>, w: usize) -> bool {
        if self.metrics.as_slice() != metrics {
            return true;
        }
        view.steps_since(self.end_ms) >= (self.points / REFIT_DIVISOR).max(w).max(1)
    }

    /// Divides each squared error by its metric's scale.
    pub(super) fn standardise(&self, errors: &mut [f64]) {
        for (e, s) in errors.iter_mut().zip(&self.scales) {
            *e /= s;
        }
    }
}

/// End positions (exclusive) of up to [`FIT_WINDOWS`] windows of `w` points spread evenly
/// over a history of `len` points, oldest first; the last ends at `len`.
pub(super) fn fit_window_ends(len: usize, w: usize) -> Vec<usize> {
    if len < w {
        return Vec::new();
    }
    let available = len - w + 1;
    let count = available.min(FIT_WINDOWS);
    if count == 1 {
        return vec![len];
    }
    // Evenly spaced over [w, len], rounded; distinct because count <= available.
    (0..count)
        .map(|i| w + (i * (available - 1) + (count - 1) / 2) / (count - 1))
        .collect()
}

/// Median of `values` (reordered); 0 when empty.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    median_in_place(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_ends_are_spread_distinct_and_end_at_the_last_point() {
        assert!(fit_window_ends(10, 64).is_empty());
        assert_eq!(fit_window_ends(64, 64), vec![64]);
        assert_eq!(fit_window_ends(66, 64), vec![64, 65, 66]);
        let ends = fit_window_ends(5760, 64);
        assert_eq!(ends.len(), FIT_WINDOWS);
        assert_eq!((ends[0], *ends.last().unwrap()), (64, 5760));
        assert!(ends.windows(2).all(|p| p[0] < p[1]));
        // Even spacing: gaps differ by at most one point.
        let gaps: Vec<usize> = ends.windows(2).map(|p| p[1] - p[0]).collect();
        assert!(gaps.iter().max().unwrap() - gaps.iter().min().unwrap() <= 1);
    }

    #[test]
    fn scales_are_per_metric_medians_with_a_floor() {
        let errors: Vec<Vec<f64>> = [[4.0, 0.0], [1.0, 0.001], [9.0, 0.002], [2.0, 50.0]]
            .iter()
            .map(|r| r.to_vec())
            .collect();
        let s = ErrorScales::fit(&[0, 2], &errors, 0, 100);
        assert_eq!(s.scales.as_slice(), &[3.0, SCALE_FLOOR]);
        let mut e = [6.0, 0.5];
        s.standardise(&mut e);
        assert_eq!(e, [2.0, 50.0]);
    }

    /// A view that ends at `end_ms` with steps of `step_ms` (no data: only time matters).
    fn at(end_ms: i64, step_ms: i64) -> EntityView<'static> {
        EntityView {
            key: "e",
            metric_names: &[],
            rows: &[],
            stats: &[],
            end_ms,
            step_ms,
            capacity: 0,
            expectations: &[],
            gates: &[],
        }
    }

    #[test]
    fn refits_when_metrics_change_or_enough_is_new() {
        let step = 15_000;
        let t0 = 1_000_000;
        let long = ErrorScales::fit(&[0, 1], &[vec![1.0, 1.0]], t0, 3200);
        assert!(!long.is_due(&[0, 1], &at(t0, step), 64));
        assert!(!long.is_due(&[0, 1], &at(t0 + 99 * step, step), 64));
        assert!(
            long.is_due(&[0, 1], &at(t0 + 100 * step, step), 64),
            "3200 / 32 new points"
        );
        assert!(
            long.is_due(&[0, 2], &at(t0, step), 64),
            "another metric set"
        );
        assert!(
            !long.is_due(&[0, 1], &at(t0 + 100 * step, 0), 64),
            "no step: no age"
        );
        // A short history still waits for a whole new window.
        let short = ErrorScales::fit(&[0, 1], &[vec![1.0, 1.0]], t0, 256);
        assert!(!short.is_due(&[0, 1], &at(t0 + 63 * step, step), 64));
        assert!(short.is_due(&[0, 1], &at(t0 + 64 * step, step), 64));
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
