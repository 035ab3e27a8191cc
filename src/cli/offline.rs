//! What the offline detector commands share: replaying a CSV's metric columns through a
//! detector the way the agent would see them, one row at a time.

use crate::config::{parse_duration, Direction, Gate};
use crate::detect::{Detector, EntityView, Sample, Scores};
use crate::normalize::Normalizer;
use crate::seasonal::{Expectation, SeasonalRow, SeasonalSeries};

/// The agent's per-metric preparation, offline: a seasonal baseline and a noise gate
/// (`groups[].seasonality*` and `groups[].gates` of the config), applied to every
/// metric column.
#[derive(Debug, Clone, Default, clap::Args)]
pub(super) struct BaselineArgs {
    /// Periods of a seasonal baseline, comma separated (e.g. 1d,1w; none by default).
    /// Phases come from the `timestamp` column, read as Unix seconds: for a CSV whose
    /// timestamps count hours 1, 2, 3, ... a day is 24s.
    #[arg(long, value_delimiter = ',')]
    seasonality: Vec<String>,
    /// How long a level shift lasts before the seasonal baseline adopts it.
    #[arg(long, default_value = "3h")]
    seasonality_adapt_after: String,
    /// Which deviations matter: up, down or both.
    #[arg(long, default_value = "both")]
    direction: String,
    /// Smallest deviation that matters, in the metric's units.
    #[arg(long, default_value_t = 0.0)]
    min_deviation: f64,
    /// Smallest deviation that matters, as a fraction of the expected value.
    #[arg(long, default_value_t = 0.0)]
    min_relative_deviation: f64,
}

/// [`BaselineArgs`] checked against the CSV's timestamps.
#[derive(Debug, Clone, Default)]
pub(super) struct Baseline {
    /// Periods (ms); empty: no seasonal baseline.
    periods_ms: Vec<i64>,
    adapt_after_points: u32,
    gate: Gate,
    /// Row timestamps, ms.
    ts_ms: Vec<i64>,
    /// Median distance between rows, ms.
    step_ms: i64,
}

impl BaselineArgs {
    /// Checks the options; the error names the option and what was expected.
    pub(super) fn resolve(&self, ts: &[f64]) -> Result<Baseline, String> {
        let ts_ms: Vec<i64> = ts.iter().map(|&t| (t * 1000.0).round() as i64).collect();
        // A cell such as -1e300 or -inf saturates to i64::MIN: its gap would overflow.
        let mut gaps: Vec<i64> = ts_ms
            .windows(2)
            .filter_map(|w| w[1].checked_sub(w[0]))
            .filter(|&d| d > 0)
            .collect();
        gaps.sort_unstable();
        let step_ms = gaps.get(gaps.len() / 2).copied().unwrap_or(1000).max(1);
        let mut periods_ms = Vec::new();
        if !self.seasonality.is_empty() {
            // Phases are computed from the timestamps: keep them where the arithmetic on
            // them cannot overflow (2^53 ms is about the year 287,000).
            // (NaN, an empty cell, is left to the baseline's gap handling as before.)
            if let Some(t) = ts
                .iter()
                .find(|t| t.is_infinite() || t.abs() * 1000.0 > 9_007_199_254_740_992.0)
            {
                return Err(format!(
                    "--seasonality: timestamp {t} is not a time in Unix seconds"
                ));
            }
        }
        for p in &self.seasonality {
            let d = parse_duration(p).map_err(|e| format!("--seasonality: {e}"))?;
            let ms = d.as_millis() as i64;
            if ms < step_ms.saturating_mul(2) || ms % step_ms != 0 {
                return Err(format!(
                    "--seasonality: {p} is not a multiple of the CSV's step of {step_ms} ms of at least two steps"
                ));
            }
            periods_ms.push(ms);
        }
        let adapt = parse_duration(&self.seasonality_adapt_after)
            .map_err(|e| format!("--seasonality-adapt-after: {e}"))?;
        let direction = match self.direction.as_str() {
            "up" => Direction::Up,
            "down" => Direction::Down,
            "both" => Direction::Both,
            other => return Err(format!("--direction: {other:?} is not up, down or both")),
        };
        for (name, v) in [
            ("--min-deviation", self.min_deviation),
            ("--min-relative-deviation", self.min_relative_deviation),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name}: {v} is not a number >= 0"));
            }
        }
        Ok(Baseline {
            periods_ms,
            adapt_after_points: (adapt.as_millis() as i64 / step_ms).clamp(1, i64::from(u32::MAX))
                as u32,
            gate: Gate {
                direction,
                min_deviation: self.min_deviation,
                min_relative_deviation: self.min_relative_deviation,
            },
            ts_ms,
            step_ms,
        })
    }
}

