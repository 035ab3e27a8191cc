//! The alerts a rule file would have fired on the recorded scores.
//!
//! A backtest has no Prometheus evaluating rules over it, so this module evaluates the
//! rules kpiwatch's own score series answer: alerting rules whose `expr` is one score
//! family with label matchers compared with a number, such as
//! `kpiwatch_anomaly_score{detector="uniad"} > 1`. Every other rule (the agent's health,
//! the regressions, anything with a function or an aggregation) is reported as skipped,
//! never guessed at.
//!
//! Semantics, as Prometheus's: the score is a step function (the agent serves the last
//! score until the next cycle replaces it); an alert is *pending* from the first step
//! where `expr` holds, *fires* once it has held for `for:`, and *resolves* at the first
//! step where it no longer holds. Prometheus evaluates rules every
//! `evaluation_interval`, so its start times can be up to one interval later.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::record::{EntityRecord, Point, Recorder};

/// Why a rule file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a Prometheus rule file.
    #[error("{path}: not a Prometheus rule file ({reason}); expected `groups: [{{name, rules: [{{alert, expr, for}}]}}]`")]
    Parse {
        /// The file.
        path: String,
        /// What the YAML parser said.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
struct RawRule {
    alert: Option<String>,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The score families a rule can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `kpiwatch_anomaly_score`.
    Score,
    /// `kpiwatch_anomaly` (1 above the threshold, else 0).
    Anomalous,
}

/// A label matcher of a rule's selector.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `label="value"`.
    Equal(String, String),
    /// `label!="value"`.
    NotEqual(String, String),
    /// `label=~"re"` (anchored, as in Prometheus).
    Regex(String, regex::Regex),
    /// `label!~"re"`.
    NotRegex(String, regex::Regex),
}

impl Matcher {
    fn matches(&self, value: impl Fn(&str) -> String) -> bool {
        match self {
            Matcher::Equal(l, v) => value(l) == *v,
            Matcher::NotEqual(l, v) => value(l) != *v,
            Matcher::Regex(l, re) => re.is_match(&value(l)),
            Matcher::NotRegex(l, re) => !re.is_match(&value(l)),
        }
    }
}

/// A comparison of a rule's expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`
    Greater,
    /// `>=`
    GreaterEqual,
    /// `<`
    Less,
    /// `<=`
    LessEqual,
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
}

impl Comparison {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Comparison::Greater => a > b,
            Comparison::GreaterEqual => a >= b,
            Comparison::Less => a < b,
            Comparison::LessEqual => a <= b,
            Comparison::Equal => a == b,
            Comparison::NotEqual => a != b,
        }
    }
}

/// An alerting rule over the score series.
#[derive(Debug, Clone)]
pub struct ScoreRule {
    /// `alert:`.
    pub name: String,
    /// The selected family.
    pub family: Family,
    /// The selector's matchers.
    pub matchers: Vec<Matcher>,
    /// The comparison.
    pub comparison: Comparison,
    /// The number compared with.
    pub value: f64,
    /// `for:`.
    pub hold: Duration,
    /// `labels.severity`, when set.
    pub severity: Option<String>,
}

/// The rules of a file: those evaluated, and `(name, why)` of those skipped.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Rules over the score series.
    pub evaluated: Vec<ScoreRule>,
    /// Rules not evaluated, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Reads a Prometheus rule file.
pub fn load(path: &Path) -> Result<Rules, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|reason| RulesError::Parse {
        path: path.display().to_string(),
        reason,
    })
}

/// Parses rule-file text.
pub fn parse(text: &str) -> Result<Rules, String> {
    let file: RuleFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut rules = Rules::default();
    for raw in file.groups.into_iter().flat_map(|g| g.rules) {
        let Some(name) = raw.alert else { continue };
        let hold = match raw.for_.as_deref().map(crate::config::parse_duration) {
            None => Duration::ZERO,
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(format!("alert {name:?}: for: {e}")),
        };
        match parse_expr(&raw.expr) {
            Ok((family, matchers, comparison, value)) => rules.evaluated.push(ScoreRule {
                name,
                family,
                matchers,
                comparison,
                value,
                hold,
                severity: raw.labels.get("severity").cloned(),
            }),
            Err(why) => rules.skipped.push((name, why)),
        }
    }
    Ok(rules)
}

/// The clause the shipped anomaly rules end with to leave out a service graph's
/// symptoms. A backtest replays no graph, so no score is a symptom: the clause removes
/// nothing and the rule is evaluated without it.
const SYMPTOM_CLAUSE: &str = "unless ignoring (detector, cause) kpiwatch_symptom == 1";

