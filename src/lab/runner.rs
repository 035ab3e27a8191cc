//! Plays a validated [`Scenario`]: starts the service, node_exporter and Prometheus as
//! child processes and the load generator in-process, waits until Prometheus scrapes
//! every target, plays the phases (or the campaign's runs), exports the recording, and
//! stops everything. A crash of any child, Ctrl-C or SIGTERM ends the run with a clear
//! error; the [`Supervisor`] kills the remaining children on every path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use tokio::net::TcpListener;

use super::load::LoadGen;
use super::mesh::MeshFile;
use super::procs::{self, Supervisor};
use super::record::{self, PromClient, Segment};
use super::scenario::{Body, Phase, Scenario};
use super::service::Faults;
use super::topology::Topology;
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
#[derive(Debug, Clone)]
struct Ports {
    /// The test service, or the mesh's entry service.
    service: u16,
    /// Every mesh service by name (empty without a mesh).
    mesh: BTreeMap<String, u16>,
    load: u16,
    node: u16,
    prometheus: u16,
}

impl Ports {
    fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }

    /// Base URLs of the services the scenario changes: the test service, or every mesh
    /// service by name.
    fn service_urls(&self) -> BTreeMap<String, String> {
        if self.mesh.is_empty() {
            BTreeMap::from([("service".to_string(), Self::url(self.service))])
        } else {
            self.mesh
                .iter()
                .map(|(n, p)| (n.clone(), Self::url(*p)))
                .collect()
        }
    }
}

/// Prometheus job (and process) name of mesh service `name`.
pub fn mesh_job(name: &str) -> String {
    format!("mesh_{name}")
}

/// Runs `sc` end to end and writes its dataset.
pub async fn run(sc: &Scenario, opts: &RunOptions) -> Result<RunSummary, LabError> {
    let mut sup = Supervisor::new(opts.keep_tmp)?;
    let mut mesh = BTreeMap::new();
    for name in sc.mesh.iter().flat_map(|t| t.services.keys()) {
        mesh.insert(name.clone(), free_port()?);
    }
    let ports = Ports {
        service: match &sc.mesh {
            Some(t) => mesh[&t.entry],
            None => free_port()?,
        },
        mesh,
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

    start_children(&mut sup, sc, opts, &ports)?;

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

    let services = ports.service_urls();
    let ready = async {
        for (name, url) in &services {
            procs::wait_ready(&mut sup, &client, name, &format!("{url}/healthz"), 30).await?;
        }
        let node = format!("http://127.0.0.1:{}/metrics", ports.node);
        procs::wait_ready(&mut sup, &client, "node_exporter", &node, 30).await?;
        let p = format!("http://127.0.0.1:{}/-/ready", ports.prometheus);
        procs::wait_ready(&mut sup, &client, "prometheus", &p, 60).await?;
        wait_targets_up(&mut sup, &prom, 3 + services.len(), 60).await
    };
    let ready = with_interrupt(ready).await;
    if let Err(e) = ready {
        let _ = stop_tx.send(());
        return Err(e);
    }
    tracing::info!(scenario = %sc.name, total = ?sc.total_duration(), "Lab ready; playing the scenario.");

    let driver = tokio::spawn(load.clone().drive());
    let played = {
        let play = play(sc, &client, &services, &load);
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
    ports: &Ports,
) -> Result<(), LabError> {
    let exe = match &opts.service_program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(LabError::io("current executable"))?,
    };
    let mut targets: Vec<(String, u16)> = vec![
        ("prometheus".into(), ports.prometheus),
        ("node".into(), ports.node),
        ("load".into(), ports.load),
    ];
    match &sc.mesh {
        Some(topology) => {
            start_mesh(sup, &exe, topology, ports, sc.load.seed)?;
            targets.extend(ports.mesh.iter().map(|(n, p)| (mesh_job(n), *p)));
        }
        None => {
            start_service(sup, &exe, sc, ports)?;
            targets.push(("service".into(), ports.service));
        }
    }
    start_node_exporter(sup, ports)?;
    let targets: Vec<(&str, u16)> = targets.iter().map(|(j, p)| (j.as_str(), *p)).collect();
    let config = procs::write_prometheus_config(sup.dir(), sc.scrape_interval, &targets)?;
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

/// Starts every service of `topology` (`serve --service NAME --mesh FILE`).
fn start_mesh(
    sup: &mut Supervisor,
    exe: &std::path::Path,
    topology: &Topology,
    ports: &Ports,
    seed: u64,
) -> Result<(), LabError> {
    let file = MeshFile {
        topology: topology.clone(),
        addresses: ports
            .mesh
            .iter()
            .map(|(n, p)| (n.clone(), format!("127.0.0.1:{p}")))
            .collect(),
        seed,
    };
    let path = sup.dir().join("mesh.json");
    let text = serde_json::to_string_pretty(&file).map_err(|e| LabError::Http {
        url: path.display().to_string(),
        detail: e.to_string(),
    })?;
    std::fs::write(&path, text).map_err(LabError::io(&path))?;
    for name in topology.services.keys() {
        sup.spawn(
            &mesh_job(name),
            &exe.display().to_string(),
            &[
                "serve".into(),
                "--service".into(),
                name.clone(),
                "--mesh".into(),
                path.display().to_string(),
            ],
        )?;
    }
    Ok(())
}

/// Starts the test service.
fn start_service(
    sup: &mut Supervisor,
    exe: &std::path::Path,
    sc: &Scenario,
    ports: &Ports,
) -> Result<(), LabError> {
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
    )
}

fn start_node_exporter(sup: &mut Supervisor, ports: &Ports) -> Result<(), LabError> {
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

/// Puts every mesh service in the state `phase` asks for (no phase: the topology's,
/// without faults).
async fn set_mesh_state(
    client: &reqwest::Client,
    topology: &Topology,
    services: &BTreeMap<String, String>,
    phase: Option<&Phase>,
) -> Result<(), LabError> {
    let now = match phase {
        Some(p) => topology.with_calls(&p.calls),
        None => topology.clone(),
    };
    for (name, spec) in &now.services {
        let url = &services[name];
        let faults = phase
            .and_then(|p| p.service_faults.get(name))
            .map_or(&[][..], |f| &f[..]);
        put_json(client, &format!("{url}/admin/faults"), faults).await?;
        put_json(client, &format!("{url}/admin/calls"), &spec.calls).await?;
    }
    Ok(())
}

async fn play(
    sc: &Scenario,
    client: &reqwest::Client,
    services: &BTreeMap<String, String>,
    load: &LoadGen,
) -> Result<Vec<Segment>, LabError> {
    let mut segments = Vec::new();
    let service = services.values().next().map_or("", String::as_str);
    match &sc.body {
        Body::Anomaly(phases) => {
            for (i, ph) in phases.iter().enumerate() {
                match &sc.mesh {
                    Some(t) => set_mesh_state(client, t, services, Some(ph)).await?,
                    None => set_state(client, service, ph.version.as_deref(), &ph.faults).await?,
                }
                load.set_plan(ph.profile.clone(), ph.duration);
                let start_ms = crate::clock::now_ms();
                tracing::info!(phase = %ph.name, n = i + 1, of = phases.len(), duration = ?ph.duration, faults = ph.faults.len() + ph.faulty_services().len(), "Phase started.");
                tokio::time::sleep(ph.duration).await;
                segments.push(Segment {
                    index: i,
                    start_ms,
                    end_ms: crate::clock::now_ms(),
                });
            }
            match &sc.mesh {
                Some(t) => set_mesh_state(client, t, services, None).await?,
                None => set_state(client, service, None, &[]).await?,
            }
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
