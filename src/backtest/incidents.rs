//! Known incidents (`--labels FILE`) and how well each detector's alerts found them.
//!
//! The file is a CSV whose columns are `start`, `end` and entity labels: every other
//! column names a label the entity must have with that value (an empty cell matches
//! any value). Times are RFC 3339 or Unix seconds.
//!
//! ```text
//! instance,start,end
//! node-3:9100,2026-12-01T10:00:00Z,2026-12-01T10:20:00Z
//! ```
//!
//! Per detector: an incident is *caught* when one of the detector's alerts on a
//! matching entity overlaps it, its *time to detect* the first such alert's start minus
//! the incident's start (0 when the alert began earlier); an alert that overlaps no
//! incident of its entity is *false*. Pointwise, every recorded score is a prediction
//! (`score > 1`) of whether its step lies inside an incident of its entity.

use std::collections::BTreeMap;
use std::path::Path;

use super::alerts::Alert;
use super::record::{EntityRecord, Recorder};
use crate::eval::{prf, Prf};

/// One known incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Labels the entity must have (`(name, value)`).
    pub labels: Vec<(String, String)>,
    /// Start (ms).
    pub start_ms: i64,
    /// End (ms).
    pub end_ms: i64,
    /// Line in the file (for messages).
    pub line: usize,
}

impl Incident {
    fn concerns(&self, entity: &EntityRecord) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| entity.labels.iter().any(|(l, x)| l == k && x == v))
    }
}

/// Parses a time as RFC 3339 or Unix seconds; `None` when it is neither.
pub fn parse_instant(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    s.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .map(|x| (x * 1000.0).round() as i64)
}

/// Reads an incident file; `Err` names the file, the line and what was expected.
pub fn load(path: &Path) -> Result<Vec<Incident>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses incident CSV text.
pub fn parse(text: &str) -> Result<Vec<Incident>, String> {
    let rows = crate::dataset::split_rows(text)
        .ok_or("empty file; expected a header with start, end and entity label columns")?;
    let col = |name: &str| rows.header.iter().position(|h| *h == name);
    let (Some(start), Some(end)) = (col("start"), col("end")) else {
        return Err(format!(
            "header {:?} lacks `start` and `end` columns",
            rows.header.join(",")
        ));
    };
    let label_cols: Vec<(usize, &str)> = rows
        .header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != start && *i != end)
        .map(|(i, h)| (i, *h))
        .collect();
    let mut out = Vec::new();
    for (line, cells) in &rows.rows {
        let cell = |i: usize| cells.get(i).copied().unwrap_or("");
        let time = |i: usize| {
            parse_instant(cell(i)).ok_or_else(|| {
                format!(
                    "line {line}: {:?} is not a time (expected RFC 3339 such as 2026-12-01T10:00:00Z, or Unix seconds)",
                    cell(i)
                )
            })
        };
        let (start_ms, end_ms) = (time(start)?, time(end)?);
        if end_ms < start_ms {
            return Err(format!("line {line}: end is before start"));
        }
        let labels = label_cols
            .iter()
            .filter(|(i, _)| !cell(*i).is_empty())
            .map(|(i, h)| (h.to_string(), cell(*i).to_string()))
            .collect();
        out.push(Incident {
            labels,
            start_ms,
            end_ms,
            line: *line,
        });
    }
    Ok(out)
}

/// How one detector did against the incidents.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DetectorScore {
    /// Detector.
    pub detector: String,
    /// Incidents with at least one recorded score of this detector on their entity.
    pub incidents: usize,
    /// Of those, incidents an alert overlapped.
    pub caught: usize,
    /// Alerts overlapping no incident of their entity.
    pub false_alerts: usize,
    /// Alerts in all.
    pub alerts: usize,
    /// Median time to detect of the caught incidents (s).
    pub median_ttd_s: Option<f64>,
    /// Pointwise precision, recall and F1 of `score > 1`.
    pub pointwise: Prf,
}

impl DetectorScore {
    /// Precision over alerts: the share that overlapped an incident.
    pub fn alert_precision(&self) -> f64 {
        ratio(self.alerts - self.false_alerts, self.alerts)
    }

    /// Recall over incidents: the share caught.
    pub fn incident_recall(&self) -> f64 {
        ratio(self.caught, self.incidents)
    }