/// Parses `family{matchers} op number` (optionally followed by [`SYMPTOM_CLAUSE`]);
/// `Err` says why the expression is out of scope.
fn parse_expr(expr: &str) -> Result<(Family, Vec<Matcher>, Comparison, f64), String> {
    let out_of_scope = || "not a comparison of a kpiwatch score series with a number".to_string();
    let e = expr.trim();
    let e = e.strip_suffix(SYMPTOM_CLAUSE).map_or(e, str::trim_end);
    let name_len = e
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(e.len());
    let family = match &e[..name_len] {
        "kpiwatch_anomaly_score" => Family::Score,
        "kpiwatch_anomaly" => Family::Anomalous,
        _ => return Err(out_of_scope()),
    };
    let mut rest = e[name_len..].trim_start();
    let mut matchers = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let close = inner.find('}').ok_or_else(out_of_scope)?;
        matchers = parse_matchers(&inner[..close])?;
        rest = inner[close + 1..].trim_start();
    }
    let ops = [
        (">=", Comparison::GreaterEqual),
        ("<=", Comparison::LessEqual),
        ("==", Comparison::Equal),
        ("!=", Comparison::NotEqual),
        (">", Comparison::Greater),
        ("<", Comparison::Less),
    ];
    let (op, comparison) = ops
        .iter()
        .find(|(op, _)| rest.starts_with(op))
        .ok_or_else(out_of_scope)?;
    let value: f64 = rest[op.len()..]
        .trim()
        .parse()
        .map_err(|_| out_of_scope())?;
    Ok((family, matchers, *comparison, value))
}

/// Parses `a="x", b!~"y|z"`.
fn parse_matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let label_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("a matcher without an operator")?;
        let label = rest[..label_len].to_string();
        rest = rest[label_len..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| format!("matcher on {label:?}: unknown operator"))?;
        rest = rest[op.len()..].trim_start();
        let (value, after) =
            quoted(rest).ok_or_else(|| format!("matcher on {label:?}: expected a quoted value"))?;
        let regex = |v: &str| {
            regex::Regex::new(&format!("^(?:{v})$"))
                .map_err(|e| format!("matcher on {label:?}: {e}"))
        };
        out.push(match op {
            "=" => Matcher::Equal(label, value),
            "!=" => Matcher::NotEqual(label, value),
            "=~" => Matcher::Regex(label.clone(), regex(&value)?),
            _ => Matcher::NotRegex(label.clone(), regex(&value)?),
        });
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Ok(out)
}

/// A double-quoted string at the start of `s` (with `\"` and `\\`) and what follows.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

/// An alert the rules would have fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// The rule's `alert:` name.
    pub rule: String,
    /// The rule's severity label.
    pub severity: String,
    /// Group.
    pub group: String,
    /// Entity key.
    pub entity: String,
    /// Detector.
    pub detector: &'static str,
    /// When `expr` began to hold (ms).
    pub pending_ms: i64,
    /// When the alert fired (`pending_ms` + `for:`, on a step).
    pub start_ms: i64,
    /// When it resolved; `None` when it still fired at the end of the range.
    pub end_ms: Option<i64>,
    /// Highest score while firing.
    pub peak_score: f64,
    /// The metric contributing most at the peak, when the detector reports it.
    pub top_metric: Option<String>,
}

/// Every alert of `rules` over the recorded scores, sorted by start.
pub fn evaluate(rules: &Rules, recorder: &Recorder) -> Vec<Alert> {
    let mut out = Vec::new();
    for ((group, key), entity) in &recorder.entities {
        for (&detector, points) in &entity.scores {
            for rule in &rules.evaluated {
                let label = |l: &str| match l {
                    "group" => group.clone(),
                    "detector" => detector.to_string(),
                    "__name__" => match rule.family {
                        Family::Score => "kpiwatch_anomaly_score".into(),
                        Family::Anomalous => "kpiwatch_anomaly".into(),
                    },
                    l => entity_label(entity, l),
                };
                if rule.matchers.iter().all(|m| m.matches(label)) {
                    let series = Series {
                        group,
                        key,
                        detector,
                        entity,
                    };
                    fire(rule, &series, points, &mut out);
                }
            }
        }
    }
    out.sort_by(|a, b| (a.start_ms, &a.group, &a.entity).cmp(&(b.start_ms, &b.group, &b.entity)));
    out
}

fn entity_label(entity: &EntityRecord, name: &str) -> String {
    entity
        .labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The score series an alert is about.
struct Series<'a> {
    group: &'a str,
    key: &'a str,
    detector: &'static str,
    entity: &'a EntityRecord,
}

