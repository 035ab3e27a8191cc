//! Tests of the shipped model (`models/uniad.onnx`) through tract and the native
//! forward pass, and of the detector.
//!
//! The golden vectors (`models/golden/uniad_golden.json`) come from PyTorch
//! (`models/train/uniad/export.py`), checked there against onnxruntime.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Deserialize;

use super::native::NativeModel;
use super::*;
use crate::detect::onnx_graph::GraphError;
use crate::detect::{max_abs_diff, DetectError, Detector, EntityView, RobustStats, Sample, Scores};
use crate::series::samples;

const TOLERANCE: f32 = 1e-4;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_path() -> PathBuf {
    repo().join("models/uniad.onnx")
}

fn load(mode: PlanMode) -> UniadModel {
    UniadModel::load(&model_path(), mode).expect("shipped model loads")
}

#[derive(Deserialize)]
struct Golden {
    w: usize,
    tolerance: f32,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    n: usize,
    batch: usize,
    input: Vec<f32>,
    output: Vec<f32>,
    score: Vec<f64>,
}

fn golden() -> Golden {
    let path = repo().join("models/golden/uniad_golden.json");
    let text = std::fs::read_to_string(&path).expect("golden file exists");
    serde_json::from_str(&text).expect("golden file parses")
}

#[test]
fn tract_reproduces_golden_vectors_in_both_plan_modes() {
    let g = golden();
    assert!(g.tolerance <= TOLERANCE);
    let ns: Vec<usize> = g.cases.iter().map(|c| c.n).collect();
    assert_eq!(ns, [1, 3, 8, 38]);
    for mode in [PlanMode::Symbolic, PlanMode::Bucketed] {
        let model = load(mode);
        assert_eq!(model.window(), g.w);
        for case in &g.cases {
            let got = model
                .infer(&case.input, case.batch, case.n)
                .expect("inference");
            let err = max_abs_diff(&got, &case.output);
            assert!(
                err <= TOLERANCE,
                "{mode:?} n={}: max abs error {err}",
                case.n
            );
            // Eq. 7 from tract's output matches PyTorch's score.
            for b in 0..case.batch {
                let s: f64 = (0..case.n)
                    .map(|i| {
                        let at = (b * case.n + i) * g.w + g.w - 1;
                        let d = f64::from(case.input[at] - got[at]);
                        d * d
                    })
                    .sum::<f64>()
                    / case.n as f64;
                assert!(
                    (s - case.score[b]).abs() <= 1e-3 * case.score[b].max(1.0),
                    "score {s} vs {}",
                    case.score[b]
                );
            }
        }
    }
}

#[test]
fn permuting_metrics_permutes_the_reconstruction() {
    for mode in [PlanMode::Bucketed, PlanMode::Native] {
        permutation_check(&load(mode));
    }
}

fn permutation_check(model: &UniadModel) {
    let g = golden();
    let case = g.cases.iter().find(|c| c.n == 8).expect("n = 8 case");
    let (n, w) = (case.n, g.w);
    let base = model.infer(&case.input, case.batch, n).expect("inference");
    let perm = [5, 2, 7, 0, 3, 1, 6, 4];
    let mut permuted = vec![0.0; case.input.len()];
    for b in 0..case.batch {
        for (to, &from) in perm.iter().enumerate() {
            let src = (b * n + from) * w;
            permuted[(b * n + to) * w..][..w].copy_from_slice(&case.input[src..src + w]);
        }
    }
    let out = model.infer(&permuted, case.batch, n).expect("inference");
    for b in 0..case.batch {
        for (to, &from) in perm.iter().enumerate() {
            let a = &out[(b * n + to) * w..][..w];
            let e = &base[(b * n + from) * w..][..w];
            assert!(
                max_abs_diff(a, e) <= 1e-4,
                "{:?}: metric {from} -> {to}",
                model.plan_mode()
            );
        }
    }
}

