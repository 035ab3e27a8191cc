//! The paper's point-wise evaluation.
//!
//! A subsequence judged anomalous starting at `j` marks points `j..j+m-1`; precision,
//! recall and F1 are computed per point (scikit-learn's `average="binary"`, 0 where a
//! ratio is undefined). As in the reference, a series with no predicted subsequence
//! scores 1.0 on all three if it has no labelled anomaly, else 0.

pub use crate::eval::{prf, Prf};

/// Point mask of `len` points from anomalous subsequence starts of length `m`.
pub fn point_mask(starts: &[usize], m: usize, len: usize) -> Vec<bool> {
    let mut mask = vec![false; len];
    for &s in starts {
        for v in mask.iter_mut().skip(s).take(m) {
            *v = true;
        }
    }
    mask
}

/// The reference's per-series score (`evaluate_predictions`).
pub fn score_series(starts: &[usize], m: usize, truth: &[bool]) -> Prf {
    if starts.is_empty() {
        let v = if truth.iter().any(|&t| t) { 0.0 } else { 1.0 };
        return Prf {
            precision: v,
            recall: v,
            f1: v,
        };
    }
    prf(truth, &point_mask(starts, m, truth.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_points_and_scores_like_scikit_learn() {
        let pred = point_mask(&[2, 3], 3, 8);
        assert_eq!(
            pred,
            vec![false, false, true, true, true, true, false, false]
        );
        let truth = vec![false, false, false, true, true, true, true, false];
        let r = prf(&truth, &pred);
        assert_eq!(r.precision, 0.75);
        assert_eq!(r.recall, 0.75);
        assert_eq!(r.f1, 0.75);
    }

    #[test]
    fn empty_predictions_follow_the_reference() {
        assert_eq!(score_series(&[], 3, &[false, false]).f1, 1.0);
        assert_eq!(score_series(&[], 3, &[false, true]).f1, 0.0);
        // Predictions but no anomaly: precision 0 (no true positive), recall undefined -> 0.
        let r = score_series(&[0], 2, &[false, false, false]);
        assert_eq!((r.precision, r.recall, r.f1), (0.0, 0.0, 0.0));
    }
}
