//! Non-normalised matrix profile (plain Euclidean distance, no z-normalisation).
//!
//! For every subsequence of length `m` of a series `A` the profile records the distance to
//! its nearest neighbour and the neighbour's start index, either within `A` itself
//! (self-join, with an exclusion zone of `⌈m/4⌉` around each subsequence, as stumpy's
//! default) or within another series `B` (AB-join).
//!
//! # Algorithm
//!
//! All pairs `(i, j)` are visited diagonal by diagonal (`g = j - i`). Along one diagonal
//! the squared distance of the next pair follows from the previous one in O(1):
//! `d²(i+1, j+1) = d²(i, j) - (a[i] - b[j])² + (a[i+m] - b[j+m])²`. This is the
//! incremental form of STOMP's dot-product recurrence for the non-normalised case
//! (stumpy's AAMP uses the same one): it keeps the differences instead of
//! `‖a‖² + ‖b‖² - 2a·b`, so it does not lose precision to cancellation when two
//! subsequences are close, which is exactly where the nearest neighbour lives. As in
//! stumpy, the running value is kept non-negative and values below `1e-14` snap to 0.
//!
//! The diagonals are split into two contiguous ranges of equal work, one per core
//! (`std::thread::scope`); each thread keeps its own profile and the two are merged.
//!
//! # Ties
//!
//! Equal distances resolve deterministically, independently of the thread split: the
//! neighbour on the lowest diagonal wins, and on the same diagonal the left neighbour
//! (self-join). For an AB-join that is the smallest index in `B`. This is also what
//! stumpy yields (diagonals in increasing order, strict `<`, threads merged in order).

use super::AdsketchError;

/// Squared distances below this snap to zero (stumpy's `STUMPY_P_NORM_THRESHOLD`).
const ZERO_SNAP: f64 = 1e-14;

/// Number of pair evaluations under which a second thread costs more than it saves.
const PARALLEL_MIN_WORK: usize = 200_000;

/// Nearest-neighbour distance and index of every subsequence of a series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MatrixProfile {
    /// Euclidean distance to the nearest neighbour (`+inf` when there is none).
    pub distance: Vec<f64>,
    /// Start index of the nearest neighbour (`usize::MAX` when there is none).
    pub index: Vec<usize>,
}

impl MatrixProfile {
    fn empty(len: usize) -> Self {
        MatrixProfile {
            distance: vec![f64::INFINITY; len],
            index: vec![usize::MAX; len],
        }
    }

    /// Number of subsequences.
    pub(crate) fn len(&self) -> usize {
        self.distance.len()
    }

    /// Keeps, per row, the better of `self` and `other`; `self` wins ties (it covers the
    /// lower diagonals).
    fn merge(&mut self, other: &MatrixProfile) {
        for (k, (&d, &i)) in other.distance.iter().zip(&other.index).enumerate() {
            if d < self.distance[k] {
                self.distance[k] = d;
                self.index[k] = i;
            }
        }
    }
}

/// Stumpy's exclusion zone for a self-join: `⌈m/4⌉` (one rule, shared with the options'
/// validation).
pub(crate) use crate::config::detectors::exclusion_zone;

/// Self-join: nearest neighbour of every subsequence of `t` among the subsequences of `t`
/// that start more than [`exclusion_zone`]`(m)` positions away.
pub(crate) fn self_join(t: &[f64], m: usize) -> Result<MatrixProfile, AdsketchError> {
    check(t, m, "series")?;
    let l = t.len() - m + 1;
    let excl = exclusion_zone(m);
    // Diagonals g = excl+1 .. l-1; the diagonal g has l - g pairs.
    let diags: Vec<usize> = (excl + 1..l).collect();
    let work = |g: &usize| l - g;
    Ok(finish(run_split(&diags, work, l, |range, out| {
        for &g in range {
            diagonal(t, t, m, 0, g, l - g, out, true);
        }
    })))
}