#[test]
fn any_metric_count_from_1_to_64_runs() {
    let mut rng = SmallRng::seed_from_u64(1);
    for mode in [PlanMode::Symbolic, PlanMode::Bucketed, PlanMode::Native] {
        let model = load(mode);
        let w = model.window();
        for n in 1..=64 {
            let batch = 1 + n % 3;
            let input: Vec<f32> = (0..batch * n * w)
                .map(|_| rng.gen_range(-3.0..3.0))
                .collect();
            let out = model.infer(&input, batch, n).expect("inference");
            assert_eq!(out.len(), input.len());
            assert!(out.iter().all(|v| v.is_finite()), "{mode:?} n={n}");
        }
    }
}

#[test]
fn bucketed_padding_does_not_change_results() {
    let mut rng = SmallRng::seed_from_u64(2);
    let sym = load(PlanMode::Symbolic);
    let buck = load(PlanMode::Bucketed);
    let w = sym.window();
    let (batch, n) = (5, 4); // padded to 8 in bucketed mode
    let input: Vec<f32> = (0..batch * n * w)
        .map(|_| rng.gen_range(-3.0..3.0))
        .collect();
    let a = sym.infer(&input, batch, n).expect("symbolic");
    let b = buck.infer(&input, batch, n).expect("bucketed");
    assert!(max_abs_diff(&a, &b) <= 1e-4);
}

#[test]
fn wrong_input_size_is_an_error() {
    let model = load(PlanMode::Symbolic);
    let err = model.infer(&[0.0; 10], 1, 1).expect_err("size mismatch");
    assert!(
        matches!(err, ModelError::InputSize { got: 10, .. }),
        "{err}"
    );
}

#[test]
fn missing_corrupt_and_wrong_shape_models_fail_at_load_with_a_clear_message() {
    let missing = UniadModel::load(Path::new("/nonexistent/uniad.onnx"), PlanMode::Symbolic)
        .expect_err("missing file");
    assert!(matches!(missing, ModelError::Io { .. }));
    assert!(
        missing.to_string().contains("/nonexistent/uniad.onnx"),
        "{missing}"
    );

    let bytes = std::fs::read(model_path()).expect("model bytes");
    let name = Path::new("truncated.onnx");
    let truncated = UniadModel::from_bytes(&bytes[..bytes.len() / 2], name, PlanMode::Symbolic)
        .expect_err("truncated model");
    assert!(
        matches!(truncated, ModelError::Invalid { .. }),
        "{truncated}"
    );
    assert!(truncated.to_string().contains("truncated.onnx"));
    let garbage = UniadModel::from_bytes(b"this is not a model", name, PlanMode::Symbolic)
        .expect_err("garbage");
    assert!(matches!(garbage, ModelError::Invalid { .. }), "{garbage}");

    // A valid ONNX model whose output is [batch, n, 32] instead of [batch, n, 64].
    let wrong = repo().join("models/golden/uniad_wrong_shape.onnx");
    let err = UniadModel::load(&wrong, PlanMode::Symbolic).expect_err("wrong signature");
    assert!(matches!(err, ModelError::Signature { .. }), "{err}");
    assert!(
        err.to_string().contains("expected one input [batch, n, W]"),
        "{err}"
    );
}

// ---- the native forward pass ----

fn shipped_proto() -> tract_onnx::pb::ModelProto {
    use tract_onnx::prelude::Framework;
    let bytes = std::fs::read(model_path()).expect("model bytes");
    tract_onnx::onnx()
        .proto_model_for_read(&mut &*bytes)
        .expect("model decodes")
}

fn initializer<'a>(
    proto: &'a mut tract_onnx::pb::ModelProto,
    name: &str,
) -> &'a mut tract_onnx::pb::TensorProto {
    proto
        .graph
        .as_mut()
        .expect("graph")
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("initializer {name}"))
}

