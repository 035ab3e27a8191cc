//! Algorithm 1: performance anomaly pattern discovery, and the min-max scaler.
//!
//! Steps, with the reference implementation's choices:
//!
//! 1. min-max scale `T_n` and `T_a` with a scaler fitted on `T_n` (scikit-learn's
//!    `MinMaxScaler` arithmetic);
//! 2. matrix profiles: `T_n` self-join, `T_a`→`T_n` AB-join ([`super::matrix_profile`]);
//! 3. graph with cuts at the `noise_p`-th percentile of the `T_n` profile (100 = clean
//!    `T_n`, the paper's default; lower values are the §5.3 guard) and the `p`-th
//!    percentile of the `T_a` profile (numpy's linear interpolation); connected
//!    components ([`super::graph`]);
//! 4. mean of each component, Affinity Propagation over the means
//!    ([`super::affinity`]); components with the same label form a cluster; a cluster
//!    whose members are all isolated `T_a` nodes is abnormal;
//! 5. per cluster keep μ, S and R ([`super::pattern`]); every `T_a` subsequence of an
//!    abnormal cluster is reported anomalous.

use serde::{Deserialize, Serialize};

use super::affinity::{affinity_propagation, ApParams};
use super::graph::{components, UnionFind};
use super::matrix_profile::{ab_join, self_join, MatrixProfile};
use super::pattern::{Kind, PatternSet};
use super::AdsketchError;

/// Min-max scaler fitted on `T_n`, with scikit-learn's `MinMaxScaler` arithmetic
/// (`x·scale + min`, where `scale = 1/(max−min)` and `min = −data_min·scale`; a range
/// under `10·ε` counts as 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaler {
    /// Multiplier.
    pub scale: f64,
    /// Offset added after multiplying.
    pub min: f64,
}

impl Scaler {
    /// Fits on `values` (non-finite values are ignored; an empty input gives identity).
    pub fn fit(values: &[f64]) -> Scaler {
        let Some((lo, hi)) = crate::normalize::finite_range(values.iter().copied()) else {
            return Scaler {
                scale: 1.0,
                min: 0.0,
            };
        };
        let range = hi - lo;
        let range = if range < 10.0 * f64::EPSILON {
            1.0
        } else {
            range
        };
        let scale = 1.0 / range;
        Scaler {
            scale,
            min: 0.0 - lo * scale,
        }
    }

    /// Scales one value.
    #[inline]
    pub fn apply(&self, v: f64) -> f64 {
        v * self.scale + self.min
    }

    /// Scales a series.
    pub fn transform(&self, values: &[f64]) -> Vec<f64> {
        values.iter().map(|&v| self.apply(v)).collect()
    }
}

/// numpy's `percentile(values, q)` with the default linear interpolation.
pub(crate) fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let virtual_index = (n - 1) as f64 * (q / 100.0);
    let below = virtual_index.floor().clamp(0.0, (n - 1) as f64);
    let gamma = virtual_index - below;
    let lo = below as usize;
    let hi = (lo + 1).min(n - 1);
    let (a, b) = (v[lo], v[hi]);
    // numpy's `_lerp`: evaluated from the nearer end for accuracy.
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// Parameters of Algorithm 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OfflineParams {
    /// Subsequence length m.
    pub m: usize,
    /// Percentile of the `T_a` profile above which a `T_a` subsequence is isolated.
    pub p: f64,
    /// Percentile of the `T_n` profile above which a `T_n` subsequence is dropped (the
    /// §5.3 guard for an unclean `T_n`); 100 keeps all (clean `T_n`).
    pub noise_p: f64,
    /// Affinity Propagation settings.
    pub ap: ApParams,
}

impl OfflineParams {
    /// The reference's settings for subsequence length `m` and percentile `p`.
    pub fn new(m: usize, p: f64) -> Self {
        OfflineParams {
            m,
            p,
            noise_p: 100.0,
            ap: ApParams::default(),
        }
    }

