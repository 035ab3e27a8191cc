//! The workload-matched judge: is the KPI worse **at the same load**?
//!
//! A different load profile alone moves every KPI (more users, more queueing), which is
//! why KS and MWU on the raw values flag most clean deployments. This judge compares
//! the two windows only where their workloads overlap, stratum by stratum:
//!
//! 1. **Overlap**: the workload range both windows cover, `[max(min), min(max)]`.
//!    Points outside it are left out; too few left is insufficient data (the judge
//!    does not extrapolate a KPI to a load the baseline never saw).
//! 2. **Strata**: up to [`STRATA`] workload bins with edges at quantiles of the pooled
//!    matched workloads (a constant load is one stratum; repeated edges of a discrete
//!    load, such as virtual users, merge). A stratum with fewer than
//!    [`MIN_PER_STRATUM`] points from either window is left out.
//! 3. **Effect size**: per stratum the current location over the baseline's, minus 1
//!    (`+0.18` = 18% higher at that load), averaged with weights `n_b·n_c / (n_b + n_c)`.
//!    The location is the median for response time and throughput (robust to spikes),
//!    and the mean for success rate (a fraction whose occasional failures a median would
//!    hide).
//! 4. **Confidence**: van Elteren's stratified rank-sum test (Wilcoxon within strata,
//!    combined with weights `1 / (N_s + 1)`), one-sided in the KPI's bad direction
//!    (response time up; throughput and success rate down). It assumes independent
//!    points; Prometheus `rate()` windows smooth neighbours together, so the p-value
//!    overstates confidence, and the effect-size gate is what keeps small shifts quiet.
//!
//! A KPI regressed when `p < alpha` **and** the effect in the bad direction is at least
//! the KPI's minimum effect (`Options::min_effect`). The other methods report the same
//! effect size for their KPIs, so every verdict says how much worse, at which load.

use super::stats::{normal_sf, rank_sum, RankSum};
use super::{Insufficient, Kpi, KpiPair};

/// Most workload strata.
pub(crate) const STRATA: usize = 4;
/// Fewest points of each window a stratum needs to count.
pub(crate) const MIN_PER_STRATUM: usize = 3;
/// Fewest matched points (in counted strata) of each window for a judgement.
pub(crate) const MIN_MATCHED: usize = 10;

/// The workload-matched comparison of one KPI pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matched {
    /// Current over baseline at matched load, minus 1 (`0.18` = 18% higher).
    pub effect: f64,
    /// One-sided p-value of the stratified rank test in the KPI's bad direction.
    pub p_value: f64,
    /// The workload range compared (the overlap of both windows).
    pub workload: (f64, f64),
    /// Matched points used, baseline and current.
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

/// Compares the pair at matched workload; `Err` when too little of it overlaps.
pub(crate) fn compare(pair: &KpiPair) -> Result<Matched, Insufficient> {
    let (b, c) = (&pair.baseline, &pair.current);
    let range = |w: &[f64]| {
        w.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    };
    let ((b_lo, b_hi), (c_lo, c_hi)) = (range(&b.workload), range(&c.workload));
    let (lo, hi) = (b_lo.max(c_lo), b_hi.min(c_hi));
    if lo > hi {
        return Err(Insufficient(format!(
            "the workloads do not overlap (baseline {b_lo}–{b_hi}, current {c_lo}–{c_hi}): no matched load to compare at"
        )));
    }
    let inside = |w: f64| (lo..=hi).contains(&w);
    let mut pooled: Vec<f64> = b
        .workload
        .iter()
        .chain(&c.workload)
        .copied()
        .filter(|&w| inside(w))
        .collect();
    let edges = stratum_edges(&mut pooled);
    let mut strata = vec![(Vec::new(), Vec::new()); edges.len() + 1];
    for (w, k) in b.workload.iter().zip(&b.kpi).filter(|(w, _)| inside(**w)) {
        strata[stratum_of(&edges, *w)].0.push(*k);
    }
    for (w, k) in c.workload.iter().zip(&c.kpi).filter(|(w, _)| inside(**w)) {
        strata[stratum_of(&edges, *w)].1.push(*k);
    }
    strata.retain(|(sb, sc)| sb.len() >= MIN_PER_STRATUM && sc.len() >= MIN_PER_STRATUM);
    let points = strata
        .iter()
        .fold((0, 0), |(nb, nc), (sb, sc)| (nb + sb.len(), nc + sc.len()));
    if points.0.min(points.1) < MIN_MATCHED {
        return Err(Insufficient(format!(
            "only {} baseline and {} current points at matched workload ({lo}–{hi}); at least {MIN_MATCHED} of each are needed",
            points.0, points.1
        )));
    }
    let effect = weighted_effect(pair.kpi, &mut strata);
    let z = van_elteren_z(&strata);
    let z_worse = match pair.kpi {
        Kpi::ResponseTime => z,
        Kpi::Throughput | Kpi::SuccessRate => -z,
    };
    Ok(Matched {
        effect,
        p_value: normal_sf(z_worse),
        workload: (lo, hi),
        points,
    })
}

