//! Export of a lab recording through Prometheus's `query_range` into the dataset formats
//! of `docs/lab.md`:
//! * anomaly: `<out>/anomaly/<scenario>/<route>.csv` (`timestamp`, one column per
//!   metric, `label`) and `manifest.json` (entities, phases, fault windows);
//! * regression: `<out>/regress/<run>__<route>.csv`
//!   (`timestamp,workload,response_time,throughput,success_rate`), `pairs.csv` and
//!   `manifest.json`.
//!
//! Prometheus is read through the agent's own reader (`crate::reader`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::runner::RunSummary;
use super::scenario::{Body, Campaign, Phase, Scenario};
use super::service::ROUTES;
use super::LabError;
use crate::config::judge::Kpi;

/// Format tags written in the manifests.
pub const ANOMALY_FORMAT: &str = "kpiwatch-lab-anomaly/1";
/// Format tag of the regression manifest.
pub const REGRESSION_FORMAT: &str = "kpiwatch-lab-regress/1";
/// Header of every regression run file.
pub const RUN_HEADER: &str = "timestamp,workload,response_time,throughput,success_rate";
/// Header of `pairs.csv`.
pub const PAIRS_HEADER: &str =
    "pair_id,baseline,current,label,rt_regressed,tps_regressed,sr_regressed";

/// When a phase or run actually played (wall clock, ms since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Index of the phase or run in the scenario.
    pub index: usize,
    /// Start.
    pub start_ms: i64,
    /// End.
    pub end_ms: i64,
}

/// Series labels and `(timestamp seconds, value)` points.
pub type Series = (BTreeMap<String, String>, Vec<(f64, f64)>);

/// The lab's Prometheus client: the agent's reader ([`crate::reader::Client`], with its
/// retries, timeouts and response cap), set up for a loopback Prometheus without auth.
pub struct PromClient {
    reader: crate::reader::Client,
    base: String,
}

impl std::fmt::Debug for PromClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromClient")
            .field("base", &self.base)
            .finish()
    }
}

impl PromClient {
    /// A client for the Prometheus at `base` (e.g. `http://127.0.0.1:9090`).
    pub fn new(base: &str) -> Result<Self, LabError> {
        let err = |detail: String| LabError::Http {
            url: base.to_string(),
            detail,
        };
        let url = url::Url::parse(base).map_err(|e| err(e.to_string()))?;
        let cfg = crate::config::PrometheusConfig {
            url,
            timeout: std::time::Duration::from_secs(30),
            max_concurrency: 4,
            max_response_bytes: 256 << 20,
            retries: 3,
            retry_backoff: std::time::Duration::from_millis(200),
            auth: crate::config::Auth::None,
            tls: crate::config::TlsConfig::default(),
            headers: Vec::new(),
        };
        // The reader reports to self-metrics; the lab keeps them in a private registry.
        let metrics = crate::telemetry::SelfMetrics::new(&prometheus::Registry::new())?;
        let reader = crate::reader::Client::new(&cfg, crate::telemetry::Telemetry::new(metrics))
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            reader,
            base: base.to_string(),
        })
    }

    fn error(&self, e: crate::reader::Error) -> LabError {
        LabError::Http {
            url: self.base.clone(),
            detail: e.to_string(),
        }
    }

    /// Instant query now: labels and value of each result.
    pub async fn query(
        &self,
        expr: &str,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, LabError> {
        let now = crate::clock::now_ms();
        let r = self
            .reader
            .query(expr, now)
            .await
            .map_err(|e| self.error(e))?;
        Ok(r.series
            .into_iter()
            .map(|s| {
                let v = s.samples.last().map_or(f64::NAN, |p| p.1);
                (s.labels.into_iter().collect(), v)
            })
            .collect())
    }

    /// Range query over `[start, end]` seconds with `step` seconds.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, LabError> {
        let (start_ms, end_ms) = (
            (start * 1000.0).round() as i64,
            (end * 1000.0).round() as i64,
        );
        let r = self
            .reader
            .query_range(
                expr,
                start_ms,
                end_ms,
                std::time::Duration::from_secs_f64(step),
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(r.series
            .into_iter()
            .map(|s| {
                let points = s
                    .samples
                    .into_iter()
                    .map(|(t, v)| (t as f64 / 1000.0, v))
                    .collect();
                (s.labels.into_iter().collect(), points)
            })
            .collect())
    }
}