    fn check(&self) -> Result<(), AdsketchError> {
        let pct = |name, v: f64| {
            if (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(AdsketchError::Param {
                    name,
                    reason: format!("{v} is not a percentile in [0, 100]"),
                })
            }
        };
        if self.m < 1 {
            return Err(AdsketchError::Param {
                name: "m",
                reason: "must be at least 1".into(),
            });
        }
        pct("p", self.p)?;
        pct("noise_p", self.noise_p)?;
        if !(0.5..1.0).contains(&self.ap.damping) {
            return Err(AdsketchError::Param {
                name: "damping",
                reason: format!("{} is not in [0.5, 1)", self.ap.damping),
            });
        }
        Ok(())
    }
}

/// What Algorithm 1 returns.
#[derive(Debug, Clone)]
pub struct OfflineResult {
    /// The learned patterns (offline origin), ready for Algorithms 2–3.
    pub set: PatternSet,
    /// Start indices (in `T_a`) of the subsequences judged anomalous, ascending.
    pub anomalous_starts: Vec<usize>,
    /// For each `T_a` subsequence, the index of its pattern in `set.patterns`.
    pub test_pattern: Vec<usize>,
    /// Number of anomaly candidates (isolated `T_a` nodes) before clustering.
    pub candidates: usize,
}

/// Runs Algorithm 1 on raw (unscaled) `T_n` and `T_a`.
pub fn discover(
    train: &[f64],
    test: &[f64],
    params: &OfflineParams,
) -> Result<OfflineResult, AdsketchError> {
    params.check()?;
    let scaler = Scaler::fit(train);
    let tn = scaler.transform(train);
    let ta = scaler.transform(test);
    discover_scaled(&tn, &ta, scaler, params)
}

/// Algorithm 1 on series already scaled by `scaler`.
pub(crate) fn discover_scaled(
    tn: &[f64],
    ta: &[f64],
    scaler: Scaler,
    params: &OfflineParams,
) -> Result<OfflineResult, AdsketchError> {
    params.check()?;
    let m = params.m;
    let (train_mp, test_mp) = profiles(tn, ta, m)?;
    if train_mp.distance.iter().all(|d| d.is_infinite()) {
        return Err(AdsketchError::TooShort {
            what: "T_n (no subsequence outside the exclusion zone)",
            len: tn.len(),
            m,
        });
    }
    let train_cut = percentile(&train_mp.distance, params.noise_p);
    let test_cut = percentile(&test_mp.distance, params.p);
    let comps = components(&train_mp, train_cut, &test_mp, test_cut);
    let nt = comps.n_train;
    let subseq = |node: usize| -> &[f64] {
        if node < nt {
            &tn[node..node + m]
        } else {
            &ta[node - nt..node - nt + m]
        }
    };
    let means: Vec<Vec<f64>> = comps.members.iter().map(|c| mean(c, &subseq, m)).collect();
    let candidates = (0..comps.members.len())
        .filter(|&c| comps.is_candidate(c))
        .count();
    let ap = affinity_propagation(&means, &params.ap);

    // Clusters in order of first appearance of their label, members concatenated.
    let mut label_slot: Vec<Option<usize>> = vec![None; comps.members.len().max(1)];
    let mut clusters: Vec<(Vec<usize>, bool)> = Vec::new();
    for (c, &label) in ap.labels.iter().enumerate() {
        let slot = *label_slot[label].get_or_insert_with(|| {
            clusters.push((Vec::new(), true));
            clusters.len() - 1
        });
        let entry = &mut clusters[slot];
        entry.0.extend_from_slice(&comps.members[c]);
        entry.1 &= comps.is_candidate(c);
    }

    let mut anomalous_starts = Vec::new();
    let mut test_pattern = vec![usize::MAX; ta.len() + 1 - m];
    let mut summaries = Vec::with_capacity(clusters.len());
    for (k, (members, abnormal)) in clusters.iter().enumerate() {
        let mu = mean(members, &subseq, m);
        let radius = members
            .iter()
            .map(|&v| euclid(subseq(v), &mu))
            .fold(0.0f64, f64::max);
        for &v in members {
            if v >= nt {
                test_pattern[v - nt] = k;
                if *abnormal {
                    anomalous_starts.push(v - nt);
                }
            }
        }
        summaries.push((mu, members.len() as u64, radius, *abnormal));
    }
    anomalous_starts.sort_unstable();
    let mut set = PatternSet::from_clusters(m, scaler, summaries);
    group_overlapping_abnormal(&mut set, &test_pattern, m);
    Ok(OfflineResult {
        set,
        anomalous_starts,
        test_pattern,
        candidates,
    })
}

