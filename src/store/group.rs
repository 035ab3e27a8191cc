use std::collections::HashMap;

use crate::config::{Fill, GroupConfig};
use crate::normalize::RobustStats;
use crate::series::EntityView;
use crate::series::Series;

use super::{Entity, ShardFilter};

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
    /// Gap fill policy.
    pub fill: Fill,
    /// Which entities to keep.
    pub shard: ShardFilter,
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
            fill: g.fill,
            shard,
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
}

/// Counts of one ingest call.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct IngestStats {
    /// Samples stored.
    pub stored: usize,
    /// Series dropped by the shard filter.
    pub filtered: usize,
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
        let (step, fill, cap) = (self.cfg.step_ms, self.cfg.fill, self.cfg.history_points);
        let n_metrics = self.cfg.metric_names.len();
        for s in series {
            let key = self.entity_key(s);
            if !self.cfg.shard.keeps(s, &key) {
                stats.filtered += 1;
                continue;
            }
            let labels: Vec<(String, String)> = self
                .cfg
                .entity_labels
                .iter()
                .map(|l| (l.clone(), s.label(l).unwrap_or("").to_string()))
                .collect();
            let entity = self
                .entities
                .entry(key.clone())
                .or_insert_with(|| Entity::new(labels, n_metrics, cap, now_ms));
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

    /// Ends a successful fetch: aligns every entity seen to `end_ms`, updates their
    /// normalisers, and expires entities absent for longer than `expire_after`.
    pub fn finish_cycle(&mut self, end_ms: i64, now_ms: i64) -> CycleOutcome {
        let (step, fill) = (self.cfg.step_ms, self.cfg.fill);
        let mut fresh = Vec::with_capacity(self.seen.len());
        for key in self.seen.drain() {
            let Some(e) = self.entities.get_mut(&key) else {
                continue;
            };
            e.advance_to(end_ms, step, fill);
            let new_points = std::mem::take(&mut e.new_points);
            for (row, norm) in e.rows.iter().zip(e.normalizers.iter_mut()) {
                if let Some(row) = row {
                    norm.update(row.as_slice(), new_points, &mut self.scratch);
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
        CycleOutcome { fresh, expired }
    }

    /// Forgets what a failed cycle half-ingested about who was seen.
    pub fn abandon_cycle(&mut self) {
        self.seen.clear();
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
            for ((row, norm), name) in e
                .rows
                .iter()
                .zip(&e.normalizers)
                .zip(&self.cfg.metric_names)
            {
                if let Some(row) = row {
                    batch.rows.push(row.as_slice());
                    batch.names.push(name.as_str());
                    batch.stats.push(norm.stats());
                }
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
    rows: Vec<&'a [f64]>,
    stats: Vec<RobustStats>,
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
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
