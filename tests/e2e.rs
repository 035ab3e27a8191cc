//! End to end on real parts: Debian's Prometheus and node_exporter on loopback, and the
//! `kpiwatch` binary with the node-exporter preset. The loop is closed: Prometheus
//! scrapes kpiwatch, and the test asserts through Prometheus's own query API. A second
//! node appears after start and must get Uni-AD scores within one window.
//!
//! A second test closes the same loop through VictoriaMetrics (single node, Debian's
//! `victoria-metrics`, scraping with its own `-promscrape.config`) at its defaults.
//!
//! Needs `prometheus`, `promtool`, `prometheus-node-exporter` and `victoria-metrics` on
//! PATH (`scripts/install-deps.sh`). Without them the tests are skipped locally and fail
//! in CI (`CI` set).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http_get, metric, query, start_prometheus, wait_for, Proc, BIN};

#[test]
fn scores_reach_prometheus_survive_an_outage_and_pass_promtool() {
    if !common::tools_or_skip(&["prometheus", "promtool", "prometheus-node-exporter"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (prom, node, agent) = (free_port(), free_port(), free_port());
    // A second node that appears only after kpiwatch is running (its target is down
    // until then): Uni-AD must score it within one window, with no training step.
    let late_node = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{node}', '127.0.0.1:{late_node}']}}]\n  - job_name: kpiwatch\n    honor_labels: true\n    static_configs: [{{targets: ['127.0.0.1:{agent}']}}]\n"
        ),
    )
    .unwrap();
    let _node = start_node_exporter(node);
    let mut prometheus = start_prometheus(dir.path(), prom);
    let _agent = start_node_preset_agent(prom, agent, dir.path());
    let instance = format!("127.0.0.1:{node}");

    // 1. The loop is closed: Prometheus has kpiwatch's score for the node.
    wait_for(
        "kpiwatch_anomaly_score for the node in Prometheus",
        Duration::from_secs(120),
        || {
            query(
                prom,
                "kpiwatch_anomaly_score{detector=\"zscore\",group=\"node\"}",
            )
            .iter()
            .any(|s| s["metric"]["instance"] == instance.as_str())
        },
    );
    // The flag-rate counters reach Prometheus too, per entity and detector, and the
    // ratio the "Noisiest entities" panel draws is computable (scored > 0).
    wait_for(
        "kpiwatch_flags_total and kpiwatch_scores_total for the node",
        Duration::from_secs(60),
        || {
            let ratio = query(
                prom,
                "kpiwatch_flags_total{detector=\"zscore\",group=\"node\"} / kpiwatch_scores_total",
            );
            ratio
                .iter()
                .any(|s| s["metric"]["instance"] == instance.as_str())
        },
    );
    let contributions = query(prom, "kpiwatch_zscore_value");
    let _late = new_entity_gets_uniad_scores_within_one_window(prom, late_node);
    assert!(
        contributions.len() >= 5,
        "per-metric values for most preset metrics: {contributions:?}"
    );

    // 2. promtool accepts kpiwatch's exposition.
    let (_, metrics) = http_get(agent, "/metrics").unwrap();
    common::assert_promtool_accepts(&metrics);
    // Every family the running agent exports is in the README's list (which
    // tests/it/docs.rs ties to deploy_lint.py and the source).
    let documented = common::readme_metrics();
    let exported: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("kpiwatch_"))
        .collect();
    assert!(exported.len() >= 10, "{exported:?}");
    for name in exported {
        assert!(
            documented.contains(name),
            "{name} is exported but not in the README's metric list"
        );
    }

    // 3. Prometheus stops for 60 s: kpiwatch keeps serving and counts errors by cause.
    let ok_before = metric(
        &metrics,
        r#"kpiwatch_cycles_total{group="node",result="ok"}"#,
    )
    .unwrap();
    let _ = prometheus.0.kill();
    let _ = prometheus.0.wait();
    let outage = Instant::now();
    wait_for(
        "connect errors counted during the outage",
        Duration::from_secs(30),
        || {
            http_get(agent, "/metrics").is_some_and(|(_, m)| {
                metric(&m, r#"kpiwatch_query_errors_total{cause="connect"}"#)
                    .is_some_and(|v| v >= 2.0)
            })
        },
    );
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    let (status, during) =
        http_get(agent, "/metrics").expect("kpiwatch still serving during the outage");
    assert_eq!(status, 200);
    // Both nodes (the first and the late one) are stale: no data while Prometheus is down.
    assert_eq!(
        metric(&during, r#"kpiwatch_entities_stale{group="node"}"#),
        Some(2.0)
    );
    assert!(
        metric(
            &during,
            r#"kpiwatch_cycles_total{group="node",result="error"}"#
        )
        .unwrap()
            >= 10.0
    );
    assert_eq!(http_get(agent, "/-/healthy").unwrap().0, 200);

    // 4. Full recovery after restart.
    prometheus = start_prometheus(dir.path(), prom);
    wait_for(
        "a good cycle after the restart",
        Duration::from_secs(60),
        || {
            http_get(agent, "/metrics").is_some_and(|(_, m)| {
                metric(&m, r#"kpiwatch_cycles_total{group="node",result="ok"}"#)
                    .is_some_and(|v| v > ok_before + 2.0)
                    && metric(&m, r#"kpiwatch_entities_stale{group="node"}"#) == Some(0.0)
            })
        },
    );
    wait_for(
        "scores in Prometheus again",
        Duration::from_secs(60),
        || {
            !query(prom, "kpiwatch_anomaly_score{detector=\"zscore\"} and on() (time() - timestamp(kpiwatch_anomaly_score{detector=\"zscore\"}) < 5)").is_empty()
        },
    );
    drop(prometheus);
}

/// The loop through VictoriaMetrics instead of Prometheus: kpiwatch queries VM's
/// Prometheus API, VM scrapes kpiwatch, and the scores are read back from VM. VM runs
/// at its defaults, including `-search.latencyOffset=30s` (points of the last 30 s are
/// not served yet): kpiwatch must ask for them again instead of losing them, which it
/// did not before (it marked every range fetched up to its end, so with VM it never
/// stored a point). Its data then lags by that offset.
#[test]
fn scores_reach_victoria_metrics_through_its_prometheus_api() {
    if !common::tools_or_skip(&["victoria-metrics", "prometheus-node-exporter"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (vm, node, agent) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("scrape.yml"),
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{node}']}}]\n  - job_name: kpiwatch\n    honor_labels: true\n    static_configs: [{{targets: ['127.0.0.1:{agent}']}}]\n"
        ),
    )
    .unwrap();
    let _node = start_node_exporter(node);
    let _vm = Proc(
        Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{vm}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("vm").display()
            ))
            .arg(format!(
                "-promscrape.config={}",
                dir.path().join("scrape.yml").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("vm.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let _agent = start_node_preset_agent(vm, agent, dir.path());
    let instance = format!("127.0.0.1:{node}");
    let took = wait_for(
        "kpiwatch_anomaly_score for the node in VictoriaMetrics",
        Duration::from_secs(150),
        || {
            query(
                vm,
                "kpiwatch_anomaly_score{detector=\"zscore\",group=\"node\"}",
            )
            .iter()
            .any(|s| s["metric"]["instance"] == instance.as_str())
        },
    );
    eprintln!(
        "scores in VictoriaMetrics {:.1}s after start",
        took.as_secs_f64()
    );
    wait_for(
        "the flag rate of the node computable in VictoriaMetrics",
        Duration::from_secs(60),
        || {
            query(
                vm,
                "kpiwatch_flags_total{detector=\"zscore\",group=\"node\"} / kpiwatch_scores_total",
            )
            .iter()
            .any(|s| s["metric"]["instance"] == instance.as_str())
        },
    );
    let (_, metrics) = http_get(agent, "/metrics").unwrap();
    assert_eq!(
        metric(&metrics, r#"kpiwatch_entities{group="node"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert!(metric(&metrics, "kpiwatch_samples_fetched_total").is_some_and(|n| n > 0.0));
}

/// A real Prometheus scrapes kpiwatch over HTTPS with basic auth, configured by an
/// exporter-toolkit web config file (`server.web_config_file`), as it would scrape
/// node_exporter with the same file. When the web config's password changes, the
/// scrape fails within seconds with no restart; when it changes back, scraping resumes.
#[test]
fn prometheus_scrapes_kpiwatch_over_https_with_basic_auth() {
    if !common::tools_or_skip(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (prom, agent) = (free_port(), free_port());
    let pki = common::TestPki::generate(dir.path(), "");
    let users = |password: &str| {
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{}'\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            bcrypt::hash(password, 4).unwrap()
        )
    };
    let web = dir.path().join("web.yml");
    std::fs::write(&web, users("s3cret")).unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prom}']}}]\n  - job_name: kpiwatch\n    honor_labels: true\n    scheme: https\n    basic_auth: {{username: prometheus, password: s3cret}}\n    tls_config: {{ca_file: '{}'}}\n    static_configs: [{{targets: ['127.0.0.1:{agent}']}}]\n",
            pki.ca.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("kpiwatch.yaml"),
        format!(
            "prometheus:\n  url: http://127.0.0.1:{prom}\nserver:\n  listen: 127.0.0.1:{agent}\n  web_config_file: web.yml\ngroups:\n  - name: jobs\n    interval: 1s\n    step: 1s\n    window: 8\n    history: 1m\n    entity_labels: [job]\n    metrics:\n      up: up\n      samples: scrape_samples_scraped\n    detectors:\n      zscore:\n        calibrate: false\n"
        ),
    )
    .unwrap();
    let _prometheus = start_prometheus(dir.path(), prom);
    let _agent = common::start_agent(
        &dir.path().join("kpiwatch.yaml"),
        &dir.path().join("agent.log"),
    );
    let kpiwatch_up = |want: &str| {
        query(prom, "up{job=\"kpiwatch\"}")
            .iter()
            .any(|s| s["value"][1] == want)
    };
    wait_for(
        "Prometheus scrapes kpiwatch over HTTPS",
        Duration::from_secs(60),
        || kpiwatch_up("1"),
    );
    wait_for(
        "kpiwatch's scores in Prometheus",
        Duration::from_secs(60),
        || {
            !query(
                prom,
                "kpiwatch_anomaly_score{group=\"jobs\",job=\"prometheus\"}",
            )
            .is_empty()
        },
    );
    // Plain HTTP to the TLS port gets no answer.
    assert!(http_get(agent, "/-/healthy").is_none_or(|(status, _)| status != 200));

    // A new password in the web config: Prometheus's old one is refused within seconds.
    std::fs::write(&web, users("n3w-secret")).unwrap();
    wait_for(
        "the scrape refused after the password changed",
        Duration::from_secs(20),
        || kpiwatch_up("0"),
    );
    std::fs::write(&web, users("s3cret")).unwrap();
    wait_for("the scrape accepted again", Duration::from_secs(20), || {
        kpiwatch_up("1")
    });
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("Web config reloaded."), "{log}");
    assert!(log.contains("scores at https://127.0.0.1:"), "{log}");
    assert!(!log.contains("s3cret"), "a password in the log");
}

/// The `kpiwatch` binary with the node-exporter preset against the Prometheus API on
/// `backend`, serving on `agent`, at test speed (interval 2 s, step 1 s, history 10m);
/// state and log under `dir`.
fn start_node_preset_agent(backend: u16, agent: u16, dir: &std::path::Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args([
                "run",
                "--config",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/config/presets/node-exporter.yaml"
                ),
            ])
            .env("PROMETHEUS_URL", format!("http://127.0.0.1:{backend}"))
            .env("KPIWATCH_LISTEN", format!("127.0.0.1:{agent}"))
            .env("KPIWATCH_STATE_DIR", dir.join("state"))
            .env("KPIWATCH_INTERVAL", "2s")
            .env("KPIWATCH_STEP", "1s")
            .env("KPIWATCH_HISTORY", "10m")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("kpiwatch.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn start_node_exporter(port: u16) -> Proc {
    Proc(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Starts a node exporter on `port` (Prometheus already has it as a down target) and
/// waits for its Uni-AD score. The preset's window is 64 steps of 1 s here, so the
/// score is due once 64 points exist: the deadline is that window plus the first
/// rate() sample (2 scrapes), two agent cycles and one Prometheus scrape of kpiwatch,
/// with a few seconds of slack.
fn new_entity_gets_uniad_scores_within_one_window(prom: u16, port: u16) -> Proc {
    let exporter = start_node_exporter(port);
    let instance = format!("127.0.0.1:{port}");
    let window = Duration::from_secs(64);
    let took = wait_for(
        "Uni-AD score for an entity that appeared after start",
        window + Duration::from_secs(15),
        || {
            query(
                prom,
                "kpiwatch_anomaly_score{detector=\"uniad\",group=\"node\"}",
            )
            .iter()
            .any(|s| s["metric"]["instance"] == instance.as_str())
        },
    );
    eprintln!(
        "new entity scored by Uni-AD {:.1}s after it appeared (window {}s)",
        took.as_secs_f64(),
        window.as_secs()
    );
    exporter
}
