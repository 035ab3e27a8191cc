//! Algorithm 2 (online detection) and Algorithm 3 (adaptive pattern learning).
//!
//! Both take a new subsequence `t` of length `m`, already min-max scaled with the
//! series' scaler.
//!
//! * Algorithm 2: `t` is anomalous iff its nearest pattern (Euclidean; first one on
//!   ties) is abnormal. The verdict is taken **before** Algorithm 3 updates anything,
//!   as in the reference.
//! * Algorithm 3: with `d'` the largest radius of the nearest pattern's kind (`d_n` or
//!   `d_a`), `t` joins the nearest pattern if its distance is at most `d'`: the mean is
//!   updated exactly, the size grows by one and the radius becomes the worst case
//!   `max(‖t − μ'‖, ‖μ − μ'‖ + R)`, and `d'` grows to that radius if it exceeds it.
//!   Otherwise `t` opens a new abnormal pattern of size 1 and radius 0. An abnormal
//!   pattern created online that grows beyond [`PatternSet::promote_size`] becomes normal
//!   (a frequent pattern is normal behaviour); offline abnormal patterns never do.
//!
//! # Score (1.0 = threshold)
//!
//! [`Match::score`] turns a verdict into kpiwatch's convention:
//! `score = max(2·d_N / (d_N + d_A), d_N / d_n)`, where `d_N` and `d_A` are the distances
//! to the nearest normal and nearest abnormal pattern and `d_n` the largest normal
//! radius. `score > 1` exactly when Algorithm 2 flags `t` (an abnormal pattern is nearer
//! than every normal one; this term is at most 2) or when `t` is farther from every
//! normal pattern than the largest normal radius (Algorithm 3 would open a new pattern
//! for it: an unseen shape; this term grows with the distance).

use super::pattern::{Kind, Origin, Pattern, PatternSet};

/// Patterns scanned per block.
const LANES: usize = 4;

/// The pattern means laid out for the nearest-pattern scan: blocks of [`LANES`]
/// patterns, dimension-major inside a block (`block[d * LANES + j]` is dimension `d` of
/// the block's pattern `j`), so one pass over a block computes four distances at once
/// with vector instructions and no horizontal sums. Padding lanes hold `+inf` (never
/// nearest). 200 patterns of m = 15 take 24 KB. A cache of [`PatternSet`]'s means: not
/// serialised, ignored by equality, rebuilt by [`PatternSet::reindex`].
#[derive(Debug, Clone, Default)]
pub(crate) struct MeanIndex {
    blocks: Vec<f64>,
    abnormal: Vec<bool>,
}

impl PartialEq for MeanIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl MeanIndex {
    /// The index of `patterns` (all of length `m`).
    pub(crate) fn build(patterns: &[Pattern], m: usize) -> MeanIndex {
        let mut index = MeanIndex::default();
        for (k, p) in patterns.iter().enumerate() {
            index.grow(k + 1, m);
            index.set(k, p);
        }
        index
    }

    /// `true` when the index holds exactly `n` patterns of length `m`.
    pub(crate) fn covers(&self, n: usize, m: usize) -> bool {
        self.abnormal.len() == n && self.blocks.len() == n.div_ceil(LANES) * LANES * m
    }

    fn grow(&mut self, n: usize, m: usize) {
        self.blocks
            .resize(n.div_ceil(LANES) * LANES * m, f64::INFINITY);
        self.abnormal.resize(n, false);
    }

    /// Writes pattern `p` at position `k` (growing the index by one if `k` is its length).
    pub(crate) fn set(&mut self, k: usize, p: &Pattern) {
        let m = p.mean.len();
        if k >= self.abnormal.len() {
            self.grow(k + 1, m);
        }
        let base = (k / LANES) * LANES * m + k % LANES;
        for (d, &v) in p.mean.iter().enumerate() {
            self.blocks[base + d * LANES] = v;
        }
        self.abnormal[k] = p.kind == Kind::Abnormal;
    }
}

/// What matching one subsequence found.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Id of the nearest pattern (before any update).
    pub id: u64,
    /// Its kind.
    pub kind: Kind,
    /// Distance to it.
    pub distance: f64,
    /// Algorithm 2's verdict: the nearest pattern is abnormal.
    pub anomalous: bool,
    /// Distance to the nearest normal pattern (`+inf` if none).
    pub nearest_normal: f64,
    /// Distance to the nearest abnormal pattern (`+inf` if none).
    pub nearest_abnormal: f64,
    /// `d_n` when the match was made.
    pub max_radius_normal: f64,
    /// Id of the pattern Algorithm 3 created for `t`, if it did.
    pub created: Option<u64>,
}