/// Walks one series' points through pending → firing → resolved.
fn fire(rule: &ScoreRule, s: &Series<'_>, points: &[Point], out: &mut Vec<Alert>) {
    let hold = rule.hold.as_millis() as i64;
    let mut pending: Option<i64> = None;
    let mut firing: Option<Alert> = None;
    for p in points {
        let value = match rule.family {
            Family::Score => p.score,
            Family::Anomalous => f64::from(u8::from(p.score > 1.0)),
        };
        if !rule.comparison.holds(value, rule.value) {
            pending = None;
            if let Some(mut a) = firing.take() {
                a.end_ms = Some(p.ts_ms);
                out.push(a);
            }
            continue;
        }
        let since = *pending.get_or_insert(p.ts_ms);
        if let Some(a) = &mut firing {
            if p.score > a.peak_score {
                a.peak_score = p.score;
                a.top_metric = top_metric(s.entity, p);
            }
        } else if p.ts_ms - since >= hold {
            firing = Some(Alert {
                rule: rule.name.clone(),
                severity: rule.severity.clone().unwrap_or_default(),
                group: s.group.to_string(),
                entity: s.key.to_string(),
                detector: s.detector,
                pending_ms: since,
                start_ms: p.ts_ms,
                end_ms: None,
                peak_score: p.score,
                top_metric: top_metric(s.entity, p),
            });
        }
    }
    out.extend(firing);
}

fn top_metric(entity: &EntityRecord, p: &Point) -> Option<String> {
    p.top_metric
        .and_then(|i| entity.metric_names.get(usize::from(i)))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../deploy/rules/kpiwatch.rules.yml");

    #[test]
    fn the_shipped_anomaly_rules_are_evaluated_and_the_others_skipped_by_name() {
        let rules = parse(SHIPPED).unwrap();
        let names: Vec<&str> = rules.evaluated.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "KpiwatchZscoreAnomaly",
                "KpiwatchUniadAnomaly",
                "KpiwatchAdsketchAnomaly",
                "KpiwatchAnomaly",
                // Evaluated, and silent: a backtest records no graph scores.
                "KpiwatchProbableRootCause"
            ]
        );
        // The symptom clause the anomaly rules end with is read as "no symptoms".
        assert_eq!(rules.evaluated[0].value, 1.0);
        assert_eq!(rules.evaluated[1].hold, Duration::from_secs(300));
        assert!(rules.skipped.iter().any(|(n, _)| n == "KpiwatchRegression"));
        assert!(rules.skipped.iter().any(|(n, _)| n == "KpiwatchDown"));
    }

    fn recorder(detector: &'static str, scores: &[f64]) -> Recorder {
        let mut r = Recorder::new(0, BTreeMap::new());
        let points = scores
            .iter()
            .enumerate()
            .map(|(i, &score)| Point {
                ts_ms: i as i64 * 60_000,
                score,
                raw: score,
                threshold: 1.0,
                top_metric: Some(0),
            })
            .collect();
        r.entities.insert(
            ("g".into(), "instance=\"a\"".into()),
            EntityRecord {
                labels: vec![("instance".into(), "a".into())],
                metric_names: vec!["cpu".into()],
                scores: BTreeMap::from([(detector, points)]),
                ..Default::default()
            },
        );
        r
    }

    #[test]
    fn an_alert_fires_after_its_for_duration_and_resolves_when_the_score_falls() {
        let rules = parse(SHIPPED).unwrap();
        // Uni-AD (for: 5m) at one point per minute: 4 minutes above is only pending;
        // the next run of 7 minutes fires 5 minutes after it began, peaks at 3.0.
        let scores = [
            0.5, 2.0, 2.0, 2.0, 2.0, 0.5, 1.5, 1.5, 1.5, 1.5, 1.5, 3.0, 1.5, 0.2,
        ];
        let alerts = evaluate(&rules, &recorder("uniad", &scores));
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let a = &alerts[0];
        assert_eq!(a.rule, "KpiwatchUniadAnomaly");
        assert_eq!(
            (a.pending_ms, a.start_ms, a.end_ms),
            (360_000, 660_000, Some(780_000))
        );
        assert_eq!(a.peak_score, 3.0);
        assert_eq!(a.top_metric.as_deref(), Some("cpu"));
        // A detector without a rule of its own falls to the catch-all rule (for: 10m),
        // and one still firing at the end has no end.
        let alerts = evaluate(&rules, &recorder("other", &[2.0; 12]));
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].rule.as_str(), alerts[0].end_ms),
            ("KpiwatchAnomaly", None)
        );
    }

    #[test]
    fn expressions_outside_the_score_comparisons_are_refused_with_a_reason() {
        for expr in [
            "sum(kpiwatch_anomaly_score) > 1",
            "kpiwatch_anomaly_score > bool 1",
            "up{job=\"kpiwatch\"} == 0",
            "kpiwatch_anomaly_score{detector=~\"(\"} > 1",
        ] {
            assert!(parse_expr(expr).is_err(), "{expr}");
        }
        let (_, m, c, v) =
            parse_expr("kpiwatch_anomaly_score{group=\"a\\\"b\", detector!~\"z|u\"} >= 0.5")
                .unwrap();
        assert_eq!((m.len(), c, v), (2, Comparison::GreaterEqual, 0.5));
        assert!(matches!(&m[0], Matcher::Equal(l, v) if l == "group" && v == "a\"b"));
    }
}
