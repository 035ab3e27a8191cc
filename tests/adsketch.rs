//! ADSketch in the agent, end to end on real parts: Debian's Prometheus on loopback,
//! scraping a small exporter this test serves, with ten minutes of the same series
//! backfilled by `promtool tsdb create-blocks-from openmetrics`, so that the agent
//! learns `T_n` and `T_a` from Prometheus's history at its first cycle, as it does in
//! production. The pattern catalog is then exercised through its HTTP API (labels,
//! bad requests), across a SIGKILL and a restart, and in headless Chromium.
//!
//! Needs `prometheus` and `promtool` (and `chromium` for the page test) on PATH
//! (`scripts/install-deps.sh`). Without them the tests are skipped locally and fail in
//! CI (`CI` set). Set `KPIWATCH_SCREENSHOT=path.png` to keep the page's screenshot
//! (that is how `docs/patterns.png` is made).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{free_port, http_as, http_get, metric, start_prometheus, wait_for, Proc};
use serde_json::Value;

/// Subsequence length in the agent's config.
const M: usize = 5;
/// Seconds of history backfilled before the test starts.
const BACKFILL_S: i64 = 600;
/// The agent's `server.write_token_file` content: label edits carry it.
const WRITE_TOKEN: &str = "adsketch-e2e-write-token";

/// A request to the agent with the write token (reads ignore it).
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    http_as(port, method, path, body, Some(WRITE_TOKEN))
}

fn now_s() -> i64 {
    kpiwatch::clock::now_ms() / 1000
}

/// The series at second `t`, relative to the test's start `t0`: a 30 s cycle, a short
/// step every 12 s and a little hashed noise; from `t0 - 100` on, a 4 s spike every
/// 97 s and a 4 s dip every 113 s (so `T_a` holds one of each and `T_n`, which the
/// paper assumes clean, none).
fn value(t: i64, t0: i64) -> f64 {
    let s = t - t0;
    let noise = ((s + 100_000) as u64 * 2_654_435_761 % (1 << 32)) as f64 / (1u64 << 32) as f64;
    let x = s as f64;
    let mut v = 50.0 + 15.0 * (x * std::f64::consts::TAU / 30.0).sin() + 3.0 * (noise - 0.5);
    if s.rem_euclid(12) < 2 {
        v += 8.0;
    }
    if s >= -100 && (37..41).contains(&s.rem_euclid(97)) {
        v += 45.0;
    }
    if s >= -100 && (70..74).contains(&s.rem_euclid(113)) {
        v -= 35.0;
    }
    v
}

/// Serves `/metrics` with the current value, forever (the thread dies with the test).
fn serve_exporter(port: u16, t0: i64) {
    common::serve_exposition(port, move || {
        format!(
            "# TYPE kpiwatch_demo_value gauge\nkpiwatch_demo_value{{entity=\"demo\"}} {}\n",
            value(now_s(), t0)
        )
    });
}

/// Writes `BACKFILL_S` seconds of the series (with the labels scraping will give it, so
/// history and live points are one series) into Prometheus blocks under `data`.
fn backfill(dir: &Path, exporter: u16, t0: i64) {
    let mut om = String::from("# TYPE kpiwatch_demo_value gauge\n");
    for t in t0 - BACKFILL_S..t0 {
        om.push_str(&format!(
            "kpiwatch_demo_value{{entity=\"demo\",instance=\"127.0.0.1:{exporter}\",job=\"demo\"}} {} {t}\n",
            value(t, t0)
        ));
    }
    om.push_str("# EOF\n");
    common::promtool_backfill(dir, &om);
}

/// Prometheus with ten minutes of history, scraping the exporter every second.
struct Stack {
    dir: tempfile::TempDir,
    agent: u16,
    _prometheus: Proc,
}

