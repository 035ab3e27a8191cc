//! The data that crosses the pipeline's stages, owned by none of them.
//!
//! * [`Series`]: one series as Prometheus answered it (reader → store);
//! * [`EntityView`]: one entity's aligned history with its robust statistics, as the
//!   store lends it to the detectors (store → detect).
//!
//! Types only: no I/O, no stage's logic. Keeping them here lets every stage depend on
//! this module and on `config` alone, never on the stage before it.

use crate::config::Gate;
use crate::normalize::RobustStats;
pub use crate::ring::Sample;
pub(crate) use crate::seasonal::Expectation;

/// One series of a result: its labels (sorted by name) and its samples
/// `(timestamp ms, value)`. Instant vectors give one sample per series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Label pairs, sorted by name, `__name__` included when present.
    pub labels: Vec<(String, String)>,
    /// Samples in time order.
    pub samples: Vec<(i64, f64)>,
}

impl Series {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One entity's recent history, as the window store holds it.
///
/// `rows[i]` is the history of metric `i` (named `metric_names[i]`), oldest first; every
/// row has the same length and its last point is the step at `end_ms`. Gaps that the
/// group's fill policy did not fill are `NaN`. Detectors that need only the last `W`
/// points take [`EntityView::tail`]. `stats[i]` is the robust normaliser of metric `i`
/// over the group's history, shared by every detector that z-scores its input.
///
/// With a seasonal baseline, the rows hold seasonal residuals
/// `u = (x − expected(t)) / spread(t)` instead of raw values (see [`crate::seasonal`])
/// and `expectations[i]` is metric `i`'s expectation at the last point, so that
/// `x = value + spread · u` turns residuals back into the metric's units. Without one
/// (or with an empty slice) it is [`Expectation::IDENTITY`]: rows are raw values.
#[derive(Debug, Clone, Copy)]
pub struct EntityView<'a> {
    /// Stable key of the entity (its entity labels, rendered), for per-entity state.
    pub key: &'a str,
    /// Names of the metrics this entity has, in configuration order. Metrics are
    /// positions, not identities: entities of one group may have different subsets.
    pub metric_names: &'a [&'a str],
    /// History of each metric, oldest first, all of equal length.
    pub rows: &'a [&'a [Sample]],
    /// Robust statistics of each metric.
    pub stats: &'a [RobustStats],
    /// Timestamp of the last point, milliseconds since the Unix epoch.
    pub end_ms: i64,
    /// Distance between points, milliseconds.
    pub step_ms: i64,
    /// Points of history kept per series (the group's `history / step`): a row never
    /// grows longer, so a detector that needs more than this must not wait for it.
    pub capacity: usize,
    /// Expectation of each metric at the last point (empty: identity for all).
    pub expectations: &'a [Expectation],
    /// Noise gate of each metric (empty: open for all).
    pub gates: &'a [Gate],
}

impl<'a> EntityView<'a> {
    /// Number of metrics of the entity.
    pub fn metric_count(&self) -> usize {
        self.rows.len()
    }

    /// Number of points per row.
    pub fn len(&self) -> usize {
        self.rows.first().map_or(0, |r| r.len())
    }

    /// `true` when the entity has no metric or no point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steps from `end_ms` (an earlier view's end) to this view's end; 0 when time went
    /// backwards or the step is unknown. Lazy refits count new points with it.
    pub fn steps_since(&self, end_ms: i64) -> usize {
        if self.step_ms > 0 {
            usize::try_from((self.end_ms - end_ms) / self.step_ms).unwrap_or(0)
        } else {
            0
        }
    }

    /// Metric `i`'s expectation at the last point (identity without seasonality).
    pub fn expectation(&self, i: usize) -> Expectation {
        self.expectations
            .get(i)
            .copied()
            .unwrap_or(Expectation::IDENTITY)
    }

    /// Metric `i`'s noise gate.
    pub fn gate(&self, i: usize) -> Gate {
        self.gates.get(i).copied().unwrap_or(Gate::OPEN)
    }

    /// Metric `i`'s expected value at the last point in its own units, and the
    /// deviation of the last point from it: `x − expected`, where `expected` combines
    /// the seasonal expectation with the normaliser's median of the residuals.
    pub fn deviation(&self, i: usize) -> (f64, f64) {
        let e = self.expectation(i);
        let s = self.stats[i];
        let last = self.last(i);
        (e.value + e.spread * s.median, e.spread * (last - s.median))
    }

    /// `true` when metric `i`'s last point is held back by its noise gate.
    pub fn gated(&self, i: usize) -> bool {
        let (expected, deviation) = self.deviation(i);
        self.gate(i).holds_back(deviation, expected)
    }

    /// The whole row of metric `i`, oldest first.
    pub fn row(&self, i: usize) -> &'a [Sample] {
        self.rows[i]
    }

    /// The last point of metric `i` (NaN when the row is empty).
    pub fn last(&self, i: usize) -> f64 {
        self.rows[i].last().map_or(f64::NAN, |&x| f64::from(x))
    }

    /// The last `w` points of metric `i` (fewer if the row is shorter).
    pub fn tail(&self, i: usize, w: usize) -> &'a [Sample] {
        let row = self.rows[i];
        &row[row.len().saturating_sub(w)..]
    }
}

/// `values` at the store's precision (tests build views from f64 literals).
#[cfg(test)]
pub(crate) fn samples(values: &[f64]) -> Vec<Sample> {
    values.iter().map(|&v| v as Sample).collect()
}
