//! Reading weights out of decoded ONNX files, for the native forward passes of
//! [`super::regress`] (LSTM encoder and head) and [`super::uniad`] (the Transformer
//! autoencoder): decoding, constant lookup (initializers and `Constant` nodes), the
//! checked contents of a tensor, and the branch-free `exp` both passes vectorise.
//!
//! Each pass keeps its own error type for the graph shapes it supports; a tensor whose
//! contents cannot be read is a [`TensorError`] that both convert from.

use std::collections::HashMap;
use std::path::Path;

use tract_onnx::pb;
use tract_onnx::prelude::Framework;

const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const INT32: i32 = pb::tensor_proto::DataType::Int32 as i32;
const INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;

/// A constant tensor whose contents are not what a native pass can use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("tensor {name:?}: {detail}")]
pub struct TensorError {
    /// Tensor name.
    pub name: String,
    /// What is wrong with it.
    pub detail: String,
}

fn tensor_err(t: &pb::TensorProto, detail: impl Into<String>) -> TensorError {
    TensorError {
        name: t.name.clone(),
        detail: detail.into(),
    }
}

/// Decodes an ONNX file into its protobuf model with tract's decoder; the error is
/// tract's message (the caller adds the path).
pub fn read_proto(path: &Path) -> Result<pb::ModelProto, String> {
    tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| format!("{e:#}"))
}

/// Data types whose raw bytes tract loads; on any other (string, complex, bfloat16, the
/// 8-bit floats) tract 0.23 panics (`unimplemented!`) instead of returning an error.
const RAW_LOADABLE: [pb::tensor_proto::DataType; 12] = {
    use pb::tensor_proto::DataType as D;
    [
        D::Float,
        D::Uint8,
        D::Int8,
        D::Uint16,
        D::Int16,
        D::Int32,
        D::Int64,
        D::Bool,
        D::Float16,
        D::Double,
        D::Uint32,
        D::Uint64,
    ]
};

fn check_tensor(t: &pb::TensorProto) -> Result<(), TensorError> {
    let raw = !t.raw_data.is_empty()
        || t.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
    if raw && !RAW_LOADABLE.iter().any(|&d| d as i32 == t.data_type) {
        return Err(tensor_err(
            t,
            format!("raw data of type {} cannot be loaded", t.data_type),
        ));
    }
    if t.data_type == FLOAT {
        let mut raw_values = t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if raw_values.any(|x| !x.is_finite()) || t.float_data.iter().any(|x| !x.is_finite()) {
            return Err(tensor_err(t, "holds a non-finite value"));
        }
    }
    Ok(())
}

/// Largest `axis` (or entry of `axes` / `perm`) a node may name: ONNX tensors have a
/// handful of dimensions, and tract's shape inference loops up to the value it is given
/// (a LayerNormalization with axis 2^40 never finished: found by the fuzz suites).
const MAX_AXIS: i64 = 64;

fn check_node(n: &pb::NodeProto) -> Result<(), TensorError> {
    for a in &n.attribute {
        let values: &[i64] = match a.name.as_str() {
            "axis" => std::slice::from_ref(&a.i),
            "axes" | "perm" => &a.ints,
            _ => continue,
        };
        if let Some(v) = values.iter().find(|v| !(-MAX_AXIS..=MAX_AXIS).contains(v)) {
            return Err(TensorError {
                name: n.name.clone(),
                detail: format!(
                    "{} node: attribute {} = {v} is not an axis (expected -{MAX_AXIS} to {MAX_AXIS})",
                    n.op_type, a.name
                ),
            });
        }
    }
    Ok(())
}

fn check_graph_for_tract(g: &pb::GraphProto) -> Result<(), TensorError> {
    for n in &g.node {
        check_node(n)?;
    }
    for t in &g.initializer {
        check_tensor(t)?;
    }
    for t in g
        .sparse_initializer
        .iter()
        .filter_map(|s| s.values.as_ref())
    {
        check_tensor(t)?;
    }
    for a in g.node.iter().flat_map(|n| &n.attribute) {
        for t in a.t.iter().chain(&a.tensors) {
            check_tensor(t)?;
        }
        for sub in a.g.iter().chain(&a.graphs) {
            check_graph_for_tract(sub)?;
        }
    }
    Ok(())
}

/// Refuses, in any node or tensor of the model (initializers, `Constant` values,
/// attributes, subgraphs), what tract would panic on rather than report (raw data of a
/// type it cannot load), loop on (an axis beyond any rank) or run without a word (a NaN
/// or infinite float32, after which every output is NaN). Call before handing a decoded
/// file to tract.
pub fn check_for_tract(model: &pb::ModelProto) -> Result<(), TensorError> {
    model.graph.as_ref().map_or(Ok(()), check_graph_for_tract)
}

/// Runs `f` (loading, optimising or probing a model with tract), turning a panic inside
/// it into `Err(message)`. tract 0.23 panics on some malformed graphs instead of
/// returning an error (the fuzz suites found a `Gather` whose constant index is out of
/// range); a damaged model file must be refused, not take the agent down on a reload.
pub fn contain_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        let detail = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("tract panicked on this graph: {detail}")
    })
}

/// The `value` tensor of a `Constant` node.
pub fn constant_value(node: &pb::NodeProto) -> Option<&pb::TensorProto> {
    if node.op_type != "Constant" {
        return None;
    }
    node.attribute
        .iter()
        .find(|a| a.name == "value")
        .and_then(|a| a.t.as_ref())
}

