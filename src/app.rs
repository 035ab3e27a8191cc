//! Wiring: builds the components from a [`Config`], runs one task per group, serves
//! the admin endpoints, reloads on SIGHUP or `POST /-/reload`, saves state on a timer
//! and on shutdown.
//!
//! Order at start: the config is already valid (the CLI loaded it) → state restored →
//! detectors built (models loaded) → port bound → group loops started. At shutdown
//! (SIGTERM, which Kubernetes sends, or SIGINT): the group loops finish their current
//! cycle within a grace period → state saved → admin server stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use prometheus::Registry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use crate::config::{self, Config, DetectorsConfig, GroupConfig};
use crate::cycle::{CycleContext, GroupRunner};
use crate::detect::adsketch::AdsketchDetector;
use crate::detect::uniad::UniadDetector;
use crate::detect::zscore::ZscoreDetector;
use crate::detect::{Detector, Snapshot};
use crate::export::catalog::{
    CatalogHandle, EditError, EditOutcome, LabelEdit, LabelEditRequest, PatternCatalog,
};
use crate::export::{Admin, AdminServer, ReloadRequest, ScoreBoard, WriteAuth};
use crate::reader::Client;
use crate::regressions::{RegressionMetrics, Regressions, Setup as RegressSetup};
use crate::state::{self, State};
use crate::store::ShardFilter;
use crate::telemetry::{SelfMetrics, Telemetry};

/// How long shutdown waits for running cycles before saving state anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Builds the detectors a group enables. Fails when a model cannot be loaded.
pub fn build_detectors(cfg: &DetectorsConfig) -> anyhow::Result<Vec<Box<dyn Detector>>> {
    let mut out: Vec<Box<dyn Detector>> = Vec::new();
    if let Some(z) = &cfg.zscore {
        out.push(Box::new(ZscoreDetector::new(z.clone())));
    }
    if let Some(a) = &cfg.adsketch {
        let d = AdsketchDetector::new(a.clone())
            .map_err(|e| anyhow::anyhow!("detectors.adsketch: {e}"))?;
        out.push(Box::new(d));
    }
    if let Some(u) = &cfg.uniad {
        let d =
            UniadDetector::new(u.clone()).map_err(|e| anyhow::anyhow!("detectors.uniad: {e}"))?;
        out.push(Box::new(d));
    }
    Ok(out)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type SnapshotReply = oneshot::Sender<BTreeMap<String, Snapshot>>;
type EditRequest = (LabelEdit, oneshot::Sender<Result<EditOutcome, EditError>>);

/// A running group loop and the handles to talk to it.
struct RunningGroup {
    name: String,
    stop: watch::Sender<bool>,
    snapshot: mpsc::Sender<SnapshotReply>,
    labels: mpsc::Sender<EditRequest>,
    task: JoinHandle<GroupRunner>,
}

/// The agent.
struct Agent {
    config_path: PathBuf,
    config: Config,
    /// What the agent started with of the keys a reload cannot change.
    restart_only: RestartOnly,
    ctx: CycleContext,
    groups: Vec<RunningGroup>,
    regressions: Arc<Regressions>,
}

/// Runs the agent until SIGTERM/SIGINT. `config` was loaded from `config_path`.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    let registry = Registry::new();
    let telemetry =
        Telemetry::new(SelfMetrics::new(&registry).context("registering self-metrics")?);
    let scores = Arc::new(ScoreBoard::new());
    let ready = Arc::new(AtomicBool::new(false));
    let catalog = Arc::new(PatternCatalog::new());
    let client = Client::new(&config.prometheus, telemetry.clone())
        .context("setting up the Prometheus client")?;
    let ctx = CycleContext {
        client: Arc::new(client),
        scores: scores.clone(),
        telemetry: telemetry.clone(),
        ready: ready.clone(),
        catalog: catalog.clone(),
    };

    let restored = restore_state(config.state_dir.as_deref());
    let mut runners = Vec::new();
    for g in &config.groups {
        let mut r = build_runner(g, &config)?;
        if let Some(snaps) = restored.groups.get(&g.name) {
            r.restore(snaps);
        }
        runners.push(r);
    }

    let regressions = Regressions::new(
        RegressSetup::build(&config, ctx.client.clone())?,
        RegressionMetrics::new(&registry).context("registering the regression metrics")?,
        ready.clone(),
    );
    let (stop_regressions, regressions_stopped) = watch::channel(false);
    let regressions_task = tokio::spawn(regressions.clone().run(regressions_stopped));

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let (edit_tx, mut edit_rx) = mpsc::channel::<LabelEditRequest>(16);
    let write_auth = WriteAuth::new(config.write_token_file.clone(), &registry)
        .context("registering the admin server metrics")?;
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let admin = Admin {
        write_auth: Arc::new(write_auth),
        registry,
        scores,
        ready,
        reload: Some(reload_tx),
        regressions: Some(regressions.checker()),
        catalog: Some(CatalogHandle {
            patterns: catalog,
            edits: edit_tx,
        }),
    };
    let server = AdminServer::start(config.listen, admin).with_context(|| {
        format!(
            "cannot listen on {} (server.listen in {})",
            config.listen, config.source
        )
    })?;
    info!(
        listen = %server.local_addr(),
        prometheus = %config.prometheus.url,
        groups = config.groups.len(),
        state_dir = ?config.state_dir,
        "kpiwatch started; scores at http://{}/metrics.", server.local_addr()
    );
    for g in &config.groups {
        info!(group = %g.name, interval = %config::format_duration(g.interval), step = %config::format_duration(g.step), window = g.window, metrics = g.metrics.len(), "Group configured.");
    }

    let mut agent = Agent {
        config_path,
        restart_only: RestartOnly::of(&config),
        config,
        ctx,
        groups: Vec::new(),
        regressions,
    };
    for r in runners {
        agent.spawn(r);
    }

    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let mut save_timer = tokio::time::interval(agent.config.state_save_interval);
    save_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    save_timer.tick().await; // the first tick is immediate; nothing learned yet
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            sig = &mut shutdown => {
                info!(signal = sig, "Shutting down.");
                break;
            }
            _ = hangup.recv() => {
                info!("SIGHUP received; reloading the config.");
                let _ = agent.reload().await;
            }
            Some(reply) = reload_rx.recv() => {
                let result = agent.reload().await;
                let _ = reply.send(result);
            }
            Some(req) = edit_rx.recv() => {
                let result = agent.edit_labels(req.edit).await;
                let _ = req.reply.send(result);
            }
            _ = save_timer.tick() => {
                let _ = agent.save_state().await;
            }
        }
    }
    let _ = stop_regressions.send(true);
    let _ = regressions_task.await;
    agent.shutdown().await;
    server.stop();
    info!("kpiwatch stopped.");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT with the signal's name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// The keys a reload cannot change: the server, its token reader and the save timer are
