//! One service of the lab's service mesh: it serves `GET /api`, spends its own time and
//! CPU, and calls its callees ([`super::topology`]) over real HTTP with a bounded pool,
//! a timeout and retries, so that a callee's slowness queues, times out and amplifies
//! upstream and its errors come back as 5xx. Each service runs in its own process
//! (`kpiwatch-lab serve --service NAME --mesh FILE`).
//!
//! Endpoints: `GET /api` or `/api/<anything>` (the business request; the caller's name in the
//! [`CALLER_HEADER`] header, `user` without it), `GET /metrics`, `GET /healthz`,
//! `GET|PUT /admin/faults` (a JSON list of [`MeshFault`]; their effects add up; `[]`
//! clears) and `GET|PUT /admin/calls` (new probabilities for some of the service's
//! declared calls: a shifted call weight or a failover).
//!
//! Metrics: `lab_service_requests_total{service,code}`,
//! `lab_service_request_duration_seconds{service}`, `lab_service_in_flight{service}`,
//! `lab_fault_active{service,kind}` (ground truth), `process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, and per edge, in the shape of the Tempo /
//! OpenTelemetry service-graph connector's metrics (so the agent's configuration for
//! them serves a user with Tempo or Grafana Alloy; the lab does not run Tempo):
//! `traces_service_graph_request_total{client,server}`,
//! `traces_service_graph_request_failed_total{client,server}` and
//! `traces_service_graph_request_client_seconds{client,server}` from the caller (one
//! count per attempt, a timeout is a failure), and
//! `traces_service_graph_request_server_seconds{client,server}` from the callee.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{
    Counter, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::service::{burn_cpu, lognormal, read_cpu_ticks, read_json, read_rss_bytes, sleep_ms};
use super::topology::{Call, Topology};
use super::LabError;
use crate::export::http::{json, text, Body};

/// Header naming the calling service.
pub const CALLER_HEADER: &str = "x-lab-caller";

/// The caller name of requests without [`CALLER_HEADER`] (the load generator), as the
/// service-graph connector names the callers of root spans.
pub const USER: &str = "user";

/// Fault kinds a [`MeshFault`] can carry, as `lab_fault_active` and manifests name them.
pub const MESH_FAULT_KINDS: &[&str] =
    &["latency", "ramp", "cpu", "errors", "workers", "client_pool"];

/// How long a request waits for a worker before it gets a 503.
const QUEUE_TIMEOUT: Duration = Duration::from_millis(1000);

/// One fault injected into a service. Several may be active; their effects add up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshFault {
    /// Latency added to every request, milliseconds (beyond the callers' timeout: a hang).
    pub latency_ms: f64,
    /// Uniform random latency in `[0, jitter_ms)` added to every request, milliseconds.
    pub jitter_ms: f64,
    /// Latency that grows by this much per minute since the fault began, milliseconds.
    pub ramp_ms_per_min: f64,
    /// Busy-loop CPU per request, milliseconds.
    pub cpu_ms: f64,
    /// Probability that a request fails with 500.
    pub error_rate: f64,
    /// Requests served at once while the fault lasts (a shrunken worker pool; 0: as
    /// configured).
    pub workers: usize,
    /// Requests in flight per callee while the fault lasts (a shrunken client pool; 0:
    /// as configured).
    pub client_pool: usize,
}

impl MeshFault {
    /// The kinds (from [`MESH_FAULT_KINDS`]) this fault injects.
    pub fn kinds(&self) -> Vec<&'static str> {
        let on = [
            self.latency_ms > 0.0 || self.jitter_ms > 0.0,
            self.ramp_ms_per_min > 0.0,
            self.cpu_ms > 0.0,
            self.error_rate > 0.0,
            self.workers > 0,
            self.client_pool > 0,
        ];
        MESH_FAULT_KINDS
            .iter()
            .zip(on)
            .filter_map(|(k, on)| on.then_some(*k))
            .collect()
    }

    /// Problems, each as `field: message`; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v, max) in [
            ("latency_ms", self.latency_ms, 60_000.0),
            ("jitter_ms", self.jitter_ms, 60_000.0),
            ("ramp_ms_per_min", self.ramp_ms_per_min, 60_000.0),
            ("cpu_ms", self.cpu_ms, 1_000.0),
            ("error_rate", self.error_rate, 1.0),
        ] {
            if !v.is_finite() || !(0.0..=max).contains(&v) {
                out.push(format!("{name}: {v} is out of range (expected 0 to {max})"));
            }
        }
        for (name, v, max) in [
            ("workers", self.workers, 10_000),
            ("client_pool", self.client_pool, 1_000),
        ] {
            if v > max {
                out.push(format!("{name}: {v} is out of range (expected 0 to {max})"));
            }
        }
        if self.kinds().is_empty() {
            out.push("the fault injects nothing (set at least one field)".into());
        }
        out
    }
}

