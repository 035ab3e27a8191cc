//! Score series with label sets copied from entities.
//!
//! The `prometheus` crate fixes label names per family, but entity labels differ per
//! group (`instance` here, `namespace, pod` there), so score families are kept here and
//! rendered in the text format directly, after the registry's self-metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, RwLock};

use crate::detect::graph::NodeVerdict;
use crate::detect::{EntityView, Scores};

/// Where a cycle's scores go: the agent's [`ScoreBoard`] (served on `/metrics`), or a
/// backtest's recorder (`kpiwatch backtest`), so both run the same cycle code.
pub trait ScoreSink {
    /// One detector's scores of one entity at the view's last step.
    fn publish(
        &mut self,
        group: &str,
        view: &EntityView<'_>,
        labels: &SeriesLabels,
        detector: &'static str,
        scores: &Scores,
    );
    /// An entity expired: its series go.
    fn remove_entity(&mut self, group: &str, key: &str);
    /// What the group's service graph says about one entity's node this cycle. A
    /// backtest does not replay the graph: its recorder keeps nothing.
    fn publish_graph(
        &mut self,
        _group: &str,
        _key: &str,
        _labels: &SeriesLabels,
        _verdict: &NodeVerdict,
    ) {
    }
}

impl ScoreSink for &ScoreBoard {
    fn publish(
        &mut self,
        group: &str,
        view: &EntityView<'_>,
        labels: &SeriesLabels,
        detector: &'static str,
        scores: &Scores,
    ) {
        ScoreBoard::publish(
            self,
            group,
            view.key,
            labels,
            detector,
            view.metric_names,
            scores,
        );
    }

    fn remove_entity(&mut self, group: &str, key: &str) {
        ScoreBoard::remove_entity(self, group, key);
    }

    fn publish_graph(
        &mut self,
        group: &str,
        key: &str,
        labels: &SeriesLabels,
        verdict: &NodeVerdict,
    ) {
        ScoreBoard::publish_graph(self, group, key, labels, verdict);
    }
}

/// A score family: name, help, and its position in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    AnomalyScore,
    Anomaly,
    ZscoreValue,
    ExpectedValue,
    ExpectedLower,
    ExpectedUpper,
    UniadReconstructionError,
    UniadMetricContribution,
    AdsketchDistance,
    AdsketchMatch,
    RootcauseRank,
    RootcauseScore,
    Symptom,
}

impl Family {
    const ALL: [Family; 13] = [
        Family::AnomalyScore,
        Family::Anomaly,
        Family::ZscoreValue,
        Family::ExpectedValue,
        Family::ExpectedLower,
        Family::ExpectedUpper,
        Family::UniadReconstructionError,
        Family::UniadMetricContribution,
        Family::AdsketchDistance,
        Family::AdsketchMatch,
        Family::RootcauseRank,
        Family::RootcauseScore,
        Family::Symptom,
    ];