/// built once at start. Reloads are compared with the values the agent started with, so
/// that a change keeps being reported on every reload until a restart applies it.
#[derive(Debug, Clone, PartialEq)]
struct RestartOnly {
    listen: std::net::SocketAddr,
    write_token_file: Option<PathBuf>,
    state_save_interval: Duration,
}

impl RestartOnly {
    fn of(config: &Config) -> Self {
        RestartOnly {
            listen: config.listen,
            write_token_file: config.write_token_file.clone(),
            state_save_interval: config.state_save_interval,
        }
    }

    /// The keys whose value in `new` differs from the running one, each with a note.
    fn changed_keys(&self, new: &Config) -> Vec<(&'static str, &'static str)> {
        let mut keys = Vec::new();
        if new.listen != self.listen {
            keys.push(("server.listen", ""));
        }
        if new.write_token_file != self.write_token_file {
            keys.push((
                "server.write_token_file",
                " (a new token in the same file is read at once)",
            ));
        }
        if new.state_save_interval != self.state_save_interval {
            keys.push(("state_save_interval", ""));
        }
        keys
    }
}

fn restore_state(dir: Option<&Path>) -> State {
    let Some(dir) = dir else {
        return State::default();
    };
    match state::load(dir) {
        Ok(Some(s)) => {
            info!(path = %state::path_in(dir).display(), groups = s.groups.len(), "State restored.");
            s
        }
        Ok(None) => {
            info!(path = %state::path_in(dir).display(), "No saved state; starting fresh.");
            State::default()
        }
        Err(e) => {
            // Refusing to start would take the node's agent down for good; keep the bad
            // file for inspection and start fresh.
            let aside = state::path_in(dir).with_extension(format!("corrupt-{}", now_ms() / 1000));
            let moved = std::fs::rename(state::path_in(dir), &aside).is_ok();
            tracing::error!(error = %e, moved_to = %aside.display(), moved, "Saved state is unusable; starting fresh.");
            State::default()
        }
    }
}

fn build_runner(g: &GroupConfig, config: &Config) -> anyhow::Result<GroupRunner> {
    let detectors = build_detectors(&g.detectors)
        .with_context(|| format!("group {:?} in {}", g.name, config.source))?;
    Ok(GroupRunner::new(
        g.clone(),
        ShardFilter(config.shard.clone()),
        detectors,
    ))
}

