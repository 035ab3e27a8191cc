//! Affinity Propagation (Frey & Dueck, 2007), behaving like scikit-learn's
//! `AffinityPropagation` (1.x) with `affinity="euclidean"` and `preference=None`.
//!
//! The reference calls `AffinityPropagation(random_state=5, damping=0.9)`. To make the
//! same decisions, this port follows scikit-learn step by step:
//!
//! * similarity `S = -‖x_i − x_j‖²` computed as scikit-learn's `euclidean_distances`
//!   does (`-2·x_i·x_j + ‖x_i‖² + ‖x_j‖²`, clipped at 0, diagonal 0);
//! * preference = median of `S` (diagonal included);
//! * the degenerate case (all similarities and preferences equal) short-cuts as in
//!   scikit-learn;
//! * the "remove degeneracies" noise `(ε·S + 100·tiny)·N(0,1)` is drawn from numpy's
//!   legacy `RandomState(seed).standard_normal`, reproduced here bit for bit (MT19937
//!   seeded with `init_genrand`, 53-bit doubles, Marsaglia's polar method with the cached
//!   second value), row-major over the `n×n` matrix;
//! * the damped responsibility/availability updates, the convergence test over
//!   `convergence_iter` iterations, the exemplar refinement and the label renumbering.
//!
//! Where scikit-learn finds no exemplar (no convergence) it labels every sample `-1`;
//! here every sample gets label 0, which groups the samples the same way (one cluster),
//! and [`ApResult::exemplars`] is empty.
//!
//! Remaining difference: scikit-learn's dot products go through BLAS, whose summation
//! order may differ in the last bit. The fixtures under `tests/data/adsketch/` check
//! that the labels agree.

/// Settings of Affinity Propagation (scikit-learn's names and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApParams {
    /// Damping factor in `[0.5, 1)`. The reference uses 0.9 (scikit-learn's default 0.5).
    pub damping: f64,
    /// Maximum number of iterations (200).
    pub max_iter: usize,
    /// Iterations with unchanged exemplars that stop the algorithm (15).
    pub convergence_iter: usize,
    /// Seed of the tie-breaking noise (`random_state`; the reference uses 5).
    pub seed: u32,
}

impl Default for ApParams {
    /// The reference settings: damping 0.9, random_state 5, other scikit-learn defaults.
    fn default() -> Self {
        ApParams {
            damping: 0.9,
            max_iter: 200,
            convergence_iter: 15,
            seed: 5,
        }
    }
}

/// Outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApResult {
    /// Cluster label of each sample, `0..k`, numbered by exemplar index.
    pub labels: Vec<usize>,
    /// Index of each cluster's exemplar (empty when none emerged).
    pub exemplars: Vec<usize>,
    /// `false` when `max_iter` ran out before convergence.
    pub converged: bool,
}

/// Clusters `points` (all of the same dimension).
pub(crate) fn affinity_propagation(points: &[Vec<f64>], params: &ApParams) -> ApResult {
    let n = points.len();
    if n == 0 {
        return ApResult {
            labels: Vec::new(),
            exemplars: Vec::new(),
            converged: true,
        };
    }
    let mut s = similarity(points);
    let preference = median(&s);

    if n == 1 || all_equal_off_diagonal(&s, n) {
        // scikit-learn: `preference > S[0, n-1]` gives n singletons, else one cluster.
        return if preference > s[n - 1] {
            ApResult {
                labels: (0..n).collect(),
                exemplars: (0..n).collect(),
                converged: true,
            }
        } else {
            ApResult {
                labels: vec![0; n],
                exemplars: vec![0],
                converged: true,
            }
        };
    }

    for i in 0..n {
        s[i * n + i] = preference;
    }
    let mut rng = LegacyNormal::new(params.seed);
    let eps = f64::EPSILON;
    let tiny100 = f64::MIN_POSITIVE * 100.0;
    for v in s.iter_mut() {
        let noise = (eps * *v + tiny100) * rng.standard_normal();
        *v += noise;
    }

    let (labels, exemplars, converged) = iterate(&s, n, params);
    ApResult {
        labels,
        exemplars,
        converged,
    }
}

