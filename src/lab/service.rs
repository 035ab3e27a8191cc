//! The lab's test service: a small hyper server with routes of different cost, the usual
//! Prometheus metrics, and fault modes switched at run time through an admin endpoint.
//!
//! Endpoints:
//! * `GET /api/{home,search,item,checkout}`: the business routes (see [`ROUTES`]);
//! * `GET /metrics`: Prometheus text exposition of the service's own registry;
//! * `GET /healthz`: `ok`;
//! * `GET|PUT /admin/faults`: the active fault list (JSON array of [`Faults`]);
//!   a `PUT` replaces the whole list, an empty list clears every fault;
//! * `GET|PUT /admin/version`: `{"version": "v2"}` simulates a deployment: the
//!   `lab_build_info{version}` series changes.
//!
//! Metrics: `lab_http_requests_total{route,code}`, `lab_http_request_duration_seconds{route}`
//! (histogram), `lab_http_in_flight{route}`, `lab_dependency_duration_seconds{route}`
//! (histogram, routes with a dependency call), `lab_build_info{version}`,
//! `lab_fault_active{route,kind}`, `lab_memory_ballast_bytes`,
//! `process_cpu_seconds_total` and `process_resident_memory_bytes` (read from `/proc`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{
    Counter, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::LabError;
use crate::export::http::{json, text};

/// The business routes, in a fixed order. Each is one entity of the recorded datasets.
pub const ROUTES: &[&str] = &["home", "search", "item", "checkout"];

/// The fault kinds a [`Faults`] entry can carry, as they appear in manifests.
pub const FAULT_KINDS: &[&str] = &[
    "latency",
    "cpu",
    "memory",
    "errors",
    "concurrency",
    "dependency",
];

/// Cost model of one route: a service time (sleep, lognormal noise), some CPU, and an
/// optional call to a shared dependency with a small connection pool (so latency rises
/// with load, as in a real service).
#[derive(Debug, Clone, Copy)]
struct RouteSpec {
    base_ms: f64,
    cpu_ms: f64,
    dependency_ms: f64,
}

const SPECS: [RouteSpec; 4] = [
    RouteSpec {
        base_ms: 3.0,
        cpu_ms: 0.2,
        dependency_ms: 0.0,
    },
    RouteSpec {
        base_ms: 12.0,
        cpu_ms: 1.0,
        dependency_ms: 6.0,
    },
    RouteSpec {
        base_ms: 6.0,
        cpu_ms: 0.4,
        dependency_ms: 4.0,
    },
    RouteSpec {
        base_ms: 20.0,
        cpu_ms: 1.5,
        dependency_ms: 10.0,
    },
];

/// Connections in the shared dependency pool: small on purpose, so that queueing for it
/// makes latency depend on load at tens of requests per second.
const DEPENDENCY_POOL: usize = 3;
/// How long a request waits for a concurrency-limit slot before it gets a 503.
const QUEUE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Upper bound of the memory ballast, so a long memory fault cannot exhaust the host.
const BALLAST_CAP_BYTES: u64 = 256 << 20;
/// Largest admin request body accepted.
const ADMIN_BODY_LIMIT: usize = 64 << 10;

/// One fault injection: which routes it hits (all when empty) and what it does.
/// Several entries may be active at once; their effects add up per route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Routes affected; empty means every route.
    pub routes: Vec<String>,
    /// Fixed latency added to every request, milliseconds.
    pub latency_ms: f64,
    /// Uniform random latency in `[0, jitter_ms)` added to every request, milliseconds.
    pub jitter_ms: f64,
    /// Service time multiplied by `1 + slowdown_pct / 100` ...
    pub slowdown_pct: f64,
    /// ... only while the route has at least this many requests in flight (0: always).
    pub slowdown_above_in_flight: u32,
    /// Busy-loop CPU time added to every request, milliseconds.
    pub cpu_ms: f64,
    /// Memory kept (leaked) per request, KiB; released when the fault is cleared.
    pub memory_kb_per_request: f64,
    /// Probability that a request fails with 500.
    pub error_rate: f64,
    /// At most this many requests of the entry's routes served at once, all of them
    /// sharing one pool of slots as a worker pool would (0: unlimited); others wait up to
    /// 1 s, then get 503.
    pub concurrency_limit: u32,
    /// Latency added to each dependency call, milliseconds.
    pub dependency_delay_ms: f64,
}

