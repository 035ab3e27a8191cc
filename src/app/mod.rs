//! Wiring: builds the components from a [`Config`], runs one task per group, serves
//! the admin endpoints, reloads on SIGHUP or `POST /-/reload`, saves state on a timer
//! and on shutdown.
//!
//! Order at start: the config is already valid (the CLI loaded it) → state directory
//! claimed (its lock: a second agent on the same directory stops here, having written
//! nothing) → state restored → detectors built (models loaded) → port bound → group
//! loops started. At shutdown
//! (SIGTERM, which Kubernetes sends, or SIGINT): the group loops finish their current
//! cycle within a grace period → state saved → admin server stopped.

mod reload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::Registry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use crate::config::{self, Config, DetectorsConfig, GroupConfig};
use crate::cycle::{group_loop, CycleContext, EditRequest, GroupRunner, SnapshotReply};
use crate::detect::adsketch::AdsketchDetector;
use crate::detect::uniad::UniadDetector;
use crate::detect::zscore::ZscoreDetector;
use crate::detect::Detector;
use crate::export::catalog::{CatalogHandle, EditError, EditOutcome, LabelEdit, LabelEditRequest};
use crate::export::{Admin, AdminServer, Refusals, ReloadRequest, WebGuard, WriteAuth};
use crate::reader::Client;
use crate::regressions::{RegressionMetrics, Regressions, Setup as RegressSetup};
use crate::state::{self, State, StateDir};
use crate::store::ShardFilter;
use crate::telemetry::{SelfMetrics, Telemetry};
use reload::RestartOnly;

/// How long shutdown waits for running cycles before saving state anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Longest a periodic save waits for the snapshots of groups busy in a cycle.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

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

/// How [`Agent::stop_groups`] treats a group still in a cycle after the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopWait {
    /// Leave it (shutdown: the process is about to end anyway).
    Grace,
    /// Wait for its cycle to end (reload: its runner carries what it learned).
    UntilDone,
}

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
    /// The claimed `state_dir` (held for the agent's life; a reload cannot move it).
    state_dir: Option<Arc<StateDir>>,
}

/// Runs the agent until SIGTERM/SIGINT. `config` was loaded from `config_path`.
pub async fn run(config_path: PathBuf, config: Config) -> anyhow::Result<()> {
    let registry = Registry::new();
    let ctx = cycle_context(&config, &registry)?;
    let state_dir = match &config.state_dir {
        Some(dir) => Some(state::claim(dir, &ctx.telemetry)?),
        None => None,
    };
    let runners = restored_runners(&config)?;
    let regressions = Regressions::new(
        RegressSetup::build(&config, ctx.client.clone())?,
        RegressionMetrics::new(&registry).context("registering the regression metrics")?,
        ctx.ready.clone(),
    );
    let (stop_regressions, regressions_stopped) = watch::channel(false);
    let regressions_task = tokio::spawn(regressions.clone().run(regressions_stopped));
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let (server, requests) = start_admin(&config, registry, &ctx, &regressions)?;
    announce(&config, &server);

    let mut agent = Agent {
        config_path,
        restart_only: RestartOnly::of(&config),
        config,
        ctx,
        groups: Vec::new(),
        regressions,
        state_dir,
    };
    for r in runners {
        agent.spawn(r);
    }
    agent.serve(requests).await?;

    let _ = stop_regressions.send(true);
    let _ = regressions_task.await;
    agent.shutdown().await;
    server.stop();
    info!("kpiwatch stopped.");
    Ok(())
}

/// What the admin server asks of the app: reloads and catalog label edits.
struct AdminRequests {
    reload: mpsc::Receiver<ReloadRequest>,
    edits: mpsc::Receiver<LabelEditRequest>,
}

