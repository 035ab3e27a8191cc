//! The self-monitoring metric families. Names follow
//! `kpiwatch_<subsystem>_<name>_<unit>[_total]`; only counters end in `_total`.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// Handles of every self-monitoring metric.
#[derive(Debug, Clone)]
pub struct SelfMetrics {
    /// `kpiwatch_build_info{version,revision}` = 1.
    pub build_info: IntGaugeVec,
    /// Duration of each HTTP request to Prometheus, by endpoint.
    pub query_duration: HistogramVec,
    /// Queries (each once, however many attempts), by endpoint.
    pub queries: IntCounterVec,
    /// Failed queries (after retries) by cause.
    pub query_errors: IntCounterVec,
    /// Retried attempts by cause.
    pub query_retries: IntCounterVec,
    /// Samples received from Prometheus.
    pub samples_fetched: IntCounter,
    /// Warnings returned by Prometheus alongside results.
    pub prometheus_warnings: IntCounter,
    /// Duration of a group's cycle.
    pub cycle_duration: HistogramVec,
    /// Cycles by group and result.
    pub cycles: IntCounterVec,
    /// Ticks skipped because the previous cycle was still running.
    pub cycle_overruns: IntCounterVec,
    /// Unix time of the last successful cycle, by group.
    pub last_success: GaugeVec,
    /// Time spent in detectors per cycle, by detector.
    pub inference_duration: HistogramVec,
    /// Entities a detector could not score, by detector and reason.
    pub detector_skips: IntCounterVec,
    /// Entities tracked, by group.
    pub entities: IntGaugeVec,
    /// Entities whose data could not be refreshed in the last cycle, by group.
    pub entities_stale: IntGaugeVec,
    /// Entities that expired, by group.
    pub entities_expired: IntCounterVec,
    /// New entities not tracked (group at `max_entities`), per cycle, by group.
    pub entities_dropped: IntCounterVec,
    /// Series (entity × metric) tracked, by group.
    pub series: IntGaugeVec,
    /// Level shifts the seasonal baselines adopted, by group.
    pub level_shifts: IntCounterVec,
    /// Series whose seasonal baseline was learned from Prometheus's history at start, by group.
    pub seasonal_learned: IntCounterVec,
    /// Nodes of a group's service graph in the last cycle.
    pub graph_nodes: IntGaugeVec,
    /// Edges of a group's service graph in the last cycle.
    pub graph_edges: IntGaugeVec,
    /// Edges of a group's service graph with an end that is no entity of the group.
    pub graph_edges_unknown: IntGaugeVec,
    /// State saves by result.
    pub state_saves: IntCounterVec,
    /// Failed state saves by cause.
    pub state_save_errors: IntCounterVec,
    /// Unix time of the last successful state save.
    pub state_last_save: Gauge,
    /// Config reloads by result.
    pub config_reloads: IntCounterVec,
    /// 1 when the last reload succeeded (or none was tried), 0 after a rejected one.
    pub config_last_reload_ok: IntGauge,
}

/// Error type of metric registration (duplicate names are programming errors).
pub(crate) type RegisterError = prometheus::Error;

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, RegisterError> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, RegisterError> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Result<HistogramVec, RegisterError> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

/// Buckets from 1 ms to ~65 s, for queries and cycles.
fn seconds_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 4.0, 9).unwrap_or_default()
}

/// Buckets from 10 µs to ~10 s, for detector batches.
fn inference_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.00001, 4.0, 11).unwrap_or_default()
}