/// Paper §3.2.2: abnormal clusters whose `T_a` members overlap in time (starts less
/// than `m` apart) describe one issue; they get a common [`super::Pattern::group`].
/// (Only abnormal patterns: consecutive normal subsequences overlap all the time.)
fn group_overlapping_abnormal(set: &mut PatternSet, test_pattern: &[usize], m: usize) {
    let abnormal = |k: usize| k < set.patterns.len() && set.patterns[k].kind == Kind::Abnormal;
    let mut uf = UnionFind::new(set.patterns.len());
    for (p, &a) in test_pattern.iter().enumerate() {
        if !abnormal(a) {
            continue;
        }
        for &b in test_pattern.iter().skip(p + 1).take(m.saturating_sub(1)) {
            if b != a && abnormal(b) {
                uf.union(a, b);
            }
        }
    }
    let n = set.patterns.len();
    let mut smallest = vec![u64::MAX; n];
    let mut size = vec![0usize; n];
    for k in 0..n {
        let r = uf.find(k);
        smallest[r] = smallest[r].min(set.patterns[k].id);
        size[r] += 1;
    }
    for k in 0..n {
        let r = uf.find(k);
        if size[r] > 1 {
            set.patterns[k].group = Some(smallest[r]);
        }
    }
}

/// The two matrix profiles, computed on both cores when large.
fn profiles(
    tn: &[f64],
    ta: &[f64],
    m: usize,
) -> Result<(MatrixProfile, MatrixProfile), AdsketchError> {
    Ok((self_join(tn, m)?, ab_join(ta, tn, m)?))
}

/// Mean of the subsequences of `nodes`, summed in order (as `np.mean(axis=0)`).
fn mean<'a>(nodes: &[usize], subseq: &impl Fn(usize) -> &'a [f64], m: usize) -> Vec<f64> {
    let mut acc = vec![0.0f64; m];
    for &v in nodes {
        for (a, x) in acc.iter_mut().zip(subseq(v)) {
            *a += x;
        }
    }
    let n = nodes.len() as f64;
    acc.iter_mut().for_each(|a| *a /= n);
    acc
}

