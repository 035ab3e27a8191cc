//! [`AdsketchDetector`]: ADSketch as a kpiwatch [`Detector`], one pattern set per
//! metric series of each entity.
//!
//! # Life of a series
//!
//! 1. **Learning.** The detector collects the series' points as they arrive (it tracks
//!    the last timestamp it consumed, from `end_ms` and `step_ms`, so the first cycle's
//!    whole history and each later cycle's new points are taken exactly once). Gaps
//!    (NaN) are filled with the last finite value; leading NaNs are skipped. Once it has
//!    `train_points + test_points` points it runs Algorithm 1 with `T_n` = the first
//!    `train_points` (assumed clean, as the paper; `train_noise_percentile < 100`
//!    enables the §5.3 guard for an unclean `T_n`) and `T_a` = the next `test_points`.
//!    Until then the entity reports [`DetectError::WarmingUp`].
//!
//!    Where `T_n` and `T_a` come from: at start the cycle fetches the group's whole
//!    `history` from Prometheus, and the config refuses an `adsketch` whose
//!    `train_points + test_points` exceed it, so every series present at start learns
//!    at the first cycle from `T_n` = the oldest `train_points` steps of that history
//!    and `T_a` = the next `test_points` (the rest is matched online at once). A series
//!    that appears later (a new pod) has no earlier points in the store: it learns from
//!    its live points, `train_points + test_points` steps after it appears. (A backfill
//!    query per new series is not done: group queries select many entities, and
//!    re-running one over the whole history whenever an entity appears would cost a
//!    full history fetch per cycle in a churning cluster.) A restored series keeps its
//!    patterns and only consumes points newer than the last it saw.
//! 2. **Online.** Each new point completes a subsequence of the last `m` points, which
//!    is matched against the patterns (Algorithm 2) and, with `adaptive`, learnt from
//!    (Algorithm 3). A subsequence holding a gap is not matched.
//!
//! # Scores
//!
//! Per metric, [`super::online::Match::score`] (1.0 = threshold): above 1 when the
//! nearest pattern is abnormal or when nothing normal lies within the largest normal
//! radius. `MetricScore::distance` is the distance to the nearest pattern and
//! `MetricScore::pattern` names it (id, kind, issue labels). The entity's
//! `anomaly_score` (and `raw`, with `threshold` 1.0) is the largest metric score.
//!
//! # State
//!
//! [`Detector::snapshot`] writes every series' phase (learning buffer, or pattern set
//! with its last `m − 1` points), keyed by entity key and metric name, with a version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

pub use crate::config::detectors::AdsketchOptions;

use super::offline::{discover, OfflineParams};
use super::pattern::{Kind, LabelError, LabelOp, Pattern, PatternSet};
use super::AdsketchError;
use crate::detect::{
    DetectError, Detector, EntityView, MetricScore, PatternMatch, Sample, Scores, Snapshot,
};

/// Version of the detector snapshot.
pub(crate) const SNAPSHOT_VERSION: u32 = 1;

impl AdsketchOptions {
    fn offline(&self) -> OfflineParams {
        let mut p = OfflineParams::new(self.m, self.p);
        p.noise_p = self.train_noise_percentile;
        p
    }
}

