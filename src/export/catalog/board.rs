//! [`PatternCatalog`]: the shared, read-mostly copy of every ADSketch pattern set that
//! the catalog endpoints read.
//!
//! Detectors live in group runners that move to a blocking thread for each cycle, so
//! the admin server cannot read them directly. Instead the cycle publishes copies here:
//! the pattern counts every cycle (cheap), the patterns themselves at most every
//! [`REFRESH`] per group (a copy of every mean vector is the costly part) and at once
//! for a series whose labels were just edited. The detector stays the owner of the
//! patterns and their labels; this is a view.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::detect::adsketch::pattern::count_by_kind;
use crate::detect::adsketch::{Pattern, PatternSet, Scaler};

/// Longest time the catalog's copy of a group's patterns may lag the detector (sizes,
/// means and last matches move with every step when learning is adaptive).
pub const REFRESH: Duration = Duration::from_secs(10);

/// One series' patterns, as published.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPatterns {
    /// Stable series id ([`series_id`]), used in the API's paths.
    pub id: String,
    /// Entity group.
    pub group: String,
    /// Entity key (`label="value",...`).
    pub entity: String,
    /// Metric name.
    pub metric: String,
    /// Subsequence length m.
    pub m: usize,
    /// The min-max scaler fitted on `T_n` (means and radii are in its units).
    pub scaler: Scaler,
    /// Subsequences that found the store full (see the memory policy).
    pub dropped: u64,
    /// The patterns, in creation order.
    pub patterns: Vec<Pattern>,
}

impl SeriesPatterns {
    /// A copy of `set`, the pattern set of `metric` of `entity` in `group`.
    pub fn new(group: &str, entity: &str, metric: &str, set: &PatternSet) -> Self {
        SeriesPatterns {
            id: series_id(group, entity, metric),
            group: group.to_string(),
            entity: entity.to_string(),
            metric: metric.to_string(),
            m: set.m,
            scaler: set.scaler,
            dropped: set.dropped,
            patterns: set.patterns().to_vec(),
        }
    }

    /// Number of patterns of each kind: `(normal, abnormal)`.
    pub fn counts(&self) -> (usize, usize) {
        count_by_kind(&self.patterns)
    }
}

/// A short stable id of a series: FNV-1a (64 bit) of `group`, `entity` and `metric`,
/// in hex. Stable across restarts, so a bookmarked API path keeps working.
pub fn series_id(group: &str, entity: &str, metric: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [group, entity, metric] {
        // A separator byte that cannot occur in the parts keeps ("ab","c") apart from
        // ("a","bc").
        for b in part.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Which series a listing wants: exact group and metric, entity by substring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact group name.
    pub group: Option<String>,
    /// Part of the entity key (e.g. an instance address).
    pub entity: Option<String>,
    /// Exact metric name.
    pub metric: Option<String>,
}

impl Filter {
    fn keeps(&self, s: &SeriesPatterns) -> bool {
        self.group.as_ref().is_none_or(|g| *g == s.group)
            && self.metric.as_ref().is_none_or(|m| *m == s.metric)
            && self
                .entity
                .as_ref()
                .is_none_or(|e| s.entity.contains(e.as_str()))
    }
}

#[derive(Debug, Default)]
struct GroupEntry {
    /// When the patterns were last copied in full.
    refreshed: Option<Instant>,
    /// `(normal, abnormal)` over the group's series, updated every cycle.
    counts: (usize, usize),
    /// (entity, metric) → patterns: listings come out sorted as people read them.
    series: BTreeMap<(String, String), Arc<SeriesPatterns>>,
}

/// The catalog's shared state: written by the cycles, read by the admin server.
#[derive(Debug, Default)]
pub struct PatternCatalog {
    groups: RwLock<BTreeMap<String, GroupEntry>>,
}

impl PatternCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, GroupEntry>> {
        self.groups.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, GroupEntry>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the pattern counts of a group (`kpiwatch_adsketch_patterns`).
    pub fn publish_counts(&self, group: &str, normal: usize, abnormal: usize) {
        self.write().entry(group.to_string()).or_default().counts = (normal, abnormal);
    }

    /// `true` when the group's patterns were never copied, or not for [`REFRESH`].
    pub fn refresh_due(&self, group: &str, now: Instant) -> bool {
        self.read()
            .get(group)
            .and_then(|g| g.refreshed)
            .is_none_or(|t| now.saturating_duration_since(t) >= REFRESH)
    }

    /// Replaces every series of a group (series that are gone disappear).
    pub fn publish_group(
        &self,
        group: &str,
        series: impl IntoIterator<Item = SeriesPatterns>,
        now: Instant,
    ) {
        let series = series
            .into_iter()
            .map(|s| ((s.entity.clone(), s.metric.clone()), Arc::new(s)))
            .collect();
        let mut groups = self.write();
        let g = groups.entry(group.to_string()).or_default();
        g.series = series;
        g.refreshed = Some(now);
    }

    /// Replaces one series (after a label edit).
    pub fn publish_series(&self, s: SeriesPatterns) {
        let mut groups = self.write();
        let g = groups.entry(s.group.clone()).or_default();
        g.series
            .insert((s.entity.clone(), s.metric.clone()), Arc::new(s));
    }

    /// Drops the groups not in `keep` (after a reload).
    pub fn retain_groups(&self, keep: &[String]) {
        self.write().retain(|g, _| keep.contains(g));
    }

    /// The series with id `id` (a scan: lookups by id are rare, listings are not).
    pub fn series(&self, id: &str) -> Option<Arc<SeriesPatterns>> {
        self.read()
            .values()
            .flat_map(|g| g.series.values())
            .find(|s| s.id == id)
            .cloned()
    }

    /// The series `filter` keeps, by group, entity and metric; and how many there are
    /// in all (more than returned when `limit` cut the list).
    pub fn list(&self, filter: &Filter, limit: usize) -> (Vec<Arc<SeriesPatterns>>, usize) {
        let groups = self.read();
        let mut out = Vec::new();
        let mut total = 0;
        for s in groups.values().flat_map(|g| g.series.values()) {
            if filter.keeps(s) {
                total += 1;
                if out.len() < limit {
                    out.push(s.clone());
                }
            }
        }
        (out, total)
    }

    /// Appends `kpiwatch_adsketch_patterns{group,kind}` in the Prometheus text format
    /// (nothing when no group runs ADSketch).
    pub fn render_counts(&self, out: &mut String) {
        let groups = self.read();
        if groups.is_empty() {
            return;
        }
        out.push_str(
            "# HELP kpiwatch_adsketch_patterns ADSketch patterns learnt over the series of a group, by kind.\n\
             # TYPE kpiwatch_adsketch_patterns gauge\n",
        );
        for (name, g) in groups.iter() {
            let mut label = String::new();
            crate::export::scores::push_label(&mut label, "group", name);
            for (kind, n) in [("normal", g.counts.0), ("abnormal", g.counts.1)] {
                let _ = writeln!(
                    out,
                    "kpiwatch_adsketch_patterns{{{label},kind=\"{kind}\"}} {n}"
                );
            }
        }
    }
}
