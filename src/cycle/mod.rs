//! One group's evaluation cycle: fetch → store → detect → publish.
//!
//! [`GroupRunner`] owns the group's store and detectors. A cycle fetches, for each
//! metric, only the points after the last successful fetch (the whole history the first
//! time), ingests them, and — when every query succeeded — scores the refreshed entities
//! on a blocking thread and publishes the scores. When a query fails, the group's
//! entities are reported stale and keep their last scores until a good cycle; nothing
//! already stored is lost, and the next cycle fetches the missed range. A query at fault
//! itself ([`reader::Error::is_query_fault`]: bad PromQL, an answer over the cap) fails
//! every cycle alike, so it only leaves its metric out: the group is scored on the others.

mod graph;
mod schedule;

pub use schedule::{group_loop, EditRequest, SnapshotReply};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::GroupConfig;
use crate::detect::{DetectError, Detector, Snapshot};
use crate::export::catalog::{EditError, EditOutcome, LabelEdit, SeriesPatterns};
use crate::export::{PatternCatalog, ScoreBoard, ScoreSink, SeriesLabels};
use crate::reader::{self, Client, QueryResult};
use crate::series::{Sample, Series};
use crate::store::{GroupStore, ShardFilter, StoreConfig};
use crate::telemetry::{CycleCounts, Telemetry};

/// Prometheus refuses ranges of more than 11,000 points per series; stay below.
pub const MAX_POINTS_PER_QUERY: i64 = 10_000;
/// Samples one answer of a group's range fetch holds at most, about 6 MB of JSON and
/// 4 MB decoded: with one answer in flight per metric, what bounds the agent's memory
/// beyond its rows while it reads a long history at start. Smaller answers cost more
/// CPU: each repeats the labels of every series.
const SAMPLES_PER_ANSWER: i64 = 250_000;
/// Samples fetched between two hand-backs of freed memory while a long history is read
/// (each costs tens of milliseconds on a heap of hundreds of megabytes).
const RELEASE_EVERY_SAMPLES: usize = 16 * SAMPLES_PER_ANSWER as usize;
/// Fewest steps per chunk, so that a group of very many entities does not cut a long
/// history into thousands of tiny queries (144 per metric at most for 6 h at 15 s).
const MIN_CHUNK_STEPS: i64 = 10;
/// The seasonal history is fetched at about this many samples per phase bucket and
/// period: enough for a robust median, a fraction of the fine step's load.
const SAMPLES_PER_BUCKET: i64 = 4;

/// What every cycle shares.
#[derive(Debug, Clone)]
pub struct CycleContext {
    /// The Prometheus client.
    pub client: Arc<Client>,
    /// Where scores are published.
    pub scores: Arc<ScoreBoard>,
    /// Self-monitoring.
    pub telemetry: Telemetry,
    /// Readiness latch, set after the first successful cycle.
    pub ready: Arc<AtomicBool>,
    /// Where ADSketch patterns are published for the catalog.
    pub catalog: Arc<PatternCatalog>,
}

impl CycleContext {
    /// A context with an empty score board and pattern catalog, not ready yet.
    pub fn new(client: Client, telemetry: Telemetry) -> Self {
        CycleContext {
            client: Arc::new(client),
            scores: Arc::new(ScoreBoard::new()),
            telemetry,
            ready: Arc::new(AtomicBool::new(false)),
            catalog: Arc::new(PatternCatalog::new()),
        }
    }
}

/// A group's store, detectors and rendered entity labels.
pub struct GroupRunner {
    cfg: GroupConfig,
    store: GroupStore,
    detectors: Vec<Box<dyn Detector>>,
    labels: HashMap<String, SeriesLabels>,
    /// Metrics whose seasonal baselines still wait for their history fetch.
    seasonal_pending: Vec<bool>,
    /// Whether the "group is at max_entities" warning was logged (once per runner).
    warned_full: bool,
    /// The service graph, when the group has one.
    graph: Option<graph::GraphLayer>,
}

/// The state-file entry under which a group's seasonal baselines are saved beside its
/// detectors' snapshots (no detector has this name).
pub const SEASONAL_SNAPSHOT: &str = "seasonal";

