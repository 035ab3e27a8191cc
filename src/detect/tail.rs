//! Tail thresholds: the raw score that normal data exceeds with a given probability.
//!
//! Peaks over threshold (Siffer et al., KDD'17): take a high quantile `t` of the scores,
//! fit a generalised Pareto distribution (GPD) to the excesses over it, and read off the
//! quantile `z_q` whose tail probability is `risk`:
//!
//! `z_q = t + σ/γ · ((q·n / N_t)^(−γ) − 1)` (γ ≠ 0), `z_q = t − σ·ln(q·n / N_t)` (γ = 0),
//!
//! with `n` scores and `N_t` excesses. The GPD is fitted by the method of moments (closed
//! form, no iterations), as streaming implementations do when a likelihood fit per step
//! costs too much. This makes a threshold mean the same on every series: a heavy-tailed
//! series gets a higher one, so that "score > 1" fires about `risk` of the time on normal
//! data whatever the shape. Uni-AD's streaming SPOT (`uniad/spot.rs`) refits
//! [`gpd_quantile`] on its peaks as scores arrive; the z-score detector (`zscore.rs`)
//! fits [`robust_tail_threshold`] on each metric's history, which may hold incidents.

use crate::normalize::median_in_place;

/// SPOT's alarm quantile from a method-of-moments GPD fit of the excesses `peaks` over
/// `t`, among `n` scores, for tail probability `risk`.
pub(crate) fn gpd_quantile<I>(t: f64, peaks: I, n: u64, risk: f64) -> f64
where
    I: Iterator<Item = f64> + Clone,
{
    let k = peaks.clone().count() as f64;
    if k < 2.0 {
        // Too few peaks for a tail fit: fall back to a margin over `t` proportional
        // to the one excess seen (or to `t` itself).
        let m = peaks.clone().next().unwrap_or(t.abs().max(1e-12));
        return t + 3.0 * m;
    }
    let mean = peaks.clone().sum::<f64>() / k;
    let var = peaks.map(|p| (p - mean) * (p - mean)).sum::<f64>() / (k - 1.0);
    let (gamma, sigma) = if var > 0.0 && mean > 0.0 {
        let r = mean * mean / var;
        // Moments exist only for γ < 1/2; clamp to keep the quantile finite.
        ((0.5 * (1.0 - r)).clamp(-0.5, 0.45), 0.5 * mean * (r + 1.0))
    } else {
        (0.0, mean.max(1e-12))
    };
    let ratio = (risk * n as f64 / k).clamp(1e-12, 1.0);
    if gamma.abs() < 1e-9 {
        t - sigma * ratio.ln()
    } else {
        t + sigma / gamma * (ratio.powf(-gamma) - 1.0)
    }
}

/// A robust tail threshold for samples that may hold the anomalies being looked for:
/// `t` = the `level` quantile of `values`, then an exponential tail (GPD with γ = 0)
/// over `t` whose scale is the **median** excess / ln 2, read at tail probability `risk`:
/// `t + σ · ln(N_t / (risk · n))`. The method-of-moments fit of [`gpd_quantile`] lets a
/// few huge excesses (an incident inside the sample) lift the quantile by orders of
/// magnitude; the median excess moves only when most of the top `1 − level` is
/// abnormal. An exponential tail is exact for Laplace-like scores, conservative for
/// Gaussian ones and low for heavier ones, whose higher `t` and excesses already raise
/// the bar. Non-finite values are ignored; `None` with fewer than `min_count` finite
/// values. Reorders `values`.
pub(crate) fn robust_tail_threshold(
    values: &mut Vec<f64>,
    level: f64,
    risk: f64,
    min_count: usize,
) -> Option<f64> {
    let (t, n, upper) = split_at_level(values, level, min_count)?;
    let mut excesses: Vec<f64> = upper.iter().map(|v| v - t).filter(|e| *e > 0.0).collect();
    if excesses.is_empty() {
        return Some(t);
    }
    let k = excesses.len() as f64;
    let sigma = median_in_place(&mut excesses) / std::f64::consts::LN_2;
    Some(t + sigma * (k / (risk * n as f64)).max(1.0).ln())
}