impl Faults {
    /// The fault kinds (from [`FAULT_KINDS`]) this entry injects.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.latency_ms > 0.0 || self.jitter_ms > 0.0 || self.slowdown_pct > 0.0 {
            kinds.push("latency");
        }
        if self.cpu_ms > 0.0 {
            kinds.push("cpu");
        }
        if self.memory_kb_per_request > 0.0 {
            kinds.push("memory");
        }
        if self.error_rate > 0.0 {
            kinds.push("errors");
        }
        if self.concurrency_limit > 0 {
            kinds.push("concurrency");
        }
        if self.dependency_delay_ms > 0.0 {
            kinds.push("dependency");
        }
        kinds
    }

    /// Routes this entry affects (all of [`ROUTES`] when `routes` is empty).
    pub fn affected_routes(&self) -> Vec<&'static str> {
        ROUTES
            .iter()
            .copied()
            .filter(|r| self.routes.is_empty() || self.routes.iter().any(|x| x == r))
            .collect()
    }

    /// Problems with this entry, each as `field: message`; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.routes {
            if !ROUTES.contains(&r.as_str()) {
                out.push(format!(
                    "routes: unknown route {r:?} (expected one of {ROUTES:?})"
                ));
            }
        }
        let non_neg = [
            ("latency_ms", self.latency_ms, 60_000.0),
            ("jitter_ms", self.jitter_ms, 60_000.0),
            ("slowdown_pct", self.slowdown_pct, 10_000.0),
            ("cpu_ms", self.cpu_ms, 1_000.0),
            (
                "memory_kb_per_request",
                self.memory_kb_per_request,
                10_240.0,
            ),
            ("dependency_delay_ms", self.dependency_delay_ms, 60_000.0),
        ];
        for (name, v, max) in non_neg {
            if !v.is_finite() || !(0.0..=max).contains(&v) {
                out.push(format!("{name}: {v} is out of range (expected 0 to {max})"));
            }
        }
        if !self.error_rate.is_finite() || !(0.0..=1.0).contains(&self.error_rate) {
            out.push(format!(
                "error_rate: {} is not a probability (expected 0 to 1)",
                self.error_rate
            ));
        }
        if self.kinds().is_empty() {
            out.push("the entry injects nothing (set at least one fault field)".into());
        }
        out
    }
}

/// Effective faults of one route: the sum of every active entry that hits it.
#[derive(Debug, Clone, Default)]
struct RouteFaults {
    latency_ms: f64,
    jitter_ms: f64,
    slowdown_pct: f64,
    slowdown_above_in_flight: u32,
    cpu_ms: f64,
    memory_kb_per_request: f64,
    error_rate: f64,
    /// Worker pools the route's requests need a slot of (acquired in entry order, so
    /// overlapping pools cannot deadlock).
    limits: Vec<Arc<Semaphore>>,
    dependency_delay_ms: f64,
}

fn merge(entries: &[Faults]) -> Vec<RouteFaults> {
    // One pool per entry with a limit, shared by every route of that entry.
    let pools: Vec<Option<Arc<Semaphore>>> = entries
        .iter()
        .map(|f| {
            (f.concurrency_limit > 0)
                .then(|| Arc::new(Semaphore::new(f.concurrency_limit as usize)))
        })
        .collect();
    ROUTES
        .iter()
        .map(|route| {
            let mut rf = RouteFaults::default();
            for (f, pool) in entries
                .iter()
                .zip(&pools)
                .filter(|(f, _)| f.affected_routes().contains(route))
            {
                rf.latency_ms += f.latency_ms;
                rf.jitter_ms += f.jitter_ms;
                rf.slowdown_pct += f.slowdown_pct;
                rf.slowdown_above_in_flight =
                    rf.slowdown_above_in_flight.max(f.slowdown_above_in_flight);
                rf.cpu_ms += f.cpu_ms;
                rf.memory_kb_per_request += f.memory_kb_per_request;
                rf.error_rate = 1.0 - (1.0 - rf.error_rate) * (1.0 - f.error_rate);
                rf.dependency_delay_ms += f.dependency_delay_ms;
                if let Some(pool) = pool {
                    rf.limits.push(Arc::clone(pool));
                }
            }
            rf
        })
        .collect()
}

