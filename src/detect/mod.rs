//! Detectors: everything that turns a window of values into scores.
//!
//! This module owns the [`Detector`] trait, the [`Scores`] a detector returns and
//! the threshold helpers shared by detectors. Detectors are plain synchronous code:
//! nothing under `detect/` may import tokio, reqwest, hyper or prometheus. The cycle
//! hands them batches on a blocking thread.
//!
//! # The `anomaly_score` convention
//!
//! Every detector reports `anomaly_score` normalised so that **1.0 is its threshold**:
//! `score > 1.0` means anomalous. The raw value (z-score, reconstruction error,
//! distance) travels beside it in [`Scores::raw`] for people who tune.

pub mod adsketch;
pub mod graph;
pub(crate) mod onnx_graph;
pub mod onnx_proto;
pub mod regress;
pub(crate) mod tail;
pub mod uniad;
pub mod zscore;

/// Largest absolute difference of two equally long vectors (the golden-vector tests of
/// the neural detectors compare engines with it).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

use smallvec::SmallVec;

/// Robust statistics of one series (see [`crate::normalize`]): `z = (x - median) / scale`.
pub use crate::normalize::RobustStats;
/// One entity's recent history (see [`crate::series`]).
pub use crate::series::{EntityView, Sample};

/// A pattern an interpretable detector (ADSketch) matched a metric against.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternMatch {
    /// Stable pattern id within the series.
    pub id: u64,
    /// `true` when the pattern is an abnormal one.
    pub abnormal: bool,
    /// Issue labels people attached to the pattern, comma separated (may be empty).
    pub issues: String,
}

/// What a detector says about one metric of an entity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricScore {
    /// Share of this metric in the entity's raw score (Uni-AD eq. 7 term, |z| for the
    /// z-score detector). `NaN` when the metric had no data.
    pub contribution: f64,
    /// Distance to the nearest pattern (ADSketch), if the detector has patterns.
    pub distance: Option<f64>,
    /// Nearest pattern (ADSketch), if any.
    pub pattern: Option<PatternMatch>,
    /// The band inside which this metric's score stays ≤ 1 (the z-score detector).
    pub band: Option<Band>,
}

/// A metric's expected value and the band around it, in the metric's own units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// Expected value at the last point.
    pub expected: f64,
    /// Lower edge: below it the metric scores above 1.
    pub lower: f64,
    /// Upper edge: above it the metric scores above 1.
    pub upper: f64,
}

/// What a detector says about one entity at its last step.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// 1.0 = the detector's threshold; above means anomalous.
    pub anomaly_score: f64,
    /// The detector's raw value before normalisation by the threshold.
    pub raw: f64,
    /// The threshold the raw value was divided by (same unit as `raw`).
    pub threshold: f64,
    /// Per metric details, in the order of [`EntityView::metric_names`].
    pub metrics: SmallVec<[MetricScore; 8]>,
}

impl Scores {
    /// `true` when the score crosses the threshold.
    pub fn is_anomalous(&self) -> bool {
        self.anomaly_score > 1.0
    }
}

/// Applies the view's noise gates to a score that is the sum of its metrics'
/// contributions (Uni-AD): metrics whose last point a gate holds back cannot raise it
/// above 1, so the score becomes `max(score of the other metrics, min(score, 1))`.
pub(crate) fn gate_additive(scores: &mut Scores, view: &EntityView<'_>) {
    let gated: SmallVec<[usize; 8]> = (0..view.metric_count())
        .filter(|&i| view.gated(i))
        .collect();
    if gated.is_empty() || scores.threshold.is_nan() || scores.threshold <= 0.0 {
        return;
    }
    let open_raw: f64 = scores
        .metrics
        .iter()
        .enumerate()
        .filter(|(i, m)| !gated.contains(i) && m.contribution.is_finite())
        .map(|(_, m)| m.contribution)
        .sum();
    let capped = (open_raw / scores.threshold).max(scores.anomaly_score.min(1.0));
    if capped < scores.anomaly_score {
        scores.anomaly_score = capped;
        scores.raw = capped * scores.threshold;
    }
}

/// Why a detector could not score an entity this cycle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectError {
    /// Not enough history yet (warm-up); not an error an operator must act on.
    #[error("warming up: {have} of {need} points")]
    WarmingUp {
        /// Points available.
        have: usize,
        /// Points needed.
        need: usize,
    },
    /// The window holds no usable values.
    #[error("no data in the window")]
    NoData,
    /// The model rejected the input or failed.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// A detector's learned state, serialised as JSON inside the state file.
pub type Snapshot = serde_json::Value;

/// The interface every detector implements.
///
/// A detector instance serves one entity group. The cycle calls [`Detector::score`]
/// once per cycle with every entity of the group that has fresh data, so batching
/// detectors (Uni-AD) can batch entities with equal metric counts.
pub trait Detector: Send {
    /// Short stable name, used as the `detector` label (`zscore`, `uniad`, ...).
    fn name(&self) -> &'static str;

    /// Scores each entity at its last step. The result has one entry per input, in order.
    fn score(&mut self, batch: &[EntityView<'_>]) -> Vec<Result<Scores, DetectError>>;

    /// Drops per-entity state of an entity that expired.
    fn forget(&mut self, key: &str);

    /// Learned state to persist (normaliser statistics, thresholds, patterns).
    fn snapshot(&self) -> Snapshot;

    /// Restores what [`Detector::snapshot`] returned, possibly from an older run.
    fn restore(&mut self, snapshot: Snapshot) -> Result<(), String>;

    /// The ADSketch detector behind this trait object, if it is one: the pattern
    /// catalog reads its patterns and sends it label edits (`None` for the others).
    fn as_adsketch(&self) -> Option<&adsketch::AdsketchDetector> {
        None
    }

    /// Mutable access for label edits; see [`Detector::as_adsketch`].
    fn as_adsketch_mut(&mut self) -> Option<&mut adsketch::AdsketchDetector> {
        None
    }
}
