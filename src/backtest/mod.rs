//! `kpiwatch backtest`: the agent's cycles over a past range, as fast as the machine
//! allows, and what its alert rules would have fired.
//!
//! Each group runs the agent's own [`GroupRunner`]: the same store, normaliser,
//! seasonal baseline, detectors, thresholds and state evolution, one cycle per
//! `interval` from `--from` to `--to`. Only the source of the answers differs: instead
//! of asking Prometheus every cycle, the backtest fetches each metric in segments of
//! [`history::segment_steps`] steps (the next segment while the current one replays)
//! and hands every cycle the slice it asks for ([`history::History`]). The first cycle
//! asks for the whole window before `--from`, as a freshly started agent does. A
//! group's entities are split among [`Options::workers`] runners (threads) by the hash
//! of their key, as hash-sharded agents split them; groups run concurrently.
//!
//! ```text
//! Prometheus ─segments─▶ History ─per-cycle ranges─▶ GroupRunner (store → detect) ─▶ Recorder
//!                                                                                  ─▶ alerts (rules) ─▶ summary, CSV, report.html
//! ```

pub mod alerts;
pub mod history;
pub mod incidents;
pub mod overrides;
pub mod record;
pub mod report;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{Config, GroupConfig, Shard};
use crate::cycle::{CycleContext, GroupRunner};
use crate::reader::{self, Client};
use crate::store::ShardFilter;
use crate::telemetry::{SelfMetrics, Telemetry};
use history::{fetch_segment, segment_steps, Cursor, History};
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
    /// Threads per group: its entities are split among this many runners by the hash
    /// of their key, as hash-sharded agents split them (entities are independent).
    pub workers: usize,
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
    /// Time the workers spent in the cycles (normalise and detect), summed over them.
    pub replay: Duration,
    /// The group's detectors.
    pub detectors: Vec<&'static str>,
}

/// A finished backtest.
#[derive(Debug)]
pub struct Outcome {
    /// Every score, band and value.
    pub recorder: Recorder,
    /// Per group figures.
    pub runs: Vec<GroupRun>,
    /// Of the groups' `replay`, time in each detector (all groups).
    pub detect: BTreeMap<String, Duration>,
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
    let ctx = CycleContext::new(client, telemetry);
    let groups = selected_groups(config, opts);
    let runs = groups
        .iter()
        .map(|g| run_group((*g).clone(), &config.shard, &ctx, opts, progress));
    let mut recorder = Recorder::new(opts.from_ms, BTreeMap::new());
    let mut out = Vec::new();
    for result in futures_util::future::join_all(runs).await {
        let (rec, run) = result?;
        recorder.merge(rec);
        out.push(run);
    }
    // The cycles report each detector's time to the self-metrics, as in the agent.
    let detect = out
        .iter()
        .flat_map(|r| r.detectors.iter().copied())
        .map(|d| {
            let h = ctx
                .telemetry
                .metrics
                .inference_duration
                .with_label_values(&[d]);
            (d.to_string(), Duration::from_secs_f64(h.get_sample_sum()))
        })
        .collect();
    Ok(Outcome {
        recorder,
        runs: out,
        detect,
        wall: started.elapsed(),
    })
}

/// One worker of a group: a runner over a hash shard of the group's entities, what
/// it recorded, and where its last answers ended.
struct Worker {
    runner: GroupRunner,
    recorder: Recorder,
    cursor: Cursor,
}

/// The shard filters of `workers` runners that split what `shard` keeps: hash mode
/// splits further (`h % (total·w) = index + total·j` partitions `h % total = index`);
/// node mode keeps one runner (its series are not split by entity key).
fn worker_shards(shard: &Shard, workers: usize) -> Vec<ShardFilter> {
    let w = workers.max(1) as u64;
    match shard {
        _ if w == 1 => vec![ShardFilter(shard.clone())],
        Shard::All => (0..w)
            .map(|index| ShardFilter(Shard::Hash { total: w, index }))
            .collect(),
        Shard::Hash { total, index } => (0..w)
            .map(|j| {
                ShardFilter(Shard::Hash {
                    total: total * w,
                    index: index + total * j,
                })
            })
            .collect(),
        Shard::Node { .. } => vec![ShardFilter(shard.clone())],
    }
}

