//! The shared robust z-score normaliser.
//!
//! Every detector that compares series of different units (Uni-AD, the z-score detector)
//! z-scores each series with robust statistics of its own history:
//! `z = (x − median) / (1.4826 · MAD)`. The median and the MAD ignore the outliers the
//! detectors are looking for, which a mean and a standard deviation would not.
//!
//! Refitting over a long history on every step would cost O(history) per series and
//! cycle, yet a median over hours barely moves in one step. [`Normalizer`] therefore
//! refits only after `max(1, n / 32)` new points (n = points of the last fit), which
//! bounds the amortised cost to about 32 sorts' worth of work per new point and keeps
//! the statistics within a few percent of the exact ones.
//!
//! This module does no I/O; its state is plain data persisted by [`crate::state`].

use serde::{Deserialize, Serialize};

/// Consistency constant that makes the MAD estimate σ for Gaussian data.
const MAD_TO_SIGMA: f64 = 1.4826;
/// Consistency constant that makes the mean absolute deviation estimate σ.
const MEAN_AD_TO_SIGMA: f64 = 1.2533;
/// The scale never falls below this fraction of `max(1, |median|)`, so a flat series
/// does not turn every rounding error into an infinite z-score.
const RELATIVE_SCALE_FLOOR: f64 = 1e-3;
/// Refit after this fraction of the fitted points is new (1/32).
const REFIT_DIVISOR: usize = 32;

/// Robust location and scale of one series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RobustStats {
    /// Median of the finite points.
    pub median: f64,
    /// `1.4826 · MAD`, with the fallbacks and the floor described in the module doc.
    pub scale: f64,
    /// Number of finite points the statistics were computed from.
    pub count: usize,
}

impl RobustStats {
    /// Statistics that leave values unchanged (`z = x`); used before any fit.
    pub const IDENTITY: RobustStats = RobustStats {
        median: 0.0,
        scale: 1.0,
        count: 0,
    };

    /// Fits on the finite values of `values`; `None` when there is none.
    /// `scratch` is reused between calls to avoid allocating on the hot path.
    pub fn fit(values: &[f64], scratch: &mut Vec<f64>) -> Option<RobustStats> {
        scratch.clear();
        scratch.extend(values.iter().copied().filter(|v| v.is_finite()));
        let count = scratch.len();
        if count == 0 {
            return None;
        }
        let median = median_in_place(scratch);
        let mean_ad = scratch.iter().map(|v| (v - median).abs()).sum::<f64>() / count as f64;
        for v in scratch.iter_mut() {
            *v = (*v - median).abs();
        }
        let mad = median_in_place(scratch);
        let mut scale = MAD_TO_SIGMA * mad;
        if scale == 0.0 {
            // More than half the points equal the median (a mostly flat series): the MAD
            // is 0 but the rest still carries a spread worth measuring.
            scale = MEAN_AD_TO_SIGMA * mean_ad;
        }
        let floor = RELATIVE_SCALE_FLOOR * median.abs().max(1.0);
        Some(RobustStats {
            median,
            scale: scale.max(floor),
            count,
        })
    }

    /// The robust z-score of `x`.
    #[inline]
    pub fn z(&self, x: f64) -> f64 {
        (x - self.median) / self.scale
    }
}

/// Median of `v` (the mean of the two middle values when the count is even), reordering
/// it. `v` must be non-empty and hold no NaN. The one median of the crate's detectors.
pub(crate) fn median_in_place(v: &mut [f64]) -> f64 {
    let n = v.len();
    let mid = n / 2;
    let (lower, m, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let below = lower.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (below + m) / 2.0
    }
}

/// Robust statistics of one series, refitted lazily as new points arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    stats: Option<RobustStats>,
    /// New points since the last fit.
    pending: usize,
}

impl Default for Normalizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Normalizer {
    /// A normaliser that has seen nothing yet.
    pub fn new() -> Self {
        Normalizer {
            stats: None,
            pending: 0,
        }
    }

    /// Records that `new_points` points were appended to `history` (the whole series,
    /// oldest first) and refits when enough of it is new.
    pub fn update(&mut self, history: &[f64], new_points: usize, scratch: &mut Vec<f64>) {
        self.pending += new_points;
        let due = match self.stats {
            None => true,
            Some(s) => self.pending >= (s.count / REFIT_DIVISOR).max(1),
        };
        if due {
            if let Some(stats) = RobustStats::fit(history, scratch) {
                self.stats = Some(stats);
                self.pending = 0;
            }
        }
    }

    /// Current statistics ([`RobustStats::IDENTITY`] before the first fit).
    pub fn stats(&self) -> RobustStats {
        self.stats.unwrap_or(RobustStats::IDENTITY)
    }

    /// Number of points behind the current statistics.
    pub fn count(&self) -> usize {
        self.stats.map_or(0, |s| s.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_of_known_values() {
        let mut scratch = Vec::new();
        let s = RobustStats::fit(&[1.0, 2.0, 3.0, 4.0, 100.0], &mut scratch).unwrap();
        assert_eq!(s.median, 3.0);
        // Absolute deviations 2,1,0,1,97 → MAD 1.
        assert!((s.scale - MAD_TO_SIGMA).abs() < 1e-12);
        assert_eq!(s.count, 5);
        let even = RobustStats::fit(&[4.0, 1.0, 3.0, 2.0], &mut scratch).unwrap();
        assert_eq!(even.median, 2.5);
    }

    #[test]
    fn ignores_nan_and_infinities() {
        let mut scratch = Vec::new();
        let s = RobustStats::fit(&[f64::NAN, 1.0, f64::INFINITY, 3.0, 2.0], &mut scratch).unwrap();
        assert_eq!(s.median, 2.0);
        assert_eq!(s.count, 3);
        assert!(RobustStats::fit(&[f64::NAN], &mut scratch).is_none());
    }

    #[test]
    fn flat_series_gets_a_floor_not_a_zero_scale() {
        let mut scratch = Vec::new();
        let s = RobustStats::fit(&[5.0; 100], &mut scratch).unwrap();
        assert!(s.scale > 0.0);
        assert!(s.z(5.0).abs() < 1e-12);
        // A mostly flat series with a few spikes falls back on the mean deviation.
        let mut v = vec![0.0; 90];
        v.extend([10.0; 10]);
        let s = RobustStats::fit(&v, &mut scratch).unwrap();
        assert!((s.scale - MEAN_AD_TO_SIGMA * 1.0).abs() < 1e-9);
    }

    #[test]
    fn robust_to_a_single_outlier() {
        let mut scratch = Vec::new();
        let mut v: Vec<f64> = (0..1000).map(|i| (i % 10) as f64).collect();
        let before = RobustStats::fit(&v, &mut scratch).unwrap();
        v[0] = 1e9;
        let after = RobustStats::fit(&v, &mut scratch).unwrap();
        assert!((before.median - after.median).abs() <= 1.0);
        assert!((before.scale - after.scale).abs() / before.scale < 0.05);
    }

    #[test]
    fn normalizer_refits_lazily() {
        let mut scratch = Vec::new();
        let mut n = Normalizer::new();
        let mut history: Vec<f64> = (0..64).map(f64::from).collect();
        n.update(&history, 64, &mut scratch);
        let first = n.stats();
        assert_eq!(first.count, 64);
        // 64 / 32 = 2 new points are needed before a refit.
        history.push(1000.0);
        n.update(&history, 1, &mut scratch);
        assert_eq!(n.stats(), first);
        history.push(1000.0);
        n.update(&history, 1, &mut scratch);
        assert_eq!(n.stats().count, 66);
    }
}
