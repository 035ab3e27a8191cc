//! Two-sample statistical tests: Kolmogorov–Smirnov and Mann–Whitney U.
//!
//! These are the baselines DynamicRegress is compared against (paper §IV, α = 0.05) and
//! cheap regression detectors on their own: they need no model, but they ignore the
//! workload, so a different load profile alone makes them fire.
//!
//! Both follow the conventions of `scipy.stats` (two-sided alternative):
//!
//! * [`ks_2samp`]: statistic `D = sup |F₁ − F₂|`. The p-value is **exact** when both
//!   samples have at most [`KS_EXACT_MAX_N`] points (scipy's `method="auto"` rule): the
//!   probability that a uniformly random lattice path from `(0,0)` to `(n₁,n₂)` leaves the
//!   band `|i/n₁ − j/n₂| < D` (Hodges 1957). Larger samples use the limiting Kolmogorov
//!   distribution at `√(n₁n₂/(n₁+n₂))·D`, as R's `ks.test` does (scipy uses a finite-n
//!   correction there; the two agree to about 1e-3 at such sizes).
//! * [`mann_whitney_u`]: statistic `U₁` of the first sample (average ranks for ties). The
//!   p-value is **exact** when one sample has at most [`MWU_EXACT_MAX_N`] points and there
//!   are no ties, otherwise the normal approximation with tie correction and continuity
//!   correction (scipy's `method="auto"`, `use_continuity=True`).
//!
//! `tests` checks both against values computed with scipy 1.x, committed as
//! `models/golden/regress_stats.json` (generator: `models/train/regress/make_stats_fixtures.py`).

/// Samples up to this size (both) get the exact KS p-value (scipy's `auto` rule).
pub(crate) const KS_EXACT_MAX_N: usize = 10_000;

/// A sample this small (either), without ties, gets the exact MWU p-value (scipy's rule).
pub(crate) const MWU_EXACT_MAX_N: usize = 8;

/// Result of a two-sample test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TestResult {
    /// The test statistic (`D` for KS, `U₁` for MWU).
    pub statistic: f64,
    /// Two-sided p-value in `[0, 1]`.
    pub p_value: f64,
    /// `true` when the p-value came from the exact null distribution.
    pub exact: bool,
}

/// Why a test could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StatsError {
    /// One of the samples is empty.
    #[error("a sample is empty")]
    Empty,
    /// A sample contains NaN or an infinity.
    #[error("a sample contains a non-finite value")]
    NonFinite,
}

fn check(x: &[f64], y: &[f64]) -> Result<(), StatsError> {
    if x.is_empty() || y.is_empty() {
        return Err(StatsError::Empty);
    }
    if x.iter().chain(y).any(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite);
    }
    Ok(())
}

