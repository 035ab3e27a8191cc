//! The per-series pattern store: what Algorithm 1 learns and Algorithm 3 maintains.
//!
//! A [`Pattern`] keeps only what the paper keeps of a cluster (§3.3.2): its mean vector
//! μ, its size S and its radius R (largest member distance to μ), plus what people need
//! to use it: a stable id, its kind (normal or abnormal), where it came from, the issue
//! labels people attached, and when it was first and last matched.
//!
//! # Stable ids
//!
//! Ids are assigned from a per-series counter and never reused, even after eviction, so
//! a label or an alert that names `pattern="7"` keeps meaning the same pattern.
//!
//! # Bounded memory
//!
//! A series holds at most [`PatternSet::capacity`] patterns (default
//! [`DEFAULT_CAPACITY`]; each costs `m` floats plus a few fields). Only Algorithm 3 adds
//! patterns after the offline phase, one per unseen subsequence. When a new pattern is
//! needed and the store is full, the policy is:
//!
//! 1. evict the pattern created online that carries no issue label, has the oldest last
//!    match (never matched counts as oldest), and among those the smallest size;
//! 2. offline patterns and labelled patterns are never evicted; if every pattern is one
//!    of those, no pattern is created: the subsequence is still judged (it is anomalous
//!    when Algorithm 2 says so) and [`PatternSet::dropped`] counts it.
//!
//! # State
//!
//! A `PatternSet` serialises to JSON with a `version` field ([`STATE_VERSION`]);
//! [`PatternSet::from_json`] refuses other versions with a clear error.

use serde::{Deserialize, Serialize};

use super::offline::Scaler;
use super::online::MeanIndex;
use super::AdsketchError;

/// Version of the serialised [`PatternSet`].
pub(crate) const STATE_VERSION: u32 = 1;

/// Default bound on the number of patterns per series.
pub(crate) const DEFAULT_CAPACITY: usize = crate::config::detectors::DEFAULT_MAX_PATTERNS;

/// Longest issue label, in bytes.
pub(crate) const MAX_LABEL_LEN: usize = 64;

/// Most issue labels on one pattern.
pub(crate) const MAX_LABELS: usize = 16;

/// Whether a pattern represents normal or abnormal behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Normal behaviour: subsequences nearest to it are not anomalous.
    Normal,
    /// Abnormal behaviour: subsequences nearest to it are anomalous (Algorithm 2).
    Abnormal,
}

impl Kind {
    /// `"normal"` or `"abnormal"` (the `kind` label value).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Normal => "normal",
            Kind::Abnormal => "abnormal",
        }
    }
}

/// Which phase created a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Algorithm 1.
    Offline,
    /// Algorithm 3 (an unseen subsequence).
    Online,
}

/// One metric pattern: a cluster of similar subsequences, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    /// Stable id within the series.
    pub id: u64,
    /// Normal or abnormal.
    pub kind: Kind,
    /// Offline or online.
    pub origin: Origin,
    /// Mean vector μ (length `m`, in the scaled units of the series).
    pub mean: Vec<f64>,
    /// Number of member subsequences S.
    pub size: u64,
    /// Radius R: largest member distance to μ (an upper bound after online updates).
    pub radius: f64,
    /// Issue labels people attached (validated by [`validate_labels`]).
    #[serde(default)]
    pub labels: Vec<String>,
    /// First time a subsequence matched it online (ms since the epoch).
    #[serde(default)]
    pub first_match_ms: Option<i64>,
    /// Last time a subsequence matched it online (ms since the epoch).
    #[serde(default)]
    pub last_match_ms: Option<i64>,
    /// Issue group (paper §3.2.2): abnormal patterns whose member subsequences overlap
    /// in time describe one issue and share their labels. The smallest id of the group;
    /// `None` when the pattern stands alone.
    #[serde(default)]
    pub group: Option<u64>,
}

/// All patterns of one series and the state Algorithm 3 needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSet {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Subsequence length m.
    pub m: usize,
    /// Min-max scaler fitted on `T_n`; new values go through it before matching.
    pub scaler: Scaler,
    /// The patterns, in creation order (the order ties resolve in). Private so that
    /// every change goes through a method that keeps [`MeanIndex`] in step.
    pub(super) patterns: Vec<Pattern>,
    /// Next id to hand out.
    pub next_id: u64,
    /// `d_n`: largest radius of a normal pattern (Algorithm 3, line 7).
    pub max_radius_normal: f64,
    /// `d_a`: largest radius of an abnormal pattern.
    pub max_radius_abnormal: f64,
    /// An online-created abnormal pattern larger than this becomes normal (the largest
    /// offline abnormal cluster size, or the smallest cluster size when there was none).
    pub promote_size: u64,
    /// Bound on `patterns.len()`.
    pub capacity: usize,
    /// Subsequences that needed a new pattern when none could be made (store full).
    #[serde(default)]
    pub dropped: u64,
    /// Contiguous copy of the means and kinds for the online scan (not serialised).
    #[serde(skip)]
    pub(super) index: MeanIndex,
}

