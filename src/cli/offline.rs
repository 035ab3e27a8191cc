//! What the offline detector commands share: replaying a CSV's metric columns through a
//! detector the way the agent would see them, one row at a time.

use crate::detect::{Detector, EntityView, Scores};
use crate::normalize::Normalizer;

/// Scores every row `t` with the `history` rows up to it, the robust statistics coming
/// from the rows before `t` (so that the point judged does not dilute its own baseline,
/// as in the agent, whose normaliser is fitted before the newest points arrive).
/// `None` where the detector could not score (warming up, no data).
pub(super) fn replay(
    detector: &mut dyn Detector,
    columns: &[&[f64]],
    names: &[&str],
    history: usize,
) -> Vec<Option<Scores>> {
    let mut normalizers = vec![Normalizer::new(); columns.len()];
    let mut scratch = Vec::new();
    let len = columns.first().map_or(0, |c| c.len());
    let mut out = Vec::with_capacity(len);
    for t in 0..len {
        let from = (t + 1).saturating_sub(history);
        let slices: Vec<&[f64]> = columns.iter().map(|c| &c[from..=t]).collect();
        let stats: Vec<_> = normalizers
            .iter_mut()
            .zip(&slices)
            .map(|(n, s)| {
                if s.len() > 1 {
                    n.update(&s[..s.len() - 1], 1, &mut scratch);
                }
                n.stats()
            })
            .collect();
        let view = EntityView {
            key: "csv",
            metric_names: names,
            rows: &slices,
            stats: &stats,
            end_ms: 0,
            step_ms: 1,
        };
        out.push(detector.score(&[view]).remove(0).ok());
    }
    out
}

/// Index of the metric with the largest finite contribution (0 if none).
pub(super) fn top_metric(s: &Scores) -> usize {
    s.metrics
        .iter()
        .enumerate()
        .filter(|(_, m)| m.contribution.is_finite())
        .max_by(|a, b| a.1.contribution.total_cmp(&b.1.contribution))
        .map_or(0, |(i, _)| i)
}