    /// F1 of the two.
    pub fn incident_f1(&self) -> f64 {
        let (p, r) = (self.alert_precision(), self.incident_recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Scores every detector's alerts and points against `incidents`; alerts still firing
/// at the end count as lasting until `to_ms`.
pub fn score(
    incidents: &[Incident],
    alerts: &[Alert],
    recorder: &Recorder,
    to_ms: i64,
) -> Vec<DetectorScore> {
    let mut by_detector: BTreeMap<&str, DetectorScore> = BTreeMap::new();
    let mut truth: BTreeMap<&str, (Vec<bool>, Vec<bool>)> = BTreeMap::new();
    let mut ttd: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for ((group, key), entity) in &recorder.entities {
        let mine: Vec<&Incident> = incidents.iter().filter(|i| i.concerns(entity)).collect();
        for (&detector, points) in &entity.scores {
            let d = by_detector
                .entry(detector)
                .or_insert_with(|| DetectorScore {
                    detector: detector.to_string(),
                    ..Default::default()
                });
            let (t, p) = truth.entry(detector).or_default();
            for point in points {
                t.push(
                    mine.iter()
                        .any(|i| (i.start_ms..=i.end_ms).contains(&point.ts_ms)),
                );
                p.push(point.score > 1.0);
            }
            let fired: Vec<&Alert> = alerts
                .iter()
                .filter(|a| a.detector == detector && a.group == *group && a.entity == *key)
                .collect();
            let overlaps = |a: &Alert, i: &Incident| {
                a.start_ms <= i.end_ms && a.end_ms.unwrap_or(to_ms) >= i.start_ms
            };
            d.incidents += mine.len();
            d.alerts += fired.len();
            d.false_alerts += fired
                .iter()
                .filter(|a| !mine.iter().any(|i| overlaps(a, i)))
                .count();
            for i in &mine {
                if let Some(first) = fired
                    .iter()
                    .filter(|a| overlaps(a, i))
                    .map(|a| a.start_ms)
                    .min()
                {
                    d.caught += 1;
                    ttd.entry(detector)
                        .or_default()
                        .push((first - i.start_ms).max(0) as f64 / 1000.0);
                }
            }
        }
    }
    by_detector
        .into_iter()
        .map(|(name, mut d)| {
            if let Some((t, p)) = truth.get(name) {
                d.pointwise = prf(t, p);
            }
            d.median_ttd_s = ttd.get_mut(name).map(|v| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            });
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::record::Point;

    #[test]
    fn incident_files_take_label_columns_and_both_time_forms() {
        let got = parse("instance,start,end\nnode-3:9100,2026-12-01T10:00:00Z,1796120400\n,0,60\n")
            .unwrap();
        assert_eq!(
            got[0].labels,
            vec![("instance".to_string(), "node-3:9100".to_string())]
        );
        assert_eq!(got[0].start_ms, 1_796_119_200_000);
        assert_eq!(got[0].end_ms, 1_796_120_400_000);
        assert!(got[1].labels.is_empty());
        let err = parse("instance,start,end\na,yesterday,0\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("yesterday"), "{err}");
        assert!(parse("instance,from,to\n").unwrap_err().contains("start"));
        assert!(parse("start,end\n10,5\n")
            .unwrap_err()
            .contains("before start"));
    }

    #[test]
    fn caught_false_and_pointwise_figures_follow_the_overlaps() {
        let mut r = Recorder::new(0, BTreeMap::new());
        for name in ["a", "b"] {
            let points = (0..10)
                .map(|k| Point {
                    ts_ms: k * 1000,
                    score: if name == "a" && (3..6).contains(&k) {
                        2.0
                    } else {
                        0.1
                    },
                    raw: 0.0,
                    threshold: 1.0,
                    top_metric: None,
                })
                .collect();
            r.entities.insert(
                ("g".into(), format!("instance=\"{name}\"")),
                EntityRecord {
                    labels: vec![("instance".into(), name.into())],
                    scores: BTreeMap::from([("zscore", points)]),
                    ..Default::default()
                },
            );
        }
        let alert = |entity: &str, start_ms, end_ms| Alert {
            rule: "R".into(),
            severity: String::new(),
            group: "g".into(),
            entity: format!("instance=\"{entity}\""),
            detector: "zscore",
            pending_ms: start_ms,
            start_ms,
            end_ms,
            peak_score: 2.0,
            top_metric: None,
        };
        let incidents = parse("instance,start,end\na,2,5\nb,7,8\n").unwrap();
        let alerts = [alert("a", 4000, Some(6000)), alert("b", 1000, Some(2000))];
        let s = &score(&incidents, &alerts, &r, 10_000)[0];
        assert_eq!(
            (s.incidents, s.caught, s.alerts, s.false_alerts),
            (2, 1, 2, 1)
        );
        assert_eq!(s.median_ttd_s, Some(2.0));
        assert_eq!((s.alert_precision(), s.incident_recall()), (0.5, 0.5));
        // Points 3, 4, 5 of a are flagged; 2..=5 of a and 7, 8 of b are incident steps.
        assert!((s.pointwise.precision - 1.0).abs() < 1e-12);
        assert!((s.pointwise.recall - 0.5).abs() < 1e-12);
    }
}
