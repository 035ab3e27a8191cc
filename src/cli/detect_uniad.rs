//! `kpiwatch detect uniad`: the Uni-AD detector over a CSV file, offline.
//!
//! The CSV has a `timestamp` column, one column per metric and optionally a `label`
//! (or `is_anomaly`) column. The file is one entity. For each row t the detector sees
//! the rows up to t, normalised with the robust statistics of the `--history` rows
//! before t (the agent's normaliser), exactly as the agent would score that entity
//! cycle after cycle: eq. 7 at the last step, per-entity SPOT threshold (3-sigma while
//! warming up). It prints `timestamp,score,raw,threshold,flag,top_metric` per row on
//! stdout (`score` = raw / threshold, empty while fewer than W rows exist) and a
//! summary on stderr; with labels, the summary has precision/recall/F1 of the flags,
//! the false flags per 1,000 normal rows, and best F1, point-adjusted best F1 and PR-AUC of the raw score. `--plot` writes
//! an SVG of the metrics, labels, score and flags.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::detect::uniad::{SpotOptions, UniadDetector, UniadOptions};
use crate::eval::{best_f1, false_flags_per_1000, pr_auc, prf, Prf};

use super::offline::{load_input, replay, top_metric, Baseline, BaselineArgs, Input};
use super::{EXIT_CONFIG, EXIT_FAILURE};

/// Arguments of `detect uniad`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CSV with a `timestamp` column and one column per metric (+ optional `label`).
    #[arg(long)]
    input: PathBuf,
    /// The ONNX model.
    #[arg(long, default_value = "models/uniad.onnx")]
    model: PathBuf,
    /// Write an SVG plot of metrics, labels, score and flags here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Rows of history behind each row's normalisation (the agent's `history`).
    #[arg(long, default_value_t = 1024)]
    history: usize,
    /// SPOT risk: tail probability of the threshold.
    #[arg(long, default_value_t = SpotOptions::default().risk)]
    risk: f64,
    /// Scores before SPOT calibrates (3-sigma threshold meanwhile).
    #[arg(long, default_value_t = SpotOptions::default().calibration)]
    calibration: usize,
    /// Quantile of the calibration scores above which SPOT fits the tail.
    #[arg(long, default_value_t = SpotOptions::default().level)]
    level: f64,
    /// Flags (net of normal scores) after which a lasting change is learned.
    #[arg(long, default_value_t = SpotOptions::default().adapt_after)]
    adapt_after: usize,
    /// Divide each metric's squared error by its median over the history before eq. 7's
    /// mean (the agent's `scale_errors: true`): a fault in a flat metric such as an error
    /// ratio stands out of noisy ones, but so does a flat metric's ordinary step.
    #[arg(long)]
    scale_errors: bool,
    #[command(flatten)]
    baseline: BaselineArgs,
}

/// One scored row.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    raw: f64,
    threshold: f64,
    top: usize,
}

