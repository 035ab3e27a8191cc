//! `kpiwatch backtest`: the agent's cycles over a past range, as fast as the machine
//! allows, and what its alert rules would have fired.
//!
//! Each group runs the agent's own [`GroupRunner`]: the same store, normaliser,
//! seasonal baseline, detectors, thresholds and state evolution, one cycle per
//! `interval` from `--from` to `--to`. Only the source of the answers differs: instead
//! of asking Prometheus every cycle, the backtest fetches each metric in segments of
//! [`history::SEGMENT_STEPS`] steps (the next segment while the current one replays)
//! and hands every cycle the slice it asks for ([`history::History`]). The first cycle
//! asks for the whole window before `--from`, as a freshly started agent does.
//!
//! ```text
//! Prometheus ─segments─▶ History ─per-cycle ranges─▶ GroupRunner (store → detect) ─▶ Recorder
//!                                                                                  ─▶ alerts (rules) ─▶ summary, CSV, report.html
//! ```

pub mod alerts;
pub mod history;
pub mod incidents;
pub mod record;
pub mod report;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, GroupConfig};
use crate::cycle::{CycleContext, GroupRunner};
use crate::export::{PatternCatalog, ScoreBoard};
use crate::reader::{self, Client};
use crate::store::ShardFilter;
use crate::telemetry::{SelfMetrics, Telemetry};
use history::{fetch_segment, History, SEGMENT_STEPS};
use record::Recorder;

/// Why a backtest could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query failed after the client's retries.
    #[error("group {group:?}, metric {metric:?}: {source}")]
    Query {
        /// Group.
        group: String,
        /// Metric.
        metric: String,
        /// The client's error.
        source: reader::Error,
    },
    /// The client or a detector could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct Options {
    /// First cycle (ms since the epoch).
    pub from_ms: i64,
    /// Last cycle at or before this time (ms).
    pub to_ms: i64,
    /// Groups to run; empty: every group.
    pub groups: Vec<String>,
}

/// How one group's replay went.
#[derive(Debug, Clone, Default)]
pub struct GroupRun {
    /// Group name.
    pub group: String,
    /// Cycles replayed.
    pub cycles: usize,
    /// Entities seen.
    pub entities: usize,
    /// Samples fetched.
    pub samples: usize,
    /// Wall time of the fetches the replay waited for.
    pub fetch_wait: Duration,
    /// CPU time of the cycles (normalise and detect).
    pub replay: Duration,
    /// Of `replay`, time in each detector.
    pub detect: BTreeMap<&'static str, Duration>,
}

/// A finished backtest.
#[derive(Debug)]
pub struct Outcome {
    /// Every score, band and value.
    pub recorder: Recorder,
    /// Per group figures.
    pub runs: Vec<GroupRun>,
    /// Wall time, fetch included.
    pub wall: Duration,
}

/// The cycle times of `[from_ms, to_ms]`, one per `interval`.
pub fn cycle_times(from_ms: i64, to_ms: i64, interval: Duration) -> Vec<i64> {
    let every = (interval.as_millis() as i64).max(1);
    (0..)
        .map(|k| from_ms + k * every)
        .take_while(|t| *t <= to_ms)
        .collect()
}

/// The groups `opts` selects, in config order.
pub fn selected_groups<'a>(config: &'a Config, opts: &Options) -> Vec<&'a GroupConfig> {
    config
        .groups
        .iter()
        .filter(|g| opts.groups.is_empty() || opts.groups.contains(&g.name))
        .collect()
}

/// Runs every selected group concurrently; `progress` advances once per cycle.
pub async fn run(
    config: &Config,
    opts: &Options,
    progress: &indicatif::ProgressBar,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let registry = prometheus::Registry::new();
    let metrics = SelfMetrics::new(&registry).map_err(|e| Error::Setup(e.to_string()))?;
    let telemetry = Telemetry::new(metrics);
    let client = Client::new(&config.prometheus, telemetry.clone())
        .map_err(|e| Error::Setup(format!("Prometheus client: {e}")))?;
    let ctx = CycleContext {
        client: Arc::new(client),
        scores: Arc::new(ScoreBoard::new()),
        telemetry,
        ready: Arc::new(AtomicBool::new(false)),
        catalog: Arc::new(PatternCatalog::new()),
    };
    let shard = ShardFilter(config.shard.clone());
    let groups = selected_groups(config, opts);
    let runs = groups
        .iter()
        .map(|g| run_group((*g).clone(), shard.clone(), &ctx, opts, progress));
    let mut recorder = Recorder::new(opts.from_ms, BTreeMap::new());
    let mut out = Vec::new();
    for result in futures_util::future::join_all(runs).await {
        let (rec, run) = result?;
        recorder.merge(rec);
        out.push(run);
    }
    for run in &mut out {
        for (d, took) in &mut run.detect {
            let h = ctx
                .telemetry
                .metrics
                .inference_duration
                .with_label_values(&[d]);
            *took = Duration::from_secs_f64(h.get_sample_sum());
        }
    }
    Ok(Outcome {
        recorder,
        runs: out,
        wall: started.elapsed(),
    })
}