impl PatternSet {
    /// Builds the set from offline clusters `(mean, size, radius, abnormal)`, computing
    /// `d_n`, `d_a` and the promotion size as the reference does.
    pub fn from_clusters(
        m: usize,
        scaler: Scaler,
        clusters: Vec<(Vec<f64>, u64, f64, bool)>,
    ) -> PatternSet {
        let mut patterns = Vec::with_capacity(clusters.len());
        for (k, (mean, size, radius, abnormal)) in clusters.into_iter().enumerate() {
            patterns.push(Pattern {
                id: k as u64,
                kind: if abnormal {
                    Kind::Abnormal
                } else {
                    Kind::Normal
                },
                origin: Origin::Offline,
                mean,
                size,
                radius,
                labels: Vec::new(),
                first_match_ms: None,
                last_match_ms: None,
                group: None,
            });
        }
        let max_of = |kind: Option<Kind>| {
            patterns
                .iter()
                .filter(|p| kind.is_none_or(|k| p.kind == k))
                .map(|p| p.radius)
                .fold(0.0f64, f64::max)
        };
        let any_abnormal = patterns.iter().any(|p| p.kind == Kind::Abnormal);
        let (d_n, d_a, promote) = if any_abnormal {
            let promote = patterns
                .iter()
                .filter(|p| p.kind == Kind::Abnormal)
                .map(|p| p.size)
                .max()
                .unwrap_or(1);
            (
                max_of(Some(Kind::Normal)),
                max_of(Some(Kind::Abnormal)),
                promote,
            )
        } else {
            // Reference: both maxima are the overall max radius, and the promotion size
            // is the smallest cluster size.
            let all = max_of(None);
            let promote = patterns.iter().map(|p| p.size).min().unwrap_or(1);
            (all, all, promote)
        };
        PatternSet {
            version: STATE_VERSION,
            m,
            scaler,
            next_id: patterns.len() as u64,
            patterns,
            max_radius_normal: d_n,
            max_radius_abnormal: d_a,
            promote_size: promote,
            capacity: DEFAULT_CAPACITY.max(1),
            dropped: 0,
            index: MeanIndex::default(),
        }
        .reindexed()
    }

    /// The patterns, in creation order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// `true` when the scan index mirrors `patterns`.
    pub(super) fn index_fresh(&self) -> bool {
        self.index.covers(self.patterns.len(), self.m)
    }

    /// Rebuilds the scan index from `patterns`.
    pub(super) fn reindex(&mut self) {
        self.index = MeanIndex::build(&self.patterns, self.m);
    }

    fn reindexed(mut self) -> Self {
        self.reindex();
        self
    }

    /// Number of patterns of each kind: `(normal, abnormal)`.
    pub fn counts(&self) -> (usize, usize) {
        count_by_kind(&self.patterns)
    }

    /// The pattern with id `id`.
    pub fn get(&self, id: u64) -> Option<&Pattern> {
        self.patterns.iter().find(|p| p.id == id)
    }

    /// Replaces the issue labels of pattern `id` after validating them; the other
    /// patterns of its issue group (see [`Pattern::group`]) get the same labels.
    pub fn set_labels(&mut self, id: u64, labels: Vec<String>) -> Result<(), AdsketchError> {
        self.edit_labels(id, LabelOp::Set(labels))
            .map(|_| ())
            .map_err(|e| AdsketchError::Param {
                name: if e.is_not_found() {
                    "pattern"
                } else {
                    "labels"
                },
                reason: e.to_string(),
            })
    }

    /// Applies `op` to the issue labels of pattern `id` and returns the pattern. The
    /// result is validated before anything changes, so on error the set is untouched.
    /// The other patterns of its issue group (see [`Pattern::group`]) get the same labels.
    pub fn edit_labels(&mut self, id: u64, op: LabelOp) -> Result<&Pattern, LabelError> {
        let p = self
            .patterns
            .iter()
            .find(|p| p.id == id)
            .ok_or(LabelError::UnknownPattern(id))?;
        let labels = op.apply(&p.labels, id)?;
        validate_labels(&labels).map_err(LabelError::from_validation)?;
        let group = p.group;
        for q in &mut self.patterns {
            if q.id == id || (group.is_some() && q.group == group) {
                q.labels.clone_from(&labels);
            }
        }
        self.get(id).ok_or(LabelError::UnknownPattern(id))
    }

