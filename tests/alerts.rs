//! End-to-end alert test: a real Prometheus loads the shipped alert rules
//! (`deploy/rules/kpiwatch.rules.yml`), scrapes a synthetic target and kpiwatch, and a real
//! Alertmanager delivers the alert to a webhook receiver inside this test.
//!
//! ```text
//!  this test ──(gauge)──▶ Prometheus ◀──query_range── kpiwatch (zscore over the gauge)
//!      ▲                     │  ▲                         │
//!      │ webhook             │  └──────── scrape ─────────┘ (honor_labels: true)
//!      └── Alertmanager ◀────┘ alerts (shipped rules, `for:` shortened)
//! ```
//!
//! Everything listens on 127.0.0.1 with ports picked by the OS, in a temporary
//! directory. The rules are the shipped ones with every `for:` shortened to 2s (a test
//! cannot wait 10 minutes); expressions, labels and annotations are unchanged.
//!
//! Needs `/usr/bin/prometheus` and `/usr/bin/prometheus-alertmanager` (Debian's
//! `prometheus` and `prometheus-alertmanager`; other paths through `KPIWATCH_PROMETHEUS`
//! and `KPIWATCH_ALERTMANAGER`). Without them the test is skipped with a message, except
//! under CI (`CI` set), where a missing binary is a failure.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use common::{free_port, query, shortened_rules, Procs};

/// Value of the synthetic gauge before the jump (plus a little deterministic noise, so
/// that the robust statistics have a non-degenerate spread).
const BASELINE: f64 = 100.0;
/// Value after the jump: hundreds of robust standard deviations away.
const JUMP: f64 = 1000.0;

#[test]
fn shipped_rule_fires_through_alertmanager_when_the_gauge_jumps() {
    let Some((prometheus_bin, alertmanager_bin)) = tools() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();

    let fixture = Fixture::start();
    let prom_port = free_port();
    let am_port = free_port();
    let kw_port = free_port();
    let target = format!("127.0.0.1:{}", fixture.port);

    // Alertmanager: one route, straight to the webhook, no waiting.
    let am_config = format!(
        "route:\n  receiver: test\n  group_by: [alertname, group, instance]\n  group_wait: 1s\n  \
         group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    webhook_configs:\n      \
         - url: http://{target}/webhook\n        send_resolved: false\n"
    );
    let mut procs = Procs::new(dir);
    procs.spawn_alertmanager(alertmanager_bin.as_os_str(), am_port, &am_config);

    // Prometheus: the shipped rules with short `for:`, 1s scrapes and evaluations.
    fs::write(dir.join("rules.yml"), shortened_rules()).expect("write rules.yml");
    let prom_config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files: [{rules}]\n\
         alerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n\
         scrape_configs:\n  - job_name: synthetic\n    static_configs: [{{targets: ['{target}']}}]\n  \
         - job_name: kpiwatch\n    honor_labels: true\n    static_configs: [{{targets: ['127.0.0.1:{kw_port}']}}]\n",
        rules = dir.join("rules.yml").display()
    );
    fs::write(dir.join("prometheus.yml"), prom_config).expect("write prometheus.yml");
    procs.spawn(
        "prometheus",
        Command::new(&prometheus_bin).args([
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--log.level=warn".to_string(),
        ]),
    );

    // kpiwatch: the z-score detector over the synthetic gauge, entities keyed by the
    // target's job and instance (which must survive the scrape: honor_labels).
    let kw_config = format!(
        "prometheus:\n  url: http://127.0.0.1:{prom_port}\n  timeout: 5s\nserver:\n  listen: 127.0.0.1:{kw_port}\n\
         groups:\n  - name: synthetic\n    interval: 1s\n    step: 1s\n    window: 8\n    history: 2m\n    \
         entity_labels: [job, instance]\n    expire_after: 1m\n    metrics:\n      value: 'synthetic_value'\n    \
         detectors:\n      zscore:\n        threshold: 4.0\n        min_points: 8\n"
    );
    fs::write(dir.join("kpiwatch.yaml"), kw_config).expect("write kpiwatch.yaml");
    procs.spawn(
        "kpiwatch",
        Command::new(env!("CARGO_BIN_EXE_kpiwatch")).args([
            "--log-level=debug".to_string(),
            "run".to_string(),
            format!("--config={}", dir.join("kpiwatch.yaml").display()),
        ]),
    );

    procs.wait_ready("prometheus", prom_port);
    procs.wait_ready("alertmanager", am_port);

    // Warm-up: wait until Prometheus holds a score for the entity, below threshold.
    let score_query =
        r#"kpiwatch_anomaly_score{detector="zscore",group="synthetic",job="synthetic"}"#;
    let mut before = None;
    procs.wait_for(
        "a warmed-up score in Prometheus",
        Duration::from_secs(120),
        || {
            before = query(prom_port, score_query)
                .iter()
                .find(|r| r["metric"]["instance"] == target.as_str())
                .and_then(|r| r["value"][1].as_str()?.parse().ok());
            before.is_some()
        },
    );
    let before = before.unwrap_or(f64::NAN);
    assert!(
        before < 1.0,
        "score before the jump is {before}, expected below the threshold 1.0"
    );
    assert!(
        fixture.alerts("KpiwatchZscoreAnomaly").is_empty(),
        "an anomaly alert arrived before the gauge jumped"
    );

    fixture.jump.store(true, Ordering::SeqCst);
    let mut alerts = Vec::new();
    procs.wait_for(
        "the anomaly alert at the webhook",
        Duration::from_secs(90),
        || {
            alerts = fixture.alerts("KpiwatchZscoreAnomaly");
            !alerts.is_empty()
        },
    );

    let alert = &alerts[0];
    assert_eq!(alert["status"], "firing");
    let labels = alert["labels"].as_object().expect("alert labels");
    let expected: BTreeMap<&str, &str> = [
        ("alertname", "KpiwatchZscoreAnomaly"),
        ("severity", "warning"),
        ("detector", "zscore"),
        ("group", "synthetic"),
        ("job", "synthetic"),
        ("instance", target.as_str()),
    ]
    .into_iter()
    .collect();
    let got: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("?")))
        .collect();
    assert_eq!(got, expected, "alert labels");

    let annotations = &alert["annotations"];
    let summary = annotations["summary"].as_str().expect("summary");
    let score: f64 = summary
        .strip_prefix("Anomaly in group synthetic (zscore score ")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("summary {summary:?} does not have the expected form"))
        .parse()
        .expect("score in the summary");
    assert!(
        score > 1.0,
        "the summary's score {score} is not above the threshold"
    );
    let description = annotations["description"].as_str().expect("description");
    assert!(
        description.starts_with("kpiwatch's zscore detector has scored this entity of group synthetic above its threshold"),
        "description {description:?}"
    );
    assert!(
        description.ends_with(&format!("Entity: instance=\"{target}\" job=\"synthetic\".")),
        "description {description:?} does not name the entity's labels"
    );
    assert_eq!(annotations["runbook_url"], "docs/deploy.md#anomaly-alerts");
}

