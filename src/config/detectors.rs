//! Options of the anomaly detectors (`detectors.*` in the config): plain data with
//! their defaults and the checks serde cannot make.
//!
//! They live beside the config, not in `detect/`, so that the config stays a leaf: the
//! detectors read these types, the config never reads a detector.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

// ---- z-score ----

/// Options of the z-score detector (`detectors.zscore` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZscoreOptions {
    /// The lowest |z| at which the anomaly score reaches 1.0 (default 4). With
    /// `calibrate`, an entity whose normal |z| has a heavier tail gets a higher bar.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Finite points of history needed before scoring (default 16).
    #[serde(default = "default_zscore_min_points")]
    pub min_points: usize,
    /// Raise each entity's threshold to the |z| its own history exceeds with
    /// probability `risk` (a peaks-over-threshold fit, see `detect/tail.rs`), so that
    /// score > 1 means the same on a heavy-tailed series as on a calm one (default true).
    #[serde(default = "default_true")]
    pub calibrate: bool,
    /// Tail probability per point of the calibrated threshold (default 0.001: about one
    /// flag per 1,000 normal points, 5.8 a day at a 15 s step).
    #[serde(default = "default_zscore_risk")]
    pub risk: f64,
}

fn default_true() -> bool {
    true
}

fn default_zscore_risk() -> f64 {
    1e-3
}

fn default_threshold() -> f64 {
    4.0
}

fn default_zscore_min_points() -> usize {
    16
}

impl Default for ZscoreOptions {
    fn default() -> Self {
        ZscoreOptions {
            threshold: default_threshold(),
            min_points: default_zscore_min_points(),
            calibrate: true,
            risk: default_zscore_risk(),
        }
    }
}

impl ZscoreOptions {
    /// Checks the values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(format!(
                "threshold {} is invalid (expected a positive number, e.g. 4)",
                self.threshold
            ));
        }
        if self.min_points < 3 {
            return Err(format!(
                "min_points {} is too small (expected at least 3)",
                self.min_points
            ));
        }
        if !(self.risk > 0.0 && self.risk < 1.0) {
            return Err(format!(
                "risk {} is invalid (expected 0 < risk < 1, e.g. 0.001)",
                self.risk
            ));
        }
        Ok(())
    }
}

// ---- Uni-AD ----

/// Options of the Uni-AD detector (`detectors.uniad` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniadOptions {
    /// The ONNX model (input `[batch, n, W]`, output its reconstruction), e.g.
    /// `models/uniad.onnx`.
    pub model: PathBuf,
    /// How the model runs: `native` (default: the native forward pass, checked
    /// against tract at load, falling back to `bucketed` with a warning for a graph it
    /// does not reproduce), `bucketed` (tract, a plan per batch bucket and metric
    /// count, cached) or `symbolic` (tract, one plan for every shape).
    #[serde(default)]
    pub plan: PlanMode,
    /// Most entity windows per model call (default 512).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Points of history a metric's robust statistics need before the entity is
    /// scored (default 16).
    #[serde(default = "default_min_points")]
    pub min_points: usize,
    /// Divide each metric's squared error by its typical value for the entity before
    /// eq. 7's mean (default `false`: the paper's plain mean). See `scale.rs`: it lets a
    /// fault in a flat metric (an error ratio) stand out of noisy ones, but makes every
    /// ordinary step of a flat metric look like a fault; on held-out lab data the plain
    /// mean ranks faults better (`models/uniad.md`).
    #[serde(default = "default_scale_errors")]
    pub scale_errors: bool,
    /// The per-entity SPOT threshold.
    #[serde(default)]
    pub threshold: SpotOptions,
}

fn default_scale_errors() -> bool {
    false
}

fn default_max_batch() -> usize {
    512
}

fn default_min_points() -> usize {
    16
}

impl UniadOptions {
    /// Options with defaults for everything but the model path.
    pub fn new(model: impl Into<PathBuf>) -> Self {
        UniadOptions {
            model: model.into(),
            plan: PlanMode::default(),
            max_batch: default_max_batch(),
            min_points: default_min_points(),
            scale_errors: default_scale_errors(),
            threshold: SpotOptions::default(),
        }
    }

    /// Checks the values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.threshold;
        if self.max_batch == 0 {
            return Err("max_batch must be at least 1".into());
        }
        if !(t.risk > 0.0 && t.risk < 1.0) {
            return Err(format!(
                "threshold.risk {} is invalid (expected 0 < risk < 1, e.g. 0.001)",
                t.risk
            ));
        }
        if !(t.level > 0.0 && t.level < 1.0) {
            return Err(format!(
                "threshold.level {} is invalid (expected 0 < level < 1, e.g. 0.9)",
                t.level
            ));
        }
        if t.calibration < 8 {
            return Err(format!(
                "threshold.calibration {} is too small (expected at least 8)",
                t.calibration
            ));
        }
        if !(t.initial_threshold.is_finite() && t.initial_threshold > 0.0) {
            return Err(format!(
                "threshold.initial_threshold {} must be a positive number",
                t.initial_threshold
            ));
        }
        if !(t.floor.is_finite() && t.floor > 0.0) {
            return Err(format!(
                "threshold.floor {} must be a positive number",
                t.floor
            ));
        }
        if t.adapt_after == 0 {
            return Err(
                "threshold.adapt_after 0 is invalid (expected at least 1 flag, e.g. 64)".into(),
            );
        }
        Ok(())
    }
}

