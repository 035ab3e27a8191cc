//! `kpiwatch backtest` against a real Prometheus holding backfilled history
//! (`promtool tsdb create-blocks-from openmetrics`): four nodes, three metrics, two
//! known incidents.
//!
//! * the z-score alerts are the two incidents and nothing else; the command writes the documented CSVs and
//!   a report that renders in headless Chromium;
//! * the agent's live cycle (`GroupRunner::run_cycle`, one `query_range` per metric and
//!   cycle) and the backtest's replay publish the same scores at the same timestamps;
//! * bad ranges are usage errors (exit 2).
//!
//! Needs `prometheus`, `promtool` and `chromium` on PATH (`scripts/install-deps.sh`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{free_port, http_get, start_prometheus, wait_for, Proc, BIN};
use kpiwatch::backtest::{self, Options};
use kpiwatch::cycle::{CycleContext, GroupRunner};
use kpiwatch::reader::Client;
use kpiwatch::store::ShardFilter;
use kpiwatch::telemetry::{SelfMetrics, Telemetry};

const STEP_S: i64 = 30;
/// History length: 5 hours of points.
const POINTS: i64 = 600;
const NODES: usize = 4;

/// The backfilled range and the incidents in it, in Unix seconds.
struct Timeline {
    start: i64,
    /// node-1's CPU jumps by 12 σ for 20 minutes.
    cpu_incident: (i64, i64),
    /// node-3's latency doubles (20 σ) for 20 minutes.
    latency_incident: (i64, i64),
}

impl Timeline {
    fn new(now: i64) -> Self {
        // Ends an hour before now, on a step; every block is older than the head.
        let end = (now - 3600) / STEP_S * STEP_S;
        let start = end - (POINTS - 1) * STEP_S;
        Timeline {
            start,
            cpu_incident: (start + 3 * 3600, start + 3 * 3600 + 1200),
            latency_incident: (start + 4 * 3600, start + 4 * 3600 + 1200),
        }
    }

    fn end(&self) -> i64 {
        self.start + (POINTS - 1) * STEP_S
    }
}

