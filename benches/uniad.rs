//! Uni-AD inference speed, single thread, W = 64.
//!
//! Latency per call at batch 1 and throughput at batch 64 and 512, for N in {8, 38}:
//! the native forward pass (`native`: AVX2 + FMA kernels where the CPU has them;
//! `native_portable`: the portable kernels, `KPIWATCH_UNIAD_PORTABLE=1`), tract's
//! symbolic plan, and tract's plans concretised per shape bucket.
//!
//!     cargo bench --bench uniad
//!
//! `models/train/uniad/bench.py` runs this bench and times the same weights in
//! PyTorch eager and onnxruntime (single thread) in the same run, and prints the
//! ratios (see BENCHMARKS.md).

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpiwatch::detect::uniad::{PlanMode, UniadModel};
use rand::{rngs::SmallRng, Rng, SeedableRng};

fn bench(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/uniad.onnx");
    let mut rng = SmallRng::seed_from_u64(42);
    for n in [8usize, 38] {
        let mut group = c.benchmark_group(format!("uniad_n{n}"));
        for (name, mode) in [
            ("native", PlanMode::Native),
            ("native_portable", PlanMode::Native),
            ("tract_symbolic", PlanMode::Symbolic),
            ("tract_bucketed", PlanMode::Bucketed),
        ] {
            // Read once, at load (the bench is single-threaded here).
            if name == "native_portable" {
                std::env::set_var("KPIWATCH_UNIAD_PORTABLE", "1");
            }
            let model = match UniadModel::load(&path, mode) {
                Ok(m) => m,
                Err(e) => panic!("{e}"),
            };
            std::env::remove_var("KPIWATCH_UNIAD_PORTABLE");
            assert_eq!(
                model.plan_mode(),
                mode,
                "{name}: {:?}",
                model.native_fallback()
            );
            let w = model.window();
            for batch in [1usize, 64, 512] {
                let input: Vec<f32> = (0..batch * n * w)
                    .map(|_| rng.gen_range(-3.0..3.0))
                    .collect();
                // Warm the plan cache outside the measurement.
                let _ = model.infer(&input, batch, n);
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_with_input(BenchmarkId::new(name, batch), &input, |b, input| {
                    b.iter(|| model.infer(input, batch, n).map(|v| v.len()).unwrap_or(0))
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
