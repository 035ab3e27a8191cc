//! The DynamicRegress encoder and head computed natively, from the weights in the ONNX files.
//!
//! tract runs an ONNX `LSTM` as a scan loop that costs about 6.7 µs per step and layer
//! at batch 1, while the arithmetic of one step of a hidden-32 layer is about 4k
//! multiply-adds. This module reads the **same** `regress_encoder.onnx` /
//! `regress_head.onnx` (the shipped files stay the single source of truth), checks that
//! each graph is exactly a shape it supports, and computes it in plain Rust:
//!
//! * encoder ([`Encoder`]): `x [batch, T, in]` → `Transpose(1, 0, 2)` → a chain of ONNX
//!   `LSTM` nodes (forward, default activations sigmoid/tanh/tanh, no clip, no peepholes,
//!   no `sequence_lens`, zero or absent initial state, `layout` 0), each next layer fed
//!   with `Squeeze(axis 1)` of the previous `Y` → output `Gather(axis 0, index 0)` or
//!   `Squeeze(axis 0)` of the last layer's `Y_h`, i.e. its last hidden state `[batch, H]`;
//! * head ([`Head`]): `Softmax(Gemm(Abs(Sub(z1, z2)), W, b))` over 2 classes.
//!
//! Anything else is a [`GraphError`] naming the node and the reason, and
//! [`super::RegressModel`] keeps tract for that file (a custom model still works).
//!
//! One step of one layer is a matrix–vector product `[x_t, h_{t-1}] (in + H) → 4H` over
//! `[W | R]` (biases `Wb + Rb` pre-added), stored transposed in tiles of 32 gates so that
//! the accumulators stay in registers and the loops autovectorise, then the gates.
//! Sigmoid and tanh are the standard formulas (`1 / (1 + e^-x)`, `2·sigmoid(2x) − 1`)
//! over a branch-free `expf` (Cephes' polynomial, ≤ 2 ulp) rather than libm calls, which
//! would cost more than all the arithmetic (320 per step at H = 32). Per call, all
//! buffers are allocated once; a step allocates nothing. Batches run sequence after
//! sequence (batch 1 is the agent's common case). Safe Rust, f32, no target features
//! assumed beyond the x86-64 baseline (SSE2).

use std::fmt;
use std::path::Path;

use tract_onnx::pb;

use crate::detect::onnx_graph::{attr, attr_int, graph_err, input, Graph};
pub use crate::detect::onnx_graph::{read_proto, GraphError};
use crate::detect::onnx_proto::{self, exp};

fn attribute_err(node: &pb::NodeProto, attribute: &str, detail: impl Into<String>) -> GraphError {
    GraphError::Attribute {
        node: node.name.clone(),
        op: node.op_type.clone(),
        attribute: attribute.to_string(),
        detail: detail.into(),
    }
}

fn tensor_err(t: &pb::TensorProto, detail: impl Into<String>) -> GraphError {
    GraphError::Tensor {
        name: t.name.clone(),
        detail: detail.into(),
    }
}

/// A float32 constant input of `node`, with the expected dims.
fn weight(
    g: &Graph<'_>,
    node: &pb::NodeProto,
    index: usize,
    what: &'static str,
    dims: &[usize],
) -> Result<Vec<f32>, GraphError> {
    let name = input(node, index).unwrap_or_default();
    let missing = || GraphError::MissingInitializer {
        node: node.name.clone(),
        op: node.op_type.clone(),
        input: what,
        name: name.to_string(),
    };
    if name.is_empty() {
        return Err(missing());
    }
    let t = g.constant(name).ok_or_else(missing)?;
    let want: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    if t.dims != want {
        return Err(tensor_err(
            t,
            format!(
                "{what} of {:?} has dims {:?}, expected {want:?}",
                node.name, t.dims
            ),
        ));
    }
    Ok(onnx_proto::floats(t)?)
}