    fn name(self) -> &'static str {
        match self {
            Family::AnomalyScore => "kpiwatch_anomaly_score",
            Family::Anomaly => "kpiwatch_anomaly",
            Family::ZscoreValue => "kpiwatch_zscore_value",
            Family::ExpectedValue => "kpiwatch_expected_value",
            Family::ExpectedLower => "kpiwatch_expected_lower",
            Family::ExpectedUpper => "kpiwatch_expected_upper",
            Family::UniadReconstructionError => "kpiwatch_uniad_reconstruction_error",
            Family::UniadMetricContribution => "kpiwatch_uniad_metric_contribution",
            Family::AdsketchDistance => "kpiwatch_adsketch_distance",
            Family::AdsketchMatch => "kpiwatch_adsketch_match",
            Family::RootcauseRank => "kpiwatch_rootcause_rank",
            Family::RootcauseScore => "kpiwatch_rootcause_score",
            Family::Symptom => "kpiwatch_symptom",
        }
    }

    /// Whether the family's lines carry the `detector` label: the per-metric families
    /// and Uni-AD's error are each one detector's own.
    fn has_detector_label(self) -> bool {
        matches!(self, Family::AnomalyScore | Family::Anomaly)
    }

    fn help(self) -> &'static str {
        match self {
            Family::AnomalyScore => "Anomaly score of an entity by detector; 1.0 is the detector's threshold, above is anomalous.",
            Family::Anomaly => "1 when the entity's anomaly score is above 1.0, else 0.",
            Family::ZscoreValue => "Absolute robust z-score of the last point of each metric.",
            Family::ExpectedValue => "Expected value of each metric at the last point, in its own units: the seasonal baseline's when seasonality is on, else the median of the history.",
            Family::ExpectedLower => "Lower edge of the band inside which the z-score detector's score of the metric stays at or below 1, in the metric's units.",
            Family::ExpectedUpper => "Upper edge of the band inside which the z-score detector's score of the metric stays at or below 1, in the metric's units.",
            Family::UniadReconstructionError => "Uni-AD reconstruction error at the last step: the mean over metrics of their squared errors, each divided by its median over the history when scale_errors is on.",
            Family::UniadMetricContribution => "Uni-AD share of each metric in the reconstruction error at the last step: its squared error (scaled when scale_errors is on) divided by the number of metrics; the shares sum to the error.",
            Family::AdsketchDistance => "ADSketch distance of the latest subsequence to its nearest pattern.",
            Family::AdsketchMatch => "ADSketch nearest pattern of the latest subsequence (value 1), with its kind and issue labels.",
            Family::RootcauseRank => "Service graph: rank of the entity's service among the anomalous services as the incident's probable origin (1 = most probable); present only while the service is anomalous.",
            Family::RootcauseScore => "Service graph: the ranking's share of the evidence that the entity's service is the incident's origin (sums to 1 over the anomalous services; 0 when not anomalous).",
            Family::Symptom => "Service graph: 1 while the entity's service is anomalous only as a symptom of the anomalous dependency in the cause label (which is anomalous too, started no later and ranks above it); absent otherwise.",
        }
    }
}

/// Label pairs of an entity plus its group, rendered once and shared by every line.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesLabels(Arc<str>);

/// Labels kpiwatch adds itself; an entity label of the same name is renamed
/// `exported_<name>`, as Prometheus does with `honor_labels: false`.
const RESERVED: [&str; 7] = [
    "group", "detector", "metric", "pattern", "kind", "issue", "cause",
];

impl SeriesLabels {
    /// Renders `group="...",<entity labels>`.
    pub fn new(group: &str, entity: &[(String, String)]) -> Self {
        let mut s = String::new();
        push_label(&mut s, "group", group);
        for (k, v) in entity {
            if RESERVED.contains(&k.as_str()) {
                push_label(&mut s, &format!("exported_{k}"), v);
            } else {
                push_label(&mut s, k, v);
            }
        }
        SeriesLabels(s.into())
    }
}

/// Appends `name="value"` (escaped), comma-separated from what is already there.
pub(super) fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// One gauge line of an entry: 24 bytes. The entity's labels live once in the [`Entry`],
/// metric names in a list shared by every entry of the group, and the few lines with
/// further labels (ADSketch's matches) keep them beside the lines; republishing an
/// entity each cycle reuses its lines' storage. At 10,000 entities with the z-score's
/// 34 lines each, the lines are most of the board's memory.
#[derive(Debug, Clone, Copy)]
struct Line {
    family: Family,
    /// Index of the `metric` label in the entry's metric names, for the per-metric
    /// families.
    metric: Option<u32>,
    value: f64,
}

/// What one detector last said about one entity, and how often it flagged.
#[derive(Debug, Clone)]
struct Entry {
    /// The gauge lines of the latest scores.
    lines: Vec<Line>,
    /// Further labels, rendered, of the [`Family::AdsketchMatch`] and [`Family::Symptom`]
    /// lines, in line order.
    extra_labels: Vec<Box<str>>,
    /// `group` and entity labels.
    labels: SeriesLabels,
    /// The group's metric names, shared with the group's other entries.
    metric_names: Arc<[Box<str>]>,
    detector: &'static str,
    /// Points scored since the entity appeared (or the agent started).
    scored: u64,
    /// Of those, points with a score above 1.
    flagged: u64,
}

