//! ADSketch online step: Algorithm 2 (nearest pattern) and Algorithm 2+3 (with the
//! adaptive update), m = 15 against 200 patterns.
//!
//! `cargo bench --bench adsketch`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kpiwatch::detect::adsketch::{PatternSet, Scaler};

const M: usize = 15;
const PATTERNS: usize = 200;

fn series() -> Vec<f64> {
    (0..4096)
        .map(|k| 0.5 + 0.4 * (k as f64 * 0.05).sin() + 0.05 * (k as f64 * 0.31).sin())
        .collect()
}

/// 200 patterns taken from the series itself (so steps join patterns, the common
/// path), every tenth abnormal.
fn patterns(series: &[f64]) -> PatternSet {
    let clusters = (0..PATTERNS)
        .map(|k| {
            // Offsets 0..200 cover every phase of the series: each step lies within the
            // largest radius of some pattern and joins it (no growth), and the patterns
            // are alike, so early abandoning prunes little (a conservative case).
            (
                series[k..k + M].to_vec(),
                10 + (k as u64 % 7),
                0.5,
                k % 10 == 0,
            )
        })
        .collect();
    PatternSet::from_clusters(M, Scaler::fit(&[0.0, 1.0]), clusters)
}

fn online_step(c: &mut Criterion) {
    let series = series();
    let set = patterns(&series);
    let mut k = 0usize;
    c.bench_function("adsketch_detect_m15_200_patterns", |b| {
        b.iter(|| {
            k = (k + 1) % (series.len() - M);
            black_box(set.detect(black_box(&series[k..k + M])))
        })
    });
    let mut adaptive = set.clone();
    let mut k = 0usize;
    c.bench_function("adsketch_adapt_m15_200_patterns", |b| {
        b.iter(|| {
            k = (k + 1) % (series.len() - M);
            // Keep the set at 200 patterns so every iteration measures the same work.
            if adaptive.patterns().len() > PATTERNS {
                adaptive = set.clone();
            }
            black_box(adaptive.adapt(black_box(&series[k..k + M]), Some(k as i64)))
        })
    });
}

criterion_group!(benches, online_step);
criterion_main!(benches);
