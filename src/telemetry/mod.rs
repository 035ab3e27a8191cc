//! Self-monitoring: what kpiwatch says about itself, as logs and as `kpiwatch_*` metrics.
//!
//! [`metrics::SelfMetrics`] owns the metric handles, registered in a registry passed in
//! (no global registry). [`Telemetry`] (in `events.rs`) is what the rest of the agent
//! calls: each method is one self-event that writes one log line *and* updates the
//! matching metric, so logs and metrics never disagree. Self-metrics carry no entity
//! labels: their cardinality is bounded by the number of groups and detectors.

mod events;
pub(crate) mod metrics;

pub use events::{CycleCounts, Telemetry};
pub use metrics::SelfMetrics;
