//! Self-events: each method writes one log line and updates the matching metric.
//!
//! Log conventions: fields first, message capitalised and ending with a period, ERROR
//! only where an operator must act; failures that will be retried log at DEBUG/WARN.

use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::metrics::SelfMetrics;

/// The agent's self-observation handle; cheap to clone.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// The metric handles (public so that tests can read them).
    pub metrics: SelfMetrics,
}

impl Telemetry {
    /// Wraps registered metrics.
    pub fn new(metrics: SelfMetrics) -> Self {
        Telemetry { metrics }
    }

    /// One HTTP request to Prometheus completed (successfully or not).
    pub fn query_attempted(&self, endpoint: &'static str, took: Duration) {
        self.metrics
            .query_duration
            .with_label_values(&[endpoint])
            .observe(took.as_secs_f64());
    }

    /// A query succeeded with `samples` samples and Prometheus `warnings`.
    pub fn query_succeeded(&self, query: &str, samples: usize, warnings: &[String]) {
        self.metrics.samples_fetched.inc_by(samples as u64);
        for w in warnings {
            self.metrics.prometheus_warnings.inc();
            warn!(query, warning = %w, "Prometheus returned a warning with the result.");
        }
    }

    /// An attempt failed and will be retried after `retry_in`.
    pub fn query_retrying(
        &self,
        cause: &'static str,
        error: &dyn std::fmt::Display,
        retry_in: Duration,
    ) {
        self.metrics.query_retries.with_label_values(&[cause]).inc();
        debug!(cause, error = %error, retry_in_ms = retry_in.as_millis() as u64, "Query attempt failed; retrying.");
    }

    /// A query is over, after its last attempt: `failed` holds the error's cause.
    /// Counted here, for every caller, so that errors / queries is a failure ratio.
    pub fn query_finished(&self, endpoint: &'static str, failed: Option<&'static str>) {
        self.metrics.queries.with_label_values(&[endpoint]).inc();
        if let Some(cause) = failed {
            self.metrics.query_errors.with_label_values(&[cause]).inc();
        }
    }

    /// A group's query failed for good (after retries); already counted by
    /// [`Telemetry::query_finished`].
    pub fn query_failed(
        &self,
        group: &str,
        metric: &str,
        cause: &'static str,
        error: &dyn std::fmt::Display,
    ) {
        warn!(group, metric, cause, error = %error, "Query failed; the group's entities are stale until the next good cycle.");
    }

    /// A group's query is at fault itself (refused by Prometheus, or its answer over
    /// `max_response_bytes`): the group is scored without the metric. Already counted
    /// by [`Telemetry::query_finished`]; repeats every cycle until the config changes.
    pub fn query_refused(
        &self,
        group: &str,
        metric: &str,
        cause: &'static str,
        error: &dyn std::fmt::Display,
    ) {
        warn!(group, metric, cause, error = %error, "Query refused or its answer too large; the group is scored without this metric until its PromQL or prometheus.max_response_bytes is fixed.");
    }

    /// A seasonal baseline adopted a level shift that lasted `seasonality_adapt_after`.
    pub fn level_shift_adopted(&self, group: &str, entity: &str, metric: &str, delta: f64) {
        self.metrics.level_shifts.with_label_values(&[group]).inc();
        info!(group, entity, metric, delta, "Level shift lasted seasonality_adapt_after; the seasonal baseline now expects the new level.");
    }

    /// A group's service graph was analysed: its size this cycle.
    pub fn graph_analyzed(&self, group: &str, nodes: usize, edges: usize, unknown: usize) {
        let m = &self.metrics;
        m.graph_nodes.with_label_values(&[group]).set(nodes as i64);
        m.graph_edges.with_label_values(&[group]).set(edges as i64);
        m.graph_edges_unknown
            .with_label_values(&[group])
            .set(unknown as i64);
    }

    /// Seasonal baselines were learned from a long history at start.
    pub fn seasonal_learned(&self, group: &str, metric: &str, series: usize, took: Duration) {
        self.metrics
            .seasonal_learned
            .with_label_values(&[group])
            .inc_by(series as u64);
        info!(
            group,
            metric,
            series,
            took_ms = took.as_millis() as u64,
            "Seasonal baselines learned from Prometheus history."
        );
    }

    /// New entities were not tracked this cycle because the group is at
    /// `max_entities`; `warn` on the first time only (the counter says the rest).
    pub fn entities_dropped(&self, group: &str, dropped: usize, max_entities: usize, warn: bool) {
        self.metrics
            .entities_dropped
            .with_label_values(&[group])
            .inc_by(dropped as u64);
        if warn {
            warn!(group, dropped, max_entities, "Group is at max_entities: new entities are not tracked (counted in kpiwatch_entities_dropped_total; logged once). Narrow the group's queries, shard the agent, or raise max_entities after sizing its memory (README).");
        }
    }

