//! [`UniadDetector`]: the Uni-AD [`Detector`] (normalise, batch, score, threshold).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use smallvec::SmallVec;

use super::model::{ModelError, UniadModel};
use super::scale::{fit_window_ends, ErrorScales};
use super::spot::{Spot, SpotOptions};
pub use crate::config::detectors::UniadOptions;
use crate::detect::{
    DetectError, Detector, EntityView, MetricScore, RobustStats, Sample, Scores, Snapshot,
};

/// Normalised inputs are clipped to this magnitude: a value 1000 robust sigmas away is
/// anomalous enough, and the bound keeps the model's arithmetic finite.
const Z_CLIP: f32 = 1000.0;
/// Version of the snapshot format (2: records `scale_errors`, the score the thresholds
/// were learned on; version 1 thresholds are on the plain eq. 7 score; 3: SPOT runs on
/// the root of the score, so versions 1 and 2 hold thresholds in other units).
const SNAPSHOT_VERSION: u64 = 3;

/// The Uni-AD detector of one entity group. The model may be shared between groups.
#[derive(Debug)]
pub struct UniadDetector {
    model: Arc<UniadModel>,
    options: UniadOptions,
    thresholds: HashMap<String, Spot>,
    /// `options.threshold` in the units SPOT runs in: the root of the score.
    root_spot: SpotOptions,
    /// Per-entity error scales, fitted only when `options.scale_errors`; refitted from
    /// the history, not persisted.
    scales: HashMap<String, ErrorScales>,
}

/// One entity prepared for the model: which metrics go in, and their window.
struct Prepared {
    /// Index in the batch given to `score`.
    index: usize,
    /// Metric positions (in the view) that went into the model.
    metrics: SmallVec<[usize; 8]>,
    /// `metrics.len() * W` normalised values.
    input: Vec<f32>,
}

impl UniadDetector {
    /// Loads the model named in `options` and builds the detector.
    pub fn new(options: UniadOptions) -> Result<Self, ModelError> {
        let model = UniadModel::load(&options.model, options.plan)?;
        Ok(Self::with_model(Arc::new(model), options))
    }

    /// A detector around an already loaded model (to share one model between groups).
    pub fn with_model(model: Arc<UniadModel>, options: UniadOptions) -> Self {
        let root_spot = SpotOptions {
            initial_threshold: options.threshold.initial_threshold.sqrt(),
            floor: options.threshold.floor.sqrt(),
            ..options.threshold.clone()
        };
        UniadDetector {
            model,
            root_spot,
            options,
            thresholds: HashMap::new(),
            scales: HashMap::new(),
        }
    }

    /// The model this detector runs.
    pub fn model(&self) -> &Arc<UniadModel> {
        &self.model
    }

    /// Normalises the last `W` points of each usable metric of `view`.
    fn prepare(&self, index: usize, view: &EntityView<'_>) -> Result<Prepared, DetectError> {
        let w = self.model.window();
        if view.len() < w {
            return Err(DetectError::WarmingUp {
                have: view.len(),
                need: w,
            });
        }
        let mut metrics = SmallVec::new();
        let mut input = Vec::with_capacity(view.metric_count() * w);
        let mut most_history = 0;
        for i in 0..view.metric_count() {
            let stats = metric_stats(view, i);
            most_history = most_history.max(stats.count);
            let tail = view.tail(i, w);
            // Metrics without statistics yet or without a point in the window are left
            // out (Uni-AD accepts any subset of metrics: they are positions).
            if stats.count < self.options.min_points || !tail.iter().any(|v| v.is_finite()) {
                continue;
            }
            push_window(tail, &stats, &mut input);
            metrics.push(i);
        }
        if metrics.is_empty() {
            return Err(if most_history < self.options.min_points {
                DetectError::WarmingUp {
                    have: most_history,
                    need: self.options.min_points,
                }
            } else {
                DetectError::NoData
            });
        }
        Ok(Prepared {
            index,
            metrics,
            input,
        })
    }