/// One series' state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "lowercase")]
enum Series {
    /// Collecting `T_n + T_a`.
    Learning {
        /// Points so far (gaps filled).
        buffer: Vec<f64>,
        /// Timestamp of the last consumed point.
        last_ms: Option<i64>,
    },
    /// Patterns learnt; matching online.
    Ready {
        /// The patterns.
        set: PatternSet,
        /// Last `m` scaled points (NaN for gaps), oldest first.
        tail: Vec<f64>,
        /// Timestamp of the last consumed point.
        last_ms: Option<i64>,
        /// The latest match, for the score.
        #[serde(skip)]
        latest: Option<LatestMatch>,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct LatestMatch {
    score: f64,
    distance: f64,
    id: u64,
    abnormal: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotDoc {
    version: u32,
    entities: BTreeMap<String, BTreeMap<String, Series>>,
}

/// The ADSketch detector of one entity group.
#[derive(Debug, Clone)]
pub struct AdsketchDetector {
    options: AdsketchOptions,
    entities: BTreeMap<String, BTreeMap<String, Series>>,
}

impl AdsketchDetector {
    /// A detector with validated options (see [`AdsketchOptions::validate`]).
    pub fn new(options: AdsketchOptions) -> Result<Self, String> {
        options.validate()?;
        Ok(AdsketchDetector {
            options,
            entities: BTreeMap::new(),
        })
    }

    /// The pattern set of each ready series: `(entity key, metric name, set)`.
    pub fn pattern_sets(&self) -> impl Iterator<Item = (&str, &str, &PatternSet)> {
        self.entities.iter().flat_map(|(key, metrics)| {
            metrics.iter().filter_map(move |(metric, s)| match s {
                Series::Ready { set, .. } => Some((key.as_str(), metric.as_str(), set)),
                Series::Learning { .. } => None,
            })
        })
    }

    /// The pattern set of one series, if it has learnt one.
    pub fn pattern_set(&self, key: &str, metric: &str) -> Option<&PatternSet> {
        match self.entities.get(key).and_then(|m| m.get(metric)) {
            Some(Series::Ready { set, .. }) => Some(set),
            _ => None,
        }
    }

    /// Replaces the issue labels of a pattern (validated; nothing changes on error).
    pub fn set_labels(
        &mut self,
        key: &str,
        metric: &str,
        id: u64,
        labels: Vec<String>,
    ) -> Result<(), AdsketchError> {
        self.edit_labels(key, metric, id, LabelOp::Set(labels))
            .map(|_| ())
            .map_err(|e| AdsketchError::Param {
                name: "labels",
                reason: e.to_string(),
            })
    }

    /// Applies a label edit to a pattern of one series and returns the pattern
    /// (validated first; nothing changes on error). The detector owns the labels: they
    /// are saved with its snapshot.
    pub fn edit_labels(
        &mut self,
        key: &str,
        metric: &str,
        id: u64,
        op: LabelOp,
    ) -> Result<&Pattern, LabelError> {
        match self.entities.get_mut(key).and_then(|m| m.get_mut(metric)) {
            Some(Series::Ready { set, .. }) => set.edit_labels(id, op),
            _ => Err(LabelError::UnknownSeries {
                entity: key.to_string(),
                metric: metric.to_string(),
            }),
        }
    }

    fn score_one(&mut self, view: &EntityView<'_>) -> Result<Scores, DetectError> {
        let options = &self.options;
        let need = options.train_points + options.test_points;
        let series = self.entities.entry(view.key.to_string()).or_default();
        let mut metrics: SmallVec<[MetricScore; 8]> = SmallVec::new();
        let mut best: Option<f64> = None;
        let mut have_max = 0usize;
        for (i, name) in view.metric_names.iter().enumerate() {
            let row = view.row(i);
            let state = series
                .entry((*name).to_string())
                .or_insert(Series::Learning {
                    buffer: Vec::new(),
                    last_ms: None,
                });
            let fresh = new_points(row, view.end_ms, view.step_ms, last_ms(state));
            advance(state, fresh, view.end_ms, view.step_ms, options);
            let mut ms = MetricScore {
                contribution: f64::NAN,
                ..MetricScore::default()
            };
            match state {
                Series::Learning { buffer, .. } => have_max = have_max.max(buffer.len()),
                Series::Ready { set, latest, .. } => {
                    if let Some(l) = latest {
                        ms.contribution = l.score;
                        ms.distance = Some(l.distance);
                        ms.pattern = Some(PatternMatch {
                            id: l.id,
                            abnormal: l.abnormal,
                            issues: set
                                .get(l.id)
                                .map(|p| p.labels.join(","))
                                .unwrap_or_default(),
                        });
                        best = Some(best.map_or(l.score, |b: f64| b.max(l.score)));
                    }
                }
            }
            metrics.push(ms);
        }
        match best {
            Some(score) => Ok(Scores {
                anomaly_score: score,
                raw: score,
                threshold: 1.0,
                metrics,
            }),
            None if have_max < need
                && series
                    .values()
                    .any(|s| matches!(s, Series::Learning { .. })) =>
            {
                Err(DetectError::WarmingUp {
                    have: have_max,
                    need,
                })
            }
            None => Err(DetectError::NoData),
        }
    }
}

fn last_ms(s: &Series) -> Option<i64> {
    match s {
        Series::Learning { last_ms, .. } | Series::Ready { last_ms, .. } => *last_ms,
    }
}

/// The points of `row` newer than `last_ms` (all of them the first time).
fn new_points(row: &[Sample], end_ms: i64, step_ms: i64, last_ms: Option<i64>) -> &[Sample] {
    let Some(last) = last_ms else { return row };
    if step_ms <= 0 || end_ms <= last {
        return &row[row.len()..];
    }
    let steps = ((end_ms - last) / step_ms) as usize;
    &row[row.len().saturating_sub(steps)..]
}

/// Consumes fresh points: learning, then matching.
fn advance(state: &mut Series, fresh: &[Sample], end_ms: i64, step_ms: i64, o: &AdsketchOptions) {
    if fresh.is_empty() {
        return;
    }
    // Timestamp of the newest point consumed so far, aligned to the step grid.
    let stamp = |k: usize| end_ms - (fresh.len() - 1 - k) as i64 * step_ms;
    let need = o.train_points + o.test_points;
    let mut k = 0;
    if let Series::Learning { buffer, last_ms } = state {
        while k < fresh.len() && buffer.len() < need {
            let v = f64::from(fresh[k]);
            if v.is_finite() {
                buffer.push(v);
            } else if let Some(&prev) = buffer.last() {
                buffer.push(prev);
            }
            *last_ms = Some(stamp(k));
            k += 1;
        }
        if buffer.len() < need {
            return;
        }
        let (tn, ta) = buffer.split_at(o.train_points);
        match discover(tn, ta, &o.offline()) {
            Ok(r) => {
                let mut set = r.set;
                set.capacity = o.max_patterns;
                let tail: Vec<f64> = set.scaler.transform(&ta[ta.len() - o.m..]);
                let latest = set.detect(&tail).map(|m| LatestMatch {
                    score: m.score(),
                    distance: m.distance,
                    id: m.id,
                    abnormal: m.anomalous,
                });
                *state = Series::Ready {
                    set,
                    tail,
                    last_ms: *last_ms,
                    latest,
                };
            }
            Err(_) => {
                // Algorithm 1 refused the window (validated options make this rare):
                // drop the oldest tenth and learn again once the buffer refills, so a
                // bad series costs one attempt per `need / 10` points, not one per step.
                let drop = (need / 10).max(1).min(buffer.len());
                buffer.drain(..drop);
                return;
            }
        }
    }
    if let Series::Ready {
        set,
        tail,
        last_ms,
        latest,
    } = state
    {
        for (j, &v) in fresh.iter().enumerate().skip(k) {
            tail.remove(0);
            tail.push(set.scaler.apply(f64::from(v)));
            *last_ms = Some(stamp(j));
            if tail.iter().any(|x| !x.is_finite()) {
                *latest = None;
                continue;
            }
            let now = Some(stamp(j));
            let found = if o.adaptive {
                set.adapt(tail, now)
            } else {
                let f = set.detect(tail);
                if let (Some(f), Some(t)) = (&f, now) {
                    set.touch(f.id, t);
                }
                f
            };
            *latest = found.map(|m| LatestMatch {
                score: m.score(),
                distance: m.distance,
                id: m.id,
                abnormal: m.kind == Kind::Abnormal,
            });
        }
    }
}

impl Detector for AdsketchDetector {
    fn name(&self) -> &'static str {
        "adsketch"
    }

    fn score(&mut self, batch: &[EntityView<'_>]) -> Vec<Result<Scores, DetectError>> {
        batch.iter().map(|v| self.score_one(v)).collect()
    }

    fn forget(&mut self, key: &str) {
        self.entities.remove(key);
    }

    fn snapshot(&self) -> Snapshot {
        let doc = SnapshotDoc {
            version: SNAPSHOT_VERSION,
            entities: self.entities.clone(),
        };
        serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
    }

    fn as_adsketch(&self) -> Option<&AdsketchDetector> {
        Some(self)
    }

    fn as_adsketch_mut(&mut self) -> Option<&mut AdsketchDetector> {
        Some(self)
    }

    fn restore(&mut self, snapshot: Snapshot) -> Result<(), String> {
        let version = snapshot.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(SNAPSHOT_VERSION)) {
            return Err(format!(
                "adsketch snapshot version {version:?} is not supported (expected {SNAPSHOT_VERSION})"
            ));
        }
        let doc: SnapshotDoc =
            serde_json::from_value(snapshot).map_err(|e| format!("adsketch snapshot: {e}"))?;
        for metrics in doc.entities.values() {
            for s in metrics.values() {
                if let Series::Ready { set, tail, .. } = s {
                    if tail.len() != set.m || set.patterns().iter().any(|p| p.mean.len() != set.m) {
                        return Err("adsketch snapshot: a series' lengths do not match m".into());
                    }
                }
            }
        }
        let mut entities = doc.entities;
        for s in entities.values_mut().flat_map(|m| m.values_mut()) {
            if let Series::Ready { set, .. } = s {
                set.reindex();
            }
        }
        self.entities = entities;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::RobustStats;
    use crate::series::samples;

    const STEP: i64 = 60_000;

    fn wave(k: usize) -> f64 {
        ((k % 24) as f64 / 24.0 * std::f64::consts::TAU).sin() * 10.0 + 50.0
    }

    fn options() -> AdsketchOptions {
        AdsketchOptions {
            m: 6,
            p: 99.0,
            train_points: 200,
            test_points: 100,
            ..AdsketchOptions::default()
        }
    }

    /// Runs one cycle over `series[..=upto]` with a history of at most `history` points.
    fn cycle(
        d: &mut AdsketchDetector,
        rows: &[Vec<f64>],
        upto: usize,
        history: usize,
    ) -> Result<Scores, DetectError> {
        let names = ["cpu", "mem"];
        let from = (upto + 1).saturating_sub(history);
        let owned: Vec<Vec<Sample>> = rows.iter().map(|r| samples(&r[from..=upto])).collect();
        let slices: Vec<&[Sample]> = owned.iter().map(Vec::as_slice).collect();
        let stats = vec![RobustStats::IDENTITY; rows.len()];
        let view = EntityView {
            key: "pod-a",
            metric_names: &names[..rows.len()],
            rows: &slices,
            stats: &stats,
            end_ms: upto as i64 * STEP,
            step_ms: STEP,
            capacity: usize::MAX,
            expectations: &[],
            gates: &[],
        };
        d.score(&[view]).remove(0)
    }

    #[test]
    fn warms_up_then_flags_a_spike_and_names_the_metric() {
        let mut d = AdsketchDetector::new(options()).unwrap();
        let cpu: Vec<f64> = (0..600).map(wave).collect();
        let mut mem: Vec<f64> = (0..600).map(|k| wave(k + 5)).collect();
        mem[450] += 40.0;
        let rows = vec![cpu, mem];
        // History of 64 points per cycle: learning must accumulate across cycles.
        let mut first_ready = None;
        for t in 0..449 {
            match cycle(&mut d, &rows, t, 64) {
                Err(DetectError::WarmingUp { have, need }) => {
                    assert_eq!(need, 300);
                    assert_eq!(have, t + 1);
                }
                Ok(s) => {
                    first_ready.get_or_insert(t);
                    assert!(!s.is_anomalous(), "step {t}: {s:?}");
                }
                Err(e) => panic!("step {t}: {e}"),
            }
        }
        assert_eq!(first_ready, Some(299));
        let spike = cycle(&mut d, &rows, 450, 64).unwrap();
        assert!(spike.is_anomalous(), "{spike:?}");
        assert!(spike.metrics[1].contribution > 1.0);
        assert!(spike.metrics[0].contribution <= 1.0);
        assert!(spike.metrics[1].distance.is_some());
        assert!(spike.metrics[1].pattern.is_some());
    }

    #[test]
    fn snapshot_restore_gives_the_same_scores() {
        let cpu: Vec<f64> = (0..500).map(wave).collect();
        let mut mem: Vec<f64> = (0..500).map(|k| wave(k + 3)).collect();
        mem[420] -= 30.0;
        let rows = vec![cpu, mem];
        let mut a = AdsketchDetector::new(options()).unwrap();
        for t in 0..400 {
            let _ = cycle(&mut a, &rows, t, 400);
        }
        let snap = a.snapshot();
        let mut b = AdsketchDetector::new(options()).unwrap();
        b.restore(serde_json::from_str(&snap.to_string()).unwrap())
            .unwrap();
        for t in 400..500 {
            let sa = cycle(&mut a, &rows, t, 400).unwrap();
            let sb = cycle(&mut b, &rows, t, 400).unwrap();
            assert_eq!(sa, sb, "step {t}");
        }
        assert_eq!(a.snapshot(), b.snapshot());
        let mut bad = snap.clone();
        bad["version"] = serde_json::json!(7);
        assert!(b.restore(bad).is_err());
    }

    #[test]
    fn same_input_same_output_and_forget_resets() {
        let rows = vec![(0..400).map(wave).collect::<Vec<_>>()];
        let run = || {
            let mut d = AdsketchDetector::new(options()).unwrap();
            (0..400)
                .map(|t| cycle(&mut d, &rows, t, 128).ok().map(|s| s.anomaly_score))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let mut d = AdsketchDetector::new(options()).unwrap();
        for t in 0..350 {
            let _ = cycle(&mut d, &rows, t, 400);
        }
        assert_eq!(d.pattern_sets().count(), 1);
        d.forget("pod-a");
        assert_eq!(d.pattern_sets().count(), 0);
    }

    #[test]
    fn labels_travel_with_matches() {
        let rows = vec![(0..500).map(wave).collect::<Vec<_>>()];
        let mut d = AdsketchDetector::new(options()).unwrap();
        let mut last = None;
        for t in 0..380 {
            last = cycle(&mut d, &rows, t, 400).ok();
        }
        let id = last.unwrap().metrics[0].pattern.clone().unwrap().id;
        assert!(d
            .set_labels("pod-a", "cpu", id, vec!["bad label".into()])
            .is_err());
        d.set_labels("pod-a", "cpu", id, vec!["daily-peak".into(), "ok".into()])
            .unwrap();
        // The same shape recurs one period (24 steps) later and matches the same pattern.
        let mut s = None;
        for t in 380..=379 + 24 {
            s = cycle(&mut d, &rows, t, 400).ok();
        }
        let pm = s.unwrap().metrics[0].pattern.clone().unwrap();
        assert_eq!(pm.id, id);
        assert_eq!(pm.issues, "daily-peak,ok");
        assert!(d.set_labels("pod-b", "cpu", id, vec!["x".into()]).is_err());
    }

    #[test]
    fn options_validate_and_reject_unknown_fields() {
        assert!(AdsketchOptions::default().validate().is_ok());
        let bad = AdsketchOptions {
            m: 1,
            ..AdsketchOptions::default()
        };
        assert!(AdsketchDetector::new(bad).is_err());
        let bad = AdsketchOptions {
            train_points: 10,
            ..AdsketchOptions::default()
        };
        assert!(bad.validate().is_err());
        let parsed: Result<AdsketchOptions, _> =
            serde_json::from_value(serde_json::json!({"m": 10, "bogus": 1}));
        assert!(parsed.is_err());
        let parsed: AdsketchOptions = serde_json::from_value(serde_json::json!({"m": 10})).unwrap();
        assert_eq!(parsed.m, 10);
        assert_eq!(parsed.p, 99.5);
    }
}
