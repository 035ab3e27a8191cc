//! Uni-AD inference speed, single thread, W = 64.
//!
//! Latency per call at batch 1 and throughput at batch 64 and 512, for N in {8, 38}:
//! the native forward pass (`native`: AVX2 + FMA kernels where the CPU has them;
//! `native_portable`: the portable kernels, `KPIWATCH_UNIAD_PORTABLE=1`), tract's
//! symbolic plan, and tract's plans concretised per shape bucket.
//!
//! `detector_n8`: one agent cycle of [`UniadDetector::score`] over 64 entities of 8
//! metrics (history 256 points, the default 4 × W), the views advancing one step per
//! cycle, with the per-metric error scales (`scaled`, refitted from 64 history windows
//! every 64 new points) and without (`plain`): what the scaling costs per cycle.
//!
//!     cargo bench --bench uniad
//!
//! `models/train/uniad/bench.py` runs this bench and times the same weights in
//! PyTorch eager and onnxruntime (single thread) in the same run, and prints the
//! ratios (see BENCHMARKS.md).

mod support;

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kpiwatch::detect::uniad::{PlanMode, UniadDetector, UniadModel, UniadOptions};
use kpiwatch::detect::{Detector, EntityView, RobustStats, Sample};
use rand::{rngs::SmallRng, Rng, SeedableRng};

// `KPIWATCH_UNIAD_PORTABLE` is read once, at load, and this bench is single-threaded
// there: setting it around one load is safe here and nowhere in the agent.
#[allow(clippy::disallowed_methods)]
fn bench(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/uniad.onnx");
    let mut rng = SmallRng::seed_from_u64(42);
    let (ns, batches): (&[usize], &[usize]) = if support::measuring() {
        (&[8, 38], &[1, 64, 512])
    } else {
        (&[8], &[1])
    };
    for &n in ns {
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
            for &batch in batches {
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

fn bench_detector(c: &mut Criterion) {
    // 64 entities when measuring; the CI smoke run (debug build) scores 2.
    let entities: usize = if support::measuring() { 64 } else { 2 };
    const N: usize = 8;
    const HISTORY: usize = 256;
    const SPAN: usize = 4096;
    const STEP_MS: i64 = 15_000;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/uniad.onnx");
    let mut rng = SmallRng::seed_from_u64(7);
    // Per entity and metric, SPAN + HISTORY points of a noisy sine.
    let rows: Vec<Vec<Vec<Sample>>> = (0..entities)
        .map(|_| {
            (0..N)
                .map(|m| {
                    (0..SPAN + HISTORY)
                        .map(|t| {
                            ((t as f64 / 30.0 + m as f64).sin() + rng.gen_range(-0.3..0.3))
                                as Sample
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut scratch = Vec::new();
    let stats: Vec<Vec<RobustStats>> = rows
        .iter()
        .map(|e| {
            e.iter()
                .map(|r| {
                    RobustStats::fit(&r[..HISTORY], &mut scratch).unwrap_or(RobustStats::IDENTITY)
                })
                .collect()
        })
        .collect();
    let keys: Vec<String> = (0..entities).map(|i| format!("e{i}")).collect();
    let names: Vec<String> = (0..N).map(|m| format!("m{m}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut group = c.benchmark_group("detector_n8");
    group.throughput(Throughput::Elements(entities as u64));
    for scale_errors in [true, false] {
        let mut options = UniadOptions::new(&path);
        options.scale_errors = scale_errors;
        let mut detector = match UniadDetector::new(options) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let mut cycle: usize = 0;
        let name = if scale_errors { "scaled" } else { "plain" };
        group.bench_function(BenchmarkId::new(name, entities), |b| {
            b.iter(|| {
                // The data repeats every SPAN cycles; time only moves forward.
                let at = cycle % SPAN;
                cycle += 1;
                let slices: Vec<Vec<&[Sample]>> = rows
                    .iter()
                    .map(|e| e.iter().map(|r| &r[at..at + HISTORY]).collect())
                    .collect();
                let views: Vec<EntityView<'_>> = (0..entities)
                    .map(|i| EntityView {
                        key: &keys[i],
                        metric_names: &names,
                        rows: &slices[i],
                        stats: &stats[i],
                        end_ms: (cycle + HISTORY) as i64 * STEP_MS,
                        step_ms: STEP_MS,
                        capacity: usize::MAX,
                        expectations: &[],
                        gates: &[],
                    })
                    .collect();
                detector.score(&views).iter().filter(|r| r.is_ok()).count()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench, bench_detector
}
criterion_main!(benches);
