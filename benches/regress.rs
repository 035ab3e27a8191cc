//! DynamicRegress inference speed: one KPI pair with a cached baseline embedding, i.e.
//! encoding the current window (T steps) plus the head, at T = 300 and T = 60, at batch 1
//! and batched (32 pairs of equal T). Single thread. Each case runs on both engines of
//! `RegressModel` with the same inputs: `native` (the Rust LSTM of `model::lstm`, what
//! the agent uses) and `tract` (forced with `Engine::Tract`).
//!
//! `cargo bench --bench regress` (needs models/regress_{encoder,head}.onnx). Criterion's
//! "thrpt" line of the batched cases gives pairs per second; the PyTorch numbers of the
//! same weights come from `models/train/regress/bench_torch.py` (BENCHMARKS.md).

mod support;

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpiwatch::detect::regress::model::Engine;
use kpiwatch::detect::regress::RegressModel;

fn sequence(batch: usize, len: usize) -> Vec<f32> {
    (0..batch * len)
        .flat_map(|i| {
            let t = (i % len) as f32 / len as f32;
            [t, (t * 7.0 + (i / len) as f32).sin()]
        })
        .collect()
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
    targets = bench
}
criterion_main!(benches);
