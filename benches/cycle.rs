//! Cycle cost at scale: 1,000 entities × 8 metrics, window 64, served by the fake
//! Prometheus running in a *separate process* (this binary re-executed), so that the
//! CPU time and peak RSS measured here are the agent's alone.
//!
//! Run: `cargo bench --bench cycle` (release profile). Prints, for the group without and
//! with a seasonal baseline (`seasonality: [1d]`, each variant in its own process so
//! that peak RSS is its own), the warm-up cycle and the mean/max of 20 steady-state
//! cycles: wall time, process CPU time, peak RSS, samples fetched, and the seasonal
//! state per series; then the score board's `/metrics` exposition, plain and gzip
//! (size and render time, as a scrape with and without `Accept-Encoding: gzip` gets it).
//!
//! `KPIWATCH_BENCH_PRESET=node` measures the node preset's settings instead (history 6 h
//! at 15 s = 1,440 points per series, z-score + Uni-AD, no seasonality), for the
//! sizing figures: `KPIWATCH_BENCH_PRESET=node KPIWATCH_BENCH_ENTITIES=10000 cargo bench
//! --bench cycle`. It also prints RSS after the steady cycles (the steady footprint,
//! beside the peak). `KPIWATCH_BENCH_CYCLES=N` runs N steady cycles instead of 20.

mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../tests/it/support/fake_prometheus.rs"]
mod fake_prometheus;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kpiwatch::app::build_detectors;
use kpiwatch::cycle::{CycleContext, CycleResult, GroupRunner};
use kpiwatch::export::ScoreBoard;
use kpiwatch::reader::Client;
use kpiwatch::store::ShardFilter;
use kpiwatch::telemetry::{SelfMetrics, Telemetry};

const METRICS: usize = 8;

/// Entities served and scored: 1,000 when measuring, 20 in the CI smoke run. The fake
/// Prometheus (a child process) learns the count from `KPIWATCH_BENCH_ENTITIES`.
fn entities() -> usize {
    match std::env::var("KPIWATCH_BENCH_ENTITIES") {
        Ok(n) => n.parse().expect("KPIWATCH_BENCH_ENTITIES is a count"),
        Err(_) if support::measuring() => 1000,
        Err(_) => 20,
    }
}

/// Steady cycles measured after the warm-up.
/// Steady cycles measured: 20, or `KPIWATCH_BENCH_CYCLES` (150 measures past Uni-AD's
/// threshold calibration, 128 scores, when its peak buffers are made).
fn cycles() -> i64 {
    match std::env::var("KPIWATCH_BENCH_CYCLES") {
        Ok(n) => n.parse().expect("KPIWATCH_BENCH_CYCLES is a count"),
        Err(_) if support::measuring() => 20,
        Err(_) => 2,
    }
}

fn serve_fake() -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let names: Vec<String> = (0..entities()).map(|i| format!("host-{i:04}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let fake = fake_prometheus::FakePrometheus::start(&refs).await;
        fake.with(|s| {
            s.value = |inst, ts| {
                let h = inst
                    .bytes()
                    .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
                ((ts / 15_000) as u64 ^ h) as f64 % 97.0
            }
        });
        println!("{}", fake.addr.port());
        std::future::pending::<()>().await;
    });
    std::process::exit(0)
}

/// (user + system CPU seconds, peak RSS bytes) of this process, from /proc.
fn usage() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm_kb * 1024)
}

/// The variants measured, each as the extra group keys it adds.
const VARIANTS: [(&str, &str); 2] = [
    ("no seasonality", ""),
    ("seasonality [1d]", "    seasonality: [1d]\n"),
];

/// Whether the node preset's settings are measured (`KPIWATCH_BENCH_PRESET=node`).
fn node_preset() -> bool {
    std::env::var("KPIWATCH_BENCH_PRESET").is_ok_and(|p| p == "node")
}

/// The variants this run measures: the node preset has no seasonality.
fn variants() -> &'static [(&'static str, &'static str)] {
    if node_preset() {
        &VARIANTS[..1]
    } else {
        &VARIANTS
    }
}

/// Group keys beyond the variant's: history and detectors.
fn group_keys() -> String {
    if node_preset() {
        format!(
            "    history: 6h\n    detectors: {{zscore: {{threshold: 4.0}}, uniad: {{model: '{}/models/uniad.onnx'}}}}\n",
            env!("CARGO_MANIFEST_DIR")
        )
    } else {
        "    detectors: {zscore: {}}\n".to_string()
    }
}

/// Resident set size now, bytes.
fn rss_now() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// Renders the score board as the agent's `/metrics` does (plain or gzip), five times:
/// (body bytes, median milliseconds).
fn scrape(scores: &ScoreBoard, gzip: bool) -> (usize, f64) {
    use hyper::body::Body as _;
    let registry = prometheus::Registry::new();
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let r = kpiwatch::export::http::exposition(
            &registry,
            |out, drain| scores.render_chunked(out, drain),
            gzip,
        );
        times.push(start.elapsed().as_secs_f64() * 1e3);
        bytes = r.body().size_hint().exact().unwrap_or(0) as usize;
    }
    times.sort_by(f64::total_cmp);
    (bytes, times[2])
}