fn sorted(x: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Two-sample, two-sided Kolmogorov–Smirnov test.
pub(crate) fn ks_2samp(x: &[f64], y: &[f64]) -> Result<TestResult, StatsError> {
    check(x, y)?;
    let (a, b) = (sorted(x), sorted(y));
    let (n1, n2) = (a.len(), b.len());
    // Walk both sorted samples; compare the ECDFs after each distinct value, in exact
    // integer units of 1/(n1*n2) so that the lattice test below has no rounding.
    let (mut i, mut j) = (0usize, 0usize);
    let mut d_units: i128 = 0;
    while i < n1 && j < n2 {
        let v = a[i].min(b[j]);
        while i < n1 && a[i] <= v {
            i += 1;
        }
        while j < n2 && b[j] <= v {
            j += 1;
        }
        let diff = (i as i128 * n2 as i128 - j as i128 * n1 as i128).abs();
        d_units = d_units.max(diff);
    }
    let d = d_units as f64 / (n1 as f64 * n2 as f64);
    if n1.max(n2) <= KS_EXACT_MAX_N {
        let p = ks_exact_outside(n1, n2, d_units);
        return Ok(TestResult {
            statistic: d,
            p_value: p.clamp(0.0, 1.0),
            exact: true,
        });
    }
    let en = (n1 as f64 * n2 as f64) / (n1 + n2) as f64;
    Ok(TestResult {
        statistic: d,
        p_value: kolmogorov_sf(en.sqrt() * d),
        exact: false,
    })
}

/// P(sup |F₁ − F₂| ≥ D) under H₀, D = `d_units / (n1·n2)`.
///
/// A uniformly random path from (0,0) to (n1,n2) is a Markov chain: from (i,j) it steps
/// in i with probability (n1−i)/(n1−i+n2−j). We push probability mass forward row by row
/// and remove (and add to the result) the mass that first reaches a point outside the band
/// `|i·n2 − j·n1| < d_units`. Summing the escaped mass, rather than computing
/// `1 − P(inside)`, keeps small p-values accurate.
fn ks_exact_outside(n1: usize, n2: usize, d_units: i128) -> f64 {
    if d_units == 0 {
        return 1.0;
    }
    let (m, n) = (n1 as i128, n2 as i128);
    let outside = |i: usize, j: usize| (i as i128 * n - j as i128 * m).abs() >= d_units;
    let mut row = vec![0.0f64; n2 + 1];
    row[0] = 1.0; // (0,0) is inside since d_units > 0
    let mut escaped = 0.0f64;
    for i in 0..=n1 {
        // Moves within row i (j -> j+1), then into row i+1.
        let mut next = vec![0.0f64; n2 + 1];
        for j in 0..=n2 {
            let mass = row[j];
            if mass == 0.0 {
                continue;
            }
            let (ri, rj) = ((n1 - i) as f64, (n2 - j) as f64);
            if ri + rj == 0.0 {
                continue; // reached (n1,n2)
            }
            let p_i = ri / (ri + rj);
            if i < n1 {
                let to = mass * p_i;
                if outside(i + 1, j) {
                    escaped += to;
                } else {
                    next[j] += to;
                }
            }
            if j < n2 {
                let to = mass * (1.0 - p_i);
                if outside(i, j + 1) {
                    escaped += to;
                } else {
                    row[j + 1] += to;
                }
            }
        }
        row = next;
    }
    escaped
}

/// Survival function of the limiting Kolmogorov distribution,
/// `Q(x) = 2 Σ_{k≥1} (−1)^{k−1} exp(−2k²x²)` (scipy's `kstwobign.sf`).
pub(crate) fn kolmogorov_sf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 1.0;
    }
    if x < 1.0 {
        // The alternating series converges slowly here; use the theta-function form of
        // the CDF: sqrt(2π)/x Σ exp(−(2k−1)²π²/(8x²)).
        let c = -std::f64::consts::PI.powi(2) / (8.0 * x * x);
        let mut cdf = 0.0;
        for k in 1..=20 {
            let t = (2 * k - 1) as f64;
            cdf += (c * t * t).exp();
        }
        cdf *= (2.0 * std::f64::consts::PI).sqrt() / x;
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let kf = k as f64;
        let term = (-2.0 * kf * kf * x * x).exp();
        sum += if k % 2 == 1 { term } else { -term };
        if term < 1e-300 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Standard normal survival function `P(Z > z)`.
pub(crate) fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// Sum of the ranks of `x` in the pooled sample `x ∪ y` (1-based, average ranks for
/// ties), and the tie term `Σ (t³ − t)` over tie groups of size `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RankSum {
    /// Rank sum of the first sample.
    pub first: f64,
    /// `Σ (t³ − t)` over the pooled sample's tie groups.
    pub tie_term: f64,
}

/// Ranks the pooled sample once; the rank tests ([`mann_whitney_u`] and the
/// workload-matched judge's stratified test) share it. Values must be finite.
pub(crate) fn rank_sum(x: &[f64], y: &[f64]) -> RankSum {
    let mut pooled: Vec<(f64, bool)> = x.iter().map(|&v| (v, true)).collect();
    pooled.extend(y.iter().map(|&v| (v, false)));
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pooled.len();
    let mut first = 0.0f64;
    let mut tie_term = 0.0f64;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        let t = (end - start) as f64;
        let avg_rank = (start + end + 1) as f64 / 2.0; // ranks are 1-based
        first += avg_rank * pooled[start..end].iter().filter(|p| p.1).count() as f64;
        tie_term += t * t * t - t;
        start = end;
    }
    RankSum { first, tie_term }
}

/// Two-sample, two-sided Mann–Whitney U test.
pub(crate) fn mann_whitney_u(x: &[f64], y: &[f64]) -> Result<TestResult, StatsError> {
    check(x, y)?;
    let (n1, n2) = (x.len(), y.len());
    let n = n1 + n2;
    let RankSum {
        first: r1,
        tie_term,
    } = rank_sum(x, y);
    let (f1, f2) = (n1 as f64, n2 as f64);
    let u1 = r1 - f1 * (f1 + 1.0) / 2.0;
    let u2 = f1 * f2 - u1;
    let u = u1.max(u2);
    if n1.min(n2) <= MWU_EXACT_MAX_N && tie_term == 0.0 {
        if let Some(sf) = mwu_exact_sf(n1.min(n2), n1.max(n2), u) {
            return Ok(TestResult {
                statistic: u1,
                p_value: (2.0 * sf).min(1.0),
                exact: true,
            });
        }
    }
    let mu = f1 * f2 / 2.0;
    let nf = n as f64;
    let var = f1 * f2 / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        // Every value is equal: no evidence of a difference.
        return Ok(TestResult {
            statistic: u1,
            p_value: 1.0,
            exact: false,
        });
    }
    let z = (u - mu - 0.5) / var.sqrt();
    Ok(TestResult {
        statistic: u1,
        p_value: (2.0 * normal_sf(z)).clamp(0.0, 1.0),
        exact: false,
    })
}

