//! Export of a service-mesh recording (format in `docs/lab.md`, "The service mesh"):
//! `<out>/mesh/<scenario>/<service>.csv` per service, `edges.csv` (one row per edge and
//! time) and `manifest.json` with each fault window's root cause, the services it
//! measurably affected and the propagation figure.
//!
//! The ground truth is written down here and in `docs/lab.md` before any recording was
//! scored: a service is **affected** in a fault window when it is the window's root
//! cause, or when it calls the root cause (directly or through other services, with a
//! call probability above zero in that phase) and, in at least [`AFFECTED_SHARE`] of
//! the window's rows (the first rate window after the phase start left out), its p95
//! latency or its error ratio is above its normal bound. A service's normal bound of a
//! metric is the 99th percentile of the metric over the rows of the phases without
//! faults, and at least 1.1 × their median for latency, 0.01 for the error ratio.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::json;

use super::record::{
    clean_dir, error_ratio, fetch_by, fmt_ts, fmt_value, manifest_with, write, write_manifest,
    Columns, Grid, PromClient, Segment,
};
use super::runner::{mesh_job, RunSummary};
use super::scenario::{Phase, Scenario};
use super::topology::Topology;
use super::LabError;

/// Format tag of the mesh manifest.
pub const MESH_FORMAT: &str = "kpiwatch-lab-mesh/1";

/// Share of a window's rows out of the normal range that makes a caller affected.
pub const AFFECTED_SHARE: f64 = 0.3;

/// Metric columns of a service file, in order (those without data are left out).
pub const SERVICE_COLUMNS: &[&str] = &[
    "rps",
    "error_ratio",
    "latency_mean_ms",
    "latency_p95_ms",
    "in_flight",
    "cpu_cores",
    "memory_mb",
    "workload",
];

/// Header of `edges.csv`.
pub const EDGES_HEADER: &str = "timestamp,client,server,rps,error_ratio,latency_mean_ms";

const SERVICE_QUERIES: &[(&str, &str)] = &[
    ("rps", "sum by (service) (rate(lab_service_requests_total[$W]))"),
    (
        "errors_rps",
        "sum by (service) (rate(lab_service_requests_total{code=~\"5..\"}[$W]))",
    ),
    (
        "latency_mean_ms",
        "1000 * sum by (service) (rate(lab_service_request_duration_seconds_sum[$W])) / sum by (service) (rate(lab_service_request_duration_seconds_count[$W]))",
    ),
    (
        "latency_p95_ms",
        "1000 * histogram_quantile(0.95, sum by (service, le) (rate(lab_service_request_duration_seconds_bucket[$W])))",
    ),
    (
        "in_flight",
        "max by (service) (max_over_time(lab_service_in_flight[$W]))",
    ),
];

/// Per-process columns, by Prometheus job (`mesh_<service>`).
const PROCESS_QUERIES: &[(&str, &str)] = &[
    (
        "cpu_cores",
        "sum by (job) (rate(process_cpu_seconds_total{job=~\"mesh_.+\"}[$W]))",
    ),
    (
        "memory_mb",
        "sum by (job) (process_resident_memory_bytes{job=~\"mesh_.+\"}) / 1e6",
    ),
];

const EDGE_QUERIES: &[(&str, &str)] = &[
    (
        "rps",
        "sum by (client, server) (rate(traces_service_graph_request_total[$W]))",
    ),
    (
        "failed_rps",
        "sum by (client, server) (rate(traces_service_graph_request_failed_total[$W]))",
    ),
    (
        "latency_mean_ms",
        "1000 * sum by (client, server) (rate(traces_service_graph_request_client_seconds_sum[$W])) / sum by (client, server) (rate(traces_service_graph_request_client_seconds_count[$W]))",
    ),
];

const WORKLOAD_QUERY: &[(&str, &str)] = &[(
    "workload",
    "sum(lab_load_virtual_users) + sum(lab_load_target_rate)",
)];

/// One fault window: a phase and the service its faults hit.
#[derive(Debug, Clone)]
struct Window {
    phase: usize,
    root_cause: String,
    kinds: Vec<&'static str>,
    start: f64,
    end: f64,
    /// Services calling the root cause in that phase (directly or not).
    callers: Vec<String>,
}