fn main() {
    if std::env::var_os("KPIWATCH_BENCH_FAKE").is_some() {
        serve_fake();
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to list.
    }
    match std::env::var("KPIWATCH_BENCH_VARIANT") {
        Ok(v) => measure(v.parse().expect("variant index")),
        Err(_) => {
            for (i, (name, _)) in variants().iter().enumerate() {
                // The same arguments: `--bench` is what makes a run measure (support.rs).
                let status = Command::new(std::env::current_exe().unwrap())
                    .args(std::env::args().skip(1))
                    .env("KPIWATCH_BENCH_VARIANT", i.to_string())
                    .status()
                    .unwrap();
                assert!(status.success(), "variant {name} failed");
            }
        }
    }
}

fn measure(variant: usize) {
    let (variant_name, extra_keys) = VARIANTS[variant];
    println!("== {variant_name}");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("KPIWATCH_BENCH_FAKE", "1")
        .env("KPIWATCH_BENCH_ENTITIES", entities().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("fake Prometheus port");

    let metrics: String = (0..METRICS)
        .map(|i| format!("      m{i}: q{i}\n"))
        .collect();
    let yaml = format!(
        "prometheus: {{url: 'http://127.0.0.1:{port}', timeout: 60s, max_concurrency: 8, max_response_bytes: 536870912}}\ngroups:\n  - name: bench\n    interval: 30s\n    step: 15s\n    window: 64\n    entity_labels: [instance]\n{extra_keys}    metrics:\n{metrics}{}",
        group_keys()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.yaml");
    std::fs::write(&path, yaml).unwrap();
    let cfg = kpiwatch::config::load(&path).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = prometheus::Registry::new();
    let telemetry = Telemetry::new(SelfMetrics::new(&registry).unwrap());
    let ctx = CycleContext::new(
        Client::new(&cfg.prometheus, telemetry.clone()).unwrap(),
        telemetry,
    );
    let g = cfg.groups[0].clone();
    let mut runner = GroupRunner::new(
        g.clone(),
        ShardFilter(cfg.shard.clone()),
        build_detectors(&g.detectors).unwrap(),
    );
    let t0 = 1_700_000_000_000i64;

    let (cpu0, _) = usage();
    let start = Instant::now();
    let (r, result) = rt.block_on(runner.run_cycle(&ctx, t0));
    runner = r;
    assert_eq!(result, CycleResult::Ok);
    let (cpu1, warm_peak_rss) = usage();
    let counter = |prefix: &str| {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with(prefix))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let samples = || counter("kpiwatch_samples_fetched_total ");
    let queries = || counter("kpiwatch_queries_total{endpoint=\"query_range\"} ");
    let (warm_samples, warm_queries) = (samples(), queries());
    let warm_rss = rss_now();
    let seasonal_bytes: usize = runner
        .store()
        .seasonal_state()
        .values()
        .flat_map(|m| m.values())
        .map(|b| b.state_bytes())
        .sum();
    println!(
        "warm-up cycle (history {} points/series): wall {:.3} s, cpu {:.2} s, peak RSS {:.1} MB, RSS after it {:.1} MB, entities {}, series {}, samples fetched {warm_samples} in {warm_queries} queries, seasonal state {:.0} bytes/series",
        g.history_points,
        start.elapsed().as_secs_f64(),
        cpu1 - cpu0,
        warm_peak_rss as f64 / 1e6,
        warm_rss as f64 / 1e6,
        runner.store().entity_count(),
        runner.store().series_count(),
        seasonal_bytes as f64 / runner.store().series_count().max(1) as f64,
    );

    let mut walls = Vec::new();
    let cpu_start = usage().0;
    for i in 1..=cycles() {
        let start = Instant::now();
        let (r, result) = rt.block_on(runner.run_cycle(&ctx, t0 + i * 30_000));
        runner = r;
        assert_eq!(result, CycleResult::Ok);
        walls.push(start.elapsed());
    }
    let cpu = (usage().0 - cpu_start) / cycles() as f64;
    let mean = walls.iter().sum::<Duration>().as_secs_f64() / walls.len() as f64;
    let max = walls.iter().max().unwrap().as_secs_f64();
    let (_, peak_rss) = usage();
    let steady_rss = rss_now();
    // gzip first (Prometheus asks for it): the peak after it is what a scraped agent
    // reaches; a plain scrape builds the whole text and is measured after.
    let (zipped, zipped_ms) = scrape(&ctx.scores, true);
    let (_, peak_with_scrapes) = usage();
    let (plain, plain_ms) = scrape(&ctx.scores, false);
    println!(
        "steady cycle ({} entities x {METRICS} metrics, 2 new points/series): wall mean {mean:.3} s max {max:.3} s, cpu {cpu:.3} s/cycle, peak RSS {:.1} MB, RSS after the steady cycles {:.1} MB, samples fetched per cycle {:.0} in {:.0} queries",
        entities(),
        peak_rss as f64 / 1e6,
        steady_rss as f64 / 1e6,
        (samples() - warm_samples) / cycles() as f64,
        (queries() - warm_queries) / cycles() as f64,
    );
    println!(
        "/metrics scores: {} KB rendered in {plain_ms:.1} ms; gzip {} KB ({:.1}x smaller) in {zipped_ms:.1} ms (render + compress, median of 5); peak RSS after the gzip scrapes {:.1} MB",
        plain / 1024,
        zipped / 1024,
        plain as f64 / zipped.max(1) as f64,
        peak_with_scrapes as f64 / 1e6,
    );
    let _ = child.kill();
    let _ = child.wait();
}
