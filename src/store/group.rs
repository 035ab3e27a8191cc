use std::collections::{BTreeMap, HashMap};

use crate::config::{Fill, Gate, GroupConfig};
use crate::normalize::{Normalizer, RobustStats};
use crate::seasonal::{Expectation, SeasonalRow, SeasonalSeries};
use crate::series::Series;
use crate::series::{EntityView, Sample};

use super::{Entity, ShardFilter};

/// The seasonal baseline's settings, in the store's units.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalSettings {
    /// Periods, ms.
    pub periods_ms: Vec<i64>,
    /// Outlying points (net of normal ones) before a level shift is adopted.
    pub adapt_after_points: u32,
}

/// A level shift a seasonal baseline adopted.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelShift {
    /// Entity key.
    pub entity: String,
    /// Metric name.
    pub metric: String,
    /// Change of level, in the metric's units.
    pub delta: f64,
}

/// Seasonal baselines by entity key and metric name, as persisted.
pub type SeasonalState = BTreeMap<String, BTreeMap<String, SeasonalSeries>>;

/// What the store needs of a group's config.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Step in ms.
    pub step_ms: i64,
    /// Points kept per series.
    pub history_points: usize,
    /// Entity labels, sorted.
    pub entity_labels: Vec<String>,
    /// Metric names in configuration order.
    pub metric_names: Vec<String>,
    /// Absence before expiry, ms.
    pub expire_after_ms: i64,
    /// Most entities tracked; new ones beyond it are dropped.
    pub max_entities: usize,
    /// Gap fill policy.
    pub fill: Fill,
    /// Which entities to keep.
    pub shard: ShardFilter,
    /// The seasonal baseline, when the group has one.
    pub seasonality: Option<SeasonalSettings>,
    /// Noise gate per metric, in `metric_names` order.
    pub gates: Vec<Gate>,
}

impl StoreConfig {
    /// Derives the store settings from a validated group.
    pub fn from_group(g: &GroupConfig, shard: ShardFilter) -> Self {
        StoreConfig {
            step_ms: g.step.as_millis() as i64,
            history_points: g.history_points,
            entity_labels: g.entity_labels.clone(),
            metric_names: g.metrics.iter().map(|m| m.name.clone()).collect(),
            expire_after_ms: g.expire_after.as_millis() as i64,
            max_entities: g.max_entities,
            fill: g.fill,
            shard,
            seasonality: g.seasonality.as_ref().map(|s| SeasonalSettings {
                periods_ms: s.periods.iter().map(|p| p.as_millis() as i64).collect(),
                adapt_after_points: (s.adapt_after.as_millis() / g.step.as_millis().max(1))
                    .clamp(1, u32::MAX as u128) as u32,
            }),
            gates: g.metrics.iter().map(|m| m.gate).collect(),
        }
    }
}

/// What ending a cycle changed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CycleOutcome {
    /// Keys of the entities refreshed this cycle, which detectors should score.
    pub fresh: Vec<String>,
    /// Entities that expired and were removed: `(key, labels)`.
    pub expired: Vec<(String, Vec<(String, String)>)>,
    /// Level shifts the seasonal baselines adopted this cycle.
    pub level_shifts: Vec<LevelShift>,
    /// New entities not tracked this cycle because the group was at `max_entities`.
    pub dropped: usize,
}

/// Counts of one ingest call.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct IngestStats {
    /// Samples stored.
    pub stored: usize,
    /// Series dropped by the shard filter.
    pub filtered: usize,
    /// Series of new entities dropped because the group is at `max_entities`.
    pub over_limit: usize,
    /// Samples older than the kept history.
    pub too_old: usize,
}

/// The entities and windows of one group.
#[derive(Debug)]
pub struct GroupStore {
    cfg: StoreConfig,
    entities: HashMap<String, Entity>,
    /// Per metric: timestamp up to which data has been fetched successfully.
    fetched_until: Vec<Option<i64>>,
    /// Keys seen by a query since the cycle began.
    seen: std::collections::HashSet<String>,
    /// Keys of new entities refused since the cycle began (group at `max_entities`);
    /// bounded by the answers of one cycle, which are in memory anyway.
    refused: std::collections::HashSet<String>,
    /// Restored seasonal baselines of entities not seen yet, by key and metric.
    pending_seasonal: HashMap<String, Vec<Option<SeasonalSeries>>>,
    scratch: Vec<f64>,
}