/// A regular time grid.
#[derive(Debug, Clone, Copy)]
pub(super) struct Grid {
    pub(super) start: f64,
    pub(super) step: f64,
    pub(super) n: usize,
}

impl Grid {
    /// Grid points aligned to multiples of `step` inside `[from, to]` (seconds).
    pub(super) fn inside(from: f64, to: f64, step: f64) -> Self {
        let start = (from / step).ceil() * step;
        let last = (to / step).floor() * step;
        let n = if last >= start {
            ((last - start) / step).round() as usize + 1
        } else {
            0
        };
        Self { start, step, n }
    }
    /// The grid over everything `segments` played; an error when nothing was.
    pub(super) fn played(segments: &[Segment], step: f64) -> Result<Self, LabError> {
        let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
            return Err(LabError::Http {
                url: "export".into(),
                detail: "nothing was played".into(),
            });
        };
        Ok(Self::inside(
            first.start_ms as f64 / 1000.0,
            last.end_ms as f64 / 1000.0,
            step,
        ))
    }

    pub(super) fn ts(&self, i: usize) -> f64 {
        self.start + self.step * i as f64
    }
    pub(super) fn end(&self) -> f64 {
        self.ts(self.n.saturating_sub(1))
    }
    pub(super) fn index(&self, ts: f64) -> Option<usize> {
        let i = ((ts - self.start) / self.step).round();
        (i >= 0.0 && (i as usize) < self.n).then_some(i as usize)
    }
}

/// Per-route and global columns, keyed by name.
pub(super) type Columns = BTreeMap<String, Vec<f64>>;

/// Metrics exported per route entity: (column, PromQL with `$W` for the rate window).
const ROUTE_QUERIES: &[(&str, &str)] = &[
    ("rps", "sum by (route) (rate(lab_http_requests_total[$W]))"),
    ("errors_rps", "sum by (route) (rate(lab_http_requests_total{code=~\"5..\"}[$W]))"),
    (
        "latency_mean_ms",
        "1000 * sum by (route) (rate(lab_http_request_duration_seconds_sum[$W])) / sum by (route) (rate(lab_http_request_duration_seconds_count[$W]))",
    ),
    (
        "latency_p50_ms",
        "1000 * histogram_quantile(0.5, sum by (route, le) (rate(lab_http_request_duration_seconds_bucket[$W])))",
    ),
    (
        "latency_p95_ms",
        "1000 * histogram_quantile(0.95, sum by (route, le) (rate(lab_http_request_duration_seconds_bucket[$W])))",
    ),
    ("in_flight", "max by (route) (max_over_time(lab_http_in_flight[$W]))"),
    (
        "dependency_ms",
        "1000 * sum by (route) (rate(lab_dependency_duration_seconds_sum[$W])) / sum by (route) (rate(lab_dependency_duration_seconds_count[$W]))",
    ),
];

/// Metrics shared by every entity of a run (process, host and workload context).
const GLOBAL_QUERIES: &[(&str, &str)] = &[
    (
        "cpu_cores",
        "sum(rate(process_cpu_seconds_total{job=\"service\"}[$W]))",
    ),
    (
        "memory_mb",
        "sum(process_resident_memory_bytes{job=\"service\"}) / 1e6",
    ),
    (
        "node_cpu_busy",
        "1 - avg(rate(node_cpu_seconds_total{mode=\"idle\"}[$W]))",
    ),
    ("node_load1", "max(node_load1)"),
    (
        "workload",
        "sum(lab_load_virtual_users) + sum(lab_load_target_rate)",
    ),
];