#[derive(Debug)]
struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGaugeVec,
    dependency: HistogramVec,
    build_info: IntGaugeVec,
    fault_active: IntGaugeVec,
    ballast: IntGauge,
    cpu_seconds: Counter,
    rss_bytes: Gauge,
}

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let buckets = vec![
            0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
        ];
        let requests = IntCounterVec::new(
            Opts::new(
                "lab_http_requests_total",
                "Requests served, by route and status code.",
            ),
            &["route", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "lab_http_request_duration_seconds",
                "Request latency by route.",
            )
            .buckets(buckets.clone()),
            &["route"],
        )?;
        let in_flight = IntGaugeVec::new(
            Opts::new("lab_http_in_flight", "Requests being served, by route."),
            &["route"],
        )?;
        let dependency = HistogramVec::new(
            HistogramOpts::new(
                "lab_dependency_duration_seconds",
                "Dependency call latency (pool wait included), by calling route.",
            )
            .buckets(buckets),
            &["route"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "lab_build_info",
                "Deployed version of the lab service (always 1).",
            ),
            &["version"],
        )?;
        let fault_active = IntGaugeVec::new(
            Opts::new(
                "lab_fault_active",
                "1 while a fault of this kind hits this route.",
            ),
            &["route", "kind"],
        )?;
        let ballast = IntGauge::new(
            "lab_memory_ballast_bytes",
            "Memory kept by the memory fault.",
        )?;
        let cpu_seconds = Counter::new("process_cpu_seconds_total", "User and system CPU time.")?;
        let rss_bytes = Gauge::new("process_resident_memory_bytes", "Resident memory size.")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(dependency.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(fault_active.clone()))?;
        registry.register(Box::new(ballast.clone()))?;
        registry.register(Box::new(cpu_seconds.clone()))?;
        registry.register(Box::new(rss_bytes.clone()))?;
        // Pre-create the per-route series so that every route exists from the first scrape.
        for r in ROUTES {
            in_flight.with_label_values(&[r]).set(0);
            duration.with_label_values(&[r]);
            requests.with_label_values(&[r, "200"]);
            for k in FAULT_KINDS {
                fault_active.with_label_values(&[r, k]).set(0);
            }
        }
        Ok(Self {
            registry,
            requests,
            duration,
            in_flight,
            dependency,
            build_info,
            fault_active,
            ballast,
            cpu_seconds,
            rss_bytes,
        })
    }
}

/// The service state shared by all connections.
#[derive(Debug)]
pub struct Service {
    metrics: Metrics,
    faults: RwLock<(Vec<Faults>, Arc<Vec<RouteFaults>>)>,
    version: Mutex<String>,
    ballast: Mutex<Vec<Vec<u8>>>,
    ballast_bytes: AtomicU64,
    dependency_pool: Semaphore,
    rng: Mutex<SmallRng>,
    last_cpu_ticks: AtomicU64,
}

/// Decrements the in-flight gauge even when hyper drops the request future.
struct InFlight<'a>(&'a IntGauge);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Service {
    /// A service with no faults, reporting `version`, with its noise seeded by `seed`.
    pub fn new(version: &str, seed: u64) -> Result<Arc<Self>, LabError> {
        let metrics = Metrics::new()?;
        metrics.build_info.with_label_values(&[version]).set(1);
        Ok(Arc::new(Self {
            metrics,
            faults: RwLock::new((Vec::new(), Arc::new(merge(&[])))),
            version: Mutex::new(version.to_string()),
            ballast: Mutex::new(Vec::new()),
            ballast_bytes: AtomicU64::new(0),
            dependency_pool: Semaphore::new(DEPENDENCY_POOL),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
            last_cpu_ticks: AtomicU64::new(0),
        }))
    }

    /// Replaces the active fault list (validated first).
    pub fn set_faults(&self, entries: Vec<Faults>) -> Result<(), String> {
        let problems: Vec<String> = entries.iter().flat_map(|f| f.problems()).collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let merged = merge(&entries);
        for route in ROUTES {
            for kind in FAULT_KINDS {
                let on = entries
                    .iter()
                    .any(|f| f.affected_routes().contains(route) && f.kinds().contains(kind));
                self.metrics
                    .fault_active
                    .with_label_values(&[route, kind])
                    .set(i64::from(on));
            }
        }
        if merged.iter().all(|m| m.memory_kb_per_request == 0.0) {
            // Release the ballast once no route has a memory fault any more.
            self.release_ballast();
        }
        let mut guard = self.faults.write().unwrap_or_else(|e| e.into_inner());
        *guard = (entries, Arc::new(merged));
        Ok(())
    }