impl GroupStore {
    /// An empty store.
    pub fn new(cfg: StoreConfig) -> Self {
        let n = cfg.metric_names.len();
        GroupStore {
            cfg,
            entities: HashMap::new(),
            fetched_until: vec![None; n],
            seen: Default::default(),
            refused: Default::default(),
            pending_seasonal: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// The last step boundary at or before `now_ms`.
    pub fn aligned_end(&self, now_ms: i64) -> i64 {
        now_ms.div_euclid(self.cfg.step_ms) * self.cfg.step_ms
    }

    /// The range `[start, end]` (ms, both on step boundaries) to fetch for `metric` at
    /// `now_ms`: the whole history the first time, then only the points after the last
    /// successful fetch. `None` when there is nothing new yet.
    pub fn next_range(&self, metric: usize, now_ms: i64) -> Option<(i64, i64)> {
        let step = self.cfg.step_ms;
        let end = self.aligned_end(now_ms);
        let oldest = end - (self.cfg.history_points as i64 - 1) * step;
        let start = match self.fetched_until[metric] {
            Some(t) => (t + step).max(oldest),
            None => oldest,
        };
        (start <= end).then_some((start, end))
    }

    /// Records that `metric` was fetched up to `end_ms`.
    pub fn mark_fetched(&mut self, metric: usize, end_ms: i64) {
        self.fetched_until[metric] = Some(end_ms);
    }

    /// Renders the entity key of a series: `label="value",...` over the entity labels.
    pub fn entity_key(&self, series: &Series) -> String {
        let mut key = String::new();
        for (i, l) in self.cfg.entity_labels.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(l);
            key.push_str("=\"");
            key.push_str(series.label(l).unwrap_or(""));
            key.push('"');
        }
        key
    }

    /// Stores the series of one metric's query result.
    pub fn ingest(&mut self, metric: usize, series: &[Series], now_ms: i64) -> IngestStats {
        let mut stats = IngestStats::default();
        let (step, fill) = (self.cfg.step_ms, self.cfg.fill);
        for s in series {
            let key = self.entity_key(s);
            if !self.cfg.shard.keeps(s, &key) {
                stats.filtered += 1;
                continue;
            }
            let Some(entity) = self.entity_for(s, &key, now_ms) else {
                stats.over_limit += 1;
                self.refused.insert(key);
                continue;
            };
            entity.last_seen_ms = now_ms;
            for &(ts, v) in &s.samples {
                // query_range answers on start + k·step; round defensively anyway.
                let aligned = ((ts as f64 / step as f64).round() as i64) * step;
                if entity.set(metric, aligned, v, step, fill) {
                    stats.stored += 1;
                } else {
                    stats.too_old += 1;
                }
            }
            self.seen.insert(key);
        }
        stats
    }

    /// The entity of series `s` (key `key`), created when new; `None` when it is new
    /// and the group already tracks `max_entities`. A new entity takes the seasonal
    /// baselines restored for it.
    fn entity_for(&mut self, s: &Series, key: &str, now_ms: i64) -> Option<&mut Entity> {
        let (n_metrics, cap) = (self.cfg.metric_names.len(), self.cfg.history_points);
        if !self.entities.contains_key(key) {
            if self.entities.len() >= self.cfg.max_entities {
                return None;
            }
            let labels: Vec<(String, String)> = self
                .cfg
                .entity_labels
                .iter()
                .map(|l| (l.clone(), s.label(l).unwrap_or("").to_string()))
                .collect();
            let mut entity = Entity::new(labels, n_metrics, cap, now_ms);
            if let Some(restored) = self.pending_seasonal.remove(key) {
                for (slot, baseline) in entity.seasonal.iter_mut().zip(restored) {
                    *slot = baseline.map(|b| SeasonalRow::new(b, cap));
                }
            }
            self.entities.insert(key.to_string(), entity);
        }
        self.entities.get_mut(key)
    }

    /// Learns the seasonal baselines of `metric` from a long, coarse history (the
    /// answer of one `query_range` over `seasonality_history`). Entities whose baseline
    /// is already mature (restored, or learned online) keep theirs.
    pub fn learn_seasonal(&mut self, metric: usize, series: &[Series], now_ms: i64) -> usize {
        let Some(settings) = self.cfg.seasonality.clone() else {
            return 0;
        };
        let (step, cap) = (self.cfg.step_ms, self.cfg.history_points);
        let mut learned = 0;
        for s in series {
            let key = self.entity_key(s);
            if !self.cfg.shard.keeps(s, &key) {
                continue;
            }
            // Over max_entities: refused here too, counted when its samples arrive.
            let Some(entity) = self.entity_for(s, &key, now_ms) else {
                continue;
            };
            let slot = &mut entity.seasonal[metric];
            if slot.as_ref().is_some_and(|r| r.baseline.is_mature()) {
                continue;
            }
            let mut baseline = SeasonalSeries::new(&settings.periods_ms, step);
            baseline.fit(&s.samples);
            *slot = Some(SeasonalRow::new(baseline, cap));
            learned += 1;
        }
        learned
    }

    /// The seasonal baselines to persist (empty without seasonality).
    pub fn seasonal_state(&self) -> SeasonalState {
        let mut out = SeasonalState::new();
        for (key, e) in &self.entities {
            let per_metric: BTreeMap<String, SeasonalSeries> = e
                .seasonal
                .iter()
                .zip(&self.cfg.metric_names)
                .filter_map(|(row, name)| Some((name.clone(), row.as_ref()?.baseline.clone())))
                .collect();
            if !per_metric.is_empty() {
                out.insert(key.clone(), per_metric);
            }
        }
        out
    }

    /// Restores persisted baselines; those of another layout (periods or step changed)
    /// or of unknown metrics are dropped. Returns how many were kept.
    pub fn restore_seasonal(&mut self, state: SeasonalState) -> usize {
        let Some(settings) = &self.cfg.seasonality else {
            return 0;
        };
        let step = self.cfg.step_ms;
        let mut kept = 0;
        for (key, per_metric) in state {
            let mut slots: Vec<Option<SeasonalSeries>> = vec![None; self.cfg.metric_names.len()];
            for (name, baseline) in per_metric {
                let Some(i) = self.cfg.metric_names.iter().position(|m| *m == name) else {
                    continue;
                };
                if baseline.fits_layout(&settings.periods_ms, step) {
                    slots[i] = Some(baseline);
                    kept += 1;
                }
            }
            self.pending_seasonal.insert(key, slots);
        }
        kept
    }

    /// Ends a successful fetch: aligns every entity seen to `end_ms`, updates their
    /// normalisers, and expires entities absent for longer than `expire_after`.
    pub fn finish_cycle(&mut self, end_ms: i64, now_ms: i64) -> CycleOutcome {
        let (step, fill) = (self.cfg.step_ms, self.cfg.fill);
        let mut fresh = Vec::with_capacity(self.seen.len());
        let mut level_shifts = Vec::new();
        for key in self.seen.drain() {
            let Some(e) = self.entities.get_mut(&key) else {
                continue;
            };
            e.advance_to(end_ms, step, fill);
            let new_points = std::mem::take(&mut e.new_points);
            for (m, (row, norm)) in e.rows.iter().zip(e.normalizers.iter_mut()).enumerate() {
                let Some(row) = row else { continue };
                let Some(settings) = &self.cfg.seasonality else {
                    norm.update(row.as_slice(), new_points, &mut self.scratch);
                    continue;
                };
                let seasonal = e.seasonal[m].get_or_insert_with(|| {
                    SeasonalRow::new(
                        SeasonalSeries::new(&settings.periods_ms, step),
                        self.cfg.history_points,
                    )
                });
                let out = seasonal.extend(
                    row.as_slice(),
                    end_ms,
                    step,
                    new_points,
                    norm.stats(),
                    settings.adapt_after_points,
                );
                if out.rebuilt {
                    *norm = Normalizer::new();
                }
                norm.update(seasonal.residuals(), new_points, &mut self.scratch);
                if let Some(delta) = out.shift {
                    level_shifts.push(LevelShift {
                        entity: key.clone(),
                        metric: self.cfg.metric_names[m].clone(),
                        delta,
                    });
                }
            }
            fresh.push(key);
        }
        fresh.sort_unstable();
        let expire = self.cfg.expire_after_ms;
        let mut expired = Vec::new();
        self.entities.retain(|key, e| {
            let keep = now_ms - e.last_seen_ms <= expire;
            if !keep {
                expired.push((key.clone(), std::mem::take(&mut e.labels)));
            }
            keep
        });
        level_shifts.sort_by(|a, b| (&a.entity, &a.metric).cmp(&(&b.entity, &b.metric)));
        let dropped = self.refused.len();
        self.refused.clear();
        CycleOutcome {
            fresh,
            expired,
            level_shifts,
            dropped,
        }
    }

    /// Forgets what a failed cycle half-ingested about who was seen.
    pub fn abandon_cycle(&mut self) {
        self.seen.clear();
        self.refused.clear();
    }

    /// The entity with `key`.
    pub fn entity(&self, key: &str) -> Option<&Entity> {
        self.entities.get(key)
    }

    /// All entities.
    pub fn entities(&self) -> impl Iterator<Item = (&String, &Entity)> {
        self.entities.iter()
    }

    /// Number of entities.
    pub fn entity_count(&self) -> usize {
        self.entities.len()
    }

    /// Number of series (entity × metric with data).
    pub fn series_count(&self) -> usize {
        self.entities.values().map(Entity::present_metrics).sum()
    }

    /// Builds the detector views of the entities in `keys`.
    pub fn views<'a>(&'a self, keys: &'a [String]) -> ViewBatch<'a> {
        let mut batch = ViewBatch::default();
        for key in keys {
            let Some(e) = self.entities.get(key) else {
                continue;
            };
            let Some(end_ms) = e.end_ms else { continue };
            let start = batch.rows.len();
            for (m, (row, norm)) in e.rows.iter().zip(&e.normalizers).enumerate() {
                let Some(row) = row else { continue };
                match &e.seasonal[m] {
                    Some(seasonal) => {
                        batch.rows.push(seasonal.residuals());
                        batch.expectations.push(seasonal.expectation(end_ms));
                    }
                    None => {
                        batch.rows.push(row.as_slice());
                        batch.expectations.push(Expectation::IDENTITY);
                    }
                }
                batch.names.push(self.cfg.metric_names[m].as_str());
                batch.stats.push(norm.stats());
                batch
                    .gates
                    .push(self.cfg.gates.get(m).copied().unwrap_or(Gate::OPEN));
            }
            if batch.rows.len() > start {
                batch
                    .entities
                    .push((key.as_str(), start, batch.rows.len(), end_ms));
            }
        }
        batch.step_ms = self.cfg.step_ms;
        batch.capacity = self.cfg.history_points;
        batch
    }
}

/// Flat storage behind a set of [`EntityView`]s.
#[derive(Debug, Default)]
pub struct ViewBatch<'a> {
    names: Vec<&'a str>,
    rows: Vec<&'a [Sample]>,
    stats: Vec<RobustStats>,
    expectations: Vec<Expectation>,
    gates: Vec<Gate>,
    /// `(key, first row, end row, end_ms)`.
    entities: Vec<(&'a str, usize, usize, i64)>,
    step_ms: i64,
    capacity: usize,
}

impl<'a> ViewBatch<'a> {
    /// The views, one per entity with data.
    pub fn views(&self) -> Vec<EntityView<'_>> {
        self.entities
            .iter()
            .map(|&(key, a, b, end_ms)| EntityView {
                key,
                metric_names: &self.names[a..b],
                rows: &self.rows[a..b],
                stats: &self.stats[a..b],
                end_ms,
                step_ms: self.step_ms,
                capacity: self.capacity,
                expectations: &self.expectations[a..b],
                gates: &self.gates[a..b],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
