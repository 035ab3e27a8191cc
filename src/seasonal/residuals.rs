use crate::normalize::RobustStats;
use crate::ring::{Ring, Sample};

use super::{Expectation, SeasonalSeries};

/// One series' seasonal baseline and the residual row the detectors see in place of
/// its raw row (used by the store and by the offline replay).
///
/// `residuals` is aligned with the raw ring: point `j` of both is the same step. Points
/// are residuals of the baseline as it was when they arrived; a level shift adopted,
/// or the baseline's first maturity, recomputes them all with the current baseline.
#[derive(Debug, Clone)]
pub struct SeasonalRow {
    /// The series' learned baseline.
    pub baseline: SeasonalSeries,
    residuals: Ring,
}

/// What [`SeasonalRow::extend`] did beyond appending.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Extended {
    /// Every residual was recomputed: the normaliser must refit from scratch.
    pub rebuilt: bool,
    /// A level shift adopted, in the metric's units.
    pub shift: Option<f64>,
}

impl SeasonalRow {
    /// A row with no residual yet, keeping at most `cap` of them.
    pub fn new(baseline: SeasonalSeries, cap: usize) -> Self {
        SeasonalRow {
            baseline,
            residuals: Ring::new(cap),
        }
    }

    /// The residuals, oldest first.
    pub fn residuals(&self) -> &[Sample] {
        self.residuals.as_slice()
    }

    /// The expectation at `t_ms`.
    pub fn expectation(&self, t_ms: i64) -> Expectation {
        self.baseline.expectation(t_ms)
    }

    /// Observes the last `new_points` points of `raw` (whose last point is at
    /// `end_ms`), learning them into the baseline, and appends their residuals. `stats`
    /// is the normaliser of the residuals before these points.
    pub fn extend(
        &mut self,
        raw: &[Sample],
        end_ms: i64,
        step_ms: i64,
        new_points: usize,
        stats: RobustStats,
        adapt_after_points: u32,
    ) -> Extended {
        let n = raw.len();
        let k = new_points.min(n);
        let aligned = (self.residuals.len() + k).min(self.residuals.capacity()) == n;
        let was_mature = self.baseline.is_mature();
        let mut out = Extended::default();
        for (j, x) in raw.iter().map(|&x| f64::from(x)).enumerate().skip(n - k) {
            let t = end_ms - (n - 1 - j) as i64 * step_ms;
            let u = self.baseline.expectation(t).residual(x);
            let observed = self.baseline.observe(t, x, stats.z(u), adapt_after_points);
            if observed.shifted {
                out.shift = Some(out.shift.unwrap_or(0.0) + observed.delta);
            }
            if aligned {
                self.residuals.push(u);
            }
        }
        let matured = !was_mature && self.baseline.is_mature();
        if !aligned || matured || out.shift.is_some() {
            self.recompute(raw, end_ms, step_ms);
            out.rebuilt = true;
        }
        out
    }

    /// Recomputes every residual of `raw` with the current baseline.
    pub fn recompute(&mut self, raw: &[Sample], end_ms: i64, step_ms: i64) {
        let n = raw.len();
        self.residuals = Ring::new(self.residuals.capacity());
        for (j, x) in raw.iter().map(|&x| f64::from(x)).enumerate() {
            let t = end_ms - (n - 1 - j) as i64 * step_ms;
            self.residuals
                .push(self.baseline.expectation(t).residual(x));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 1_000;
    const PERIOD: i64 = 60_000;

    fn wave(t: i64) -> f64 {
        let phase = t.rem_euclid(PERIOD) as f64 / PERIOD as f64;
        100.0 + 50.0 * (2.0 * std::f64::consts::PI * phase).sin() + (t / STEP % 3) as f64
    }

    #[test]
    fn residuals_stay_aligned_and_switch_from_raw_once_the_baseline_is_mature() {
        let mut row = SeasonalRow::new(SeasonalSeries::new(&[PERIOD], STEP), 300);
        let mut raw = Ring::new(300);
        let mut rebuilds = 0;
        for i in 0..400 {
            let t = i * STEP;
            raw.push(wave(t));
            let out = row.extend(raw.as_slice(), t, STEP, 1, RobustStats::IDENTITY, 60);
            rebuilds += usize::from(out.rebuilt);
            assert_eq!(row.residuals().len(), raw.len());
            if i < 100 {
                // Immature: the residual is the raw value.
                assert_eq!(row.residuals().last(), raw.as_slice().last());
            }
        }
        // Once: when the baseline matured and the raw residuals were replaced.
        assert_eq!(rebuilds, 1);
        let last = *row.residuals().last().unwrap();
        assert!(last.abs() < 4.0, "{last}");
    }
}