#[test]
fn native_is_the_default_and_loads_the_shipped_model() {
    assert_eq!(PlanMode::default(), PlanMode::Native);
    let model = load(PlanMode::Native);
    assert_eq!(model.plan_mode(), PlanMode::Native);
    assert_eq!(model.native_fallback(), None);
    let opts: UniadOptions =
        serde_json::from_str(r#"{"model": "m.onnx", "plan": "native"}"#).expect("options");
    assert_eq!(opts.plan, PlanMode::Native);
    assert_eq!(UniadOptions::new("m.onnx").plan, PlanMode::Native);
}

#[test]
fn native_reproduces_golden_vectors_with_both_kernels() {
    let g = golden();
    let model = load(PlanMode::Native);
    assert_eq!(model.plan_mode(), PlanMode::Native);
    let portable = NativeModel::from_proto(&shipped_proto(), g.w)
        .expect("native loads")
        .portable();
    for case in &g.cases {
        let got = model
            .infer(&case.input, case.batch, case.n)
            .expect("inference");
        let err = max_abs_diff(&got, &case.output);
        assert!(err <= TOLERANCE, "native n={}: max abs error {err}", case.n);
        let got = portable.infer(&case.input, case.batch, case.n);
        let err = max_abs_diff(&got, &case.output);
        assert!(
            err <= TOLERANCE,
            "portable n={}: max abs error {err}",
            case.n
        );
    }
}

#[test]
fn native_matches_tract_on_random_inputs() {
    let mut rng = SmallRng::seed_from_u64(3);
    let tract = load(PlanMode::Symbolic);
    let native = load(PlanMode::Native);
    let portable = NativeModel::from_proto(&shipped_proto(), tract.window())
        .expect("native loads")
        .portable();
    let w = tract.window();
    // Batches across chunk boundaries (128 tokens), one entity larger than a chunk.
    for (batch, n) in [(1, 1), (2, 5), (7, 8), (64, 8), (33, 38), (3, 64), (2, 150)] {
        let mut input: Vec<f32> = (0..batch * n * w)
            .map(|_| rng.gen_range(-4.0..4.0))
            .collect();
        for _ in 0..batch {
            let at = rng.gen_range(0..input.len());
            input[at] = rng.gen_range(-40.0..40.0);
        }
        let want = tract.infer(&input, batch, n).expect("tract");
        let got = native.infer(&input, batch, n).expect("native");
        let err = max_abs_diff(&got, &want);
        assert!(
            err <= TOLERANCE,
            "batch {batch} n {n}: native vs tract {err}"
        );
        let err = max_abs_diff(&portable.infer(&input, batch, n), &want);
        assert!(
            err <= TOLERANCE,
            "batch {batch} n {n}: portable vs tract {err}"
        );
    }
}

#[test]
fn native_loader_rejects_missing_and_misshaped_tensors_and_the_load_falls_back() {
    let w = 64;
    let path = Path::new("custom.onnx");

    // An initializer renamed (graph still valid for tract): the native loader misses it.
    let mut renamed = shipped_proto();
    initializer(&mut renamed, "trans.0.norm1.weight").name = "custom.scale".into();
    for node in &mut renamed.graph.as_mut().expect("graph").node {
        for input in &mut node.input {
            if input == "trans.0.norm1.weight" {
                *input = "custom.scale".into();
            }
        }
    }
    let err = NativeModel::from_proto(&renamed, w).expect_err("missing tensor");
    assert_eq!(
        err,
        GraphError::Missing {
            name: "trans.0.norm1.weight".into()
        }
    );
    assert_eq!(err.to_string(), "tensor trans.0.norm1.weight is missing");
    let model = UniadModel::from_proto(&renamed, path, PlanMode::Native).expect("tract loads");
    assert_eq!(model.plan_mode(), PlanMode::Bucketed);
    let reason = model.native_fallback().expect("fallback reason");
    assert!(
        reason.contains("trans.0.norm1.weight is missing"),
        "{reason}"
    );

    // A bias of shape [1] (tract broadcasts it): wrong shape for the native loader.
    let mut misshaped = shipped_proto();
    let bias = initializer(&mut misshaped, "base.0.reduce.bias");
    bias.dims = vec![1];
    bias.raw_data.truncate(4);
    // The export's shape annotation of the bias would contradict the new shape.
    misshaped
        .graph
        .as_mut()
        .expect("graph")
        .value_info
        .retain(|v| v.name != "base.0.reduce.bias");
    let err = NativeModel::from_proto(&misshaped, w).expect_err("wrong shape");
    assert_eq!(
        err,
        GraphError::Shape {
            name: "base.0.reduce.bias".into(),
            got: vec![1],
            expected: vec![32],
        }
    );
    assert!(err
        .to_string()
        .contains("base.0.reduce.bias has shape [1], expected [32]"));
    let model = UniadModel::from_proto(&misshaped, path, PlanMode::Native).expect("tract loads");
    assert_eq!(model.plan_mode(), PlanMode::Bucketed);
    assert!(model
        .native_fallback()
        .is_some_and(|r| r.contains("base.0.reduce.bias")));
    // The fallback runs the modified model, as tract does.
    let input: Vec<f32> = (0..3 * w).map(|i| (i as f32 * 0.37).sin() * 2.0).collect();
    let want = UniadModel::from_proto(&misshaped, path, PlanMode::Symbolic)
        .expect("symbolic")
        .infer(&input, 1, 3)
        .expect("tract");
    let got = model.infer(&input, 1, 3).expect("fallback");
    assert!(max_abs_diff(&got, &want) <= TOLERANCE);

    // A weight matrix transposed ([64, 32] stored as [32, 64]) in a copy that keeps it
    // out of tract's way: the native loader names the layer and the initializer.
    let mut transposed = shipped_proto();
    initializer(&mut transposed, "val_42").dims = vec![32, 64];
    let err = NativeModel::from_proto(&transposed, w).expect_err("transposed weight");
    assert_eq!(
        err.to_string(),
        "tensor trans.0.reduce weight (val_42) has shape [32, 64], expected [64, 32]"
    );

    // Everything the native loader reads is in place, but the graph computes something
    // else (GELU's x / √2 changed to x / 2): the load-time probe catches it.
    let mut other = shipped_proto();
    initializer(&mut other, "val_46").raw_data = 2.0f32.to_le_bytes().to_vec();
    assert!(NativeModel::from_proto(&other, w).is_ok());
    let model = UniadModel::from_proto(&other, path, PlanMode::Native).expect("tract loads");
    assert_eq!(model.plan_mode(), PlanMode::Bucketed);
    let reason = model.native_fallback().expect("fallback reason");
    assert!(reason.contains("differs from tract"), "{reason}");

    // Symbolic and bucketed never build the native pass.
    let model = UniadModel::from_proto(&other, path, PlanMode::Symbolic).expect("loads");
    assert_eq!(model.plan_mode(), PlanMode::Symbolic);
    assert_eq!(model.native_fallback(), None);
}

// ---- the detector ----

/// Owns the buffers an [`EntityView`] borrows.
struct Entity {
    key: String,
    names: Vec<String>,
    rows: Vec<Vec<f64>>,
    stats: Vec<RobustStats>,
}

impl Entity {
    /// `n` noisy sine metrics with different phases, `len` points.
    fn new(key: &str, n: usize, len: usize, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let rows: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..len)
                    .map(|t| {
                        let phase = i as f64 * 0.7;
                        10.0 + 3.0 * (t as f64 * std::f64::consts::TAU / 48.0 + phase).sin()
                            + rng.gen_range(-0.2..0.2)
                    })
                    .collect()
            })
            .collect();
        let mut e = Entity {
            key: key.into(),
            names: (0..n).map(|i| format!("m{i}")).collect(),
            rows,
            stats: vec![],
        };
        e.refit();
        e
    }

    fn refit(&mut self) {
        let mut scratch = Vec::new();
        self.stats = self
            .rows
            .iter()
            .map(|r| RobustStats::fit(r, &mut scratch).unwrap_or(RobustStats::IDENTITY))
            .collect();
    }

    fn with<R>(&self, f: impl FnOnce(EntityView<'_>) -> R) -> R {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let owned: Vec<Vec<Sample>> = self.rows.iter().map(|r| samples(r)).collect();
        let rows: Vec<&[Sample]> = owned.iter().map(Vec::as_slice).collect();
        f(EntityView {
            key: &self.key,
            metric_names: &names,
            rows: &rows,
            stats: &self.stats,
            // One step per point, so that the detector sees history grow.
            end_ms: self.rows.first().map_or(0, |r| r.len() as i64) * 15_000,
            step_ms: 15_000,
            capacity: usize::MAX,
            expectations: &[],
            gates: &[],
        })
    }
}