impl std::fmt::Debug for GroupRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupRunner")
            .field("group", &self.cfg.name)
            .field("entities", &self.store.entity_count())
            .field(
                "detectors",
                &self.detectors.iter().map(|d| d.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How a cycle went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CycleResult {
    /// Every query succeeded and entities were scored.
    Ok,
    /// At least one query failed; entities are stale.
    QueryFailed,
}

impl GroupRunner {
    /// A runner with an empty store.
    pub fn new(cfg: GroupConfig, shard: ShardFilter, detectors: Vec<Box<dyn Detector>>) -> Self {
        let store = GroupStore::new(StoreConfig::from_group(&cfg, shard));
        let seasonal_pending = vec![cfg.seasonality.is_some(); cfg.metrics.len()];
        let graph = cfg.graph.clone().map(graph::GraphLayer::new);
        GroupRunner {
            graph,
            cfg,
            store,
            detectors,
            labels: HashMap::new(),
            seasonal_pending,
            warned_full: false,
        }
    }

    /// The group's config.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// The names of the group's detectors, in scoring order.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }

    /// The `detector` labels of the series this group publishes: its detectors', and
    /// the service graph's when it has one.
    pub fn published_detectors(&self) -> Vec<&'static str> {
        let mut names = self.detector_names();
        if self.graph.is_some() {
            names.push(crate::export::GRAPH_DETECTOR);
        }
        names
    }

    /// The group's store (for tests and benches).
    pub fn store(&self) -> &GroupStore {
        &self.store
    }

    /// Snapshots of every detector, by detector name, and of the seasonal baselines
    /// under [`SEASONAL_SNAPSHOT`] when the group has them.
    pub fn snapshots(&self) -> BTreeMap<String, Snapshot> {
        let mut out: BTreeMap<String, Snapshot> = self
            .detectors
            .iter()
            .map(|d| (d.name().to_string(), d.snapshot()))
            .collect();
        if self.cfg.seasonality.is_some() {
            match serde_json::to_value(self.store.seasonal_state()) {
                Ok(v) => {
                    out.insert(SEASONAL_SNAPSHOT.to_string(), v);
                }
                Err(e) => {
                    tracing::warn!(group = %self.cfg.name, error = %e, "Seasonal baselines not saved.");
                }
            }
        }
        out
    }

    /// Restores snapshots saved by an earlier run; unknown detectors are ignored.
    pub fn restore(&mut self, snapshots: &BTreeMap<String, Snapshot>) {
        if let Some(s) = snapshots.get(SEASONAL_SNAPSHOT) {
            match serde_json::from_value(s.clone()) {
                Ok(state) => {
                    let kept = self.store.restore_seasonal(state);
                    tracing::info!(group = %self.cfg.name, series = kept, "Seasonal baselines restored.");
                }
                Err(e) => {
                    tracing::warn!(group = %self.cfg.name, error = %e, "Saved seasonal baselines not restored; learning them again.");
                }
            }
        }
        for d in &mut self.detectors {
            if let Some(s) = snapshots.get(d.name()) {
                if let Err(e) = d.restore(s.clone()) {
                    tracing::warn!(group = %self.cfg.name, detector = d.name(), error = %e, "Saved detector state not restored; starting it fresh.");
                }
            }
        }
    }

    /// Runs one cycle at wall-clock time `now_ms`. Takes and returns `self` so that the
    /// scoring can move to a blocking thread without locks.
    pub async fn run_cycle(mut self, ctx: &CycleContext, now_ms: i64) -> (Self, CycleResult) {
        let started = Instant::now();
        self.fetch_seasonal_history(ctx, now_ms).await;
        let (transient, faulty, answered) = self.fetch_and_ingest(ctx, now_ms).await;
        if transient > 0 || (faulty > 0 && answered == 0) {
            self.store.abandon_cycle();
            let entities = self.store.entity_count();
            let counts = CycleCounts {
                entities,
                stale: entities,
                series: self.store.series_count(),
                ..Default::default()
            };
            ctx.telemetry
                .cycle_finished(&self.cfg.name, started.elapsed(), false, counts);
            return (self, CycleResult::QueryFailed);
        }
        if let Some(g) = &mut self.graph {
            g.fetch_edges(&ctx.client, now_ms, &self.cfg.name, &ctx.telemetry)
                .await;
        }
        let (scores, telemetry) = (ctx.scores.clone(), ctx.telemetry.clone());
        let catalog = ctx.catalog.clone();
        let runner = tokio::task::spawn_blocking(move || {
            let counts = self.complete_cycle(now_ms, &mut &*scores, &telemetry);
            self.publish_patterns(&catalog, Instant::now());
            // The cycle's answers and scoring buffers are freed now, spread among pages
            // that long-lived state also uses: without a trim each cycle leaves some
            // behind (40 MB over 20 cycles at 10,000 entities).
            crate::memory::release_free_memory();
            (self, counts)
        })
        .await;
        let (this, counts) = match runner {
            Ok(r) => r,
            // A detector panicked: this is a bug; the group cannot continue without its
            // state, so the panic is propagated rather than hidden.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        ctx.telemetry
            .cycle_finished(&this.cfg.name, started.elapsed(), true, counts);
        ctx.ready.store(true, Ordering::Release);
        (this, CycleResult::Ok)
    }

    /// The ranges `(metric, start_ms, end_ms)` a cycle at `now_ms` asks for: only the
    /// points after the last successful fetch of each metric (its whole history the
    /// first time); metrics with nothing new are left out.
    pub fn pending_ranges(&self, now_ms: i64) -> Vec<(usize, i64, i64)> {
        (0..self.cfg.metrics.len())
            .filter_map(|i| self.store.next_range(i, now_ms).map(|(s, e)| (i, s, e)))
            .collect()
    }

    /// Stores one metric's answer to the range that ended at `end_ms`.
    pub fn ingest_answer(
        &mut self,
        metric: usize,
        end_ms: i64,
        parts: &[QueryResult],
        now_ms: i64,
    ) {
        for part in parts {
            self.store.ingest(metric, &part.series, now_ms);
        }
        // Fetched up to the newest point that came back, not up to `end_ms`: a backend
        // that serves recent points late (VictoriaMetrics' -search.latencyOffset, late
        // remote writes) is asked for them again next cycle instead of leaving them out
        // for good. An answer with no point at all leaves the range to be asked again.
        let newest = parts
            .iter()
            .flat_map(|p| &p.series)
            .filter_map(|s| s.samples.last().map(|(t, _)| *t))
            .max();
        if let Some(t) = newest {
            self.store.mark_fetched(metric, t.min(end_ms));
        }
    }

    /// Ends a cycle whose every answer was ingested: aligns and normalises the entities
    /// seen, expires the absent ones, scores the fresh ones with every detector and
    /// publishes the scores into `sink`. Synchronous and CPU-bound: the agent runs it on a
    /// blocking thread, a backtest on its own.
    pub fn complete_cycle(
        &mut self,
        now_ms: i64,
        sink: &mut dyn ScoreSink,
        telemetry: &Telemetry,
    ) -> CycleCounts {
        let end = self.store.aligned_end(now_ms);
        let outcome = self.store.finish_cycle(end, now_ms);
        if outcome.dropped > 0 {
            telemetry.entities_dropped(
                &self.cfg.name,
                outcome.dropped,
                self.cfg.max_entities,
                !self.warned_full,
            );
            self.warned_full = true;
        }
        for shift in &outcome.level_shifts {
            telemetry.level_shift_adopted(
                &self.cfg.name,
                &shift.entity,
                &shift.metric,
                shift.delta,
            );
        }
        for (key, _) in &outcome.expired {
            sink.remove_entity(&self.cfg.name, key);
            self.labels.remove(key);
            for d in &mut self.detectors {
                d.forget(key);
            }
            if let Some(g) = &mut self.graph {
                g.forget(key);
            }
        }
        let anomalous = self.score(&outcome.fresh, sink, telemetry);
        if let Some(g) = &mut self.graph {
            g.publish(&self.cfg.name, &self.labels, sink, telemetry);
        }
        let entities = self.store.entity_count();
        CycleCounts {
            entities,
            stale: entities.saturating_sub(fresh_count(self, now_ms)),
            series: self.store.series_count(),
            expired: outcome.expired.len(),
            anomalous,
        }
    }

    /// Publishes the ADSketch pattern counts (every cycle) and patterns (when the
    /// catalog's copy is older than [`crate::export::catalog::REFRESH`]).
    fn publish_patterns(&self, catalog: &PatternCatalog, now: Instant) {
        let Some(d) = self.detectors.iter().find_map(|d| d.as_adsketch()) else {
            return;
        };
        let group = self.cfg.name.as_str();
        let (normal, abnormal) = d
            .pattern_sets()
            .map(|(_, _, set)| set.counts())
            .fold((0, 0), |(n, a), (x, y)| (n + x, a + y));
        catalog.publish_counts(group, normal, abnormal);
        if catalog.refresh_due(group, now) {
            let series = d
                .pattern_sets()
                .map(|(entity, metric, set)| SeriesPatterns::new(group, entity, metric, set));
            catalog.publish_group(group, series, now);
        }
    }

    /// Applies a label edit to the group's ADSketch detector (which owns the labels and
    /// saves them with its snapshot) and republishes the series into the catalog.
    /// Nothing changes on error.
    pub fn edit_labels(
        &mut self,
        edit: &LabelEdit,
        catalog: &PatternCatalog,
    ) -> Result<EditOutcome, EditError> {
        let group = self.cfg.name.as_str();
        let d = self
            .detectors
            .iter_mut()
            .find_map(|d| d.as_adsketch_mut())
            .ok_or_else(|| EditError::NotEnabled(group.to_string()))?;
        let pattern = d
            .edit_labels(&edit.entity, &edit.metric, edit.id, edit.op.clone())?
            .clone();
        if let Some(set) = d.pattern_set(&edit.entity, &edit.metric) {
            catalog.publish_series(SeriesPatterns::new(group, &edit.entity, &edit.metric, set));
        }
        Ok(EditOutcome {
            pattern,
            persisted: false,
        })
    }

    /// Learns the seasonal baselines from Prometheus's own history, once per metric:
    /// one query over `seasonality_history` at the coarsest step that stays within the
    /// points Prometheus allows, so a new agent knows last week without waiting a week.
    /// A failed query is retried next cycle; meanwhile the baselines learn online.
    pub async fn fetch_seasonal_history(&mut self, ctx: &CycleContext, now_ms: i64) {
        let Some(seasonality) = &self.cfg.seasonality else {
            return;
        };
        let end = self.store.aligned_end(now_ms);
        let shortest = seasonality
            .periods
            .first()
            .copied()
            .unwrap_or(self.cfg.step);
        let (start, step) = seasonal_range(seasonality.history, shortest, self.cfg.step, end);
        let jobs: Vec<(usize, String)> = self
            .cfg
            .metrics
            .iter()
            .enumerate()
            .filter(|(i, _)| self.seasonal_pending[*i])
            .map(|(i, m)| (i, m.promql.clone()))
            .collect();
        // One metric at a time: this is the longest range the agent ever asks for, and
        // only one metric's rows are held at once.
        for (i, promql) in jobs {
            let started = Instant::now();
            let result = fetch_on_grid(&ctx.client, &promql, start, end, step).await;
            let metric = &self.cfg.metrics[i].name;
            match result {
                Ok(grid) => {
                    let learned: usize = grid
                        .series()
                        .map(|s| {
                            self.store
                                .learn_seasonal(i, std::slice::from_ref(&s), now_ms)
                        })
                        .sum();
                    drop(grid);
                    tokio::task::spawn_blocking(crate::memory::release_free_memory);
                    self.seasonal_pending[i] = false;
                    ctx.telemetry.seasonal_learned(
                        &self.cfg.name,
                        metric,
                        learned,
                        started.elapsed(),
                    );
                }
                Err(e) => ctx
                    .telemetry
                    .query_failed(&self.cfg.name, metric, e.cause(), &e),
            }
        }
    }

    /// Fetches every metric's new range and stores each answer as it arrives: all
    /// metrics at once (within the client's concurrency), each metric's range in
    /// chunks of about [`SAMPLES_PER_ANSWER`] samples, oldest first, so that a warm-up
    /// holds a few chunks in memory, never the whole history of every series. The first
    /// chunk of a group that has no entity yet is [`MIN_CHUNK_STEPS`] long; its answer
    /// says how many series there are. A metric stops at its first failed chunk (the
    /// chunks before it stay stored and fetched). Returns
    /// how many metrics failed transiently, failed for good (their query is at fault)
    /// and were answered in full.
    async fn fetch_and_ingest(&mut self, ctx: &CycleContext, now_ms: i64) -> (usize, usize, usize) {
        let (step, step_ms) = (self.cfg.step, self.store.config().step_ms);
        let first_chunk = chunk_steps(self.store.entity_count());
        let ranges = self.pending_ranges(now_ms);
        let mut failed = vec![false; self.cfg.metrics.len()];
        let (mut transient, mut faulty, mut fetched) = (0, 0, 0);
        // Capacity 1: a chunk waits to be stored before the next one is decoded.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ChunkAnswer>(1);
        let producers = futures_util::future::join_all(ranges.iter().map(|&(i, start, end)| {
            let (promql, tx, client) =
                (self.cfg.metrics[i].promql.clone(), tx.clone(), &ctx.client);
            async move {
                let (mut from, mut steps) = (start, first_chunk);
                while from <= end {
                    let to = (from + (steps - 1) * step_ms).min(end);
                    let answer = client.query_range(&promql, from, to, step).await;
                    let stop = answer.is_err();
                    steps = chunk_steps(answer.as_ref().map_or(0, |a| a.series.len()));
                    if tx.send((i, to, answer)).await.is_err() || stop {
                        break;
                    }
                    from = to + step_ms;
                }
            }
        }));
        drop(tx);
        let consumer = async {
            while let Some((metric, end_ms, answer)) = rx.recv().await {
                let name = &self.cfg.metrics[metric].name;
                match answer {
                    Ok(part) => {
                        let before = fetched;
                        fetched += part.sample_count();
                        self.ingest_answer(metric, end_ms, std::slice::from_ref(&part), now_ms);
                        // Answers freed while the rows grow leave holes the allocator
                        // keeps: hand them back every few million samples.
                        if before / RELEASE_EVERY_SAMPLES != fetched / RELEASE_EVERY_SAMPLES {
                            drop(part);
                            tokio::task::spawn_blocking(crate::memory::release_free_memory);
                        }
                    }
                    // Asking again cannot help (bad PromQL, an answer over the cap): the
                    // group is scored without this metric rather than never again.
                    Err(e) if e.is_query_fault() => {
                        failed[metric] = true;
                        faulty += 1;
                        ctx.telemetry
                            .query_refused(&self.cfg.name, name, e.cause(), &e);
                    }
                    Err(e) => {
                        failed[metric] = true;
                        transient += 1;
                        ctx.telemetry
                            .query_failed(&self.cfg.name, name, e.cause(), &e);
                    }
                }
            }
        };
        futures_util::future::join(producers, consumer).await;
        if fetched >= SAMPLES_PER_ANSWER as usize {
            // A warm-up or catch-up read: its answers are all freed now.
            tokio::task::spawn_blocking(crate::memory::release_free_memory);
        }
        let answered = ranges.iter().filter(|(i, _, _)| !failed[*i]).count();
        (transient, faulty, answered)
    }

    /// Scores the fresh entities with every detector and publishes the results;
    /// returns how many entities some detector found anomalous.
    fn score(
        &mut self,
        fresh: &[String],
        sink: &mut dyn ScoreSink,
        telemetry: &Telemetry,
    ) -> usize {
        for key in fresh {
            if !self.labels.contains_key(key) {
                if let Some(e) = self.store.entity(key) {
                    self.labels
                        .insert(key.clone(), SeriesLabels::new(&self.cfg.name, &e.labels));
                }
            }
        }
        let mut runs = vec![DetectorRun::default(); self.detectors.len()];
        let graph = &mut self.graph;
        let mut anomalous = 0;
        for keys in fresh.chunks(SCORE_CHUNK) {
            let batch = self.store.views(keys);
            let views = batch.views();
            let mut flagged = std::collections::HashSet::new();
            for (d, run) in self.detectors.iter_mut().zip(&mut runs) {
                let started = Instant::now();
                let results = d.score(&views);
                for (view, result) in views.iter().zip(results) {
                    match result {
                        Ok(s) => {
                            if s.is_anomalous() {
                                flagged.insert(view.key);
                            }
                            node_score(graph, &self.store, d.name(), view.key, s.anomaly_score);
                            if let Some(labels) = self.labels.get(view.key) {
                                sink.publish(&self.cfg.name, view, labels, d.name(), &s);
                            }
                        }
                        // Still a node of the graph (edges to it are not "unknown"), with
                        // no score yet.
                        Err(DetectError::WarmingUp { .. }) => {
                            run.warming += 1;
                            node_score(graph, &self.store, d.name(), view.key, f64::NAN);
                        }
                        Err(DetectError::NoData) => {
                            run.no_data += 1;
                            node_score(graph, &self.store, d.name(), view.key, f64::NAN);
                        }
                        Err(DetectError::Inference(e)) => {
                            run.failed += 1;
                            tracing::warn!(detector = d.name(), entity = view.key, error = %e, "Detector failed on an entity.");
                        }
                    }
                }
                run.took += started.elapsed();
            }
            anomalous += flagged.len();
        }
        for (d, run) in self.detectors.iter().zip(runs) {
            telemetry.detector_ran(
                d.name(),
                run.took,
                &[
                    ("warming_up", run.warming),
                    ("no_data", run.no_data),
                    ("inference", run.failed),
                ],
            );
        }
        anomalous
    }
}

/// Hands an entity's score from `detector` to the graph layer when that detector scores
/// the graph's nodes (NaN: no score yet).
fn node_score(
    graph: &mut Option<graph::GraphLayer>,
    store: &GroupStore,
    detector: &str,
    key: &str,
    score: f64,
) {
    if let Some(g) = graph.as_mut().filter(|g| g.detector() == detector) {
        if let Some(e) = store.entity(key) {
            g.record(key, &e.labels, score);
        }
    }
}

/// Entities scored at a time: a chunk's views and each detector's results are freed
/// before the next chunk, so the memory a cycle's scoring takes does not grow with the
/// group (scored at once, 10,000 entities of 8 metrics held about 20 MB of views and
/// results). Larger than Uni-AD's default batch, so its batches stay full.
const SCORE_CHUNK: usize = 1024;

/// One detector's time and skipped entities over a cycle's chunks.
#[derive(Debug, Default, Clone)]
struct DetectorRun {
    took: std::time::Duration,
    warming: usize,
    no_data: usize,
    failed: usize,
}

/// Entities whose last point is recent enough to count as fresh.
fn fresh_count(runner: &GroupRunner, now_ms: i64) -> usize {
    let end = runner.store.aligned_end(now_ms);
    runner
        .store
        .entities()
        .filter(|(_, e)| e.end_ms == Some(end))
        .count()
}

/// The start (ms) and step of the seasonal history fetch ending at `end_ms`: `history`
/// back, at about [`SAMPLES_PER_BUCKET`] samples per phase bucket of the shortest
/// period (a multiple of the group's step, never finer than it), coarser where needed
/// to stay within [`MAX_POINTS_PER_QUERY`] points per series.
fn seasonal_range(
    history: Duration,
    shortest_period: Duration,
    step: Duration,
    end_ms: i64,
) -> (i64, Duration) {
    let step_ms = step.as_millis().max(1) as i64;
    let span = history.as_millis() as i64;
    let per_bucket = shortest_period.as_millis() as i64
        / (crate::seasonal::MAX_BUCKETS as i64 * SAMPLES_PER_BUCKET);
    let by_points = span / (MAX_POINTS_PER_QUERY - 1) + 1;
    let wanted = per_bucket.max(by_points).max(step_ms);
    let coarse = (wanted + step_ms - 1) / step_ms * step_ms;
    let start = end_ms - (span / coarse) * coarse;
    (start, Duration::from_millis(coarse as u64))
}

/// One chunk of a metric's range: `(metric index, end_ms asked, answer)`.
type ChunkAnswer = (usize, i64, Result<QueryResult, reader::Error>);

/// Steps per `query_range` for a metric of `series` series: about
/// [`SAMPLES_PER_ANSWER`] samples, at least [`MIN_CHUNK_STEPS`] (also when the count is
/// not known yet) and within Prometheus's limit. A steady cycle's one or two new steps
/// are one chunk whatever the count.
fn chunk_steps(series: usize) -> i64 {
    match series {
        0 => MIN_CHUNK_STEPS,
        n => (SAMPLES_PER_ANSWER / n as i64).clamp(MIN_CHUNK_STEPS, MAX_POINTS_PER_QUERY),
    }
}

/// A metric's range as one row per series on the query's step grid, NaN where the
/// series had no sample; ordered by labels, as Prometheus orders its answers (so that
/// which entities fit under `max_entities` does not depend on a hash).
#[derive(Debug, Default)]
struct GridRows {
    start_ms: i64,
    step_ms: i64,
    rows: BTreeMap<Vec<(String, String)>, Vec<Sample>>,
}

impl GridRows {
    /// The rows as series, built one at a time.
    fn series(&self) -> impl Iterator<Item = Series> + '_ {
        self.rows.iter().map(|(labels, row)| Series {
            labels: labels.clone(),
            samples: row
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(k, &v)| (self.start_ms + k as i64 * self.step_ms, f64::from(v)))
                .collect(),
        })
    }
}