impl SelfMetrics {
    /// Creates the handles and registers them in `r`.
    pub fn new(r: &Registry) -> Result<Self, RegisterError> {
        let build_info = gauge_vec(
            r,
            "kpiwatch_build_info",
            "Build of the running agent; always 1.",
            &["version", "revision"],
        )?;
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("KPIWATCH_REVISION").unwrap_or("unknown"),
            ])
            .set(1);
        let state_last_save = Gauge::new(
            "kpiwatch_state_last_save_timestamp_seconds",
            "Unix time of the last successful state save.",
        )?;
        r.register(Box::new(state_last_save.clone()))?;
        let samples_fetched = IntCounter::new(
            "kpiwatch_samples_fetched_total",
            "Samples received from Prometheus.",
        )?;
        r.register(Box::new(samples_fetched.clone()))?;
        let prometheus_warnings = IntCounter::new(
            "kpiwatch_prometheus_warnings_total",
            "Warnings returned by Prometheus with query results.",
        )?;
        r.register(Box::new(prometheus_warnings.clone()))?;
        let config_last_reload_ok = IntGauge::new(
            "kpiwatch_config_last_reload_successful",
            "1 when the last config reload succeeded or none was tried, 0 after a rejected reload.",
        )?;
        config_last_reload_ok.set(1);
        r.register(Box::new(config_last_reload_ok.clone()))?;
        let last_success = GaugeVec::new(
            Opts::new(
                "kpiwatch_last_successful_cycle_timestamp_seconds",
                "Unix time of the last successful cycle of a group.",
            ),
            &["group"],
        )?;
        r.register(Box::new(last_success.clone()))?;
        Ok(SelfMetrics {
            build_info,
            query_duration: histogram_vec(r, "kpiwatch_query_duration_seconds", "Duration of HTTP requests to Prometheus, by API endpoint.", &["endpoint"], seconds_buckets())?,
            queries: counter_vec(r, "kpiwatch_queries_total", "Queries to Prometheus, anomaly groups and regression checks alike, each counted once however many attempts it took, by API endpoint.", &["endpoint"])?,
            query_errors: counter_vec(r, "kpiwatch_query_errors_total", "Queries that failed after retries, by cause.", &["cause"])?,
            query_retries: counter_vec(r, "kpiwatch_query_retries_total", "Query attempts that failed and were retried, by cause.", &["cause"])?,
            samples_fetched,
            prometheus_warnings,
            cycle_duration: histogram_vec(r, "kpiwatch_cycle_duration_seconds", "Duration of a group's evaluation cycle.", &["group"], seconds_buckets())?,
            cycles: counter_vec(r, "kpiwatch_cycles_total", "Evaluation cycles by group and result (ok, error).", &["group", "result"])?,
            cycle_overruns: counter_vec(r, "kpiwatch_cycle_overruns_total", "Ticks skipped because the group's previous cycle was still running.", &["group"])?,
            last_success,
            inference_duration: histogram_vec(r, "kpiwatch_inference_duration_seconds", "Time a detector spent scoring one group's batch.", &["detector"], inference_buckets())?,
            detector_skips: counter_vec(r, "kpiwatch_detector_skipped_total", "Entities a detector could not score, by detector and reason (warming_up, no_data, inference).", &["detector", "reason"])?,
            entities: gauge_vec(r, "kpiwatch_entities", "Entities tracked, by group.", &["group"])?,
            entities_stale: gauge_vec(r, "kpiwatch_entities_stale", "Entities whose data could not be refreshed in the last cycle, by group.", &["group"])?,
            entities_expired: counter_vec(r, "kpiwatch_entities_expired_total", "Entities that expired after their absence, by group.", &["group"])?,
            entities_dropped: counter_vec(r, "kpiwatch_entities_dropped_total", "New entities not tracked because the group was at max_entities, counted once per cycle they appeared in, by group.", &["group"])?,
            level_shifts: counter_vec(r, "kpiwatch_level_shifts_total", "Level shifts the seasonal baselines adopted after seasonality_adapt_after, by group.", &["group"])?,
            seasonal_learned: counter_vec(r, "kpiwatch_seasonal_series_learned_total", "Series whose seasonal baseline was learned from Prometheus history at start, by group.", &["group"])?,
            graph_nodes: gauge_vec(r, "kpiwatch_graph_nodes", "Services in a group's service graph in the last cycle (entities with a node label and services named by an edge).", &["group"])?,
            graph_edges: gauge_vec(r, "kpiwatch_graph_edges", "Edges of a group's service graph in the last cycle (at least graph.min_edge_rate calls per second, and the static edges).", &["group"])?,
            graph_edges_unknown: gauge_vec(r, "kpiwatch_graph_edges_unknown", "Edges of a group's service graph with an end that is no entity of the group (a service not monitored, or a label that does not match graph.node_label).", &["group"])?,
            series: gauge_vec(r, "kpiwatch_series", "Series (entity x metric) tracked, by group.", &["group"])?,
            state_saves: counter_vec(r, "kpiwatch_state_saves_total", "State saves by result (success, failure).", &["result"])?,
            state_save_errors: counter_vec(r, "kpiwatch_state_save_errors_total", "Failed state saves by cause (read_only, no_space, permission, locked, io, invalid, panic).", &["cause"])?,
            state_last_save,
            config_reloads: counter_vec(r, "kpiwatch_config_reloads_total", "Config reloads by result (success, failure).", &["result"])?,
            config_last_reload_ok,
        })
    }
}