/// Drops the non-finite values, then returns the `level` quantile `t` of the rest, their
/// count and the values ordered at or above `t` (unsorted); `None` with fewer than
/// `min_count` finite values.
fn split_at_level(
    values: &mut Vec<f64>,
    level: f64,
    min_count: usize,
) -> Option<(f64, usize, &[f64])> {
    values.retain(|v| v.is_finite());
    let n = values.len();
    if n < min_count.max(2) {
        return None;
    }
    let idx = ((((n - 1) as f64) * level.clamp(0.0, 1.0)).round() as usize).min(n - 1);
    let (_, t, upper) = values.select_nth_unstable_by(idx, f64::total_cmp);
    Some((*t, n, upper))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    /// The method-of-moments threshold of a sample, for comparison: [`gpd_quantile`] of
    /// the excesses over the `level` quantile.
    fn moment_threshold(values: &mut Vec<f64>, level: f64, risk: f64) -> f64 {
        let (t, n, upper) = split_at_level(values, level, 2).unwrap();
        let peaks = upper.iter().filter(move |&&v| v > t).map(move |v| v - t);
        gpd_quantile(t, peaks, n as u64, risk)
    }

    fn exp_sample(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..n).map(|_| -rng.gen_range(1e-12f64..1.0).ln()).collect()
    }

    #[test]
    fn exponential_tail_quantile_is_recovered() {
        // Exp(1): P(X > x) = e^-x, so the 1e-3 tail quantile is ln 1000 = 6.91.
        let mut v = exp_sample(5000, 1);
        let q = robust_tail_threshold(&mut v.clone(), 0.9, 1e-3, 64).unwrap();
        assert!((6.0..8.0).contains(&q), "robust: quantile {q}");
        let q = moment_threshold(&mut v, 0.9, 1e-3);
        assert!((6.0..8.0).contains(&q), "moments: quantile {q}");
    }

    #[test]
    fn heavier_tails_get_higher_thresholds() {
        // |Cauchy| is far heavier than |Gaussian|: same risk, a much higher bar.
        let mut rng = SmallRng::seed_from_u64(2);
        let mut cauchy: Vec<f64> = (0..2000)
            .map(|_| {
                (std::f64::consts::PI * (rng.gen_range(0.0..1.0) - 0.5))
                    .tan()
                    .abs()
            })
            .collect();
        let mut light = exp_sample(2000, 3);
        let heavy = robust_tail_threshold(&mut cauchy, 0.9, 1e-3, 64).unwrap();
        let light = robust_tail_threshold(&mut light, 0.9, 1e-3, 64).unwrap();
        assert!(heavy > 2.0 * light, "heavy {heavy} light {light}");
    }

    #[test]
    fn too_few_values_give_none_and_non_finite_are_ignored() {
        let mut v = vec![1.0, f64::NAN, 2.0, f64::INFINITY];
        assert_eq!(robust_tail_threshold(&mut v, 0.9, 1e-3, 3), None);
        let mut v = vec![1.0, f64::NAN, 2.0, 3.0];
        assert!(robust_tail_threshold(&mut v, 0.5, 1e-3, 3).is_some());
    }

    #[test]
    fn the_robust_tail_recovers_an_exponential_quantile_and_ignores_a_few_huge_values() {
        let mut v = exp_sample(2000, 4);
        let clean = robust_tail_threshold(&mut v.clone(), 0.9, 1e-3, 64).unwrap();
        assert!((6.0..8.0).contains(&clean), "quantile {clean}");
        // An incident: 20 scores of 1000 among 2000 (1 %) barely move it, where the
        // moment fit is lifted far beyond any normal score.
        v.extend([1000.0; 20]);
        let robust = robust_tail_threshold(&mut v.clone(), 0.9, 1e-3, 64).unwrap();
        assert!(robust < 1.3 * clean, "robust {robust} vs clean {clean}");
        let moments = moment_threshold(&mut v, 0.9, 1e-3);
        assert!(moments > 5.0 * robust, "moments {moments}");
    }

    #[test]
    fn a_single_peak_falls_back_to_a_margin() {
        let peaks = [2.0];
        assert_eq!(gpd_quantile(5.0, peaks.iter().copied(), 100, 1e-3), 11.0);
    }
}