impl Agent {
    fn spawn(&mut self, runner: GroupRunner) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (snap_tx, snap_rx) = mpsc::channel(1);
        let (labels_tx, labels_rx) = mpsc::channel(4);
        let name = runner.config().name.clone();
        let task = tokio::spawn(group_loop(
            runner,
            self.ctx.clone(),
            stop_rx,
            snap_rx,
            labels_rx,
        ));
        self.groups.push(RunningGroup {
            name,
            stop: stop_tx,
            snapshot: snap_tx,
            labels: labels_tx,
            task,
        });
    }

    /// Stops every group loop (after its current cycle) and returns the runners.
    async fn stop_groups(&mut self) -> Vec<GroupRunner> {
        let mut runners = Vec::new();
        for g in self.groups.drain(..) {
            let _ = g.stop.send(true);
            match tokio::time::timeout(SHUTDOWN_GRACE, g.task).await {
                Ok(Ok(r)) => runners.push(r),
                Ok(Err(e)) => warn!(group = %g.name, error = %e, "Group loop ended abnormally."),
                Err(_) => {
                    warn!(group = %g.name, grace_s = SHUTDOWN_GRACE.as_secs(), "Group still busy after the grace period; its latest state is not saved.")
                }
            }
        }
        runners
    }

    async fn collect_state(&self) -> State {
        let mut state = State::default();
        for g in &self.groups {
            let (tx, rx) = oneshot::channel();
            if g.snapshot.send(tx).await.is_ok() {
                if let Ok(s) = rx.await {
                    state.groups.insert(g.name.clone(), s);
                }
            }
        }
        state
    }

    /// Saves every group's state; `Ok(false)` without a `state_dir`.
    async fn save_state(&self) -> Result<bool, String> {
        let Some(dir) = self.config.state_dir.clone() else {
            return Ok(false);
        };
        let state = self.collect_state().await;
        write_state(&dir, state, &self.ctx.telemetry).await?;
        Ok(true)
    }

    /// Applies a catalog label edit in its group's loop, then saves the state at once,
    /// so that the API's 200 means the labels survive even a SIGKILL.
    async fn edit_labels(&self, edit: LabelEdit) -> Result<EditOutcome, EditError> {
        let group = self
            .groups
            .iter()
            .find(|g| g.name == edit.group)
            .ok_or_else(|| EditError::UnknownGroup(edit.group.clone()))?;
        let (tx, rx) = oneshot::channel();
        group
            .labels
            .send((edit, tx))
            .await
            .map_err(|_| EditError::Unavailable("group stopping"))?;
        let mut outcome = rx
            .await
            .map_err(|_| EditError::Unavailable("group stopping"))??;
        outcome.persisted = self.save_state().await.map_err(EditError::NotSaved)?;
        Ok(outcome)
    }

    /// Re-reads the config; on success swaps groups, keeping the runners (store and
    /// detectors) of groups whose config did not change. On failure nothing changes.
    async fn reload(&mut self) -> Result<String, String> {
        let path = self.config_path.clone();
        let new = match tokio::task::spawn_blocking(move || config::load(&path)).await {
            Ok(Ok(c)) => c,
            Ok(Err(errs)) => {
                self.ctx.telemetry.reload_rejected(&errs);
                return Err(errs.to_string());
            }
            Err(e) => {
                self.ctx.telemetry.reload_rejected(&e);
                return Err(e.to_string());
            }
        };
        let client = match Client::new(&new.prometheus, self.ctx.telemetry.clone()) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.ctx.telemetry.reload_rejected(&e);
                return Err(e.to_string());
            }
        };
        // Build new runners before stopping anything, so that a model that fails to
        // load leaves the old config running.
        let mut fresh: HashMap<String, GroupRunner> = HashMap::new();
        for g in &new.groups {
            match build_runner(g, &new) {
                Ok(r) => {
                    fresh.insert(g.name.clone(), r);
                }
                Err(e) => {
                    self.ctx.telemetry.reload_rejected(&format!("{e:#}"));
                    return Err(format!("{e:#}"));
                }
            }
        }
        let regress_setup = match RegressSetup::build(&new, client.clone()) {
            Ok(r) => r,
            Err(e) => {
                self.ctx.telemetry.reload_rejected(&format!("{e:#}"));
                return Err(format!("{e:#}"));
            }
        };
        for (key, note) in self.restart_only.changed_keys(&new) {
            warn!(key, "{key} changes only on restart; the value the agent started with stays in use{note}.");
        }
        let same_shard = new.shard == self.config.shard;
        let old: HashMap<String, GroupRunner> = self
            .stop_groups()
            .await
            .into_iter()
            .map(|r| (r.config().name.clone(), r))
            .collect();
        self.ctx.client = client;
        let mut old = old;
        for g in &new.groups {
            let runner = match old.remove(&g.name) {
                Some(prev) if same_shard && prev.config() == g => prev,
                Some(prev) => {
                    let mut r = fresh.remove(&g.name).expect("built above");
                    r.restore(&prev.snapshots());
                    r
                }
                None => fresh.remove(&g.name).expect("built above"),
            };
            self.spawn(runner);
        }
        for removed in old.keys() {
            self.ctx.telemetry.group_removed(removed);
        }
        let names: Vec<String> = new.groups.iter().map(|g| g.name.clone()).collect();
        self.ctx.scores.retain_groups(&names);
        self.regressions.apply(regress_setup).await;
        self.ctx.catalog.retain_groups(&names);
        self.config = new;
        self.ctx.telemetry.reload_applied(&self.config.source);
        Ok(self.config.source.clone())
    }

    async fn shutdown(&mut self) {
        let runners = self.stop_groups().await;
        let Some(dir) = self.config.state_dir.clone() else {
            return;
        };
        let mut state = State::default();
        for r in &runners {
            state.groups.insert(r.config().name.clone(), r.snapshots());
        }
        let _ = write_state(&dir, state, &self.ctx.telemetry).await;
    }
}