/// `P(U ≥ u)` under H₀ for sample sizes `m ≤ n`, from the Gaussian binomial
/// coefficient `[m+n choose m]_q`, whose coefficient of `q^k` counts the arrangements
/// with `U = k`. Built as `Π_{i=1..m} (1 − q^{n+i}) / (1 − q^i)`: every partial
/// product is itself a Gaussian binomial, so integer arithmetic stays exact. `None`
/// when the counts could overflow.
fn mwu_exact_sf(m: usize, n: usize, u: f64) -> Option<f64> {
    // Counts are at most C(m+n, m); keep them well inside i128.
    let mut total: f64 = 1.0;
    for i in 1..=m {
        total = total * (n + i) as f64 / i as f64;
    }
    if total > 1e35 {
        return None;
    }
    let deg = m * n;
    let mut c = vec![0i128; deg + 1];
    c[0] = 1;
    for i in 1..=m {
        // multiply by (1 − q^{n+i}), from high degree down
        let s = n + i;
        for k in (s..=deg).rev() {
            c[k] -= c[k - s];
        }
        // divide by (1 − q^i): prefix sums with stride i
        for k in i..=deg {
            c[k] += c[k - i];
        }
    }
    let all: i128 = c.iter().sum();
    let from = u.ceil().max(0.0) as usize;
    let tail: i128 = c.iter().skip(from).sum();
    Some(tail as f64 / all as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        x: Vec<f64>,
        y: Vec<f64>,
        ks_statistic: f64,
        ks_p: f64,
        mwu_statistic: f64,
        mwu_p: f64,
    }

    #[derive(serde::Deserialize)]
    struct Fixtures {
        cases: Vec<Case>,
        kstwobign: Vec<(f64, f64)>,
    }

    fn fixtures() -> Fixtures {
        let text = include_str!("../../../models/golden/regress_stats.json");
        serde_json::from_str(text).expect("fixture parses")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 + 1e-7 * b.abs()
    }

    #[test]
    fn ks_matches_scipy() {
        for c in fixtures().cases {
            let r = ks_2samp(&c.x, &c.y).unwrap();
            assert!(
                close(r.statistic, c.ks_statistic),
                "{}: D {} vs {}",
                c.name,
                r.statistic,
                c.ks_statistic
            );
            assert!(
                close(r.p_value, c.ks_p),
                "{}: p {} vs {}",
                c.name,
                r.p_value,
                c.ks_p
            );
        }
    }

    #[test]
    fn mwu_matches_scipy() {
        for c in fixtures().cases {
            let r = mann_whitney_u(&c.x, &c.y).unwrap();
            assert!(
                close(r.statistic, c.mwu_statistic),
                "{}: U {} vs {}",
                c.name,
                r.statistic,
                c.mwu_statistic
            );
            assert!(
                close(r.p_value, c.mwu_p),
                "{}: p {} vs {}",
                c.name,
                r.p_value,
                c.mwu_p
            );
        }
    }

    #[test]
    fn kolmogorov_sf_matches_scipy() {
        for (x, sf) in fixtures().kstwobign {
            assert!(
                close(kolmogorov_sf(x), sf),
                "x={x}: {} vs {sf}",
                kolmogorov_sf(x)
            );
        }
    }

    #[test]
    fn large_samples_use_the_asymptotic_ks() {
        let x: Vec<f64> = (0..10_001).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..200).map(|i| i as f64 * 50.0 + 0.5).collect();
        let r = ks_2samp(&x, &y).unwrap();
        assert!(!r.exact);
        assert!(r.p_value > 0.5, "same range, p = {}", r.p_value);
    }

    #[test]
    fn identical_samples_are_not_different() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(ks_2samp(&x, &x).unwrap().p_value, 1.0);
        assert!(mann_whitney_u(&x, &x).unwrap().p_value > 0.99);
        let flat = [3.0; 20];
        assert_eq!(mann_whitney_u(&flat, &flat).unwrap().p_value, 1.0);
    }

    #[test]
    fn bad_samples_are_errors() {
        assert_eq!(ks_2samp(&[], &[1.0]), Err(StatsError::Empty));
        assert_eq!(
            mann_whitney_u(&[1.0, f64::NAN], &[1.0]),
            Err(StatsError::NonFinite)
        );
    }
}