impl Stack {
    fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let (prom, exporter, agent) = (free_port(), free_port(), free_port());
        let t0 = now_s();
        serve_exporter(exporter, t0);
        backfill(dir.path(), exporter, t0);
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: demo\n    static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]\n"
            ),
        )
        .unwrap();
        let prometheus = start_prometheus(dir.path(), prom);
        wait_for("Prometheus ready", Duration::from_secs(60), || {
            http_get(prom, "/-/ready").is_some_and(|(s, _)| s == 200)
        });
        let token_file = dir.path().join("write-token");
        std::fs::write(&token_file, format!("{WRITE_TOKEN}\n")).unwrap();
        std::fs::write(
            dir.path().join("kpiwatch.yaml"),
            format!(
                r#"prometheus:
  url: http://127.0.0.1:{prom}
server:
  listen: 127.0.0.1:{agent}
  write_token_file: {token}
state_dir: {state}
state_save_interval: 1h
groups:
  - name: demo
    interval: 1s
    step: 1s
    window: 16
    history: 6m
    entity_labels: [entity]
    metrics:
      value: 'max by (entity) (kpiwatch_demo_value)'
    detectors:
      adsketch:
        m: {M}
        p: 98.0
        train_points: 240
        test_points: 120
        adaptive: false
"#,
                state = dir.path().join("state").display(),
                token = token_file.display(),
            ),
        )
        .unwrap();
        Stack {
            dir,
            agent,
            _prometheus: prometheus,
        }
    }

    fn start_agent(&self, log: &str) -> Proc {
        common::start_agent(
            &self.dir.path().join("kpiwatch.yaml"),
            &self.dir.path().join(log),
        )
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The catalog's series (empty until the agent has learnt).
    fn series(&self) -> Vec<Value> {
        let Some((200, body)) = http_get(self.agent, "/api/v1/patterns?group=demo") else {
            return vec![];
        };
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["series"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the agent has learnt the series' patterns; returns the series.
    fn learnt(&self, log: &str) -> Value {
        let mut found = None;
        wait_for(
            "ADSketch patterns in the catalog",
            Duration::from_secs(90),
            || {
                found = self.series().into_iter().next();
                found.is_some()
            },
        );
        let s = found.unwrap();
        assert!(
            !s["patterns"].as_array().unwrap().is_empty(),
            "{s}\n{}",
            self.log(log)
        );
        s
    }
}

/// What must survive a restart, per pattern.
#[derive(Debug, Clone, PartialEq)]
struct Learnt {
    id: u64,
    kind: String,
    size: u64,
    mean: Vec<f64>,
    labels: Vec<String>,
}

fn identity(series: &Value) -> Vec<Learnt> {
    series["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Learnt {
            id: p["id"].as_u64().unwrap(),
            kind: p["kind"].as_str().unwrap().to_string(),
            size: p["size"].as_u64().unwrap(),
            mean: serde_json::from_value(p["mean"].clone()).unwrap(),
            labels: serde_json::from_value(p["labels"].clone()).unwrap(),
        })
        .collect()
}

fn labels_of(series: &Value) -> Vec<(u64, Vec<String>)> {
    identity(series)
        .into_iter()
        .map(|p| (p.id, p.labels))
        .collect()
}

#[test]
fn patterns_and_labels_survive_sigkill_and_bad_edits_change_nothing() {
    if !common::tools_or_skip(&["prometheus", "promtool"]) {
        return;
    }
    let stack = Stack::start();
    let mut agent = stack.start_agent("kpiwatch-1.log");
    let series = stack.learnt("kpiwatch-1.log");
    let sid = series["series"].as_str().unwrap().to_string();
    let ids: Vec<u64> = identity(&series).iter().map(|p| p.id).collect();
    let first = ids[0];
    let base = format!("/api/v1/patterns/{sid}");
    let put = |path: &str, body: Option<&str>| http(stack.agent, "PUT", path, body).unwrap();

    // 0. Without the write token (server.write_token_file) an edit is refused and
    //    changes nothing; reads need no token.
    let edit = format!("{base}/{first}/labels");
    let labels_now = || labels_of(&stack.series()[0]);
    let before = labels_now();
    for token in [None, Some("not-the-token")] {
        let (status, body) = http_as(
            stack.agent,
            "PUT",
            &edit,
            Some(r#"{"labels": ["sneaky"]}"#),
            token,
        )
        .unwrap();
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(labels_now(), before, "a refused edit changed the labels");
    let metrics = http_get(stack.agent, "/metrics").unwrap().1;
    assert_eq!(
        metric(
            &metrics,
            r#"kpiwatch_http_requests_refused_total{reason="missing_token"}"#
        ),
        Some(1.0)
    );

    // 1. Good edits: replace, remove one, add one to every pattern.
    let (status, body) = put(
        &format!("{base}/{first}/labels"),
        Some(r#"{"labels": ["cache-flush", "team:db"]}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"persisted\":true"), "{body}");
    let (status, body) = http(
        stack.agent,
        "DELETE",
        &format!("{base}/{first}/labels/team:db"),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Every pattern gets a label, so whichever one matches next carries some. Abnormal
    // patterns of one issue group share labels: label the group once.
    for id in &ids {
        let current = labels_of(&stack.series()[0]);
        if current.iter().any(|(k, l)| k == id && l.is_empty()) {
            let (status, body) = put(&format!("{base}/{id}/labels/p{id}"), None);
            assert_eq!(status, 200, "{body}");
        }
    }
    let labelled = labels_of(&stack.series()[0]);
    assert_eq!(labelled[0].1[0], "cache-flush", "{labelled:?}");
    assert!(labelled.iter().all(|(_, l)| !l.is_empty()), "{labelled:?}");

    // 2. Bad edits: 4xx with a reason, and nothing changes.
    let too_many: Vec<String> = (0..17).map(|k| format!("l{k}")).collect();
    let too_many = serde_json::json!({ "labels": too_many }).to_string();
    let too_long = format!(r#"{{"labels": ["{}"]}}"#, "x".repeat(65));
    let labels = format!("{base}/{first}/labels");
    let bad = [
        (
            "PUT",
            labels.clone(),
            too_long.as_str(),
            400,
            "expected 1 to 64",
        ),
        (
            "PUT",
            labels.clone(),
            r#"{"labels": ["no spaces"]}"#,
            400,
            "allowed: letters",
        ),
        (
            "PUT",
            labels.clone(),
            r#"{"labels": ["<b>"]}"#,
            400,
            "allowed: letters",
        ),
        ("PUT", labels.clone(), too_many.as_str(), 400, "at most 16"),
        ("PUT", labels.clone(), r#"{"labels": ["#, 400, "body is not"),
        ("PUT", labels.clone(), "not json", 400, "body is not"),
        (
            "PUT",
            format!("{base}/987654/labels"),
            r#"{"labels": ["x"]}"#,
            404,
            "no pattern with id 987654",
        ),
        (
            "PUT",
            "/api/v1/patterns/ffffffffffffffff/0/labels".into(),
            r#"{"labels": ["x"]}"#,
            404,
            "no series",
        ),
        (
            "DELETE",
            format!("{labels}/never-set"),
            "",
            404,
            "has no label",
        ),
    ];
    for (method, path, body, want, reason) in bad {
        let (status, answer) = http(stack.agent, method, &path, Some(body)).unwrap();
        assert_eq!(status, want, "{method} {path} {body}: {answer}");
        assert!(answer.contains(reason), "{method} {path}: {answer}");
    }
    let after_bad = stack.series();
    assert_eq!(
        labels_of(&after_bad[0]),
        labelled,
        "a bad request changed labels"
    );

    // 3. Metrics: counts by kind, and matches carry the current pattern's kind and labels.
    let (normal, abnormal) = (
        after_bad[0]["normal"].as_u64().unwrap() as f64,
        after_bad[0]["abnormal"].as_u64().unwrap() as f64,
    );
    let mut text = String::new();
    wait_for(
        "a kpiwatch_adsketch_match with its issue labels",
        Duration::from_secs(30),
        || {
            text = http_get(stack.agent, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default();
            text.lines()
                .any(|l| l.starts_with("kpiwatch_adsketch_match{") && !l.contains("issue=\"\""))
        },
    );
    assert_eq!(
        metric(
            &text,
            "kpiwatch_adsketch_patterns{group=\"demo\",kind=\"normal\"}"
        ),
        Some(normal)
    );
    assert_eq!(
        metric(
            &text,
            "kpiwatch_adsketch_patterns{group=\"demo\",kind=\"abnormal\"}"
        ),
        Some(abnormal)
    );
    assert!(
        metric(
            &text,
            "kpiwatch_adsketch_distance{group=\"demo\",entity=\"demo\",metric=\"value\"}"
        )
        .is_some(),
        "{text}"
    );
    common::assert_promtool_accepts(&text);
    let line = text
        .lines()
        .find(|l| l.starts_with("kpiwatch_adsketch_match{"))
        .unwrap();
    let label = |name: &str| {
        let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        line[start..start + line[start..].find('"').unwrap()].to_string()
    };
    let id: u64 = label("pattern").parse().unwrap();
    let matched = identity(&after_bad[0])
        .into_iter()
        .find(|p| p.id == id)
        .unwrap();
    assert_eq!(label("kind"), matched.kind, "{line}");
    assert_eq!(label("issue"), matched.labels.join(","), "{line}");

    // 4. SIGKILL: no shutdown save, and the periodic save (1 h) never ran: what survives
    // is what the label edits saved before answering 200 (labels and patterns).
    let before = identity(&after_bad[0]);
    agent.kill();
    let _agent = stack.start_agent("kpiwatch-2.log");
    let restored = stack.learnt("kpiwatch-2.log");
    assert_eq!(restored["series"], sid.as_str());
    assert_eq!(
        identity(&restored),
        before,
        "{}",
        stack.log("kpiwatch-2.log")
    );
    assert!(
        stack.log("kpiwatch-2.log").contains("State restored"),
        "{}",
        stack.log("kpiwatch-2.log")
    );
}

#[test]
fn catalog_page_renders_sparklines_in_headless_chromium() {
    if !common::tools_or_skip(&["prometheus", "promtool", "chromium"]) {
        return;
    }
    let stack = Stack::start();
    let _agent = stack.start_agent("kpiwatch.log");
    let series = stack.learnt("kpiwatch.log");
    let sid = series["series"].as_str().unwrap();
    let patterns = series["patterns"].as_array().unwrap();
    let first = patterns[0]["id"].as_u64().unwrap();
    let (status, body) = http(
        stack.agent,
        "PUT",
        &format!("/api/v1/patterns/{sid}/{first}/labels"),
        Some(r#"{"labels": ["cache-flush", "ticket:OPS-42"]}"#),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Wait for the catalog's next refresh, which brings the last matches.
    wait_for(
        "a last match in the catalog",
        Duration::from_secs(30),
        || {
            stack.series().iter().any(|s| {
                s["patterns"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["last_match"].is_number()))
            })
        },
    );
    let url = format!("http://127.0.0.1:{}/patterns", stack.agent);

    // The DOM as Chromium built it: one sparkline per pattern, each with m points.
    let dom = common::chromium(stack.dir.path(), &["--dump-dom".to_string(), url.clone()]);
    let svgs = dom.matches("<svg class=\"spark\"").count();
    assert_eq!(svgs, patterns.len(), "{dom}");
    let polylines: Vec<&str> = dom
        .split("<polyline points=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert_eq!(polylines.len(), patterns.len());
    for pts in polylines {
        let pairs: Vec<(f64, f64)> = pts
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(pairs.len(), M, "{pts}");
        assert!(pairs.iter().all(|(x, y)| x.is_finite() && y.is_finite()));
    }
    assert!(dom.contains("ticket:OPS-42"));
    assert!(dom.contains("last match 20"), "a match time is shown");

    // The picture: the blue of normal sparklines is painted, and it is no blank page.
    let shot: PathBuf = stack.dir.path().join("patterns.png");
    common::chromium(
        stack.dir.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,420".to_string(),
            url,
        ],
    );
    let (blue, distinct, size) = common::colours(&shot, [0x2a, 0x7a, 0xb8]);
    assert_eq!(size, (1100, 420));
    assert!(distinct > 50, "{distinct} colours: a blank or broken page");
    assert!(blue > 100, "only {blue} pixels of sparkline blue");
    if let Some(keep) = std::env::var_os("KPIWATCH_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
