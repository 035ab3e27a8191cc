//! The shared robust z-score normaliser.
//!
//! Every detector that compares series of different units (Uni-AD, the z-score detector)
//! z-scores each series with robust statistics of its own history:
//! `z = (x − median) / (1.4826 · MAD)`. The median and the MAD ignore the outliers the
//! detectors are looking for, which a mean and a standard deviation would not.
//!
//! # The scale on the shapes real metrics have
//!
//! The MAD is the median of the absolute deviations `|x − median|`; it is 0 as soon as
//! more than half the points equal the median: a disk that writes in bursts and is idle
//! otherwise, an error count that is mostly 0, a replica count or queue length that
//! steps between a few integers. Then the scale comes from a higher quantile of the
//! same absolute deviations, each divided by what it is for a Gaussian so that the
//! scale still estimates σ: the first positive of
//!
//! | quantile of `|x − median|` | divided by | covers |
//! |---|---|---|
//! | 0.5 (the MAD) | 0.6745 (i.e. × 1.4826) | ordinary noisy series |
//! | 0.8 | 1.2816 | steps between a few levels, counters' rates with many zeros |
//! | 0.98 | 2.3263 | bursts on at least one point in 50 |
//! | mean of `|x − median|` | 0.7979 (i.e. × 1.2533) | rarer bursts: each one stays a large z |
//!
//! then at least 1 % of `|median|` and at least `1e-3` in the metric's units: a constant
//! series gives z = 0 and not a division by zero, and a metric whose noise is tiny
//! beside its level (available memory in bytes, a saturated CPU) does not turn a change
//! of a fraction of a percent into a large z. A deviation of under 1 % of the level is
//! never more than one sigma. The quantiles interpolate linearly between order statistics
//! (numpy's default), so the training side (`models/train/uniad/data.py`) computes the
//! same numbers (`models/golden/normalize_flat.json`). Why not the mean deviation
//! right after the MAD: on a series idle 90 % of the time it is a tenth of a burst's height,
//! so every ordinary burst would be a z of 8 or more; the 0.98 quantile puts an ordinary
//! burst near z = 2.3.
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
pub(crate) const MEAN_AD_TO_SIGMA: f64 = 1.2533;
/// When the MAD is 0: quantiles of the absolute deviations and their value for a
/// standard Gaussian, tried in order (see the module doc).
const DEVIATION_QUANTILES: [(f64, f64); 2] =
    [(0.8, 1.281_551_565_544_6), (0.98, 2.326_347_874_040_8)];
/// The scale never falls below this fraction of `|median|` (see the module doc) ...
const RELATIVE_SCALE_FLOOR: f64 = 1e-2;
/// ... and never below this, in the metric's units.
const ABSOLUTE_SCALE_FLOOR: f64 = 1e-3;
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
    pub fn fit<T: Copy + Into<f64>>(values: &[T], scratch: &mut Vec<f64>) -> Option<RobustStats> {
        scratch.clear();
        scratch.extend(values.iter().map(|&v| v.into()).filter(|v| v.is_finite()));
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
        // More than half the points equal the median (a mostly flat series): the MAD is
        // 0 but the rest still carries a spread worth measuring.
        for (q, gaussian) in DEVIATION_QUANTILES {
            if scale == 0.0 {
                scale = quantile_in_place(scratch, q) / gaussian;
            }
        }
        if scale == 0.0 {
            scale = MEAN_AD_TO_SIGMA * mean_ad;
        }
        Some(RobustStats {
            median,
            scale: scale.max(scale_floor(median)),
            count,
        })
    }

    /// The robust z-score of `x`.
    #[inline]
    pub fn z(&self, x: f64) -> f64 {
        (x - self.median) / self.scale
    }
}

/// The smallest scale a series at level `median` gets: 1 % of `|median|`, at least
/// `1e-3` in the metric's units (see the module doc). The seasonal baseline floors its
/// per-phase spreads with it too.
pub fn scale_floor(median: f64) -> f64 {
    (RELATIVE_SCALE_FLOOR * median.abs()).max(ABSOLUTE_SCALE_FLOOR)
}

