//! Accuracy measures shared by the offline commands and the reproduction benchmarks:
//! point-wise precision/recall/F1, best F1 over thresholds (optionally point-adjusted)
//! and the area under the precision-recall curve.

/// Precision, recall and F1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

impl Prf {
    /// Component-wise mean of `items` (0 when empty).
    pub fn mean(items: &[Prf]) -> Prf {
        let n = items.len().max(1) as f64;
        let sum = items.iter().fold(Prf::default(), |a, b| Prf {
            precision: a.precision + b.precision,
            recall: a.recall + b.recall,
            f1: a.f1 + b.f1,
        });
        Prf {
            precision: sum.precision / n,
            recall: sum.recall / n,
            f1: sum.f1 / n,
        }
    }
}

/// Binary precision/recall/F1 of `pred` against `truth`.
pub fn prf(truth: &[bool], pred: &[bool]) -> Prf {
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (&t, &p) in truth.iter().zip(pred) {
        match (t, p) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fneg += 1,
            _ => {}
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Prf {
        precision: ratio(tp, tp + fp),
        recall: ratio(tp, tp + fneg),
        f1: ratio(2 * tp, 2 * tp + fp + fneg),
    }
}

/// Flags on normal points per 1,000 normal points (`truth` false), the false-alarm rate
/// users feel; 0 when no point is normal.
pub(crate) fn false_flags_per_1000(truth: &[bool], pred: &[bool]) -> f64 {
    let normal = truth.iter().filter(|t| !**t).count();
    let false_flags = truth.iter().zip(pred).filter(|(t, p)| !**t && **p).count();
    if normal == 0 {
        0.0
    } else {
        1000.0 * false_flags as f64 / normal as f64
    }
}

/// Area under the precision-recall curve (average precision; tied scores form one
/// threshold).
pub(crate) fn pr_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos = labels.iter().filter(|l| **l).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0.0, 0.0, 0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let tie = order.get(k + 1).is_some_and(|&j| scores[j] == scores[i]);
        if !tie {
            let recall = tp / pos;
            ap += (recall - last_recall) * tp / (tp + fp);
            last_recall = recall;
        }
    }
    ap
}

/// Best F1 over all thresholds on the score. With `point_adjusted`, a labelled
/// segment counts as wholly detected once any of its points is flagged (the
/// point-adjust protocol of OmniAnomaly and the Uni-AD paper).
pub(crate) fn best_f1(scores: &[f64], labels: &[bool], point_adjusted: bool) -> f64 {
    // Events (score at which they turn on, true positives, false positives).
    let mut events: Vec<(f64, f64, f64)> = Vec::new();
    let mut i = 0;
    while i < scores.len() {
        if !labels[i] {
            events.push((scores[i], 0.0, 1.0));
            i += 1;
            continue;
        }
        let start = i;
        while i < scores.len() && labels[i] {
            i += 1;
        }
        if point_adjusted {
            let max = scores[start..i]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            events.push((max, (i - start) as f64, 0.0));
        } else {
            events.extend(scores[start..i].iter().map(|&s| (s, 1.0, 0.0)));
        }
    }
    let pos = labels.iter().filter(|l| **l).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    events.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut best) = (0.0f64, 0.0f64, 0.0f64);
    for (k, e) in events.iter().enumerate() {
        tp += e.1;
        fp += e.2;
        if events.get(k + 1).is_some_and(|n| n.0 == e.0) {
            continue;
        }
        let p = tp / (tp + fp);
        let r = tp / pos;
        if p + r > 0.0 {
            best = best.max(2.0 * p * r / (p + r));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn false_flags_count_only_normal_points() {
        let truth = [false, false, false, true, false];
        let pred = [true, false, false, true, false];
        assert_eq!(false_flags_per_1000(&truth, &pred), 250.0);
        assert_eq!(false_flags_per_1000(&[true], &[true]), 0.0);
    }

    #[test]
    fn prf_counts_and_undefined_ratios() {
        let r = prf(&[true, false, true, false], &[true, true, false, false]);
        assert_eq!((r.precision, r.recall, r.f1), (0.5, 0.5, 0.5));
        let none = prf(&[false, false], &[false, false]);
        assert_eq!((none.precision, none.recall, none.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn pr_auc_of_perfect_random_and_tied_scores() {
        let y = [false, true, false, true, false];
        assert!((pr_auc(&[0.1, 0.9, 0.2, 0.8, 0.3], &y) - 1.0).abs() < 1e-12);
        // Worst order: positives last: AP = (1/2)(1/4) + (1/2)(2/5) = 0.325.
        assert!((pr_auc(&[0.9, 0.1, 0.8, 0.2, 0.7], &y) - 0.325).abs() < 1e-12);
        // All tied: one threshold, precision = prevalence.
        assert!((pr_auc(&[1.0; 5], &y) - 0.4).abs() < 1e-12);
        assert!(pr_auc(&[1.0], &[false]).is_nan());
    }

    #[test]
    fn best_f1_point_wise_and_point_adjusted() {
        // One segment of 4 points; only its first point scores high.
        let s = [0.1, 0.9, 0.2, 0.2, 0.2, 0.1, 0.5];
        let y = [false, true, true, true, true, false, false];
        // Point-wise: threshold 0.9 gives P=1, R=1/4 -> F1 0.4; 0.2 gives tp 4, fp 1
        // (0.5) -> P 0.8, R 1, F1 0.889.
        assert!((best_f1(&s, &y, false) - 8.0 / 9.0).abs() < 1e-12);
        // Point-adjusted: at 0.9 the whole segment counts: P=1, R=1.
        assert!((best_f1(&s, &y, true) - 1.0).abs() < 1e-12);
    }
}