/// The faults and calls in force, swapped whole on each admin change.
#[derive(Debug)]
struct Active {
    faults: Vec<MeshFault>,
    calls: Vec<Call>,
    /// Since when the faults are in force (for the ramp).
    since: tokio::time::Instant,
    latency_ms: f64,
    jitter_ms: f64,
    ramp_ms_per_min: f64,
    cpu_ms: f64,
    error_rate: f64,
    /// The shrunken worker pool, while a fault has one.
    workers: Option<Arc<Semaphore>>,
    /// The client pool of each callee.
    pools: BTreeMap<String, Arc<Semaphore>>,
}

impl Active {
    fn new(faults: Vec<MeshFault>, calls: Vec<Call>, client_pool: usize) -> Active {
        let sum = |f: fn(&MeshFault) -> f64| faults.iter().map(f).sum::<f64>();
        let smallest = |f: fn(&MeshFault) -> usize| faults.iter().map(f).filter(|&n| n > 0).min();
        let pool = smallest(|f| f.client_pool).unwrap_or(client_pool);
        Active {
            latency_ms: sum(|f| f.latency_ms),
            jitter_ms: sum(|f| f.jitter_ms),
            ramp_ms_per_min: sum(|f| f.ramp_ms_per_min),
            cpu_ms: sum(|f| f.cpu_ms),
            error_rate: 1.0 - faults.iter().map(|f| 1.0 - f.error_rate).product::<f64>(),
            workers: smallest(|f| f.workers).map(|n| Arc::new(Semaphore::new(n))),
            pools: calls
                .iter()
                .map(|c| (c.to.clone(), Arc::new(Semaphore::new(pool))))
                .collect(),
            since: tokio::time::Instant::now(),
            faults,
            calls,
        }
    }
}

#[derive(Debug)]
struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    fault_active: IntGaugeVec,
    edge_requests: IntCounterVec,
    edge_failed: IntCounterVec,
    edge_client_seconds: HistogramVec,
    edge_server_seconds: HistogramVec,
    cpu_seconds: Counter,
    rss_bytes: Gauge,
}

impl Metrics {
    fn new(service: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let buckets = vec![
            0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.clone()),
                labels,
            )
        };
        let edge = ["client", "server"];
        let m = Metrics {
            requests: IntCounterVec::new(
                Opts::new("lab_service_requests_total", "Requests served, by status code."),
                &["service", "code"],
            )?,
            duration: histogram(
                "lab_service_request_duration_seconds",
                "Latency of the requests served, calls to callees included.",
                &["service"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new("lab_service_in_flight", "Requests being served."),
                &["service"],
            )?,
            fault_active: IntGaugeVec::new(
                Opts::new("lab_fault_active", "1 while a fault of this kind hits this service."),
                &["service", "kind"],
            )?,
            edge_requests: IntCounterVec::new(
                Opts::new(
                    "traces_service_graph_request_total",
                    "Calls from client to server (each attempt), counted by the client.",
                ),
                &edge,
            )?,
            edge_failed: IntCounterVec::new(
                Opts::new(
                    "traces_service_graph_request_failed_total",
                    "Failed calls from client to server (5xx, connection error or timeout), counted by the client.",
                ),
                &edge,
            )?,
            edge_client_seconds: histogram(
                "traces_service_graph_request_client_seconds",
                "Duration of calls from client to server as the client saw them (pool wait included).",
                &edge,
            )?,
            edge_server_seconds: histogram(
                "traces_service_graph_request_server_seconds",
                "Duration of calls from client to server as the server served them.",
                &edge,
            )?,
            cpu_seconds: Counter::new("process_cpu_seconds_total", "User and system CPU time.")?,
            rss_bytes: Gauge::new("process_resident_memory_bytes", "Resident memory size.")?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.duration.clone()))?;
        m.registry.register(Box::new(m.in_flight.clone()))?;
        m.registry.register(Box::new(m.fault_active.clone()))?;
        m.registry.register(Box::new(m.edge_requests.clone()))?;
        m.registry.register(Box::new(m.edge_failed.clone()))?;
        m.registry
            .register(Box::new(m.edge_client_seconds.clone()))?;
        m.registry
            .register(Box::new(m.edge_server_seconds.clone()))?;
        m.registry.register(Box::new(m.cpu_seconds.clone()))?;
        m.registry.register(Box::new(m.rss_bytes.clone()))?;
        // Every series exists from the first scrape.
        m.in_flight.with_label_values(&[service]).set(0);
        m.requests.with_label_values(&[service, "200"]);
        m.duration.with_label_values(&[service]);
        for k in MESH_FAULT_KINDS {
            m.fault_active.with_label_values(&[service, k]).set(0);
        }
        Ok(m)
    }
}

