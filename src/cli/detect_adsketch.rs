//! `kpiwatch detect adsketch`: ADSketch offline, for reproduction and for tuning `m` and
//! `p` on one's own data.
//!
//! ```text
//! kpiwatch detect adsketch --train normal.csv --test recent.csv [--online later.csv]
//!     [--adaptive] --m 15 --p 99.5 [--out result.csv] [--plot result.svg]
//! ```
//!
//! Inputs are CSV files with a `value` column (and usually `timestamp`); a `label` or
//! `is_anomaly` column, if present, is used only for scoring. `--train` is `T_n` (assumed
//! normal), `--test` is `T_a` (Algorithm 1), `--online` is matched afterwards
//! (Algorithm 2, plus Algorithm 3 with `--adaptive`).
//!
//! Output (`--out`, else stdout): `timestamp,value,anomaly,score,pattern` for every row
//! of `--test` then `--online`. `anomaly` is 1 for every point covered by a subsequence
//! judged anomalous (the paper's evaluation). `score` (1.0 = threshold, as the agent
//! exports it) and `pattern` (the id of the subsequence's pattern: its cluster offline,
//! its nearest pattern online) belong to the subsequence that ends at the row; they are
//! empty for the first `m − 1` rows of each part. With labels, precision, recall and F1
//! go to stderr. `--plot` writes an SVG of the series with flagged ranges and their
//! pattern ids.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::dataset::read_csv;
use crate::detect::adsketch::eval::{point_mask, prf, Prf};
use crate::detect::adsketch::{discover, OfflineParams};

use super::{EXIT_CONFIG, EXIT_FAILURE};

/// Arguments of `detect adsketch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CSV of `T_n`, the history assumed normal (`value` column).
    #[arg(long)]
    train: PathBuf,
    /// CSV of `T_a`, searched for anomalies by Algorithm 1.
    #[arg(long)]
    test: PathBuf,
    /// CSV matched online after the offline phase (Algorithm 2).
    #[arg(long)]
    online: Option<PathBuf>,
    /// Learn new patterns while matching `--online` (Algorithm 3).
    #[arg(long)]
    adaptive: bool,
    /// Subsequence length.
    #[arg(long)]
    m: usize,
    /// Percentile of `T_a` distances above which a subsequence is a candidate.
    #[arg(long)]
    p: f64,
    /// §5.3 guard: percentile of `T_n` distances above which `T_n` subsequences are
    /// dropped (100 = clean `T_n`).
    #[arg(long, default_value_t = 100.0)]
    noise_p: f64,
    /// Output CSV (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// SVG plot of the series, flagged ranges and pattern ids.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// One input part (test or online).
struct Part {
    timestamps: Vec<f64>,
    values: Vec<f64>,
    labels: Option<Vec<bool>>,
}

/// What the run produced for one part.
struct Judged {
    anomalous_starts: Vec<usize>,
    /// Per subsequence start: (score, pattern id).
    per_start: Vec<(f64, u64)>,
}

fn load(path: &Path) -> Result<Part, String> {
    let t = read_csv(path).map_err(|e| e.to_string())?;
    let values = t.require("value").map_err(|e| e.to_string())?.to_vec();
    let timestamps = t.column("timestamp").map_or_else(
        || (0..values.len()).map(|k| k as f64).collect(),
        <[f64]>::to_vec,
    );
    let labels = t
        .first_of(&["label", "is_anomaly"])
        .map(|l| l.iter().map(|&v| v > 0.5).collect());
    Ok(Part {
        timestamps,
        values,
        labels,
    })
}

