//! The robust z-score detector: the reference implementation of [`Detector`].
//!
//! For each metric of an entity it z-scores the last point with the series' robust
//! statistics (see [`crate::normalize`]) and takes the largest |z| over the metrics:
//! `raw = max_i |z_i|`, `anomaly_score = raw / threshold`. It is cheap, needs no model
//! and no training, and is the baseline the research detectors must beat.
//!
//! # The threshold of each metric
//!
//! A fixed |z| of 4 flags about one point in 16,000 of a Gaussian series but one in ten
//! of a bursty or heavy-tailed one (a disk that writes in bursts, a request count that
//! jumps), and real metrics are mostly the latter. With `calibrate` (the default) each
//! metric of each entity gets its own threshold `max(threshold, q)`, where `q` is the |z|
//! its own history exceeds with probability `risk / metrics` (so that the entity, the
//! max over its metrics, flags about `risk` of its normal points): a robust
//! peaks-over-threshold fit of the history's |z| under the current statistics
//! ([`super::tail::robust_tail_threshold`], whose median excess a past incident barely
//! moves). Two more rules keep an incident from raising its own bar: the fit leaves
//! out the newest quarter of the history, and it is refitted, like the normaliser, only
//! after `max(1, n / 32)` new points. No score is given before the history holds 86
//! points (64 outside the newest quarter), unless the group keeps fewer: then the fixed
//! `threshold` serves. The anomaly score is the largest `|z_i| / q_i`;
//! `raw` and `threshold` are that metric's. Nothing is persisted: the history the
//! thresholds are fitted on comes back with the store.

use std::collections::HashMap;

use smallvec::SmallVec;

pub use crate::config::detectors::ZscoreOptions;

use super::tail::robust_tail_threshold;
use super::{Band, DetectError, Detector, EntityView, MetricScore, Scores, Snapshot};

/// Quantile of the history's raw scores above which the tail is fitted: low enough to
/// leave a few dozen excesses in a history of a few hundred points.
const FIT_LEVEL: f64 = 0.9;
/// Fewest history points a calibrated threshold is fitted on.
const MIN_FIT_POINTS: usize = 64;
/// The newest `1 / RECENT_DIVISOR` of the history is left out of the fit.
const RECENT_DIVISOR: usize = 4;
/// History points a calibrated threshold needs: [`MIN_FIT_POINTS`] outside the newest
/// quarter.
const fn calibration_points() -> usize {
    (MIN_FIT_POINTS * RECENT_DIVISOR).div_ceil(RECENT_DIVISOR - 1)
}
/// Refit after this fraction of the history is new (as the normaliser).
const REFIT_DIVISOR: usize = 32;

/// The detector. Its only state is a cache of calibrated thresholds per entity, rebuilt
/// from the history after a restart.
#[derive(Debug, Clone)]
pub struct ZscoreDetector {
    options: ZscoreOptions,
    thresholds: HashMap<String, Calibrated>,
    scratch: Vec<f64>,
}

/// One entity's calibrated thresholds (one per metric) and when they were fitted.
#[derive(Debug, Clone, PartialEq)]
struct Calibrated {
    thresholds: SmallVec<[f64; 8]>,
    end_ms: i64,
    points: usize,
}

impl Calibrated {
    fn is_due(&self, view: &EntityView<'_>) -> bool {
        view.steps_since(self.end_ms) >= (self.points / REFIT_DIVISOR).max(1)
            || view.len() < self.points / 2
            || self.thresholds.len() != view.metric_count()
    }
}