fn detector() -> UniadDetector {
    UniadDetector::new(UniadOptions::new(model_path())).expect("detector")
}

/// Options with `scale_errors: true` (off by default).
fn scaled_options() -> UniadOptions {
    let mut options = UniadOptions::new(model_path());
    options.scale_errors = true;
    options
}

fn score_one(d: &mut UniadDetector, e: &Entity) -> Result<Scores, DetectError> {
    e.with(|v| d.score(&[v]).remove(0))
}

#[test]
fn options_deserialise_strictly_and_validate() {
    let ok: UniadOptions = serde_json::from_str(
        r#"{"model": "m.onnx", "plan": "symbolic", "threshold": {"risk": 0.01}}"#,
    )
    .expect("valid options");
    assert_eq!(ok.plan, PlanMode::Symbolic);
    assert_eq!(ok.threshold.risk, 0.01);
    assert_eq!(ok.max_batch, 512);
    assert!(ok.validate().is_ok());
    assert!(serde_json::from_str::<UniadOptions>(r#"{"model": "m.onnx", "bogus": 1}"#).is_err());
    let mut bad = ok.clone();
    bad.threshold.risk = 2.0;
    assert!(bad.validate().unwrap_err().contains("risk"));
}

#[test]
fn score_contract_threshold_and_contributions() {
    let mut d = detector();
    let e = Entity::new("a", 5, 200, 1);
    let s = score_one(&mut d, &e).expect("scores");
    assert_eq!(s.metrics.len(), 5);
    assert!(s.threshold > 0.0);
    assert!((s.anomaly_score * s.threshold - s.raw).abs() <= 1e-12 * s.raw.max(1.0));
    let sum: f64 = s.metrics.iter().map(|m| m.contribution).sum();
    assert!(
        (sum - s.raw).abs() <= 1e-9,
        "contributions sum {sum} vs raw {}",
        s.raw
    );
    // Same input, fresh detector: same output.
    let again = score_one(&mut detector(), &e).expect("scores");
    assert_eq!(again, s);
}

#[test]
fn a_spike_on_one_metric_raises_the_score_and_points_at_it() {
    let mut d = detector();
    let normal = Entity::new("b", 6, 300, 2);
    let calm = score_one(&mut d, &normal).expect("scores");
    let mut spiked = Entity::new("b", 6, 300, 2);
    let last = spiked.rows[3].len() - 1;
    spiked.rows[3][last] += 30.0; // ~14 robust sigmas
    let hot = score_one(&mut detector(), &spiked).expect("scores");
    assert!(
        hot.raw > 10.0 * calm.raw,
        "spike raw {} vs calm {}",
        hot.raw,
        calm.raw
    );
    let top = hot
        .metrics
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.contribution.total_cmp(&b.1.contribution))
        .map(|(i, _)| i);
    assert_eq!(top, Some(3));
    assert!(hot.is_anomalous());
}

#[test]
fn permuting_an_entitys_metrics_permutes_contributions_and_keeps_the_score() {
    let e = Entity::new("c", 7, 200, 3);
    let mut p = Entity::new("c", 7, 200, 3);
    let perm = [6, 0, 5, 1, 4, 2, 3];
    p.rows = perm.iter().map(|&i| e.rows[i].clone()).collect();
    p.refit();
    let a = score_one(&mut detector(), &e).expect("scores");
    let b = score_one(&mut detector(), &p).expect("scores");
    assert!(
        (a.raw - b.raw).abs() <= 1e-5 * a.raw.max(1e-3),
        "{} vs {}",
        a.raw,
        b.raw
    );
    for (to, &from) in perm.iter().enumerate() {
        let (x, y) = (b.metrics[to].contribution, a.metrics[from].contribution);
        assert!(
            (x - y).abs() <= 1e-5 * a.raw.max(1e-3),
            "metric {from}->{to}: {x} vs {y}"
        );
    }
}

#[test]
fn new_entities_of_any_metric_count_score_in_one_batch_once_they_have_a_window() {
    let mut d = detector();
    let w = d.model().window();
    let short = Entity::new("short", 3, w - 1, 4);
    let entities = [
        Entity::new("one", 1, w, 5),
        Entity::new("three", 3, 100, 6),
        Entity::new("forty", 40, w, 7),
        short,
    ];
    let names: Vec<Vec<&str>> = entities
        .iter()
        .map(|e| e.names.iter().map(String::as_str).collect())
        .collect();
    let owned: Vec<Vec<Vec<Sample>>> = entities
        .iter()
        .map(|e| e.rows.iter().map(|r| samples(r)).collect())
        .collect();
    let rows: Vec<Vec<&[Sample]>> = owned
        .iter()
        .map(|e| e.iter().map(Vec::as_slice).collect())
        .collect();
    let views: Vec<EntityView<'_>> = entities
        .iter()
        .enumerate()
        .map(|(i, e)| EntityView {
            key: &e.key,
            metric_names: &names[i],
            rows: &rows[i],
            stats: &e.stats,
            end_ms: 0,
            step_ms: 1,
            capacity: usize::MAX,
            expectations: &[],
            gates: &[],
        })
        .collect();
    let out = d.score(&views);
    assert_eq!(out.len(), 4);
    for (r, n) in out.iter().zip([1, 3, 40]) {
        let s = r.as_ref().expect("scored");
        assert_eq!(s.metrics.len(), n);
        assert!(s.raw.is_finite());
    }
    assert!(
        matches!(out[3], Err(DetectError::WarmingUp { have, need }) if have == w - 1 && need == w)
    );
}

#[test]
fn metrics_without_data_are_left_out() {
    let mut e = Entity::new("gaps", 4, 100, 8);
    let len = e.rows[2].len();
    for v in &mut e.rows[2][len - 70..] {
        *v = f64::NAN;
    }
    e.rows[1][len - 5] = f64::NAN; // a gap, carried forward
    let s = score_one(&mut detector(), &e).expect("scores");
    assert!(s.metrics[2].contribution.is_nan());
    assert!(s
        .metrics
        .iter()
        .enumerate()
        .all(|(i, m)| i == 2 || m.contribution.is_finite()));
    for v in e.rows.iter_mut().flatten() {
        *v = f64::NAN;
    }
    assert!(matches!(
        score_one(&mut detector(), &e),
        Err(DetectError::NoData)
    ));
}

#[test]
fn snapshot_restore_keeps_thresholds_and_forget_drops_them() {
    let mut d = detector();
    let e = Entity::new("d", 4, 300, 9);
    for t in 0..40 {
        let mut s = Entity::new("d", 4, 200 + t, 9);
        s.key = e.key.clone();
        score_one(&mut d, &s).expect("scores");
    }
    let snap = d.snapshot();
    let mut restored =
        UniadDetector::with_model(Arc::clone(d.model()), UniadOptions::new(model_path()));
    restored.restore(snap.clone()).expect("restore");
    let a = score_one(&mut d, &e).expect("scores");
    let b = score_one(&mut restored, &e).expect("scores");
    assert_eq!(a, b);
    // A fresh detector has another (initial) threshold for the same input.
    let fresh = score_one(&mut detector(), &e).expect("scores");
    assert_ne!(fresh.threshold, a.threshold);
    d.forget("d");
    assert_eq!(d.snapshot()["thresholds"], serde_json::json!({}));
    // Thresholds learned on the plain score do not go to a scaled-score detector, nor the
    // other way; snapshots of versions 1 and 2 (thresholds fitted on the score, not on
    // its root) are refused, so their thresholds are learned again.
    let mut scaled = UniadDetector::with_model(Arc::clone(d.model()), scaled_options());
    let err = scaled.restore(snap.clone()).unwrap_err();
    assert!(err.contains("scale_errors: false, now true"), "{err}");
    for old in [1, 2] {
        let mut v = snap.clone();
        v["version"] = serde_json::json!(old);
        let err = restored.restore(v).unwrap_err();
        assert!(err.contains("learned again"), "{err}");
    }
    let mut bad = snap;
    bad["version"] = serde_json::json!(99);
    assert!(restored.restore(bad).unwrap_err().contains("version 99"));
}

/// The squared error of each metric at the last step of the window ending at `end`
/// (exclusive), computed here from the model's reconstruction.
fn last_step_errors_at(d: &UniadDetector, e: &Entity, end: usize) -> Vec<f64> {
    let w = d.model().window();
    let n = e.rows.len();
    let input: Vec<f32> = (0..n)
        .flat_map(|i| {
            e.rows[i][end - w..end]
                .iter()
                .map(move |&v| e.stats[i].z(v) as f32)
        })
        .collect();
    let recon = d.model().infer(&input, 1, n).expect("inference");
    (0..n)
        .map(|i| {
            let at = i * w + w - 1;
            (f64::from(input[at]) - f64::from(recon[at])).powi(2)
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[test]
fn scaled_eq7_divides_each_metrics_error_by_its_median_over_the_history() {
    let mut d = UniadDetector::new(scaled_options()).expect("detector");
    let w = d.model().window();
    // 100 points: 37 windows, fewer than the 64 the scales are fitted on, so all count.
    let e = Entity::new("scaled", 5, 100, 11);
    let windows: Vec<Vec<f64>> = (w..=100)
        .map(|end| last_step_errors_at(&d, &e, end))
        .collect();
    let scales: Vec<f64> = (0..5)
        .map(|i| median(windows.iter().map(|r| r[i]).collect()).max(0.01))
        .collect();
    let last = windows.last().expect("a window");
    let want: f64 = last.iter().zip(&scales).map(|(e, s)| e / s).sum::<f64>() / 5.0;
    let s = score_one(&mut d, &e).expect("scores");
    assert!(
        (s.raw - want).abs() <= 1e-4 * want,
        "raw {} vs {want} recomputed",
        s.raw
    );
    for i in 0..5 {
        let c = last[i] / scales[i] / 5.0;
        assert!((s.metrics[i].contribution - c).abs() <= 1e-4 * want);
    }
}

#[test]
fn the_default_score_is_the_papers_plain_mean() {
    let mut d = detector();
    let e = Entity::new("plain", 4, 150, 12);
    let last = last_step_errors_at(&d, &e, 150);
    let want = last.iter().sum::<f64>() / 4.0;
    let s = score_one(&mut d, &e).expect("scores");
    assert!((s.raw - want).abs() <= 1e-4 * want, "{} vs {want}", s.raw);
}

/// Metric 0 is noisy (uniform noise of ±4), the others smooth; metric 2 shifts by 3 of
/// its robust sigmas over the last 5 steps. Scaled, the shift is the top contribution
/// and lifts the score more above its calm value than the plain mean does.
#[test]
fn scaled_errors_let_a_quiet_metrics_fault_stand_out_of_a_noisy_metric() {
    let build = |shift: bool| {
        let mut e = Entity::new("mixed", 6, 400, 13);
        let mut rng = SmallRng::seed_from_u64(99);
        for v in &mut e.rows[0] {
            *v += rng.gen_range(-4.0..4.0);
        }
        e.refit();
        if shift {
            let scale = e.stats[2].scale;
            for v in &mut e.rows[2][395..] {
                *v += 3.0 * scale;
            }
        }
        e
    };
    let (calm, hot) = (build(false), build(true));
    let run = |scale_errors: bool| {
        let mut options = UniadOptions::new(model_path());
        options.scale_errors = scale_errors;
        let calm = score_one(&mut UniadDetector::new(options.clone()).unwrap(), &calm).unwrap();
        let hot = score_one(&mut UniadDetector::new(options).unwrap(), &hot).unwrap();
        (calm, hot)
    };
    let (scaled_calm, scaled_hot) = run(true);
    let (plain_calm, plain_hot) = run(false);
    let top = |s: &Scores| {
        s.metrics
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.contribution.total_cmp(&b.1.contribution))
            .map(|(i, _)| i)
    };
    assert_eq!(top(&scaled_hot), Some(2));
    let (scaled, plain) = (
        scaled_hot.raw / scaled_calm.raw,
        plain_hot.raw / plain_calm.raw,
    );
    assert!(
        scaled > plain,
        "scaled lift {scaled:.2} vs plain {plain:.2} (plain top metric {:?})",
        top(&plain_hot)
    );
}