/// One running mesh service.
#[derive(Debug)]
pub struct MeshService {
    name: String,
    topology: Topology,
    /// Callee name → base URL (`http://host:port`).
    urls: BTreeMap<String, String>,
    http: reqwest::Client,
    workers: Semaphore,
    active: RwLock<Arc<Active>>,
    metrics: Metrics,
    rng: Mutex<SmallRng>,
    last_cpu_ticks: std::sync::atomic::AtomicU64,
}

impl MeshService {
    /// Service `name` of `topology`, calling its callees at `addresses` (`host:port` by
    /// service name), its noise seeded by `seed` and its name.
    pub fn new(
        name: &str,
        topology: &Topology,
        addresses: &BTreeMap<String, String>,
        seed: u64,
    ) -> Result<Arc<MeshService>, LabError> {
        let spec = topology.services.get(name).ok_or_else(|| LabError::Http {
            url: name.to_string(),
            detail: "no such service in the topology".into(),
        })?;
        let mut urls = BTreeMap::new();
        for c in &spec.calls {
            let addr = addresses.get(&c.to).ok_or_else(|| LabError::Http {
                url: c.to.clone(),
                detail: format!("no address for {name}'s callee"),
            })?;
            urls.insert(c.to.clone(), format!("http://{addr}"));
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(topology.client.pool)
            .build()
            .map_err(|e| LabError::Http {
                url: name.to_string(),
                detail: e.to_string(),
            })?;
        let name_seed = name
            .bytes()
            .fold(seed, |h, b| h.rotate_left(5) ^ u64::from(b));
        Ok(Arc::new(MeshService {
            name: name.to_string(),
            urls,
            http,
            workers: Semaphore::new(spec.workers),
            active: RwLock::new(Arc::new(Active::new(
                Vec::new(),
                spec.calls.clone(),
                topology.client.pool,
            ))),
            metrics: Metrics::new(name)?,
            rng: Mutex::new(SmallRng::seed_from_u64(name_seed)),
            last_cpu_ticks: Default::default(),
            topology: topology.clone(),
        }))
    }

    fn active(&self) -> Arc<Active> {
        Arc::clone(&self.active.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn uniform(&self) -> f64 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).gen()
    }

    /// Replaces the active faults (validated first).
    pub fn set_faults(&self, faults: Vec<MeshFault>) -> Result<(), String> {
        let problems: Vec<String> = faults.iter().flat_map(|f| f.problems()).collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        for kind in MESH_FAULT_KINDS {
            let on = faults.iter().any(|f| f.kinds().contains(kind));
            self.metrics
                .fault_active
                .with_label_values(&[self.name.as_str(), kind])
                .set(i64::from(on));
        }
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        *active = Arc::new(Active::new(
            faults,
            active.calls.clone(),
            self.topology.client.pool,
        ));
        Ok(())
    }

    /// Sets new probabilities for some of the service's declared calls.
    pub fn set_calls(&self, changes: Vec<Call>) -> Result<(), String> {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        let mut calls = active.calls.clone();
        for change in changes {
            if !change.p.is_finite() || !(0.0..=1.0).contains(&change.p) {
                return Err(format!(
                    "{}: p {} is not a probability",
                    change.to, change.p
                ));
            }
            match calls.iter_mut().find(|c| c.to == change.to) {
                Some(c) => c.p = change.p,
                None => {
                    return Err(format!(
                        "{} does not call {} (its calls are declared in the topology)",
                        self.name, change.to
                    ))
                }
            }
        }
        let faults = active.faults.clone();
        *active = Arc::new(Active::new(faults, calls, self.topology.client.pool));
        Ok(())
    }

    /// Serves one business request from `caller`; returns the status code.
    async fn serve(&self, caller: &str) -> StatusCode {
        let started = tokio::time::Instant::now();
        let gauge = self.metrics.in_flight.with_label_values(&[&self.name]);
        gauge.inc();
        let code = self.work(&self.active()).await;
        gauge.dec();
        let took = started.elapsed().as_secs_f64();
        self.metrics
            .requests
            .with_label_values(&[&self.name, code.as_str()])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[&self.name])
            .observe(took);
        self.metrics
            .edge_server_seconds
            .with_label_values(&[caller, &self.name])
            .observe(took);
        code
    }

