//! What a backtest writes: the summary on stdout, `alerts.csv`, `scores.csv` and a
//! self-contained `report.html` (inline SVG and a few lines of script; no external
//! asset).
//!
//! `alerts.csv` columns: `rule, severity, group, entity, detector, pending, start, end,
//! duration_s, peak_score, top_metric` (times RFC 3339 UTC; `end` empty while still
//! firing at the end of the range; `entity` is the entity key, e.g. `instance="a:9100"`).
//!
//! `scores.csv` columns: `timestamp, group, entity, detector, anomaly_score, raw,
//! threshold, top_metric`, one row per published score.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use super::alerts::{Alert, Rules};
use super::incidents::DetectorScore;
use super::record::{EntityRecord, Recorder};
use super::Outcome;
use crate::export::catalog::html_escape as esc;

/// Entities drawn in the report, those with most alerts first.
pub const REPORT_ENTITIES: usize = 200;
/// Points per drawn line at most (min/max per pixel column beyond that).
const MAX_POINTS: usize = 600;

pub use crate::clock::rfc3339;

/// Quotes a CSV cell when it needs it.
fn csv(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

/// The summary printed on stdout.
pub fn summary(
    outcome: &Outcome,
    rules: &Rules,
    alerts: &[Alert],
    from_ms: i64,
    to_ms: i64,
    scored: Option<&[DetectorScore]>,
) -> String {
    let mut s = String::new();
    let days = ((to_ms - from_ms) as f64 / 86_400_000.0).max(1.0 / 1440.0);
    let entities = outcome.recorder.entities.len();
    let cycles: usize = outcome.runs.iter().map(|r| r.cycles).sum();
    let _ = writeln!(
        s,
        "Backtest {} → {}: {} group(s), {entities} entities, {cycles} cycles, {} scores in {:.1} s ({:.0} scores/s).",
        rfc3339(from_ms),
        rfc3339(to_ms),
        outcome.runs.len(),
        outcome.recorder.point_count(),
        outcome.wall.as_secs_f64(),
        outcome.recorder.point_count() as f64 / outcome.wall.as_secs_f64().max(1e-9)
    );
    let detect: Vec<String> = outcome
        .detect
        .iter()
        .map(|(d, t)| format!("{d} {:.2} s", t.as_secs_f64()))
        .collect();
    let detect_total: f64 = outcome.detect.values().map(|t| t.as_secs_f64()).sum();
    let replay: f64 = outcome.runs.iter().map(|r| r.replay.as_secs_f64()).sum();
    for r in &outcome.runs {
        let _ = writeln!(
            s,
            "  group {}: {} samples fetched; waited {:.2} s for Prometheus",
            r.group,
            r.samples,
            r.fetch_wait.as_secs_f64(),
        );
    }
    let _ = writeln!(
        s,
        "  cycles {replay:.2} s (all workers): store, normalise and record {:.2} s, detect {}",
        (replay - detect_total).max(0.0),
        detect.join(", ")
    );
    let _ = writeln!(
        s,
        "\nAlerts by rule (rules file: {} evaluated):",
        rules.evaluated.len()
    );
    let _ = writeln!(
        s,
        "  {:<28} {:>7} {:>9} {:>9} {:>13}",
        "rule", "alerts", "per day", "entities", "firing hours"
    );
    for rule in &rules.evaluated {
        let mine: Vec<&Alert> = alerts.iter().filter(|a| a.rule == rule.name).collect();
        let entities: std::collections::BTreeSet<_> =
            mine.iter().map(|a| (&a.group, &a.entity)).collect();
        // Folded from +0.0: an empty f64 sum is -0.0, printed "-0.00".
        let hours = mine
            .iter()
            .map(|a| (a.end_ms.unwrap_or(to_ms) - a.start_ms) as f64 / 3_600_000.0)
            .fold(0.0, |a, b| a + b);
        let _ = writeln!(
            s,
            "  {:<28} {:>7} {:>9.1} {:>9} {:>13.2}",
            rule.name,
            mine.len(),
            mine.len() as f64 / days,
            entities.len(),
            hours
        );
    }
    if !rules.skipped.is_empty() {
        let names: Vec<&str> = rules.skipped.iter().map(|(n, _)| n.as_str()).collect();
        let _ = writeln!(
            s,
            "  not evaluated (not a score comparison): {}",
            names.join(", ")
        );
    }
    // Days (UTC) × detectors.
    let detectors: std::collections::BTreeSet<&str> = alerts.iter().map(|a| a.detector).collect();
    let mut per_day: BTreeMap<String, BTreeMap<&str, usize>> = BTreeMap::new();
    for a in alerts {
        *per_day
            .entry(rfc3339(a.start_ms)[..10].to_string())
            .or_default()
            .entry(a.detector)
            .or_default() += 1;
    }
    if !per_day.is_empty() {
        let _ = write!(s, "\nAlerts per day (UTC, by start):\n  {:<10}", "day");
        for d in &detectors {
            let _ = write!(s, " {d:>10}");
        }
        s.push('\n');
        for (day, counts) in &per_day {
            let _ = write!(s, "  {day}");
            for d in &detectors {
                let _ = write!(s, " {:>10}", counts.get(d).copied().unwrap_or(0));
            }
            s.push('\n');
        }
    }
    let mut per_entity: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for a in alerts {
        *per_entity.entry((&a.group, &a.entity)).or_default() += 1;
    }
    let mut top: Vec<_> = per_entity.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if !top.is_empty() {
        let _ = writeln!(s, "\nEntities that alerted most:");
        for ((g, e), n) in top.iter().take(10) {
            let _ = writeln!(s, "  {n:>5}  {g} {e}");
        }
    }
    let _ = writeln!(
        s,
        "\nShare of scored steps above the threshold, by detector:"
    );
    for (d, (above, all)) in anomalous_share(&outcome.recorder) {
        let _ = writeln!(
            s,
            "  {d:<10} {:>6.2} % of {all}",
            100.0 * above as f64 / all.max(1) as f64
        );
    }
    if let Some(scored) = scored {
        let _ = writeln!(s, "\nAgainst the labelled incidents:");
        let _ = writeln!(
            s,
            "  {:<10} {:>9} {:>6} {:>9} {:>9} {:>8} {:>7} {:>12} {:>9} {:>9} {:>9}",
            "detector",
            "incidents",
            "caught",
            "alerts",
            "false",
            "alert P",
            "F1",
            "median TTD s",
            "point P",
            "point R",
            "point F1"
        );
        for d in scored {
            let _ = writeln!(
                s,
                "  {:<10} {:>9} {:>6} {:>9} {:>9} {:>8.3} {:>7.3} {:>12} {:>9.3} {:>9.3} {:>9.3}",
                d.detector,
                d.incidents,
                d.caught,
                d.alerts,
                d.false_alerts,
                d.alert_precision(),
                d.incident_f1(),
                d.median_ttd_s
                    .map_or("-".to_string(), |t| format!("{t:.0}")),
                d.pointwise.precision,
                d.pointwise.recall,
                d.pointwise.f1
            );
        }
        let _ = writeln!(
            s,
            "  false alerts per day: {}",
            scored
                .iter()
                .map(|d| format!("{} {:.2}", d.detector, d.false_alerts as f64 / days))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}

/// One setting of a `--set` sweep.
#[derive(Debug, Clone)]
pub struct SweepRow {
    /// The setting, as `key=value …`.
    pub setting: String,
    /// Alerts by detector.
    pub alerts: BTreeMap<&'static str, usize>,
    /// Days in the range.
    pub days: f64,
    /// Against the incidents, when `--labels` was given.
    pub scored: Option<Vec<DetectorScore>>,
}

impl SweepRow {
    /// Detectors that alerted or were scored against the incidents.
    fn detectors(&self) -> std::collections::BTreeSet<&str> {
        self.alerts
            .keys()
            .copied()
            .chain(self.scored.iter().flatten().map(|d| d.detector.as_str()))
            .collect()
    }
}

/// Summarises one setting's run.
pub fn sweep_row(
    setting: &super::overrides::Setting,
    alerts: &[Alert],
    scored: Option<&[DetectorScore]>,
    from_ms: i64,
    to_ms: i64,
) -> SweepRow {
    let mut by_detector = BTreeMap::new();
    for a in alerts {
        *by_detector.entry(a.detector).or_default() += 1;
    }
    SweepRow {
        setting: super::overrides::describe(setting),
        alerts: by_detector,
        days: ((to_ms - from_ms) as f64 / 86_400_000.0).max(1.0 / 1440.0),
        scored: scored.map(<[DetectorScore]>::to_vec),
    }
}

/// The sweep's table: one row per setting and detector.
pub fn sweep_table(rows: &[SweepRow], labelled: bool) -> String {
    let mut s = String::new();
    let width = rows
        .iter()
        .map(|r| r.setting.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let _ = write!(
        s,
        "{:<width$}  {:<10} {:>7} {:>8}",
        "setting", "detector", "alerts", "per day"
    );
    if labelled {
        let _ = write!(
            s,
            " {:>7} {:>6} {:>7} {:>6} {:>9}",
            "caught", "false", "alert P", "F1", "point F1"
        );
    }
    s.push('\n');
    for r in rows {
        for d in r.detectors() {
            let n = r.alerts.get(d).copied().unwrap_or(0);
            let _ = write!(
                s,
                "{:<width$}  {d:<10} {n:>7} {:>8.2}",
                r.setting,
                n as f64 / r.days
            );
            if let Some(score) = r.scored.iter().flatten().find(|x| x.detector == d) {
                let _ = write!(
                    s,
                    " {:>7} {:>6} {:>7.3} {:>6.3} {:>9.3}",
                    format!("{}/{}", score.caught, score.incidents),
                    score.false_alerts,
                    score.alert_precision(),
                    score.incident_f1(),
                    score.pointwise.f1
                );
            }
            s.push('\n');
        }
    }
    s
}

/// Writes `sweep.csv`: `setting, detector, alerts, alerts_per_day` and, with labels,
/// `incidents, caught, false_alerts, alert_precision, incident_f1, point_f1`.
pub fn write_sweep(path: &Path, rows: &[SweepRow]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "setting,detector,alerts,alerts_per_day,incidents,caught,false_alerts,alert_precision,incident_f1,point_f1")?;
    for r in rows {
        for d in r.detectors() {
            let n = r.alerts.get(d).copied().unwrap_or(0);
            write!(out, "{},{d},{n},{}", csv(&r.setting), n as f64 / r.days)?;
            match r.scored.iter().flatten().find(|x| x.detector == d) {
                Some(x) => writeln!(
                    out,
                    ",{},{},{},{},{},{}",
                    x.incidents,
                    x.caught,
                    x.false_alerts,
                    x.alert_precision(),
                    x.incident_f1(),
                    x.pointwise.f1
                )?,
                None => writeln!(out, ",,,,,,")?,
            }
        }
    }
    out.flush()
}

/// `(steps above 1, steps)` per detector.
fn anomalous_share(r: &Recorder) -> BTreeMap<&'static str, (usize, usize)> {
    let mut out: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    for e in r.entities.values() {
        for (&d, points) in &e.scores {
            let slot = out.entry(d).or_default();
            slot.0 += points.iter().filter(|p| p.score > 1.0).count();
            slot.1 += points.len();
        }
    }
    out
}

/// Writes `alerts.csv`.
pub fn write_alerts(path: &Path, alerts: &[Alert]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "rule,severity,group,entity,detector,pending,start,end,duration_s,peak_score,top_metric"
    )?;
    for a in alerts {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            csv(&a.rule),
            csv(&a.severity),
            csv(&a.group),
            csv(&a.entity),
            a.detector,
            rfc3339(a.pending_ms),
            rfc3339(a.start_ms),
            a.end_ms.map(rfc3339).unwrap_or_default(),
            a.end_ms
                .map(|e| ((e - a.start_ms) / 1000).to_string())
                .unwrap_or_default(),
            a.peak_score,
            csv(a.top_metric.as_deref().unwrap_or(""))
        )?;
    }
    out.flush()
}

