//! The robust z-score detector: the reference implementation of [`Detector`].
//!
//! For each metric of an entity it z-scores the last point with the series' robust
//! statistics (see [`crate::normalize`]) and takes the largest |z| over the metrics:
//! `raw = max_i |z_i|`, `anomaly_score = raw / threshold`. It is cheap, needs no model
//! and no training, and is the baseline the research detectors must beat.

use smallvec::SmallVec;

pub use crate::config::detectors::ZscoreOptions;

use super::{DetectError, Detector, EntityView, MetricScore, Scores, Snapshot};

/// The detector. Stateless beyond its options: the statistics come with each view.
#[derive(Debug, Clone)]
pub struct ZscoreDetector {
    options: ZscoreOptions,
}

impl ZscoreDetector {
    /// A detector with the given options.
    pub fn new(options: ZscoreOptions) -> Self {
        ZscoreDetector { options }
    }

    fn score_one(&self, view: &EntityView<'_>) -> Result<Scores, DetectError> {
        let have = view.stats.iter().map(|s| s.count).max().unwrap_or(0);
        if have < self.options.min_points {
            return Err(DetectError::WarmingUp {
                have,
                need: self.options.min_points,
            });
        }
        let mut raw = f64::NAN;
        let mut metrics = SmallVec::with_capacity(view.metric_count());
        for (i, stats) in view.stats.iter().enumerate() {
            let last = view.row(i).last().copied().unwrap_or(f64::NAN);
            let z = if stats.count >= self.options.min_points {
                stats.z(last).abs()
            } else {
                f64::NAN
            };
            // f64::max ignores NaN, so metrics without data do not poison the score.
            raw = raw.max(z);
            metrics.push(MetricScore {
                contribution: z,
                ..MetricScore::default()
            });
        }
        if raw.is_nan() {
            return Err(DetectError::NoData);
        }
        Ok(Scores {
            anomaly_score: raw / self.options.threshold,
            raw,
            threshold: self.options.threshold,
            metrics,
        })
    }
}

impl Detector for ZscoreDetector {
    fn name(&self) -> &'static str {
        "zscore"
    }

    fn score(&mut self, batch: &[EntityView<'_>]) -> Vec<Result<Scores, DetectError>> {
        batch.iter().map(|v| self.score_one(v)).collect()
    }

    fn forget(&mut self, _key: &str) {}

    fn snapshot(&self) -> Snapshot {
        Snapshot::Null
    }

    fn restore(&mut self, _snapshot: Snapshot) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::RobustStats;

    fn view<'a>(
        names: &'a [&'a str],
        rows: &'a [&'a [f64]],
        stats: &'a [RobustStats],
    ) -> EntityView<'a> {
        EntityView {
            key: "e",
            metric_names: names,
            rows,
            stats,
            end_ms: 0,
            step_ms: 1000,
        }
    }

    fn fit(row: &[f64]) -> RobustStats {
        RobustStats::fit(row, &mut Vec::new()).unwrap()
    }

    #[test]
    fn score_is_one_exactly_at_the_threshold() {
        // History 0..=100 has median 50 and MAD 25 → scale 1.4826 * 25.
        let mut row: Vec<f64> = (0..=100).map(f64::from).collect();
        let stats = fit(&row);
        let at_threshold = stats.median + 4.0 * stats.scale;
        row.push(at_threshold);
        let names = ["m"];
        let rows = [row.as_slice()];
        let stats = [stats];
        let mut d = ZscoreDetector::new(ZscoreOptions::default());
        let s = d.score(&[view(&names, &rows, &stats)]).remove(0).unwrap();
        assert!((s.anomaly_score - 1.0).abs() < 1e-12);
        assert!(!s.is_anomalous());
    }

    #[test]
    fn the_most_deviant_metric_sets_the_score() {
        let calm: Vec<f64> = (0..50).map(|i| (i % 5) as f64).collect();
        let mut spiky = calm.clone();
        let stats = [fit(&calm), fit(&calm)];
        spiky.push(100.0);
        let mut calm_now = calm.clone();
        calm_now.push(2.0);
        let names = ["a", "b"];
        let rows = [calm_now.as_slice(), spiky.as_slice()];
        let s = ZscoreDetector::new(ZscoreOptions::default())
            .score(&[view(&names, &rows, &stats)])
            .remove(0)
            .unwrap();
        assert!(s.is_anomalous());
        assert!(s.metrics[1].contribution > s.metrics[0].contribution);
        assert_eq!(s.raw, s.metrics[1].contribution);
    }

    #[test]
    fn warms_up_and_reports_missing_data() {
        let short = [1.0, 2.0, 3.0];
        let names = ["a"];
        let rows = [&short[..]];
        let stats = [fit(&short)];
        let mut d = ZscoreDetector::new(ZscoreOptions::default());
        assert!(matches!(
            d.score(&[view(&names, &rows, &stats)])[0],
            Err(DetectError::WarmingUp { have: 3, need: 16 })
        ));
        let row: Vec<f64> = (0..20).map(f64::from).chain([f64::NAN]).collect();
        let rows = [row.as_slice()];
        let stats = [fit(&row)];
        assert_eq!(
            d.score(&[view(&names, &rows, &stats)])[0],
            Err(DetectError::NoData)
        );
    }

    #[test]
    fn rejects_bad_options() {
        let bad = ZscoreOptions {
            threshold: 0.0,
            ..ZscoreOptions::default()
        };
        assert!(bad.validate().is_err());
        assert!(ZscoreOptions::default().validate().is_ok());
    }
}