    async fn work(&self, a: &Active) -> StatusCode {
        let Ok(Ok(_worker)) = tokio::time::timeout(QUEUE_TIMEOUT, self.workers.acquire()).await
        else {
            return StatusCode::SERVICE_UNAVAILABLE;
        };
        let _shrunk = match &a.workers {
            Some(pool) => match tokio::time::timeout(QUEUE_TIMEOUT, pool.acquire()).await {
                Ok(Ok(p)) => Some(p),
                _ => return StatusCode::SERVICE_UNAVAILABLE,
            },
            None => None,
        };
        let spec = &self.topology.services[&self.name];
        let noise = lognormal(
            &mut self.rng.lock().unwrap_or_else(|e| e.into_inner()),
            0.25,
        );
        let minutes = a.since.elapsed().as_secs_f64() / 60.0;
        let extra = a.latency_ms + a.jitter_ms * self.uniform() + a.ramp_ms_per_min * minutes;
        sleep_ms(spec.work_ms * noise + extra).await;
        burn_cpu(spec.cpu_ms + a.cpu_ms);
        for c in &a.calls {
            if c.p > 0.0 && self.uniform() < c.p && !self.call(&c.to, a).await {
                // The callee failed after its retries: so does this request.
                return StatusCode::BAD_GATEWAY;
            }
        }
        if a.error_rate > 0.0 && self.uniform() < a.error_rate {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        StatusCode::OK
    }

    /// Calls `to` with the topology's timeout and retries; `true` on a 2xx.
    async fn call(&self, to: &str, a: &Active) -> bool {
        let (Some(url), Some(pool)) = (self.urls.get(to), a.pools.get(to)) else {
            return false;
        };
        let client = &self.topology.client;
        let timeout = Duration::from_millis(client.timeout_ms);
        let labels = [self.name.as_str(), to];
        for _ in 0..=client.retries {
            let started = tokio::time::Instant::now();
            let attempt = async {
                let _slot = pool.acquire().await.ok()?;
                let r = self
                    .http
                    .get(format!("{url}/api"))
                    .header(CALLER_HEADER, &self.name)
                    .send()
                    .await
                    .ok()?;
                Some(r.status().is_success())
            };
            let ok = matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)));
            self.metrics.edge_requests.with_label_values(&labels).inc();
            self.metrics
                .edge_client_seconds
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
            if ok {
                return true;
            }
            self.metrics.edge_failed.with_label_values(&labels).inc();
        }
        false
    }

    fn update_process_metrics(&self) {
        use std::sync::atomic::Ordering;
        if let Some(ticks) = read_cpu_ticks() {
            let last = self.last_cpu_ticks.swap(ticks, Ordering::Relaxed);
            if ticks > last {
                self.metrics
                    .cpu_seconds
                    .inc_by((ticks - last) as f64 / 100.0);
            }
        }
        if let Some(rss) = read_rss_bytes() {
            self.metrics.rss_bytes.set(rss as f64);
        }
    }

    /// Answers one HTTP request.
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        match (req.method().clone(), path.as_str()) {
            (Method::GET, p) if p == "/api" || p.starts_with("/api/") => {
                let caller = req
                    .headers()
                    .get(CALLER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .filter(|c| self.topology.services.contains_key(*c))
                    .unwrap_or(USER)
                    .to_string();
                // The work runs on its own task, as a thread-per-request server's handler
                // would: a caller that times out and hangs up does not cancel it, so the
                // service still does the work, loads its callees and records the request.
                let me = Arc::clone(self);
                let code = tokio::spawn(async move { me.serve(&caller).await })
                    .await
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                text(code, code.canonical_reason().unwrap_or(""))
            }
            (Method::GET, "/metrics") => {
                self.update_process_metrics();
                crate::export::http::metrics(&self.metrics.registry, |_| {})
            }
            (Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (Method::GET, "/admin/faults") => json(StatusCode::OK, &self.active().faults),
            (Method::PUT, "/admin/faults") => match read_json::<Vec<MeshFault>>(req).await {
                Ok(faults) => match self.set_faults(faults) {
                    Ok(()) => text(StatusCode::OK, "ok"),
                    Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, e),
                },
                Err(e) => text(StatusCode::BAD_REQUEST, e),
            },
            (Method::GET, "/admin/calls") => json(StatusCode::OK, &self.active().calls),
            (Method::PUT, "/admin/calls") => match read_json::<Vec<Call>>(req).await {
                Ok(calls) => match self.set_calls(calls) {
                    Ok(()) => text(StatusCode::OK, "ok"),
                    Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, e),
                },
                Err(e) => text(StatusCode::BAD_REQUEST, e),
            },
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

/// What a mesh service process reads at start (`--mesh FILE`, JSON): the topology and
/// every service's address, written by whoever starts the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshFile {
    /// The topology.
    pub topology: Topology,
    /// `host:port` of each service.
    pub addresses: BTreeMap<String, String>,
    /// Seed of every service's noise (each mixes in its name).
    #[serde(default)]
    pub seed: u64,
}