    /// Adds a new pattern (Algorithm 3, lines 18–21), applying the memory policy.
    /// Returns the new id, or `None` when the store is full of protected patterns.
    pub(super) fn push(&mut self, mut pattern: Pattern) -> Option<u64> {
        if self.patterns.len() >= self.capacity.max(1) {
            let victim = self
                .patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| p.origin == Origin::Online && p.labels.is_empty())
                .min_by_key(|(_, p)| (p.last_match_ms.unwrap_or(i64::MIN), p.size))
                .map(|(k, _)| k);
            match victim {
                Some(k) => {
                    self.patterns.remove(k);
                }
                None => {
                    self.dropped += 1;
                    return None;
                }
            }
        }
        pattern.id = self.next_id;
        self.next_id += 1;
        let id = pattern.id;
        let k = self.patterns.len();
        self.patterns.push(pattern);
        if self.index.covers(k, self.m) {
            self.index.set(k, &self.patterns[k]);
        } else {
            // After an eviction the rows shift: rebuild (only when the store is full).
            self.reindex();
        }
        Some(id)
    }

    /// Serialises the set (with its version).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Restores a set written by [`PatternSet::to_json`], checking version and shape.
    pub fn from_json(value: serde_json::Value) -> Result<PatternSet, AdsketchError> {
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(STATE_VERSION)) {
            return Err(AdsketchError::State(format!(
                "unsupported pattern state version {version:?} (this build reads {STATE_VERSION})"
            )));
        }
        let set: PatternSet =
            serde_json::from_value(value).map_err(|e| AdsketchError::State(e.to_string()))?;
        if set.patterns.iter().any(|p| p.mean.len() != set.m) {
            return Err(AdsketchError::State(format!(
                "a pattern's mean does not have length m = {}",
                set.m
            )));
        }
        Ok(set.reindexed())
    }
}

/// A change to a pattern's issue labels (the catalog API's PUT and DELETE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOp {
    /// Replace every label.
    Set(Vec<String>),
    /// Add one label (no change when it is already there).
    Add(String),
    /// Remove one label; an error when the pattern does not carry it.
    Remove(String),
    /// Remove every label.
    Clear,
}

impl LabelOp {
    /// The labels after the change (not yet validated).
    fn apply(&self, current: &[String], id: u64) -> Result<Vec<String>, LabelError> {
        Ok(match self {
            LabelOp::Set(labels) => labels.clone(),
            LabelOp::Add(l) if current.contains(l) => current.to_vec(),
            LabelOp::Add(l) => current.iter().chain([l]).cloned().collect(),
            LabelOp::Remove(l) if !current.contains(l) => {
                return Err(LabelError::UnknownLabel {
                    id,
                    label: l.clone(),
                })
            }
            LabelOp::Remove(l) => current.iter().filter(|c| *c != l).cloned().collect(),
            LabelOp::Clear => Vec::new(),
        })
    }
}

/// Why a label edit was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No learnt series with that entity and metric.
    #[error("no learnt series {metric:?} for entity {entity}")]
    UnknownSeries {
        /// Entity key.
        entity: String,
        /// Metric name.
        metric: String,
    },
    /// The series has no pattern with that id (never had, or it was evicted).
    #[error("no pattern with id {0}")]
    UnknownPattern(u64),
    /// `Remove` of a label the pattern does not carry.
    #[error("pattern {id} has no label {label:?}")]
    UnknownLabel {
        /// Pattern id.
        id: u64,
        /// The label.
        label: String,
    },
    /// The labels after the change break a rule of [`validate_labels`].
    #[error("{0}")]
    Invalid(String),
}

impl LabelError {
    /// Wraps what [`validate_labels`] said.
    pub fn from_validation(e: AdsketchError) -> LabelError {
        match e {
            AdsketchError::Param { reason, .. } => LabelError::Invalid(reason),
            other => LabelError::Invalid(other.to_string()),
        }
    }

    /// `true` when the error names something that does not exist (HTTP 404), `false`
    /// when the request itself is wrong (HTTP 400).
    pub fn is_not_found(&self) -> bool {
        !matches!(self, LabelError::Invalid(_))
    }
}