/// What every group's cycles share: the Prometheus client, the score board, the
/// self-metrics (registered in `registry`), the readiness latch and the pattern catalog.
fn cycle_context(config: &Config, registry: &Registry) -> anyhow::Result<CycleContext> {
    let telemetry = Telemetry::new(SelfMetrics::new(registry).context("registering self-metrics")?);
    let client = Client::new(&config.prometheus, telemetry.clone())
        .context("setting up the Prometheus client")?;
    Ok(CycleContext::new(client, telemetry))
}

/// Every group's runner, with the detector state the last run saved.
fn restored_runners(config: &Config) -> anyhow::Result<Vec<GroupRunner>> {
    let restored = state::restore_or_fresh(config.state_dir.as_deref());
    config
        .groups
        .iter()
        .map(|g| {
            let mut r = build_runner(g, config)?;
            if let Some(snaps) = restored.groups.get(&g.name) {
                r.restore(snaps);
            }
            Ok(r)
        })
        .collect()
}

/// Binds `server.listen` and serves the admin endpoints on their own thread.
fn start_admin(
    config: &Config,
    registry: Registry,
    ctx: &CycleContext,
    regressions: &Arc<Regressions>,
) -> anyhow::Result<(AdminServer, AdminRequests)> {
    let (reload_tx, reload) = mpsc::channel::<ReloadRequest>(4);
    let (edit_tx, edits) = mpsc::channel::<LabelEditRequest>(16);
    let refusals = Refusals::new(&registry).context("registering the admin server metrics")?;
    let write_auth = WriteAuth::new(config.write_token_file.clone(), refusals.clone());
    let web = WebGuard::new(
        config.web.clone(),
        config.write_token_file.is_some(),
        refusals,
        &registry,
    )
    .context("registering the admin server metrics")?;
    let admin = Admin {
        write_auth: Arc::new(write_auth),
        web: Arc::new(web),
        registry,
        scores: ctx.scores.clone(),
        ready: ctx.ready.clone(),
        reload: Some(reload_tx),
        regressions: Some(regressions.checker()),
        catalog: Some(CatalogHandle {
            patterns: ctx.catalog.clone(),
            edits: edit_tx,
        }),
    };
    let server = AdminServer::start(config.listen, admin).with_context(|| {
        format!(
            "cannot listen on {} (server.listen in {})",
            config.listen, config.source
        )
    })?;
    Ok((server, AdminRequests { reload, edits }))
}

