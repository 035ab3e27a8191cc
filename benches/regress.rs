//! DynamicRegress inference speed: one KPI pair with a cached baseline embedding, i.e.
//! encoding the current window (T steps) plus the head, at T = 300 and T = 60, at batch 1
//! and batched (32 pairs of equal T). Single thread. Each case runs on both engines of
//! `RegressModel` with the same inputs: `native` (the Rust LSTM of `model::lstm`, what
//! the agent uses) and `tract` (forced with `Engine::Tract`).
//!
//! The group `regress_pair_matched` times the model-free matched judge on one KPI pair
//! (both windows of T rows: the baseline's load curve, the ratios, the rank test), the
//! agent's default method, which every other method also runs for its effect size.
//!
//! `cargo bench --bench regress` (needs models/regress_{encoder,head}.onnx). Criterion's
//! "thrpt" line of the batched cases gives pairs per second; the PyTorch numbers of the
//! same weights come from `models/train/regress/bench_torch.py` (BENCHMARKS.md).

mod support;

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpiwatch::detect::regress::model::Engine;
use kpiwatch::detect::regress::{judge_matched, Kpi, KpiPair, RegressModel, Series};

fn sequence(batch: usize, len: usize) -> Vec<f32> {
    (0..batch * len)
        .flat_map(|i| {
            let t = (i % len) as f32 / len as f32;
            [t, (t * 7.0 + (i / len) as f32).sin()]
        })
        .collect()
}

/// A window of `len` rows: a load ramp of 2 to 14 users and a response time rising
/// with it, with a deterministic wiggle; `phase` shifts the wiggle.
fn window(len: usize, phase: usize) -> Series {
    let workload: Vec<f64> = (0..len)
        .map(|i| (2.0 + 12.0 * i as f64 / (len - 1) as f64).round())
        .collect();
    let kpi = workload
        .iter()
        .enumerate()
        .map(|(i, w)| 10.0 * (1.0 + w / 10.0) * (1.0 + 0.02 * ((i * 7 + phase) % 11) as f64 / 11.0))
        .collect();
    Series { workload, kpi }
}

fn bench_matched(c: &mut Criterion) {
    let mut group = c.benchmark_group("regress_pair_matched");
    let lens: &[usize] = if support::measuring() {
        &[300, 60]
    } else {
        &[60]
    };
    for &len in lens {
        let pair = KpiPair {
            kpi: Kpi::ResponseTime,
            baseline: window(len, 0),
            current: window(len, 5),
        };
        group.bench_function(format!("T{len}"), |b| {
            b.iter(|| judge_matched(&pair, 0.05, 0.2))
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut models = Vec::new();
    for engine in [Engine::Native, Engine::Tract] {
        match RegressModel::load_with(&dir, engine) {
            Ok(m) => models.push(m),
            Err(e) => {
                eprintln!("regress bench skipped: {e}");
                return;
            }
        }
    }
    let h = models[0].hidden();
    let mut group = c.benchmark_group("regress_pair_cached_baseline");
    let (lens, batches): (&[usize], &[usize]) = if support::measuring() {
        (&[300, 60], &[1, 32])
    } else {
        (&[60], &[1])
    };
    for &len in lens {
        for &batch in batches {
            let x = sequence(batch, len);
            let zb = vec![0.1f32; batch * h];
            group.throughput(Throughput::Elements(batch as u64));
            for model in &models {
                group.bench_with_input(
                    BenchmarkId::new(
                        format!("T{len}/{}", model.engine()),
                        format!("batch{batch}"),
                    ),
                    &x,
                    |b, x| {
                        b.iter(|| {
                            let zc = model.embed_batch(x, batch, len).expect("embed");
                            model.probability_batch(&zb, &zc, batch).expect("head")
                        })
                    },
                );
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = bench, bench_matched
}
criterion_main!(benches);
