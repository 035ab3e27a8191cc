//! What a backtest keeps of each cycle: every score a detector published, the band the
//! z-score detector drew around each metric, and the metrics' own values, per entity.

use std::collections::BTreeMap;

use smallvec::SmallVec;

use crate::detect::{EntityView, Scores};
use crate::export::{ScoreSink, SeriesLabels};
use crate::reader::QueryResult;
use crate::store::GroupStore;

/// One published score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The step the score is for (ms).
    pub ts_ms: i64,
    /// `anomaly_score` (1.0 = threshold).
    pub score: f64,
    /// The detector's raw value.
    pub raw: f64,
    /// The threshold `raw` was divided by.
    pub threshold: f64,
    /// The metric with the largest contribution, when the detector reports them.
    pub top_metric: Option<u16>,
}

/// A metric's expected band at one step, in its own units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandPoint {
    /// The step (ms).
    pub ts_ms: i64,
    /// Lower edge.
    pub lower: f64,
    /// Expected value.
    pub expected: f64,
    /// Upper edge.
    pub upper: f64,
}

/// Everything recorded about one entity of one group.
#[derive(Debug, Default, Clone)]
pub struct EntityRecord {
    /// The entity's labels (the group's `entity_labels`).
    pub labels: Vec<(String, String)>,
    /// The group's metric names, in order.
    pub metric_names: Vec<String>,
    /// Per metric, the values Prometheus answered within the backtest's range.
    pub values: Vec<Vec<(i64, f64)>>,
    /// Per metric, the z-score detector's band (empty without that detector).
    pub bands: Vec<Vec<BandPoint>>,
    /// Scores by detector.
    pub scores: BTreeMap<&'static str, Vec<Point>>,
}

/// The recorder: a [`ScoreSink`] that keeps everything, by `(group, entity key)`.
#[derive(Debug, Default)]
pub struct Recorder {
    /// First step recorded (ms); earlier steps are warm-up.
    pub from_ms: i64,
    /// Recorded entities.
    pub entities: BTreeMap<(String, String), EntityRecord>,
    metric_names: BTreeMap<String, Vec<String>>,
}

impl Recorder {
    /// An empty recorder keeping steps from `from_ms` on, for groups with `metric_names`.
    pub fn new(from_ms: i64, metric_names: BTreeMap<String, Vec<String>>) -> Self {
        Recorder {
            from_ms,
            entities: BTreeMap::new(),
            metric_names,
        }
    }

    fn entity(&mut self, group: &str, key: &str) -> &mut EntityRecord {
        let names = &self.metric_names;
        self.entities
            .entry((group.to_string(), key.to_string()))
            .or_insert_with(|| {
                let metric_names = names.get(group).cloned().unwrap_or_default();
                let n = metric_names.len();
                EntityRecord {
                    labels: Vec::new(),
                    metric_names,
                    values: vec![Vec::new(); n],
                    bands: vec![Vec::new(); n],
                    scores: BTreeMap::new(),
                }
            })
    }

    /// Keeps the values of one metric's answer that fall in the recorded range, for the
    /// entities `store` tracks (after the answer was ingested: a worker's shard).
    pub fn record_values(
        &mut self,
        group: &str,
        store: &GroupStore,
        metric: usize,
        answer: &QueryResult,
    ) {
        let from = self.from_ms;
        for s in &answer.series {
            let start = s.samples.partition_point(|(t, _)| *t < from);
            if start == s.samples.len() {
                continue;
            }
            let key = store.entity_key(s);
            let Some(tracked) = store.entity(&key) else {
                continue;
            };
            let e = self.entity(group, &key);
            if e.labels.is_empty() {
                e.labels = tracked.labels.clone();
            }
            if let Some(row) = e.values.get_mut(metric) {
                row.extend_from_slice(&s.samples[start..]);
            }
        }
    }

    /// Merges another recorder's entities (one recorder per group runs in parallel).
    pub fn merge(&mut self, other: Recorder) {
        self.entities.extend(other.entities);
        self.metric_names.extend(other.metric_names);
    }

    /// Number of scores recorded.
    pub fn point_count(&self) -> usize {
        self.entities
            .values()
            .flat_map(|e| e.scores.values())
            .map(Vec::len)
            .sum()
    }
}

impl ScoreSink for Recorder {
    fn publish(
        &mut self,
        group: &str,
        view: &EntityView<'_>,
        _labels: &SeriesLabels,
        detector: &'static str,
        scores: &Scores,
    ) {
        if view.end_ms < self.from_ms {
            return;
        }
        let ts_ms = view.end_ms;
        let e = self.entity(group, view.key);
        // The view holds the metrics the entity has data for: map them to the group's.
        let index: SmallVec<[Option<usize>; 8]> = view
            .metric_names
            .iter()
            .map(|n| e.metric_names.iter().position(|m| m == n))
            .collect();
        let top_metric = scores
            .metrics
            .iter()
            .zip(&index)
            .filter(|(m, _)| m.contribution.is_finite())
            .max_by(|a, b| a.0.contribution.total_cmp(&b.0.contribution))
            .and_then(|(_, i)| i.map(|i| i as u16));
        for (score, m) in scores.metrics.iter().zip(&index) {
            let row = m.and_then(|m| e.bands.get_mut(m));
            if let (Some(band), Some(row)) = (score.band, row) {
                row.push(BandPoint {
                    ts_ms,
                    lower: band.lower,
                    expected: band.expected,
                    upper: band.upper,
                });
            }
        }
        e.scores.entry(detector).or_default().push(Point {
            ts_ms,
            score: scores.anomaly_score,
            raw: scores.raw,
            threshold: scores.threshold,
            top_metric,
        });
    }

    /// An expired entity keeps what was recorded: the backtest reports the whole range.
    fn remove_entity(&mut self, _group: &str, _key: &str) {}
}