/// The start-up log lines: where the scores are, and each group's settings.
fn announce(config: &Config, server: &AdminServer) {
    let tls = config.web.as_ref().is_some_and(|w| w.tls.is_some());
    let basic_auth = config.web.as_ref().is_some_and(|w| !w.users.is_empty());
    info!(
        listen = %server.local_addr(),
        prometheus = %config.prometheus.url,
        groups = config.groups.len(),
        state_dir = ?config.state_dir,
        tls,
        basic_auth,
        "kpiwatch started; scores at {}://{}/metrics.", if tls { "https" } else { "http" }, server.local_addr()
    );
    for g in &config.groups {
        info!(group = %g.name, interval = %config::format_duration(g.interval), step = %config::format_duration(g.step), window = g.window, metrics = g.metrics.len(), "Group configured.");
    }
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
    /// Answers signals, admin requests and the save timer until SIGTERM or SIGINT.
    async fn serve(&mut self, mut requests: AdminRequests) -> anyhow::Result<()> {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let mut save_timer = tokio::time::interval(self.config.state_save_interval);
        save_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        save_timer.tick().await; // the first tick is immediate; nothing learned yet
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                // Shutdown first: a save timer that is always due (saves slower than
                // their interval) must not keep winning the draw against SIGTERM.
                biased;
                sig = &mut shutdown => {
                    info!(signal = sig, "Shutting down.");
                    return Ok(());
                }
                _ = hangup.recv() => {
                    info!("SIGHUP received; reloading the config.");
                    let _ = self.reload().await;
                }
                Some(reply) = requests.reload.recv() => {
                    let result = self.reload().await;
                    let _ = reply.send(result);
                }
                Some(req) = requests.edits.recv() => {
                    let result = self.edit_labels(req.edit).await;
                    let _ = req.reply.send(result);
                }
                _ = save_timer.tick() => {
                    let _ = self.save_state(Some(SNAPSHOT_WAIT)).await;
                }
            }
        }
    }

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

    /// Stops every group loop (after its current cycle) and returns the runners. All
    /// groups are told at once and share one grace period; a group still busy after it
    /// is waited for (`StopWait::UntilDone`, reloads: dropping its runner would lose
    /// what it learned) or left behind (`StopWait::Grace`, shutdown).
    async fn stop_groups(&mut self, wait: StopWait) -> Vec<GroupRunner> {
        let groups: Vec<RunningGroup> = self.groups.drain(..).collect();
        for g in &groups {
            let _ = g.stop.send(true);
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let mut runners = Vec::new();
        for mut g in groups {
            let ended = match tokio::time::timeout_at(deadline, &mut g.task).await {
                Ok(ended) => Some(ended),
                Err(_) if wait == StopWait::UntilDone => {
                    warn!(group = %g.name, grace_s = SHUTDOWN_GRACE.as_secs(), "Group still busy in a cycle after the grace period; the reload waits for it, so that nothing it learned is lost.");
                    Some(g.task.await)
                }
                Err(_) => {
                    warn!(group = %g.name, grace_s = SHUTDOWN_GRACE.as_secs(), "Group still busy after the grace period; what it learned since the last save is not saved.");
                    None
                }
            };
            match ended {
                Some(Ok(r)) => runners.push(r),
                Some(Err(e)) => warn!(group = %g.name, error = %e, "Group loop ended abnormally."),
                None => {}
            }
        }
        runners
    }

    /// Every group's snapshot, waiting for busy groups until `deadline` (`None`: until
    /// they answer). A group answers between cycles, so one in a long cycle (a slow or
    /// frozen Prometheus) answers late; the groups missing at the deadline are left out.
    async fn collect_state(&self, deadline: Option<tokio::time::Instant>) -> State {
        let mut state = State::default();
        for g in &self.groups {
            let (tx, rx) = oneshot::channel();
            let snapshot = async {
                g.snapshot.send(tx).await.ok()?;
                rx.await.ok()
            };
            let answer = match deadline {
                Some(d) => tokio::time::timeout_at(d, snapshot).await.ok().flatten(),
                None => snapshot.await,
            };
            if let Some(s) = answer {
                state.groups.insert(g.name.clone(), s);
            }
        }
        state
    }

    /// Saves every group's state; `Ok(false)` without a `state_dir`. With `wait`, a group
    /// still in a cycle after it keeps what the file holds for it from the last save, so
    /// that the serve loop (which also answers SIGTERM and reloads) is never held up by a
    /// slow Prometheus for longer.
    async fn save_state(&self, wait: Option<Duration>) -> Result<bool, String> {
        let Some(dir) = &self.state_dir else {
            return Ok(false);
        };
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        let mut state = self.collect_state(deadline).await;
        let names: Vec<String> = self.groups.iter().map(|g| g.name.clone()).collect();
        state::keep_saved_groups(dir, &mut state, &names).await;
        state::save_off_runtime(dir, state, &self.ctx.telemetry).await?;
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
        // Waits for every group: the 200 promises the new labels are on disk, and the
        // edited group just answered, so it is between cycles.
        outcome.persisted = self.save_state(None).await.map_err(EditError::NotSaved)?;
        Ok(outcome)
    }

    async fn shutdown(&mut self) {
        let names: Vec<String> = self.groups.iter().map(|g| g.name.clone()).collect();
        let runners = self.stop_groups(StopWait::Grace).await;
        let Some(dir) = &self.state_dir else {
            return;
        };
        let mut state = State::default();
        for r in &runners {
            state.groups.insert(r.config().name.clone(), r.snapshots());
        }
        state::keep_saved_groups(dir, &mut state, &names).await;
        let _ = state::save_off_runtime(dir, state, &self.ctx.telemetry).await;
    }
}