impl ZscoreDetector {
    /// A detector with the given options.
    pub fn new(options: ZscoreOptions) -> Self {
        ZscoreDetector {
            options,
            thresholds: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// The thresholds of `view`'s metrics (see the module doc), fitted when due.
    fn thresholds(&mut self, view: &EntityView<'_>) -> SmallVec<[f64; 8]> {
        let floor = self.options.threshold;
        if !self.options.calibrate {
            return SmallVec::from_elem(floor, view.metric_count());
        }
        if let Some(c) = self.thresholds.get(view.key) {
            if !c.is_due(view) {
                return c.thresholds.clone();
            }
        }
        let risk = self.options.risk / view.metric_count().max(1) as f64;
        let thresholds: SmallVec<[f64; 8]> = (0..view.metric_count())
            .map(|i| self.fit(view, i, risk).map_or(floor, |q| q.max(floor)))
            .collect();
        self.thresholds.insert(
            view.key.to_string(),
            Calibrated {
                thresholds: thresholds.clone(),
                end_ms: view.end_ms,
                points: view.len(),
            },
        );
        thresholds
    }

    /// The `risk` tail quantile of metric `i`'s |z| over the older history points.
    fn fit(&mut self, view: &EntityView<'_>, i: usize, risk: f64) -> Option<f64> {
        let stats = view.stats[i];
        if stats.count < self.options.min_points {
            return None;
        }
        let row = view.row(i);
        let older = row.len() - row.len() / RECENT_DIVISOR;
        self.scratch.clear();
        self.scratch
            .extend(row[..older].iter().map(|&x| stats.z(f64::from(x)).abs()));
        robust_tail_threshold(&mut self.scratch, FIT_LEVEL, risk, MIN_FIT_POINTS)
    }

    fn score_one(&mut self, view: &EntityView<'_>) -> Result<Scores, DetectError> {
        let have = view.stats.iter().map(|s| s.count).max().unwrap_or(0);
        if have < self.options.min_points {
            return Err(DetectError::WarmingUp {
                have,
                need: self.options.min_points,
            });
        }
        // A calibrated threshold is promised: no score before one can be fitted, unless
        // the history is too short to ever fit one (then the fixed threshold serves).
        let need = calibration_points().min(view.capacity);
        if self.options.calibrate && view.len() < need {
            return Err(DetectError::WarmingUp {
                have: view.len(),
                need,
            });
        }
        let thresholds = self.thresholds(view);
        let (mut score, mut raw, mut threshold) = (f64::NAN, f64::NAN, self.options.threshold);
        let mut metrics = SmallVec::with_capacity(view.metric_count());
        for (i, stats) in view.stats.iter().enumerate() {
            let last = view.last(i);
            let z = if stats.count >= self.options.min_points {
                stats.z(last).abs()
            } else {
                f64::NAN
            };
            // A deviation the metric's noise gate holds back scores at most 1.
            let capped = if view.gated(i) {
                z.min(thresholds[i])
            } else {
                z
            };
            // Metrics without data (NaN) do not poison the score.
            if capped / thresholds[i] > score || (score.is_nan() && !capped.is_nan()) {
                (score, raw, threshold) = (capped / thresholds[i], capped, thresholds[i]);
            }
            metrics.push(MetricScore {
                contribution: z,
                band: z.is_finite().then(|| band(view, i, thresholds[i])),
                ..MetricScore::default()
            });
        }
        if score.is_nan() {
            return Err(DetectError::NoData);
        }
        Ok(Scores {
            anomaly_score: score,
            raw,
            threshold,
            metrics,
        })
    }
}

/// The values of metric `i` whose |z| stays within `threshold`, in the metric's units:
/// the seasonal expectation (identity without seasonality) turns the normaliser's
/// `median ± threshold · scale` of the residuals back into values.
fn band(view: &EntityView<'_>, i: usize, threshold: f64) -> Band {
    let (expected, _) = view.deviation(i);
    let half = view.expectation(i).spread * threshold * view.stats[i].scale;
    Band {
        expected,
        lower: expected - half,
        upper: expected + half,
    }
}

impl Detector for ZscoreDetector {
    fn name(&self) -> &'static str {
        "zscore"
    }

    fn score(&mut self, batch: &[EntityView<'_>]) -> Vec<Result<Scores, DetectError>> {
        batch.iter().map(|v| self.score_one(v)).collect()
    }

    fn forget(&mut self, key: &str) {
        self.thresholds.remove(key);
    }

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
    use crate::series::{samples, Sample};

    fn view<'a>(
        names: &'a [&'a str],
        rows: &'a [&'a [Sample]],
        stats: &'a [RobustStats],
    ) -> EntityView<'a> {
        EntityView {
            key: "e",
            metric_names: names,
            rows,
            stats,
            end_ms: 0,
            step_ms: 1000,
            // As if the store kept exactly this much history.
            capacity: rows[0].len(),
            expectations: &[],
            gates: &[],
        }
    }

    fn fit<T: Copy + Into<f64>>(row: &[T]) -> RobustStats {
        RobustStats::fit(row, &mut Vec::new()).unwrap()
    }

    #[test]
    fn score_is_one_exactly_at_the_threshold() {
        // History 0..=100 has median 50 and MAD 25 → scale 1.4826 * 25.
        let history: Vec<f64> = (0..=100).map(f64::from).collect();
        let stats = fit(&history);
        // The store keeps f32: the last sample at or below the threshold scores 1 (to
        // f32's precision) and is not anomalous; the next one above it is.
        let threshold = stats.median + 4.0 * stats.scale;
        let mut below = threshold as Sample;
        if f64::from(below) > threshold {
            below = below.next_down();
        }
        let names = ["m"];
        let stats = [stats];
        let mut d = ZscoreDetector::new(ZscoreOptions::default());
        for (last, anomalous) in [(below, false), (below.next_up(), true)] {
            let mut row = samples(&history);
            row.push(last);
            let rows = [row.as_slice()];
            let s = d.score(&[view(&names, &rows, &stats)]).remove(0).unwrap();
            assert!((s.anomaly_score - 1.0).abs() < 1e-6, "{}", s.anomaly_score);
            assert_eq!(s.is_anomalous(), anomalous, "{}", s.anomaly_score);
        }
    }

    #[test]
    fn the_band_is_where_the_score_stays_at_most_one_in_the_metric_units() {
        use crate::series::Expectation;
        let mut row: Vec<f64> = (0..=100).map(f64::from).collect();
        let stats = fit(&row);
        row.push(50.0);
        let names = ["m"];
        let row = samples(&row);
        let rows = [row.as_slice()];
        let stats = [stats];
        let fixed = ZscoreOptions {
            calibrate: false,
            ..ZscoreOptions::default()
        };
        let mut d = ZscoreDetector::new(fixed.clone());
        let s = d.score(&[view(&names, &rows, &stats)]).remove(0).unwrap();
        let b = s.metrics[0].band.unwrap();
        assert_eq!(b.expected, stats[0].median);
        assert!((b.upper - (stats[0].median + 4.0 * stats[0].scale)).abs() < 1e-9);
        assert!((b.lower - (stats[0].median - 4.0 * stats[0].scale)).abs() < 1e-9);
        // With a seasonal expectation the rows are residuals: value + spread · u.
        let expectations = [Expectation {
            value: 1000.0,
            spread: 10.0,
        }];
        let mut v = view(&names, &rows, &stats);
        v.expectations = &expectations;
        let s = ZscoreDetector::new(fixed).score(&[v]).remove(0).unwrap();
        let b = s.metrics[0].band.unwrap();
        assert!((b.expected - (1000.0 + 10.0 * stats[0].median)).abs() < 1e-9);
        assert!((b.upper - b.expected - 10.0 * 4.0 * stats[0].scale).abs() < 1e-9);
    }

    #[test]
    fn a_gated_deviation_scores_at_most_one() {
        use crate::config::{Direction, Gate};
        let calm: Vec<f64> = (0..100).map(|i| 100.0 + (i % 5) as f64).collect();
        let stats = [fit(&calm)];
        let names = ["latency"];
        let gates = [Gate {
            direction: Direction::Up,
            min_deviation: 0.0,
            min_relative_deviation: 0.2,
        }];
        let score = |last: f64| {
            let mut row = calm.clone();
            row.push(last);
            let row = samples(&row);
            let rows = [row.as_slice()];
            let mut v = view(&names, &rows, &stats);
            v.gates = &gates;
            ZscoreDetector::new(ZscoreOptions::default())
                .score(&[v])
                .remove(0)
                .unwrap()
        };
        // A drop in latency is not an incident, however large.
        let drop = score(10.0);
        assert!(drop.anomaly_score <= 1.0, "{drop:?}");
        assert!(
            drop.metrics[0].contribution > 10.0,
            "the z-score itself stays"
        );
        // A rise of 10 % is within the relative gate; one of 50 % is not.
        assert!(score(112.0).anomaly_score <= 1.0);
        assert!(score(160.0).anomaly_score > 1.0);
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
        let (calm_now, spiky) = (samples(&calm_now), samples(&spiky));
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
        let short = samples(&short);
        let rows = [&short[..]];
        let stats = [fit(&short)];
        let mut d = ZscoreDetector::new(ZscoreOptions::default());
        assert!(matches!(
            d.score(&[view(&names, &rows, &stats)])[0],
            Err(DetectError::WarmingUp { have: 3, need: 16 })
        ));
        let row: Vec<f64> = (0..20).map(f64::from).chain([f64::NAN]).collect();
        let row = samples(&row);
        let rows = [row.as_slice()];
        let stats = [fit(&row)];
        assert_eq!(
            d.score(&[view(&names, &rows, &stats)])[0],
            Err(DetectError::NoData)
        );
    }

    /// One metric's history and the score of `last` after it.
    fn score_after(history: &[f64], last: f64, options: ZscoreOptions) -> Scores {
        let stats = [fit(history)];
        let mut row = history.to_vec();
        row.push(last);
        let names = ["m"];
        let row = samples(&row);
        let rows = [row.as_slice()];
        ZscoreDetector::new(options)
            .score(&[view(&names, &rows, &stats)])
            .remove(0)
            .unwrap()
    }

    /// Noise between 0 and 10 with a burst of 30 to 75 every 10 points (a request count
    /// with batch jobs): heavy-tailed around a robust spread of a few units.
    fn bursty(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                if i % 10 == 3 {
                    30.0 + (i * 7 % 46) as f64
                } else {
                    ((i * 37) % 11) as f64
                }
            })
            .collect()
    }

    #[test]
    fn an_ordinary_burst_of_a_bursty_series_does_not_flag_when_calibrated() {
        let history = bursty(400);
        let fixed = ZscoreOptions {
            calibrate: false,
            ..ZscoreOptions::default()
        };
        assert!(score_after(&history, 40.0, fixed).is_anomalous());
        let calibrated = score_after(&history, 40.0, ZscoreOptions::default());
        assert!(!calibrated.is_anomalous(), "{calibrated:?}");
        assert!(calibrated.threshold > 4.0);
        // A burst far beyond any seen still does.
        assert!(score_after(&history, 5000.0, ZscoreOptions::default()).is_anomalous());
    }

    #[test]
    fn a_calm_series_keeps_the_configured_threshold() {
        let history: Vec<f64> = (0..400).map(|i| ((i * 37) % 11) as f64).collect();
        let s = score_after(&history, 5.0, ZscoreOptions::default());
        assert_eq!(s.threshold, 4.0);
    }

    #[test]
    fn an_incident_in_the_newest_quarter_does_not_raise_its_own_bar() {
        let calm: Vec<f64> = (0..400).map(|i| ((i * 37) % 11) as f64).collect();
        let mut history = calm.clone();
        // The last 60 points (under a quarter of 400) are an outage at 100.
        for v in &mut history[340..] {
            *v = 100.0;
        }
        let s = score_after(&history, 100.0, ZscoreOptions::default());
        assert_eq!(s.threshold, 4.0);
        assert!(s.is_anomalous());
    }

    #[test]
    fn a_calibrated_entity_waits_for_enough_history_to_fit_unless_it_can_never_have_it() {
        let row: Vec<f64> = (0..60).map(|i| ((i * 37) % 11) as f64).collect();
        let names = ["m"];
        let row = samples(&row);
        let rows = [row.as_slice()];
        let stats = [fit(&row)];
        let mut v = view(&names, &rows, &stats);
        v.capacity = 1000;
        let mut d = ZscoreDetector::new(ZscoreOptions::default());
        assert_eq!(
            d.score(&[v])[0],
            Err(DetectError::WarmingUp { have: 60, need: 86 })
        );
        // A store that keeps only 60 points: the fixed threshold serves at once.
        v.capacity = 60;
        assert_eq!(d.score(&[v]).remove(0).unwrap().threshold, 4.0);
        let fixed = ZscoreOptions {
            calibrate: false,
            ..ZscoreOptions::default()
        };
        v.capacity = 1000;
        assert!(ZscoreDetector::new(fixed).score(&[v])[0].is_ok());
    }

    /// Replays `series` through one detector as the agent would (history of 256 points,
    /// statistics fitted on the points before the one scored) and returns the flags per
    /// 1,000 scored points and whether the last point was flagged.
    fn replay_flags(series: &[f64], options: ZscoreOptions) -> (f64, bool) {
        const HISTORY: usize = 256;
        let mut d = ZscoreDetector::new(options);
        let (mut scored, mut flagged, mut last) = (0usize, 0usize, false);
        for t in HISTORY..series.len() {
            let window = &series[t + 1 - HISTORY..=t];
            let stats = [fit(&window[..HISTORY - 1])];
            let names = ["m"];
            let window = samples(window);
            let rows = [window.as_slice()];
            let mut v = view(&names, &rows, &stats);
            v.end_ms = t as i64 * 1000;
            if let Ok(s) = d.score(&[v]).remove(0) {
                scored += 1;
                last = s.is_anomalous();
                flagged += usize::from(last);
            }
        }
        (1000.0 * flagged as f64 / scored.max(1) as f64, last)
    }

    /// Normal data of the shapes real metrics have, 4,000 points each.
    fn shapes() -> Vec<(&'static str, Vec<f64>)> {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(22);
        let n = 4000;
        let mut gauss = || {
            let (u, v): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen_range(0.0..1.0));
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        let gaussian: Vec<f64> = (0..n).map(|_| 100.0 + 5.0 * gauss()).collect();
        let latency: Vec<f64> = (0..n).map(|_| (3.0 + 0.5 * gauss()).exp()).collect();
        let mut rng = SmallRng::seed_from_u64(23);
        let bursts: Vec<f64> = (0..n)
            .map(|_| {
                if rng.gen_bool(0.1) {
                    rng.gen_range(5.0..50.0)
                } else {
                    0.0
                }
            })
            .collect();
        let mut level = 3.0;
        let replicas: Vec<f64> = (0..n)
            .map(|_| {
                if rng.gen_bool(0.02) {
                    level = [3.0, 3.0, 4.0, 5.0][rng.gen_range(0..4)];
                }
                level
            })
            .collect();
        let counts: Vec<f64> = (0..n)
            .map(|_| (0..6).filter(|_| rng.gen_bool(0.2)).count() as f64)
            .collect();
        vec![
            ("gaussian", gaussian),
            ("log-normal latency", latency),
            ("idle with bursts", bursts),
            ("step-wise replica count", replicas),
            ("small integer counts", counts),
        ]
    }

    #[test]
    fn normal_data_of_every_shape_flags_rarely_and_a_large_spike_still_flags() {
        for (name, mut series) in shapes() {
            let (rate, _) = replay_flags(&series, ZscoreOptions::default());
            assert!(
                rate <= 10.0,
                "{name}: {rate:.1} flags per 1,000 normal points"
            );
            // 50 robust sigmas above anything seen: flagged on arrival.
            let top = series.iter().copied().fold(f64::MIN, f64::max);
            let spread = fit(&series).scale;
            series.push(top + 50.0 * spread);
            let (_, last_flagged) = replay_flags(&series, ZscoreOptions::default());
            assert!(
                last_flagged,
                "{name}: a spike far above the series is flagged"
            );
        }
        // The heavy-tailed latency is where calibration does the work: 13 flags per
        // 1,000 normal points with the fixed |z| of 4, 2 with the calibrated one.
        let (_, latency) = &shapes()[1];
        let fixed = ZscoreOptions {
            calibrate: false,
            ..ZscoreOptions::default()
        };
        let (calibrated, _) = replay_flags(latency, ZscoreOptions::default());
        let (uncalibrated, _) = replay_flags(latency, fixed);
        assert!(
            uncalibrated > 3.0 * calibrated.max(1.0),
            "{uncalibrated} vs {calibrated}"
        );
    }

    #[test]
    fn rejects_bad_options() {
        let bad = ZscoreOptions {
            threshold: 0.0,
            ..ZscoreOptions::default()
        };
        assert!(bad.validate().is_err());
        let bad = ZscoreOptions {
            risk: 1.0,
            ..ZscoreOptions::default()
        };
        assert!(bad.validate().unwrap_err().contains("risk"));
        assert!(ZscoreOptions::default().validate().is_ok());
    }
}