/// The message-passing loop and the final assignment.
// Index loops mirror scikit-learn's matrix expressions one to one.
#[allow(clippy::needless_range_loop)]
fn iterate(s: &[f64], n: usize, params: &ApParams) -> (Vec<usize>, Vec<usize>, bool) {
    let damping = params.damping;
    let keep = 1.0 - damping;
    let conv = params.convergence_iter.max(1);
    let mut a = vec![0.0f64; n * n];
    let mut r = vec![0.0f64; n * n];
    let mut col = vec![0.0f64; n];
    let mut e = vec![false; n * conv];
    let mut exemplar = vec![false; n];
    let mut converged = false;

    for it in 0..params.max_iter {
        // Responsibilities, row by row, fused with the column sums the availabilities
        // need (`max(R, 0)` with R's own diagonal), accumulated in row order as numpy's
        // `sum(axis=0)` does.
        col.iter_mut().for_each(|c| *c = 0.0);
        for i in 0..n {
            let row = i * n;
            // max(A + S) (first index on ties) and the max of the others.
            let (mut best, mut arg, mut second) = (f64::NEG_INFINITY, 0usize, f64::NEG_INFINITY);
            for k in 0..n {
                let v = a[row + k] + s[row + k];
                if k == 0 || v > best {
                    second = best;
                    best = v;
                    arg = k;
                } else if v > second {
                    second = v;
                }
            }
            let (rrow, srow) = (&mut r[row..row + n], &s[row..row + n]);
            for (k, (rr, &sv)) in rrow.iter_mut().zip(srow).enumerate() {
                let sub = if k == arg { second } else { best };
                *rr = *rr * damping + (sv - sub) * keep;
            }
            for (k, (c, &rv)) in col.iter_mut().zip(rrow.iter()).enumerate() {
                *c += if k == i { rv } else { rv.max(0.0) };
            }
        }
        // Availabilities: A = min(0, col − max(R, 0)) off the diagonal, col − R on it.
        for i in 0..n {
            let row = i * n;
            let (arow, rrow) = (&mut a[row..row + n], &r[row..row + n]);
            for k in 0..n {
                let rv = rrow[k];
                let neg = if k == i {
                    rv - col[k]
                } else {
                    (rv.max(0.0) - col[k]).max(0.0)
                };
                arow[k] = arow[k] * damping - neg * keep;
            }
        }
        // Convergence: the exemplar set unchanged for `conv` iterations.
        let slot = it % conv;
        let mut k_count = 0;
        for i in 0..n {
            let is = a[i * n + i] + r[i * n + i] > 0.0;
            exemplar[i] = is;
            e[i * conv + slot] = is;
            k_count += usize::from(is);
        }
        if it >= conv {
            let stable = (0..n).all(|i| {
                let se = e[i * conv..(i + 1) * conv].iter().filter(|&&b| b).count();
                se == conv || se == 0
            });
            if stable && k_count > 0 {
                converged = true;
                break;
            }
        }
    }

    let mut ex: Vec<usize> = (0..n).filter(|&i| exemplar[i]).collect();
    if ex.is_empty() {
        return (vec![0; n], Vec::new(), converged);
    }
    let assign = |ex: &[usize]| -> Vec<usize> {
        let mut c: Vec<usize> = (0..n)
            .map(|i| argmax(ex.iter().map(|&k| s[i * n + k])))
            .collect();
        for (k, &i) in ex.iter().enumerate() {
            c[i] = k;
        }
        c
    };
    // Refine each exemplar to the member with the largest summed similarity.
    let c = assign(&ex);
    for (k, slot) in ex.iter_mut().enumerate() {
        let members: Vec<usize> = (0..n).filter(|&i| c[i] == k).collect();
        let mut sums = vec![0.0f64; members.len()];
        for &i in &members {
            for (q, &j) in members.iter().enumerate() {
                sums[q] += s[i * n + j];
            }
        }
        *slot = members[argmax(sums.iter().copied())];
    }
    let c = assign(&ex);
    let raw: Vec<usize> = c.iter().map(|&k| ex[k]).collect();
    let mut centers = raw.clone();
    centers.sort_unstable();
    centers.dedup();
    let labels = raw
        .iter()
        .map(|v| centers.partition_point(|c| c < v))
        .collect();
    (labels, centers, converged)
}

/// First index of the maximum (numpy's `argmax`; NaN never wins here).
fn argmax(it: impl Iterator<Item = f64>) -> usize {
    let (mut best, mut arg) = (f64::NEG_INFINITY, 0usize);
    for (k, v) in it.enumerate() {
        if k == 0 || v > best {
            best = v;
            arg = k;
        }
    }
    arg
}

