//! Reproduces ADSketch's public numbers with kpiwatch's implementation.
//!
//! ```text
//! cargo build --release --example adsketch_repro
//! time target/release/examples/adsketch_repro yahoo        # Yahoo A1, reference protocol
//! target/release/examples/adsketch_repro nab [--m 15 --p 99.5]   # NAB online-adaptive run
//! ```
//!
//! Data: `$KPIWATCH_DATA` (default `../shared/datasets` relative to the repository root),
//! `yahoo_a1/` and `nab/` below it.
//!
//! **Yahoo A1, reference protocol** (`DESIGN.md`): files sorted lexicographically; the
//! series at position `i` uses the parameters `yahoo.real_<i>` of `adsketch_params.json`
//! (position, not file name); `T_n` = points `[5, 300)`, `T_a` = `[300, end)`; a flagged
//! subsequence starting at `j` marks points `j..j+m-1`; point-wise P/R/F1 per series,
//! then the mean. As the reference: a series without predictions scores 1.0 if it has
//! no anomaly in `T_a`, else 0; positions 28 and 54 score 1.0 when all three are 0.
//!
//! **NAB online-adaptive run**: per series, `T_n` = first 15% (NAB's probationary
//! period), `T_a` = next 35% (Algorithm 1, "offline"), online = last 50% (Algorithm 2
//! alone, then Algorithms 2+3). Points inside a `combined_windows.json` window are the
//! anomalies. Mean P/R/F1 over series, per phase.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use kpiwatch::dataset::read_csv;
use kpiwatch::detect::adsketch::eval::{score_series, Prf};
use kpiwatch::detect::adsketch::{discover, OfflineParams};

fn data_root() -> PathBuf {
    std::env::var_os("KPIWATCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<f64> {
        args.iter()
            .position(|a| a == name)
            .and_then(|k| args.get(k + 1))
            .and_then(|v| v.parse().ok())
    };
    let result = match args.first().map(String::as_str) {
        Some("yahoo") => yahoo(
            &data_root().join("yahoo_a1"),
            args.iter().any(|a| a == "-q"),
        ),
        Some("nab") => nab(
            &data_root().join("nab"),
            flag("--m").map_or(15, |v| v as usize),
            flag("--p").unwrap_or(99.5),
        ),
        _ => Err("usage: adsketch_repro yahoo [-q] | nab [--m M] [--p P]".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adsketch_repro: {e}");
            ExitCode::FAILURE
        }
    }
}

struct YahooSeries {
    name: String,
    values: Vec<f64>,
    labels: Vec<bool>,
    m: usize,
    p: f64,
}

fn yahoo(dir: &Path, quiet: bool) -> Result<(), String> {
    let start = Instant::now();
    let params_path = dir.join("adsketch_params.json");
    let text = std::fs::read_to_string(&params_path).map_err(|e| {
        format!(
            "{}: {e} (set KPIWATCH_DATA to the directory holding yahoo_a1/)",
            params_path.display()
        )
    })?;
    let params: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    files.sort();
    let mut series = Vec::with_capacity(files.len());
    for (i, name) in files.iter().enumerate() {
        let t = read_csv(&dir.join(name)).map_err(|e| e.to_string())?;
        let values = t.require("value").map_err(|e| e.to_string())?.to_vec();
        let labels = t
            .require("is_anomaly")
            .map_err(|e| e.to_string())?
            .iter()
            .map(|&v| v > 0.5)
            .collect();
        let p = &params["yahoo"][format!("real_{i}")];
        let (m, pct) = match (p["m"].as_u64(), p["p"].as_f64()) {
            (Some(m), Some(pct)) => (m as usize, pct),
            _ => return Err(format!("{}: no parameters real_{i}", params_path.display())),
        };
        series.push(YahooSeries {
            name: name.clone(),
            values,
            labels,
            m,
            p: pct,
        });
    }
    // Series are independent: one per core, interleaved.
    let results = parallel_map(&series, |i, s| -> Result<Prf, String> {
        if s.values.len() <= 300 {
            return Err(format!("{}: fewer than 300 points", s.name));
        }
        let r = discover(
            &s.values[5..300],
            &s.values[300..],
            &OfflineParams::new(s.m, s.p),
        )
        .map_err(|e| format!("{}: {e}", s.name))?;
        let mut prf = score_series(&r.anomalous_starts, s.m, &s.labels[300..]);
        if (i == 28 || i == 54) && prf.precision + prf.recall + prf.f1 == 0.0 {
            prf = Prf {
                precision: 1.0,
                recall: 1.0,
                f1: 1.0,
            };
        }
        Ok(prf)
    });
    let mut all = Vec::with_capacity(results.len());
    for (i, (s, r)) in series.iter().zip(results).enumerate() {
        let r = r?;
        if !quiet {
            println!(
                "{i}\t{}\tm={}\tp={}\tP={:.4}\tR={:.4}\tF1={:.4}",
                s.name, s.m, s.p, r.precision, r.recall, r.f1
            );
        }
        all.push(r);
    }
    let mean = Prf::mean(&all);
    println!(
        "yahoo_a1 mean over {} series: P={:.4} R={:.4} F1={:.4} ({:.3} s in-process)",
        all.len(),
        mean.precision,
        mean.recall,
        mean.f1,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Maps `f` over `items` on two threads (item `k` on thread `k % 2`), keeping order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (t..items.len())
                        .step_by(threads)
                        .map(|k| (k, f(k, &items[k])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            if let Ok(part) = h.join() {
                for (k, r) in part {
                    out[k] = Some(r);
                }
            }
        }
    });
    out.into_iter()
        .map(|r| r.expect("every item is mapped"))
        .collect()
}

