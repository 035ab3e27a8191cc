//! CPU time of one ADSketch online step (m = 15, 200 patterns), measured from the
//! thread's own CPU clock (`/proc/thread-self/stat`, Linux) rather than wall time, so a
//! busy shared machine inflates it less than it inflates `cargo bench --bench adsketch`.
//! Same patterns and series as the criterion bench.
//!
//! `cargo run --release --example adsketch_step_cpu`

use std::hint::black_box;

use kpiwatch::detect::adsketch::{PatternSet, Scaler};

const M: usize = 15;
const PATTERNS: usize = 200;
const STEPS: usize = 3_000_000;

/// User + system CPU seconds of this thread (clock ticks of 10 ms).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    let series: Vec<f64> = (0..4096)
        .map(|k| 0.5 + 0.4 * (k as f64 * 0.05).sin() + 0.05 * (k as f64 * 0.31).sin())
        .collect();
    let clusters = (0..PATTERNS)
        .map(|k| {
            (
                series[k..k + M].to_vec(),
                10 + (k as u64 % 7),
                0.5,
                k % 10 == 0,
            )
        })
        .collect();
    let set = PatternSet::from_clusters(M, Scaler::fit(&[0.0, 1.0]), clusters);
    for adaptive in [false, true] {
        let mut s = set.clone();
        let (Some(cpu0), wall0) = (thread_cpu_seconds(), std::time::Instant::now()) else {
            eprintln!("adsketch_step_cpu: /proc/thread-self/stat is unavailable");
            return;
        };
        for i in 0..STEPS {
            let k = i % (series.len() - M);
            let t = black_box(&series[k..k + M]);
            if adaptive {
                black_box(s.adapt(t, Some(i as i64)));
            } else {
                black_box(s.detect(t));
            }
        }
        let cpu = thread_cpu_seconds().unwrap_or(cpu0) - cpu0;
        println!(
            "{}: {:.3} µs CPU, {:.3} µs wall per step ({} patterns after)",
            if adaptive {
                "algorithms 2+3"
            } else {
                "algorithm 2"
            },
            cpu / STEPS as f64 * 1e6,
            wall0.elapsed().as_secs_f64() / STEPS as f64 * 1e6,
            s.patterns().len()
        );
    }
}
