//! Performance-regression checks in the agent (issue 6): every `regressions.interval`,
//! each interface (a value of `regressions.interface_label`, found by the `discover`
//! query) has its current window compared with its baseline window by
//! [`crate::detect::regress::compare_with`], and the verdicts are exported.
//!
//! * [`fetch`]: the Prometheus side: discovery, version timelines, windows as
//!   [`LoadTest`](crate::detect::regress::LoadTest)s (values outside a KPI's domain are
//!   errors, not data);
//! * [`runner`]: the loop and its per-interface state (final verdicts, cached baseline
//!   windows and embeddings), comparisons on a blocking thread;
//! * [`metrics`]: `kpiwatch_regression{interface}`, `kpiwatch_regression_probability`,
//!   `kpiwatch_regression_p_value`, `kpiwatch_regression_effect`,
//!   `kpiwatch_regression_insufficient_data`,
//!   `kpiwatch_regression_baseline_info` and the self-metrics of the checks;
//! * [`check`]: `POST /api/v1/regressions/check` on the agent's runtime.
//!
//! Baseline selection and the embedding cache are pure code in `detect::regress`
//! (`baseline`, `cache`); this module does the I/O around them. It never reports
//! "normal" for an interface it could not judge: too little data gives
//! `kpiwatch_regression = NaN` with `kpiwatch_regression_insufficient_data = 1`, and
//! failures are counted in `kpiwatch_regression_errors_total{cause}` and logged once.

mod check;
mod fetch;
mod metrics;
mod runner;

pub(crate) use metrics::RegressionMetrics;
pub(crate) use runner::{Regressions, Setup};

use crate::detect::regress::RegressError;

/// A failed regression check.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A query to Prometheus failed (after the reader's retries).
    #[error("{what} query `{query}` failed: {source}")]
    Query {
        /// Which query (discover, version, workload or a KPI).
        what: String,
        /// The PromQL.
        query: String,
        /// The reader's error.
        source: crate::reader::Error,
    },
    /// A query returned several series where one is needed.
    #[error("{what} query `{query}` returned {count} series (expected one per interface: aggregate it, e.g. sum by ({label}) (...))")]
    TooManySeries {
        /// Which query.
        what: String,
        /// The PromQL.
        query: String,
        /// Series returned.
        count: usize,
        /// The interface label.
        label: String,
    },
    /// A value outside the KPI's domain: the query computes something else.
    #[error("{what} query `{query}` returned {value} at {at_s} s (expected {rule})")]
    OutOfRange {
        /// Which query.
        what: String,
        /// The PromQL.
        query: String,
        /// The value.
        value: f64,
        /// Its timestamp, Unix seconds.
        at_s: f64,
        /// The domain.
        rule: &'static str,
    },
    /// The comparison failed (model error).
    #[error(transparent)]
    Compare(#[from] RegressError),
    /// The blocking comparison task panicked or was cancelled.
    #[error("the comparison task failed: {0}")]
    Task(String),
}

impl Error {
    /// A bounded label for `kpiwatch_regression_errors_total{cause}`.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            Error::Query { source, .. } => source.cause(),
            Error::TooManySeries { .. } => "series",
            Error::OutOfRange { .. } => "out_of_range",
            Error::Compare(_) => "model",
            Error::Task(_) => "task",
        }
    }
}