struct NabResult {
    offline: Prf,
    online: Prf,
    adaptive: Prf,
    patterns: (usize, usize),
}

fn nab(dir: &Path, m: usize, p: f64) -> Result<(), String> {
    let start = Instant::now();
    let windows_path = dir.join("combined_windows.json");
    let text = std::fs::read_to_string(&windows_path).map_err(|e| {
        format!(
            "{}: {e} (set KPIWATCH_DATA to the directory holding nab/)",
            windows_path.display()
        )
    })?;
    let windows: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut keys: Vec<String> = windows
        .as_object()
        .ok_or("combined_windows.json is not an object")?
        .keys()
        .filter(|k| dir.join("data").join(k).exists())
        .cloned()
        .collect();
    keys.sort();
    let results = parallel_map(&keys, |_, key| -> Result<NabResult, String> {
        let t = read_csv(&dir.join("data").join(key)).map_err(|e| e.to_string())?;
        let ts = t.require("timestamp").map_err(|e| e.to_string())?;
        let values = t.require("value").map_err(|e| e.to_string())?;
        let spans: Vec<(f64, f64)> = windows[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| Some((parse_ts(w[0].as_str()?)?, parse_ts(w[1].as_str()?)?)))
                    .collect()
            })
            .unwrap_or_default();
        let truth: Vec<bool> = ts
            .iter()
            .map(|&x| spans.iter().any(|&(a, b)| x >= a && x <= b))
            .collect();
        let n = values.len();
        let (n_n, n_a) = (n * 15 / 100, n * 35 / 100);
        let (tn, ta, on) = (
            &values[..n_n],
            &values[n_n..n_n + n_a],
            &values[n_n + n_a..],
        );
        let r = discover(tn, ta, &OfflineParams::new(m, p)).map_err(|e| format!("{key}: {e}"))?;
        let offline = score_series(&r.anomalous_starts, m, &truth[n_n..n_n + n_a]);
        let scaled = r.set.scaler.transform(on);
        let starts = on.len().saturating_sub(m - 1);
        let frozen: Vec<usize> = (0..starts)
            .filter(|&s| r.set.detect(&scaled[s..s + m]).is_some_and(|x| x.anomalous))
            .collect();
        let mut set = r.set.clone();
        let adaptive: Vec<usize> = (0..starts)
            .filter(|&s| {
                set.adapt(&scaled[s..s + m], None)
                    .is_some_and(|x| x.anomalous)
            })
            .collect();
        let truth_on = &truth[n_n + n_a..];
        Ok(NabResult {
            offline,
            online: score_series(&frozen, m, truth_on),
            adaptive: score_series(&adaptive, m, truth_on),
            patterns: set.counts(),
        })
    });
    let mut rows = Vec::new();
    for (key, r) in keys.iter().zip(results) {
        let r = r?;
        println!(
            "{key}\toffline F1={:.4}\tonline F1={:.4}\tadaptive F1={:.4}\tpatterns normal={} abnormal={}",
            r.offline.f1, r.online.f1, r.adaptive.f1, r.patterns.0, r.patterns.1
        );
        rows.push(r);
    }
    let mean = |f: fn(&NabResult) -> Prf| Prf::mean(&rows.iter().map(f).collect::<Vec<_>>());
    for (name, v) in [
        ("offline (T_a)", mean(|r| r.offline)),
        ("online, no adaptation", mean(|r| r.online)),
        ("online, adaptive", mean(|r| r.adaptive)),
    ] {
        println!(
            "nab mean over {} series, {name}: P={:.4} R={:.4} F1={:.4}",
            rows.len(),
            v.precision,
            v.recall,
            v.f1
        );
    }
    println!(
        "({:.3} s in-process, m={m}, p={p})",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// NAB window bounds (`2014-04-10 07:15:00.000000`, UTC) to Unix seconds.
fn parse_ts(s: &str) -> Option<f64> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp() as f64)
}
