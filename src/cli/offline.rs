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
            end_ms: t as i64,
            step_ms: 1,
            capacity: history,
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

/// A CSV as the offline commands read it: `timestamp`, metric columns, and an optional
/// `label` (or `is_anomaly`) column used only for scoring.
pub(super) struct Input {
    /// The whole table.
    pub(super) table: crate::dataset::Table,
    /// The `timestamp` column.
    pub(super) ts: Vec<f64>,
    /// The label column, if any.
    pub(super) labels: Option<Vec<f64>>,
    /// Indices of the metric columns in `table`.
    pub(super) metric_idx: Vec<usize>,
}

/// Reads `path`; the error names the file and what is missing.
pub(super) fn load_input(path: &std::path::Path) -> Result<Input, String> {
    let table = crate::dataset::read_csv(path).map_err(|e| e.to_string())?;
    let ts = table
        .require("timestamp")
        .map_err(|e| e.to_string())?
        .to_vec();
    let labels = table
        .first_of(&["label", "is_anomaly"])
        .map(<[f64]>::to_vec);
    let metric_idx: Vec<usize> = (0..table.names.len())
        .filter(|&i| {
            !matches!(
                table.names[i].as_str(),
                "timestamp" | "label" | "is_anomaly"
            )
        })
        .collect();
    if metric_idx.is_empty() {
        return Err(format!(
            "{}: no metric column besides timestamp and label",
            path.display()
        ));
    }
    Ok(Input {
        table,
        ts,
        labels,
        metric_idx,
    })
}
