//! Plays a validated [`Scenario`]: starts the service, node_exporter and Prometheus as
//! child processes and the load generator in-process, waits until Prometheus scrapes
//! every target, plays the phases (or the campaign's runs), exports the recording, and
//! stops everything. A crash of any child, Ctrl-C or SIGTERM ends the run with a clear
//! error; the [`Supervisor`] kills the remaining children on every path.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;

use super::load::LoadGen;
use super::procs::{self, Supervisor};
use super::record::{self, PromClient, Segment};
use super::scenario::{Body, Scenario};
use super::service::Faults;
use super::{free_port, LabError};
use crate::export::http::serve_http;

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Dataset root: anomaly recordings go to `<out>/anomaly/<name>/`, campaigns to
    /// `<out>/regress/`.
    pub out: PathBuf,
    /// Keep the temporary directory (Prometheus TSDB, logs) after the run.
    pub keep_tmp: bool,
    /// The program that serves the lab service (`<program> serve …`); default: this
    /// executable.
    pub service_program: Option<PathBuf>,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Directory of the dataset.
    pub dir: PathBuf,
    /// Files written.
    pub files: usize,
    /// Labeled fault windows (anomaly) or pairs (regression).
    pub labeled: usize,
}

/// Where the lab's components listen.
#[derive(Debug, Clone, Copy)]
struct Ports {
    service: u16,
    load: u16,
    node: u16,
    prometheus: u16,
}

/// Runs `sc` end to end and writes its dataset.
pub async fn run(sc: &Scenario, opts: &RunOptions) -> Result<RunSummary, LabError> {
    let mut sup = Supervisor::new(opts.keep_tmp)?;
    let ports = Ports {
        service: free_port()?,
        load: free_port()?,
        node: free_port()?,
        prometheus: free_port()?,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| LabError::Http {
            url: "client".into(),
            detail: e.to_string(),
        })?;
    let service_url = format!("http://127.0.0.1:{}", ports.service);
    let prom = PromClient::new(&format!("http://127.0.0.1:{}", ports.prometheus))?;

    start_children(&mut sup, sc, opts, ports)?;

    // The load generator runs in-process; its metrics get their own port.
    let registry = Registry::new();
    let load = LoadGen::new(&service_url, sc.load.clone(), &registry)?;
    let registry = Arc::new(registry);
    let listener = TcpListener::bind(("127.0.0.1", ports.load))
        .await
        .map_err(LabError::io(format!("127.0.0.1:{}", ports.load)))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(serve_http(
        listener,
        async {
            let _ = stop_rx.await;
        },
        None,
        move |_req| {
            let r = Arc::clone(&registry);
            async move { Ok(crate::export::http::metrics(&r, |_| {})) }
        },
    ));

    let ready = async {
        procs::wait_ready(
            &mut sup,
            &client,
            "service",
            &format!("{service_url}/healthz"),
            30,
        )
        .await?;
        let node = format!("http://127.0.0.1:{}/metrics", ports.node);
        procs::wait_ready(&mut sup, &client, "node_exporter", &node, 30).await?;
        let p = format!("http://127.0.0.1:{}/-/ready", ports.prometheus);
        procs::wait_ready(&mut sup, &client, "prometheus", &p, 60).await?;
        wait_targets_up(&mut sup, &prom, 4, 60).await
    };
    let ready = with_interrupt(ready).await;
    if let Err(e) = ready {
        let _ = stop_tx.send(());
        return Err(e);
    }
    tracing::info!(scenario = %sc.name, total = ?sc.total_duration(), "Lab ready; playing the scenario.");

    let driver = tokio::spawn(load.clone().drive());
    let played = {
        let play = play(sc, &client, &service_url, &load);
        tokio::select! {
            r = with_interrupt(play) => r,
            e = sup.watch() => Err(e),
        }
    };
    load.stop();
    driver.abort();
    let segments = match played {
        Ok(s) => s,
        Err(e) => {
            let _ = stop_tx.send(());
            return Err(e);
        }
    };
    // Let Prometheus scrape the last samples before reading them back.
    tokio::time::sleep(sc.scrape_interval * 3).await;
    sup.check()?;
    let summary = record::export(&prom, sc, &segments, &opts.out).await;
    let _ = stop_tx.send(());
    let _ = metrics_server.await;
    sup.stop_all();
    summary
}