/// Runs the command.
pub(super) fn run(args: &Args) -> ExitCode {
    let Input {
        table,
        ts,
        labels,
        metric_idx,
    } = match load_input(&args.input) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("kpiwatch: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut options = UniadOptions::new(&args.model);
    options.threshold.risk = args.risk;
    options.threshold.calibration = args.calibration;
    options.threshold.adapt_after = args.adapt_after;
    options.threshold.level = args.level;
    options.scale_errors = args.scale_errors;
    if let Err(e) = options.validate() {
        eprintln!("kpiwatch: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut detector = match UniadDetector::new(options) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kpiwatch: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let names: Vec<&str> = metric_idx
        .iter()
        .map(|&i| table.names[i].as_str())
        .collect();
    let columns: Vec<&[f64]> = metric_idx
        .iter()
        .map(|&i| table.columns[i].as_slice())
        .collect();
    let baseline = match args.baseline.resolve(&ts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kpiwatch: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rows = score_rows(
        &mut detector,
        &columns,
        &names,
        args.history.max(2),
        &baseline,
    );

    let mut out = String::from("timestamp,score,raw,threshold,flag,top_metric\n");
    for (t, r) in ts.iter().zip(&rows) {
        match r {
            Some(r) => {
                let score = r.raw / r.threshold;
                let _ = writeln!(
                    out,
                    "{t},{score},{},{},{},{}",
                    r.raw,
                    r.threshold,
                    u8::from(score > 1.0),
                    names[r.top]
                );
            }
            None => {
                let _ = writeln!(out, "{t},,,,0,");
            }
        }
    }
    print!("{out}");
    let scored: Vec<(usize, Row)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| (i, r)))
        .collect();
    let flagged = scored.iter().filter(|(_, r)| r.raw > r.threshold).count();
    eprintln!(
        "{}: {} rows, {} metrics, {} scored, {} flagged",
        args.input.display(),
        ts.len(),
        names.len(),
        scored.len(),
        flagged
    );
    if let Some(labels) = &labels {
        let y: Vec<bool> = scored.iter().map(|(i, _)| labels[*i] > 0.5).collect();
        let s: Vec<f64> = scored.iter().map(|(_, r)| r.raw).collect();
        let flags: Vec<bool> = scored.iter().map(|(_, r)| r.raw > r.threshold).collect();
        let Prf {
            precision: p,
            recall: r,
            f1: f,
        } = prf(&y, &flags);
        // Over every row, as the z-score command counts: a row not scored is not flagged.
        let noise = false_flags_per_1000(
            &labels.iter().map(|&l| l > 0.5).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| r.is_some_and(|r| r.raw > r.threshold))
                .collect::<Vec<_>>(),
        );
        eprintln!(
            "flags: precision {p:.3} recall {r:.3} f1 {f:.3}, {noise:.1} false flags per 1,000 normal rows"
        );
        if y.iter().any(|&v| v) {
            eprintln!(
                "raw score: pr_auc {:.3} best_f1 {:.3} best_f1_point_adjusted {:.3}",
                pr_auc(&s, &y),
                best_f1(&s, &y, false),
                best_f1(&s, &y, true)
            );
        } else {
            eprintln!("raw score: no labelled anomaly among scored rows; no PR-AUC or best F1");
        }
    }
    if let Some(path) = &args.plot {
        let svg = plot_svg(&names, &columns, labels.as_deref(), &rows);
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("kpiwatch: cannot write {}: {e}", path.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    if scored.is_empty() {
        eprintln!(
            "kpiwatch: no row scored (the model needs {} rows)",
            detector.model().window()
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    ExitCode::SUCCESS
}

/// Scores every row with the rows up to it; `None` while warming up.
fn score_rows(
    detector: &mut UniadDetector,
    columns: &[&[f64]],
    names: &[&str],
    history: usize,
    baseline: &Baseline,
) -> Vec<Option<Row>> {
    let w = detector.model().window();
    replay(detector, columns, names, history.max(w), baseline)
        .into_iter()
        .map(|s| {
            s.map(|s| Row {
                raw: s.raw,
                threshold: s.threshold,
                top: top_metric(&s),
            })
        })
        .collect()
}

/// An SVG with the metrics (robust-z-scored, clipped) above and the anomaly score
/// (raw / threshold, log scale, line at 1.0) below; labels shaded, flags in red.
fn plot_svg(
    names: &[&str],
    columns: &[&[f64]],
    labels: Option<&[f64]>,
    rows: &[Option<Row>],
) -> String {
    const WIDTH: f64 = 1200.0;
    const PANEL: f64 = 220.0;
    const PAD: f64 = 40.0;
    const COLORS: [&str; 8] = [
        "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ];
    let len = rows.len().max(2);
    let x = |i: usize| PAD + (WIDTH - 2.0 * PAD) * i as f64 / (len - 1) as f64;
    let height = 2.0 * PANEL + 3.0 * PAD;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    if let Some(labels) = labels {
        let mut i = 0;
        while i < labels.len() {
            if labels[i] > 0.5 {
                let start = i;
                while i < labels.len() && labels[i] > 0.5 {
                    i += 1;
                }
                let (a, b) = (x(start), x(i.saturating_sub(1)).max(x(start) + 1.0));
                let _ = writeln!(
                    s,
                    r##"<rect x="{a:.1}" y="{PAD}" width="{:.1}" height="{:.1}" fill="#ffd8d8"/>"##,
                    b - a,
                    2.0 * PANEL + PAD
                );
            }
            i += 1;
        }
    }
    // Metrics panel.
    let top = PAD;
    let _ = writeln!(
        s,
        r#"<text x="{PAD}" y="{:.1}">metrics (robust z, clipped to ±8): {}</text>"#,
        top - 8.0,
        xml_escape(&names.join(", "))
    );
    let mut scratch = Vec::new();
    for (k, col) in columns.iter().enumerate().take(COLORS.len()) {
        let stats = crate::normalize::RobustStats::fit(col, &mut scratch)
            .unwrap_or(crate::normalize::RobustStats::IDENTITY);
        let y = |v: f64| top + PANEL / 2.0 - stats.z(v).clamp(-8.0, 8.0) / 16.0 * PANEL;
        let pts: Vec<String> = col
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| format!("{:.1},{:.1}", x(i), y(v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1" points="{}"/>"#,
            COLORS[k],
            pts.join(" ")
        );
    }
    // Score panel, log10 from 0.01 to 100.
    let top = 2.0 * PAD + PANEL;
    let y = |v: f64| top + PANEL - (v.clamp(1e-2, 1e2).log10() + 2.0) / 4.0 * PANEL;
    let _ = writeln!(
        s,
        r#"<text x="{PAD}" y="{:.1}">anomaly score = raw / threshold (log scale, 0.01 to 100); red = flagged</text>"#,
        top - 8.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{PAD}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="black" stroke-dasharray="4 3"/>"#,
        WIDTH - PAD,
        y(1.0),
        y(1.0)
    );
    let pts: Vec<String> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| format!("{:.1},{:.1}", x(i), y(r.raw / r.threshold))))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1" points="{}"/>"##,
        pts.join(" ")
    );
    for (i, r) in rows.iter().enumerate() {
        if let Some(r) = r.filter(|r| r.raw > r.threshold) {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="red"/>"#,
                x(i),
                y(r.raw / r.threshold)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_a_csv_entity_and_flags_a_late_spike() {
        let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/uniad.onnx");
        let mut d = UniadDetector::new(UniadOptions::new(model)).expect("model");
        let a: Vec<f64> = (0..400)
            .map(|t| 50.0 + 10.0 * (t as f64 / 24.0 * std::f64::consts::TAU).sin())
            .collect();
        let mut b: Vec<f64> = (0..400)
            .map(|t| 5.0 + ((t * 7919) % 13) as f64 * 0.1)
            .collect();
        b[350] = 40.0;
        let rows = score_rows(&mut d, &[&a, &b], &["a", "b"], 256, &Baseline::default());
        assert!(rows[..63].iter().all(Option::is_none));
        assert!(rows[63..].iter().all(Option::is_some));
        let spike = rows[350].expect("scored");
        assert!(spike.raw > spike.threshold, "spike {spike:?}");
        assert_eq!(spike.top, 1);
        let calm = rows[340].expect("scored");
        assert!(calm.raw < spike.raw / 10.0);
        let svg = plot_svg(&["a", "b"], &[&a, &b], None, &rows);
        assert!(svg.starts_with("<svg") && svg.contains("<circle"));
    }
}