impl Entry {
    /// Appends `name{labels} ` to `out`: the entity's labels, the `detector` label when
    /// `with_detector`, `line`'s metric label and `extra` labels.
    fn push_series(
        &self,
        out: &mut String,
        name: &str,
        with_detector: bool,
        line: Option<&Line>,
        extra: Option<&str>,
    ) {
        out.push_str(name);
        out.push('{');
        out.push_str(&self.labels.0);
        if with_detector {
            push_label(out, "detector", self.detector);
        }
        if let Some(metric) = line
            .and_then(|l| l.metric)
            .and_then(|i| self.metric_names.get(i as usize))
        {
            push_label(out, "metric", metric);
        }
        if let Some(extra) = extra {
            out.push(',');
            out.push_str(extra);
        }
        out.push_str("} ");
    }
}

/// `group → entity key → detector → entry`, and the metric name lists the entries share.
#[derive(Debug, Default)]
struct Board {
    groups: BTreeMap<String, BTreeMap<String, BTreeMap<&'static str, Entry>>>,
    name_lists: Vec<Arc<[Box<str>]>>,
}

impl Board {
    /// The shared list equal to `names`, added when new.
    fn name_list(&mut self, names: &[&str]) -> Arc<[Box<str>]> {
        let same = |list: &&Arc<[Box<str>]>| {
            list.len() == names.len() && list.iter().zip(names).all(|(a, b)| &**a == *b)
        };
        if let Some(list) = self.name_lists.iter().find(same) {
            return list.clone();
        }
        let list: Arc<[Box<str>]> = names.iter().map(|&n| Box::from(n)).collect();
        self.name_lists.push(list.clone());
        list
    }
}

/// The `detector` label of the service graph's series.
pub const GRAPH_DETECTOR: &str = "graph";

/// A per-entity counter family: name, help and the count it renders.
type Counter = (&'static str, &'static str, fn(&Entry) -> u64);

/// The per-entity flag counters: the flag rate is their ratio.
const COUNTERS: [Counter; 2] = [
    (
        "kpiwatch_scores_total",
        "Points scored per entity and detector since the entity appeared or the agent started.",
        |e| e.scored,
    ),
    (
        "kpiwatch_flags_total",
        "Points scored above 1 (anomalous) per entity and detector; divided by kpiwatch_scores_total it is the entity's flag rate.",
        |e| e.flagged,
    ),
];

/// The current score series of every entity, shared by the cycles (writers) and the
/// `/metrics` handler (reader).
#[derive(Debug, Default)]
pub struct ScoreBoard {
    board: RwLock<Board>,
}