/// Exports the recording of mesh scenario `sc` under `out`.
pub async fn export(
    prom: &PromClient,
    sc: &Scenario,
    topology: &Topology,
    phases: &[Phase],
    segments: &[Segment],
    out: &Path,
) -> Result<RunSummary, LabError> {
    let dir = out.join("mesh").join(&sc.name);
    clean_dir(&dir)?;
    let grid = Grid::played(segments, sc.step.as_secs_f64())?;
    let mut services = service_columns(prom, sc, grid).await?;
    let edges = fetch_by(prom, sc, grid, EDGE_QUERIES, |l| {
        Some(format!("{},{}", l.get("client")?, l.get("server")?))
    })
    .await?;

    let warmup = sc.rate_window.as_secs_f64();
    let windows = fault_windows(topology, phases, segments);
    let normal_rows: Vec<usize> = segments
        .iter()
        .filter(|seg| phases[seg.index].faulty_services().is_empty())
        .flat_map(|seg| rows_of(grid, seg, warmup))
        .collect();
    let bounds: BTreeMap<&String, Bounds> = services
        .iter()
        .map(|(name, cols)| (name, Bounds::of(cols, &normal_rows)))
        .collect();

    let mut windows_json = Vec::new();
    let mut labels: BTreeMap<String, (Vec<bool>, Vec<bool>)> = services
        .keys()
        .map(|s| (s.clone(), (vec![false; grid.n], vec![false; grid.n])))
        .collect();
    let (mut below_entry, mut entry_affected) = (0usize, 0usize);
    for w in &windows {
        let seg = &segments[w.phase];
        let rows = rows_of(grid, seg, warmup);
        let affected: Vec<&String> = std::iter::once(&w.root_cause)
            .chain(w.callers.iter().filter(|c| {
                let (Some(cols), Some(b)) = (services.get(*c), bounds.get(c)) else {
                    return false;
                };
                b.out_share(cols, &rows) >= AFFECTED_SHARE
            }))
            .collect();
        if w.root_cause != topology.entry {
            below_entry += 1;
            entry_affected += usize::from(affected.contains(&&topology.entry));
        }
        for i in rows_of(grid, seg, 0.0) {
            if let Some((root, hit)) = labels.get_mut(&w.root_cause) {
                root[i] = true;
                hit[i] = true;
            }
            for a in &affected {
                if let Some((_, hit)) = labels.get_mut(*a) {
                    hit[i] = true;
                }
            }
        }
        windows_json.push(json!({
            "phase": phases[w.phase].name, "root_cause": w.root_cause, "kinds": w.kinds,
            "start": w.start, "end": w.end, "callers": w.callers, "affected": affected,
        }));
    }

    let mut files = Vec::new();
    for (name, cols) in &mut services {
        let (root, hit) = &labels[name];
        let file = format!("{name}.csv");
        write(&dir.join(&file), &service_csv(grid, cols, root, hit))?;
        files.push(json!({"service": name, "file": file}));
    }
    write(&dir.join("edges.csv"), &edges_csv(grid, &edges))?;
    let share = (below_entry > 0).then(|| entry_affected as f64 / below_entry as f64);
    let phase_json: Vec<_> = segments
        .iter()
        .map(|seg| {
            let ph = &phases[seg.index];
            json!({
                "name": ph.name, "start": seg.start_ms as f64 / 1000.0,
                "end": seg.end_ms as f64 / 1000.0, "profile": ph.profile,
                "service_faults": ph.service_faults, "calls": ph.calls,
            })
        })
        .collect();
    let manifest = manifest_with(
        MESH_FORMAT,
        sc,
        grid,
        json!({
            "topology": topology,
            "services": files,
            "phases": phase_json,
            "windows": windows_json,
            "affected_rule": {"share": AFFECTED_SHARE, "bound_quantile": 0.99,
                "latency_bound_min_over_median": 1.1, "error_ratio_bound_min": 0.01},
            "propagation": {"windows_below_entry": below_entry, "entry_affected": entry_affected,
                "share": share},
        }),
    );
    write_manifest(&dir, &manifest)?;
    tracing::info!(scenario = %sc.name, windows = windows.len(), below_entry, entry_affected, "Mesh recording exported.");
    Ok(RunSummary {
        dir,
        files: services.len() + 2,
        labeled: windows.len(),
    })
}

/// Every service's columns: its own metrics, its process's, the error ratio and the
/// workload.
async fn service_columns(
    prom: &PromClient,
    sc: &Scenario,
    grid: Grid,
) -> Result<BTreeMap<String, Columns>, LabError> {
    let mut services = fetch_by(prom, sc, grid, SERVICE_QUERIES, |l| {
        l.get("service").cloned()
    })
    .await?;
    let processes = fetch_by(prom, sc, grid, PROCESS_QUERIES, |l| l.get("job").cloned()).await?;
    let workload = fetch_by(prom, sc, grid, WORKLOAD_QUERY, |_| Some(String::new()))
        .await?
        .remove("")
        .and_then(|mut c| c.remove("workload"))
        .unwrap_or_else(|| vec![f64::NAN; grid.n]);
    for (name, cols) in &mut services {
        let nan = vec![f64::NAN; grid.n];
        let rps = cols.get("rps").unwrap_or(&nan).clone();
        let errors = cols.remove("errors_rps").unwrap_or(nan);
        cols.insert(
            "error_ratio".into(),
            rps.iter()
                .zip(&errors)
                .map(|(r, e)| error_ratio(*r, *e))
                .collect(),
        );
        if let Some(p) = processes.get(&mesh_job(name)) {
            cols.extend(p.clone());
        }
        cols.insert("workload".into(), workload.clone());
    }
    Ok(services)
}

