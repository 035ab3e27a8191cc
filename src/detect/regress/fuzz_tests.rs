//! Property-based fuzzing of the regression model's loading (issue 21): the shipped
//! encoder and head files damaged byte by byte, and their decoded graphs edited where
//! they describe sizes and values (see `graph_edits.rs`). Loading ends in a model whose
//! probabilities are probabilities, or in an error naming the file; the native readers
//! ([`lstm::Encoder`], [`lstm::Head`]) give weights or a typed error. Never a panic.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use super::lstm;
use super::model::{Engine, ModelError, RegressModel};

#[allow(clippy::duplicate_mod)]
#[path = "../graph_edits.rs"]
mod graph_edits;
// Shared with the integration suites and the other unit suites (each test binary
// compiles its own copy, as each suite needs only a part).
#[allow(clippy::duplicate_mod)]
#[path = "../../../tests/it/fuzz/mutate.rs"]
mod mutate;
use graph_edits::{edited, graph_edit};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn shipped(file: &str) -> Vec<u8> {
    std::fs::read(repo(&format!("models/{file}"))).expect("the shipped model")
}

fn decode(bytes: &[u8]) -> pb::ModelProto {
    tract_onnx::onnx()
        .proto_model_for_read(&mut &*bytes)
        .expect("the shipped model decodes")
}

/// `len` steps of (workload, kpi) in the normalised range.
fn sequence(len: usize, phase: f32) -> Vec<f32> {
    (0..len)
        .flat_map(|t| {
            let t = t as f32 + phase;
            [0.75 + 0.5 * (0.3 * t).sin(), (0.7 * t).cos()]
        })
        .collect()
}

/// A loaded model answers probabilities, or fails at inference with a typed error.
fn assert_probabilities(m: &RegressModel) -> Result<(), TestCaseError> {
    match m.pair_probability(&sequence(12, 0.0), &sequence(9, 1.0)) {
        Ok(p) => prop_assert!((0.0..=1.0).contains(&p), "P(regression) = {p}"),
        Err(e) => prop_assert!(matches!(e, ModelError::Inference(_)), "{e:?}"),
    }
    Ok(())
}

/// Writes the two files and loads them with every engine choice.
fn load_both(encoder: &[u8], head: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (enc, hd) = (dir.path().join("enc.onnx"), dir.path().join("head.onnx"));
    std::fs::write(&enc, encoder).map_err(|e| TestCaseError::fail(e.to_string()))?;
    std::fs::write(&hd, head).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for engine in [Engine::Auto, Engine::Native] {
        match RegressModel::load_files_with(&enc, &hd, engine) {
            Ok(m) => assert_probabilities(&m)?,
            Err(e) => {
                let text = e.to_string();
                prop_assert!(
                    text.contains("enc.onnx") || text.contains("head.onnx"),
                    "the file is not named: {text}"
                );
            }
        }
    }
    Ok(())
}

fn byte_edits() -> impl Strategy<Value = Vec<mutate::Edit>> {
    prop::collection::vec(
        prop_oneof![
            1 => any::<Index>().prop_map(mutate::Edit::Truncate),
            3 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| mutate::Edit::FlipBit(i, b)),
            1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| mutate::Edit::SetByte(i, b)),
            1 => (any::<Index>(), 1..64u16).prop_map(|(i, n)| mutate::Edit::DeleteSpan(i, n)),
        ],
        1..4,
    )
}

/// Where each float32 initializer's raw bytes sit in `file` (found by content), so that
/// a weight can be overwritten in the file itself.
fn weight_spans(file: &[u8]) -> Vec<(usize, usize)> {
    decode(file)
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        // Long enough that its bytes occur once in the file.
        .filter(|t| {
            t.data_type == pb::tensor_proto::DataType::Float as i32 && t.raw_data.len() >= 64
        })
        .filter_map(|t| {
            file.windows(t.raw_data.len())
                .position(|w| w == t.raw_data.as_slice())
                .map(|at| (at, t.raw_data.len()))
        })
        .collect()
}

/// `file` with weight `k` of the initializer at `span` set to `v`.
fn with_weight(file: &[u8], span: (usize, usize), k: usize, v: f32) -> Vec<u8> {
    let mut out = file.to_vec();
    let at = span.0 + 4 * (k % (span.1 / 4));
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    out
}

fn hostile_weight() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MAX),
        Just(-f32::MAX),
        Just(1e30),
        any::<f32>(),
    ]
}