/// `query_range` from `start` to `end` in chunks of about [`SAMPLES_PER_ANSWER`]
/// samples, each chunk stored into f32 rows before the next is asked for: a long range
/// of many series costs 4 bytes per point instead of its JSON answer and 16-byte pairs.
async fn fetch_on_grid(
    client: &Client,
    promql: &str,
    start: i64,
    end: i64,
    step: Duration,
) -> Result<GridRows, reader::Error> {
    let step_ms = (step.as_millis() as i64).max(1);
    let points = ((end - start) / step_ms + 1).max(0) as usize;
    let mut grid = GridRows {
        start_ms: start,
        step_ms,
        rows: BTreeMap::new(),
    };
    let (mut from, mut steps) = (start, MIN_CHUNK_STEPS);
    while from <= end {
        let to = (from + (steps - 1) * step_ms).min(end);
        let answer = client.query_range(promql, from, to, step).await?;
        steps = chunk_steps(answer.series.len());
        for s in answer.series {
            let row = grid
                .rows
                .entry(s.labels)
                .or_insert_with(|| vec![Sample::NAN; points]);
            for (ts, v) in s.samples {
                let k = (ts - start) / step_ms;
                if let Some(slot) = usize::try_from(k).ok().and_then(|k| row.get_mut(k)) {
                    *slot = v as Sample;
                }
            }
        }
        from = to + step_ms;
    }
    Ok(grid)
}

