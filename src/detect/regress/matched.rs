//! The workload-matched judge: is the KPI worse **at the same load**?
//!
//! A different load profile alone moves every KPI (more users, more queueing), which is
//! why KS and MWU on the raw values flag most clean deployments. This judge compares
//! each current point with what the baseline did at that point's workload:
//!
//! 1. **The baseline's load curve**: the baseline's points cut into up to [`KNOTS`]
//!    groups at quantiles of its workload (a constant load is one group; a discrete
//!    load such as virtual users is never split inside a value), each group a knot at
//!    its median workload and its KPI location; linear between knots, flat past the
//!    outer ones.
//! 2. **Matched points**: the current points whose workload lies within the baseline's
//!    range. Points outside are left out, never extrapolated to: a baseline that never
//!    saw 12 users says nothing about 12 users. Fewer than [`MIN_MATCHED`] is
//!    insufficient data.
//! 3. **Effect size**: every point (both windows) as its ratio to the curve at its
//!    workload; the effect is the current ratios' location over the baseline's, minus 1
//!    (`+0.18` = 18% higher at the same load). The location is the median for response
//!    time and throughput (robust to spikes), the mean for success rate (a fraction
//!    whose occasional failures a median would hide).
//! 4. **Confidence**: a one-sided rank-sum (Mann–Whitney) test of the current ratios
//!    against the baseline's, in the KPI's bad direction (response time up; throughput
//!    and success rate down). It assumes independent points; Prometheus `rate()`
//!    windows smooth neighbours together, so the p-value overstates confidence, and the
//!    effect-size gate is what keeps small shifts quiet.
//!
//! A KPI regressed when `p < alpha` **and** the effect in the bad direction is at least
//! the KPI's minimum effect (`Options::min_effect`). The other methods report the same
//! effect size for their KPIs, so every verdict says how much worse, at which load.

use super::stats::{normal_sf, rank_sum, RankSum};
use super::{Insufficient, Kpi, KpiPair};

/// Most knots of the baseline's load curve.
pub(crate) const KNOTS: usize = 8;
/// Fewest baseline points a knot needs (smaller groups are left out of the curve).
pub(crate) const MIN_PER_KNOT: usize = 3;
/// Fewest matched current points for a judgement.
pub(crate) const MIN_MATCHED: usize = 10;

/// The workload-matched comparison of one KPI pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matched {
    /// Current over baseline at matched load, minus 1 (`0.18` = 18% higher).
    pub effect: f64,
    /// One-sided p-value of the rank test in the KPI's bad direction.
    pub p_value: f64,
    /// The workload range of the matched current points.
    pub workload: (f64, f64),
    /// Points compared: baseline, matched current.
    pub points: (usize, usize),
}

impl Matched {
    /// The effect in the KPI's bad direction (positive = worse).
    pub fn worse_by(&self, kpi: Kpi) -> f64 {
        match kpi {
            Kpi::ResponseTime => self.effect,
            Kpi::Throughput | Kpi::SuccessRate => -self.effect,
        }
    }
}