impl ScoreBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the series of `detector` for one entity and counts the point.
    pub fn publish(
        &self,
        group: &str,
        key: &str,
        labels: &SeriesLabels,
        detector: &'static str,
        metric_names: &[&str],
        scores: &Scores,
    ) {
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        let names = board.name_list(metric_names);
        let entities = match board.groups.get_mut(group) {
            Some(g) => g,
            None => board.groups.entry(group.to_string()).or_default(),
        };
        let detectors = match entities.get_mut(key) {
            Some(d) => d,
            None => entities.entry(key.to_string()).or_default(),
        };
        let entry = detectors.entry(detector).or_insert_with(|| Entry {
            lines: Vec::new(),
            extra_labels: Vec::new(),
            labels: labels.clone(),
            metric_names: names.clone(),
            detector,
            scored: 0,
            flagged: 0,
        });
        if entry.labels != *labels {
            entry.labels = labels.clone();
        }
        if !Arc::ptr_eq(&entry.metric_names, &names) {
            entry.metric_names = names;
        }
        let first = entry.lines.is_empty();
        entry.lines.clear();
        entry.extra_labels.clear();
        push_lines(entry, scores);
        if first {
            // The count of lines rarely changes between cycles: keep no growth slack.
            entry.lines.shrink_to_fit();
        }
        entry.scored += 1;
        entry.flagged += u64::from(scores.is_anomalous());
    }

    /// Replaces the service graph's series of one entity and counts the point.
    pub fn publish_graph(
        &self,
        group: &str,
        key: &str,
        labels: &SeriesLabels,
        verdict: &NodeVerdict,
    ) {
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        let names = board.name_list(&[]);
        let entry = board
            .groups
            .entry(group.to_string())
            .or_default()
            .entry(key.to_string())
            .or_default()
            .entry(GRAPH_DETECTOR)
            .or_insert_with(|| Entry {
                lines: Vec::new(),
                extra_labels: Vec::new(),
                labels: labels.clone(),
                metric_names: names,
                detector: GRAPH_DETECTOR,
                scored: 0,
                flagged: 0,
            });
        if entry.labels != *labels {
            entry.labels = labels.clone();
        }
        entry.lines.clear();
        entry.extra_labels.clear();
        let line = |family, value| Line {
            family,
            metric: None,
            value,
        };
        let score = verdict.graph_score();
        entry.lines.push(line(Family::AnomalyScore, score));
        entry
            .lines
            .push(line(Family::Anomaly, f64::from(u8::from(score > 1.0))));
        if let Some(rank) = verdict.rank {
            entry
                .lines
                .push(line(Family::RootcauseRank, f64::from(rank)));
        }
        entry
            .lines
            .push(line(Family::RootcauseScore, verdict.rootcause_score));
        if let Some(cause) = &verdict.symptom_of {
            let mut extra = String::new();
            push_label(&mut extra, "cause", cause);
            entry.extra_labels.push(extra.into());
            entry.lines.push(line(Family::Symptom, 1.0));
        }
        entry.scored += 1;
        entry.flagged += u64::from(score > 1.0);
    }

    /// Removes every series of an entity (it expired).
    pub fn remove_entity(&self, group: &str, key: &str) {
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = board.groups.get_mut(group) {
            g.remove(key);
        }
    }

    /// Removes every series of groups not in `keep` (after a reload).
    pub fn retain_groups(&self, keep: &[String]) {
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        board.groups.retain(|g, _| keep.contains(g));
        board.name_lists.retain(|l| Arc::strong_count(l) > 1);
    }

    /// Removes a group's series of the detectors not in `keep` (a reload took a
    /// detector or the service graph out of the group: their last values must not stay
    /// exported).
    pub fn retain_detectors(&self, group: &str, keep: &[&str]) {
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = board.groups.get_mut(group) {
            for detectors in g.values_mut() {
                detectors.retain(|d, _| keep.contains(d));
            }
            g.retain(|_, detectors| !detectors.is_empty());
        }
    }

    /// Number of entities with at least one series.
    pub fn entity_count(&self) -> usize {
        let board = self.board.read().unwrap_or_else(|p| p.into_inner());
        board.groups.values().map(BTreeMap::len).sum()
    }

    /// Appends the score families in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        self.render_chunked(out, &mut |_| {});
    }

    /// [`ScoreBoard::render`], calling `drain` after every entity's lines so that a
    /// caller compressing the text as it goes can take what is written and clear it:
    /// then the whole exposition (40 MB at 10,000 entities) never sits in memory.
    pub fn render_chunked(&self, out: &mut String, drain: &mut dyn FnMut(&mut String)) {
        let board = self.board.read().unwrap_or_else(|p| p.into_inner());
        for family in Family::ALL {
            let mut header_written = false;
            for e in entries(&board) {
                let mut extras = e.extra_labels.iter();
                for line in e.lines.iter().filter(|l| l.family == family) {
                    if !header_written {
                        let _ = writeln!(out, "# HELP {} {}", family.name(), family.help());
                        let _ = writeln!(out, "# TYPE {} gauge", family.name());
                        header_written = true;
                    }
                    let extra = match family {
                        Family::AdsketchMatch | Family::Symptom => extras.next().map(|m| &**m),
                        _ => None,
                    };
                    e.push_series(
                        out,
                        family.name(),
                        family.has_detector_label(),
                        Some(line),
                        extra,
                    );
                    push_value(out, line.value);
                    out.push('\n');
                }
                drain(out);
            }
        }
        if entries(&board).next().is_none() {
            return;
        }
        for (name, help, count) in COUNTERS {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for e in entries(&board) {
                e.push_series(out, name, true, None, None);
                let _ = writeln!(out, "{}", count(e));
                drain(out);
            }
        }
    }
}

/// Every entry of the board, group by group.
fn entries(board: &Board) -> impl Iterator<Item = &Entry> {
    board
        .groups
        .values()
        .flat_map(|g| g.values())
        .flat_map(|d| d.values())
}

