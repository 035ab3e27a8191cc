//! `kpiwatch detect zscore`: the robust z-score detector over a CSV file, offline.
//!
//! For each row t it z-scores every metric column with the robust statistics of the
//! `--history` rows before t (the agent's normaliser, refitted as in the agent), compares
//! the largest |z| with the threshold the agent would use for that history (calibrated
//! per series unless `--fixed-threshold`) and prints `timestamp,score,flag,top_metric` on
//! stdout; with a `label` (or
//! `is_anomaly`) column it prints precision, recall and F1 on stderr, and the false flags
//! per 1,000 normal rows (what a user alerting on the score would be paged for).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::detect::zscore::{ZscoreDetector, ZscoreOptions};

use super::offline::{load_input, replay, top_metric, Baseline, BaselineArgs, Input};
use super::{EXIT_CONFIG, EXIT_FAILURE};

/// Arguments of `detect zscore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CSV with a `timestamp` column and one column per metric (+ optional `label`).
    #[arg(long)]
    input: PathBuf,
    /// The lowest |z| at which the score reaches 1.0 (each row's bar is raised to
    /// the |z| its history exceeds with probability --risk).
    #[arg(long, default_value_t = ZscoreOptions::default().threshold)]
    threshold: f64,
    /// Tail probability per point of the calibrated threshold.
    #[arg(long, default_value_t = ZscoreOptions::default().risk)]
    risk: f64,
    /// Compare every |z| with --threshold alone, without calibrating it per series.
    #[arg(long)]
    fixed_threshold: bool,
    /// Rows of history behind each score (the agent's `history`).
    #[arg(long, default_value_t = 256)]
    history: usize,
    #[command(flatten)]
    baseline: BaselineArgs,
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
    let options = ZscoreOptions {
        threshold: args.threshold,
        risk: args.risk,
        calibrate: !args.fixed_threshold,
        ..ZscoreOptions::default()
    };
    if let Err(e) = options.validate() {
        eprintln!("kpiwatch: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let baseline = match args.baseline.resolve(&ts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("kpiwatch: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let names: Vec<&str> = metric_idx
        .iter()
        .map(|&i| table.names[i].as_str())
        .collect();
    let scores = score_rows(
        &table.columns,
        &metric_idx,
        &names,
        options,
        args.history.max(2),
        &baseline,
    );
    let mut out = String::from("timestamp,score,flag,top_metric\n");
    for (t, s) in ts.iter().zip(&scores) {
        match s {
            Some((score, top)) => out.push_str(&format!(
                "{t},{score},{},{}\n",
                u8::from(*score > 1.0),
                names[*top]
            )),
            None => out.push_str(&format!("{t},NaN,0,\n")),
        }
    }
    print!("{out}");
    if scores.is_empty() {
        // Found by tests/it/fuzz/csv.rs: a header without rows exited 1 without a word.
        eprintln!(
            "kpiwatch: {}: no data rows after the header, nothing to score",
            args.input.display()
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Some(labels) = labels {
        let flags: Vec<bool> = scores
            .iter()
            .map(|s| s.is_some_and(|(v, _)| v > 1.0))
            .collect();
        let (p, r, f) = precision_recall_f1(&flags, &labels);
        let truth: Vec<bool> = labels.iter().map(|&l| l > 0.5).collect();
        let noise = crate::eval::false_flags_per_1000(&truth, &flags);
        eprintln!(
            "precision {p:.3} recall {r:.3} f1 {f:.3}, {noise:.1} false flags per 1,000 normal rows"
        );
    }
    ExitCode::SUCCESS
}

/// Scores every row with the history before it; `None` while warming up.
fn score_rows(
    columns: &[Vec<f64>],
    idx: &[usize],
    names: &[&str],
    options: ZscoreOptions,
    history: usize,
    baseline: &Baseline,
) -> Vec<Option<(f64, usize)>> {
    let mut detector = ZscoreDetector::new(options);
    let cols: Vec<&[f64]> = idx.iter().map(|&c| columns[c].as_slice()).collect();
    replay(&mut detector, &cols, names, history, baseline)
        .into_iter()
        .map(|s| s.map(|s| (s.anomaly_score, top_metric(&s))))
        .collect()
}

/// Point-wise precision, recall and F1 (labels > 0.5 are positives).
pub(crate) fn precision_recall_f1(flags: &[bool], labels: &[f64]) -> (f64, f64, f64) {
    let truth: Vec<bool> = labels.iter().map(|&l| l > 0.5).collect();
    let r = crate::eval::prf(&truth, flags);
    (r.precision, r.recall, r.f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_a_spike_and_names_its_metric() {
        let calm: Vec<f64> = (0..100).map(|i| (i % 7) as f64).collect();
        let mut spiky = calm.clone();
        spiky[80] = 500.0;
        let cols = vec![calm, spiky];
        let scores = score_rows(
            &cols,
            &[0, 1],
            &["a", "b"],
            ZscoreOptions::default(),
            64,
            &Baseline::default(),
        );
        assert!(scores[..16].iter().all(Option::is_none), "warm-up");
        let (s, top) = scores[80].unwrap();
        assert!(s > 1.0);
        assert_eq!(top, 1);
        assert!(scores[79].unwrap().0 < 1.0);
    }

    #[test]
    fn prf_counts() {
        let (p, r, f) = precision_recall_f1(&[true, true, false, false], &[1.0, 0.0, 1.0, 0.0]);
        assert_eq!((p, r, f), (0.5, 0.5, 0.5));
        assert_eq!(precision_recall_f1(&[false], &[0.0]), (0.0, 0.0, 0.0));
    }
}
