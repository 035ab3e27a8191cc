//! Edits of a decoded ONNX graph for the model-loading fuzz suites
//! (`uniad/fuzz_tests.rs`, `regress/fuzz_tests.rs` include this file by path): the
//! places where a file describes sizes and values (tensor dims, storage, types and
//! contents, the input's declared dims, attributes) and its structure (nodes).

#![allow(dead_code)] // Each suite uses the part it needs.

use proptest::prelude::*;
use proptest::sample::Index;
use tract_onnx::pb;

/// An edit of the decoded graph, at a place chosen by [`Index`].
#[derive(Debug, Clone)]
pub(crate) enum GraphEdit {
    /// New dims for an initializer (huge, negative, zero, or off by one).
    Dims(Index, Vec<i64>),
    /// Drop the tail of an initializer's raw bytes.
    TruncateData(Index, Index),
    /// Write a value into an initializer (NaN, infinity, huge).
    Value(Index, Index, f32),
    /// Change an initializer's data type.
    DataType(Index, i32),
    /// Change one dim of the graph input's declared shape.
    InputDim(Index, i64),
    /// Remove a node.
    DropNode(Index),
    /// Set an integer attribute of a node.
    IntAttribute(Index, Index, i64),
    /// Set a float attribute of a node.
    FloatAttribute(Index, Index, f32),
}

fn hostile_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(1),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(1 << 31),
        Just(1 << 40),
        Just(10_000_000_000),
        -4i64..300,
    ]
}

fn hostile_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MAX),
        Just(0.0),
        any::<f32>(),
    ]
}

pub(crate) fn graph_edit() -> impl Strategy<Value = GraphEdit> {
    prop_oneof![
        (any::<Index>(), prop::collection::vec(hostile_i64(), 0..4))
            .prop_map(|(i, d)| GraphEdit::Dims(i, d)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, j)| GraphEdit::TruncateData(i, j)),
        (any::<Index>(), any::<Index>(), hostile_f32())
            .prop_map(|(i, j, v)| GraphEdit::Value(i, j, v)),
        (any::<Index>(), -1i32..20).prop_map(|(i, t)| GraphEdit::DataType(i, t)),
        (any::<Index>(), hostile_i64()).prop_map(|(i, d)| GraphEdit::InputDim(i, d)),
        any::<Index>().prop_map(GraphEdit::DropNode),
        (any::<Index>(), any::<Index>(), hostile_i64())
            .prop_map(|(i, j, v)| GraphEdit::IntAttribute(i, j, v)),
        (any::<Index>(), any::<Index>(), hostile_f32())
            .prop_map(|(i, j, v)| GraphEdit::FloatAttribute(i, j, v)),
    ]
}

fn pick<'a, T>(items: &'a mut [T], i: &Index) -> Option<&'a mut T> {
    if items.is_empty() {
        None
    } else {
        let k = i.index(items.len());
        items.get_mut(k)
    }
}

/// Applies `edits` to a copy of `proto`.
pub(crate) fn edited(proto: &pb::ModelProto, edits: &[GraphEdit]) -> pb::ModelProto {
    let mut p = proto.clone();
    let Some(g) = p.graph.as_mut() else {
        return p;
    };
    for e in edits {
        match e {
            GraphEdit::Dims(i, dims) => {
                if let Some(t) = pick(&mut g.initializer, i) {
                    t.dims = dims.clone();
                }
            }
            GraphEdit::TruncateData(i, j) => {
                if let Some(t) = pick(&mut g.initializer, i) {
                    if !t.raw_data.is_empty() {
                        let keep = j.index(t.raw_data.len());
                        t.raw_data.truncate(keep);
                    }
                }
            }
            GraphEdit::Value(i, j, v) => {
                if let Some(t) = pick(&mut g.initializer, i) {
                    if t.raw_data.len() >= 4 {
                        let k = 4 * j.index(t.raw_data.len() / 4);
                        t.raw_data[k..k + 4].copy_from_slice(&v.to_le_bytes());
                    } else if let Some(x) = pick(&mut t.float_data, j) {
                        *x = *v;
                    }
                }
            }
            GraphEdit::DataType(i, dt) => {
                if let Some(t) = pick(&mut g.initializer, i) {
                    t.data_type = *dt;
                }
            }
            GraphEdit::InputDim(i, d) => {
                let dims = g
                    .input
                    .first_mut()
                    .and_then(|x| x.r#type.as_mut())
                    .and_then(|t| match t.value.as_mut() {
                        Some(pb::type_proto::Value::TensorType(tt)) => tt.shape.as_mut(),
                        _ => None,
                    })
                    .map(|s| &mut s.dim);
                if let Some(dim) = dims.and_then(|dims| pick(dims, i)) {
                    dim.value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(*d));
                }
            }
            GraphEdit::DropNode(i) => {
                if !g.node.is_empty() {
                    let k = i.index(g.node.len());
                    g.node.remove(k);
                }
            }
            GraphEdit::IntAttribute(i, j, v) => {
                if let Some(a) = pick(&mut g.node, i).and_then(|n| pick(&mut n.attribute, j)) {
                    a.i = *v;
                    a.ints.iter_mut().for_each(|x| *x = *v);
                }
            }
            GraphEdit::FloatAttribute(i, j, v) => {
                if let Some(a) = pick(&mut g.node, i).and_then(|n| pick(&mut n.attribute, j)) {
                    a.f = *v;
                }
            }
        }
    }
    p
}