/// Whether `name` (an LSTM initial state input) is absent or provably all zeros.
fn is_zero_state(g: &Graph<'_>, name: Option<&str>) -> bool {
    let Some(name) = name else { return true };
    if let Some(t) = g.constant(name) {
        return onnx_proto::floats(t).is_ok_and(|v| v.iter().all(|&x| x == 0.0));
    }
    match g.producer(name) {
        // ConstantOfShape: `value` defaults to a float 0.
        Some((node, 0)) if node.op_type == "ConstantOfShape" => match attr(node, "value") {
            None => true,
            Some(a) => a
                .t
                .as_ref()
                .is_some_and(|t| onnx_proto::floats(t).is_ok_and(|v| v.len() == 1 && v[0] == 0.0)),
        },
        _ => false,
    }
}

/// The axes of a `Squeeze` node (attribute before opset 13, input since).
fn squeeze_axes(g: &Graph<'_>, node: &pb::NodeProto) -> Option<Vec<i64>> {
    match input(node, 1) {
        Some(axes) => g.constant_ints(axes),
        None => attr(node, "axes").map(|a| a.ints.clone()),
    }
}

// ---------------------------------------------------------------------------------------
// Encoder

/// Gates computed together in registers by [`Layer::step`] (8 SSE registers).
const TILE: usize = 32;

/// One LSTM layer, weights fused, transposed and tiled.
#[derive(Clone)]
struct Layer {
    input: usize,
    hidden: usize,
    /// `4H` rounded up to a multiple of [`TILE`] (the extra gates have zero weights).
    gates: usize,
    /// `[gates / TILE][input + hidden][TILE]`: for each tile of gates, row `j` holds those
    /// gates' weights for column `j` of `[x_t, h_{t-1}]`, i.e. `[W | R]` transposed (gate
    /// order i, o, f, c).
    wt: Vec<f32>,
    /// `Wb + Rb`, `[gates]`.
    bias: Vec<f32>,
}

/// Largest `hidden_size` of an LSTM node the native reader accepts.
const MAX_HIDDEN: usize = 1 << 16;

impl Layer {
    /// Reads and checks one ONNX `LSTM` node whose input has `input` features.
    fn from_node(
        g: &Graph<'_>,
        node: &pb::NodeProto,
        input_size: usize,
    ) -> Result<Layer, GraphError> {
        let mut hidden = None;
        for a in &node.attribute {
            let bad = |detail: &str| Err(attribute_err(node, &a.name, detail));
            match a.name.as_str() {
                "hidden_size" => hidden = Some(a.i),
                "direction" => {
                    if a.s != b"forward" {
                        return bad(&format!(
                            "{:?}, only \"forward\" is supported",
                            String::from_utf8_lossy(&a.s)
                        ));
                    }
                }
                "activations" => {
                    let names: Vec<String> = a
                        .strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect();
                    if names != ["Sigmoid", "Tanh", "Tanh"] {
                        return bad(&format!(
                            "{names:?}, only the default Sigmoid, Tanh, Tanh is supported"
                        ));
                    }
                }
                "input_forget" | "layout" => {
                    if a.i != 0 {
                        return bad(&format!("{}, only 0 is supported", a.i));
                    }
                }
                "clip" => return bad("cell clipping is not supported"),
                other => return bad(&format!("{other:?} is not supported")),
            }
        }
        let hidden = hidden
            .ok_or_else(|| attribute_err(node, "hidden_size", "missing"))
            .and_then(|h| {
                // Bounded so that the gate count (4 × hidden) and the weight shapes
                // computed from it cannot overflow; the shipped model has 32.
                usize::try_from(h)
                    .ok()
                    .filter(|&h| (1..=MAX_HIDDEN).contains(&h))
                    .ok_or_else(|| {
                        attribute_err(
                            node,
                            "hidden_size",
                            format!("{h} (expected 1 to {MAX_HIDDEN})"),
                        )
                    })
            })?;
        for (i, what) in [(4, "sequence_lens"), (7, "P (peepholes)")] {
            if input(node, i).is_some() {
                return Err(graph_err(format!(
                    "LSTM {:?}: input {what} is not supported",
                    node.name
                )));
            }
        }
        for (i, what) in [(5, "initial_h"), (6, "initial_c")] {
            if !is_zero_state(g, input(node, i)) {
                return Err(graph_err(format!(
                    "LSTM {:?}: {what} is not absent or a zero constant",
                    node.name
                )));
            }
        }
        let h4 = 4 * hidden;
        let w = weight(g, node, 1, "W", &[1, h4, input_size])?;
        let r = weight(g, node, 2, "R", &[1, h4, hidden])?;
        let bias = match input(node, 3) {
            None => vec![0.0; h4],
            Some(_) => {
                let b = weight(g, node, 3, "B", &[1, 2 * h4])?;
                b[..h4]
                    .iter()
                    .zip(&b[h4..])
                    .map(|(wb, rb)| wb + rb)
                    .collect()
            }
        };
        let cols = input_size + hidden;
        let gates = h4.div_ceil(TILE) * TILE;
        let mut wt = vec![0.0; cols * gates];
        for gate in 0..h4 {
            let (tile, k) = (gate / TILE, gate % TILE);
            for j in 0..cols {
                wt[(tile * cols + j) * TILE + k] = if j < input_size {
                    w[gate * input_size + j]
                } else {
                    r[gate * hidden + j - input_size]
                };
            }
        }
        let mut bias = bias;
        bias.resize(gates, 0.0);
        Ok(Layer {
            input: input_size,
            hidden,
            gates,
            wt,
            bias,
        })
    }

