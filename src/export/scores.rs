//! Score series with label sets copied from entities.
//!
//! The `prometheus` crate fixes label names per family, but entity labels differ per
//! group (`instance` here, `namespace, pod` there), so score families are kept here and
//! rendered in the text format directly, after the registry's self-metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::RwLock;

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
}

impl Family {
    const ALL: [Family; 10] = [
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
        }
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
        }
    }
}

/// Label pairs of an entity plus its group, rendered once and reused for every line.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesLabels(String);

/// Labels kpiwatch adds itself; an entity label of the same name is renamed
/// `exported_<name>`, as Prometheus does with `honor_labels: false`.
const RESERVED: [&str; 6] = ["group", "detector", "metric", "pattern", "kind", "issue"];

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
        SeriesLabels(s)
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

#[derive(Debug, Clone)]
struct Line {
    family: Family,
    labels: String,
    value: f64,
}

/// What one detector last said about one entity, and how often it flagged.
#[derive(Debug, Clone)]
struct Entry {
    /// The gauge lines of the latest scores.
    lines: Vec<Line>,
    /// `group`, entity and `detector` labels of the counters.
    labels: String,
    /// Points scored since the entity appeared (or the agent started).
    scored: u64,
    /// Of those, points with a score above 1.
    flagged: u64,
}

/// `group → entity key → detector → entry`.
type Board = BTreeMap<String, BTreeMap<String, BTreeMap<&'static str, Entry>>>;

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
        let lines = lines_for(labels, detector, metric_names, scores);
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        let entry = board
            .entry(group.to_string())
            .or_default()
            .entry(key.to_string())
            .or_default()
            .entry(detector)
            .or_insert_with(|| {
                let mut counter_labels = labels.0.clone();
                push_label(&mut counter_labels, "detector", detector);
                Entry {
                    lines: Vec::new(),
                    labels: counter_labels,
                    scored: 0,
                    flagged: 0,
                }
            });
        entry.lines = lines;
        entry.scored += 1;
        entry.flagged += u64::from(scores.is_anomalous());
    }

    /// Removes every series of an entity (it expired).
    pub fn remove_entity(&self, group: &str, key: &str) {
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = board.get_mut(group) {
            g.remove(key);
        }
    }

    /// Removes every series of groups not in `keep` (after a reload).
    pub fn retain_groups(&self, keep: &[String]) {
        let mut board = self.board.write().unwrap_or_else(|p| p.into_inner());
        board.retain(|g, _| keep.contains(g));
    }

    /// Number of entities with at least one series.
    pub fn entity_count(&self) -> usize {
        let board = self.board.read().unwrap_or_else(|p| p.into_inner());
        board.values().map(BTreeMap::len).sum()
    }

    /// Appends the score families in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let board = self.board.read().unwrap_or_else(|p| p.into_inner());
        for family in Family::ALL {
            let mut header_written = false;
            for line in entries(&board).flat_map(|e| &e.lines) {
                if line.family != family {
                    continue;
                }
                if !header_written {
                    let _ = writeln!(out, "# HELP {} {}", family.name(), family.help());
                    let _ = writeln!(out, "# TYPE {} gauge", family.name());
                    header_written = true;
                }
                out.push_str(family.name());
                out.push('{');
                out.push_str(&line.labels);
                out.push_str("} ");
                push_value(out, line.value);
                out.push('\n');
            }
        }
        if entries(&board).next().is_none() {
            return;
        }
        for (name, help, count) in COUNTERS {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for e in entries(&board) {
                let _ = writeln!(out, "{name}{{{}}} {}", e.labels, count(e));
            }
        }
    }
}

/// Every entry of the board, group by group.
fn entries(board: &Board) -> impl Iterator<Item = &Entry> {
    board
        .values()
        .flat_map(|g| g.values())
        .flat_map(|d| d.values())
}

fn lines_for(
    labels: &SeriesLabels,
    detector: &'static str,
    metric_names: &[&str],
    s: &Scores,
) -> Vec<Line> {
    let mut base = labels.0.clone();
    push_label(&mut base, "detector", detector);
    let mut lines = vec![
        Line {
            family: Family::AnomalyScore,
            labels: base.clone(),
            value: s.anomaly_score,
        },
        Line {
            family: Family::Anomaly,
            labels: base,
            value: if s.is_anomalous() { 1.0 } else { 0.0 },
        },
    ];
    let per_metric = |name: &str| {
        let mut l = labels.0.clone();
        push_label(&mut l, "metric", name);
        l
    };
    match detector {
        "zscore" => {
            for (m, name) in s.metrics.iter().zip(metric_names) {
                lines.push(Line {
                    family: Family::ZscoreValue,
                    labels: per_metric(name),
                    value: m.contribution,
                });
                if let Some(b) = m.band {
                    for (family, value) in [
                        (Family::ExpectedValue, b.expected),
                        (Family::ExpectedLower, b.lower),
                        (Family::ExpectedUpper, b.upper),
                    ] {
                        lines.push(Line {
                            family,
                            labels: per_metric(name),
                            value,
                        });
                    }
                }
            }
        }
        "uniad" => {
            lines.push(Line {
                family: Family::UniadReconstructionError,
                labels: labels.0.clone(),
                value: s.raw,
            });
            for (m, name) in s.metrics.iter().zip(metric_names) {
                lines.push(Line {
                    family: Family::UniadMetricContribution,
                    labels: per_metric(name),
                    value: m.contribution,
                });
            }
        }
        "adsketch" => {
            for (m, name) in s.metrics.iter().zip(metric_names) {
                if let Some(d) = m.distance {
                    lines.push(Line {
                        family: Family::AdsketchDistance,
                        labels: per_metric(name),
                        value: d,
                    });
                }
                if let Some(p) = &m.pattern {
                    let mut l = per_metric(name);
                    push_label(&mut l, "pattern", &p.id.to_string());
                    push_label(
                        &mut l,
                        "kind",
                        if p.abnormal { "abnormal" } else { "normal" },
                    );
                    push_label(&mut l, "issue", &p.issues);
                    lines.push(Line {
                        family: Family::AdsketchMatch,
                        labels: l,
                        value: 1.0,
                    });
                }
            }
        }
        _ => {}
    }
    lines
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
        b.retain_groups(&[]);
        assert_eq!(b.entity_count(), 0);
    }
}
