//! The load generator: closed-loop virtual users (each sends a request, waits for the
//! answer, thinks, repeats, like a load-testing tool) or an open-loop Poisson arrival
//! rate, following a [`Profile`] over each phase.
//!
//! Its own metrics (served by the runner for Prometheus to scrape):
//! `lab_load_virtual_users` (closed loop: the workload), `lab_load_target_rate`
//! (open loop: requests per second asked for), `lab_load_requests_total{route,outcome}`
//! (`ok`, `error` for 5xx, `failed` for transport errors and timeouts) and
//! `lab_load_request_duration_seconds{route}` as the client sees it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::LabError;

/// Most open-loop requests in flight; beyond it arrivals are dropped (and counted).
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 512;
/// How often the generator re-reads the profile.
const TICK: Duration = Duration::from_millis(100);

/// How the workload level evolves over a phase (`frac` runs from 0 to 1).
/// The level is a number of virtual users (closed loop) or requests per second (open).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Profile {
    /// The same level all along.
    Constant {
        /// The level.
        level: f64,
    },
    /// Straight line from `from` to `to`.
    LinearRamp {
        /// Level at the start.
        from: f64,
        /// Level at the end.
        to: f64,
    },
    /// Logarithmic ramp: rises fast, then flattens (`ln(1 + 9 frac) / ln 10`).
    LogRamp {
        /// Level at the start.
        from: f64,
        /// Level at the end.
        to: f64,
    },
    /// Equal-length steps through `levels`.
    Steps {
        /// The levels, in order.
        levels: Vec<f64>,
    },
    /// A compressed day: night trough, rise to a late-morning peak, lunch dip, afternoon
    /// peak, evening fall.
    Diurnal {
        /// Night level.
        min: f64,
        /// Peak level.
        max: f64,
        /// Number of days compressed into the phase.
        #[serde(default = "one")]
        days: f64,
    },
}

fn one() -> f64 {
    1.0
}

impl Profile {
    /// Short name of the profile kind (as in the scenario file).
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Constant { .. } => "constant",
            Profile::LinearRamp { .. } => "linear_ramp",
            Profile::LogRamp { .. } => "log_ramp",
            Profile::Steps { .. } => "steps",
            Profile::Diurnal { .. } => "diurnal",
        }
    }

    /// The level at fraction `frac` (clamped to `[0, 1]`) of the phase.
    pub fn level_at(&self, frac: f64) -> f64 {
        let f = if frac.is_nan() {
            0.0
        } else {
            frac.clamp(0.0, 1.0)
        };
        match self {
            Profile::Constant { level } => *level,
            Profile::LinearRamp { from, to } => from + (to - from) * f,
            Profile::LogRamp { from, to } => from + (to - from) * (1.0 + 9.0 * f).ln() / 10f64.ln(),
            Profile::Steps { levels } => {
                if levels.is_empty() {
                    return 0.0;
                }
                let i = ((f * levels.len() as f64) as usize).min(levels.len() - 1);
                levels[i]
            }
            Profile::Diurnal { min, max, days } => {
                // Phase 0 = midnight. A daily cosine plus a second harmonic gives a morning
                // rise, a lunch dip and an evening peak; rescaled to [min, max].
                let x = std::f64::consts::TAU * (f * days).fract();
                let day = 0.5 - 0.5 * x.cos();
                let lunch_dip = 1.0 - 0.2 * (-((x - std::f64::consts::PI) / 0.3).powi(2)).exp();
                min + (max - min) * (day * lunch_dip).clamp(0.0, 1.0)
            }
        }
    }

    /// Problems with the profile given the largest level allowed; empty when valid.
    pub fn problems(&self, max_level: f64) -> Vec<String> {
        let levels: Vec<(&str, f64)> = match self {
            Profile::Constant { level } => vec![("level", *level)],
            Profile::LinearRamp { from, to } | Profile::LogRamp { from, to } => {
                vec![("from", *from), ("to", *to)]
            }
            Profile::Steps { levels } => levels.iter().map(|l| ("levels[]", *l)).collect(),
            Profile::Diurnal { min, max, .. } => vec![("min", *min), ("max", *max)],
        };
        let mut out: Vec<String> = levels
            .iter()
            .filter(|(_, v)| !v.is_finite() || *v < 0.0 || *v > max_level)
            .map(|(k, v)| format!("{k}: {v} is out of range (expected 0 to {max_level})"))
            .collect();
        match self {
            Profile::Steps { levels } if levels.is_empty() => out.push("levels: empty".into()),
            Profile::Diurnal { min, max, days } => {
                if min > max {
                    out.push(format!("min {min} is above max {max}"));
                }
                if !days.is_finite() || *days <= 0.0 || *days > 1000.0 {
                    out.push(format!(
                        "days: {days} is out of range (expected 0 < days <= 1000)"
                    ));
                }
            }
            _ => {}
        }
        out
    }
}

/// Closed loop (virtual users) or open loop (arrival rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Virtual users: request, wait, think, repeat.
    Closed,
    /// Poisson arrivals at the profile's rate, whatever the latency.
    Open,
}