/// One window per (phase, service its faults hit), with the callers of that service
/// under the phase's call probabilities.
fn fault_windows(topology: &Topology, phases: &[Phase], segments: &[Segment]) -> Vec<Window> {
    let mut out = Vec::new();
    for seg in segments {
        let ph = &phases[seg.index];
        let now = topology.with_calls(&ph.calls);
        for service in ph.faulty_services() {
            let mut kinds: Vec<&'static str> = ph.service_faults[service]
                .iter()
                .flat_map(|f| f.kinds())
                .collect();
            kinds.sort_unstable();
            kinds.dedup();
            out.push(Window {
                phase: seg.index,
                root_cause: service.to_string(),
                kinds,
                start: seg.start_ms as f64 / 1000.0,
                end: seg.end_ms as f64 / 1000.0,
                callers: now.callers_of(service),
            });
        }
    }
    out
}

/// Grid rows inside `seg`, the first `skip_s` seconds left out.
fn rows_of(grid: Grid, seg: &Segment, skip_s: f64) -> Vec<usize> {
    let (from, to) = (
        seg.start_ms as f64 / 1000.0 + skip_s,
        seg.end_ms as f64 / 1000.0,
    );
    (0..grid.n)
        .filter(|&i| grid.ts(i) >= from && grid.ts(i) < to)
        .collect()
}

/// A service's normal upper bounds of p95 latency and error ratio.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    latency_ms: f64,
    error_ratio: f64,
}

impl Bounds {
    fn of(cols: &Columns, normal_rows: &[usize]) -> Bounds {
        let values = |name: &str| -> Vec<f64> {
            let Some(col) = cols.get(name) else {
                return Vec::new();
            };
            let mut v: Vec<f64> = normal_rows
                .iter()
                .map(|&i| col[i])
                .filter(|x| x.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let quantile = |v: &[f64], q: f64| {
            if v.is_empty() {
                f64::INFINITY
            } else {
                v[((v.len() - 1) as f64 * q).round() as usize]
            }
        };
        let (lat, err) = (values("latency_p95_ms"), values("error_ratio"));
        Bounds {
            latency_ms: quantile(&lat, 0.99).max(1.1 * quantile(&lat, 0.5)),
            error_ratio: quantile(&err, 0.99).max(0.01),
        }
    }

    /// Share of `rows` where the latency or the error ratio is above its bound (rows
    /// without either value count as within).
    fn out_share(&self, cols: &Columns, rows: &[usize]) -> f64 {
        if rows.is_empty() {
            return 0.0;
        }
        let above = |name: &str, bound: f64, i: usize| {
            cols.get(name)
                .is_some_and(|c| c[i].is_finite() && c[i] > bound)
        };
        let out = rows
            .iter()
            .filter(|&&i| {
                above("latency_p95_ms", self.latency_ms, i)
                    || above("error_ratio", self.error_ratio, i)
            })
            .count();
        out as f64 / rows.len() as f64
    }
}

fn service_csv(grid: Grid, cols: &Columns, root: &[bool], hit: &[bool]) -> String {
    let names: Vec<&str> = SERVICE_COLUMNS
        .iter()
        .copied()
        .filter(|c| cols.get(*c).is_some_and(|v| v.iter().any(|x| !x.is_nan())))
        .collect();
    let mut csv = format!("timestamp,{},root_cause,affected\n", names.join(","));
    for i in 0..grid.n {
        csv.push_str(&fmt_ts(grid.ts(i)));
        for n in &names {
            let _ = write!(csv, ",{}", fmt_value(cols[*n][i]));
        }
        let _ = writeln!(csv, ",{},{}", u8::from(root[i]), u8::from(hit[i]));
    }
    csv
}

fn edges_csv(grid: Grid, edges: &BTreeMap<String, Columns>) -> String {
    let mut csv = format!("{EDGES_HEADER}\n");
    let nan = vec![f64::NAN; grid.n];
    for i in 0..grid.n {
        for (edge, cols) in edges {
            let col = |n: &str| cols.get(n).unwrap_or(&nan)[i];
            let rps = col("rps");
            if !rps.is_finite() {
                continue;
            }
            let _ = writeln!(
                csv,
                "{},{edge},{},{},{}",
                fmt_ts(grid.ts(i)),
                fmt_value(rps),
                fmt_value(error_ratio(rps, col("failed_rps"))),
                fmt_value(col("latency_mean_ms"))
            );
        }
    }
    csv
}