/// The smallest and largest finite values, `None` when there is none (the one min/max
/// fold of the crate: scalers, plot ranges, workload ranges).
pub fn finite_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
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

/// The `q` quantile of `v`, interpolating linearly between the order statistics around
/// `(n − 1) · q` (numpy's default), reordering `v`. `v` must be non-empty, without NaN.
fn quantile_in_place(v: &mut [f64], q: f64) -> f64 {
    let pos = (v.len() - 1) as f64 * q;
    let k = pos.floor() as usize;
    let (_, lo, upper) = v.select_nth_unstable_by(k, f64::total_cmp);
    let lo = *lo;
    let frac = pos - k as f64;
    if frac == 0.0 || upper.is_empty() {
        return lo;
    }
    let hi = upper.iter().copied().fold(f64::INFINITY, f64::min);
    lo + (hi - lo) * frac
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
    pub fn update<T: Copy + Into<f64>>(
        &mut self,
        history: &[T],
        new_points: usize,
        scratch: &mut Vec<f64>,
    ) {
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
    fn finite_range_skips_non_finite_values() {
        assert_eq!(
            finite_range([3.0, f64::NAN, -1.0, f64::INFINITY, 2.0]),
            Some((-1.0, 3.0))
        );
        assert_eq!(finite_range([f64::NAN]), None);
        assert_eq!(finite_range(std::iter::empty()), None);
    }

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
        // A mostly flat series with rare spikes (under 2 %) falls back on the mean
        // deviation.
        let mut v = vec![0.0; 99];
        v.push(100.0);
        let s = RobustStats::fit(&v, &mut scratch).unwrap();
        assert!((s.scale - MEAN_AD_TO_SIGMA * 1.0).abs() < 1e-9);
    }

    #[test]
    fn ordinary_bursts_of_a_mostly_idle_series_stay_moderate() {
        // Idle 90 % of the time, bursts of 10: the 0.98 quantile of the deviations is
        // the burst height, so a burst is z = 2.33, where the mean deviation made it 8.
        let mut scratch = Vec::new();
        let mut v = vec![0.0; 90];
        v.extend([10.0; 10]);
        let s = RobustStats::fit(&v, &mut scratch).unwrap();
        assert!((s.z(10.0) - 2.326_347_874_040_8).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn a_step_between_few_levels_is_measured_by_its_spread() {
        // A replica count at 3 most of the time, 4 a quarter of the time, 5 rarely:
        // the 0.8 quantile of the deviations is one replica.
        let mut scratch = Vec::new();
        let v: Vec<f64> = (0..200)
            .map(|i| match i % 20 {
                0..=4 => 4.0,
                5 => 5.0,
                _ => 3.0,
            })
            .collect();
        let s = RobustStats::fit(&v, &mut scratch).unwrap();
        assert_eq!(s.median, 3.0);
        assert!((s.scale - 1.0 / 1.281_551_565_544_6).abs() < 1e-9, "{s:?}");
        // One more replica than usual is not an outlier; a jump to 10 is.
        assert!(s.z(4.0) < 2.0);
        assert!(s.z(10.0) > 5.0);
    }

    #[test]
    fn a_level_with_tiny_noise_is_floored_at_one_percent_of_it() {
        // Available memory: 22.8 GB give or take a few kB.
        let mut scratch = Vec::new();
        let v: Vec<f64> = (0..300)
            .map(|i| 22.8e9 + ((i * 37) % 11) as f64 * 1e3)
            .collect();
        let s = RobustStats::fit(&v, &mut scratch).unwrap();
        assert!((s.scale - 0.01 * s.median).abs() < 1.0, "{s:?}");
        // 100 MB less (0.4 %) is not an outlier; 2 GB less (9 %) is.
        assert!(s.z(22.7e9).abs() < 1.0);
        assert!(s.z(20.8e9).abs() > 4.0);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let mut v = [4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(quantile_in_place(&mut v, 0.8), 4.2);
        assert_eq!(quantile_in_place(&mut v, 1.0), 5.0);
        assert_eq!(quantile_in_place(&mut [7.0], 0.98), 7.0);
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