/// Euclidean distance.
#[inline]
pub(crate) fn euclid(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 50.0), 2.5);
        // np.percentile([1,2,3,4], 99) == 3.9699999999999998
        assert_eq!(percentile(&v, 99.0), 3.9699999999999998);
    }

    #[test]
    fn scaler_matches_minmax() {
        let s = Scaler::fit(&[2.0, 4.0, 3.0]);
        assert_eq!(s.transform(&[2.0, 3.0, 4.0, 6.0]), vec![0.0, 0.5, 1.0, 2.0]);
        let flat = Scaler::fit(&[5.0, 5.0]);
        assert_eq!(flat.apply(5.0), 0.0);
        assert_eq!(flat.apply(6.0), 1.0);
    }

    /// A periodic series with a spike in the test part: the spike's subsequences, and
    /// only they, come out anomalous.
    #[test]
    fn finds_an_injected_spike() {
        let wave = |k: usize| ((k % 20) as f64 / 20.0 * std::f64::consts::TAU).sin();
        let train: Vec<f64> = (0..400).map(wave).collect();
        let mut test: Vec<f64> = (400..800).map(wave).collect();
        test[200] += 20.0;
        let r = discover(&train, &test, &OfflineParams::new(5, 99.0)).unwrap();
        assert!(!r.anomalous_starts.is_empty());
        for &s in &r.anomalous_starts {
            assert!((196..=200).contains(&s), "unexpected anomalous start {s}");
        }
        let (_, abnormal) = r.set.counts();
        assert!(abnormal >= 1);
        // Overlapping abnormal patterns form one issue group, and share labels.
        let ab: Vec<u64> = r
            .set
            .patterns()
            .iter()
            .filter(|p| p.kind == Kind::Abnormal)
            .map(|p| p.id)
            .collect();
        if ab.len() > 1 {
            let mut set = r.set.clone();
            set.set_labels(ab[0], vec!["spike".into()]).unwrap();
            for id in &ab {
                assert_eq!(set.get(*id).unwrap().labels, vec!["spike".to_string()]);
            }
        }
        // Every test subsequence has a pattern.
        assert!(r.test_pattern.iter().all(|&p| p < r.set.patterns.len()));
    }

    /// §5.3: an anomaly already present in `T_n` hides its recurrence in `T_a` when
    /// `T_n` is assumed clean; the percentile guard on the `T_n` profile finds it again.
    #[test]
    fn noise_guard_finds_an_anomaly_that_unclean_t_n_hides() {
        let wave = |k: usize| ((k % 20) as f64 / 20.0 * std::f64::consts::TAU).sin();
        let mut train: Vec<f64> = (0..400).map(wave).collect();
        train[150] += 20.0;
        let mut test: Vec<f64> = (400..800).map(wave).collect();
        test[200] += 20.0;
        let clean = discover(&train, &test, &OfflineParams::new(5, 99.0)).unwrap();
        assert!(
            clean.anomalous_starts.is_empty(),
            "T_n's spike makes T_a's look normal: {:?}",
            clean.anomalous_starts
        );
        let mut guarded = OfflineParams::new(5, 99.0);
        guarded.noise_p = 98.0;
        let r = discover(&train, &test, &guarded).unwrap();
        assert!(!r.anomalous_starts.is_empty());
        for &s in &r.anomalous_starts {
            assert!((196..=200).contains(&s), "unexpected anomalous start {s}");
        }
    }

    #[test]
    fn overlapping_abnormal_patterns_share_an_issue_group() {
        let mut set = PatternSet::from_clusters(
            3,
            Scaler::fit(&[0.0, 1.0]),
            vec![
                (vec![0.0; 3], 20, 0.1, false),
                (vec![1.0; 3], 1, 0.0, true),
                (vec![2.0; 3], 1, 0.0, true),
                (vec![3.0; 3], 1, 0.0, true),
            ],
        );
        // Starts 2 and 3 (patterns 1 and 2) overlap; pattern 3 at start 9 is 6 away.
        let test_pattern = [0, 0, 1, 2, 0, 0, 0, 0, 0, 3, 0, 0];
        group_overlapping_abnormal(&mut set, &test_pattern, 3);
        let groups: Vec<Option<u64>> = set.patterns().iter().map(|p| p.group).collect();
        assert_eq!(groups, vec![None, Some(1), Some(1), None]);
        set.set_labels(2, vec!["disk-full".into()]).unwrap();
        assert_eq!(set.get(1).unwrap().labels, vec!["disk-full".to_string()]);
        assert!(set.get(0).unwrap().labels.is_empty());
        assert!(set.get(3).unwrap().labels.is_empty());
    }

    #[test]
    fn rejects_bad_parameters() {
        let t: Vec<f64> = (0..50).map(|k| k as f64).collect();
        assert!(discover(&t, &t, &OfflineParams::new(0, 99.0)).is_err());
        assert!(discover(&t, &t, &OfflineParams::new(5, 101.0)).is_err());
        assert!(discover(&t[..3], &t, &OfflineParams::new(5, 99.0)).is_err());
    }
}