    /// The windows ending at [`fit_window_ends`] of `view`'s history, for the metrics of
    /// `p`, each as a [`Prepared`] with `p`'s index.
    fn history_windows(&self, p: &Prepared, view: &EntityView<'_>) -> Vec<Prepared> {
        let w = self.model.window();
        fit_window_ends(view.len(), w)
            .into_iter()
            .map(|end| {
                let mut input = Vec::with_capacity(p.metrics.len() * w);
                for &i in &p.metrics {
                    push_window(
                        &view.row(i)[end - w..end],
                        &metric_stats(view, i),
                        &mut input,
                    );
                }
                Prepared {
                    index: p.index,
                    metrics: p.metrics.clone(),
                    input,
                }
            })
            .collect()
    }

    /// Refits the error scales of the entities of `group` (all with `n` metrics) that
    /// are due, in one batched pass over their history windows.
    fn refit_scales(
        &mut self,
        group: &[Prepared],
        n: usize,
        batch: &[EntityView<'_>],
    ) -> Result<(), DetectError> {
        let w = self.model.window();
        let due: Vec<&Prepared> = group
            .iter()
            .filter(|p| {
                let v = &batch[p.index];
                self.scales
                    .get(v.key)
                    .is_none_or(|s| s.is_due(&p.metrics, v, w))
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let per_entity: Vec<Vec<Prepared>> = due
            .iter()
            .map(|p| self.history_windows(p, &batch[p.index]))
            .collect();
        let refs: Vec<&Prepared> = per_entity.iter().flatten().collect();
        let errors = self.last_step_errors(&refs, n)?;
        // `errors` follows `refs`: each entity's windows, entity after entity.
        let mut rest = errors.as_slice();
        for (p, windows) in due.iter().zip(&per_entity) {
            let (own, tail) = rest.split_at(windows.len());
            rest = tail;
            let view = &batch[p.index];
            let fitted = ErrorScales::fit(&p.metrics, own, view.end_ms, view.len());
            self.scales.insert(view.key.to_string(), fitted);
        }
        Ok(())
    }

    /// Runs the model on entities of equal metric count, `max_batch` at a time, and
    /// returns eq. 7 terms per entity (squared error of each metric at the last step).
    fn last_step_errors(
        &self,
        group: &[&Prepared],
        n: usize,
    ) -> Result<Vec<Vec<f64>>, DetectError> {
        let w = self.model.window();
        let mut out = Vec::with_capacity(group.len());
        for chunk in group.chunks(self.options.max_batch.max(1)) {
            let mut batch = Vec::with_capacity(chunk.len() * n * w);
            for p in chunk {
                batch.extend_from_slice(&p.input);
            }
            let recon = self
                .model
                .infer(&batch, chunk.len(), n)
                .map_err(|e| DetectError::Inference(e.to_string()))?;
            for b in 0..chunk.len() {
                let errs = (0..n)
                    .map(|i| {
                        let at = (b * n + i) * w + (w - 1);
                        let d = f64::from(batch[at]) - f64::from(recon[at]);
                        d * d
                    })
                    .collect();
                out.push(errs);
            }
        }
        Ok(out)
    }

    /// Scores at most `max_batch` entities (see [`Detector::score`]).
    fn score_chunk(&mut self, batch: &[EntityView<'_>]) -> Vec<Result<Scores, DetectError>> {
        let mut results: Vec<Result<Scores, DetectError>> =
            (0..batch.len()).map(|_| Err(DetectError::NoData)).collect();
        let mut by_n: HashMap<usize, Vec<Prepared>> = HashMap::new();
        for (i, view) in batch.iter().enumerate() {
            match self.prepare(i, view) {
                Ok(p) => by_n.entry(p.metrics.len()).or_default().push(p),
                Err(e) => results[i] = Err(e),
            }
        }
        let mut groups: Vec<_> = by_n.into_iter().collect();
        groups.sort_by_key(|(n, _)| *n);
        for (n, prepared) in groups {
            let refs: Vec<&Prepared> = prepared.iter().collect();
            let errors = match self.last_step_errors(&refs, n) {
                Ok(e) => e,
                Err(e) => {
                    for p in &prepared {
                        results[p.index] = Err(e.clone());
                    }
                    continue;
                }
            };
            if self.options.scale_errors {
                if let Err(e) = self.refit_scales(&prepared, n, batch) {
                    for p in &prepared {
                        results[p.index] = Err(e.clone());
                    }
                    continue;
                }
            }
            for (p, mut errs) in prepared.iter().zip(errors) {
                let view = &batch[p.index];
                if let Some(scales) = self.scales.get(view.key) {
                    scales.standardise(&mut errs);
                }
                let count = errs.len() as f64;
                let raw = errs.iter().sum::<f64>() / count;
                let mut metrics: SmallVec<[MetricScore; 8]> = (0..view.metric_count())
                    .map(|_| MetricScore {
                        contribution: f64::NAN,
                        ..MetricScore::default()
                    })
                    .collect();
                for (&m, e) in p.metrics.iter().zip(&errs) {
                    metrics[m].contribution = e / count;
                }
                let spot = self.thresholds.entry(view.key.to_string()).or_default();
                // SPOT fits the tail of the score's root (an RMS error): squared errors
                // of a heavy-tailed series have a tail too heavy for the moment fit
                // (shape ≥ 1/2), their roots one half as heavy. The threshold is squared
                // back into the score's units.
                let threshold = spot.observe(raw.sqrt(), &self.root_spot).powi(2);
                let mut scores = Scores {
                    anomaly_score: raw / threshold,
                    raw,
                    threshold,
                    metrics,
                };
                crate::detect::gate_additive(&mut scores, view);
                results[p.index] = Ok(scores);
            }
        }
        results
    }
}

impl Detector for UniadDetector {
    fn name(&self) -> &'static str {
        "uniad"
    }

    fn score(&mut self, batch: &[EntityView<'_>]) -> Vec<Result<Scores, DetectError>> {
        // `max_batch` entities at a time: preparing every entity at once would hold all
        // their input windows (20 MB at 10,000 entities of 8 metrics).
        let mut results = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(self.options.max_batch.max(1)) {
            results.extend(self.score_chunk(chunk));
        }
        results
    }

    fn forget(&mut self, key: &str) {
        self.thresholds.remove(key);
        self.scales.remove(key);
    }

    fn snapshot(&self) -> Snapshot {
        serde_json::json!({
            "version": SNAPSHOT_VERSION,
            "scale_errors": self.options.scale_errors,
            "thresholds": self.thresholds,
        })
    }

    fn restore(&mut self, snapshot: Snapshot) -> Result<(), String> {
        #[derive(Deserialize)]
        struct Stored {
            version: u64,
            #[serde(default)]
            scale_errors: bool,
            thresholds: HashMap<String, Spot>,
        }
        let stored: Stored =
            serde_json::from_value(snapshot).map_err(|e| format!("uniad snapshot: {e}"))?;
        if stored.version < SNAPSHOT_VERSION {
            return Err(format!(
                "uniad thresholds of snapshot version {} were fitted on the score, version \
                 {SNAPSHOT_VERSION} fits them on its root: they are learned again",
                stored.version
            ));
        }
        if stored.version != SNAPSHOT_VERSION {
            return Err(format!(
                "uniad snapshot version {} is not supported (expected {SNAPSHOT_VERSION})",
                stored.version
            ));
        }
        // Thresholds learned on the other score (scaled or plain) are in other units.
        if stored.scale_errors != self.options.scale_errors {
            return Err(format!(
                "uniad thresholds were learned with scale_errors: {}, now {}",
                stored.scale_errors, self.options.scale_errors
            ));
        }
        self.thresholds = stored.thresholds;
        Ok(())
    }
}

/// The robust statistics of metric `i` (identity when the view has none for it).
fn metric_stats(view: &EntityView<'_>, i: usize) -> RobustStats {
    view.stats.get(i).copied().unwrap_or(RobustStats::IDENTITY)
}

/// Appends the normalised values of one metric's window: gaps carry the last value
/// forward, leading gaps take the first value (the median when there is none).
fn push_window(window: &[Sample], stats: &RobustStats, out: &mut Vec<f32>) {
    let first = window
        .iter()
        .map(|&v| f64::from(v))
        .find(|v| v.is_finite())
        .unwrap_or(stats.median);
    let mut last = first;
    for &v in window {
        if v.is_finite() {
            last = f64::from(v);
        }
        let z = stats.z(last) as f32;
        out.push(z.clamp(-Z_CLIP, Z_CLIP));
    }
}