/// Settings of the load generator that hold for a whole scenario.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Closed or open loop.
    pub mode: Mode,
    /// Think time between a virtual user's requests (closed loop).
    pub think_time: Duration,
    /// Client timeout per request.
    pub timeout: Duration,
    /// Routes and their weights in the request mix.
    pub mix: Vec<(String, f64)>,
    /// Seed of the generator's randomness.
    pub seed: u64,
}

#[derive(Debug)]
struct Plan {
    profile: Profile,
    start: tokio::time::Instant,
    duration: Duration,
}

#[derive(Debug)]
struct LoadMetrics {
    virtual_users: IntGauge,
    target_rate: Gauge,
    requests: IntCounterVec,
    duration: HistogramVec,
}

/// The load generator; cheap to clone.
#[derive(Debug, Clone)]
pub struct LoadGen {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: reqwest::Client,
    base_url: String,
    settings: LoadSettings,
    metrics: LoadMetrics,
    plan: Mutex<Option<Plan>>,
    /// Closed loop: how many virtual users should run now.
    target_users: AtomicUsize,
    /// Open loop: current rate, `f64` bits.
    rate_bits: AtomicU64,
    open_in_flight: AtomicUsize,
    /// Which virtual-user slots have a live task.
    alive: Mutex<Vec<bool>>,
}