fn promql_duration(d: std::time::Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Runs every query over `grid`; returns per-route columns and global columns.
async fn fetch(
    prom: &PromClient,
    sc: &Scenario,
    grid: Grid,
) -> Result<(BTreeMap<String, Columns>, Columns), LabError> {
    let per_route = fetch_by(prom, sc, grid, ROUTE_QUERIES, |l| l.get("route").cloned()).await?;
    let global = fetch_by(prom, sc, grid, GLOBAL_QUERIES, |_| Some(String::new()))
        .await?
        .remove("")
        .unwrap_or_default();
    Ok((per_route, global))
}

/// Runs each `(column, PromQL)` of `queries` (`$W`: the rate window) over `grid` and
/// files each result series under the entity `key` names from its labels (series it
/// names nothing for are left out): columns by entity.
pub(super) async fn fetch_by(
    prom: &PromClient,
    sc: &Scenario,
    grid: Grid,
    queries: &[(&str, &str)],
    key: impl Fn(&BTreeMap<String, String>) -> Option<String>,
) -> Result<BTreeMap<String, Columns>, LabError> {
    let w = promql_duration(sc.rate_window);
    let step = sc.step.as_secs_f64();
    let mut out: BTreeMap<String, Columns> = BTreeMap::new();
    for (name, q) in queries {
        for (labels, points) in prom
            .query_range(&q.replace("$W", &w), grid.start, grid.end(), step)
            .await?
        {
            let Some(entity) = key(&labels) else {
                continue;
            };
            let col = out
                .entry(entity)
                .or_default()
                .entry((*name).to_string())
                .or_insert_with(|| vec![f64::NAN; grid.n]);
            for (ts, v) in points {
                if let Some(i) = grid.index(ts) {
                    col[i] = v;
                }
            }
        }
    }
    Ok(out)
}

/// Error ratio from request and error rates: 0 when there were requests and no error
/// series, `NaN` when there were no requests.
pub(super) fn error_ratio(rps: f64, errors: f64) -> f64 {
    if rps.is_nan() || rps <= 0.0 {
        f64::NAN
    } else if errors.is_nan() {
        0.0
    } else {
        (errors / rps).clamp(0.0, 1.0)
    }
}

/// Formats a value compactly: `NaN` for gaps, at most 4 decimals.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

pub(super) fn fmt_ts(ts: f64) -> String {
    fmt_value((ts * 1000.0).round() / 1000.0)
}

pub(super) fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(LabError::io(path))
}

/// Removes the dataset files a previous recording left in `dir`.
pub(super) fn clean_dir(dir: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(dir).map_err(LabError::io(dir))?;
    for entry in std::fs::read_dir(dir).map_err(LabError::io(dir))? {
        let path = entry.map_err(LabError::io(dir))?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if ext == "csv" || path.file_name().and_then(|n| n.to_str()) == Some("manifest.json") {
            std::fs::remove_file(&path).map_err(LabError::io(&path))?;
        }
    }
    Ok(())
}

/// Exports the recording of `sc` (played as `segments`) under `out`.
pub async fn export(
    prom: &PromClient,
    sc: &Scenario,
    segments: &[Segment],
    out: &Path,
) -> Result<RunSummary, LabError> {
    match (&sc.body, &sc.mesh) {
        (Body::Anomaly(phases), Some(topology)) => {
            super::mesh_record::export(prom, sc, topology, phases, segments, out).await
        }
        (Body::Anomaly(phases), None) => export_anomaly(prom, sc, phases, segments, out).await,
        (Body::Regression(c), _) => export_regression(prom, sc, c, segments, out).await,
    }
}

/// Column order of anomaly entity files (those an entity has no data for are left out).
/// Metric columns an anomaly entity file may have, in the documented order.
pub const ENTITY_COLUMNS: &[&str] = &[
    "rps",
    "error_ratio",
    "latency_mean_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "in_flight",
    "dependency_ms",
    "cpu_cores",
    "memory_mb",
    "node_cpu_busy",
    "node_load1",
    "workload",
];