    fn release_ballast(&self) {
        let mut b = self.ballast.lock().unwrap_or_else(|e| e.into_inner());
        b.clear();
        b.shrink_to_fit();
        self.ballast_bytes.store(0, Ordering::Relaxed);
        self.metrics.ballast.set(0);
    }

    /// Simulates a deployment of `version`.
    pub fn set_version(&self, version: &str) {
        let mut v = self.version.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.metrics.build_info.remove_label_values(&[v.as_str()]);
        self.metrics.build_info.with_label_values(&[version]).set(1);
        *v = version.to_string();
    }

    fn noise(&self, sigma: f64) -> f64 {
        lognormal(
            &mut self.rng.lock().unwrap_or_else(|e| e.into_inner()),
            sigma,
        )
    }

    fn uniform(&self) -> f64 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).gen()
    }

    /// Serves one business request on route number `idx`; returns the status code.
    async fn serve_route(&self, idx: usize) -> StatusCode {
        let route = ROUTES[idx];
        let spec = SPECS[idx];
        let started = tokio::time::Instant::now();
        let gauge = self.metrics.in_flight.with_label_values(&[route]);
        gauge.inc();
        let _guard = InFlight(&gauge);
        let faults = {
            let g = self.faults.read().unwrap_or_else(|e| e.into_inner());
            Arc::clone(&g.1)
        };
        let f = &faults[idx];
        let code = self.work(idx, spec, f, gauge.get()).await;
        self.metrics
            .requests
            .with_label_values(&[route, code.as_str()])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[route])
            .observe(started.elapsed().as_secs_f64());
        code
    }

    async fn work(
        &self,
        idx: usize,
        spec: RouteSpec,
        f: &RouteFaults,
        in_flight: i64,
    ) -> StatusCode {
        let mut _permits = Vec::with_capacity(f.limits.len());
        for pool in &f.limits {
            match tokio::time::timeout(QUEUE_TIMEOUT, Arc::clone(pool).acquire_owned()).await {
                Ok(Ok(p)) => _permits.push(p),
                _ => return StatusCode::SERVICE_UNAVAILABLE,
            }
        }
        let mut service_ms = spec.base_ms * self.noise(0.25);
        if f.slowdown_pct > 0.0 && in_flight >= i64::from(f.slowdown_above_in_flight) {
            service_ms *= 1.0 + f.slowdown_pct / 100.0;
        }
        let extra_ms = f.latency_ms + f.jitter_ms * self.uniform();
        sleep_ms(service_ms + extra_ms).await;
        burn_cpu(spec.cpu_ms + f.cpu_ms);
        if spec.dependency_ms > 0.0 {
            let t = tokio::time::Instant::now();
            if let Ok(_conn) = self.dependency_pool.acquire().await {
                sleep_ms(spec.dependency_ms * self.noise(0.3) + f.dependency_delay_ms).await;
            }
            self.metrics
                .dependency
                .with_label_values(&[ROUTES[idx]])
                .observe(t.elapsed().as_secs_f64());
        }
        if f.memory_kb_per_request > 0.0 {
            self.grow_ballast((f.memory_kb_per_request * 1024.0) as usize);
        }
        if f.error_rate > 0.0 && self.uniform() < f.error_rate {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        StatusCode::OK
    }

    fn grow_ballast(&self, bytes: usize) {
        if self.ballast_bytes.load(Ordering::Relaxed) + bytes as u64 > BALLAST_CAP_BYTES {
            return;
        }
        // Touch every page so the memory is resident, as a real leak would be.
        let chunk = vec![0xa5u8; bytes];
        self.ballast
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(chunk);
        let total = self
            .ballast_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed)
            + bytes as u64;
        self.metrics.ballast.set(total as i64);
    }

    fn update_process_metrics(&self) {
        if let Some(ticks) = read_cpu_ticks() {
            let last = self.last_cpu_ticks.swap(ticks, Ordering::Relaxed);
            if ticks > last {
                // CLK_TCK is 100 on Linux for all supported architectures.
                self.metrics
                    .cpu_seconds
                    .inc_by((ticks - last) as f64 / 100.0);
            }
        }
        if let Some(rss) = read_rss_bytes() {
            self.metrics.rss_bytes.set(rss as f64);
        }
    }

    /// Routes one HTTP request (no socket involved: tests call it directly).
    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        if let Some(route) = path.strip_prefix("/api/") {
            return match ROUTES.iter().position(|r| *r == route) {
                Some(idx) => {
                    let code = self.serve_route(idx).await;
                    text(code, code.canonical_reason().unwrap_or(""))
                }
                None => text(StatusCode::NOT_FOUND, "no such route"),
            };
        }
        match (method, path.as_str()) {
            (Method::GET, "/metrics") => {
                self.update_process_metrics();
                crate::export::http::metrics(&self.metrics.registry, |_| {})
            }
            (Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
            (Method::GET, "/admin/faults") => {
                let g = self.faults.read().unwrap_or_else(|e| e.into_inner());
                json(StatusCode::OK, &g.0)
            }
            (Method::PUT, "/admin/faults") => match read_json::<Vec<Faults>>(req).await {
                Ok(entries) => match self.set_faults(entries) {
                    Ok(()) => text(StatusCode::OK, "ok"),
                    Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, e),
                },
                Err(e) => text(StatusCode::BAD_REQUEST, e),
            },
            (Method::GET, "/admin/version") => {
                let v = self
                    .version
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                json(StatusCode::OK, &VersionBody { version: v })
            }
            (Method::PUT, "/admin/version") => match read_json::<VersionBody>(req).await {
                Ok(v) if !v.version.is_empty() => {
                    self.set_version(&v.version);
                    text(StatusCode::OK, "ok")
                }
                Ok(_) => text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "version must not be empty",
                ),
                Err(e) => text(StatusCode::BAD_REQUEST, e),
            },
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

