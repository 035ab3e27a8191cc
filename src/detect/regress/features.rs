//! Input normalisation of the Siamese model: both windows in the baseline's units.
//!
//! The model sees each window as a sequence of `(workload, kpi)` steps. Both windows of
//! a pair are scaled with statistics of the **baseline** only, so that "the current
//! window is higher at the same load" stays visible after scaling, and KPI units are
//! relative, so that a 15% slowdown looks the same on a 5 ms and on a 500 ms route
//! (`m_b` = baseline median of the KPI):
//!
//! | channel | value | one unit is |
//! |---|---|---|
//! | workload | `w / max(baseline workload)` | the baseline's peak load |
//! | response time | `ln(k / m_b) / ln(1.1)` | 10% slower than the baseline median |
//! | throughput | `(k − m_b) / (0.1·m_b)` | 10% of the baseline median |
//! | success rate | `(k − m_b) / 0.005` | half a percentage point |
//!
//! KPI values are clamped to `[−CLAMP, CLAMP]`; medians are floored at 1e-9 for the
//! ratios. A window longer than [`MAX_STEPS`] rows is then reduced to at most that many
//! steps by averaging consecutive groups of `k = ⌈T / MAX_STEPS⌉` rows (the last group
//! may be shorter): load tests are sampled every 1–5 s, so this is one more sampling
//! interval, and it bounds the LSTM's cost whatever the window length. `models/train/regress/features.py` implements the same function for
//! training; the golden pairs (`models/golden/regress_pair*`) check that both agree.

use super::{Kpi, KpiPair, Series};

/// Clamp applied to the scaled KPI.
pub(crate) const CLAMP: f64 = 50.0;
/// Longest sequence handed to the model; longer windows are averaged down to it.
pub(crate) const MAX_STEPS: usize = 120;
const FLOOR: f64 = 1e-9;

/// Median of a slice (NaN-free); NaN when empty.
pub(crate) fn median(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    crate::normalize::median_in_place(&mut x.to_vec())
}

/// The scaling of one KPI value given the baseline median `m`.
pub(crate) fn scale_kpi(kpi: Kpi, k: f64, m: f64) -> f64 {
    let v = match kpi {
        Kpi::ResponseTime => (k.max(FLOOR) / m.max(FLOOR)).ln() / 1.1f64.ln(),
        Kpi::Throughput => (k - m) / (0.1 * m.abs()).max(FLOOR),
        Kpi::SuccessRate => (k - m) / 0.005,
    };
    v.clamp(-CLAMP, CLAMP)
}

/// Normalised `[len, 2]` sequences (baseline, current) for the model.
pub(crate) fn pair_features(pair: &KpiPair) -> (Vec<f32>, Vec<f32>) {
    let w_scale = pair
        .baseline
        .workload
        .iter()
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let m = median(&pair.baseline.kpi);
    let seq = |x: &Series| -> Vec<f32> {
        let rows: Vec<[f64; 2]> = x
            .workload
            .iter()
            .zip(&x.kpi)
            .map(|(&w, &k)| [w / w_scale, scale_kpi(pair.kpi, k, m)])
            .collect();
        downsample(&rows, MAX_STEPS)
            .into_iter()
            .flat_map(|[w, k]| [w as f32, k as f32])
            .collect()
    };
    (seq(&pair.baseline), seq(&pair.current))
}

/// Means of consecutive groups of `⌈T / max_steps⌉` rows (the rows themselves when
/// `T <= max_steps`).
pub(crate) fn downsample(rows: &[[f64; 2]], max_steps: usize) -> Vec<[f64; 2]> {
    if rows.len() <= max_steps || max_steps == 0 {
        return rows.to_vec();
    }
    let k = rows.len().div_ceil(max_steps);
    rows.chunks(k)
        .map(|g| {
            let n = g.len() as f64;
            let (a, b) = g.iter().fold((0.0, 0.0), |(a, b), r| (a + r[0], b + r[1]));
            [a / n, b / n]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_both_windows_by_the_baseline() {
        let pair = KpiPair {
            kpi: Kpi::ResponseTime,
            baseline: Series {
                workload: vec![10.0, 20.0, 40.0],
                kpi: vec![0.1, 0.2, 0.3],
            },
            current: Series {
                workload: vec![80.0],
                kpi: vec![0.22],
            },
        };
        let (b, c) = pair_features(&pair);
        assert_eq!(b.len(), 6);
        assert!((b[0] - 0.25).abs() < 1e-6 && (b[4] - 1.0).abs() < 1e-6);
        assert!(b[3].abs() < 1e-6, "the median maps to 0");
        assert!((c[0] - 2.0).abs() < 1e-6, "current load in baseline units");
        assert!(
            (c[1] - 1.0).abs() < 1e-5,
            "10% slower is one unit: {}",
            c[1]
        );
    }

    #[test]
    fn long_windows_are_averaged_down() {
        let rows: Vec<[f64; 2]> = (0..250).map(|i| [i as f64, 1.0]).collect();
        let d = downsample(&rows, MAX_STEPS);
        assert_eq!(d.len(), 84); // k = 3: 83 full groups and one of one row
        assert_eq!(d[0], [1.0, 1.0]);
        assert_eq!(d[83], [249.0, 1.0]);
        assert_eq!(downsample(&rows[..120], MAX_STEPS).len(), 120);
    }

    #[test]
    fn units_per_kpi() {
        assert!((scale_kpi(Kpi::Throughput, 90.0, 100.0) + 1.0).abs() < 1e-12);
        assert!((scale_kpi(Kpi::SuccessRate, 0.99, 1.0) + 2.0).abs() < 1e-9);
        assert_eq!(scale_kpi(Kpi::ResponseTime, 1e6, 1e-3), CLAMP);
        assert_eq!(scale_kpi(Kpi::SuccessRate, 0.0, 1.0), -CLAMP);
        assert!(scale_kpi(Kpi::ResponseTime, 0.0, 0.0).is_finite());
    }
}