/// Every constant of a graph by name: its initializers and the outputs of its
/// `Constant` nodes (exporters differ in how much they fold into initializers).
pub fn constants(graph: &pb::GraphProto) -> HashMap<&str, &pb::TensorProto> {
    let mut map: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    for node in &graph.node {
        if let (Some(out), Some(t)) = (node.output.first(), constant_value(node)) {
            map.insert(out.as_str(), t);
        }
    }
    map
}

/// The number of elements `dims` describe.
fn element_count(t: &pb::TensorProto) -> Result<usize, TensorError> {
    t.dims.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| n.checked_mul(d))
            .ok_or_else(|| tensor_err(t, format!("bad dims {:?}", t.dims)))
    })
}

/// Data stored outside the `TensorProto` (external files, segments) is not read.
fn check_inline(t: &pb::TensorProto) -> Result<(), TensorError> {
    if !t.external_data.is_empty() || t.data_location.unwrap_or(0) != 0 {
        return Err(tensor_err(t, "external data is not supported natively"));
    }
    if t.segment.is_some() {
        return Err(tensor_err(
            t,
            "segmented tensors are not supported natively",
        ));
    }
    Ok(())
}

/// The values of a float32 tensor in row-major order: exactly as many as its dims say,
/// all finite (a NaN weight would otherwise slip through a probe comparison).
pub fn floats(t: &pb::TensorProto) -> Result<Vec<f32>, TensorError> {
    check_inline(t)?;
    if t.data_type != FLOAT {
        return Err(tensor_err(
            t,
            format!("data type {} is not float32", t.data_type),
        ));
    }
    let n = element_count(t)?;
    let values: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    if values.len() != n || (!t.raw_data.is_empty() && t.raw_data.len() != 4 * n) {
        return Err(tensor_err(
            t,
            format!("{} values for dims {:?}", values.len(), t.dims),
        ));
    }
    if values.iter().any(|x| !x.is_finite()) {
        return Err(tensor_err(t, "holds a non-finite value"));
    }
    Ok(values)
}

/// The values of an int32 or int64 tensor, as i64.
pub fn ints(t: &pb::TensorProto) -> Result<Vec<i64>, TensorError> {
    check_inline(t)?;
    let n = element_count(t)?;
    let values: Vec<i64> = match (t.data_type, t.raw_data.is_empty()) {
        (INT64, true) => t.int64_data.clone(),
        (INT64, false) => t
            .raw_data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        (INT32, true) => t.int32_data.iter().map(|&v| i64::from(v)).collect(),
        (INT32, false) => t
            .raw_data
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        (dt, _) => return Err(tensor_err(t, format!("data type {dt} is not an integer"))),
    };
    if values.len() != n {
        return Err(tensor_err(
            t,
            format!("{} values for dims {:?}", values.len(), t.dims),
        ));
    }
    Ok(values)
}

/// `e^x` for `x` in about `[-87, 88]` (clamped outside; NaN stays NaN), branch-free so
/// that loops over it vectorise (libm's `expf` is a call per element). Cephes `expf`:
/// `x = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, a degree-6 polynomial for `e^r`, times `2^n` built
/// in the exponent bits. Relative error ≤ 2 ulp (tested against `f32::exp`).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let v = x * LOG2E + ROUND;
    let n = v - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    let two_n = f32::from_bits(v.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    p * two_n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_2_ulp_of_libm() {
        for i in 0..=2_000_000 {
            let x = -87.0 + 175.0 * i as f32 / 2_000_000.0;
            let (got, want) = (exp(x), x.exp());
            assert!(
                ((got - want) / want).abs() <= 2.0 * f32::EPSILON,
                "exp({x}) = {got}, libm {want}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    fn float_tensor(dims: &[i64], values: &[f32]) -> pb::TensorProto {
        pb::TensorProto {
            name: "w".into(),
            dims: dims.to_vec(),
            data_type: FLOAT,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn floats_checks_count_type_and_finiteness() {
        assert_eq!(
            floats(&float_tensor(&[2, 2], &[1.0, 2.0, 3.0, 4.0])).unwrap(),
            [1.0, 2.0, 3.0, 4.0]
        );
        let short = floats(&float_tensor(&[2, 2], &[1.0, 2.0, 3.0])).unwrap_err();
        assert!(short.detail.contains("3 values for dims [2, 2]"), "{short}");
        let nan = floats(&float_tensor(&[2], &[1.0, f32::NAN])).unwrap_err();
        assert!(nan.detail.contains("non-finite"), "{nan}");
        let mut ints = float_tensor(&[1], &[1.0]);
        ints.data_type = INT64;
        assert!(floats(&ints).unwrap_err().detail.contains("not float32"));
        let mut external = float_tensor(&[1], &[1.0]);
        external.data_location = Some(1);
        assert!(floats(&external).unwrap_err().detail.contains("external"));
    }

    #[test]
    fn ints_reads_int32_and_int64_storage() {
        let t64 = pb::TensorProto {
            name: "i".into(),
            dims: vec![2],
            data_type: INT64,
            int64_data: vec![-1, 7],
            ..Default::default()
        };
        assert_eq!(ints(&t64).unwrap(), [-1, 7]);
        let t32 = pb::TensorProto {
            name: "i".into(),
            dims: vec![],
            data_type: INT32,
            raw_data: 5i32.to_le_bytes().to_vec(),
            ..Default::default()
        };
        assert_eq!(ints(&t32).unwrap(), [5]);
    }
}