/// Smallest denominator of the score, so a zero radius does not divide by zero.
const SCORE_FLOOR: f64 = 1e-9;

impl Match {
    /// The anomaly score, 1.0 = threshold (see the module doc).
    pub fn score(&self) -> f64 {
        let (n, a) = (self.nearest_normal, self.nearest_abnormal);
        // 1 when equidistant, 2 on an abnormal pattern, 0 on a normal one; with no
        // abnormal pattern (a = inf) it is 0.
        let by_abnormal = if a.is_infinite() {
            0.0
        } else {
            2.0 * n / (n + a).max(SCORE_FLOOR)
        };
        let by_radius = n / self.max_radius_normal.max(SCORE_FLOOR);
        let s = by_abnormal.max(by_radius);
        if s.is_nan() {
            0.0
        } else {
            s
        }
    }
}

impl PatternSet {
    /// Nearest pattern overall and nearest of each kind, as squared distances:
    /// `(index, d², d²_normal, d²_abnormal)`; the first pattern wins ties. Both paths
    /// sum `(μ_d − t_d)²` in dimension order, so they give identical results.
    fn scan(&self, t: &[f64]) -> Option<(usize, f64, f64, f64)> {
        let mut best = (usize::MAX, f64::INFINITY);
        let mut bound = [f64::INFINITY; 2];
        let mut visit = |k: usize, d2: f64, abnormal: bool| {
            let slot = usize::from(abnormal);
            if d2 < bound[slot] {
                bound[slot] = d2;
            }
            if d2 < best.1 {
                best = (k, d2);
            }
        };
        if self.index_fresh() && self.m > 0 {
            let m = self.m;
            let n = self.index.abnormal.len();
            for (b, block) in self.index.blocks.chunks_exact(LANES * m).enumerate() {
                let d2 = block_sq_dist(block, t);
                for (j, &d) in d2.iter().enumerate() {
                    let k = b * LANES + j;
                    if k < n {
                        visit(k, d, self.index.abnormal[k]);
                    }
                }
            }
        } else {
            // A set deserialised without `from_json` and not yet reindexed.
            for (k, p) in self.patterns.iter().enumerate() {
                visit(k, sq_dist(&p.mean, t), p.kind == Kind::Abnormal);
            }
        }
        (best.0 != usize::MAX).then_some((best.0, best.1, bound[0], bound[1]))
    }

    /// Algorithm 2 on a scaled subsequence. `None` when there is no pattern or `t` does
    /// not have length `m`.
    pub fn detect(&self, t: &[f64]) -> Option<Match> {
        self.detect_at(t).map(|(_, m)| m)
    }

    /// [`PatternSet::detect`], with the position of the nearest pattern.
    fn detect_at(&self, t: &[f64]) -> Option<(usize, Match)> {
        if t.len() != self.m {
            return None;
        }
        let (k, d2, n2, a2) = self.scan(t)?;
        let p = &self.patterns[k];
        Some((
            k,
            Match {
                id: p.id,
                kind: p.kind,
                distance: d2.sqrt(),
                anomalous: p.kind == Kind::Abnormal,
                nearest_normal: n2.sqrt(),
                nearest_abnormal: a2.sqrt(),
                max_radius_normal: self.max_radius_normal,
                created: None,
            },
        ))
    }