fn start_children(
    sup: &mut Supervisor,
    sc: &Scenario,
    opts: &RunOptions,
    ports: Ports,
) -> Result<(), LabError> {
    let exe = match &opts.service_program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(LabError::io("current executable"))?,
    };
    let first_version = match &sc.body {
        Body::Anomaly(phases) => phases.first().and_then(|p| p.version.clone()),
        Body::Regression(c) => c.runs.first().map(|r| r.version.clone()),
    }
    .unwrap_or_else(|| "v1".into());
    sup.spawn(
        "service",
        &exe.display().to_string(),
        &[
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports.service),
            "--version".into(),
            first_version,
            "--seed".into(),
            sc.load.seed.to_string(),
        ],
    )?;
    sup.spawn(
        "node_exporter",
        &procs::program("KPIWATCH_NODE_EXPORTER", procs::NODE_EXPORTER_BIN),
        &[
            format!("--web.listen-address=127.0.0.1:{}", ports.node),
            "--collector.disable-defaults".into(),
            "--collector.cpu".into(),
            "--collector.meminfo".into(),
            "--collector.loadavg".into(),
        ],
    )?;
    let config = procs::write_prometheus_config(
        sup.dir(),
        sc.scrape_interval,
        &[
            ("prometheus", ports.prometheus),
            ("node", ports.node),
            ("service", ports.service),
            ("load", ports.load),
        ],
    )?;
    let tsdb = sup.dir().join("tsdb");
    sup.spawn(
        "prometheus",
        &procs::program("KPIWATCH_PROMETHEUS", procs::PROMETHEUS_BIN),
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", tsdb.display()),
            format!("--web.listen-address=127.0.0.1:{}", ports.prometheus),
            "--storage.tsdb.retention.time=1d".into(),
            "--log.level=warn".into(),
        ],
    )
}

/// Runs `fut` unless Ctrl-C or SIGTERM comes first.
async fn with_interrupt<T>(
    fut: impl std::future::Future<Output = Result<T, LabError>>,
) -> Result<T, LabError> {
    let term = async {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };
    tokio::select! {
        r = fut => r,
        _ = tokio::signal::ctrl_c() => Err(LabError::Interrupted),
        () = term => Err(LabError::Interrupted),
    }
}

async fn wait_targets_up(
    sup: &mut Supervisor,
    prom: &PromClient,
    want: usize,
    secs: u64,
) -> Result<(), LabError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        sup.check()?;
        match prom.query("sum(up)").await {
            Ok(v) if v.first().map(|(_, x)| *x as usize) == Some(want) => return Ok(()),
            Ok(v) => last = format!("sum(up) = {:?}", v.first().map(|(_, x)| *x)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(LabError::NotReady {
        what: "Prometheus targets".into(),
        secs,
        detail: last,
    })
}

async fn put_json<T: serde::Serialize + ?Sized>(
    client: &reqwest::Client,
    url: &str,
    body: &T,
) -> Result<(), LabError> {
    let err = |detail: String| LabError::Http {
        url: url.to_string(),
        detail,
    };
    let resp = client
        .put(url)
        .json(body)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(err(format!("{status}: {text}")));
    }
    Ok(())
}

async fn set_state(
    client: &reqwest::Client,
    service: &str,
    version: Option<&str>,
    faults: &[Faults],
) -> Result<(), LabError> {
    if let Some(v) = version {
        put_json(
            client,
            &format!("{service}/admin/version"),
            &serde_json::json!({ "version": v }),
        )
        .await?;
    }
    put_json(client, &format!("{service}/admin/faults"), faults).await
}

async fn play(
    sc: &Scenario,
    client: &reqwest::Client,
    service: &str,
    load: &LoadGen,
) -> Result<Vec<Segment>, LabError> {
    let mut segments = Vec::new();
    match &sc.body {
        Body::Anomaly(phases) => {
            for (i, ph) in phases.iter().enumerate() {
                set_state(client, service, ph.version.as_deref(), &ph.faults).await?;
                load.set_plan(ph.profile.clone(), ph.duration);
                let start_ms = crate::clock::now_ms();
                tracing::info!(phase = %ph.name, n = i + 1, of = phases.len(), duration = ?ph.duration, faults = ph.faults.len(), "Phase started.");
                tokio::time::sleep(ph.duration).await;
                segments.push(Segment {
                    index: i,
                    start_ms,
                    end_ms: crate::clock::now_ms(),
                });
            }
            set_state(client, service, None, &[]).await?;
        }
        Body::Regression(c) => {
            for (i, run) in c.runs.iter().enumerate() {
                set_state(client, service, Some(&run.version), &run.faults).await?;
                load.set_plan(run.profile.clone(), run.duration);
                let start_ms = crate::clock::now_ms();
                tracing::info!(run = %run.id, n = i + 1, of = c.runs.len(), duration = ?run.duration, "Load-test run started.");
                tokio::time::sleep(run.duration).await;
                let end_ms = crate::clock::now_ms();
                load.stop();
                set_state(client, service, None, &[]).await?;
                segments.push(Segment {
                    index: i,
                    start_ms,
                    end_ms,
                });
                tokio::time::sleep(c.cooldown).await;
            }
        }
    }
    Ok(segments)
}