/// Replays one group.
async fn run_group(
    cfg: GroupConfig,
    shard: ShardFilter,
    ctx: &CycleContext,
    opts: &Options,
    progress: &indicatif::ProgressBar,
) -> Result<(Recorder, GroupRun), Error> {
    let detectors = crate::app::build_detectors(&cfg.detectors)
        .map_err(|e| Error::Setup(format!("group {:?}: {e:#}", cfg.name)))?;
    let mut run = GroupRun {
        group: cfg.name.clone(),
        detect: detectors
            .iter()
            .map(|d| (d.name(), Duration::ZERO))
            .collect(),
        ..Default::default()
    };
    let mut runner = GroupRunner::new(cfg.clone(), shard, detectors);
    let names = BTreeMap::from([(
        cfg.name.clone(),
        cfg.metrics.iter().map(|m| m.name.clone()).collect(),
    )]);
    let mut recorder = Recorder::new(opts.from_ms, names);
    let times = cycle_times(opts.from_ms, opts.to_ms, cfg.interval);
    let Some(&last) = times.last() else {
        return Ok((recorder, run));
    };
    let step_ms = cfg.step.as_millis() as i64;
    let promql: Vec<String> = cfg.metrics.iter().map(|m| m.promql.clone()).collect();
    let last_end = runner.store().aligned_end(last);
    // The first cycle asks for the whole window before `from`, as a new agent does.
    let mut seg_start =
        runner.store().aligned_end(opts.from_ms) - (cfg.history_points as i64 - 1) * step_ms;
    let segment_end = |start: i64| (start + SEGMENT_STEPS * step_ms).min(last_end);
    let fetch = |start: i64| {
        let (client, promql) = (ctx.client.clone(), promql.clone());
        async move { fetch_segment(&client, &promql, start, segment_end(start), cfg.step).await }
    };
    let mut history = History::new(cfg.metrics.len());
    let mut next_cycle = 0;
    let waited = Instant::now();
    let mut segment = fetch(seg_start).await;
    run.fetch_wait += waited.elapsed();
    loop {
        let seg = segment.map_err(|(i, source)| Error::Query {
            group: cfg.name.clone(),
            metric: cfg.metrics[i].name.clone(),
            source,
        })?;
        run.samples += seg
            .iter()
            .flatten()
            .map(|p| p.sample_count())
            .sum::<usize>();
        history.append(seg);
        let seg_end = segment_end(seg_start);
        // As the agent would: the seasonal baselines learn last week's history first.
        runner
            .fetch_seasonal_history(ctx, times[next_cycle.min(times.len() - 1)])
            .await;
        let upto = times.partition_point(|t| runner.store().aligned_end(*t) <= seg_end);
        let cycles = times[next_cycle..upto].to_vec();
        next_cycle = upto;
        let telemetry = ctx.telemetry.clone();
        let bar = progress.clone();
        let replay = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            for t in cycles {
                replay_cycle(&mut runner, &history, &mut recorder, &telemetry, t);
                bar.inc(1);
            }
            (runner, history, recorder, started.elapsed())
        });
        seg_start = seg_end + step_ms;
        let more = seg_start <= last_end;
        let waited = Instant::now();
        let prefetch = async {
            if more {
                Some(fetch(seg_start).await)
            } else {
                None
            }
        };
        let (replayed, fetched) = tokio::join!(replay, prefetch);
        let (r, mut h, rec, took) = match replayed {
            Ok(x) => x,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        run.replay += took;
        run.fetch_wait += waited.elapsed().saturating_sub(took);
        (runner, recorder) = (r, rec);
        h.trim(seg_start - (cfg.history_points as i64) * step_ms);
        history = h;
        match fetched {
            Some(next) => segment = next,
            None => break,
        }
    }
    run.cycles = times.len();
    run.entities = recorder.entities.len();
    Ok((recorder, run))
}

/// One cycle at `now_ms` from kept answers: what [`GroupRunner::run_cycle`] does after
/// its queries succeed.
pub fn replay_cycle(
    runner: &mut GroupRunner,
    history: &History,
    recorder: &mut Recorder,
    telemetry: &Telemetry,
    now_ms: i64,
) {
    let group = runner.config().name.clone();
    for (metric, start, end) in runner.pending_ranges(now_ms) {
        let answer = history.answer(metric, start, end);
        recorder.record_values(&group, runner.store(), metric, &answer);
        runner.ingest_answer(metric, end, std::slice::from_ref(&answer), now_ms);
    }
    runner.complete_cycle(now_ms, recorder, telemetry);
}
