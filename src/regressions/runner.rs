//! The regression loop: one evaluation every `regressions.interval`.
//!
//! Each evaluation discovers the interfaces, finds the baseline of each (per mode, see
//! `detect::regress::baseline`), fetches the windows and compares them on a blocking
//! thread. Baseline windows and their embeddings are cached per (interface, baseline
//! range) and dropped when the baseline moves. In version-change mode a verdict on a
//! full current window is final: it stays exported, and is not recomputed, until the
//! next change. In hash-sharded mode (`shard: {total, index}`) each agent checks only
//! the interfaces whose name hashes to its index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::clock::now_ms;

use anyhow::Context;
use tokio::sync::{watch, Mutex};
use tracing::{debug, info, warn};

use super::fetch::{self, VersionChanges, WindowQueries};
use super::metrics::{BaselineInfo, RegressionMetrics};
use super::Error;
use crate::config::{BaselineConfig, Config, RegressionsConfig};
use crate::detect::regress::baseline::{
    align_down, offset_plan, pinned_plan, version_change_plan, Plan, Range,
};
use crate::detect::regress::cache::{BaselineKey, EmbeddingCache};
use crate::detect::regress::{compare_with, LoadTest, Options, RegressModel, Report};
use crate::reader::Client;
use crate::store::ShardFilter;

/// A validated `regressions:` section with its model loaded and its client.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(super) cfg: RegressionsConfig,
    pub(super) model: Option<Arc<RegressModel>>,
    pub(super) client: Arc<Client>,
    /// The agent's shard: in hash mode the loop checks only the interfaces it owns.
    pub(super) shard: ShardFilter,
}

impl Setup {
    /// Loads the model of `config.regressions`; `None` when the section is absent.
    pub(crate) fn build(config: &Config, client: Arc<Client>) -> anyhow::Result<Option<Setup>> {
        let Some(cfg) = config.regressions.clone() else {
            return Ok(None);
        };
        let model = match &cfg.model {
            Some(dir) => {
                Some(Arc::new(RegressModel::load(dir).with_context(|| {
                    format!("regressions.model in {}", config.source)
                })?))
            }
            None => None,
        };
        Ok(Some(Setup {
            cfg,
            model,
            client,
            shard: ShardFilter(config.shard.clone()),
        }))
    }

    /// Whether this agent's loop checks and exports `interface`: in hash mode the stable
    /// hash of the interface name picks one agent (as entity keys do); node mode has no
    /// owner for an interface, so every agent checks all (`Config::warnings` says so).
    /// On-demand checks (`POST /api/v1/regressions/check`) answer for any interface.
    pub(super) fn owns(&self, interface: &str) -> bool {
        self.shard.owns_key(interface)
    }
}

/// Per-interface memory between evaluations.
#[derive(Debug, Default)]
struct Interface {
    /// The windows of the final verdict (version change, full current window).
    final_windows: Option<(Range, Range)>,
    /// The cached baseline window.
    baseline: Option<(Range, Arc<LoadTest>)>,
    /// The last error logged, so a persisting error is logged once.
    logged_error: Option<String>,
}

/// What the loop remembers; reset when the config changes.
#[derive(Debug, Default)]
pub(super) struct State {
    interfaces: BTreeMap<String, Interface>,
    pub(super) known: BTreeSet<String>,
    cache: EmbeddingCache,
    logged_global: Option<String>,
}

/// The regression checks of the agent: the loop, the on-demand checks and the exports.
#[derive(Debug)]
pub(crate) struct Regressions {
    setup: RwLock<Option<Arc<Setup>>>,
    pub(super) state: Mutex<State>,
    pub(super) metrics: RegressionMetrics,
    pub(super) runtime: tokio::runtime::Handle,
    ready: Arc<AtomicBool>,
}

impl Regressions {
    /// A service with `setup` (none: checks answer "not configured"), publishing into
    /// `metrics`, releasing `ready` after its first successful evaluation. Must be
    /// called on the agent's runtime.
    pub(crate) fn new(
        setup: Option<Setup>,
        metrics: RegressionMetrics,
        ready: Arc<AtomicBool>,
    ) -> Arc<Self> {
        Arc::new(Regressions {
            setup: RwLock::new(setup.map(Arc::new)),
            state: Mutex::new(State::default()),
            metrics,
            runtime: tokio::runtime::Handle::current(),
            ready,
        })
    }

