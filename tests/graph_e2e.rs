//! End-to-end service graph: the lab's nine-service shop calling itself over real HTTP,
//! a real Prometheus scraping it and kpiwatch, the shipped alert rules, a real
//! Alertmanager.
//!
//! ```text
//!  load ──▶ frontend ──▶ catalog, cart, ... ──▶ database      (in this test's runtime)
//!              │ RED metrics, traces_service_graph_* per edge
//!              ▼
//!          Prometheus ◀──query_range/query── kpiwatch (z-score per service + graph)
//!              │  ▲                              │
//!              │  └──────── scrape ──────────────┘ (honor_labels: true)
//!              ▼
//!          Alertmanager (shipped rules, `for:` shortened to 2s)
//! ```
//!
//! The database (a leaf) turns slow: within a few cycles it must rank first as the
//! probable origin and at least one of its callers must be marked its symptom, and
//! `KpiwatchProbableRootCause` must reach Alertmanager naming the database. Needs
//! `prometheus` and `prometheus-alertmanager` on PATH (skipped locally without them,
//! a failure under CI).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kpiwatch::lab::mesh::{self, MeshFault, MeshService};
use kpiwatch::lab::topology::Topology;

use common::{free_port, http_get, query, shortened_rules, Procs};

#[test]
fn a_slow_leaf_ranks_first_and_its_callers_are_marked_its_symptoms() {
    if !common::tools_or_skip(&["prometheus", "prometheus-alertmanager"]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // The shop, in this process: each service on its own loopback port.
    let topology = Topology::shop();
    let ports: BTreeMap<String, u16> = topology
        .services
        .keys()
        .map(|n| (n.clone(), free_port()))
        .collect();
    let addresses: BTreeMap<String, String> = ports
        .iter()
        .map(|(n, p)| (n.clone(), format!("127.0.0.1:{p}")))
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut services: BTreeMap<String, Arc<MeshService>> = BTreeMap::new();
    for (name, addr) in &addresses {
        let service = MeshService::new(name, &topology, &addresses, 7).expect("service");
        services.insert(name.clone(), service.clone());
        let (addr, mut stopped) = (addr.clone(), stopped.clone());
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
            mesh::run(listener, service, async move {
                let _ = stopped.changed().await;
            })
            .await;
        });
    }
    // Six users: request, think 100 ms, repeat.
    let entry = format!("http://{}/api/shop", addresses["frontend"]);
    for _ in 0..6 {
        let (url, stopped) = (entry.clone(), stopped.clone());
        rt.spawn(async move {
            let client = reqwest::Client::new();
            while !*stopped.borrow() {
                let _ = client.get(&url).send().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    let (prom_port, am_port, kw_port) = (free_port(), free_port(), free_port());
    let mut procs = Procs::new(dir);
    procs.spawn_alertmanager(
        "prometheus-alertmanager".as_ref(),
        am_port,
        "route: {receiver: none, group_wait: 1s, group_interval: 1s}\nreceivers: [{name: none}]\n",
    );
    std::fs::write(dir.join("rules.yml"), shortened_rules()).expect("write rules.yml");
    let targets: Vec<String> = addresses.values().map(|a| format!("'{a}'")).collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{rules}']\n\
             alerting: {{alertmanagers: [{{static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]}}]}}\n\
             scrape_configs:\n\
             - {{job_name: shop, static_configs: [{{targets: [{targets}]}}]}}\n\
             - {{job_name: kpiwatch, honor_labels: true, static_configs: [{{targets: ['127.0.0.1:{kw_port}']}}]}}\n",
            rules = dir.join("rules.yml").display(),
            targets = targets.join(", "),
        ),
    )
    .expect("write prometheus.yml");
    procs.spawn(
        "prometheus",
        Command::new("prometheus").args([
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
            "--log.level=warn".to_string(),
        ]),
    );
    // One entity per service: its p95 latency, scored by the z-score (rises only), and
    // the graph from the Tempo-shaped edge metrics the services export.
    std::fs::write(
        dir.join("kpiwatch.yaml"),
        format!(
            r#"prometheus: {{url: "http://127.0.0.1:{prom_port}", timeout: 5s}}
server: {{listen: "127.0.0.1:{kw_port}"}}
groups:
  - name: shop
    interval: 1s
    step: 1s
    window: 8
    history: 2m
    entity_labels: [service]
    metrics:
      latency: 'histogram_quantile(0.95, sum by (service, le) (rate(lab_service_request_duration_seconds_bucket[5s])))'
    gates:
      latency: {{direction: up, min_relative_deviation: 0.2}}
    detectors:
      zscore: {{min_points: 16}}
    graph:
      query: 'sum by (client, server) (rate(traces_service_graph_request_total[10s]))'
"#
        ),
    )
    .expect("write kpiwatch.yaml");
    procs.spawn(
        "kpiwatch",
        Command::new(common::BIN).args([
            "run".to_string(),
            format!("--config={}", dir.join("kpiwatch.yaml").display()),
        ]),
    );
    procs.wait_ready("prometheus", prom_port);
    procs.wait_ready("alertmanager", am_port);

    // Warm-up: every service scored by the graph, and the graph's edges all between
    // known services.
    procs.wait_for(
        "graph scores of the nine services",
        Duration::from_secs(120),
        || {
            query(
                prom_port,
                r#"kpiwatch_anomaly_score{detector="graph",group="shop"}"#,
            )
            .len()
                == 9
        },
    );
    procs.wait_for("warm z-scores", Duration::from_secs(60), || {
        query(
            prom_port,
            r#"kpiwatch_anomaly_score{detector="zscore",group="shop"}"#,
        )
        .len()
            == 9
    });
    let edges = value(prom_port, r#"kpiwatch_graph_edges{group="shop"}"#);
    assert!(edges >= 10.0, "{edges} edges (the shop has 14 calls)");
    assert_eq!(
        value(prom_port, r#"kpiwatch_graph_edges_unknown{group="shop"}"#),
        0.0
    );

    services["database"]
        .set_faults(vec![MeshFault {
            latency_ms: 40.0,
            ..MeshFault::default()
        }])
        .expect("fault");
    let callers = ["catalog", "cart", "payment", "shipping"];
    let mut symptoms = Vec::new();
    procs.wait_for(
        "the database ranked first and a caller marked its symptom",
        Duration::from_secs(60),
        || {
            let first = query(prom_port, r#"kpiwatch_rootcause_rank{group="shop"} == 1"#);
            symptoms = query(
                prom_port,
                r#"kpiwatch_symptom{group="shop",cause="database"}"#,
            )
            .iter()
            .filter_map(|r| r["metric"]["service"].as_str().map(String::from))
            .collect();
            first.len() == 1
                && first[0]["metric"]["service"] == "database"
                && symptoms.iter().any(|s| callers.contains(&s.as_str()))
        },
    );
    // Only services that reach the database are its symptoms.
    let reach_database = [
        "catalog",
        "cart",
        "payment",
        "shipping",
        "checkout",
        "recommendation",
        "frontend",
    ];
    assert!(
        symptoms
            .iter()
            .all(|s| reach_database.contains(&s.as_str())),
        "{symptoms:?}"
    );
    assert!(
        query(
            prom_port,
            r#"kpiwatch_symptom{group="shop",service="database"}"#
        )
        .is_empty(),
        "the origin is never its own symptom"
    );
    procs.wait_for(
        "KpiwatchProbableRootCause for the database in Alertmanager",
        Duration::from_secs(60),
        || {
            let Some((200, body)) = http_get(am_port, "/api/v2/alerts") else {
                return false;
            };
            let alerts: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            alerts.as_array().into_iter().flatten().any(|a| {
                a["labels"]["alertname"] == "KpiwatchProbableRootCause"
                    && a["labels"]["service"] == "database"
                    && a["labels"]["group"] == "shop"
            })
        },
    );
    let _ = stop.send(true);
    rt.shutdown_timeout(Duration::from_secs(2));
}

/// The value of an instant query with one series (NaN when it has none).
fn value(prom_port: u16, promql: &str) -> f64 {
    query(prom_port, promql)
        .first()
        .and_then(|r| r["value"][1].as_str()?.parse().ok())
        .unwrap_or(f64::NAN)
}