    /// One step: `xh` is `[x_t, h_{t-1}]` (`input + hidden`); writes `h_t` into the tail
    /// of `xh` and updates `c` in place. `gates` is scratch of `self.gates`.
    #[inline]
    fn step(&self, xh: &mut [f32], c: &mut [f32], gates: &mut [f32]) {
        let hd = self.hidden;
        let cols = xh.len();
        // gates = [W | R]·[x_t, h_{t-1}] + b, one tile of gates at a time so that the
        // accumulators stay in registers; the loop over k autovectorises.
        for ((out, b), w) in gates
            .chunks_exact_mut(TILE)
            .zip(self.bias.chunks_exact(TILE))
            .zip(self.wt.chunks_exact(cols * TILE))
        {
            let mut acc = [0.0f32; TILE];
            acc.copy_from_slice(b);
            for (&v, row) in xh.iter().zip(w.chunks_exact(TILE)) {
                for (a, &wk) in acc.iter_mut().zip(row) {
                    *a += v * wk;
                }
            }
            out.copy_from_slice(&acc);
        }
        let (ifo, rest) = gates.split_at_mut(3 * hd);
        let cand = &mut rest[..hd];
        for g in ifo.iter_mut() {
            *g = sigmoid(*g);
        }
        for g in cand.iter_mut() {
            *g = tanh(*g);
        }
        let (i, of) = ifo.split_at(hd);
        let (o, f) = of.split_at(hd);
        for (((c, &f), &i), &g) in c.iter_mut().zip(f).zip(i).zip(cand.iter()) {
            *c = f * *c + i * g;
        }
        for ((h, &c), &o) in xh[self.input..].iter_mut().zip(c.iter()).zip(o) {
            *h = o * tanh(c);
        }
    }
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh x = 2·sigmoid(2x) − 1`; absolute error ≤ 3e-7 (tested against `f32::tanh`).
#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

/// The native encoder: a chain of LSTM layers, output the last layer's last hidden state.
#[derive(Clone)]
pub struct Encoder {
    layers: Vec<Layer>,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shapes: Vec<(usize, usize)> = self.layers.iter().map(|l| (l.input, l.hidden)).collect();
        f.debug_struct("Encoder")
            .field("layers (input, hidden)", &shapes)
            .finish()
    }
}

impl Encoder {
    /// Reads and checks an encoder ONNX file.
    pub fn load(path: &Path) -> Result<Self, GraphError> {
        Self::from_proto(&read_proto(path)?)
    }

    /// Checks a decoded encoder model and extracts its weights.
    pub fn from_proto(model: &pb::ModelProto) -> Result<Self, GraphError> {
        let g = Graph::of_model(model)?;
        let x = match g.inputs().as_slice() {
            [x] => x.name.as_str(),
            ins => {
                return Err(graph_err(format!(
                    "expected 1 graph input, found {}",
                    ins.len()
                )))
            }
        };
        // Walk back from the output: z ← last hidden state of the last LSTM.
        let z = g.single_output()?;
        let (last, yh) = match g.producer(z) {
            Some((n, 0)) if n.op_type == "Gather" => {
                let index = input(n, 1).and_then(|i| g.constant(i));
                let scalar_zero = index.is_some_and(|t| {
                    t.dims.is_empty() && onnx_proto::ints(t).is_ok_and(|v| v == [0] || v == [-1])
                });
                if attr_int(n, "axis", 0) != 0 || !scalar_zero {
                    return Err(graph_err(format!(
                        "output {z:?}: Gather {:?} is not a scalar index 0 on axis 0",
                        n.name
                    )));
                }
                (n, input(n, 0))
            }
            Some((n, 0)) if n.op_type == "Squeeze" => {
                if squeeze_axes(&g, n).as_deref() != Some(&[0]) {
                    return Err(graph_err(format!(
                        "output {z:?}: Squeeze {:?} is not on axis 0",
                        n.name
                    )));
                }
                (n, input(n, 0))
            }
            _ => {
                return Err(graph_err(format!(
                    "output {z:?} is not a Gather or Squeeze of an LSTM's Y_h"
                )))
            }
        };
        let mut nodes = Vec::new();
        let node_count = g.nodes().count();
        let mut current = match yh.and_then(|n| g.producer(n)) {
            Some((n, 1)) if n.op_type == "LSTM" => n,
            _ => {
                return Err(graph_err(format!(
                    "{} {:?} does not read output Y_h of an LSTM",
                    last.op_type, last.name
                )))
            }
        };
        loop {
            nodes.push(current);
            let xin = input(current, 0).unwrap_or_default();
            match g.producer(xin) {
                Some((n, 0)) if n.op_type == "Transpose" => {
                    let perm = attr(n, "perm").map(|a| a.ints.clone());
                    if perm.as_deref() != Some(&[1, 0, 2]) || input(n, 0) != Some(x) {
                        return Err(graph_err(format!(
                            "the first LSTM's input is not Transpose(perm 1, 0, 2) of {x:?}"
                        )));
                    }
                    break;
                }
                Some((n, 0)) if n.op_type == "Squeeze" => {
                    if squeeze_axes(&g, n).as_deref() != Some(&[1]) {
                        return Err(graph_err(format!(
                            "Squeeze {:?} between LSTMs is not on axis 1",
                            n.name
                        )));
                    }
                    current = match input(n, 0).and_then(|y| g.producer(y)) {
                        Some((prev, 0)) if prev.op_type == "LSTM" => prev,
                        _ => {
                            return Err(graph_err(format!(
                                "Squeeze {:?} does not read output Y of an LSTM",
                                n.name
                            )))
                        }
                    };
                }
                _ => {
                    return Err(graph_err(format!(
                        "the input of LSTM {:?} is neither Transpose(x) nor Squeeze(Y)",
                        current.name
                    )))
                }
            }
            if nodes.len() > node_count {
                return Err(graph_err("cycle in the graph"));
            }
        }
        nodes.reverse();
        // Input size: the first W's last dim, checked against x's static last dim if any.
        let first_w = input(nodes[0], 1)
            .and_then(|w| g.constant(w))
            .ok_or_else(|| GraphError::MissingInitializer {
                node: nodes[0].name.clone(),
                op: "LSTM".into(),
                input: "W",
                name: input(nodes[0], 1).unwrap_or_default().to_string(),
            })?;
        let mut input_size = match first_w.dims.as_slice() {
            [1, _, n] if *n > 0 => *n as usize,
            d => return Err(tensor_err(first_w, format!("W has dims {d:?}"))),
        };
        let mut layers = Vec::with_capacity(nodes.len());
        for node in nodes {
            let layer = Layer::from_node(&g, node, input_size)?;
            input_size = layer.hidden;
            layers.push(layer);
        }
        Ok(Encoder { layers })
    }

    /// Features per step.
    pub fn input_size(&self) -> usize {
        self.layers[0].input
    }

    /// Embedding size (the last layer's hidden size).
    pub fn hidden(&self) -> usize {
        self.layers[self.layers.len() - 1].hidden
    }

    /// Number of stacked LSTM layers.
    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Embeds `batch` sequences of `len` steps; `x` is `[batch, len, input]` row-major.
    /// Returns `[batch, H]`. The caller checks the shape (`x.len()`).
    pub fn embed_batch(&self, x: &[f32], batch: usize, len: usize) -> Vec<f32> {
        let n_in = self.input_size();
        debug_assert_eq!(x.len(), batch * len * n_in);
        let hidden = self.hidden();
        let mut out = vec![0.0; batch * hidden];
        let mut xh: Vec<Vec<f32>> = self
            .layers
            .iter()
            .map(|l| vec![0.0; l.input + l.hidden])
            .collect();
        let mut cs: Vec<Vec<f32>> = self.layers.iter().map(|l| vec![0.0; l.hidden]).collect();
        let max_gates = self.layers.iter().map(|l| l.gates).max().unwrap_or(0);
        let mut gates = vec![0.0; max_gates];
        for (seq, z) in x.chunks_exact(len * n_in).zip(out.chunks_exact_mut(hidden)) {
            for v in xh.iter_mut().chain(cs.iter_mut()) {
                v.fill(0.0);
            }
            for x_t in seq.chunks_exact(n_in) {
                xh[0][..n_in].copy_from_slice(x_t);
                for (k, layer) in self.layers.iter().enumerate() {
                    if k > 0 {
                        let (prev, rest) = xh.split_at_mut(k);
                        let h_prev = &prev[k - 1][self.layers[k - 1].input..];
                        rest[0][..layer.input].copy_from_slice(h_prev);
                    }
                    layer.step(&mut xh[k], &mut cs[k], &mut gates[..layer.gates]);
                }
            }
            let last = self.layers.len() - 1;
            z.copy_from_slice(&xh[last][self.layers[last].input..]);
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Head

/// The native head: `softmax(W·|z1 − z2| + b)` over 2 classes.
#[derive(Clone)]
pub struct Head {
    hidden: usize,
    /// `[2][H]`, alpha folded in.
    w: Vec<f32>,
    /// `[2]`, beta folded in.
    b: [f32; 2],
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Head")
            .field("hidden", &self.hidden)
            .finish()
    }
}

impl Head {
    /// Reads and checks a head ONNX file.
    pub fn load(path: &Path) -> Result<Self, GraphError> {
        Self::from_proto(&read_proto(path)?)
    }

    /// Checks a decoded head model and extracts its weights.
    pub fn from_proto(model: &pb::ModelProto) -> Result<Self, GraphError> {
        let g = Graph::of_model(model)?;
        let ins = g.inputs();
        let [z1, z2] = ins.as_slice() else {
            return Err(graph_err(format!(
                "expected 2 graph inputs, found {}",
                ins.len()
            )));
        };
        let p = g.single_output()?;
        let softmax = g.expect_op(p, "Softmax")?;
        if !matches!(attr_int(softmax, "axis", -1), -1 | 1) {
            return Err(attribute_err(
                softmax,
                "axis",
                "only the last axis is supported",
            ));
        }
        let gemm = g.expect_op(input(softmax, 0).unwrap_or_default(), "Gemm")?;
        for a in &gemm.attribute {
            match a.name.as_str() {
                "alpha" | "beta" => {}
                "transA" if a.i == 0 => {}
                "transB" if a.i == 0 || a.i == 1 => {}
                other => return Err(attribute_err(gemm, other, "unsupported value")),
            }
        }
        let abs = g.expect_op(input(gemm, 0).unwrap_or_default(), "Abs")?;
        let sub = g.expect_op(input(abs, 0).unwrap_or_default(), "Sub")?;
        let operands = (input(sub, 0), input(sub, 1));
        let (a, b) = (Some(z1.name.as_str()), Some(z2.name.as_str()));
        if operands != (a, b) && operands != (b, a) {
            return Err(graph_err(format!(
                "Sub {:?} does not subtract the two graph inputs",
                sub.name
            )));
        }
        let wname = input(gemm, 1).unwrap_or_default();
        let wt = g
            .constant(wname)
            .ok_or_else(|| GraphError::MissingInitializer {
                node: gemm.name.clone(),
                op: "Gemm".into(),
                input: "B (weight)",
                name: wname.to_string(),
            })?;
        let trans_b = attr_int(gemm, "transB", 0) == 1;
        let (classes, hidden) = match (wt.dims.as_slice(), trans_b) {
            ([c, h], true) | ([h, c], false) if *c > 0 && *h > 0 => (*c as usize, *h as usize),
            (d, _) => return Err(tensor_err(wt, format!("weight dims {d:?}"))),
        };
        if classes != 2 {
            return Err(graph_err(format!(
                "the head has {classes} classes, expected 2"
            )));
        }
        let raw = onnx_proto::floats(wt)?;
        let alpha = attr(gemm, "alpha").map_or(1.0, |a| a.f);
        let beta = attr(gemm, "beta").map_or(1.0, |a| a.f);
        let mut w = vec![0.0; 2 * hidden];
        for c in 0..2 {
            for j in 0..hidden {
                let v = if trans_b {
                    raw[c * hidden + j]
                } else {
                    raw[j * 2 + c]
                };
                w[c * hidden + j] = alpha * v;
            }
        }
        let b = match input(gemm, 2) {
            None => [0.0; 2],
            Some(name) => {
                let t = g
                    .constant(name)
                    .ok_or_else(|| GraphError::MissingInitializer {
                        node: gemm.name.clone(),
                        op: "Gemm".into(),
                        input: "C (bias)",
                        name: name.to_string(),
                    })?;
                match (t.dims.as_slice(), onnx_proto::floats(t)?.as_slice()) {
                    ([2] | [1, 2], &[b0, b1]) => [beta * b0, beta * b1],
                    ([] | [1] | [1, 1], &[b0]) => [beta * b0; 2],
                    (d, _) => return Err(tensor_err(t, format!("bias dims {d:?}"))),
                }
            }
        };
        Ok(Head { hidden, w, b })
    }

    /// Embedding size H it expects.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Both softmax columns for `batch` pairs (`[batch, 2]` row-major); `z1`, `z2` are
    /// `[batch, H]`. The caller checks the lengths.
    pub fn softmax_batch(&self, z1: &[f32], z2: &[f32]) -> Vec<f32> {
        let h = self.hidden;
        let (w0, w1) = self.w.split_at(h);
        let mut out = Vec::with_capacity(z1.len() / h * 2);
        for (a, b) in z1.chunks_exact(h).zip(z2.chunks_exact(h)) {
            let (mut l0, mut l1) = (self.b[0], self.b[1]);
            for j in 0..h {
                let d = (a[j] - b[j]).abs();
                l0 += w0[j] * d;
                l1 += w1[j] * d;
            }
            let m = l0.max(l1);
            let (e0, e1) = ((l0 - m).exp(), (l1 - m).exp()); // libm: 2 per pair
            let s = e0 + e1;
            out.push(e0 / s);
            out.push(e1 / s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 000 001 evenly spaced values in `[lo, hi]`.
    fn grid(lo: f32, hi: f32) -> impl Iterator<Item = f32> {
        (0..=2_000_000).map(move |i| lo + (hi - lo) * i as f32 / 2_000_000.0)
    }

    #[test]
    fn sigmoid_and_tanh_are_within_3e_7_of_libm() {
        for x in grid(-60.0, 60.0).chain([f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0]) {
            let s = 1.0 / (1.0 + (-x).exp());
            assert!(
                (sigmoid(x) - s).abs() <= 3e-7,
                "sigmoid({x}): {} vs {s}",
                sigmoid(x)
            );
            assert!(
                (tanh(x) - x.tanh()).abs() <= 3e-7,
                "tanh({x}): {} vs {}",
                tanh(x),
                x.tanh()
            );
        }
        assert!(sigmoid(f32::NAN).is_nan() && tanh(f32::NAN).is_nan());
    }
}