/// How the Uni-AD model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    /// The native forward pass (weights from the ONNX file), checked against tract at
    /// load; falls back to [`PlanMode::Bucketed`] for graphs it does not reproduce.
    #[default]
    Native,
    /// One tract plan with symbolic `batch` and `n`.
    Symbolic,
    /// tract plans concretised per (batch bucket, n), cached.
    Bucketed,
}

/// Tuning of the per-entity threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpotOptions {
    /// Tail probability of the alarm threshold (SPOT's `q`).
    pub risk: f64,
    /// Quantile of the calibration scores used as the peaks threshold `t`.
    pub level: f64,
    /// Scores collected (3-sigma threshold meanwhile) before SPOT is calibrated.
    pub calibration: usize,
    /// Most peaks kept for the GPD fit.
    pub max_peaks: usize,
    /// Threshold used before two scores exist (raw units of the detector).
    pub initial_threshold: f64,
    /// Lower bound of every threshold, so a perfectly reconstructed (flat) entity
    /// does not turn rounding noise into huge `anomaly_score`s.
    pub floor: f64,
    /// Flags (net of normal scores) after which a lasting change is learned as the new
    /// normal and the threshold rises to it.
    pub adapt_after: usize,
}

impl Default for SpotOptions {
    fn default() -> Self {
        SpotOptions {
            risk: 1e-3,
            level: 0.9,
            calibration: 128,
            max_peaks: 512,
            initial_threshold: 1.0,
            floor: 1e-3,
            adapt_after: 64,
        }
    }
}

// ---- ADSketch ----

/// Default bound on the number of patterns per series (`max_patterns`).
pub const DEFAULT_MAX_PATTERNS: usize = 512;

/// The matrix profile's exclusion zone for a self-join of subsequences of length `m`:
/// `⌈m/4⌉` (stumpy's rule). Options validation and the matrix profile share it.
pub fn exclusion_zone(m: usize) -> usize {
    m.div_ceil(4)
}

/// Options of the ADSketch detector (`detectors.adsketch` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdsketchOptions {
    /// Subsequence length m, in steps (paper default 15).
    pub m: usize,
    /// Percentile of `T_a` nearest-neighbour distances above which a subsequence is an
    /// anomaly candidate (paper default 99.5).
    pub p: f64,
    /// Length of `T_n`, the history assumed normal, in steps.
    pub train_points: usize,
    /// Length of `T_a`, the recent history Algorithm 1 searches for anomalies, in steps.
    pub test_points: usize,
    /// §5.3 guard: `T_n` subsequences above this percentile of the `T_n` profile are
    /// dropped (100 = `T_n` is clean, the paper's default).
    pub train_noise_percentile: f64,
    /// Learn new patterns online (Algorithm 3); `false` only detects (Algorithm 2).
    pub adaptive: bool,
    /// Most patterns kept per series (see the memory policy in `detect::adsketch::pattern`).
    pub max_patterns: usize,
}

impl Default for AdsketchOptions {
    fn default() -> Self {
        AdsketchOptions {
            m: 15,
            p: 99.5,
            train_points: 1440,
            test_points: 360,
            train_noise_percentile: 100.0,
            adaptive: true,
            max_patterns: DEFAULT_MAX_PATTERNS,
        }
    }
}

impl AdsketchOptions {
    /// Checks the values serde cannot check.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=512).contains(&self.m) {
            return Err(format!(
                "m {} is out of range (expected 2 to 512, e.g. 15)",
                self.m
            ));
        }
        for (name, v) in [
            ("p", self.p),
            ("train_noise_percentile", self.train_noise_percentile),
        ] {
            if !(v.is_finite() && (50.0..=100.0).contains(&v)) {
                return Err(format!(
                    "{name} {v} is invalid (expected a percentile in [50, 100])"
                ));
            }
        }
        let excl = exclusion_zone(self.m);
        if self.train_points < self.m + excl + 2 || self.train_points < 2 * self.m {
            return Err(format!(
                "train_points {} is too small for m = {} (expected at least {})",
                self.train_points,
                self.m,
                (self.m + excl + 2).max(2 * self.m)
            ));
        }
        if self.test_points < self.m {
            return Err(format!(
                "test_points {} is smaller than m = {}",
                self.test_points, self.m
            ));
        }
        if self.max_patterns < 2 {
            return Err(format!(
                "max_patterns {} is too small (expected at least 2)",
                self.max_patterns
            ));
        }
        Ok(())
    }
}