/// Checks issue labels: at most [`MAX_LABELS`], each 1..=[`MAX_LABEL_LEN`] bytes of
/// `[A-Za-z0-9_.:/-]`, no duplicates.
pub(crate) fn validate_labels(labels: &[String]) -> Result<(), AdsketchError> {
    let bad = |reason: String| AdsketchError::Param {
        name: "labels",
        reason,
    };
    if labels.len() > MAX_LABELS {
        return Err(bad(format!(
            "{} labels, at most {MAX_LABELS} allowed",
            labels.len()
        )));
    }
    for (k, l) in labels.iter().enumerate() {
        if l.is_empty() || l.len() > MAX_LABEL_LEN {
            return Err(bad(format!(
                "label {k} has {} bytes, expected 1 to {MAX_LABEL_LEN}",
                l.len()
            )));
        }
        if let Some(c) = l
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_.:/-".contains(*c)))
        {
            return Err(bad(format!(
                "label {k} contains {c:?}; allowed: letters, digits, _ . : / -"
            )));
        }
        if labels[..k].contains(l) {
            return Err(bad(format!("label {l:?} is repeated")));
        }
    }
    Ok(())
}

/// Number of patterns of each kind in `patterns`: `(normal, abnormal)`.
pub(crate) fn count_by_kind(patterns: &[Pattern]) -> (usize, usize) {
    let abnormal = patterns.iter().filter(|p| p.kind == Kind::Abnormal).count();
    (patterns.len() - abnormal, abnormal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> PatternSet {
        PatternSet::from_clusters(
            2,
            Scaler::fit(&[0.0, 1.0]),
            vec![
                (vec![0.0, 0.0], 10, 0.5, false),
                (vec![1.0, 1.0], 3, 0.2, true),
                (vec![2.0, 2.0], 5, 0.7, false),
            ],
        )
    }

    #[test]
    fn offline_maxima_follow_the_reference() {
        let s = set();
        assert_eq!(s.max_radius_normal, 0.7);
        assert_eq!(s.max_radius_abnormal, 0.2);
        assert_eq!(s.promote_size, 3);
        assert_eq!(s.counts(), (2, 1));
        // No abnormal cluster: both maxima are the overall max, promotion = min size.
        let n = PatternSet::from_clusters(
            1,
            Scaler::fit(&[0.0, 1.0]),
            vec![(vec![0.0], 4, 0.1, false), (vec![1.0], 2, 0.3, false)],
        );
        assert_eq!((n.max_radius_normal, n.max_radius_abnormal), (0.3, 0.3));
        assert_eq!(n.promote_size, 2);
    }

    #[test]
    fn state_round_trips_and_rejects_other_versions() {
        let mut s = set();
        s.set_labels(1, vec!["cache-flush".into(), "gc:pause".into()])
            .unwrap();
        let back = PatternSet::from_json(s.to_json()).unwrap();
        assert_eq!(back, s);
        let mut v = s.to_json();
        v["version"] = serde_json::json!(99);
        assert!(matches!(
            PatternSet::from_json(v),
            Err(AdsketchError::State(_))
        ));
        let mut v = s.to_json();
        v["patterns"][0]["mean"] = serde_json::json!([1.0]);
        assert!(PatternSet::from_json(v).is_err());
    }

    #[test]
    fn bad_labels_are_rejected_and_change_nothing() {
        let mut s = set();
        for bad in [
            vec!["".to_string()],
            vec!["a b".to_string()],
            vec!["x".repeat(MAX_LABEL_LEN + 1)],
            vec!["dup".to_string(), "dup".to_string()],
            (0..=MAX_LABELS).map(|k| format!("l{k}")).collect(),
        ] {
            assert!(s.set_labels(0, bad).is_err());
        }
        assert!(s.set_labels(42, vec!["ok".into()]).is_err());
        assert_eq!(s, set());
    }

    #[test]
    fn full_store_evicts_oldest_unlabelled_online_pattern() {
        let mut s = set();
        s.capacity = 4;
        let online = |t: i64| Pattern {
            id: 0,
            kind: Kind::Abnormal,
            origin: Origin::Online,
            mean: vec![9.0, 9.0],
            size: 1,
            radius: 0.0,
            labels: vec![],
            first_match_ms: Some(t),
            last_match_ms: Some(t),
            group: None,
        };
        let a = s.push(online(100)).unwrap();
        assert_eq!(a, 3);
        // Full: the only online pattern (id 3) goes.
        let b = s.push(online(200)).unwrap();
        assert_eq!(b, 4);
        assert!(s.get(3).is_none());
        // Label the online one: nothing is evictable any more.
        s.set_labels(4, vec!["known".into()]).unwrap();
        assert_eq!(s.push(online(300)), None);
        assert_eq!(s.dropped, 1);
        assert_eq!(s.patterns.len(), 4);
        assert!(s.get(0).is_some() && s.get(1).is_some() && s.get(2).is_some());
    }
}