/// Body of `/admin/version`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionBody {
    /// The deployed version label.
    pub version: String,
}

/// A lognormal factor with median 1 and log-sd `sigma` (Box-Muller).
pub(super) fn lognormal(rng: &mut SmallRng, sigma: f64) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (sigma * z).exp()
}

pub(super) async fn sleep_ms(ms: f64) {
    if ms > 0.0 && ms.is_finite() {
        tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
    }
}

/// Spins on the current thread for `ms` milliseconds, as a CPU-bound handler would.
#[allow(clippy::disallowed_types)]
pub(super) fn burn_cpu(ms: f64) {
    if ms <= 0.0 {
        return;
    }
    let until = std::time::Instant::now() + Duration::from_secs_f64(ms / 1000.0);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while std::time::Instant::now() < until {
        for _ in 0..256 {
            x = x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        }
        std::hint::black_box(x);
    }
}

pub(super) fn read_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub(super) fn read_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, String> {
    let body = Limited::new(req.into_body(), ADMIN_BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| format!("cannot read body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))
}

/// Serves the lab service on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
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

    #[test]
    fn kinds_and_routes_follow_the_fields() {
        let f = Faults {
            routes: vec!["search".into()],
            latency_ms: 10.0,
            error_rate: 0.1,
            ..Faults::default()
        };
        assert_eq!(f.kinds(), vec!["latency", "errors"]);
        assert_eq!(f.affected_routes(), vec!["search"]);
        assert!(f.problems().is_empty());
        assert_eq!(
            Faults {
                cpu_ms: 1.0,
                ..Faults::default()
            }
            .affected_routes()
            .len(),
            ROUTES.len()
        );
    }

    #[test]
    fn impossible_faults_are_reported() {
        let f = Faults {
            routes: vec!["nope".into()],
            error_rate: 1.5,
            latency_ms: -1.0,
            ..Faults::default()
        };
        let p = f.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            !Faults::default().problems().is_empty(),
            "an empty entry injects nothing"
        );
    }

    #[test]
    fn merge_adds_effects_per_route() {
        let a = Faults {
            latency_ms: 5.0,
            ..Faults::default()
        };
        let b = Faults {
            routes: vec!["item".into()],
            latency_ms: 7.0,
            concurrency_limit: 3,
            ..Faults::default()
        };
        let m = merge(&[a, b]);
        assert_eq!(m[0].latency_ms, 5.0);
        assert_eq!(m[2].latency_ms, 12.0);
        assert!(m[2].limits.len() == 1 && m[0].limits.is_empty());
        // Routes of one entry share its pool.
        let c = Faults {
            concurrency_limit: 1,
            ..Faults::default()
        };
        let m = merge(&[c]);
        assert!(Arc::ptr_eq(&m[0].limits[0], &m[3].limits[0]));
    }
}