/// `query_range` split into chunks Prometheus accepts.
pub async fn fetch_chunked(
    client: &Client,
    promql: &str,
    start: i64,
    end: i64,
    step: Duration,
) -> Result<Vec<QueryResult>, reader::Error> {
    let step_ms = step.as_millis() as i64;
    let mut parts = Vec::new();
    let mut from = start;
    while from <= end {
        let to = (from + (MAX_POINTS_PER_QUERY - 1) * step_ms).min(end);
        parts.push(client.query_range(promql, from, to, step).await?);
        from = to + step_ms;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_fetch_holds_about_250_000_samples_per_answer() {
        assert_eq!(chunk_steps(0), MIN_CHUNK_STEPS, "series count unknown");
        assert_eq!(chunk_steps(1), MAX_POINTS_PER_QUERY);
        assert_eq!(chunk_steps(1_000), 250);
        assert_eq!(chunk_steps(10_000), 25);
        assert_eq!(chunk_steps(1_000_000), MIN_CHUNK_STEPS);
    }

    #[test]
    fn grid_rows_give_back_each_series_on_its_timestamps_without_the_gaps() {
        let labels = vec![("instance".to_string(), "a".to_string())];
        let grid = GridRows {
            start_ms: 60_000,
            step_ms: 15_000,
            rows: BTreeMap::from([(labels.clone(), vec![1.5, Sample::NAN, 3.0])]),
        };
        let series: Vec<Series> = grid.series().collect();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].labels, labels);
        assert_eq!(series[0].samples, vec![(60_000, 1.5), (90_000, 3.0)]);
    }

    #[test]
    fn the_seasonal_history_fits_in_one_query_at_a_multiple_of_the_step() {
        let (day, week) = (Duration::from_secs(86_400), Duration::from_secs(7 * 86_400));
        let step = Duration::from_secs(15);
        let end = 10_000_000_000;
        let (start, coarse) = seasonal_range(week * 4, day, step, end);
        let points = (end - start) / coarse.as_millis() as i64 + 1;
        assert!(points <= MAX_POINTS_PER_QUERY, "{points}");
        assert_eq!(coarse.as_millis() % 15_000, 0);
        assert!(end - start > week.as_millis() as i64 * 4 - coarse.as_millis() as i64);
        // A day alone: four samples per 15-minute bucket (a 4-minute step), not 10,000.
        let (start, coarse) = seasonal_range(day * 4, day, step, end);
        assert_eq!(coarse, Duration::from_secs(225));
        assert_eq!((end - start) / 225_000, 1536);
        // A short period is fetched at the group's own step.
        let (_, coarse) = seasonal_range(
            Duration::from_secs(1200),
            Duration::from_secs(120),
            Duration::from_secs(5),
            0,
        );
        assert_eq!(coarse, Duration::from_secs(5));
    }
}
