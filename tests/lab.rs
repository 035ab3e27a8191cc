//! Lab tests (issue 3): the committed reference dataset against the formats of
//! `docs/lab.md`, scenario validation (shipped scenarios pass, bad ones are rejected with
//! every problem named), and the test service's routes, faults and admin endpoint
//! (in-process, no Prometheus needed).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use kpiwatch::lab::load::Profile;
use kpiwatch::lab::record::{
    ANOMALY_FORMAT, ENTITY_COLUMNS, PAIRS_HEADER, REGRESSION_FORMAT, RUN_HEADER,
};
use kpiwatch::lab::scenario::{self, Body};
use kpiwatch::lab::service::{Service, FAULT_KINDS, ROUTES};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn data() -> PathBuf {
    root().join("tests/data/lab")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A CSV of numbers as header and rows (the dataset reader checks that every row is as
/// long as the header and every cell a number).
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let t = kpiwatch::dataset::read_csv(path).unwrap_or_else(|e| panic!("{e}"));
    let rows = (0..t.len())
        .map(|r| t.columns.iter().map(|c| c[r]).collect())
        .collect();
    (t.names, rows)
}

fn dirs(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(path)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn anomaly_datasets_match_the_documented_format() {
    let (entities, windows, kinds) = check_anomaly_root(&data().join("anomaly"), 100);
    assert!(entities >= 8, "{entities} entities (want >= 8)");
    assert!(windows >= 20, "{windows} fault windows (want >= 20)");
    assert!(kinds.len() >= 4, "fault kinds {kinds:?} (want >= 4)");
}

#[test]
fn held_out_replicas_match_the_format_and_record_their_seed() {
    // tests/data/lab-replica/s<seed>/anomaly/<scenario>/: the held-out scenarios played
    // again with `kpiwatch-lab run --seed <seed>` (models/train/uniad evaluates them).
    let replicas = dirs(&root().join("tests/data/lab-replica"));
    assert!(
        !replicas.is_empty(),
        "no replicate under tests/data/lab-replica"
    );
    for replica in replicas {
        let name = replica.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let seed: u64 = name
            .strip_prefix('s')
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{}: want s<seed>", replica.display()));
        let anomaly = replica.join("anomaly");
        check_anomaly_root(&anomaly, 100);
        for dir in dirs(&anomaly) {
            let m: Value = serde_json::from_str(&read(&dir.join("manifest.json"))).expect("JSON");
            assert_eq!(m["seed"].as_u64(), Some(seed), "{}", dir.display());
        }
    }
}

#[test]
fn mesh_recordings_match_the_documented_format() {
    // tests/data/lab-mesh/s<seed>/mesh/<scenario>/: mesh scenarios recorded with
    // `kpiwatch-lab run --seed <seed> --out tests/data/lab-mesh/s<seed>`.
    let seeds = dirs(&root().join("tests/data/lab-mesh"));
    assert!(seeds.len() >= 2, "two seeds at least: {seeds:?}");
    for seed_dir in seeds {
        let name = seed_dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let seed: u64 = name
            .strip_prefix('s')
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{}: want s<seed>", seed_dir.display()));
        for dir in dirs(&seed_dir.join("mesh")) {
            check_mesh_recording(&dir, seed);
        }
    }
}

/// Checks one mesh recording against the format of docs/lab.md ("The service mesh").
fn check_mesh_recording(dir: &Path, seed: u64) {
    let m: Value = serde_json::from_str(&read(&dir.join("manifest.json"))).expect("JSON");
    let at = dir.display();
    assert_eq!(m["format"], "kpiwatch-lab-mesh/1", "{at}");
    assert_eq!(m["seed"].as_u64(), Some(seed), "{at}");
    let rows = m["rows"].as_u64().expect("rows") as usize;
    let services: BTreeSet<String> = m["topology"]["services"]
        .as_object()
        .expect("topology")
        .keys()
        .cloned()
        .collect();
    for s in m["services"].as_array().expect("services") {
        let (header, data) = read_csv(&dir.join(s["file"].as_str().expect("file")));
        assert_eq!(data.len(), rows, "{at}: {s}");
        for col in [
            "rps",
            "error_ratio",
            "latency_p95_ms",
            "root_cause",
            "affected",
        ] {
            assert!(header.iter().any(|h| h == col), "{at}: {s} has no {col}");
        }
    }
    let windows = m["windows"].as_array().expect("windows");
    assert!(!windows.is_empty(), "{at}: no fault window");
    for w in windows {
        let root = w["root_cause"].as_str().expect("root_cause");
        assert!(services.contains(root), "{at}: {w}");
        let callers: Vec<&str> = w["callers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        let affected: Vec<&str> = w["affected"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert_eq!(affected.first(), Some(&root), "{at}: {w}");
        assert!(
            affected[1..].iter().all(|a| callers.contains(a)),
            "{at}: {w}"
        );
    }
    let p = &m["propagation"];
    assert!(
        p["entry_affected"].as_u64() <= p["windows_below_entry"].as_u64(),
        "{at}: {p}"
    );
    assert!(read(&dir.join("edges.csv"))
        .starts_with("timestamp,client,server,rps,error_ratio,latency_mean_ms\n"));
}

/// Checks every recording under `root` (`<root>/<scenario>/`) against the anomaly
/// format; returns the number of entities, of fault windows, and the kinds seen.
fn check_anomaly_root(root: &Path, min_rows: usize) -> (usize, usize, BTreeSet<String>) {
    let recordings = dirs(root);
    assert!(
        !recordings.is_empty(),
        "no recording under {}",
        root.display()
    );
    let (mut entities, mut windows, mut kinds) = (0usize, 0usize, BTreeSet::new());
    for dir in recordings {
        let m: Value =
            serde_json::from_str(&read(&dir.join("manifest.json"))).expect("manifest is JSON");
        assert_eq!(m["format"], ANOMALY_FORMAT, "{}", dir.display());
        assert_eq!(
            m["scenario"].as_str(),
            dir.file_name().and_then(|n| n.to_str())
        );
        let step = m["step_s"].as_f64().expect("step_s");
        let rows_expected = m["rows"].as_u64().expect("rows") as usize;
        let ws = m["windows"].as_array().expect("windows");
        for w in ws {
            let k = w["kinds"].as_array().expect("kinds");
            assert!(!k.is_empty());
            for kind in k {
                let kind = kind.as_str().expect("kind is a string");
                assert!(FAULT_KINDS.contains(&kind), "unknown kind {kind}");
                kinds.insert(kind.to_string());
            }
            assert!(w["start"].as_f64() < w["end"].as_f64());
            assert!(ROUTES.contains(&w["route"].as_str().unwrap_or_default()));
        }
        windows += ws.len();
        for e in m["entities"].as_array().expect("entities") {
            let file = dir.join(e["file"].as_str().expect("file"));
            let route = e["route"].as_str().expect("route");
            let (header, rows) = read_csv(&file);
            let ctx = file.display().to_string();
            assert_eq!(
                header.first().map(String::as_str),
                Some("timestamp"),
                "{ctx}"
            );
            assert_eq!(header.last().map(String::as_str), Some("label"), "{ctx}");
            let metrics = &header[1..header.len() - 1];
            assert!(
                metrics.len() >= 8,
                "{ctx}: an entity is multivariate (>= 8 metrics)"
            );
            // Known columns, in the documented order.
            let positions: Vec<usize> = metrics
                .iter()
                .map(|c| {
                    ENTITY_COLUMNS
                        .iter()
                        .position(|k| k == c)
                        .unwrap_or_else(|| panic!("{ctx}: column {c}"))
                })
                .collect();
            assert!(
                positions.windows(2).all(|p| p[0] < p[1]),
                "{ctx}: column order"
            );
            let listed: Vec<&str> = e["metrics"]
                .as_array()
                .expect("metrics")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                listed,
                metrics.iter().map(String::as_str).collect::<Vec<_>>(),
                "{ctx}"
            );
            assert_eq!(rows.len(), rows_expected, "{ctx}: rows");
            assert!(rows.len() >= min_rows, "{ctx}: too short to be useful");
            // Regular time grid.
            for pair in rows.windows(2) {
                assert!(
                    (pair[1][0] - pair[0][0] - step).abs() < 1e-6,
                    "{ctx}: timestamps not on the step grid"
                );
            }
            // Labels are 0/1 and exactly the manifest's windows for this route.
            let route_windows: Vec<(f64, f64)> = ws
                .iter()
                .filter(|w| w["route"] == route)
                .map(|w| {
                    (
                        w["start"].as_f64().unwrap_or(0.0),
                        w["end"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect();
            let mut anomalous = 0u64;
            for r in &rows {
                let label = *r.last().expect("label");
                assert!(label == 0.0 || label == 1.0, "{ctx}: label {label}");
                let inside = route_windows.iter().any(|(s, e)| r[0] >= *s && r[0] < *e);
                assert_eq!(
                    label == 1.0,
                    inside,
                    "{ctx}: label at {} disagrees with the manifest",
                    r[0]
                );
                anomalous += label as u64;
            }
            assert_eq!(Some(anomalous), e["anomalous_rows"].as_u64(), "{ctx}");
            // Mostly real data: the request rate has a value in most rows.
            let rps = header.iter().position(|h| h == "rps").expect("rps column");
            let present = rows.iter().filter(|r| r[rps].is_finite()).count();
            assert!(present * 10 >= rows.len() * 9, "{ctx}: rps mostly missing");
            for (i, r) in rows.iter().enumerate() {
                let er = r[header
                    .iter()
                    .position(|h| h == "error_ratio")
                    .expect("error_ratio")];
                assert!(
                    er.is_nan() || (0.0..=1.0).contains(&er),
                    "{ctx}: row {i} error_ratio {er}"
                );
            }
            entities += 1;
        }
    }
    (entities, windows, kinds)
}

#[test]
fn regression_dataset_matches_the_documented_format() {
    let (pairs, regressions, profiles) = check_regress_dir(&data().join("regress"), 10);
    assert!(pairs >= 60, "{pairs} pairs (want >= 60)");
    assert!(regressions >= 20, "{regressions} regressions (want >= 20)");
    assert!(pairs - regressions >= 20, "too few normal pairs");
    assert!(
        profiles.len() >= 3,
        "load profiles {profiles:?} (want >= 3)"
    );
}

/// Checks a regression dataset directory; returns pairs, regressions and the load
/// profiles of the runs used in pairs.
fn check_regress_dir(dir: &Path, min_rows: usize) -> (usize, usize, BTreeSet<String>) {
    let m: Value =
        serde_json::from_str(&read(&dir.join("manifest.json"))).expect("manifest is JSON");
    assert_eq!(m["format"], REGRESSION_FORMAT);
    let profile_of: HashMap<String, String> = m["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_string(),
                r["profile_kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let text = read(&dir.join("pairs.csv"));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(PAIRS_HEADER));
    let (mut pairs, mut regressions, mut profiles, mut ids) =
        (0usize, 0usize, BTreeSet::new(), BTreeSet::new());
    let mut checked_files = BTreeSet::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 7, "pairs.csv: {line}");
        assert!(
            ids.insert(cells[0].to_string()),
            "repeated pair id {}",
            cells[0]
        );
        let flags: Vec<u8> = cells[3..]
            .iter()
            .map(|c| c.parse().expect("0/1 flag"))
            .collect();
        assert!(flags.iter().all(|f| *f <= 1), "{line}");
        // A pair is a regression exactly when one of its KPIs regressed.
        assert_eq!(flags[0] == 1, flags[1..].contains(&1), "{line}");
        let (base, cur) = (cells[1], cells[2]);
        assert_ne!(base, cur);
        let route = |stem: &str| {
            stem.rsplit_once("__")
                .map(|(_, r)| r.to_string())
                .expect("stem is <run>__<route>")
        };
        assert_eq!(route(base), route(cur), "{line}: routes differ");
        for stem in [base, cur] {
            let run = stem.rsplit_once("__").map(|(r, _)| r).unwrap_or_default();
            profiles.insert(
                profile_of
                    .get(run)
                    .cloned()
                    .unwrap_or_else(|| panic!("run {run} not in manifest")),
            );
            if checked_files.insert(stem.to_string()) {
                check_run_file(&dir.join(format!("{stem}.csv")), min_rows);
            }
        }
        pairs += 1;
        regressions += usize::from(flags[0]);
    }
    (pairs, regressions, profiles)
}

fn check_run_file(path: &Path, min_rows: usize) {
    let ctx = path.display().to_string();
    assert_eq!(read(path).lines().next(), Some(RUN_HEADER), "{ctx}");
    let (_, rows) = read_csv(path);
    assert!(rows.len() >= min_rows, "{ctx}: {} rows", rows.len());
    for pair in rows.windows(2) {
        assert!(pair[1][0] > pair[0][0], "{ctx}: timestamps not increasing");
    }
    let finite = rows
        .iter()
        .filter(|r| r[1..].iter().all(|v| v.is_finite()))
        .count();
    assert!(finite * 10 >= rows.len() * 8, "{ctx}: mostly gaps");
    for r in &rows {
        assert!(r[1].is_nan() || r[1] >= 0.0, "{ctx}: workload {}", r[1]);
        assert!(r[2].is_nan() || r[2] > 0.0, "{ctx}: response_time {}", r[2]);
        assert!(r[3].is_nan() || r[3] >= 0.0, "{ctx}: throughput {}", r[3]);
        assert!(
            r[4].is_nan() || (0.0..=1.0).contains(&r[4]),
            "{ctx}: success_rate {}",
            r[4]
        );
    }
}

#[test]
fn shipped_scenarios_are_valid_and_cover_the_issue() {
    let mut kinds = BTreeSet::new();
    let mut profiles = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("config/lab"))
        .expect("config/lab")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut ten_minutes = false;
    let mut campaigns = 0;
    for f in &files {
        let sc = scenario::load(f).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            names.insert(sc.name.clone()),
            "two scenarios named {}",
            sc.name
        );
        match &sc.body {
            Body::Anomaly(phases) => {
                ten_minutes |= sc.total_duration().as_secs() >= 600;
                for p in phases {
                    kinds.extend(p.faults.iter().flat_map(|f| f.kinds()));
                }
            }
            Body::Regression(c) => {
                campaigns += 1;
                profiles.extend(c.runs.iter().map(|r| r.profile.name()));
                assert!(
                    c.runs.iter().any(|r| r
                        .faults
                        .iter()
                        .any(|f| f.slowdown_pct > 0.0 && f.slowdown_pct <= 20.0)),
                    "a subtle regression"
                );
            }
        }
    }
    assert_eq!(
        kinds.len(),
        FAULT_KINDS.len(),
        "every fault kind has a scenario: {kinds:?}"
    );
    assert!(ten_minutes, "a 10-minute scenario");
    assert_eq!(campaigns, 1);
    assert!(profiles.len() >= 3, "{profiles:?}");
}

const GOOD: &str = r#"
name: t
load: {mode: closed}
phases:
  - {name: a, duration: 10s, profile: {kind: constant, level: 5}}
"#;

fn problems(text: &str) -> Vec<String> {
    match scenario::parse(text) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    }
}

#[test]
fn a_minimal_scenario_is_valid() {
    let sc = scenario::parse(GOOD).expect("valid");
    assert_eq!(sc.total_duration().as_secs(), 10);
    assert_eq!(sc.step, sc.scrape_interval);
    assert_eq!(sc.load.mix.len(), ROUTES.len());
}

#[test]
fn mesh_scenario_mistakes_are_all_reported() {
    let p = problems(
        r#"
name: m
topology: shop
load: {mode: closed, mix: {home: 1}}
phases:
  - name: a
    duration: 10s
    profile: {kind: constant, level: 5}
    faults: [{latency_ms: 5}]
    service_faults: {db: [{latency_ms: 5}], payment: [{error_rate: 2}]}
    calls: {checkout: [{to: cache, p: 1}], cart: [{to: cache, p: 1.5}]}
"#,
    )
    .join("\n");
    for expected in [
        "load.mix: a mesh's load goes to its entry service",
        "phases[0]: a mesh phase injects service_faults",
        "phases[0].service_faults.db: unknown service",
        "phases[0].service_faults.payment[0].error_rate: 2 is out of range",
        "phases[0].calls.checkout[0].to: checkout has no declared call to \"cache\"",
        "phases[0].calls.cart[0].p: 1.5 is not a probability",
    ] {
        assert!(p.contains(expected), "{expected:?} missing in:\n{p}");
    }
    let p = problems(
        "name: m\ntopology: mall\nload: {mode: closed}\nphases:\n  - {name: a, duration: 10s, profile: {kind: constant, level: 5}}\n",
    );
    assert!(
        p[0].starts_with("topology: unknown topology \"mall\""),
        "{p:?}"
    );
    // A topology written out with a misspelt key: the message names it.
    let p = problems(
        "name: m\ntopology: {entry: web, services: {web: {work_ms: 1, calls: [{too: db}]}, db: {}}}\nload: {mode: closed}\nphases:\n  - {name: a, duration: 10s, profile: {kind: constant, level: 5}}\n",
    );
    assert!(p.join("\n").contains("unknown field `too`"), "{p:?}");
    let p = problems(
        "name: m\nload: {mode: closed}\nphases:\n  - {name: a, duration: 10s, profile: {kind: constant, level: 5}, service_faults: {db: [{cpu_ms: 1}]}}\n",
    );
    assert!(
        p[0].contains("service_faults and calls need a topology"),
        "{p:?}"
    );
    let sc = scenario::parse(
        "name: m\ntopology: shop\nload: {mode: closed}\nphases:\n  - {name: a, duration: 10s, profile: {kind: constant, level: 5}}\n",
    )
    .expect("valid");
    assert_eq!(sc.load.mix, vec![("shop".to_string(), 1.0)]);
    assert_eq!(sc.mesh.expect("a mesh").services.len(), 9);
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    for (text, path) in [
        (GOOD.replace("name: t", "name: t\nbogus: 1"), "bogus"),
        (
            GOOD.replace("level: 5}", "level: 5}, colour: red"),
            "phases[0]",
        ),
        (
            GOOD.replace("level: 5}", "level: 5, extra: 1}"),
            "phases[0].profile",
        ),
        (
            GOOD.replace("level: 5}}", "level: 5}, faults: [{latency: 3}]}"),
            "phases[0].faults[0]",
        ),
        (
            GOOD.replace("mode: closed", "mode: closed, users: 3"),
            "load",
        ),
    ] {
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{text}: {p:?}");
        assert!(p[0].starts_with(path), "{p:?} should name {path}");
    }
}

#[test]
fn impossible_values_are_all_reported_before_anything_starts() {
    let text = r#"
name: "bad name"
scrape_interval: 2s
step: 1s
load: {mode: closed, think_time: 10x, mix: {home: 1, nowhere: 2}}
phases:
  - {name: a, duration: 0s, profile: {kind: constant, level: -3}}
  - name: a
    duration: 10s
    profile: {kind: steps, levels: []}
    faults: [{routes: [basket], error_rate: 1.5}, {}]
"#;
    let p = problems(text);
    let expect = [
        "name:",
        "step:",
        "load.think_time:",
        "load.mix.nowhere",
        "phases[0].duration",
        "phases[0].profile.level",
        "phases[1].name",
        "phases[1].profile.levels",
        "phases[1].faults[0].routes",
        "phases[1].faults[0].error_rate",
        "phases[1].faults[1].",
    ];
    for e in expect {
        assert!(
            p.iter().any(|x| x.starts_with(e)),
            "no problem for {e}: {p:#?}"
        );
    }
    assert_eq!(p.len(), expect.len(), "{p:#?}");
}

#[test]
fn campaign_mistakes_are_rejected() {
    let base = r#"
name: c
load: {}
regression:
  runs:
    - {id: b, profile: {kind: constant, level: 4}, duration: 10s}
    - {id: r, profile: {kind: constant, level: 4}, duration: 10s, faults: [{latency_ms: 5}], regressed: [rt]}
    - {id: f, profile: {kind: constant, level: 4}, duration: 10s, faults: [{latency_ms: 5}]}
    - {id: g, profile: {kind: constant, level: 4}, duration: 10s, regressed: [sr]}
  pairs: [[b, r], [r, b], [b, b], [b, nowhere]]
"#;
    let p = problems(base);
    for e in [
        "regression.runs[2]: faults and regressed go together",
        "regression.runs[3]: faults and regressed go together",
        "regression.pairs[1]: baseline \"r\" has faults",
        "regression.pairs[2]: a run cannot be its own baseline",
        "regression.pairs[3]: unknown run \"nowhere\"",
    ] {
        assert!(p.iter().any(|x| x.starts_with(e)), "no problem {e}: {p:#?}");
    }
    assert_eq!(p.len(), 5, "{p:#?}");
    let both = base.replace(
        "regression:",
        "phases: [{name: a, duration: 10s, profile: {kind: constant, level: 1}}]\nregression:",
    );
    assert!(problems(&both).iter().any(|x| x.contains("exclusive")));
    assert!(problems("name: x\nload: {}\n")
        .iter()
        .any(|x| x.contains("phases: empty")));
}

#[test]
fn profiles_parse_from_yaml() {
    let p: Profile = serde_yaml::from_str("{kind: diurnal, min: 1, max: 9}").expect("diurnal");
    assert_eq!(
        p,
        Profile::Diurnal {
            min: 1.0,
            max: 9.0,
            days: 1.0
        }
    );
    assert!(serde_yaml::from_str::<Profile>("{kind: sawtooth, level: 1}").is_err());
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let r = client.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_serves_routes_switches_faults_and_versions() {
    let svc = Service::new("v1", 7).expect("service");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(kpiwatch::lab::service::run(listener, svc, async {
        let _ = stopped.await;
    }));
    let c = reqwest::Client::new();
    for r in ROUTES {
        assert_eq!(get(&c, &format!("{base}/api/{r}")).await.0, 200, "{r}");
    }
    assert_eq!(get(&c, &format!("{base}/api/nowhere")).await.0, 404);

    // Every request of `home` fails while the error fault is on; `item` is untouched.
    let put = |path: &str, body: &'static str| c.put(format!("{base}{path}")).body(body).send();
    let r = put("/admin/faults", r#"[{"routes":["home"],"error_rate":1.0}]"#)
        .await
        .expect("put");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(get(&c, &format!("{base}/api/home")).await.0, 500);
    assert_eq!(get(&c, &format!("{base}/api/item")).await.0, 200);
    let (_, active) = get(&c, &format!("{base}/admin/faults")).await;
    assert!(active.contains("\"error_rate\":1.0"), "{active}");

    // Impossible faults and unknown fields are refused and leave the faults unchanged.
    assert_eq!(
        put("/admin/faults", r#"[{"error_rate":2}]"#)
            .await
            .expect("put")
            .status()
            .as_u16(),
        422
    );
    assert_eq!(
        put("/admin/faults", r#"[{"latency":2}]"#)
            .await
            .expect("put")
            .status()
            .as_u16(),
        400
    );
    assert_eq!(get(&c, &format!("{base}/api/home")).await.0, 500);

    // A deployment changes the version label; clearing faults restores success.
    assert_eq!(
        put("/admin/version", r#"{"version":"v2"}"#)
            .await
            .expect("put")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        put("/admin/faults", "[]")
            .await
            .expect("put")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(get(&c, &format!("{base}/api/home")).await.0, 200);

    let (_, metrics) = get(&c, &format!("{base}/metrics")).await;
    for needle in [
        r#"lab_http_requests_total{code="500",route="home"} 2"#,
        r#"lab_http_requests_total{code="200",route="home"} 2"#,
        r#"lab_build_info{version="v2"} 1"#,
        r#"lab_http_request_duration_seconds_count{route="search"} 1"#,
        r#"lab_dependency_duration_seconds_count{route="checkout"} 1"#,
        r#"lab_fault_active{kind="errors",route="home"} 0"#,
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(needle), "missing {needle}");
    }
    assert!(
        !metrics.contains(r#"lab_build_info{version="v1"}"#),
        "old version still exported"
    );
    let _ = stop.send(());
    server.await.expect("server stops");
}

/// A crash of one lab process ends the run with a message naming it and its log; the
/// supervisor then stops every other process and removes its temporary directory.
#[tokio::test]
async fn a_crashed_process_is_reported_and_the_others_are_stopped() {
    use kpiwatch::lab::procs::Supervisor;
    use kpiwatch::lab::LabError;
    let mut sup = Supervisor::new(false).expect("supervisor");
    let dir = sup.dir().to_path_buf();
    sup.spawn("steady", "sleep", &["60".into()])
        .expect("spawn sleep");
    sup.spawn(
        "flaky",
        "sh",
        &["-c".into(), "echo about to fail; sleep 0.3; exit 3".into()],
    )
    .expect("spawn sh");
    let pids = sup.pids();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), sup.watch())
        .await
        .expect("the crash is noticed");
    match &err {
        LabError::Crashed {
            name, status, tail, ..
        } => {
            assert_eq!(name, "flaky");
            assert!(status.contains('3'), "{status}");
            assert!(tail.contains("about to fail"), "{tail}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(
        err.to_string().starts_with("flaky exited unexpectedly"),
        "{err}"
    );
    drop(sup);
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or at worst a zombie awaiting its parent (state Z), never still running.
        assert!(
            stat.is_empty() || stat.contains(") Z"),
            "process {pid} still alive: {stat}"
        );
    }
    assert!(!dir.exists(), "temporary directory left behind");
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let mut sup = kpiwatch::lab::procs::Supervisor::new(false).expect("supervisor");
    let err = sup
        .spawn("prometheus", "/nonexistent/prometheus", &[])
        .expect_err("cannot start");
    assert!(
        err.to_string()
            .starts_with("cannot start prometheus (/nonexistent/prometheus)"),
        "{err}"
    );
}

/// The whole lab end to end with a real Prometheus and node_exporter (about a minute):
/// `cargo test --test lab -- --ignored`. Needs `/usr/bin/prometheus` and
/// `/usr/bin/prometheus-node-exporter` (or `KPIWATCH_PROMETHEUS` /
/// `KPIWATCH_NODE_EXPORTER`), so it is not part of the default run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "starts a real Prometheus and node_exporter"]
async fn a_short_scenario_records_datasets_in_the_documented_formats() {
    use kpiwatch::lab::runner::{self, RunOptions};
    let out = tempfile::tempdir().expect("tempdir");
    let opts = RunOptions {
        out: out.path().to_path_buf(),
        keep_tmp: false,
        service_program: Some(PathBuf::from(env!("CARGO_BIN_EXE_kpiwatch-lab"))),
    };
    let anomaly = scenario::parse(
        r#"
name: short
load: {mode: closed, think_time: 200ms}
phases:
  - {name: warm, duration: 12s, profile: {kind: linear_ramp, from: 2, to: 8}}
  - name: broken
    duration: 8s
    profile: {kind: constant, level: 8}
    faults: [{routes: [search], latency_ms: 50}, {routes: [checkout], error_rate: 0.5}]
  - {name: after, duration: 6s, profile: {kind: constant, level: 8}, version: v2}
"#,
    )
    .expect("valid");
    let s = runner::run(&anomaly, &opts).await.expect("anomaly run");
    assert_eq!(s.labeled, 2);
    let (entities, windows, kinds) = check_anomaly_root(&out.path().join("anomaly"), 20);
    assert_eq!((entities, windows), (4, 2));
    assert_eq!(kinds.into_iter().collect::<Vec<_>>(), ["errors", "latency"]);

    let campaign = scenario::parse(
        r#"
name: campaign
load: {mode: open}
regression:
  cooldown: 2s
  runs:
    - {id: b, profile: {kind: constant, level: 20}, duration: 16s}
    - id: r
      version: v2
      profile: {kind: steps, levels: [10, 25]}
      duration: 16s
      faults: [{routes: [item], latency_ms: 40}]
      regressed: [rt]
  pairs: [[b, r]]
"#,
    )
    .expect("valid");
    runner::run(&campaign, &opts).await.expect("campaign run");
    let (pairs, regressions, profiles) = check_regress_dir(&out.path().join("regress"), 8);
    assert_eq!((pairs, regressions), (4, 1));
    assert_eq!(profiles.len(), 2);
}

/// The lab is never linked into the agent's code paths: no module outside `src/lab/`
/// and the lab binary refers to it.
#[test]
fn no_agent_module_uses_the_lab() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = root().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let lab_dir = src.join("lab");
    let lab_bin = src.join("bin/kpiwatch-lab.rs");
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| !p.starts_with(&lab_dir) && **p != lab_bin)
        .filter(|p| {
            let text = read(p);
            text.contains("crate::lab") || text.contains("kpiwatch::lab") || text.contains("lab::")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "agent modules using the lab: {offenders:?}"
    );
    assert!(files.len() > 10, "walked too few files");
}

/// A mesh scenario end to end: nine service processes calling each other, a real
/// Prometheus scraping them, two faults below the entry; the dataset has every
/// service's file, the edges, and each window's root cause with the services it
/// affected by the documented rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_scenario_records_services_edges_and_root_causes_through_a_real_prometheus() {
    use kpiwatch::lab::runner::{self, RunOptions};
    let out = tempfile::tempdir().expect("tempdir");
    let opts = RunOptions {
        out: out.path().to_path_buf(),
        keep_tmp: false,
        service_program: Some(PathBuf::from(env!("CARGO_BIN_EXE_kpiwatch-lab"))),
    };
    let sc = scenario::parse(
        r#"
name: mesh-short
topology: shop
load: {mode: closed, think_time: 200ms}
phases:
  - {name: warm, duration: 16s, profile: {kind: constant, level: 5}}
  - name: slow-database
    duration: 12s
    profile: {kind: constant, level: 5}
    service_faults: {database: [{latency_ms: 60}]}
  - {name: calm, duration: 6s, profile: {kind: constant, level: 5}}
  - name: payment-errors
    duration: 12s
    profile: {kind: constant, level: 5}
    service_faults: {payment: [{error_rate: 0.6}]}
    calls: {frontend: [{to: checkout, p: 0.5}]}
"#,
    )
    .expect("valid");
    let s = runner::run(&sc, &opts).await.expect("mesh run");
    assert_eq!(s.labeled, 2, "two fault windows");
    let dir = out.path().join("mesh").join("mesh-short");
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&dir.join("manifest.json"))).expect("manifest");
    assert_eq!(manifest["format"], "kpiwatch-lab-mesh/1");
    let services = manifest["services"].as_array().expect("services");
    assert_eq!(services.len(), 9, "{services:?}");
    for s in services {
        let (header, rows) = read_csv(&dir.join(s["file"].as_str().unwrap()));
        assert!(rows.len() >= 40, "{s}: {} rows", rows.len());
        for col in ["rps", "latency_p95_ms", "root_cause", "affected"] {
            assert!(
                header.iter().any(|h| h == col),
                "{s}: no {col} in {header:?}"
            );
        }
    }
    let windows = manifest["windows"].as_array().expect("windows");
    let roots: Vec<&str> = windows
        .iter()
        .map(|w| w["root_cause"].as_str().unwrap())
        .collect();
    assert_eq!(roots, ["database", "payment"]);
    for w in windows {
        let affected: Vec<&str> = w["affected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            affected[0], w["root_cause"],
            "the root cause comes first: {w}"
        );
        let callers = w["callers"].as_array().unwrap();
        assert!(callers.iter().any(|c| c == "frontend"), "{w}");
        assert!(
            affected[1..].iter().all(|a| callers.iter().any(|c| c == a)),
            "only callers are affected: {w}"
        );
    }
    // The faults reached the entry service in at least one window (the figure itself is
    // reported by the recordings, not asserted here).
    let propagation = &manifest["propagation"];
    assert_eq!(propagation["windows_below_entry"], 2);
    assert!(
        propagation["entry_affected"].as_u64().unwrap() >= 1,
        "{propagation}"
    );
    let edges = read(&dir.join("edges.csv"));
    assert!(edges.starts_with("timestamp,client,server,rps,error_ratio,latency_mean_ms\n"));
    for edge in [
        ",frontend,catalog,",
        ",checkout,payment,",
        ",catalog,cache,",
    ] {
        assert!(edges.contains(edge), "no {edge} rows");
    }
}