/// AB-join: nearest neighbour in `b` of every subsequence of `a` (no exclusion zone).
pub(crate) fn ab_join(a: &[f64], b: &[f64], m: usize) -> Result<MatrixProfile, AdsketchError> {
    check(a, m, "series A")?;
    check(b, m, "series B")?;
    let la = a.len() - m + 1;
    let lb = b.len() - m + 1;
    // Diagonal offset g = j - i ranges over -(la-1) ..= lb-1; encode as k = g + la - 1.
    let diags: Vec<usize> = (0..la + lb - 1).collect();
    let start = |k: usize| -> (usize, usize) {
        if k + 1 >= la {
            (0, k + 1 - la)
        } else {
            (la - 1 - k, 0)
        }
    };
    let work = |k: &usize| {
        let (i0, j0) = start(*k);
        (la - i0).min(lb - j0)
    };
    Ok(finish(run_split(&diags, work, la, |range, out| {
        for &k in range {
            let (i0, j0) = start(k);
            let len = (la - i0).min(lb - j0);
            diagonal(a, b, m, i0, j0, len, out, false);
        }
    })))
}

fn check(t: &[f64], m: usize, what: &'static str) -> Result<(), AdsketchError> {
    if m == 0 || t.len() < m {
        return Err(AdsketchError::TooShort {
            what,
            len: t.len(),
            m,
        });
    }
    if let Some(pos) = t.iter().position(|v| !v.is_finite()) {
        return Err(AdsketchError::NonFinite { what, pos });
    }
    Ok(())
}

/// Splits `diags` into two contiguous parts of about equal work and runs `body` on each,
/// in parallel when the work is large enough, then merges (lower part wins ties).
fn run_split<W, F>(diags: &[usize], work: W, rows: usize, body: F) -> MatrixProfile
where
    W: Fn(&usize) -> usize,
    F: Fn(&[usize], &mut MatrixProfile) + Sync,
{
    let total: usize = diags.iter().map(&work).sum();
    let mut out = MatrixProfile::empty(rows);
    if total < PARALLEL_MIN_WORK || diags.len() < 2 {
        body(diags, &mut out);
        return out;
    }
    let mut acc = 0;
    let mut cut = diags.len();
    for (k, g) in diags.iter().enumerate() {
        acc += work(g);
        if acc * 2 >= total {
            cut = k + 1;
            break;
        }
    }
    let (lo, hi) = diags.split_at(cut);
    let mut other = MatrixProfile::empty(rows);
    std::thread::scope(|s| {
        let body = &body;
        let other = &mut other;
        s.spawn(move || body(hi, other));
        body(lo, &mut out);
    });
    out.merge(&other);
    out
}

/// Squared distances (as the walk keeps them) to distances.
fn finish(mut mp: MatrixProfile) -> MatrixProfile {
    for d in &mut mp.distance {
        *d = d.sqrt();
    }
    mp
}

