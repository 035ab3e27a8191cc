//! End to end on real parts: Debian's Prometheus and node_exporter on loopback, and the
//! `kpiwatch` binary with the node-exporter preset. The loop is closed: Prometheus
//! scrapes kpiwatch, and the test asserts through Prometheus's own query API.
//!
//! Needs `prometheus`, `promtool` and `prometheus-node-exporter` on PATH
//! (`scripts/install-deps.sh`). Without them the test is skipped locally and fails in
//! CI (`CI` set).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kpiwatch");

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tools_or_skip() -> bool {
    let missing: Vec<&str> = ["prometheus", "promtool", "prometheus-node-exporter"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing {missing:?}: run scripts/install-deps.sh");
    }
    eprintln!("SKIPPED: missing {missing:?} (run scripts/install-deps.sh)");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let buf = String::from_utf8_lossy(&buf).to_string();
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn query(prom_port: u16, promql: &str) -> Vec<serde_json::Value> {
    let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
    let Some((200, body)) = http_get(prom_port, &format!("/api/v1/query?query={q}")) else {
        return vec![];
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{what}: after {:.1}s", start.elapsed().as_secs_f64());
}

/// A child process killed when dropped, so a failing test leaves nothing behind.
struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(dir: &Path, port: u16) -> Proc {
    Proc(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn scores_reach_prometheus_survive_an_outage_and_pass_promtool() {
    if !tools_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (prom, node, agent) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{node}']}}]\n  - job_name: kpiwatch\n    honor_labels: true\n    static_configs: [{{targets: ['127.0.0.1:{agent}']}}]\n"
        ),
    )
    .unwrap();
    let _node = Proc(
        Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{node}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut prometheus = start_prometheus(dir.path(), prom);
    let _agent = Proc(
        Command::new(BIN)
            .args([
                "run",
                "--config",
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/config/presets/node-exporter.yaml"
                ),
            ])
            .env("PROMETHEUS_URL", format!("http://127.0.0.1:{prom}"))
            .env("KPIWATCH_LISTEN", format!("127.0.0.1:{agent}"))
            .env("KPIWATCH_STATE_DIR", dir.path().join("state"))
            .env("KPIWATCH_INTERVAL", "2s")
            .env("KPIWATCH_STEP", "1s")
            .env("KPIWATCH_HISTORY", "10m")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("kpiwatch.log")).unwrap())
            .spawn()
            .unwrap(),
    );
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
    let contributions = query(prom, "kpiwatch_zscore_value");
    assert!(
        contributions.len() >= 5,
        "per-metric values for most preset metrics: {contributions:?}"
    );

    // 2. promtool accepts kpiwatch's exposition.
    let (_, metrics) = http_get(agent, "/metrics").unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

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
    assert_eq!(
        metric(&during, r#"kpiwatch_entities_stale{group="node"}"#),
        Some(1.0)
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