/// Serves `service` on `listener` until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    service: Arc<MeshService>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    crate::export::http::serve_http(listener, shutdown, None, move |req| {
        let s = Arc::clone(&service);
        async move { Ok::<_, Infallible>(s.handle(req).await) }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// The shop running in this process, each service on its own loopback port.
    struct Shop {
        services: BTreeMap<String, Arc<MeshService>>,
        entry_url: String,
        _stop: tokio::sync::watch::Sender<()>,
    }

    async fn start_shop() -> Shop {
        let topology = Topology::shop();
        let mut listeners = BTreeMap::new();
        let mut addresses = BTreeMap::new();
        for name in topology.services.keys() {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addresses.insert(name.clone(), l.local_addr().unwrap().to_string());
            listeners.insert(name.clone(), l);
        }
        let (stop, stopped) = tokio::sync::watch::channel(());
        let mut services = BTreeMap::new();
        for (name, listener) in listeners {
            let s = MeshService::new(&name, &topology, &addresses, 7).unwrap();
            let mut stopped = stopped.clone();
            tokio::spawn(run(listener, Arc::clone(&s), async move {
                let _ = stopped.changed().await;
            }));
            services.insert(name, s);
        }
        Shop {
            entry_url: format!("http://{}/api", addresses[&topology.entry]),
            services,
            _stop: stop,
        }
    }

    /// Mean latency (ms) and failed share of the entry's answers to `users` closed-loop
    /// users over `secs` seconds.
    async fn load(url: &str, users: usize, secs: f64) -> (f64, f64) {
        let client = reqwest::Client::new();
        let until = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..users)
            .map(|_| {
                let (client, url) = (client.clone(), url.to_string());
                tokio::spawn(async move {
                    let (mut ms, mut n, mut failed) = (0.0, 0u32, 0u32);
                    while tokio::time::Instant::now() < until {
                        let t = tokio::time::Instant::now();
                        let ok = client
                            .get(&url)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        ms += t.elapsed().as_secs_f64() * 1e3;
                        n += 1;
                        failed += u32::from(!ok);
                    }
                    (ms, n, failed)
                })
            })
            .collect();
        let (mut ms, mut n, mut failed) = (0.0, 0, 0);
        for t in tasks {
            let (a, b, c) = t.await.unwrap();
            (ms, n, failed) = (ms + a, n + b, failed + c);
        }
        (ms / f64::from(n), f64::from(failed) / f64::from(n))
    }

    async fn metrics_of(s: &Arc<MeshService>) -> String {
        let r = crate::export::http::metrics(&s.metrics.registry, |_| {});
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn fault(f: MeshFault) -> Vec<MeshFault> {
        vec![f]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn faults_below_the_entry_reach_it_over_real_calls() {
        let shop = start_shop().await;
        let (base_ms, base_failed) = load(&shop.entry_url, 4, 1.5).await;
        assert_eq!(base_failed, 0.0, "no failure without a fault");

        // A slow database slows the entry down through catalog, cart and checkout.
        let db = &shop.services["database"];
        db.set_faults(fault(MeshFault {
            latency_ms: 40.0,
            ..Default::default()
        }))
        .unwrap();
        let (slow_ms, _) = load(&shop.entry_url, 4, 1.5).await;
        assert!(
            slow_ms > base_ms + 10.0,
            "entry latency {base_ms:.1} ms -> {slow_ms:.1} ms"
        );
        db.set_faults(Vec::new()).unwrap();

        // Payment failing makes checkout fail, and the entry with it (a fifth of its
        // requests go through checkout).
        let payment = &shop.services["payment"];
        payment
            .set_faults(fault(MeshFault {
                error_rate: 1.0,
                ..Default::default()
            }))
            .unwrap();
        let (_, failed) = load(&shop.entry_url, 4, 1.5).await;
        assert!((0.05..0.5).contains(&failed), "entry failed share {failed}");
        payment.set_faults(Vec::new()).unwrap();
        let checkout = metrics_of(&shop.services["checkout"]).await;
        assert!(
            checkout.contains(
                r#"traces_service_graph_request_failed_total{client="checkout",server="payment"}"#
            ),
            "{checkout}"
        );

        // A cache that hangs past the callers' timeout fails every request: catalog
        // always calls it, the entry always calls catalog.
        let cache = &shop.services["cache"];
        cache
            .set_faults(fault(MeshFault {
                latency_ms: 2_000.0,
                ..Default::default()
            }))
            .unwrap();
        let (_, failed) = load(&shop.entry_url, 4, 2.5).await;
        assert!(failed > 0.9, "entry failed share {failed}");
        cache.set_faults(Vec::new()).unwrap();

        // The callee counts its callers' calls by caller.
        let served = metrics_of(cache).await;
        for caller in ["catalog", "cart", "recommendation"] {
            let series = format!(
                r#"traces_service_graph_request_server_seconds_count{{client="{caller}",server="cache"}}"#
            );
            assert!(served.contains(&series), "{series} missing:\n{served}");
        }
        assert!(served.contains(r#"lab_fault_active{kind="latency",service="cache"} 0"#));
    }

    #[test]
    fn calls_change_only_among_declared_callees() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let topology = Topology::shop();
            let addresses = topology
                .services
                .keys()
                .map(|n| (n.clone(), "127.0.0.1:9".to_string()))
                .collect();
            let s = MeshService::new("checkout", &topology, &addresses, 1).unwrap();
            s.set_calls(vec![Call {
                to: "shipping".into(),
                p: 0.0,
            }])
            .unwrap();
            let calls = s.active().calls.clone();
            assert_eq!(calls.iter().find(|c| c.to == "shipping").unwrap().p, 0.0);
            let e = s
                .set_calls(vec![Call {
                    to: "cache".into(),
                    p: 1.0,
                }])
                .unwrap_err();
            assert!(e.contains("checkout does not call cache"), "{e}");
            assert!(s
                .set_calls(vec![Call {
                    to: "cart".into(),
                    p: 2.0
                }])
                .is_err());
            let e = s.set_faults(vec![MeshFault::default()]).unwrap_err();
            assert!(e.contains("injects nothing"), "{e}");
            let e = s
                .set_faults(vec![MeshFault {
                    workers: usize::MAX,
                    ..Default::default()
                }])
                .unwrap_err();
            assert!(
                e.contains("workers: 18446744073709551615 is out of range"),
                "{e}"
            );
        });
    }
}