/// Walks one diagonal starting at pair `(i0, j0)` for `len` pairs, updating the profile
/// of rows `i` (and of rows `j` too for a self-join, `symmetric`).
#[allow(clippy::too_many_arguments)]
#[inline]
fn diagonal(
    a: &[f64],
    b: &[f64],
    m: usize,
    i0: usize,
    j0: usize,
    len: usize,
    out: &mut MatrixProfile,
    symmetric: bool,
) {
    let mut d2: f64 = a[i0..i0 + m]
        .iter()
        .zip(&b[j0..j0 + m])
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for k in 0..len {
        let (i, j) = (i0 + k, j0 + k);
        if k > 0 {
            let old = a[i - 1] - b[j - 1];
            let new = a[i + m - 1] - b[j + m - 1];
            d2 = (d2 - old * old + new * new).abs();
        }
        let d2v = if d2 < ZERO_SNAP { 0.0 } else { d2 };
        // `out` holds squared distances until `finish` (no sqrt per pair).
        if d2v < out.distance[i] {
            out.distance[i] = d2v;
            out.index[i] = j;
        }
        if symmetric && d2v < out.distance[j] {
            out.distance[j] = d2v;
            out.index[j] = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dist(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            .sqrt()
    }

    /// Brute force: every pair, distances computed from scratch.
    fn brute(a: &[f64], b: &[f64], m: usize, excl: Option<usize>) -> Vec<Vec<f64>> {
        let la = a.len() - m + 1;
        let lb = b.len() - m + 1;
        (0..la)
            .map(|i| {
                (0..lb)
                    .map(|j| match excl {
                        Some(e) if i.abs_diff(j) <= e => f64::INFINITY,
                        _ => dist(&a[i..i + m], &b[j..j + m]),
                    })
                    .collect()
            })
            .collect()
    }

    fn assert_matches(mp: &MatrixProfile, rows: &[Vec<f64>]) {
        assert_eq!(mp.len(), rows.len());
        for (i, row) in rows.iter().enumerate() {
            let best = row.iter().cloned().fold(f64::INFINITY, f64::min);
            let d = mp.distance[i];
            if best.is_infinite() {
                assert!(d.is_infinite(), "row {i}: expected no neighbour, got {d}");
                continue;
            }
            assert!(
                (d - best).abs() <= 1e-7,
                "row {i}: distance {d} vs brute {best}"
            );
            // The reported index must realise the reported distance.
            let j = mp.index[i];
            assert!(
                (row[j] - best).abs() <= 1e-7,
                "row {i}: index {j} is not a nearest"
            );
            // And it is the unique best unless there is a (near) tie.
            let near: Vec<usize> = (0..row.len())
                .filter(|&k| (row[k] - best).abs() <= 1e-7)
                .collect();
            if near.len() == 1 {
                assert_eq!(j, near[0], "row {i}");
            }
        }
    }

    fn series() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(-5.0f64..5.0, 4..120)
    }

    proptest! {
        #[test]
        fn self_join_matches_brute_force(t in series(), m in 1usize..12) {
            prop_assume!(t.len() >= m);
            let mp = self_join(&t, m).unwrap();
            assert_matches(&mp, &brute(&t, &t, m, Some(exclusion_zone(m))));
        }

        #[test]
        fn ab_join_matches_brute_force(a in series(), b in series(), m in 1usize..12) {
            prop_assume!(a.len() >= m && b.len() >= m);
            let mp = ab_join(&a, &b, m).unwrap();
            assert_matches(&mp, &brute(&a, &b, m, None));
        }

        /// Quantised values create many exact ties: the tie rule must hold.
        #[test]
        fn ties_resolve_to_lowest_diagonal(t in prop::collection::vec(0u8..3, 8..60), m in 1usize..5) {
            let t: Vec<f64> = t.into_iter().map(f64::from).collect();
            prop_assume!(t.len() >= m);
            let mp = self_join(&t, m).unwrap();
            let rows = brute(&t, &t, m, Some(exclusion_zone(m)));
            for (i, row) in rows.iter().enumerate() {
                let best = row.iter().cloned().fold(f64::INFINITY, f64::min);
                if best.is_infinite() { continue; }
                let want = (0..row.len())
                    .filter(|&k| row[k] == best)
                    .min_by_key(|&k| (k.abs_diff(i), k))
                    .unwrap();
                prop_assert_eq!(mp.index[i], want, "row {}", i);
            }
        }
    }

    #[test]
    fn parallel_split_agrees_with_brute_force() {
        // Long enough to cross PARALLEL_MIN_WORK, so both threads run.
        let t: Vec<f64> = (0..1500)
            .map(|k| ((k as f64) * 0.37).sin() + 0.1 * ((k * 7919 % 101) as f64 / 101.0))
            .collect();
        let b: Vec<f64> = t.iter().rev().map(|v| v * 0.9).collect();
        let m = 15;
        assert_matches(&self_join(&t, m).unwrap(), &brute(&t, &t, m, Some(4)));
        assert_matches(
            &ab_join(&t, &b[..700], m).unwrap(),
            &brute(&t, &b[..700], m, None),
        );
    }

    #[test]
    fn rejects_short_and_non_finite_input() {
        assert!(matches!(
            self_join(&[1.0, 2.0], 3),
            Err(AdsketchError::TooShort { .. })
        ));
        assert!(matches!(
            ab_join(&[1.0, f64::NAN, 2.0], &[1.0, 2.0, 3.0], 2),
            Err(AdsketchError::NonFinite { pos: 1, .. })
        ));
    }
}