/// `-euclidean_distances(X, squared=True)` as scikit-learn computes it, row-major `n×n`.
fn similarity(points: &[Vec<f64>]) -> Vec<f64> {
    let n = points.len();
    let norms: Vec<f64> = points
        .iter()
        .map(|p| p.iter().map(|v| v * v).sum())
        .collect();
    let mut s = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            if i == j {
                s[i * n + j] = -0.0;
                continue;
            }
            let dot: f64 = points[i].iter().zip(&points[j]).map(|(x, y)| x * y).sum();
            let d = (-2.0 * dot + norms[i]) + norms[j];
            s[i * n + j] = -d.max(0.0);
        }
    }
    s
}

/// numpy's `median` (mean of the two middle values when the count is even).
fn median(values: &[f64]) -> f64 {
    crate::normalize::median_in_place(&mut values.to_vec())
}

fn all_equal_off_diagonal(s: &[f64], n: usize) -> bool {
    let first = s[1];
    (0..n).all(|i| (0..n).all(|j| i == j || s[i * n + j] == first))
}

/// numpy's legacy `RandomState(seed).standard_normal()` stream.
#[derive(Debug, Clone)]
pub(crate) struct LegacyNormal {
    mt: [u32; 624],
    pos: usize,
    cached: Option<f64>,
}

impl LegacyNormal {
    /// `RandomState(seed)`: MT19937 seeded with `init_genrand(seed)`.
    pub(crate) fn new(seed: u32) -> Self {
        let mut mt = [0u32; 624];
        mt[0] = seed;
        for i in 1..624 {
            let prev = mt[i - 1];
            mt[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        LegacyNormal {
            mt,
            pos: 624,
            cached: None,
        }
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.twist();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.mt[i] & UPPER) | (self.mt[(i + 1) % 624] & LOWER);
            let mut v = self.mt[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.pos = 0;
    }

    /// A double in `[0, 1)` with 53 random bits (`genrand_res53`).
    pub(crate) fn next_f64(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (f64::from(a) * 67_108_864.0 + f64::from(b)) / 9_007_199_254_740_992.0
    }

    /// Next standard normal value (polar method; pairs are returned second value first).
    pub(crate) fn standard_normal(&mut self) -> f64 {
        if let Some(v) = self.cached.take() {
            return v;
        }
        loop {
            let x1 = 2.0 * self.next_f64() - 1.0;
            let x2 = 2.0 * self.next_f64() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.cached = Some(f * x1);
                return f * x2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_normal_matches_numpy() {
        // numpy: np.random.RandomState(5).standard_normal(4); random_sample(1) of a fresh
        // RandomState(5) is 0.22199317108973948.
        let mut u = LegacyNormal::new(5);
        assert_eq!(u.next_f64(), 0.22199317108973948);
        let mut g = LegacyNormal::new(5);
        let want = [
            0.44122748688504143,
            -0.33087015189408764,
            2.43077118700778,
            -0.2520921296030769,
        ];
        for w in want {
            assert_eq!(g.standard_normal(), w);
        }
    }

    #[test]
    fn separates_two_obvious_groups() {
        let pts: Vec<Vec<f64>> = vec![
            vec![0.0, 0.0],
            vec![0.1, 0.0],
            vec![0.0, 0.1],
            vec![5.0, 5.0],
            vec![5.1, 5.0],
            vec![5.0, 5.1],
        ];
        let r = affinity_propagation(&pts, &ApParams::default());
        assert!(r.converged);
        assert_eq!(r.labels, vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn degenerate_inputs_follow_scikit_learn() {
        let one = affinity_propagation(&[vec![1.0]], &ApParams::default());
        assert_eq!(one.labels, vec![0]);
        // Two points: all similarities equal, preference (median) > S[0,1]: two clusters.
        let two = affinity_propagation(&[vec![0.0], vec![1.0]], &ApParams::default());
        assert_eq!(two.labels, vec![0, 1]);
        // Identical points: S all 0, preference 0 is not > 0: one cluster.
        let same = affinity_propagation(&[vec![1.0], vec![1.0], vec![1.0]], &ApParams::default());
        assert_eq!(same.labels, vec![0, 0, 0]);
    }
}