    /// Algorithm 2, then Algorithm 3 on a scaled subsequence; `now_ms` stamps the match.
    pub fn adapt(&mut self, t: &[f64], now_ms: Option<i64>) -> Option<Match> {
        if !self.index_fresh() {
            self.reindex();
        }
        let (k, mut found) = self.detect_at(t)?;
        let d_prime = match found.kind {
            Kind::Normal => self.max_radius_normal,
            Kind::Abnormal => self.max_radius_abnormal,
        };
        if d_prime < found.distance {
            found.created = self.push(Pattern {
                id: 0,
                kind: Kind::Abnormal,
                origin: Origin::Online,
                mean: t.to_vec(),
                size: 1,
                radius: 0.0,
                labels: Vec::new(),
                first_match_ms: now_ms,
                last_match_ms: now_ms,
                group: None,
            });
            return Some(found);
        }
        let promote = self.promote_size;
        let p = &mut self.patterns[k];
        let n = p.size as f64;
        let mut moved2 = 0.0;
        let mut to_t2 = 0.0;
        for (mu, &x) in p.mean.iter_mut().zip(t) {
            let new = (*mu * n + x) / (n + 1.0);
            moved2 += (new - *mu) * (new - *mu);
            to_t2 += (new - x) * (new - x);
            *mu = new;
        }
        let worst = moved2.sqrt() + p.radius;
        let radius = to_t2.sqrt().max(worst);
        p.radius = radius;
        p.size += 1;
        if now_ms.is_some() {
            p.first_match_ms = p.first_match_ms.or(now_ms);
            p.last_match_ms = now_ms;
        }
        match p.kind {
            Kind::Abnormal => {
                if p.size > promote && p.origin == Origin::Online {
                    p.kind = Kind::Normal;
                } else if radius > self.max_radius_abnormal {
                    self.max_radius_abnormal = radius;
                }
            }
            Kind::Normal => {
                if radius > self.max_radius_normal {
                    self.max_radius_normal = radius;
                }
            }
        }
        self.index.set(k, &self.patterns[k]);
        Some(found)
    }

    /// Stamps a match time on pattern `id` (detection without adaptation).
    pub fn touch(&mut self, id: u64, now_ms: i64) {
        if let Some(p) = self.patterns.iter_mut().find(|p| p.id == id) {
            p.first_match_ms = p.first_match_ms.or(Some(now_ms));
            p.last_match_ms = Some(now_ms);
        }
    }
}

/// Squared distances from `t` to the [`LANES`] patterns of one index block.
#[inline]
fn block_sq_dist(block: &[f64], t: &[f64]) -> [f64; LANES] {
    let mut acc = [0.0f64; LANES];
    for (lanes, &x) in block.chunks_exact(LANES).zip(t) {
        for j in 0..LANES {
            let d = lanes[j] - x;
            acc[j] += d * d;
        }
    }
    acc
}

/// Squared distance, summed in dimension order (as [`block_sq_dist`] does per lane).
#[inline]
fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |acc, (x, y)| {
        let d = x - y;
        acc + d * d
    })
}

#[cfg(test)]
mod tests {
    use super::super::offline::Scaler;
    use super::*;

    fn set() -> PatternSet {
        PatternSet::from_clusters(
            2,
            Scaler::fit(&[0.0, 1.0]),
            vec![
                (vec![0.0, 0.0], 10, 0.5, false),
                (vec![3.0, 3.0], 2, 0.1, true),
            ],
        )
    }

    #[test]
    fn algorithm_2_flags_subsequences_nearest_to_abnormal_patterns() {
        let s = set();
        let near_normal = s.detect(&[0.2, 0.1]).unwrap();
        assert!(!near_normal.anomalous);
        assert_eq!(near_normal.id, 0);
        assert!(near_normal.score() < 1.0);
        let near_abnormal = s.detect(&[2.9, 3.0]).unwrap();
        assert!(near_abnormal.anomalous);
        assert!(near_abnormal.score() > 1.0);
        assert!(s.detect(&[1.0]).is_none());
    }

    #[test]
    fn algorithm_3_updates_mean_size_and_worst_case_radius() {
        let mut s = set();
        let m = s.adapt(&[0.4, 0.0], Some(5)).unwrap();
        assert_eq!(m.created, None);
        let p = &s.patterns[0];
        assert_eq!(p.size, 11);
        let mu = 0.4 / 11.0;
        assert!((p.mean[0] - mu).abs() < 1e-15 && p.mean[1] == 0.0);
        // max(|t - μ'|, |μ - μ'| + R) = max(0.4 - μ, μ + 0.5)
        let want = (0.4 - mu).max(mu + 0.5);
        assert!((p.radius - want).abs() < 1e-15);
        assert_eq!(s.max_radius_normal, want);
        assert_eq!(p.last_match_ms, Some(5));
    }