/// Appends the gauge lines of the entry's detector's scores `s` (metric `i` is the
/// entry's metric name `i`).
fn push_lines(entry: &mut Entry, s: &Scores) {
    let line = |family, metric: Option<usize>, value| Line {
        family,
        metric: metric.and_then(|i| u32::try_from(i).ok()),
        value,
    };
    let n = entry.metric_names.len();
    let lines = &mut entry.lines;
    lines.push(line(Family::AnomalyScore, None, s.anomaly_score));
    let flag = if s.is_anomalous() { 1.0 } else { 0.0 };
    lines.push(line(Family::Anomaly, None, flag));
    match entry.detector {
        "zscore" => {
            for (i, m) in s.metrics.iter().take(n).enumerate() {
                lines.push(line(Family::ZscoreValue, Some(i), m.contribution));
                if let Some(b) = m.band {
                    lines.push(line(Family::ExpectedValue, Some(i), b.expected));
                    lines.push(line(Family::ExpectedLower, Some(i), b.lower));
                    lines.push(line(Family::ExpectedUpper, Some(i), b.upper));
                }
            }
        }
        "uniad" => {
            lines.push(line(Family::UniadReconstructionError, None, s.raw));
            for (i, m) in s.metrics.iter().take(n).enumerate() {
                lines.push(line(
                    Family::UniadMetricContribution,
                    Some(i),
                    m.contribution,
                ));
            }
        }
        "adsketch" => {
            for (i, m) in s.metrics.iter().take(n).enumerate() {
                if let Some(d) = m.distance {
                    lines.push(line(Family::AdsketchDistance, Some(i), d));
                }
                if let Some(p) = &m.pattern {
                    let mut extra = String::new();
                    push_label(&mut extra, "pattern", &p.id.to_string());
                    let kind = if p.abnormal { "abnormal" } else { "normal" };
                    push_label(&mut extra, "kind", kind);
                    push_label(&mut extra, "issue", &p.issues);
                    entry.extra_labels.push(extra.into());
                    lines.push(line(Family::AdsketchMatch, Some(i), 1.0));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::MetricScore;
    use smallvec::smallvec;

    fn scores(score: f64) -> Scores {
        Scores {
            anomaly_score: score,
            raw: score * 4.0,
            threshold: 4.0,
            metrics: smallvec![
                MetricScore {
                    contribution: 1.0,
                    band: Some(crate::detect::Band {
                        expected: 50.0,
                        lower: 40.0,
                        upper: 60.5,
                    }),
                    ..Default::default()
                },
                MetricScore {
                    contribution: f64::NAN,
                    ..Default::default()
                }
            ],
        }
    }

    #[test]
    fn renders_escaped_labels_and_special_values() {
        let b = ScoreBoard::new();
        let labels = SeriesLabels::new(
            "node",
            &[
                ("instance".into(), "a\"b\\c".into()),
                ("metric".into(), "x".into()),
            ],
        );
        b.publish(
            "node",
            "k",
            &labels,
            "zscore",
            &["cpu", "mem"],
            &scores(1.5),
        );
        let mut out = String::new();
        b.render(&mut out);
        assert!(out.contains("# TYPE kpiwatch_anomaly_score gauge\n"));
        assert!(out.contains(r#"kpiwatch_anomaly_score{group="node",instance="a\"b\\c",exported_metric="x",detector="zscore"} 1.5"#), "{out}");
        assert!(out.contains(r#"kpiwatch_anomaly{group="node",instance="a\"b\\c",exported_metric="x",detector="zscore"} 1"#));
        assert!(out.contains(r#"kpiwatch_zscore_value{group="node",instance="a\"b\\c",exported_metric="x",metric="mem"} NaN"#));
        // The band of the metric that has one, with the same labels as its z-score.
        assert!(out.contains(r#"kpiwatch_expected_upper{group="node",instance="a\"b\\c",exported_metric="x",metric="cpu"} 60.5"#), "{out}");
        assert!(out.contains(r#"kpiwatch_expected_value{group="node",instance="a\"b\\c",exported_metric="x",metric="cpu"} 50"#));
        assert!(!out.contains(r#"kpiwatch_expected_lower{group="node",instance="a\"b\\c",exported_metric="x",metric="mem"}"#));
    }

    #[test]
    fn counts_scored_and_flagged_points_per_entity_and_detector() {
        let b = ScoreBoard::new();
        let labels = SeriesLabels::new("g", &[("instance".into(), "a".into())]);
        for score in [0.5, 1.5, 0.9, 3.0, 1.0] {
            b.publish("g", "a", &labels, "zscore", &["cpu", "mem"], &scores(score));
        }
        b.publish("g", "a", &labels, "uniad", &["cpu", "mem"], &scores(0.2));
        let mut out = String::new();
        b.render(&mut out);
        assert!(
            out.contains("# TYPE kpiwatch_flags_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains(r#"kpiwatch_scores_total{group="g",instance="a",detector="zscore"} 5"#)
        );
        // 1.0 is the threshold itself, not above it.
        assert!(out.contains(r#"kpiwatch_flags_total{group="g",instance="a",detector="zscore"} 2"#));
        assert!(out.contains(r#"kpiwatch_flags_total{group="g",instance="a",detector="uniad"} 0"#));
        b.remove_entity("g", "a");
        let mut out = String::new();
        b.render(&mut out);
        assert!(!out.contains("kpiwatch_flags_total"), "{out}");
    }

    #[test]
    fn the_whole_exposition_of_every_detector_is_stable() {
        let b = ScoreBoard::new();
        let la = SeriesLabels::new("g", &[("instance".into(), "a".into())]);
        let lb = SeriesLabels::new("g", &[("instance".into(), "b".into())]);
        let mut sketch = scores(2.0);
        sketch.metrics[0].distance = Some(0.25);
        sketch.metrics[0].pattern = Some(crate::detect::PatternMatch {
            id: 7,
            abnormal: true,
            issues: "disk full".into(),
        });
        b.publish("g", "b", &lb, "zscore", &["cpu", "mem"], &scores(0.5));
        b.publish("g", "a", &la, "uniad", &["cpu", "mem"], &scores(1.5));
        b.publish("g", "a", &la, "adsketch", &["cpu", "mem"], &sketch);
        b.publish("g", "a", &la, "zscore", &["cpu", "mem"], &scores(0.5));
        let mut out = String::new();
        b.render(&mut out);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            EXPECTED_EXPOSITION.lines().collect::<Vec<_>>(),
            "{out}"
        );
    }

    const EXPECTED_EXPOSITION: &str = r#"kpiwatch_anomaly_score{group="g",instance="a",detector="adsketch"} 2
kpiwatch_anomaly_score{group="g",instance="a",detector="uniad"} 1.5
kpiwatch_anomaly_score{group="g",instance="a",detector="zscore"} 0.5
kpiwatch_anomaly_score{group="g",instance="b",detector="zscore"} 0.5
kpiwatch_anomaly{group="g",instance="a",detector="adsketch"} 1
kpiwatch_anomaly{group="g",instance="a",detector="uniad"} 1
kpiwatch_anomaly{group="g",instance="a",detector="zscore"} 0
kpiwatch_anomaly{group="g",instance="b",detector="zscore"} 0
kpiwatch_zscore_value{group="g",instance="a",metric="cpu"} 1
kpiwatch_zscore_value{group="g",instance="a",metric="mem"} NaN
kpiwatch_zscore_value{group="g",instance="b",metric="cpu"} 1
kpiwatch_zscore_value{group="g",instance="b",metric="mem"} NaN
kpiwatch_expected_value{group="g",instance="a",metric="cpu"} 50
kpiwatch_expected_value{group="g",instance="b",metric="cpu"} 50
kpiwatch_expected_lower{group="g",instance="a",metric="cpu"} 40
kpiwatch_expected_lower{group="g",instance="b",metric="cpu"} 40
kpiwatch_expected_upper{group="g",instance="a",metric="cpu"} 60.5
kpiwatch_expected_upper{group="g",instance="b",metric="cpu"} 60.5
kpiwatch_uniad_reconstruction_error{group="g",instance="a"} 6
kpiwatch_uniad_metric_contribution{group="g",instance="a",metric="cpu"} 1
kpiwatch_uniad_metric_contribution{group="g",instance="a",metric="mem"} NaN
kpiwatch_adsketch_distance{group="g",instance="a",metric="cpu"} 0.25
kpiwatch_adsketch_match{group="g",instance="a",metric="cpu",pattern="7",kind="abnormal",issue="disk full"} 1
kpiwatch_scores_total{group="g",instance="a",detector="adsketch"} 1
kpiwatch_scores_total{group="g",instance="a",detector="uniad"} 1
kpiwatch_scores_total{group="g",instance="a",detector="zscore"} 1
kpiwatch_scores_total{group="g",instance="b",detector="zscore"} 1
kpiwatch_flags_total{group="g",instance="a",detector="adsketch"} 1
kpiwatch_flags_total{group="g",instance="a",detector="uniad"} 1
kpiwatch_flags_total{group="g",instance="a",detector="zscore"} 0
kpiwatch_flags_total{group="g",instance="b",detector="zscore"} 0"#;

    #[test]
    fn graph_verdicts_render_rank_score_and_symptom_with_its_cause() {
        let b = ScoreBoard::new();
        let db = SeriesLabels::new("shop", &[("service".into(), "database".into())]);
        let web = SeriesLabels::new("shop", &[("service".into(), "web".into())]);
        let cache = SeriesLabels::new("shop", &[("service".into(), "cache".into())]);
        let verdict = |name: &str, score, rank, share, cause: Option<&str>| NodeVerdict {
            name: name.into(),
            score,
            rank,
            rootcause_score: share,
            symptom_of: cause.map(String::from),
        };
        b.publish_graph(
            "shop",
            "db",
            &db,
            &verdict("database", 3.0, Some(1), 0.9, None),
        );
        b.publish_graph(
            "shop",
            "web",
            &web,
            &verdict("web", 5.0, Some(2), 0.1, Some("database")),
        );
        b.publish_graph(
            "shop",
            "cache",
            &cache,
            &verdict("cache", 0.2, None, 0.0, None),
        );
        let mut out = String::new();
        b.render(&mut out);
        for line in [
            r#"kpiwatch_anomaly_score{group="shop",service="database",detector="graph"} 3"#,
            // A symptom's graph score is at most 1: it does not page on its own.
            r#"kpiwatch_anomaly_score{group="shop",service="web",detector="graph"} 1"#,
            r#"kpiwatch_anomaly{group="shop",service="web",detector="graph"} 0"#,
            r#"kpiwatch_rootcause_rank{group="shop",service="database"} 1"#,
            r#"kpiwatch_rootcause_rank{group="shop",service="web"} 2"#,
            r#"kpiwatch_rootcause_score{group="shop",service="cache"} 0"#,
            r#"kpiwatch_symptom{group="shop",service="web",cause="database"} 1"#,
        ] {
            assert!(out.contains(line), "no {line} in\n{out}");
        }
        assert!(!out.contains(r#"kpiwatch_rootcause_rank{group="shop",service="cache"}"#));
        assert!(!out.contains(r#"kpiwatch_symptom{group="shop",service="database""#));
        // The next cycle: the web recovered, its symptom line goes.
        b.publish_graph("shop", "web", &web, &verdict("web", 0.5, None, 0.0, None));
        let mut out = String::new();
        b.render(&mut out);
        assert!(!out.contains("kpiwatch_symptom{"), "{out}");
    }

    #[test]
    fn removing_an_entity_removes_all_its_series() {
        let b = ScoreBoard::new();
        let la = SeriesLabels::new("g", &[("instance".into(), "a".into())]);
        let lb = SeriesLabels::new("g", &[("instance".into(), "b".into())]);
        b.publish("g", "a", &la, "zscore", &["cpu", "mem"], &scores(0.5));
        b.publish("g", "b", &lb, "zscore", &["cpu", "mem"], &scores(0.5));
        b.remove_entity("g", "a");
        let mut out = String::new();
        b.render(&mut out);
        assert!(!out.contains("instance=\"a\""));
        assert!(out.contains("instance=\"b\""));
        assert_eq!(out.matches("# TYPE kpiwatch_anomaly_score").count(), 1);
        b.publish_graph(
            "g",
            "b",
            &lb,
            &NodeVerdict {
                name: "b".into(),
                score: 2.0,
                rank: Some(1),
                rootcause_score: 1.0,
                symptom_of: None,
            },
        );
        // A reload took the graph out of the group: its series go, the z-score's stay.
        b.retain_detectors("g", &["zscore"]);
        let mut out = String::new();
        b.render(&mut out);
        assert!(!out.contains("kpiwatch_rootcause_rank"), "{out}");
        assert!(out.contains(r#"kpiwatch_anomaly_score{group="g",instance="b",detector="zscore"}"#));
        b.retain_detectors("g", &[]);
        assert_eq!(b.entity_count(), 0);
        b.publish("g", "b", &lb, "zscore", &["cpu", "mem"], &scores(0.5));
        b.retain_groups(&[]);
        assert_eq!(b.entity_count(), 0);
    }
}