/// Scores every row `t` with the `history` rows up to it, the robust statistics coming
/// from the rows before `t` (so that the point judged does not dilute its own baseline,
/// as in the agent, whose normaliser is fitted before the newest points arrive). With a
/// seasonal baseline the detector sees each column's residuals, learned row by row as
/// the agent's store learns them. `None` where the detector could not score (warming
/// up, no data).
pub(super) fn replay(
    detector: &mut dyn Detector,
    columns: &[&[f64]],
    names: &[&str],
    history: usize,
    baseline: &Baseline,
) -> Vec<Option<Scores>> {
    // Kept at the store's precision, so that a replay scores what the agent would.
    let columns: Vec<Vec<Sample>> = columns
        .iter()
        .map(|c| c.iter().map(|&v| v as Sample).collect())
        .collect();
    let mut normalizers = vec![Normalizer::new(); columns.len()];
    let mut seasonal: Vec<Option<SeasonalRow>> = columns
        .iter()
        .map(|_| {
            (!baseline.periods_ms.is_empty()).then(|| {
                SeasonalRow::new(
                    SeasonalSeries::new(&baseline.periods_ms, baseline.step_ms),
                    history,
                )
            })
        })
        .collect();
    let gates = vec![baseline.gate; columns.len()];
    let mut scratch = Vec::new();
    let len = columns.first().map_or(0, |c| c.len());
    let mut out = Vec::with_capacity(len);
    for t in 0..len {
        let from = (t + 1).saturating_sub(history);
        // Without seasonality, time is the row index (as before the baseline existed):
        // irregular timestamps then cannot change how the detectors count new points.
        let (end_ms, step_ms) = match baseline.ts_ms.get(t) {
            Some(&ms) if !baseline.periods_ms.is_empty() => (ms, baseline.step_ms),
            _ => (t as i64, 1),
        };
        let mut expectations = Vec::with_capacity(columns.len());
        for ((c, n), s) in columns.iter().zip(&mut normalizers).zip(&mut seasonal) {
            match s {
                Some(row) => {
                    let out = row.extend(
                        &c[from..=t],
                        end_ms,
                        baseline.step_ms,
                        1,
                        n.stats(),
                        baseline.adapt_after_points,
                    );
                    if out.rebuilt {
                        *n = Normalizer::new();
                    }
                    expectations.push(row.expectation(end_ms));
                }
                None => expectations.push(Expectation::IDENTITY),
            }
        }
        let slices: Vec<&[Sample]> = columns
            .iter()
            .zip(&seasonal)
            .map(|(c, s)| match s {
                Some(row) => row.residuals(),
                None => &c[from..=t],
            })
            .collect();
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
            end_ms,
            step_ms,
            capacity: history,
            expectations: &expectations,
            gates: &gates,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(seasonality: &[&str]) -> BaselineArgs {
        BaselineArgs {
            seasonality: seasonality.iter().map(|s| s.to_string()).collect(),
            seasonality_adapt_after: "3h".into(),
            direction: "both".into(),
            ..BaselineArgs::default()
        }
    }

    /// Found by `tests/it/fuzz/csv.rs` (`detect_zscore_exits_cleanly_on_edited_input`):
    /// a timestamp cell of `-1e309` (-inf) saturates to `i64::MIN` ms and the gap to the
    /// next row overflowed, a panic in `kpiwatch detect ...`. Such gaps are now left
    /// out of the step, and a seasonal baseline refuses timestamps it cannot phase.
    #[test]
    fn saturated_timestamps_do_not_overflow() {
        for ts in [
            [f64::NEG_INFINITY, 60.0, 120.0, 180.0],
            [-1e300, 1e300, 120.0, 180.0],
            [0.0, f64::INFINITY, f64::NEG_INFINITY, 180.0],
        ] {
            let b = args(&[])
                .resolve(&ts)
                .expect("no seasonality: timestamps are row order");
            assert!(b.step_ms >= 1);
            let e = args(&["1h"])
                .resolve(&ts)
                .expect_err("no phase for such a time");
            assert!(e.starts_with("--seasonality: timestamp"), "{e}");
        }
        assert!(args(&["1h"]).resolve(&[0.0, 60.0, f64::NAN, 180.0]).is_ok());
    }
}