    /// A cycle finished.
    pub fn cycle_finished(&self, group: &str, took: Duration, ok: bool, counts: CycleCounts) {
        let m = &self.metrics;
        m.cycle_duration
            .with_label_values(&[group])
            .observe(took.as_secs_f64());
        m.cycles
            .with_label_values(&[group, if ok { "ok" } else { "error" }])
            .inc();
        m.entities
            .with_label_values(&[group])
            .set(counts.entities as i64);
        m.entities_stale
            .with_label_values(&[group])
            .set(counts.stale as i64);
        m.series
            .with_label_values(&[group])
            .set(counts.series as i64);
        if counts.expired > 0 {
            m.entities_expired
                .with_label_values(&[group])
                .inc_by(counts.expired as u64);
            info!(
                group,
                expired = counts.expired,
                "Entities expired; their series left /metrics."
            );
        }
        if ok {
            m.last_success
                .with_label_values(&[group])
                .set(crate::clock::now_secs());
            debug!(
                group,
                took_ms = took.as_millis() as u64,
                entities = counts.entities,
                anomalous = counts.anomalous,
                "Cycle finished."
            );
        }
    }

    /// A group left the config (reload): its per-group series leave /metrics, so that
    /// no stale `kpiwatch_last_successful_cycle_timestamp_seconds` fires an alert for a
    /// group that no longer exists.
    pub fn group_removed(&self, group: &str) {
        let m = &self.metrics;
        // Absent series (a group that never finished a cycle) are not an error here.
        let _ = m.last_success.remove_label_values(&[group]);
        let _ = m.cycle_duration.remove_label_values(&[group]);
        for result in ["ok", "error"] {
            let _ = m.cycles.remove_label_values(&[group, result]);
        }
        let _ = m.cycle_overruns.remove_label_values(&[group]);
        for gauge in [&m.entities, &m.entities_stale, &m.series] {
            let _ = gauge.remove_label_values(&[group]);
        }
        for counter in [
            &m.entities_expired,
            &m.entities_dropped,
            &m.level_shifts,
            &m.seasonal_learned,
        ] {
            let _ = counter.remove_label_values(&[group]);
        }
        info!(
            group,
            "Group removed from the config; its series left /metrics."
        );
    }

    /// A tick came while the previous cycle of the group was still running.
    pub fn cycle_overran(&self, group: &str, interval: Duration) {
        self.metrics
            .cycle_overruns
            .with_label_values(&[group])
            .inc();
        warn!(
            group,
            interval_ms = interval.as_millis() as u64,
            "Cycle overran its interval; skipping this tick."
        );
    }

    /// A detector scored a batch.
    pub fn detector_ran(
        &self,
        detector: &'static str,
        took: Duration,
        skips: &[(&'static str, usize)],
    ) {
        self.metrics
            .inference_duration
            .with_label_values(&[detector])
            .observe(took.as_secs_f64());
        for (reason, n) in skips {
            if *n > 0 {
                self.metrics
                    .detector_skips
                    .with_label_values(&[detector, reason])
                    .inc_by(*n as u64);
            }
        }
    }

    /// State was saved.
    pub fn state_saved(&self, bytes: usize, took: Duration) {
        self.metrics
            .state_saves
            .with_label_values(&["success"])
            .inc();
        self.metrics.state_last_save.set(crate::clock::now_secs());
        debug!(bytes, took_ms = took.as_millis() as u64, "State saved.");
    }

    /// State could not be saved: learned state will be lost on restart. `cause` is a
    /// bounded label (`state::Error::cause`); the previous state file is kept.
    pub fn state_save_failed(&self, cause: &'static str, error: &dyn std::fmt::Display) {
        self.metrics
            .state_saves
            .with_label_values(&["failure"])
            .inc();
        self.metrics
            .state_save_errors
            .with_label_values(&[cause])
            .inc();
        error!(cause, error = %error, "State save failed; the previous state file is kept, and what was learned since would be lost on restart. Check the state directory.");
    }

    /// The state directory could not be claimed at start (read-only, no permission):
    /// the agent runs and learns in memory, and each save tries again (failures are
    /// counted in `kpiwatch_state_save_errors_total`).
    pub fn state_dir_unwritable(
        &self,
        dir: &dyn std::fmt::Display,
        cause: &'static str,
        error: &dyn std::fmt::Display,
    ) {
        error!(state_dir = %dir, cause, error = %error, "State directory is not writable: learned state is kept in memory only and is not saved until it is (each save retries). Make state_dir writable.");
    }

    /// A new config was applied.
    pub fn reload_applied(&self, source: &str) {
        self.metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        self.metrics.config_last_reload_ok.set(1);
        info!(config = source, "Config reloaded.");
    }

    /// A new config was rejected; the old one keeps running.
    pub fn reload_rejected(&self, reason: &dyn std::fmt::Display) {
        self.metrics
            .config_reloads
            .with_label_values(&["failure"])
            .inc();
        self.metrics.config_last_reload_ok.set(0);
        error!(reason = %reason, "Config reload rejected; the previous config keeps running.");
    }
}

/// Entity counts reported at the end of a cycle.
#[derive(Debug, Clone, Copy, Default)]
pub struct CycleCounts {
    /// Entities tracked.
    pub entities: usize,
    /// Entities not refreshed this cycle.
    pub stale: usize,
    /// Series tracked.
    pub series: usize,
    /// Entities that expired this cycle.
    pub expired: usize,
    /// Entities over threshold for any detector.
    pub anomalous: usize,
}
