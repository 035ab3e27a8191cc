//! `kpiwatch backtest` throughput against a real local Prometheus holding backfilled
//! history (`promtool tsdb create-blocks-from openmetrics`).
//!
//! Run: `cargo bench --bench backtest` (release profile; needs `prometheus` and
//! `promtool`). One group of N entities × 8 gauges at step 30 s, interval 30 s, window
//! 32, history 1 h, z-score + Uni-AD; N and the range vary to show how the cost grows.
//! Prints per case: wall time (fetch included), time waiting for Prometheus, normalise,
//! each detector, samples fetched, scores recorded, and the peak RSS of this process so
//! far (cases run in the order printed; the first has the largest peak of its own).
//! `cargo test --benches` runs the smallest case once.

mod support;

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use kpiwatch::backtest::{self, Options};

const METRICS: usize = 8;
const STEP_S: i64 = 30;

/// `(entities, hours, workers)` cases; `KPIWATCH_BENCH_CASES=100x24x2,50x6x1` picks
/// others.
fn cases() -> Vec<(usize, i64, usize)> {
    if let Ok(list) = std::env::var("KPIWATCH_BENCH_CASES") {
        return list
            .split(',')
            .map(|c| {
                let f: Vec<&str> = c.split('x').collect();
                assert_eq!(f.len(), 3, "ENTITIESxHOURSxWORKERS");
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
    }
    if support::measuring() {
        vec![
            (100, 24, 1),
            (100, 24, 2),
            (25, 24, 2),
            (50, 24, 2),
            (100, 6, 2),
            (100, 12, 2),
        ]
    } else {
        vec![(5, 2, 2)]
    }
}

fn noise(seed: u64) -> f64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 32;
    (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Writes OpenMetrics for `entities` × [`METRICS`] gauges over `[start, end]`
/// (seconds) to `path`, streamed so that the bench's peak RSS is the backtest's.
fn write_history(path: &Path, entities: usize, start: i64, end: i64) {
    let mut om = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for m in 0..METRICS {
        writeln!(om, "# TYPE bb_m{m} gauge").unwrap();
        for e in 0..entities {
            let base = 10.0 + (m * 7 + e % 13) as f64;
            let mut t = start;
            while t <= end {
                // A daily wave, noise, and one spike per entity and day.
                let wave = (t as f64 / 86_400.0 * std::f64::consts::TAU).sin();
                let mut v = base + 2.0 * wave + noise((m * 1_000_000 + e) as u64 ^ t as u64);
                if (t / STEP_S) % 2880 == (e as i64 * 37) % 2880 {
                    v += 40.0;
                }
                writeln!(om, "bb_m{m}{{instance=\"host-{e:03}\"}} {v:.4} {t}").unwrap();
                t += STEP_S;
            }
        }
    }
    writeln!(om, "# EOF").unwrap();
    om.flush().unwrap();
}

fn config(prom: u16) -> String {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/uniad.onnx");
    let metrics: String = (0..METRICS)
        .map(|m| format!("      m{m}: 'bb_m{m}'\n"))
        .collect();
    format!(
        "prometheus:\n  url: http://127.0.0.1:{prom}\n  timeout: 60s\n  max_response_bytes: 268435456\ngroups:\n  - name: bench\n    interval: 30s\n    step: 30s\n    window: 32\n    history: 1h\n    entity_labels: [instance]\n    metrics:\n{metrics}    detectors:\n      zscore: {{}}\n      uniad:\n        model: {}\n",
        model.display()
    )
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    if !common::tools_or_skip(&["prometheus", "promtool"]) {
        return;
    }
    let max_hours = cases().iter().map(|c| c.1).max().unwrap();
    let max_entities = cases().iter().map(|c| c.0).max().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = kpiwatch::clock::now_ms() / 1000;
    let end = (now - 3600) / STEP_S * STEP_S;
    // An hour of warm-up before the longest range.
    let start = end - (max_hours + 1) * 3600;
    eprintln!(
        "backfilling {max_entities} entities × {METRICS} metrics × {} h…",
        max_hours + 1
    );
    let file = dir.path().join("history.om");
    write_history(&file, max_entities, start, end);
    common::promtool_backfill_file(dir.path(), &file);
    std::fs::write(
        dir.path().join("prometheus.yml"),
        "global: {scrape_interval: 15s}\n",
    )
    .unwrap();
    let prom = common::free_port();
    let _prometheus = common::start_prometheus(dir.path(), prom);
    common::wait_for("Prometheus ready", Duration::from_secs(120), || {
        common::http_get(prom, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    let cfg_path = dir.path().join("kpiwatch.yaml");
    std::fs::write(&cfg_path, config(prom)).unwrap();
    let mut config = kpiwatch::config::load(&cfg_path).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| entities | range | workers | cycles | wall s | waiting for Prometheus s | store, normalise, record s (all workers) | zscore s | uniad s | samples | scores | peak RSS MB |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (entities, hours, workers) in cases() {
        // Fewer entities: the query keeps the first `entities` hosts.
        for m in &mut config.groups[0].metrics {
            let name = m.name.clone();
            let hosts: Vec<String> = (0..entities).map(|e| format!("host-{e:03}")).collect();
            m.promql = format!("bb_{name}{{instance=~\"{}\"}}", hosts.join("|"));
        }
        let opts = Options {
            from_ms: (end - hours * 3600) * 1000,
            to_ms: end * 1000,
            groups: Vec::new(),
            workers,
        };
        let out = rt
            .block_on(backtest::run(
                &config,
                &opts,
                &indicatif::ProgressBar::hidden(),
            ))
            .unwrap();
        let r = &out.runs[0];
        let detect = |d: &str| out.detect.get(d).map_or(0.0, Duration::as_secs_f64);
        let normalise = r.replay.as_secs_f64() - detect("zscore") - detect("uniad");
        println!(
            "| {entities} | {hours} h | {workers} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {:.0} |",
            r.cycles,
            out.wall.as_secs_f64(),
            r.fetch_wait.as_secs_f64(),
            normalise,
            detect("zscore"),
            detect("uniad"),
            r.samples,
            out.recorder.point_count(),
            peak_rss_mb()
        );
        assert_eq!(r.entities, entities, "every entity was scored");
    }
}