/// Compares the pair at matched workload; `Err` when too few current points fall in
/// the baseline's workload range.
pub(crate) fn compare(pair: &KpiPair) -> Result<Matched, Insufficient> {
    let (b, c) = (&pair.baseline, &pair.current);
    let curve = LoadCurve::fit(pair.kpi, &b.workload, &b.kpi);
    let (lo, hi) = curve.range;
    let matched: Vec<(f64, f64)> = c
        .workload
        .iter()
        .zip(&c.kpi)
        .map(|(w, k)| (*w, *k))
        .filter(|(w, _)| (lo..=hi).contains(w))
        .collect();
    if matched.len() < MIN_MATCHED || curve.knots.is_empty() {
        let (c_lo, c_hi) = range(&c.workload);
        return Err(Insufficient(format!(
            "only {} current points lie in the baseline's workload range {lo}–{hi} (current {c_lo}–{c_hi}); at least {MIN_MATCHED} are needed to compare at matched load",
            matched.len()
        )));
    }
    let mut base: Vec<f64> = b
        .workload
        .iter()
        .zip(&b.kpi)
        .filter_map(|(w, k)| curve.ratio(*w, *k))
        .collect();
    let mut cur: Vec<f64> = matched
        .iter()
        .filter_map(|(w, k)| curve.ratio(*w, *k))
        .collect();
    if base.is_empty() || cur.is_empty() {
        return Err(Insufficient(
            "the baseline's KPI is zero at the matched load: no change can be measured relative to it".into(),
        ));
    }
    let z = rank_z(&cur, &base);
    let (nb, nc) = (base.len(), cur.len());
    let (lb, lc) = (location(pair.kpi, &mut base), location(pair.kpi, &mut cur));
    let effect = if lb.abs() > f64::EPSILON {
        lc / lb - 1.0
    } else {
        0.0
    };
    let z_worse = match pair.kpi {
        Kpi::ResponseTime => z,
        Kpi::Throughput | Kpi::SuccessRate => -z,
    };
    let w: Vec<f64> = matched.iter().map(|(w, _)| *w).collect();
    Ok(Matched {
        effect,
        p_value: normal_sf(z_worse),
        workload: range(&w),
        points: (nb, nc),
    })
}

/// The workload range (empty: an inverted range that contains nothing).
fn range(w: &[f64]) -> (f64, f64) {
    crate::normalize::finite_range(w.iter().copied()).unwrap_or((f64::INFINITY, f64::NEG_INFINITY))
}

/// The baseline KPI as a function of workload: knots `(workload, location)` sorted by
/// workload, linear between them, flat past the outer ones, defined on `range`.
#[derive(Debug, Clone, PartialEq)]
struct LoadCurve {
    knots: Vec<(f64, f64)>,
    range: (f64, f64),
}

impl LoadCurve {
    fn fit(kpi: Kpi, workload: &[f64], values: &[f64]) -> Self {
        let mut points: Vec<(f64, f64)> = workload
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = points.len();
        if n == 0 {
            return LoadCurve {
                knots: Vec::new(),
                range: (f64::NAN, f64::NAN),
            };
        }
        let mut edges: Vec<f64> = (1..KNOTS).map(|k| points[(n - 1) * k / KNOTS].0).collect();
        edges.dedup();
        let mut knots = Vec::with_capacity(edges.len() + 1);
        let mut start = 0;
        for g in 0..=edges.len() {
            // Group g holds the workloads up to and including edge g (a discrete value
            // stays in one group).
            let end = match edges.get(g) {
                Some(&e) => start + points[start..].partition_point(|p| p.0 <= e),
                None => n,
            };
            let group = &points[start..end];
            start = end;
            if group.len() < MIN_PER_KNOT {
                continue;
            }
            let mut w: Vec<f64> = group.iter().map(|p| p.0).collect();
            let mut v: Vec<f64> = group.iter().map(|p| p.1).collect();
            knots.push((
                crate::normalize::median_in_place(&mut w),
                location(kpi, &mut v),
            ));
        }
        LoadCurve {
            knots,
            range: (points[0].0, points[n - 1].0),
        }
    }

    /// The curve's value at workload `w`.
    fn at(&self, w: f64) -> f64 {
        let i = self.knots.partition_point(|k| k.0 < w);
        match (i.checked_sub(1).map(|j| self.knots[j]), self.knots.get(i)) {
            (Some((w0, v0)), Some(&(w1, v1))) if w1 > w0 => v0 + (v1 - v0) * (w - w0) / (w1 - w0),
            (_, Some(&(_, v))) | (Some((_, v)), None) => v,
            (None, None) => f64::NAN,
        }
    }

    /// `value` over the curve at `w`; `None` where the curve is zero.
    fn ratio(&self, w: f64, value: f64) -> Option<f64> {
        let expected = self.at(w);
        (expected.abs() > f64::EPSILON).then(|| value / expected)
    }
}