/// Runs the command.
pub(super) fn run(args: &Args) -> ExitCode {
    match execute(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kpiwatch: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn execute(args: &Args) -> Result<ExitCode, String> {
    let train = load(&args.train)?;
    let test = load(&args.test)?;
    let online = args.online.as_deref().map(load).transpose()?;
    let mut params = OfflineParams::new(args.m, args.p);
    params.noise_p = args.noise_p;
    let offline = discover(&train.values, &test.values, &params).map_err(|e| e.to_string())?;
    let m = args.m;

    // Offline part: verdicts from the clusters; score against the learnt patterns.
    let scaled = offline.set.scaler.transform(&test.values);
    let per_start: Vec<(f64, u64)> = (0..offline.test_pattern.len())
        .map(|s| {
            let score = offline
                .set
                .detect(&scaled[s..s + m])
                .map_or(f64::NAN, |x| x.score());
            (score, offline.set.patterns()[offline.test_pattern[s]].id)
        })
        .collect();
    let mut parts = vec![(
        "test",
        &test,
        Judged {
            anomalous_starts: offline.anomalous_starts.clone(),
            per_start,
        },
    )];

    if let Some(on) = &online {
        let mut set = offline.set.clone();
        let scaled = set.scaler.transform(&on.values);
        let mut judged = Judged {
            anomalous_starts: Vec::new(),
            per_start: Vec::new(),
        };
        for s in 0..on.values.len().saturating_sub(m - 1) {
            let t = &scaled[s..s + m];
            let found = if args.adaptive {
                set.adapt(t, None)
            } else {
                set.detect(t)
            };
            let Some(found) = found else {
                judged.per_start.push((f64::NAN, u64::MAX));
                continue;
            };
            if found.anomalous {
                judged.anomalous_starts.push(s);
            }
            judged.per_start.push((found.score(), found.id));
        }
        let (n, a) = set.counts();
        eprintln!(
            "online: {} subsequences, patterns now {n} normal / {a} abnormal",
            judged.per_start.len()
        );
        parts.push(("online", on, judged));
    }

    let (n, a) = offline.set.counts();
    eprintln!(
        "offline: {} anomaly candidates, {n} normal / {a} abnormal patterns, {} subsequences flagged",
        offline.candidates,
        offline.anomalous_starts.len()
    );
    let mut csv = String::from("timestamp,value,anomaly,score,pattern\n");
    for (name, part, judged) in &parts {
        let mask = point_mask(&judged.anomalous_starts, m, part.values.len());
        for (k, (&ts, &v)) in part.timestamps.iter().zip(&part.values).enumerate() {
            let _ = write!(csv, "{ts},{v},{}", u8::from(mask[k]));
            match k.checked_sub(m - 1).and_then(|s| judged.per_start.get(s)) {
                Some(&(score, id)) if id != u64::MAX => {
                    let _ = writeln!(csv, ",{score},{id}");
                }
                _ => csv.push_str(",,\n"),
            }
        }
        if let Some(labels) = &part.labels {
            let r: Prf = prf(labels, &mask);
            eprintln!(
                "{name}: precision {:.3} recall {:.3} f1 {:.3}",
                r.precision, r.recall, r.f1
            );
        }
    }
    match &args.out {
        Some(path) => std::fs::write(path, &csv).map_err(|e| format!("{}: {e}", path.display()))?,
        None => print!("{csv}"),
    }
    if let Some(path) = &args.plot {
        let svg = plot(&parts, m);
        std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if parts.iter().all(|(_, p, _)| p.values.len() < m) {
        return Ok(ExitCode::from(EXIT_FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

/// SVG: the series (test then online), flagged ranges in red, pattern ids above them.
fn plot(parts: &[(&str, &Part, Judged)], m: usize) -> String {
    let values: Vec<f64> = parts
        .iter()
        .flat_map(|(_, p, _)| p.values.iter().copied())
        .collect();
    let (w, h, pad) = (1200.0f64, 320.0f64, 24.0f64);
    let (lo, hi) = crate::normalize::finite_range(values.iter().copied()).unwrap_or((0.0, 1.0));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let n = values.len().max(2) as f64 - 1.0;
    let x = |k: usize| pad + k as f64 / n * (w - 2.0 * pad);
    let y = |v: f64| h - pad - (v - lo) / span * (h - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let line = |from: usize, to: usize, color: &str, width: f64| -> String {
        let pts: Vec<String> = (from..to)
            .filter(|&k| values[k].is_finite())
            .map(|k| format!("{:.1},{:.1}", x(k), y(values[k])))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\" points=\"{}\"/>\n",
            pts.join(" ")
        )
    };
    svg.push_str(&line(0, values.len(), "#4477aa", 1.0));
    let mut offset = 0;
    for (name, part, judged) in parts {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"14\" font-size=\"11\" font-family=\"sans-serif\">{name}</text>",
            x(offset)
        );
        let mask = point_mask(&judged.anomalous_starts, m, part.values.len());
        let mut k = 0;
        while k < mask.len() {
            if !mask[k] {
                k += 1;
                continue;
            }
            let start = k;
            while k < mask.len() && mask[k] {
                k += 1;
            }
            svg.push_str(&line(offset + start, offset + k, "#cc3311", 2.0));
            if let Some(&(_, id)) = judged.per_start.get(start) {
                let _ = writeln!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#cc3311\" font-family=\"sans-serif\">#{id}</text>",
                    x(offset + start),
                    (y(values[offset + start]) - 6.0).max(24.0)
                );
            }
        }
        offset += part.values.len();
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, values: &[f64], labels: Option<&[u8]>) -> PathBuf {
        let mut s = String::from(if labels.is_some() {
            "timestamp,value,is_anomaly\n"
        } else {
            "timestamp,value\n"
        });
        for (k, v) in values.iter().enumerate() {
            match labels {
                Some(l) => s.push_str(&format!("{k},{v},{}\n", l[k])),
                None => s.push_str(&format!("{k},{v}\n")),
            }
        }
        let p = dir.join(name);
        std::fs::write(&p, s).unwrap();
        p
    }

    #[test]
    fn flags_a_spike_writes_csv_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let wave = |k: usize| ((k % 20) as f64 / 20.0 * std::f64::consts::TAU).sin();
        let train: Vec<f64> = (0..400).map(wave).collect();
        let mut test: Vec<f64> = (400..800).map(wave).collect();
        test[200] += 20.0;
        let mut labels = vec![0u8; 400];
        labels[200] = 1;
        let mut online: Vec<f64> = (800..1000).map(wave).collect();
        online[100] += 20.0;
        let args = Args {
            train: write(dir.path(), "train.csv", &train, None),
            test: write(dir.path(), "test.csv", &test, Some(&labels)),
            online: Some(write(dir.path(), "online.csv", &online, None)),
            adaptive: true,
            m: 5,
            p: 99.0,
            noise_p: 100.0,
            out: Some(dir.path().join("out.csv")),
            plot: Some(dir.path().join("plot.svg")),
        };
        assert_eq!(execute(&args).unwrap(), ExitCode::SUCCESS);
        let out = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        assert_eq!(
            out.lines().next(),
            Some("timestamp,value,anomaly,score,pattern")
        );
        assert_eq!(rows.len(), 600);
        assert_eq!(rows[200][2], "1", "the spike is flagged");
        assert_eq!(rows[10][2], "0");
        assert_eq!(rows[0][3], "", "no subsequence ends at the first row");
        assert!(rows[10][3].parse::<f64>().unwrap() < 1.0);
        // The flagged subsequence covers the spike and its score crosses the threshold.
        let flagged: Vec<usize> = (0..400).filter(|&k| rows[k][2] == "1").collect();
        assert!(flagged.contains(&200));
        let last = *flagged.last().unwrap();
        assert!(rows[last][3].parse::<f64>().unwrap() > 1.0);
        // The online spike (row 400 + 100) is flagged and scored too.
        assert!((500..505).any(|k| rows[k][2] == "1"));
        assert!((500..505).any(|k| rows[k][3].parse::<f64>().unwrap() > 1.0));
        let svg = std::fs::read_to_string(dir.path().join("plot.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("#cc3311") && svg.contains("polyline"));
    }

    #[test]
    fn missing_value_column_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "timestamp,v\n1,2\n").unwrap();
        let args = Args {
            train: p.clone(),
            test: p,
            online: None,
            adaptive: false,
            m: 3,
            p: 99.0,
            noise_p: 100.0,
            out: None,
            plot: None,
        };
        let e = execute(&args).err().unwrap();
        assert!(e.contains("value"), "{e}");
    }
}
