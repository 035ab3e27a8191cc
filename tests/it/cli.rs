//! The `kpiwatch` binary as users run it.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http, wait_for, Proc as Agent, BIN};
use crate::support::fake_prometheus::FakePrometheus;
use crate::support::{metric_value, write};

fn agent_config(prom: &str, port: u16, state: &Path, interval: &str) -> String {
    format!(
        "prometheus: {{url: '{prom}', timeout: 1s, retries: 0}}\nserver: {{listen: '127.0.0.1:{port}'}}\nstate_dir: '{}'\ngroups:\n  - name: node\n    interval: {interval}\n    step: 1s\n    window: 16\n    history: 1m\n    entity_labels: [instance]\n    metrics: {{load: node_load1}}\n    detectors: {{zscore: {{}}}}\n",
        state.display()
    )
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn check_config_passes_with_warnings_on_stderr() {
    let out = Command::new(BIN)
        .args([
            "check-config",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/config/warn/sharded_regressions.yaml"
            ),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.starts_with("warning: Regression checks are not split by node"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn check_config_exit_codes() {
    let ok = Command::new(BIN)
        .args([
            "check-config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/kpiwatch.example.yaml"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let bad = Command::new(BIN)
        .args([
            "check-config",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/config/bad/bad_values.yaml"
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let out = String::from_utf8_lossy(&bad.stdout);
    assert!(
        out.lines().count() >= 10,
        "every error, one per line:\n{out}"
    );
    assert!(
        out.contains("bad_values.yaml: groups[0].interval: \"30x\" is not a duration"),
        "{out}"
    );
    let missing = Command::new(BIN)
        .args(["check-config", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn run_refuses_a_bad_config_before_binding() {
    let out = Command::new(BIN)
        .args([
            "run",
            "--config",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/config/bad/misspelt_key.yaml"
            ),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "misspelt_key.yaml: groups[0].intervall: unknown field `intervall`, expected one of"
        ),
        "{err}"
    );
}

#[test]
fn version_and_help() {
    let v = Command::new(BIN).arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout)
        .starts_with(concat!("kpiwatch ", env!("CARGO_PKG_VERSION"))));
    let h = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&h.stdout);
    for word in [
        "run",
        "check-config",
        "version",
        "--log-format",
        "anomaly_score",
    ] {
        assert!(help.contains(word), "--help mentions {word}");
    }
}

#[test]
fn serves_scores_reloads_and_saves_state_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakePrometheus::start(&["n1", "n2"]));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let state = dir.path().join("state");
    let cfg = write(
        dir.path(),
        "k.yaml",
        &agent_config(&fake.url(), port, &state, "1s"),
    );
    let child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent = Agent(child);

    wait_for("readiness", Duration::from_secs(30), || {
        http(port, "GET", "/-/ready", None).is_some_and(|(s, _)| s == 200)
    });
    let (_, metrics) = http(port, "GET", "/metrics", None).unwrap();
    assert!(
        metrics.contains(r#"kpiwatch_anomaly_score{group="node",instance="n1",detector="zscore"}"#),
        "{metrics}"
    );
    assert!(metric_value(&metrics, "kpiwatch_build_info{").is_some());

    // A broken config is rejected; the old one keeps running.
    write(
        dir.path(),
        "k.yaml",
        "prometheus: {url: 'http://x'}\ngroups: []\nbogus: 1\n",
    );
    let (status, body) = http(port, "POST", "/-/reload", None).unwrap();
    assert_eq!(status, 500);
    assert!(body.contains("bogus"), "{body}");
    let (_, metrics) = http(port, "GET", "/metrics", None).unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            r#"kpiwatch_config_reloads_total{result="failure"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "kpiwatch_config_last_reload_successful"),
        Some(0.0)
    );
    assert!(metrics.contains("instance=\"n1\""));

    // SIGHUP with a good config applies it. The group is renamed: the old name's
    // per-group self-metrics must leave /metrics (a stale last-success timestamp
    // would fire KpiwatchCycleStale for a group that no longer exists).
    write(
        dir.path(),
        "k.yaml",
        &agent_config(&fake.url(), port, &state, "2s").replace("name: node", "name: node2"),
    );
    signal(&agent.0, "-HUP");
    wait_for("reload success", Duration::from_secs(10), || {
        http(port, "GET", "/metrics", None).is_some_and(|(_, m)| {
            metric_value(&m, r#"kpiwatch_config_reloads_total{result="success"}"#) == Some(1.0)
        })
    });
    wait_for(
        "the renamed group's first cycle",
        Duration::from_secs(10),
        || {
            http(port, "GET", "/metrics", None).is_some_and(|(_, m)| {
                m.contains(r#"kpiwatch_last_successful_cycle_timestamp_seconds{group="node2"}"#)
            })
        },
    );
    let (_, metrics) = http(port, "GET", "/metrics", None).unwrap();
    for gone in [
        r#"kpiwatch_last_successful_cycle_timestamp_seconds{group="node"}"#,
        r#"kpiwatch_entities{group="node"}"#,
        r#"group="node","#,
    ] {
        assert!(!metrics.contains(gone), "{gone} left over:\n{metrics}");
    }

    signal(&agent.0, "-TERM");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "agent did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let saved = std::fs::read_to_string(state.join("state.json")).unwrap();
    assert!(saved.starts_with("{\"format\":\"kpiwatch-state\""));
    assert!(saved.contains("\"node2\""));
    let mut log = String::new();
    agent
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.lines().all(|l| l.starts_with('{')), "json logs:\n{log}");
    assert!(log.contains("Config reload rejected"));
}

#[test]
fn keeps_serving_while_prometheus_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = write(
        dir.path(),
        "k.yaml",
        &agent_config(&dead, port, &dir.path().join("s"), "1s"),
    );
    let _agent = Agent(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("errors counted", Duration::from_secs(20), || {
        http(port, "GET", "/metrics", None).is_some_and(|(_, m)| {
            metric_value(&m, r#"kpiwatch_query_errors_total{cause="connect"}"#)
                .is_some_and(|v| v >= 2.0)
        })
    });
    // Every query failed (no retries configured): the failure ratio the
    // KpiwatchQueryErrors alert computes, errors / queries, is 1. Both counters move
    // together, so a scrape sees at most one query not yet counted as failed.
    let (_, m) = http(port, "GET", "/metrics", None).unwrap();
    let errors = metric_value(&m, r#"kpiwatch_query_errors_total{cause="connect"}"#).unwrap();
    let queries = metric_value(&m, r#"kpiwatch_queries_total{endpoint="query_range"}"#).unwrap();
    assert!(
        queries >= errors && queries <= errors + 1.0,
        "{queries} queries, {errors} errors"
    );
    assert_eq!(http(port, "GET", "/-/healthy", None).unwrap().0, 200);
    assert_eq!(
        http(port, "GET", "/-/ready", None).unwrap().0,
        503,
        "never ready without a good cycle"
    );
}

#[test]
fn detect_uniad_scores_a_csv_with_the_plain_eq7_unless_asked_to_scale() {
    // A committed lab recording: 11 metrics, a fault in the error ratio, labels.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = root.join("tests/data/lab/anomaly/errors/home.csv");
    let model = root.join("models/uniad.onnx");
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["detect", "uniad", "--input"])
            .arg(&input)
            .arg("--model")
            .arg(&model)
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (stdout, stderr)
    };
    // The raw score column of every scored row.
    let raw = |stdout: &str| -> Vec<f64> {
        let mut lines = stdout.lines();
        assert_eq!(
            lines.next(),
            Some("timestamp,score,raw,threshold,flag,top_metric")
        );
        lines
            .filter_map(|l| l.split(',').nth(2).and_then(|v| v.parse().ok()))
            .collect()
    };
    let (plain, plain_err) = run(&[]);
    let (scaled, scaled_err) = run(&["--scale-errors"]);
    let rows = std::fs::read_to_string(&input).unwrap().lines().count() - 1;
    assert_eq!(
        plain.lines().count(),
        rows + 1,
        "one output row per input row"
    );
    for err in [&plain_err, &scaled_err] {
        assert!(err.contains("11 metrics"), "{err}");
        assert!(
            err.contains("raw score: pr_auc"),
            "labels give a summary: {err}"
        );
    }
    let (plain, scaled) = (raw(&plain), raw(&scaled));
    assert_eq!(plain.len(), rows - 63, "scored from the 64th row on");
    assert_eq!(plain.len(), scaled.len());
    assert!(
        plain
            .iter()
            .zip(&scaled)
            .any(|(p, s)| (p - s).abs() > 1e-6 * p.abs()),
        "--scale-errors changes the raw score"
    );
}

#[test]
fn detect_graph_judges_every_fault_window_of_a_mesh_recording() {
    // The training recording of the shop: eight fault windows (docs/lab.md).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let out = Command::new(BIN)
        .args(["detect", "graph", "--direction", "up", "--json"])
        .arg(&json)
        .arg(root.join("tests/data/lab-mesh/s31"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One line per incident, naming its root cause and where it landed.
    let incidents: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("mesh-shop s31 "))
        .collect();
    assert_eq!(incidents.len(), 8, "{stdout}");
    assert!(
        incidents[0].contains("database-slow (root database, leaf)"),
        "{}",
        incidents[0]
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(summary["incidents"], 8);
    for who in [
        "frontier",
        "random_walk",
        "highest_score",
        "random",
        "root_anomalous",
    ] {
        let acc = &summary["accuracy"][format!("{who}/all/+0")];
        let (top1, top3) = (acc["top1"].as_f64().unwrap(), acc["top3"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&top1) && top1 <= top3, "{who}: {acc}");
    }
    // No ranking beats the share of incidents whose root the detector flags at all.
    let ceiling = summary["accuracy"]["root_anomalous/all/+0"]["top1"]
        .as_f64()
        .unwrap();
    let frontier = summary["accuracy"]["frontier/all/+0"]["top1"]
        .as_f64()
        .unwrap();
    assert!(frontier <= ceiling, "{frontier} > {ceiling}");
    // A wrong method is refused with what is expected.
    let bad = Command::new(BIN)
        .args(["detect", "graph", "--method", "pagerank"])
        .arg(root.join("tests/data/lab-mesh/s31"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("frontier, random_walk or highest_score"));
}