impl LoadGen {
    /// A generator aimed at `base_url` (e.g. `http://127.0.0.1:8080`), registering its
    /// metrics in `registry`. It sends nothing until [`LoadGen::set_plan`].
    pub fn new(
        base_url: &str,
        settings: LoadSettings,
        registry: &Registry,
    ) -> Result<Self, LabError> {
        let virtual_users = IntGauge::new(
            "lab_load_virtual_users",
            "Closed-loop virtual users asked for.",
        )?;
        let target_rate = Gauge::new(
            "lab_load_target_rate",
            "Open-loop arrival rate asked for, per second.",
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "lab_load_requests_total",
                "Requests sent, by route and outcome.",
            ),
            &["route", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "lab_load_request_duration_seconds",
                "Response time seen by the client.",
            )
            .buckets(vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]),
            &["route"],
        )?;
        registry.register(Box::new(virtual_users.clone()))?;
        registry.register(Box::new(target_rate.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| LabError::Http {
                url: base_url.to_string(),
                detail: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                base_url: base_url.trim_end_matches('/').to_string(),
                settings,
                metrics: LoadMetrics {
                    virtual_users,
                    target_rate,
                    requests,
                    duration,
                },
                plan: Mutex::new(None),
                target_users: AtomicUsize::new(0),
                rate_bits: AtomicU64::new(0f64.to_bits()),
                open_in_flight: AtomicUsize::new(0),
                alive: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Follows `profile` for `duration`, starting now (replaces the previous plan).
    pub fn set_plan(&self, profile: Profile, duration: Duration) {
        let plan = Plan {
            profile,
            start: tokio::time::Instant::now(),
            duration,
        };
        *self.inner.plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan);
    }

    /// Stops sending (virtual users finish their current request and leave).
    pub fn stop(&self) {
        *self.inner.plan.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn level_now(&self) -> f64 {
        let plan = self.inner.plan.lock().unwrap_or_else(|e| e.into_inner());
        match plan.as_ref() {
            Some(p) => {
                let frac = p.start.elapsed().as_secs_f64() / p.duration.as_secs_f64().max(1e-9);
                p.profile.level_at(frac)
            }
            None => 0.0,
        }
    }

    /// Drives the load until the task is dropped or aborted.
    pub async fn drive(self) {
        if self.inner.settings.mode == Mode::Open {
            tokio::spawn(self.clone().arrivals());
        }
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let level = self.level_now().max(0.0);
            match self.inner.settings.mode {
                Mode::Closed => self.adjust_users(level.round() as usize),
                Mode::Open => {
                    self.inner
                        .rate_bits
                        .store(level.to_bits(), Ordering::Relaxed);
                    self.inner.metrics.target_rate.set(level);
                }
            }
        }
    }

    fn adjust_users(&self, target: usize) {
        self.inner.target_users.store(target, Ordering::Relaxed);
        self.inner.metrics.virtual_users.set(target as i64);
        let mut alive = self.inner.alive.lock().unwrap_or_else(|e| e.into_inner());
        if alive.len() < target {
            alive.resize(target, false);
        }
        for (i, slot) in alive.iter_mut().enumerate().take(target) {
            if !*slot {
                *slot = true;
                tokio::spawn(self.clone().virtual_user(i));
            }
        }
    }

    async fn virtual_user(self, index: usize) {
        let seed = self.inner.settings.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = SmallRng::seed_from_u64(seed);
        // Spread the first requests so that users do not start in lock step.
        let think = self.inner.settings.think_time.as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(rng.gen::<f64>() * think)).await;
        while index < self.inner.target_users.load(Ordering::Relaxed) {
            let route = self.pick_route(&mut rng);
            self.request(&route).await;
            // Exponential think time around the mean, as load tools' "random" timers.
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            tokio::time::sleep(Duration::from_secs_f64((-u.ln() * think).min(think * 5.0))).await;
        }
        let mut alive = self.inner.alive.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = alive.get_mut(index) {
            *slot = false;
        }
    }

    async fn arrivals(self) {
        let mut rng = SmallRng::seed_from_u64(self.inner.settings.seed ^ 0x0a11_u64);
        loop {
            let rate = f64::from_bits(self.inner.rate_bits.load(Ordering::Relaxed));
            if rate <= 0.0 {
                tokio::time::sleep(TICK).await;
                continue;
            }
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            let gap = -u.ln() / rate;
            if gap > TICK.as_secs_f64() {
                // No arrival within a tick: by memorylessness we may redraw with the
                // (possibly new) rate after it.
                tokio::time::sleep(TICK).await;
                continue;
            }
            tokio::time::sleep(Duration::from_secs_f64(gap)).await;
            let route = self.pick_route(&mut rng);
            if self.inner.open_in_flight.load(Ordering::Relaxed) >= OPEN_LOOP_MAX_IN_FLIGHT {
                self.inner
                    .metrics
                    .requests
                    .with_label_values(&[&route, "dropped"])
                    .inc();
                continue;
            }
            self.inner.open_in_flight.fetch_add(1, Ordering::Relaxed);
            let me = self.clone();
            tokio::spawn(async move {
                me.request(&route).await;
                me.inner.open_in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }

    fn pick_route(&self, rng: &mut SmallRng) -> String {
        let mix = &self.inner.settings.mix;
        let total: f64 = mix.iter().map(|(_, w)| w).sum();
        let mut x = rng.gen::<f64>() * total;
        for (route, w) in mix {
            if x < *w {
                return route.clone();
            }
            x -= w;
        }
        mix.last().map(|(r, _)| r.clone()).unwrap_or_default()
    }

    async fn request(&self, route: &str) {
        let url = format!("{}/api/{route}", self.inner.base_url);
        let t = tokio::time::Instant::now();
        let outcome = match self.inner.client.get(&url).send().await {
            Ok(resp) => {
                let status = resp.status();
                // Read the body so the connection can be reused.
                let _ = resp.bytes().await;
                if status.is_server_error() {
                    "error"
                } else {
                    "ok"
                }
            }
            Err(_) => "failed",
        };
        self.inner
            .metrics
            .requests
            .with_label_values(&[route, outcome])
            .inc();
        self.inner
            .metrics
            .duration
            .with_label_values(&[route])
            .observe(t.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_start_and_end_at_their_levels() {
        for p in [
            Profile::LinearRamp {
                from: 2.0,
                to: 10.0,
            },
            Profile::LogRamp {
                from: 2.0,
                to: 10.0,
            },
        ] {
            assert!((p.level_at(0.0) - 2.0).abs() < 1e-9, "{p:?}");
            assert!((p.level_at(1.0) - 10.0).abs() < 1e-9, "{p:?}");
        }
        // The log ramp is above the linear one in between (it rises fast, then flattens).
        let lin = Profile::LinearRamp {
            from: 2.0,
            to: 10.0,
        }
        .level_at(0.3);
        let log = Profile::LogRamp {
            from: 2.0,
            to: 10.0,
        }
        .level_at(0.3);
        assert!(log > lin + 1.0, "log {log} lin {lin}");
    }

    #[test]
    fn steps_cover_equal_parts() {
        let p = Profile::Steps {
            levels: vec![1.0, 5.0, 9.0],
        };
        assert_eq!(p.level_at(0.0), 1.0);
        assert_eq!(p.level_at(0.34), 5.0);
        assert_eq!(p.level_at(0.99), 9.0);
        assert_eq!(p.level_at(1.0), 9.0);
    }

    #[test]
    fn diurnal_stays_within_bounds_and_peaks_mid_day() {
        let p = Profile::Diurnal {
            min: 2.0,
            max: 20.0,
            days: 1.0,
        };
        let levels: Vec<f64> = (0..=100)
            .map(|i| p.level_at(f64::from(i) / 100.0))
            .collect();
        assert!(levels.iter().all(|l| (2.0..=20.0).contains(l)));
        assert!((levels[0] - 2.0).abs() < 1e-9);
        let peak = levels.iter().cloned().fold(f64::MIN, f64::max);
        assert!(peak > 15.0 && levels[50] > levels[10]);
    }

    #[test]
    fn impossible_levels_are_reported() {
        assert_eq!(Profile::Constant { level: -1.0 }.problems(100.0).len(), 1);
        assert_eq!(Profile::Steps { levels: vec![] }.problems(100.0).len(), 1);
        assert_eq!(
            Profile::Diurnal {
                min: 5.0,
                max: 1.0,
                days: 0.0
            }
            .problems(100.0)
            .len(),
            2
        );
        assert!(Profile::LinearRamp {
            from: 0.0,
            to: 50.0
        }
        .problems(100.0)
        .is_empty());
    }
}