/// The binaries, or `None` (test skipped) when one is missing outside CI.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let prometheus =
        PathBuf::from(std::env::var("KPIWATCH_PROMETHEUS").unwrap_or("/usr/bin/prometheus".into()));
    let alertmanager = PathBuf::from(
        std::env::var("KPIWATCH_ALERTMANAGER").unwrap_or("/usr/bin/prometheus-alertmanager".into()),
    );
    let missing: Vec<String> = [&prometheus, &alertmanager]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((prometheus, alertmanager));
    }
    let msg = format!(
        "alerts e2e test needs {} (apt-get install prometheus prometheus-alertmanager, \
         or scripts/install-deps.sh)",
        missing.join(" and ")
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}: missing under CI");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The synthetic scrape target (`GET /metrics`) and the Alertmanager webhook
/// (`POST /webhook`), on one port.
struct Fixture {
    port: u16,
    jump: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
}

impl Fixture {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fixture");
        let port = listener.local_addr().expect("fixture address").port();
        let jump = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let (j, r, s) = (jump.clone(), received.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (j, r, n) = (j.clone(), r.clone(), scrapes.clone());
                thread::spawn(move || {
                    let _ = serve(conn, &j, &r, &n);
                });
            }
        });
        Fixture {
            port,
            jump,
            received,
            stop,
        }
    }

    /// Alerts received so far with the given alertname.
    fn alerts(&self, alertname: &str) -> Vec<Value> {
        let received = self.received.lock().expect("webhook payloads");
        received
            .iter()
            .flat_map(|p| p["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["labels"]["alertname"] == alertname)
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop
    }
}

fn serve(
    conn: TcpStream,
    jump: &AtomicBool,
    received: &Mutex<Vec<Value>>,
    scrapes: &AtomicU64,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let (status, content_type, reply) = if request_line.starts_with("GET /metrics") {
        // Noise of ±1.5 around the baseline, a fixed 8-step pattern.
        const NOISE: [f64; 8] = [0.0, 1.0, -0.5, 1.5, -1.0, 0.5, -1.5, 0.25];
        let n = scrapes.fetch_add(1, Ordering::SeqCst) as usize;
        let value = if jump.load(Ordering::SeqCst) {
            JUMP
        } else {
            BASELINE + NOISE[n % NOISE.len()]
        };
        let text = format!(
            "# HELP synthetic_value A gauge the test controls.\n# TYPE synthetic_value gauge\nsynthetic_value {value}\n"
        );
        ("200 OK", "text/plain; version=0.0.4", text)
    } else if request_line.starts_with("POST /webhook") {
        match serde_json::from_slice::<Value>(&body) {
            Ok(payload) => {
                received.lock().expect("webhook payloads").push(payload);
                ("200 OK", "text/plain", String::new())
            }
            Err(e) => ("400 Bad Request", "text/plain", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "text/plain", String::new())
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    conn.flush()
}