fn location(kpi: Kpi, v: &mut [f64]) -> f64 {
    match kpi {
        Kpi::SuccessRate => v.iter().sum::<f64>() / v.len() as f64,
        Kpi::ResponseTime | Kpi::Throughput => crate::normalize::median_in_place(v),
    }
}

/// The rank-sum statistic of `current` against `baseline` as a standard normal score
/// (tie-corrected): positive when the current values rank higher. Zero when every
/// value ties.
fn rank_z(current: &[f64], baseline: &[f64]) -> f64 {
    let (nc, nb) = (current.len() as f64, baseline.len() as f64);
    let n = nb + nc;
    let RankSum { first, tie_term } = rank_sum(current, baseline);
    let expected = nc * (n + 1.0) / 2.0;
    let var = nb * nc / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if var > 0.0 {
        (first - expected) / var.sqrt()
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::regress::Series;

    /// A KPI that rises with load as a queue does: `base · (1 + w / 10)`, times a
    /// deterministic ±2% wiggle, plus `slowdown` (relative) on top.
    fn window(loads: &[f64], slowdown: f64, phase: usize) -> Series {
        let kpi = loads
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let wiggle = 1.0 + 0.02 * (((i + phase) * 7 % 11) as f64 / 5.0 - 1.0);
                10.0 * (1.0 + w / 10.0) * wiggle * (1.0 + slowdown)
            })
            .collect();
        Series {
            workload: loads.to_vec(),
            kpi,
        }
    }

    fn ramp(from: f64, to: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (from + (to - from) * i as f64 / (n - 1) as f64).round())
            .collect()
    }

    fn pair(kpi: Kpi, baseline: Series, current: Series) -> KpiPair {
        KpiPair {
            kpi,
            baseline,
            current,
        }
    }

    #[test]
    fn a_reversed_load_ramp_alone_is_no_effect() {
        let up = window(&ramp(4.0, 12.0, 60), 0.0, 0);
        let down = window(&ramp(12.0, 4.0, 60), 0.0, 3);
        let m = compare(&pair(Kpi::ResponseTime, up, down)).unwrap();
        assert!(m.effect.abs() < 0.02, "{m:?}");
        assert!(m.p_value > 0.05, "{m:?}");
        assert_eq!(m.workload, (4.0, 12.0));
    }

    #[test]
    fn a_ten_percent_slowdown_at_the_same_load_is_measured_as_ten_percent() {
        let base = window(&ramp(4.0, 12.0, 60), 0.0, 0);
        let slow = window(&ramp(12.0, 4.0, 60), 0.10, 3);
        let m = compare(&pair(Kpi::ResponseTime, base, slow)).unwrap();
        assert!((m.effect - 0.10).abs() < 0.02, "{m:?}");
        assert!(m.p_value < 1e-6, "{m:?}");
        assert!((m.worse_by(Kpi::ResponseTime) - m.effect).abs() < 1e-12);
    }

    #[test]
    fn a_higher_load_alone_does_not_look_slower_where_the_loads_overlap() {
        // Raw values differ a lot (the current window runs at up to twice the load),
        // the overlap 8–12 does not.
        let base = window(&ramp(4.0, 12.0, 60), 0.0, 0);
        let busier = window(&ramp(8.0, 16.0, 60), 0.0, 5);
        let m = compare(&pair(Kpi::ResponseTime, base, busier)).unwrap();
        assert_eq!(m.workload, (8.0, 12.0));
        assert_eq!(m.points.1, 34, "{m:?}");
        assert!(m.effect.abs() < 0.03, "{m:?}");
    }

    #[test]
    fn lower_throughput_is_worse_and_higher_is_not() {
        let base = window(&[8.0; 40], 0.0, 0);
        let lower = window(&[8.0; 40], -0.2, 1);
        let m = compare(&pair(Kpi::Throughput, base.clone(), lower)).unwrap();
        assert!((m.effect + 0.2).abs() < 0.02, "{m:?}");
        assert!(
            m.worse_by(Kpi::Throughput) > 0.15 && m.p_value < 1e-6,
            "{m:?}"
        );
        let higher = window(&[8.0; 40], 0.2, 1);
        let m = compare(&pair(Kpi::Throughput, base, higher)).unwrap();
        assert!(
            m.worse_by(Kpi::Throughput) < 0.0 && m.p_value > 0.5,
            "{m:?}"
        );
    }

    #[test]
    fn a_few_failures_lower_the_success_rate_by_their_share() {
        let ones = Series {
            workload: vec![8.0; 40],
            kpi: vec![1.0; 40],
        };
        // One point in ten at 0.8: a mean loss of 2%, which a median would hide.
        let mut failing = ones.clone();
        for k in failing.kpi.iter_mut().step_by(10) {
            *k = 0.8;
        }
        let m = compare(&pair(Kpi::SuccessRate, ones, failing)).unwrap();
        assert!((m.effect + 0.02).abs() < 1e-9, "{m:?}");
        assert!(m.p_value < 0.05, "{m:?}");
    }

    #[test]
    fn loads_the_baseline_never_saw_are_insufficient_data() {
        let low = window(&ramp(2.0, 6.0, 40), 0.0, 0);
        let high = window(&ramp(8.0, 14.0, 40), 0.0, 0);
        let why = compare(&pair(Kpi::ResponseTime, low.clone(), high)).unwrap_err();
        assert!(why.0.contains("only 0 current points"), "{why}");
        let touching = window(&ramp(6.0, 14.0, 40), 0.0, 0);
        let why = compare(&pair(Kpi::ResponseTime, low, touching)).unwrap_err();
        assert!(why.0.contains("range 2–6 (current 6–14)"), "{why}");
    }

    #[test]
    fn a_constant_load_is_judged_against_the_same_load_inside_a_baseline_ramp() {
        // The current window sits at 8 users throughout; the baseline ramp passes 8 for
        // a few points only, and its curve interpolates between its knots.
        let base = window(&ramp(4.0, 12.0, 60), 0.0, 0);
        let same = window(&[8.0; 40], 0.0, 2);
        let m = compare(&pair(Kpi::ResponseTime, base.clone(), same)).unwrap();
        assert!(m.effect.abs() < 0.03, "{m:?}");
        assert_eq!((m.workload, m.points), ((8.0, 8.0), (60, 40)));
        let slower = window(&[8.0; 40], 0.3, 2);
        let m = compare(&pair(Kpi::ResponseTime, base, slower)).unwrap();
        assert!((m.effect - 0.3).abs() < 0.04 && m.p_value < 1e-6, "{m:?}");
    }

    #[test]
    fn identical_constant_values_give_no_effect_and_no_confidence() {
        let flat = Series {
            workload: vec![8.0; 30],
            kpi: vec![5.0; 30],
        };
        let m = compare(&pair(Kpi::ResponseTime, flat.clone(), flat)).unwrap();
        assert_eq!((m.effect, m.p_value), (0.0, 0.5));
    }

    #[test]
    fn the_load_curve_keeps_a_discrete_value_in_one_knot_and_interpolates_between_knots() {
        let workload = [4.0, 4.0, 4.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 12.0];
        let values = [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 9.0];
        let curve = LoadCurve::fit(Kpi::ResponseTime, &workload, &values);
        // 12 has a single point: below MIN_PER_KNOT, no knot of its own.
        assert_eq!(curve.knots, vec![(4.0, 1.0), (8.0, 2.0)]);
        assert_eq!(curve.range, (4.0, 12.0));
        assert_eq!(
            (curve.at(6.0), curve.at(3.0), curve.at(12.0)),
            (1.5, 1.0, 2.0)
        );
    }
}