/// Writes the state file; the error (also logged and counted) is returned for callers
/// that answer someone.
async fn write_state(
    dir: &Path,
    state: State,
    telemetry: &crate::telemetry::Telemetry,
) -> Result<(), String> {
    let dir = dir.to_path_buf();
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || state::save(&dir, &state)).await {
        Ok(Ok(bytes)) => {
            telemetry.state_saved(bytes, started.elapsed());
            Ok(())
        }
        Ok(Err(e)) => {
            telemetry.state_save_failed(&e);
            Err(e.to_string())
        }
        Err(e) => {
            telemetry.state_save_failed(&e);
            Err(e.to_string())
        }
    }
}

/// A group's loop: one cycle per tick, never two at once. Ticks missed while a cycle
/// runs are skipped and counted as overruns.
async fn group_loop(
    mut runner: GroupRunner,
    ctx: CycleContext,
    mut stop: watch::Receiver<bool>,
    mut snapshots: mpsc::Receiver<SnapshotReply>,
    mut labels: mpsc::Receiver<EditRequest>,
) -> GroupRunner {
    let interval = runner.config().interval;
    let name = runner.config().name.clone();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(reply) = snapshots.recv() => {
                let _ = reply.send(runner.snapshots());
            }
            Some((edit, reply)) = labels.recv() => {
                let _ = reply.send(runner.edit_labels(&edit, &ctx.catalog));
            }
            _ = ticker.tick() => {
                let started = Instant::now();
                let (r, _) = runner.run_cycle(&ctx, now_ms()).await;
                runner = r;
                let missed = started.elapsed().as_nanos() / interval.as_nanos().max(1);
                for _ in 0..missed {
                    ctx.telemetry.cycle_overran(&name, interval);
                }
            }
        }
    }
    runner
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid config.
    fn config() -> Config {
        let text =
            "prometheus:\n  url: http://127.0.0.1:9090\ngroups:\n  - name: g\n    metrics:\n      \
                    m: up\n    entity_labels: [instance]\n    detectors:\n      zscore: {}\n";
        let env = std::collections::HashMap::new();
        config::parse_str(text, Path::new("test.yaml"), &env).expect("test config is valid")
    }

    #[test]
    fn restart_only_keys_are_compared_with_the_values_at_start() {
        let started = config();
        let running = RestartOnly::of(&started);
        let mut moved = started.clone();
        moved.listen = "127.0.0.1:9999".parse().expect("address");
        moved.state_save_interval = Duration::from_secs(7);
        let keys = |c: &Config| -> Vec<&str> {
            running
                .changed_keys(c)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(keys(&moved), ["server.listen", "state_save_interval"]);
        moved.write_token_file = Some(PathBuf::from("/run/token"));
        assert_eq!(
            keys(&moved),
            [
                "server.listen",
                "server.write_token_file",
                "state_save_interval"
            ]
        );
        assert!(keys(&started).is_empty());
    }
}
