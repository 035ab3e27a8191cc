//! Property-based fuzzing of Uni-AD model loading (issue 21): the shipped ONNX file
//! truncated, bit-flipped or with bytes set (the bytes tract decodes), and its decoded
//! graph edited where the file describes sizes and values (tensor dims, storage and
//! types, NaN and huge weights, the input's dims, attributes, missing nodes). Loading
//! ends in a model or a [`ModelError`] naming the file, never a panic, and never an
//! allocation sized by the file's claims rather than its bytes.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use super::native::NativeModel;
use super::{ModelError, PlanMode, UniadModel};

#[allow(clippy::duplicate_mod)]
#[path = "../graph_edits.rs"]
mod graph_edits;
// Shared with the integration suites and the other unit suites (each test binary
// compiles its own copy, as each suite needs only a part).
#[allow(clippy::duplicate_mod)]
#[path = "../../../tests/it/fuzz/mutate.rs"]
mod mutate;
use graph_edits::{edited, graph_edit, GraphEdit};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn shipped_bytes() -> Vec<u8> {
    std::fs::read(repo("models/uniad.onnx")).expect("the shipped model")
}

fn decode(bytes: &[u8]) -> pb::ModelProto {
    tract_onnx::onnx()
        .proto_model_for_read(&mut &*bytes)
        .expect("the shipped model decodes")
}

const NAME: &str = "fuzzed-uniad.onnx";

/// What a failed load must look like: the file named, a reason given.
fn assert_clear(e: &ModelError) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(text.contains(NAME), "the file is not named: {text}");
    prop_assert!(
        matches!(e, ModelError::Invalid { .. } | ModelError::Signature { .. }),
        "{e:?}"
    );
    Ok(())
}

/// A loaded model must run: the shape it promised, and finite on a finite input unless
/// values were edited (NaN and infinite weights are refused outright, but a huge weight
/// or a negative epsilon overflows only on some inputs, and the load-time trial tries
/// one).
fn assert_runs(m: &UniadModel, values_edited: bool) -> Result<(), TestCaseError> {
    let w = m.window();
    prop_assert!((1..=super::model::MAX_WINDOW).contains(&w), "window {w}");
    let out = m
        .infer(&vec![0.5; 3 * w], 1, 3)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(out.len(), 3 * w);
    prop_assert!(
        values_edited || out.iter().all(|x| x.is_finite()),
        "non-finite output"
    );
    Ok(())
}

proptest! {
    #![proptest_config(mutate::config(32))]

    /// Byte-level damage to the file: a model that runs, or an error naming the file.
    #[test]
    fn damaged_files_load_or_are_refused_clearly(
        edits in prop::collection::vec(
            prop_oneof![
                any::<Index>().prop_map(mutate::Edit::Truncate),
                (any::<Index>(), 0..8u8).prop_map(|(i, b)| mutate::Edit::FlipBit(i, b)),
                (any::<Index>(), any::<u8>()).prop_map(|(i, b)| mutate::Edit::SetByte(i, b)),
                (any::<Index>(), 1..64u16).prop_map(|(i, n)| mutate::Edit::DeleteSpan(i, n)),
            ],
            1..4,
        )
    ) {
        let bytes = mutate::apply(&shipped_bytes(), &edits);
        match UniadModel::from_bytes(&bytes, Path::new(NAME), PlanMode::Symbolic) {
            // A flipped bit can make a weight huge.
            Ok(m) => assert_runs(&m, true)?,
            Err(e) => assert_clear(&e)?,
        }
    }

    /// Edits of the decoded graph: the tract load gives a model that runs or a clear
    /// error, and the native loader (checked against tract on the probe at load time)
    /// gives a model or a typed error.
    #[test]
    fn edited_graphs_load_or_are_refused_clearly(edits in prop::collection::vec(graph_edit(), 1..3)) {
        let proto = edited(&decode(&shipped_bytes()), &edits);
        match UniadModel::from_proto(&proto, Path::new(NAME), PlanMode::Symbolic) {
            Ok(m) => {
                let values_edited = edits.iter().any(|e| {
                    matches!(
                        e,
                        GraphEdit::Value(..)
                            | GraphEdit::DataType(..)
                            | GraphEdit::IntAttribute(..)
                            | GraphEdit::FloatAttribute(..)
                    )
                });
                assert_runs(&m, values_edited)?;
                let _ = NativeModel::from_proto(&proto, m.window());
            }
            Err(e) => assert_clear(&e)?,
        }
        let _ = NativeModel::from_proto(&proto, 64);
    }
}