/// Writes `scores.csv`.
pub fn write_scores(path: &Path, r: &Recorder) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "timestamp,group,entity,detector,anomaly_score,raw,threshold,top_metric"
    )?;
    for ((group, key), e) in &r.entities {
        let (group, key) = (csv(group), csv(key));
        for (d, points) in &e.scores {
            for p in points {
                let top = p
                    .top_metric
                    .and_then(|i| e.metric_names.get(usize::from(i)))
                    .map(|m| csv(m))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{},{group},{key},{d},{},{},{},{top}",
                    rfc3339(p.ts_ms),
                    p.score,
                    p.raw,
                    p.threshold
                )?;
            }
        }
    }
    out.flush()
}

const CSS: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}h2{font-size:1.05em;margin:.2em 0}.muted{color:#777}\
section.entity{border:1px solid #ddd;border-radius:4px;padding:.6em;margin:.8em 0}\
svg{display:block;background:#fff}svg text{font-size:11px;fill:#555}\
.line{fill:none;stroke:#2a7ab8;stroke-width:1.2}.score{fill:none;stroke:#444;stroke-width:1.2}\
.band{fill:#2a7ab8;fill-opacity:.15;stroke:none}.alert{fill:#d33;fill-opacity:.18}\
.threshold{stroke:#d33;stroke-dasharray:4 3}table{border-collapse:collapse}\
td,th{padding:2px 8px;text-align:right}th{text-align:left}button{margin-right:.5em}";

const SCRIPT: &str = "function sortBy(k){const c=document.getElementById('entities');\
[...c.children].sort((a,b)=>k==='alerts'?b.dataset.alerts-a.dataset.alerts||a.dataset.name.localeCompare(b.dataset.name):a.dataset.name.localeCompare(b.dataset.name)).forEach(e=>c.appendChild(e));}";

const WIDTH: f64 = 900.0;
const PANEL: f64 = 70.0;
const LEFT: f64 = 60.0;

/// Writes `report.html`: per entity its metrics (with the z-score detector's band),
/// each detector's score with the threshold, and the alert intervals shaded.
pub fn write_html(
    path: &Path,
    r: &Recorder,
    alerts: &[Alert],
    summary: &str,
    from_ms: i64,
    to_ms: i64,
) -> std::io::Result<()> {
    let mut by_entity: BTreeMap<(&str, &str), Vec<&Alert>> = BTreeMap::new();
    for a in alerts {
        by_entity.entry((&a.group, &a.entity)).or_default().push(a);
    }
    let mut order: Vec<(&(String, String), &EntityRecord, Vec<&Alert>)> = r
        .entities
        .iter()
        .map(|(k, e)| {
            (
                k,
                e,
                by_entity
                    .remove(&(k.0.as_str(), k.1.as_str()))
                    .unwrap_or_default(),
            )
        })
        .collect();
    order.sort_by(|a, b| b.2.len().cmp(&a.2.len()).then(a.0.cmp(b.0)));
    let shown = order.len().min(REPORT_ENTITIES);
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kpiwatch backtest {} → {}</title><style>{CSS}</style><script>{SCRIPT}</script></head><body>\
         <h1>kpiwatch backtest {} → {}</h1><details><summary>Summary (as printed)</summary><pre>{}</pre></details>\
         <p>{} entities{}. Sort: <button onclick=\"sortBy('alerts')\">most alerts</button><button onclick=\"sortBy('name')\">name</button></p>\
         <p class=\"muted\">Blue: the metric, with the z-score detector's band (score ≤ 1 inside) when it runs. Grey: each detector's anomaly score; dashed red: its threshold 1.0. Red shading: alerts the rules fired.</p><div id=\"entities\">",
        rfc3339(from_ms),
        rfc3339(to_ms),
        rfc3339(from_ms),
        rfc3339(to_ms),
        esc(summary),
        order.len(),
        if shown < order.len() {
            format!(", the {shown} with most alerts drawn")
        } else {
            String::new()
        }
    );
    let x = |t: i64| {
        LEFT + (t - from_ms) as f64 / (to_ms - from_ms).max(1) as f64 * (WIDTH - LEFT - 10.0)
    };
    for ((group, key), e, mine) in order.iter().take(shown) {
        let _ = write!(
            s,
            "<section class=\"entity\" data-alerts=\"{}\" data-name=\"{}\"><h2>{} <span class=\"muted\">group {} · {} alert(s)</span></h2>",
            mine.len(),
            esc(&format!("{group} {key}")),
            esc(key),
            esc(group),
            mine.len()
        );
        let shade = |s: &mut String, h: f64| {
            for a in mine {
                let (a0, a1) = (x(a.start_ms), x(a.end_ms.unwrap_or(to_ms)));
                let _ = write!(
                    s,
                    "<rect class=\"alert\" x=\"{a0:.1}\" y=\"0\" width=\"{:.1}\" height=\"{h}\"><title>{} {} → {}</title></rect>",
                    (a1 - a0).max(1.0),
                    esc(&a.rule),
                    rfc3339(a.start_ms),
                    a.end_ms.map(rfc3339).unwrap_or_else(|| "end".into())
                );
            }
        };
        for (m, name) in e.metric_names.iter().enumerate() {
            let values = &e.values[m];
            let band = &e.bands[m];
            // The metric's own range, with room for a band of typical width: a band
            // that balloons for a while must not flatten the metric (it is clipped).
            let (lo, hi) = range(values.iter().map(|v| v.1));
            let width = median(band.iter().map(|b| b.upper - b.lower)).unwrap_or(0.0);
            let (lo, hi) = (lo - width / 2.0, hi + width / 2.0);
            let y = |v: f64| {
                let v = v.clamp(lo, hi);
                PANEL - 4.0 - (v - lo) / (hi - lo) * (PANEL - 8.0)
            };
            let _ = write!(
                s,
                "<svg width=\"{WIDTH}\" height=\"{PANEL}\" role=\"img\" aria-label=\"{}\">",
                esc(name)
            );
            shade(&mut s, PANEL);
            if !band.is_empty() {
                let upper = thin(band.iter().map(|b| (b.ts_ms, b.upper)));
                let lower = thin(band.iter().map(|b| (b.ts_ms, b.lower)));
                let pts: Vec<String> = upper
                    .iter()
                    .chain(lower.iter().rev())
                    .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
                    .collect();
                let _ = write!(s, "<polygon class=\"band\" points=\"{}\"/>", pts.join(" "));
            }
            polyline(&mut s, "line", &thin(values.iter().copied()), &x, &y);
            let _ = write!(
                s,
                "<text x=\"2\" y=\"12\">{}</text><text x=\"2\" y=\"26\">{}</text><text x=\"2\" y=\"{}\">{}</text></svg>",
                esc(name),
                short(hi),
                PANEL - 4.0,
                short(lo)
            );
        }
        for (d, points) in &e.scores {
            let series: Vec<(i64, f64)> = points.iter().map(|p| (p.ts_ms, p.score)).collect();
            let (_, hi) = range(series.iter().map(|p| p.1).chain([1.5]));
            let hi = hi.min(10.0);
            let y = |v: f64| PANEL - 4.0 - v.min(hi) / hi * (PANEL - 8.0);
            let _ = write!(
                s,
                "<svg width=\"{WIDTH}\" height=\"{PANEL}\" role=\"img\" aria-label=\"{d} score\">"
            );
            shade(&mut s, PANEL);
            let _ = write!(
                s,
                "<line class=\"threshold\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
                WIDTH - 10.0,
                y(1.0),
                y(1.0)
            );
            polyline(&mut s, "score", &thin(series.into_iter()), &x, &y);
            let _ = write!(
                s,
                "<text x=\"2\" y=\"12\">{d} score</text><text x=\"2\" y=\"26\">{}</text></svg>",
                short(hi)
            );
        }
        s.push_str("</section>");
    }
    s.push_str("</div></body></html>\n");
    std::fs::write(path, s)
}

fn polyline(
    s: &mut String,
    class: &str,
    pts: &[(i64, f64)],
    x: &dyn Fn(i64) -> f64,
    y: &dyn Fn(f64) -> f64,
) {
    let mut text = String::with_capacity(pts.len() * 12);
    for &(t, v) in pts.iter().filter(|p| p.1.is_finite()) {
        let _ = write!(text, "{:.1},{:.1} ", x(t), y(v));
    }
    let _ = write!(
        s,
        "<polyline class=\"{class}\" points=\"{}\"/>",
        text.trim_end()
    );
}

/// The median of the finite `xs`.
fn median(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = xs.filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| crate::normalize::median_in_place(&mut v))
}

/// The finite range of `ys`, widened when flat.
fn range(ys: impl Iterator<Item = f64>) -> (f64, f64) {
    let Some((lo, hi)) = crate::normalize::finite_range(ys) else {
        return (0.0, 1.0);
    };
    if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    }
}

/// At most [`MAX_POINTS`] points: beyond that, the min and max of each bucket (spikes
/// stay visible).
fn thin(pts: impl Iterator<Item = (i64, f64)>) -> Vec<(i64, f64)> {
    let pts: Vec<(i64, f64)> = pts.collect();
    if pts.len() <= MAX_POINTS {
        return pts;
    }
    let per = pts.len().div_ceil(MAX_POINTS / 2);
    let mut out = Vec::with_capacity(MAX_POINTS + 2);
    for chunk in pts.chunks(per) {
        let finite = || chunk.iter().filter(|p| p.1.is_finite());
        let (Some(lo), Some(hi)) = (
            finite().min_by(|a, b| a.1.total_cmp(&b.1)),
            finite().max_by(|a, b| a.1.total_cmp(&b.1)),
        ) else {
            continue;
        };
        if lo.0 <= hi.0 {
            out.extend([*lo, *hi]);
        } else {
            out.extend([*hi, *lo]);
        }
    }
    out
}

fn short(v: f64) -> String {
    if v.abs() >= 1e4 || (v != 0.0 && v.abs() < 1e-2) {
        format!("{v:.2e}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_every_bucket_extreme() {
        let pts: Vec<(i64, f64)> = (0..10_000)
            .map(|i| (i, if i == 4321 { 99.0 } else { 0.0 }))
            .collect();
        let thinned = thin(pts.into_iter());
        assert!(thinned.len() <= MAX_POINTS + 2, "{}", thinned.len());
        assert!(thinned.contains(&(4321, 99.0)));
        assert!(thinned.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn csv_cells_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv("a"), "a");
        assert_eq!(
            csv("instance=\"a\",job=\"b\""),
            "\"instance=\"\"a\"\",job=\"\"b\"\"\""
        );
    }
}