/// Replays one group.
async fn run_group(
    cfg: GroupConfig,
    shard: &Shard,
    ctx: &CycleContext,
    opts: &Options,
    progress: &indicatif::ProgressBar,
) -> Result<(Recorder, GroupRun), Error> {
    let names = BTreeMap::from([(
        cfg.name.clone(),
        cfg.metrics
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>(),
    )]);
    let mut workers = Vec::new();
    for filter in worker_shards(shard, opts.workers) {
        let detectors = crate::app::build_detectors(&cfg.detectors)
            .map_err(|e| Error::Setup(format!("group {:?}: {e:#}", cfg.name)))?;
        workers.push(Worker {
            runner: GroupRunner::new(cfg.clone(), filter, detectors),
            recorder: Recorder::new(opts.from_ms, names.clone()),
            cursor: Cursor::default(),
        });
    }
    let mut run = GroupRun {
        group: cfg.name.clone(),
        detectors: workers[0].runner.detector_names(),
        ..Default::default()
    };
    let times = cycle_times(opts.from_ms, opts.to_ms, cfg.interval);
    let Some(&last) = times.last() else {
        return Ok((Recorder::new(opts.from_ms, names), run));
    };
    let step_ms = cfg.step.as_millis() as i64;
    let aligned = |t: i64| t.div_euclid(step_ms) * step_ms;
    let promql: Vec<String> = cfg.metrics.iter().map(|m| m.promql.clone()).collect();
    let last_end = aligned(last);
    // The first cycle asks for the whole window before `from`, as a new agent does.
    let mut seg_start = aligned(opts.from_ms) - (cfg.history_points as i64 - 1) * step_ms;
    let seg_steps = segment_steps(cfg.history_points);
    let segment_end = |start: i64| (start + (seg_steps - 1) * step_ms).min(last_end);
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
        let first = times[next_cycle.min(times.len() - 1)];
        for w in &mut workers {
            w.runner.fetch_seasonal_history(ctx, first).await;
        }
        let upto = times.partition_point(|t| aligned(*t) <= seg_end);
        let cycles = times[next_cycle..upto].to_vec();
        next_cycle = upto;
        let telemetry = ctx.telemetry.clone();
        let bar = progress.clone();
        let replay = tokio::task::spawn_blocking(move || {
            let busy = replay_segment(&mut workers, &history, &cycles, &telemetry, &bar);
            (workers, history, busy)
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
        let (w, mut h, busy) = match replayed {
            Ok(x) => x,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let replay_wall = waited.elapsed().min(busy.1);
        run.replay += busy.0;
        run.fetch_wait += waited.elapsed().saturating_sub(replay_wall);
        workers = w;
        h.trim(seg_start - (cfg.history_points as i64) * step_ms);
        history = h;
        match fetched {
            Some(next) => segment = next,
            None => break,
        }
    }
    run.cycles = times.len();
    let mut recorder = Recorder::new(opts.from_ms, names);
    for w in workers {
        recorder.merge(w.recorder);
    }
    run.entities = recorder.entities.len();
    Ok((recorder, run))
}

/// Replays `cycles` on every worker, one thread each; returns the threads' summed busy
/// time and the wall time. The bar advances with the first worker.
fn replay_segment(
    workers: &mut [Worker],
    history: &History,
    cycles: &[i64],
    telemetry: &Telemetry,
    bar: &indicatif::ProgressBar,
) -> (Duration, Duration) {
    let started = Instant::now();
    let busy = std::thread::scope(|scope| {
        let handles: Vec<_> = workers
            .iter_mut()
            .enumerate()
            .map(|(i, w)| {
                scope.spawn(move || {
                    let t0 = Instant::now();
                    for &t in cycles {
                        replay_cycle(w, history, telemetry, t);
                        if i == 0 {
                            bar.inc(1);
                        }
                    }
                    t0.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .sum()
    });
    (busy, started.elapsed())
}

/// One cycle at `now_ms` from kept answers: what [`GroupRunner::run_cycle`] does after
/// its queries succeed.
fn replay_cycle(w: &mut Worker, history: &History, telemetry: &Telemetry, now_ms: i64) {
    let group = w.runner.config().name.clone();
    for (metric, start, end) in w.runner.pending_ranges(now_ms) {
        let answer = history.answer(metric, start, end, &mut w.cursor);
        w.runner
            .ingest_answer(metric, end, std::slice::from_ref(&answer), now_ms);
        w.recorder
            .record_values(&group, w.runner.store(), metric, &answer);
    }
    w.runner.complete_cycle(now_ms, &mut w.recorder, telemetry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_shards_partition_what_the_agent_keeps() {
        let owners = |shard: &Shard, key: &str| {
            worker_shards(shard, 3)
                .iter()
                .filter(|f| f.owns_key(key))
                .count()
        };
        let sharded = Shard::Hash { total: 4, index: 1 };
        let mine = ShardFilter(sharded.clone());
        for i in 0..200 {
            let key = format!("instance=\"host-{i}\"");
            assert_eq!(owners(&Shard::All, &key), 1, "{key}");
            assert_eq!(
                owners(&sharded, &key),
                usize::from(mine.owns_key(&key)),
                "{key}"
            );
        }
        assert_eq!(worker_shards(&Shard::All, 1), vec![ShardFilter(Shard::All)]);
    }
}