/// `x [batch, n, w] -> Identity -> y`, the smallest graph with Uni-AD's signature.
fn identity_model(w: i64) -> pb::ModelProto {
    use pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    let dim = |v: Dim| Dimension {
        value: Some(v),
        ..Default::default()
    };
    let value = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![
                        dim(Dim::DimParam("batch".into())),
                        dim(Dim::DimParam("n".into())),
                        dim(Dim::DimValue(w)),
                    ],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            node: vec![pb::NodeProto {
                op_type: "Identity".into(),
                input: vec!["x".into()],
                output: vec!["y".into()],
                ..Default::default()
            }],
            input: vec![value("x")],
            output: vec![value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A file claiming a window of 2^40 steps is refused by its signature check before
/// anything is sized by it: the load-time trial run (`vec![0.0; 2 * w]`) used to ask
/// for 8 TiB and abort the process.
#[test]
fn a_huge_declared_window_is_refused_before_any_allocation() {
    assert!(
        UniadModel::from_proto(&identity_model(64), Path::new(NAME), PlanMode::Symbolic).is_ok()
    );
    for w in [1 << 40, i64::MAX] {
        let err = UniadModel::from_proto(&identity_model(w), Path::new(NAME), PlanMode::Symbolic)
            .expect_err("refused");
        assert!(matches!(err, ModelError::Signature { .. }), "{err}");
        assert!(err.to_string().contains(NAME), "{err}");
    }
}

/// Found by `edited_graphs_load_or_are_refused_clearly`: a NaN weight loaded (the
/// native loader refused it, the model fell back to tract) and every reconstruction,
/// hence every score, was NaN. Non-finite weights are now refused before tract, in
/// every plan mode (and a trial output that is not finite, from huge weights, too).
#[test]
fn non_finite_weights_are_refused_at_load() {
    for v in [f32::NAN, f32::INFINITY] {
        let mut proto = decode(&shipped_bytes());
        let g = proto.graph.as_mut().expect("a graph");
        let t = g
            .initializer
            .iter_mut()
            .find(|t| t.data_type == 1 && t.dims.len() == 2 && t.raw_data.len() >= 8)
            .expect("a weight matrix");
        t.raw_data[..4].copy_from_slice(&v.to_le_bytes());
        for mode in [PlanMode::Native, PlanMode::Symbolic, PlanMode::Bucketed] {
            let err = UniadModel::from_proto(&proto, Path::new(NAME), mode).expect_err("refused");
            assert!(matches!(err, ModelError::Invalid { .. }), "{err}");
            assert!(err.to_string().contains("non-finite"), "{err}");
        }
    }
}

/// Found by `edited_graphs_load_or_are_refused_clearly`: an initializer whose data type
/// was changed to one tract cannot read raw (string, complex, bfloat16) made tract
/// panic (`unimplemented!("FIXME, raw tensor loading")`) inside the agent's load or
/// reload. Such tensors are now refused before tract sees the model.
#[test]
fn raw_tensors_of_unloadable_types_are_refused_before_tract() {
    use pb::tensor_proto::DataType;
    for dt in [
        DataType::String,
        DataType::Complex64,
        DataType::Bfloat16,
        DataType::Float8e4m3fn,
    ] {
        let mut proto = decode(&shipped_bytes());
        let g = proto.graph.as_mut().expect("a graph");
        let t = g
            .initializer
            .iter_mut()
            .find(|t| !t.raw_data.is_empty())
            .expect("a raw initializer");
        t.data_type = dt as i32;
        let err =
            UniadModel::from_proto(&proto, Path::new(NAME), PlanMode::Native).expect_err("refused");
        assert!(matches!(err, ModelError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("cannot be loaded"), "{err}");
    }
}

/// Found by the long campaign of `edited_graphs_load_or_are_refused_clearly`: a
/// LayerNormalization whose `axis` attribute was set to 2^40 kept tract's shape
/// inference looping for minutes (up to the axis). Axes beyond any rank are refused
/// before tract sees the model.
#[test]
fn an_axis_beyond_any_rank_is_refused_before_tract() {
    for axis in [1 << 40, i64::MAX, -(1 << 40)] {
        let mut proto = decode(&shipped_bytes());
        let g = proto.graph.as_mut().expect("a graph");
        let norm = g
            .node
            .iter_mut()
            .find(|n| n.op_type == "LayerNormalization")
            .expect("a LayerNormalization");
        match norm.attribute.iter_mut().find(|a| a.name == "axis") {
            Some(a) => a.i = axis,
            None => norm.attribute.push(pb::AttributeProto {
                name: "axis".into(),
                i: axis,
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                ..Default::default()
            }),
        }
        let err = UniadModel::from_proto(&proto, Path::new(NAME), PlanMode::Symbolic)
            .expect_err("refused");
        assert!(err.to_string().contains("is not an axis"), "{err}");
    }
}