    #[test]
    fn unseen_subsequences_open_abnormal_patterns_that_become_normal_when_frequent() {
        let mut s = set();
        // Far from both patterns: nearest is the normal one at distance > d_n = 0.5.
        let first = s.adapt(&[1.5, 1.4], Some(1)).unwrap();
        assert!(!first.anomalous, "Algorithm 2 judges before the update");
        assert!(first.score() > 1.0, "but the score flags an unseen shape");
        let id = first.created.unwrap();
        assert_eq!(s.get(id).unwrap().kind, Kind::Abnormal);
        // Repeats join it (distance 0 <= d_a) and are flagged; past promote_size (2)
        // it turns normal.
        assert!(s.adapt(&[1.5, 1.4], Some(2)).unwrap().anomalous);
        assert_eq!(s.get(id).unwrap().kind, Kind::Abnormal);
        assert!(s.adapt(&[1.5, 1.4], Some(3)).unwrap().anomalous);
        assert_eq!(s.get(id).unwrap().size, 3);
        assert_eq!(s.get(id).unwrap().kind, Kind::Normal);
        assert!(!s.adapt(&[1.5, 1.4], Some(4)).unwrap().anomalous);
        // Offline abnormal patterns stay abnormal however often they match.
        for _ in 0..10 {
            s.adapt(&[3.0, 3.0], None);
        }
        assert_eq!(s.patterns[1].kind, Kind::Abnormal);
    }

    /// The kpiwatch convention: exactly 1.0 at each threshold, above it beyond.
    #[test]
    fn score_is_one_at_the_threshold() {
        let at = |n: f64, a: f64, r: f64| {
            Match {
                id: 0,
                kind: Kind::Normal,
                distance: n.min(a),
                anomalous: a < n,
                nearest_normal: n,
                nearest_abnormal: a,
                max_radius_normal: r,
                created: None,
            }
            .score()
        };
        // Equidistant from the nearest normal and abnormal pattern, inside the radius.
        assert_eq!(at(0.3, 0.3, 1.0), 1.0);
        assert!(at(0.3, 0.29, 1.0) > 1.0 && at(0.3, 0.31, 1.0) < 1.0);
        // On the largest normal radius, no abnormal pattern.
        assert_eq!(at(0.5, f64::INFINITY, 0.5), 1.0);
        assert!(at(0.51, f64::INFINITY, 0.5) > 1.0);
        assert_eq!(at(0.0, f64::INFINITY, 0.5), 0.0);
        // The Algorithm-2 term is bounded by 2.
        assert_eq!(at(0.4, 0.0, 1.0), 2.0);
    }

    /// The blocked scan finds what a naive scan finds, and so does the fallback path
    /// of a set deserialised without an index.
    #[test]
    fn blocked_scan_equals_naive_scan() {
        let mut state = 7u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        for m in [3, 8, 15, 21] {
            let clusters = (0..60)
                .map(|k| ((0..m).map(|_| next()).collect(), 3, 0.1, k % 4 == 0))
                .collect();
            let set = PatternSet::from_clusters(m, Scaler::fit(&[0.0, 1.0]), clusters);
            let unindexed: PatternSet = serde_json::from_value(set.to_json()).unwrap();
            assert!(set.index_fresh() && !unindexed.index_fresh());
            for _ in 0..200 {
                let t: Vec<f64> = (0..m).map(|_| next()).collect();
                let got = set.detect(&t).unwrap();
                assert_eq!(unindexed.detect(&t), Some(got.clone()));
                let d: Vec<f64> = set.patterns.iter().map(|p| sq_dist(&p.mean, &t)).collect();
                let k = (0..d.len()).fold(0, |b, k| if d[k] < d[b] { k } else { b });
                let of = |kind| {
                    (0..d.len())
                        .filter(|&k| set.patterns[k].kind == kind)
                        .map(|k| d[k])
                        .fold(f64::INFINITY, f64::min)
                        .sqrt()
                };
                assert_eq!(got.id, set.patterns[k].id);
                assert_eq!(got.distance, d[k].sqrt());
                assert_eq!(got.nearest_normal, of(Kind::Normal));
                assert_eq!(got.nearest_abnormal, of(Kind::Abnormal));
            }
        }
    }

    #[test]
    fn squared_distance_matches_naive_for_all_lengths() {
        for m in 1..20 {
            let a: Vec<f64> = (0..m).map(|k| k as f64 * 0.3).collect();
            let b: Vec<f64> = (0..m).map(|k| (k as f64).sin()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!((sq_dist(&a, &b) - naive).abs() < 1e-12);
        }
    }
}