async fn export_anomaly(
    prom: &PromClient,
    sc: &Scenario,
    phases: &[Phase],
    segments: &[Segment],
    out: &Path,
) -> Result<RunSummary, LabError> {
    let dir = out.join("anomaly").join(&sc.name);
    clean_dir(&dir)?;
    let grid = Grid::played(segments, sc.step.as_secs_f64())?;
    let (mut per_route, global) = fetch(prom, sc, grid).await?;

    // Fault windows: one per (phase with faults, affected route).
    let mut windows = Vec::new();
    let mut phase_json = Vec::new();
    for seg in segments {
        let ph = &phases[seg.index];
        let (start, end) = (seg.start_ms as f64 / 1000.0, seg.end_ms as f64 / 1000.0);
        phase_json.push(json!({
            "name": ph.name, "start": start, "end": end, "profile": ph.profile,
            "version": ph.version, "faults": ph.faults,
        }));
        for route in ROUTES {
            let hits: Vec<_> = ph
                .faults
                .iter()
                .filter(|f| f.affected_routes().contains(route))
                .collect();
            if hits.is_empty() {
                continue;
            }
            let mut kinds: Vec<&str> = hits.iter().flat_map(|f| f.kinds()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            windows.push(json!({
                "entity": format!("{}/{route}", sc.name), "route": route, "file": format!("{route}.csv"),
                "phase": ph.name, "kinds": kinds, "start": start, "end": end,
            }));
        }
    }

    let mut entities = Vec::new();
    for route in ROUTES {
        let Some(cols) = per_route.get_mut(*route) else {
            continue;
        };
        let rps = cols
            .get("rps")
            .cloned()
            .unwrap_or_else(|| vec![f64::NAN; grid.n]);
        let errors = cols
            .remove("errors_rps")
            .unwrap_or_else(|| vec![f64::NAN; grid.n]);
        cols.insert(
            "error_ratio".into(),
            rps.iter()
                .zip(&errors)
                .map(|(r, e)| error_ratio(*r, *e))
                .collect(),
        );
        for (k, v) in &global {
            cols.insert(k.clone(), v.clone());
        }
        let names: Vec<&str> = ENTITY_COLUMNS
            .iter()
            .copied()
            .filter(|c| cols.get(*c).is_some_and(|v| v.iter().any(|x| !x.is_nan())))
            .collect();
        let route_windows: Vec<(f64, f64)> = windows
            .iter()
            .filter(|w| w["route"] == *route)
            .filter_map(|w| Some((w["start"].as_f64()?, w["end"].as_f64()?)))
            .collect();
        let mut csv = format!("timestamp,{},label\n", names.join(","));
        let mut labeled = 0usize;
        let series: Vec<&Vec<f64>> = names.iter().map(|n| &cols[*n]).collect();
        for i in 0..grid.n {
            let ts = grid.ts(i);
            let label = route_windows.iter().any(|(s, e)| ts >= *s && ts < *e);
            labeled += usize::from(label);
            csv.push_str(&fmt_ts(ts));
            for col in &series {
                let _ = write!(csv, ",{}", fmt_value(col[i]));
            }
            let _ = writeln!(csv, ",{}", u8::from(label));
        }
        let file = format!("{route}.csv");
        write(&dir.join(&file), &csv)?;
        entities.push(json!({
            "id": format!("{}/{route}", sc.name), "route": route, "file": file,
            "metrics": names, "rows": grid.n, "anomalous_rows": labeled,
        }));
    }
    let manifest = manifest_with(
        ANOMALY_FORMAT,
        sc,
        grid,
        json!({
            "entities": entities,
            "phases": phase_json,
            "windows": windows,
        }),
    );
    write_manifest(&dir, &manifest)?;
    Ok(RunSummary {
        dir,
        files: entities.len() + 1,
        labeled: windows.len(),
    })
}

/// A recording's manifest: the fields every format shares (format, scenario, seed,
/// resolution, span), then the fields of `rest` (an object).
pub(super) fn manifest_with(format: &str, sc: &Scenario, grid: Grid, rest: Value) -> Value {
    let mut m = json!({
        "format": format,
        "scenario": sc.name,
        "description": sc.description,
        "seed": sc.load.seed,
        "step_s": sc.step.as_secs_f64(),
        "scrape_interval_s": sc.scrape_interval.as_secs_f64(),
        "rate_window_s": sc.rate_window.as_secs_f64(),
        "start": grid.start,
        "end": grid.end(),
        "rows": grid.n,
    });
    if let (Value::Object(m), Value::Object(rest)) = (&mut m, rest) {
        m.extend(rest);
    }
    m
}

pub(super) fn write_manifest(dir: &Path, manifest: &Value) -> Result<(), LabError> {
    let text = serde_json::to_string_pretty(manifest).unwrap_or_default();
    write(&dir.join("manifest.json"), &(text + "\n"))
}

/// File stem of a run's file for one route.
pub fn run_file_stem(run: &str, route: &str) -> String {
    format!("{run}__{route}")
}

async fn export_regression(
    prom: &PromClient,
    sc: &Scenario,
    c: &Campaign,
    segments: &[Segment],
    out: &Path,
) -> Result<RunSummary, LabError> {
    let dir: PathBuf = out.join("regress");
    clean_dir(&dir)?;
    let step = sc.step.as_secs_f64();
    let all = Grid::played(segments, step)?;
    let (per_route, global) = fetch(prom, sc, all).await?;
    let nan = vec![f64::NAN; all.n];
    let workload = global.get("workload").unwrap_or(&nan);
    let warmup = sc.rate_window.as_secs_f64();

    let mut files = 0usize;
    let mut runs_json = Vec::new();
    for seg in segments {
        let run = &c.runs[seg.index];
        // Skip the first rate window: its rates still mix in the idle cool-down.
        let g = Grid::inside(
            seg.start_ms as f64 / 1000.0 + warmup,
            seg.end_ms as f64 / 1000.0,
            step,
        );
        let mut run_files = Vec::new();
        for route in ROUTES {
            let cols = per_route.get(*route);
            let col = |name: &str| cols.and_then(|c| c.get(name)).unwrap_or(&nan);
            let (rps, errs, rt) = (col("rps"), col("errors_rps"), col("latency_mean_ms"));
            let mut csv = format!("{RUN_HEADER}\n");
            for i in 0..g.n {
                let ts = g.ts(i);
                let Some(j) = all.index(ts) else { continue };
                let sr = 1.0 - error_ratio(rps[j], errs[j]);
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{}",
                    fmt_ts(ts),
                    fmt_value(workload[j]),
                    fmt_value(rt[j]),
                    fmt_value(rps[j]),
                    fmt_value(sr)
                );
            }
            let stem = run_file_stem(&run.id, route);
            write(&dir.join(format!("{stem}.csv")), &csv)?;
            files += 1;
            run_files.push(stem);
        }
        runs_json.push(json!({
            "id": run.id, "version": run.version, "profile": run.profile, "profile_kind": run.profile.name(),
            "duration_s": run.duration.as_secs_f64(), "start": seg.start_ms as f64 / 1000.0,
            "end": seg.end_ms as f64 / 1000.0, "faults": run.faults, "regressed": run.regressed.iter().map(|k| k.short()).collect::<Vec<_>>(),
            "files": run_files,
        }));
    }

    let mut pairs = format!("{PAIRS_HEADER}\n");
    let mut pairs_json = Vec::new();
    let mut n = 0usize;
    for (b, cur) in &c.pairs {
        let (base, current) = (&c.runs[*b], &c.runs[*cur]);
        for route in ROUTES {
            n += 1;
            let kpis = current.regressed_on(route);
            let has = |k: Kpi| u8::from(kpis.contains(&k));
            let id = format!("p{n:04}");
            let (bs, cs) = (
                run_file_stem(&base.id, route),
                run_file_stem(&current.id, route),
            );
            let _ = writeln!(
                pairs,
                "{id},{bs},{cs},{},{},{},{}",
                u8::from(!kpis.is_empty()),
                has(Kpi::ResponseTime),
                has(Kpi::Throughput),
                has(Kpi::SuccessRate)
            );
            pairs_json.push(json!({ "pair_id": id, "route": route, "baseline_run": base.id, "current_run": current.id }));
        }
    }
    write(&dir.join("pairs.csv"), &pairs)?;
    let manifest = json!({
        "format": REGRESSION_FORMAT,
        "scenario": sc.name,
        "description": sc.description,
        "seed": sc.load.seed,
        "step_s": step,
        "scrape_interval_s": sc.scrape_interval.as_secs_f64(),
        "rate_window_s": sc.rate_window.as_secs_f64(),
        "runs": runs_json,
        "pairs": pairs_json,
    });
    write_manifest(&dir, &manifest)?;
    Ok(RunSummary {
        dir,
        files: files + 2,
        labeled: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_aligned_to_the_step() {
        let g = Grid::inside(10.3, 20.0, 2.0);
        assert_eq!((g.start, g.n, g.end()), (12.0, 5, 20.0));
        assert_eq!(g.index(14.0), Some(1));
        assert_eq!(g.index(22.0), None);
        assert_eq!(Grid::inside(10.3, 11.0, 2.0).n, 0);
    }

    #[test]
    fn values_format_compactly() {
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_value(1.5), "1.5");
        assert_eq!(fmt_value(2.0), "2");
        assert_eq!(fmt_value(-0.00001), "0");
    }

    #[test]
    fn error_ratio_handles_missing_series() {
        assert_eq!(error_ratio(10.0, f64::NAN), 0.0);
        assert!(error_ratio(0.0, 1.0).is_nan());
        assert_eq!(error_ratio(10.0, 2.5), 0.25);
    }
}