/// Deterministic noise in [-1, 1].
fn noise(seed: u64) -> f64 {
    let mut x = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(0x632b_e59b_d9b4_e019);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    (x >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

fn history(tl: &Timeline) -> String {
    let mut om = String::new();
    let families: [(&str, f64, f64); 3] = [
        ("bt_cpu", 50.0, 2.0),
        ("bt_mem", 30.0, 1.0),
        ("bt_latency", 0.1, 0.005),
    ];
    for (f, (name, base, sigma)) in families.iter().enumerate() {
        om.push_str(&format!("# TYPE {name} gauge\n"));
        for node in 0..NODES {
            for k in 0..POINTS {
                let t = tl.start + k * STEP_S;
                let mut v = base + sigma * noise((f * 1_000_000 + node * 10_000) as u64 + k as u64);
                let inside = |(a, b): (i64, i64)| (a..b).contains(&t);
                if f == 0 && node == 1 && inside(tl.cpu_incident) {
                    v += 12.0 * sigma;
                }
                if f == 2 && node == 3 && inside(tl.latency_incident) {
                    v += 20.0 * sigma;
                }
                om.push_str(&format!(
                    "{name}{{instance=\"node-{node}\",job=\"node\"}} {v} {t}\n"
                ));
            }
        }
    }
    om.push_str("# EOF\n");
    om
}

fn config(prom: u16) -> String {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/uniad.onnx");
    format!(
        r#"prometheus:
  url: http://127.0.0.1:{prom}
groups:
  - name: nodes
    interval: 30s
    step: 30s
    window: 32
    history: 1h
    entity_labels: [instance]
    expire_after: 10m
    metrics:
      cpu: 'bt_cpu'
      mem: 'bt_mem'
      latency: 'bt_latency'
    detectors:
      zscore:
        threshold: 6.0
      uniad:
        model: {}
"#,
        model.display()
    )
}

struct Stack {
    dir: tempfile::TempDir,
    tl: Timeline,
    _prometheus: Proc,
}

fn start() -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let prom = free_port();
    let now = kpiwatch::clock::now_ms() / 1000;
    let tl = Timeline::new(now);
    common::promtool_backfill(dir.path(), &history(&tl));
    std::fs::write(
        dir.path().join("prometheus.yml"),
        "global: {scrape_interval: 15s}\n",
    )
    .unwrap();
    let prometheus = start_prometheus(dir.path(), prom);
    wait_for("Prometheus ready", Duration::from_secs(60), || {
        http_get(prom, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    std::fs::write(dir.path().join("kpiwatch.yaml"), config(prom)).unwrap();
    let incidents = format!(
        "instance,start,end\nnode-1,{},{}\nnode-3,{},{}\n",
        tl.cpu_incident.0, tl.cpu_incident.1, tl.latency_incident.0, tl.latency_incident.1
    );
    std::fs::write(dir.path().join("incidents.csv"), incidents).unwrap();
    Stack {
        dir,
        tl,
        _prometheus: prometheus,
    }
}

fn backtest(stack: &Stack, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("backtest")
        .arg("--config")
        .arg(stack.dir.path().join("kpiwatch.yaml"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn backtest_finds_the_known_incidents_and_its_scores_equal_the_live_cycles() {
    if !common::tools_or_skip(&["prometheus", "promtool", "chromium"]) {
        return;
    }
    let stack = start();
    let (from, to) = (stack.tl.start + 3600, stack.tl.end());
    let out_dir = stack.dir.path().join("out");
    let labels = stack.dir.path().join("incidents.csv");
    let out = backtest(
        &stack,
        &[
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--labels",
            labels.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("cycles ("),
        "a progress bar drawn on a pipe: {stderr}"
    );
    println!("{stdout}");

    // The z-score alerts are the two incidents, on the right nodes, inside their windows.
    let alerts = std::fs::read_to_string(out_dir.join("alerts.csv")).unwrap();
    println!("{alerts}");
    let mut lines = alerts.lines();
    assert_eq!(
        lines.next(),
        Some("rule,severity,group,entity,detector,pending,start,end,duration_s,peak_score,top_metric")
    );
    let zscore: Vec<&str> = lines
        .filter(|l| l.starts_with("KpiwatchZscoreAnomaly,"))
        .collect();
    assert_eq!(zscore.len(), 2, "{alerts}");
    for (line, node, metric, (a, b)) in [
        (zscore[0], "node-1", "cpu", stack.tl.cpu_incident),
        (zscore[1], "node-3", "latency", stack.tl.latency_incident),
    ] {
        assert!(line.contains(&format!("instance=\"\"{node}\"\"")), "{line}");
        assert!(line.ends_with(&format!(",{metric}")), "{line}");
        let start = line.split(',').nth(6).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339(start)
            .unwrap()
            .timestamp();
        // `for: 10m` after the incident began, resolved within a step of its end.
        assert_eq!(start, a + 600, "{line}");
        assert!(
            line.split(',').nth(7).is_some_and(|e| !e.is_empty()),
            "{line}"
        );
        assert!(start < b);
    }
    let labelled = stdout
        .split("Against the labelled incidents:")
        .nth(1)
        .unwrap_or_else(|| panic!("no incident table:\n{stdout}"));
    let zrow = labelled
        .lines()
        .find(|l| l.trim_start().starts_with("zscore "))
        .unwrap_or_else(|| panic!("no zscore row:\n{stdout}"));
    let cells: Vec<&str> = zrow.split_whitespace().collect();
    assert_eq!(
        &cells[1..5],
        ["2", "2", "2", "0"],
        "incidents, caught, alerts, false: {zrow}"
    );

    // scores.csv: one row per detector, entity and cycle from --from on.
    let scores = std::fs::read_to_string(out_dir.join("scores.csv")).unwrap();
    let cycles = ((to - from) / STEP_S + 1) as usize;
    let zrows = scores.lines().filter(|l| l.contains(",zscore,")).count();
    assert_eq!(zrows, cycles * NODES);

    // The report: self-contained, one section per node, drawn by a real browser.
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    let dom = common::chromium(
        stack.dir.path(),
        &[
            "--dump-dom".into(),
            format!("file://{}", out_dir.join("report.html").display()),
        ],
    );
    assert_eq!(
        dom.matches("<section class=\"entity\"").count(),
        NODES,
        "{dom}"
    );
    let first = dom.find("<section class=\"entity\"").unwrap();
    assert!(
        dom[first..first + 80].contains("data-alerts=\""),
        "{}",
        &dom[first..first + 80]
    );
    assert!(
        dom[first..].find("node-1").unwrap() < dom[first..].find("node-0").unwrap(),
        "most alerts first"
    );
    let shot = stack.dir.path().join("report.png");
    common::chromium(
        stack.dir.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,900".to_string(),
            format!("file://{}", out_dir.join("report.html").display()),
        ],
    );
    let (blue, distinct, size) = common::colours(&shot, [0x2a, 0x7a, 0xb8]);
    assert_eq!(size, (1000, 900));
    assert!(distinct > 50, "{distinct} colours: a blank or broken page");
    assert!(blue > 200, "only {blue} pixels of metric blue");
    if let Some(keep) = std::env::var_os("KPIWATCH_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    threshold_sweep_prints_one_row_per_value(&stack, from, to);
    live_cycles_publish_what_the_backtest_recorded(&stack, from * 1000, (from + 1800) * 1000);
}

/// `--set KEY=V1,V2` runs once per value: a z-score threshold above the incidents'
/// |z| silences them.
fn threshold_sweep_prints_one_row_per_value(stack: &Stack, from: i64, to: i64) {
    let sweep_dir = stack.dir.path().join("sweep");
    let labels = stack.dir.path().join("incidents.csv");
    let out = backtest(
        stack,
        &[
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
            "--group",
            "nodes",
            "--set",
            "groups[nodes].detectors.zscore.threshold=6,1000",
            "--labels",
            labels.to_str().unwrap(),
            "--out",
            sweep_dir.to_str().unwrap(),
            "--quiet",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |value: &str| {
        let prefix = format!("groups[nodes].detectors.zscore.threshold={value} ");
        stdout
            .lines()
            .find(|l| l.starts_with(&prefix) && l.contains(" zscore "))
            .unwrap_or_else(|| panic!("no zscore row for {value}:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // setting, detector, alerts, per day, caught, …
    assert_eq!(
        (row("6")[2].as_str(), row("6")[4].as_str()),
        ("2", "2/2"),
        "{stdout}"
    );
    assert_eq!(
        (row("1000")[2].as_str(), row("1000")[4].as_str()),
        ("0", "0/2"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(sweep_dir.join("sweep.csv")).unwrap();
    assert!(
        csv.starts_with("setting,detector,alerts,alerts_per_day,incidents,caught,"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().filter(|l| l.contains(",zscore,")).count(),
        2,
        "{csv}"
    );
}

/// Runs the agent's own cycle (a `query_range` per metric and cycle) at each cycle time
/// of `[from_ms, to_ms]` and compares every published score with the backtest's.
fn live_cycles_publish_what_the_backtest_recorded(stack: &Stack, from_ms: i64, to_ms: i64) {
    let config = kpiwatch::config::load(&stack.dir.path().join("kpiwatch.yaml")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Three workers split the four nodes by hash: the split must not change a score.
    let opts = Options {
        from_ms,
        to_ms,
        groups: Vec::new(),
        workers: 3,
    };
    let outcome = rt
        .block_on(backtest::run(
            &config,
            &opts,
            &indicatif::ProgressBar::hidden(),
        ))
        .unwrap();

    let registry = prometheus::Registry::new();
    let telemetry = Telemetry::new(SelfMetrics::new(&registry).unwrap());
    let ctx = CycleContext::new(
        Client::new(&config.prometheus, telemetry.clone()).unwrap(),
        telemetry,
    );
    let group = &config.groups[0];
    let detectors = kpiwatch::app::build_detectors(&group.detectors).unwrap();
    let mut runner = GroupRunner::new(group.clone(), ShardFilter(config.shard.clone()), detectors);
    let mut compared: BTreeMap<&str, usize> = BTreeMap::new();
    for t in backtest::cycle_times(from_ms, to_ms, group.interval) {
        let (r, result) = rt.block_on(runner.run_cycle(&ctx, t));
        runner = r;
        assert_eq!(result, kpiwatch::cycle::CycleResult::Ok);
        let mut text = String::new();
        ctx.scores.render(&mut text);
        for ((_, key), entity) in &outcome.recorder.entities {
            for (detector, points) in &entity.scores {
                let Some(p) = points.iter().find(|p| p.ts_ms == t) else {
                    continue;
                };
                let prefix = format!(
                    "kpiwatch_anomaly_score{{group=\"nodes\",{key},detector=\"{detector}\"}} "
                );
                let live: f64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix))
                    .unwrap_or_else(|| panic!("no live {prefix} at {t}"))
                    .trim()
                    .parse()
                    .unwrap();
                assert!(
                    live == p.score || (live - p.score).abs() <= 1e-12 * p.score.abs().max(1.0),
                    "{key} {detector} at {t}: live {live}, backtest {}",
                    p.score
                );
                *compared.entry(detector).or_default() += 1;
            }
        }
    }
    let cycles = backtest::cycle_times(from_ms, to_ms, group.interval).len();
    assert_eq!(
        compared.get("zscore"),
        Some(&(cycles * NODES)),
        "{compared:?}"
    );
    assert_eq!(
        compared.get("uniad"),
        Some(&(cycles * NODES)),
        "{compared:?}"
    );
}

#[test]
fn bad_ranges_are_usage_errors_that_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kpiwatch.yaml");
    std::fs::write(&cfg, config(free_port())).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("backtest")
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["--from", "now-1h", "--to", "now-2h"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is before --from"), "{err}");
    let (code, err) = run(&["--from", "now-1h", "--to", "2999-01-01T00:00:00Z"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("in the future"), "{err}");
    let (code, err) = run(&["--from", "last tuesday"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--from") && err.contains("RFC 3339"), "{err}");
    let (code, err) = run(&["--from", "now-1h", "--group", "nope"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("\"nope\"") && err.contains("groups: nodes"),
        "{err}"
    );
    // Nothing listens on the configured port: a Prometheus failure, exit 1.
    let (code, err) = run(&["--from", "now-10m", "--quiet"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("group \"nodes\""), "{err}");
}