    pub(super) fn setup(&self) -> Option<Arc<Setup>> {
        self.setup.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the setup after a reload: forgets verdicts, cached baselines and
    /// embeddings (the model or the queries may have changed) and the exported series.
    pub(crate) async fn apply(&self, setup: Option<Setup>) {
        let mut state = self.state.lock().await;
        *self.setup.write().unwrap_or_else(|p| p.into_inner()) = setup.map(Arc::new);
        *state = State::default();
        self.metrics.retain(|_| false);
    }

    /// Runs the loop until `stop` turns true.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let interval = match self.setup() {
                Some(s) => {
                    self.evaluate(&s).await;
                    s.cfg.interval
                }
                None => Duration::from_secs(5),
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One evaluation of every interface.
    async fn evaluate(&self, s: &Setup) {
        let cfg = &s.cfg;
        let step_ms = cfg.step.as_millis() as i64;
        // One step back: the newest scrape may not be ingested yet.
        let now = align_down(now_ms(), step_ms) - step_ms;
        let mut state = self.state.lock().await;
        let found = async {
            let interfaces =
                fetch::discover(&s.client, &cfg.discover, &cfg.interface_label, now).await?;
            let changes = match &cfg.baseline {
                BaselineConfig::VersionChange {
                    query,
                    label,
                    lookback,
                    ..
                } => {
                    fetch::version_changes(
                        &s.client,
                        query,
                        label,
                        &cfg.interface_label,
                        now,
                        *lookback,
                        cfg.step,
                    )
                    .await?
                }
                _ => VersionChanges::default(),
            };
            Ok::<_, Error>((interfaces, changes))
        }
        .await;
        let (interfaces, changes) = match found {
            Ok(x) => {
                if state.logged_global.take().is_some() {
                    info!("Regression discovery recovered.");
                }
                x
            }
            Err(e) => {
                self.metrics.failed(e.cause());
                let msg = e.to_string();
                if state.logged_global.as_deref() != Some(msg.as_str()) {
                    warn!(cause = e.cause(), error = %e, "Regression discovery failed; retrying every interval.");
                    state.logged_global = Some(msg);
                }
                return;
            }
        };
        // Every discovered interface can be checked on demand; the loop keeps its own.
        state.known = interfaces.clone();
        let interfaces: BTreeSet<String> = interfaces.into_iter().filter(|i| s.owns(i)).collect();
        state.interfaces.retain(|i, _| interfaces.contains(i));
        state.cache.retain_interfaces(|i| interfaces.contains(i));
        self.metrics.retain(|i| interfaces.contains(i));
        let mut any_ok = false;
        for interface in &interfaces {
            let started = Instant::now();
            let result = self
                .evaluate_interface(s, &mut state, interface, &changes, now)
                .await;
            self.metrics.observe(started.elapsed().as_secs_f64());
            let entry = state.interfaces.entry(interface.clone()).or_default();
            match result {
                Ok(()) => {
                    any_ok = true;
                    if entry.logged_error.take().is_some() {
                        info!(interface, "Regression check recovered.");
                    }
                }
                Err(e) => {
                    self.metrics.failed(e.cause());
                    let msg = e.to_string();
                    if entry.logged_error.as_deref() != Some(msg.as_str()) {
                        warn!(interface, cause = e.cause(), error = %e, "Regression check failed; retrying every interval.");
                        entry.logged_error = Some(msg);
                    }
                }
            }
        }
        if any_ok || interfaces.is_empty() {
            self.ready.store(true, Ordering::Release);
        }
    }

    async fn evaluate_interface(
        &self,
        s: &Setup,
        state: &mut State,
        interface: &str,
        changes: &VersionChanges,
        now: i64,
    ) -> Result<(), Error> {
        let cfg = &s.cfg;
        let window_ms = cfg.window.as_millis() as i64;
        let min_ms = cfg.min_window.as_millis() as i64;
        let (plan, version, current_version) = match &cfg.baseline {
            BaselineConfig::VersionChange { settle, .. } => {
                let Some(change) = changes.get(interface) else {
                    // No deployment within the lookback: nothing to compare. A final
                    // verdict from an earlier change stays exported.
                    debug!(interface, "No version change within the lookback.");
                    return Ok(());
                };
                (
                    version_change_plan(change, now, window_ms, min_ms, settle.as_millis() as i64),
                    change.from.clone(),
                    change.to.clone(),
                )
            }
            BaselineConfig::Offset { offset } => (
                offset_plan(now, window_ms, offset.as_millis() as i64),
                String::new(),
                String::new(),
            ),
            BaselineConfig::Pinned { range } => (
                pinned_plan(now, window_ms, *range),
                String::new(),
                String::new(),
            ),
        };
        let info = |b: Range| BaselineInfo {
            mode: cfg.baseline.mode(),
            version: version.clone(),
            current_version: current_version.clone(),
            start: crate::clock::rfc3339(b.start_ms),
            end: crate::clock::rfc3339(b.end_ms),
        };
        let (baseline, current, complete) = match plan {
            Plan::Wait { have_ms, need_ms } => {
                debug!(
                    interface,
                    have_ms, need_ms, "Current window too short; waiting."
                );
                let entry = state.interfaces.entry(interface.to_string()).or_default();
                entry.final_windows = None;
                self.metrics.waiting(
                    interface,
                    info(Range {
                        start_ms: now,
                        end_ms: now,
                    }),
                );
                return Ok(());
            }
            Plan::Judge {
                baseline,
                current,
                complete,
            } => (baseline, current, complete),
        };
        let entry = state.interfaces.entry(interface.to_string()).or_default();
        if entry.final_windows == Some((baseline, current)) {
            return Ok(());
        }
        let queries = WindowQueries::new(&cfg.workload, &cfg.kpis, Some(interface));
        let cached = entry
            .baseline
            .as_ref()
            .filter(|(r, _)| *r == baseline)
            .map(|(_, w)| w.clone());
        let baseline_window = match cached {
            Some(w) => w,
            None => {
                let w = Arc::new(
                    fetch::window(
                        &s.client,
                        &queries,
                        &cfg.interface_label,
                        baseline,
                        cfg.step,
                    )
                    .await?,
                );
                state.cache.keep_only(interface, baseline);
                let entry = state.interfaces.entry(interface.to_string()).or_default();
                entry.baseline = Some((baseline, w.clone()));
                w
            }
        };
        let current_window =
            fetch::window(&s.client, &queries, &cfg.interface_label, current, cfg.step).await?;
        let cache = std::mem::take(&mut state.cache);
        let (report, cache) = self
            .compare(
                s.model.clone(),
                cfg.options.clone(),
                interface,
                baseline,
                baseline_window,
                current_window,
                cache,
            )
            .await?;
        state.cache = cache;
        let report = report?;
        self.metrics.publish(interface, &report, info(baseline));
        let entry = state.interfaces.entry(interface.to_string()).or_default();
        if complete && matches!(cfg.baseline, BaselineConfig::VersionChange { .. }) {
            info!(interface, verdict = report.verdict.as_str(), from = %version, to = %current_version, "Regression verdict on a full window after a version change.");
            entry.final_windows = Some((baseline, current));
        }
        Ok(())
    }

    /// Runs the comparison on a blocking thread with the embedding cache; returns the
    /// cache even when the comparison fails.
    #[allow(clippy::too_many_arguments)]
    async fn compare(
        &self,
        model: Option<Arc<RegressModel>>,
        opts: Options,
        interface: &str,
        range: Range,
        baseline: Arc<LoadTest>,
        current: LoadTest,
        mut cache: EmbeddingCache,
    ) -> Result<(Result<Report, Error>, EmbeddingCache), Error> {
        let interface = interface.to_string();
        let (hits0, misses0) = cache.stats();
        let joined = tokio::task::spawn_blocking(move || {
            let mut embed = |m: &RegressModel, kpi, x: &[f32]| {
                let key = BaselineKey {
                    interface: interface.clone(),
                    kpi,
                    range,
                };
                cache.get_or_compute(key, || m.embed(x))
            };
            let r = compare_with(&baseline, &current, &opts, model.as_deref(), &mut embed);
            (r.map_err(Error::from), cache)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
        let (hits, misses) = joined.1.stats();
        self.metrics.embeddings(hits - hits0, misses - misses0);
        Ok(joined)
    }
}
