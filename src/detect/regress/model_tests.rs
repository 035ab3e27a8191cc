//! Golden tests: tract reproduces PyTorch on the exported DynamicRegress model.
//!
//! `models/golden/regress_golden.json` and `models/golden/regress_pair*.csv` are written
//! by `models/train/regress/export.py` from the same weights as `models/regress_*.onnx`.

use std::path::{Path, PathBuf};

use super::*;
use crate::detect::max_abs_diff;

const TOL: f32 = 1e-4;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

#[derive(serde::Deserialize)]
struct EncoderCase {
    batch: usize,
    len: usize,
    x: Vec<f32>,
    z: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct HeadCase {
    batch: usize,
    z1: Vec<f32>,
    z2: Vec<f32>,
    p: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct PairCase {
    id: usize,
    probability: std::collections::BTreeMap<String, f32>,
}

#[derive(serde::Deserialize)]
struct Golden {
    hidden: usize,
    encoder: Vec<EncoderCase>,
    head: HeadCase,
    pairs: Vec<PairCase>,
}

fn golden() -> Golden {
    let text =
        std::fs::read_to_string(models().join("golden/regress_golden.json")).expect("golden file");
    serde_json::from_str(&text).expect("golden parses")
}

#[test]
fn tract_reproduces_the_encoder_and_head() {
    let g = golden();
    let m = RegressModel::load(&models()).expect("model loads");
    assert_eq!(m.hidden(), g.hidden);
    for case in &g.encoder {
        let z = m.embed_batch(&case.x, case.batch, case.len).unwrap();
        let d = max_abs_diff(&z, &case.z);
        assert!(
            d <= TOL,
            "encoder batch {} len {}: max |diff| {d}",
            case.batch,
            case.len
        );
    }
    let p = m
        .probability_batch(&g.head.z1, &g.head.z2, g.head.batch)
        .unwrap();
    let want: Vec<f32> = g.head.p.chunks_exact(2).map(|r| r[1]).collect();
    assert!(max_abs_diff(&p, &want) <= TOL);
}

#[test]
fn cached_baseline_embedding_gives_the_same_probability() {
    let g = golden();
    let m = RegressModel::load(&models()).unwrap();
    let a = &g.encoder[0]; // batch 4, equal lengths
    let seq = |i: usize| &a.x[i * a.len * 2..(i + 1) * a.len * 2];
    let zb = m.embed(seq(0)).unwrap();
    let direct = m.pair_probability(seq(0), seq(1)).unwrap();
    let cached = m.probability(&zb, &m.embed(seq(1)).unwrap()).unwrap();
    assert_eq!(direct, cached);
    // identical windows: |z1 − z2| = 0, the head's bias alone must say "normal"
    assert!(m.pair_probability(seq(2), seq(2)).unwrap() < 0.5);
}

#[test]
fn csv_pairs_match_python_end_to_end() {
    let g = golden();
    let m = RegressModel::load(&models()).unwrap();
    let opts = Options {
        method: Method::Siamese,
        limits: Limits {
            min_points: 2,
            ..Limits::default()
        },
        ..Options::default()
    };
    for pair in &g.pairs {
        let dir = models().join("golden");
        let read = |side: &str| {
            let path = dir.join(format!("regress_pair{}_{side}.csv", pair.id));
            let text = std::fs::read_to_string(&path).unwrap();
            LoadTest::parse_csv(&text, &path.display().to_string()).unwrap()
        };
        let (b, c) = (read("baseline"), read("current"));
        let r = compare(&b, &c, &opts, Some(&m)).unwrap();
        for (kpi, want) in &pair.probability {
            let got = r.kpis[kpi.as_str()].probability.unwrap() as f32;
            assert!(
                (got - want).abs() <= TOL,
                "pair {} {kpi}: {got} vs {want}",
                pair.id
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let m = RegressModel::load(&models()).unwrap();
    assert!(m.embed_batch(&[0.0; 5], 1, 3).is_err());
    assert!(m.embed(&[]).is_err());
    assert!(m.probability(&[0.0; 3], &[0.0; 3]).is_err());
    let missing = RegressModel::load(Path::new("/nonexistent")).unwrap_err();
    assert!(missing.to_string().contains("regress_encoder.onnx"));
}

// ---------------------------------------------------------------------------------------
// Native engine (`lstm`): same files, same results as tract and PyTorch.

use super::lstm::{self, GraphError};
use model::Engine;

fn native() -> RegressModel {
    let m = RegressModel::load_with(&models(), Engine::Native).expect("native engine loads");
    assert_eq!(m.engine(), "native");
    m
}

fn tract() -> RegressModel {
    let m = RegressModel::load_with(&models(), Engine::Tract).expect("tract loads");
    assert_eq!(m.engine(), "tract");
    m
}

/// Deterministic pseudo-random sequences in the normalised input range (an LCG).
fn random_sequences(batch: usize, len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 // [-1, 1)
    };
    (0..batch * len)
        .flat_map(|_| {
            let workload = 0.75 + 0.75 * next();
            let r = next();
            // mostly small, sometimes far out (up to the ±50 clamp of features.rs)
            let kpi = if r.abs() > 0.9 { 50.0 * r } else { 4.0 * r };
            [workload, kpi]
        })
        .collect()
}

#[test]
fn auto_uses_the_native_engine_for_the_shipped_model() {
    assert_eq!(RegressModel::load(&models()).unwrap().engine(), "native");
    assert_eq!(tract().engine(), "tract");
}

#[test]
fn native_reproduces_the_golden_encoder_and_head() {
    let g = golden();
    let m = native();
    assert_eq!(m.hidden(), g.hidden);
    for case in &g.encoder {
        // batched, as recorded
        let z = m.embed_batch(&case.x, case.batch, case.len).unwrap();
        let d = max_abs_diff(&z, &case.z);
        assert!(d <= TOL, "batch {} len {}: {d}", case.batch, case.len);
        // and one sequence at a time (batch 1)
        let step = case.len * 2;
        for (i, seq) in case.x.chunks_exact(step).enumerate() {
            let z1 = m.embed(seq).unwrap();
            let d = max_abs_diff(&z1, &case.z[i * g.hidden..(i + 1) * g.hidden]);
            assert!(d <= TOL, "len {} sequence {i} at batch 1: {d}", case.len);
        }
    }
    let p = m
        .probability_batch(&g.head.z1, &g.head.z2, g.head.batch)
        .unwrap();
    let want: Vec<f32> = g.head.p.chunks_exact(2).map(|r| r[1]).collect();
    assert!(max_abs_diff(&p, &want) <= TOL);
    let pairs = g
        .head
        .z1
        .chunks_exact(g.hidden)
        .zip(g.head.z2.chunks_exact(g.hidden));
    for (i, ((z1, z2), want)) in pairs.zip(&want).enumerate() {
        let p1 = m.probability(z1, z2).unwrap();
        assert!((p1 - want).abs() <= TOL, "head pair {i} at batch 1");
    }
}

#[test]
fn native_equals_tract_on_random_sequences() {
    let (n, t) = (native(), tract());
    for (k, len) in [1usize, 7, 120, 300].into_iter().enumerate() {
        for batch in [1usize, 3] {
            let x = random_sequences(batch, len, (k * 10 + batch) as u64);
            let zn = n.embed_batch(&x, batch, len).unwrap();
            let zt = t.embed_batch(&x, batch, len).unwrap();
            let d = max_abs_diff(&zn, &zt);
            assert!(
                d <= TOL,
                "len {len} batch {batch}: embeddings differ by {d}"
            );
            // head on (sequence i, sequence i shifted by one)
            let zb: Vec<f32> = zt[n.hidden()..]
                .iter()
                .chain(&zt[..n.hidden()])
                .copied()
                .collect();
            let pn = n.probability_batch(&zb, &zt, batch).unwrap();
            let pt = t.probability_batch(&zb, &zt, batch).unwrap();
            let d = max_abs_diff(&pn, &pt);
            assert!(
                d <= TOL,
                "len {len} batch {batch}: probabilities differ by {d}"
            );
        }
    }
}

#[test]
fn native_bad_shapes_are_errors_not_panics() {
    let m = native();
    assert!(m.embed_batch(&[0.0; 5], 1, 3).is_err());
    assert!(m.embed_batch(&[0.0; 12], 2, 0).is_err());
    assert!(m.embed(&[]).is_err());
    assert!(m.probability(&[0.0; 3], &[0.0; 3]).is_err());
    assert!(m.probability_batch(&[], &[], 0).is_err());
}

fn encoder_proto() -> tract_onnx::pb::ModelProto {
    lstm::read_proto(&models().join(model::ENCODER_FILE)).unwrap()
}

fn head_proto() -> tract_onnx::pb::ModelProto {
    lstm::read_proto(&models().join(model::HEAD_FILE)).unwrap()
}

/// The `k`-th node of type `op` in graph order.
fn node_mut<'a>(
    m: &'a mut tract_onnx::pb::ModelProto,
    op: &str,
    k: usize,
) -> &'a mut tract_onnx::pb::NodeProto {
    m.graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .filter(|n| n.op_type == op)
        .nth(k)
        .unwrap_or_else(|| panic!("no {op} #{k}"))
}

fn string_attr(name: &str, value: &str) -> tract_onnx::pb::AttributeProto {
    tract_onnx::pb::AttributeProto {
        name: name.into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[test]
fn native_loader_reads_the_shipped_files() {
    let e = lstm::Encoder::from_proto(&encoder_proto()).unwrap();
    assert_eq!((e.input_size(), e.hidden(), e.depth()), (2, 32, 2));
    assert_eq!(lstm::Head::from_proto(&head_proto()).unwrap().hidden(), 32);
}

#[test]
fn native_loader_rejects_unsupported_lstm_attributes() {
    let reject = |edit: &dyn Fn(&mut tract_onnx::pb::NodeProto), want_attr: &str| {
        for k in 0..2 {
            let mut m = encoder_proto();
            edit(node_mut(&mut m, "LSTM", k));
            match lstm::Encoder::from_proto(&m) {
                Err(GraphError::Attribute { attribute, .. }) => assert_eq!(attribute, want_attr),
                other => {
                    panic!("LSTM #{k}, {want_attr}: expected an attribute error, got {other:?}")
                }
            }
        }
    };
    reject(
        &|n| n.attribute.push(string_attr("direction", "reverse")),
        "direction",
    );
    reject(
        &|n| n.attribute.push(string_attr("direction", "bidirectional")),
        "direction",
    );
    reject(
        &|n| {
            n.attribute.push(tract_onnx::pb::AttributeProto {
                name: "clip".into(),
                f: 3.0,
                ..Default::default()
            })
        },
        "clip",
    );
    reject(
        &|n| {
            n.attribute.push(tract_onnx::pb::AttributeProto {
                name: "activations".into(),
                strings: ["Sigmoid", "Relu", "Tanh"]
                    .map(|s| s.as_bytes().to_vec())
                    .to_vec(),
                ..Default::default()
            })
        },
        "activations",
    );
    reject(
        &|n| {
            n.attribute.push(tract_onnx::pb::AttributeProto {
                name: "input_forget".into(),
                i: 1,
                ..Default::default()
            })
        },
        "input_forget",
    );
    reject(
        &|n| n.attribute.push(string_attr("future_thing", "x")),
        "future_thing",
    );
    // explicit defaults are accepted
    let mut m = encoder_proto();
    let n = node_mut(&mut m, "LSTM", 1);
    n.attribute.push(string_attr("direction", "forward"));
    n.attribute.push(tract_onnx::pb::AttributeProto {
        name: "activations".into(),
        strings: ["Sigmoid", "Tanh", "Tanh"]
            .map(|s| s.as_bytes().to_vec())
            .to_vec(),
        ..Default::default()
    });
    assert!(lstm::Encoder::from_proto(&m).is_ok());
}

#[test]
fn native_loader_rejects_missing_weights_and_unsupported_graphs() {
    // W of the second LSTM no longer an initializer
    let mut m = encoder_proto();
    let w = node_mut(&mut m, "LSTM", 1).input[1].clone();
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .retain(|t| t.name != w);
    match lstm::Encoder::from_proto(&m) {
        Err(e @ GraphError::MissingInitializer { input: "W", .. }) => {
            assert!(e.to_string().contains(&w), "{e}")
        }
        other => panic!("expected a missing W, got {other:?}"),
    }
    // R with the wrong shape
    let mut m = encoder_proto();
    let r = node_mut(&mut m, "LSTM", 0).input[2].clone();
    let g = m.graph.as_mut().unwrap();
    g.initializer.iter_mut().find(|t| t.name == r).unwrap().dims = vec![1, 32, 128];
    assert!(matches!(
        lstm::Encoder::from_proto(&m),
        Err(GraphError::Tensor { .. })
    ));
    // a non-zero initial state
    let mut m = encoder_proto();
    let cos = node_mut(&mut m, "ConstantOfShape", 0);
    cos.attribute.retain(|a| a.name != "value");
    cos.attribute.push(tract_onnx::pb::AttributeProto {
        name: "value".into(),
        t: Some(tract_onnx::pb::TensorProto {
            dims: vec![1],
            data_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
            float_data: vec![0.5],
            ..Default::default()
        }),
        ..Default::default()
    });
    match lstm::Encoder::from_proto(&m) {
        Err(GraphError::Graph(msg)) => assert!(msg.contains("initial_h"), "{msg}"),
        other => panic!("expected a graph error, got {other:?}"),
    }
    // the output Gather reads the last LSTM's Y (all steps) instead of Y_h
    let mut m = encoder_proto();
    let y = node_mut(&mut m, "LSTM", 1).output[0].clone();
    let g = m.graph.as_mut().unwrap();
    let z = g.output[0].name.clone();
    let out = g.node.iter_mut().find(|n| n.output == [z.clone()]).unwrap();
    assert_eq!(out.op_type, "Gather");
    out.input[0] = y;
    assert!(matches!(
        lstm::Encoder::from_proto(&m),
        Err(GraphError::Graph(_))
    ));
    // the head: softmax over another axis, a missing weight
    let mut m = head_proto();
    node_mut(&mut m, "Softmax", 0).attribute = vec![tract_onnx::pb::AttributeProto {
        name: "axis".into(),
        i: 0,
        ..Default::default()
    }];
    assert!(matches!(
        lstm::Head::from_proto(&m),
        Err(GraphError::Attribute { .. })
    ));
    let mut m = head_proto();
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .retain(|t| t.name != "fc.weight");
    assert!(matches!(
        lstm::Head::from_proto(&m),
        Err(GraphError::MissingInitializer { .. })
    ));
}

#[test]
fn the_probe_catches_a_native_engine_that_disagrees_with_tract() {
    // A supported graph whose weights differ from tract's: one recurrent weight of the
    // second layer changed by 0.05 (the probe must notice, the engine stays tract).
    let mut m = encoder_proto();
    let r = node_mut(&mut m, "LSTM", 1).input[2].clone();
    let g = m.graph.as_mut().unwrap();
    let t = g.initializer.iter_mut().find(|t| t.name == r).unwrap();
    let v = f32::from_le_bytes(t.raw_data[40..44].try_into().unwrap()) + 0.05;
    t.raw_data[40..44].copy_from_slice(&v.to_le_bytes());
    let enc = lstm::Encoder::from_proto(&m).unwrap();
    let head = lstm::Head::from_proto(&head_proto()).unwrap();
    let mut model = tract();
    match model.use_native(enc, head.clone()) {
        Err(GraphError::Mismatch { what, diff }) => {
            assert!(what.contains("encoder") && diff > TOL, "{what} {diff}")
        }
        other => panic!("expected a probe mismatch, got {other:?}"),
    }
    assert_eq!(model.engine(), "tract");
    // the unedited weights pass
    let enc = lstm::Encoder::from_proto(&encoder_proto()).unwrap();
    model.use_native(enc, head).unwrap();
    assert_eq!(model.engine(), "native");
}