proptest! {
    #![proptest_config(mutate::config(32))]

    /// A weight of the encoder or the head overwritten in the file with NaN, infinity
    /// or a huge value: refused at load, or a model whose answers are probabilities.
    #[test]
    fn hostile_weights_are_refused_or_harmless(
        which_file in any::<bool>(),
        span in any::<Index>(),
        k in any::<usize>(),
        v in hostile_weight(),
    ) {
        let (mut enc, mut head) = (shipped("regress_encoder.onnx"), shipped("regress_head.onnx"));
        let file = if which_file { &mut enc } else { &mut head };
        let spans = weight_spans(file);
        prop_assert!(!spans.is_empty());
        *file = with_weight(file, spans[span.index(spans.len())], k, v);
        load_both(&enc, &head)?;
    }

    /// Byte-level damage to the encoder or the head file.
    #[test]
    fn damaged_files_load_or_are_refused_clearly(
        edits in byte_edits(),
        which_file in any::<bool>(),
    ) {
        let (mut enc, mut head) = (shipped("regress_encoder.onnx"), shipped("regress_head.onnx"));
        if which_file {
            enc = mutate::apply(&enc, &edits);
        } else {
            head = mutate::apply(&head, &edits);
        }
        load_both(&enc, &head)?;
    }

    /// Edited graphs through the native readers: weights or a typed error; weights that
    /// load run on a small batch without a panic.
    #[test]
    fn edited_graphs_give_weights_or_typed_errors(edits in prop::collection::vec(graph_edit(), 1..3)) {
        let enc = edited(&decode(&shipped("regress_encoder.onnx")), &edits);
        if let Ok(e) = lstm::Encoder::from_proto(&enc) {
            let x = sequence(5, 0.0);
            if e.input_size() == 2 {
                let z = e.embed_batch(&x, 1, 5);
                prop_assert_eq!(z.len(), e.hidden());
            }
        }
        let head = edited(&decode(&shipped("regress_head.onnx")), &edits);
        if let Ok(h) = lstm::Head::from_proto(&head) {
            let z = vec![0.1; h.hidden()];
            prop_assert_eq!(h.softmax_batch(&z, &z).len(), 2);
        }
    }
}

/// Found by `hostile_weights_are_refused_or_harmless`: a NaN weight made the native
/// readers refuse the files, the model fell back to tract, and every probability was
/// NaN, which the verdict reads as "no regression". Non-finite weights are now refused
/// before tract (and a non-finite probe embedding or probability too), naming the file.
#[test]
fn non_finite_weights_are_refused_at_load_naming_the_file() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (enc_path, head_path) = (dir.path().join("enc.onnx"), dir.path().join("head.onnx"));
    for (bad, name) in [(true, "enc.onnx"), (false, "head.onnx")] {
        let (mut enc, mut head) = (
            shipped("regress_encoder.onnx"),
            shipped("regress_head.onnx"),
        );
        let file = if bad { &mut enc } else { &mut head };
        let spans = weight_spans(file);
        *file = with_weight(file, spans[0], 0, f32::NAN);
        std::fs::write(&enc_path, &enc).expect("write");
        std::fs::write(&head_path, &head).expect("write");
        for engine in [Engine::Auto, Engine::Tract] {
            let err = RegressModel::load_files_with(&enc_path, &head_path, engine)
                .expect_err("a NaN weight is refused");
            let text = err.to_string();
            assert!(text.contains(name) && text.contains("non-finite"), "{text}");
        }
    }
}

/// Found by `edited_graphs_give_weights_or_typed_errors` (long campaign): an LSTM
/// `hidden_size` of 2^62 or more overflowed `4 × hidden` in the native reader (a panic
/// in a debug build, a wrapped size in release). It is now an attribute error.
#[test]
fn a_huge_hidden_size_is_an_attribute_error() {
    for h in [i64::MAX, 1 << 62, 1 << 17] {
        let mut proto = decode(&shipped("regress_encoder.onnx"));
        let g = proto.graph.as_mut().expect("a graph");
        let lstm = g
            .node
            .iter_mut()
            .find(|n| n.op_type == "LSTM")
            .expect("an LSTM node");
        let a = lstm
            .attribute
            .iter_mut()
            .find(|a| a.name == "hidden_size")
            .expect("hidden_size");
        a.i = h;
        let err = lstm::Encoder::from_proto(&proto).expect_err("refused");
        assert!(matches!(err, lstm::GraphError::Attribute { .. }), "{err}");
        assert!(err.to_string().contains("hidden_size"), "{err}");
    }
}

/// Found by `damaged_files_load_or_are_refused_clearly` (long campaign): a bit-damaged
/// `Gather` index constant (-1 became 27303072740933632) made tract panic with an index
/// out of bounds while loading the encoder. tract panics while loading are now refused
/// as load errors naming the files.
#[test]
fn a_tract_panic_while_loading_is_a_load_error() {
    let mut enc = shipped("regress_encoder.onnx");
    // The Gather index is the one int64 constant -1 (8 bytes of 0xff) in the file.
    let at = enc
        .windows(8)
        .position(|w| w == [0xff; 8])
        .expect("the -1 index constant");
    enc[at..at + 8].copy_from_slice(&27_303_072_740_933_632i64.to_le_bytes());
    let dir = tempfile::tempdir().expect("a temp dir");
    let (enc_path, head_path) = (dir.path().join("enc.onnx"), dir.path().join("head.onnx"));
    std::fs::write(&enc_path, &enc).expect("write");
    std::fs::write(&head_path, shipped("regress_head.onnx")).expect("write");
    let err =
        RegressModel::load_files_with(&enc_path, &head_path, Engine::Tract).expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, ModelError::Load { .. }), "{text}");
    assert!(text.contains("enc.onnx"), "{text}");
}