/// Interior edges at the pooled workload's quantiles `k / STRATA`, repeated edges merged.
fn stratum_edges(pooled: &mut [f64]) -> Vec<f64> {
    pooled.sort_by(f64::total_cmp);
    let n = pooled.len();
    let mut edges: Vec<f64> = (1..STRATA).map(|k| pooled[(n - 1) * k / STRATA]).collect();
    edges.dedup();
    edges
}

/// Index of the stratum a workload falls in: values up to and including an edge belong
/// below it, so a discrete load's values are never split across strata.
fn stratum_of(edges: &[f64], w: f64) -> usize {
    edges.partition_point(|&e| e < w)
}

type Strata = [(Vec<f64>, Vec<f64>)];

/// Weighted mean over strata of `loc(current) / loc(baseline) − 1`; strata whose
/// baseline location is zero (nothing to be relative to) are skipped.
fn weighted_effect(kpi: Kpi, strata: &mut Strata) -> f64 {
    let (mut sum, mut weights) = (0.0, 0.0);
    for (sb, sc) in strata.iter_mut() {
        let (lb, lc) = (location(kpi, sb), location(kpi, sc));
        if lb.abs() <= f64::EPSILON {
            continue;
        }
        let (nb, nc) = (sb.len() as f64, sc.len() as f64);
        let w = nb * nc / (nb + nc);
        sum += w * (lc / lb - 1.0);
        weights += w;
    }
    if weights > 0.0 {
        sum / weights
    } else {
        0.0
    }
}

fn location(kpi: Kpi, v: &mut [f64]) -> f64 {
    match kpi {
        Kpi::SuccessRate => v.iter().sum::<f64>() / v.len() as f64,
        Kpi::ResponseTime | Kpi::Throughput => crate::normalize::median_in_place(v),
    }
}

/// Van Elteren's statistic as a standard normal score: positive when the current
/// window ranks higher than the baseline within strata. Zero when every value ties.
fn van_elteren_z(strata: &Strata) -> f64 {
    let (mut t, mut var) = (0.0, 0.0);
    for (sb, sc) in strata {
        let (nb, nc) = (sb.len() as f64, sc.len() as f64);
        let n = nb + nc;
        let RankSum { first, tie_term } = rank_sum(sc, sb);
        let expected = nc * (n + 1.0) / 2.0;
        let v = nb * nc / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
        t += (first - expected) / (n + 1.0);
        var += v / ((n + 1.0) * (n + 1.0));
    }
    if var > 0.0 {
        t / var.sqrt()
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
    fn disjoint_or_barely_overlapping_loads_are_insufficient_data() {
        let low = window(&ramp(2.0, 6.0, 40), 0.0, 0);
        let high = window(&ramp(8.0, 14.0, 40), 0.0, 0);
        let why = compare(&pair(Kpi::ResponseTime, low.clone(), high)).unwrap_err();
        assert!(why.0.contains("do not overlap"), "{why}");
        let touching = window(&ramp(6.0, 14.0, 40), 0.0, 0);
        let why = compare(&pair(Kpi::ResponseTime, low, touching)).unwrap_err();
        assert!(why.0.contains("matched workload (6–6)"), "{why}");
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
    fn discrete_loads_are_never_split_across_strata() {
        let mut pooled: Vec<f64> = [4.0, 4.0, 4.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 12.0].into();
        let edges = stratum_edges(&mut pooled);
        assert_eq!(edges, vec![4.0, 8.0]);
        assert_eq!(stratum_of(&edges, 4.0), 0);
        assert_eq!(stratum_of(&edges, 8.0), 1);
        assert_eq!(stratum_of(&edges, 12.0), 2);
    }
}
