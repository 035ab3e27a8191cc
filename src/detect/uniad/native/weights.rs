//! Reading the Uni-AD architecture's weights out of the decoded graph: each linear
//! layer, LayerNorm and attention block is found through the nodes that use its tensors,
//! and every shape is checked against the architecture derived from W and H.

use tract_onnx::pb;

use super::{Attention, Dense, Layer, Mix, Norm, LANES};
use crate::detect::onnx_graph::{Graph, GraphError};

impl<'a> Graph<'a> {
    /// Weights and bias of the linear layer `prefix` (PyTorch `nn.Linear`, exported as
    /// `Add(MatMul(x, W), prefix.bias)` with `W` stored `[k, n]`).
    fn linear(&self, prefix: &str, k: usize, n: usize) -> Result<(Vec<f32>, Vec<f32>), GraphError> {
        let bias_name = format!("{prefix}.bias");
        let b = self.floats(&bias_name, &[n])?;
        let add = self.consumer(&bias_name, "Add").ok_or_else(|| {
            GraphError::Graph(format!("{bias_name} is not the bias of an Add node"))
        })?;
        let matmul = add
            .input
            .iter()
            .filter(|i| **i != bias_name)
            .find_map(|i| self.producer(i).map(|(p, _)| p))
            .filter(|p| p.op_type == "MatMul")
            .ok_or_else(|| {
                GraphError::Graph(format!("{bias_name} is not added to a MatMul's output"))
            })?;
        let w_name = matmul
            .input
            .get(1)
            .ok_or_else(|| GraphError::Graph(format!("the MatMul of {prefix} has one input")))?;
        if self.constant(w_name).is_none() {
            return Err(GraphError::Missing {
                name: format!("{prefix} weight ({w_name})"),
            });
        }
        let w = self.floats(w_name, &[k, n]).map_err(|e| match e {
            GraphError::Shape { got, expected, .. } => GraphError::Shape {
                name: format!("{prefix} weight ({w_name})"),
                got,
                expected,
            },
            e => e,
        })?;
        Ok((w, b))
    }

    pub(super) fn dense(&self, prefix: &str, k: usize, n: usize) -> Result<Dense, GraphError> {
        let (w, b) = self.linear(prefix, k, n)?;
        Ok(Dense::new(&w, k, n, &b))
    }

    fn norm(&self, prefix: &str, d: usize) -> Result<Norm, GraphError> {
        let g_name = format!("{prefix}.weight");
        let gamma = self.floats(&g_name, &[d])?;
        let beta = self.floats(&format!("{prefix}.bias"), &[d])?;
        let node = self
            .nodes()
            .find(|n| n.op_type == "LayerNormalization" && n.input.get(1) == Some(&g_name))
            .ok_or_else(|| {
                GraphError::Graph(format!("{g_name} is not the scale of a LayerNormalization"))
            })?;
        let mut eps = 1e-5;
        for a in &node.attribute {
            match a.name.as_str() {
                "epsilon" => eps = a.f,
                "axis" if a.i != -1 && a.i != 2 => {
                    return Err(GraphError::Graph(format!(
                        "LayerNormalization of {prefix} is over axis {}, not the last",
                        a.i
                    )))
                }
                _ => {}
            }
        }
        Ok(Norm { gamma, beta, eps })
    }

    fn attention(&self, prefix: &str, d: usize) -> Result<Attention, GraphError> {
        let (wq, bq) = self.linear(&format!("{prefix}.q"), d, d)?;
        let (wk, bk) = self.linear(&format!("{prefix}.k"), d, d)?;
        let (wv, bv) = self.linear(&format!("{prefix}.v"), d, d)?;
        let o = self.dense(&format!("{prefix}.o"), d, d)?;
        let mut w = Vec::with_capacity(3 * d * d);
        for r in 0..d {
            for m in [&wq, &wk, &wv] {
                w.extend_from_slice(&m[r * d..(r + 1) * d]);
            }
        }
        let b: Vec<f32> = [bq, bk, bv].concat();
        let qkv = Dense::new(&w, d, 3 * d, &b);

        // The head split: the query's Add -> Reshape(Concat(batch, n, heads, hd)).
        let graph_err = |what: &str| GraphError::Graph(format!("attention {prefix}: {what}"));
        let q_bias = format!("{prefix}.q.bias");
        let q_out = self
            .consumer(&q_bias, "Add")
            .and_then(|n| n.output.first())
            .ok_or_else(|| graph_err("no query projection"))?;
        let reshape = self
            .consumer(q_out, "Reshape")
            .ok_or_else(|| graph_err("the query is not reshaped into heads"))?;
        let shape = reshape
            .input
            .get(1)
            .and_then(|s| self.producer(s).map(|(p, _)| p))
            .filter(|p| p.op_type == "Concat" && p.input.len() == 4)
            .ok_or_else(|| graph_err("the head shape is not a Concat of 4 values"))?;
        let heads = self.int(&shape.input[2])?;
        let hd = self.int(&shape.input[3])?;
        // Checked: both come from the file, and i64::MAX heads would overflow.
        if heads <= 0 || hd <= 0 || heads.checked_mul(hd) != i64::try_from(d).ok() {
            return Err(graph_err(&format!("{heads} heads of {hd} do not make {d}")));
        }
        if !(hd as usize).is_multiple_of(LANES) {
            return Err(graph_err(&format!(
                "head size {hd} is not a multiple of {LANES}"
            )));
        }
        // Reshape -> Transpose -> MatMul(q, k^T) -> Mul(scale) -> Clip(lo, hi) -> Exp.
        let next = |value: &str, op: &str| {
            self.consumer(value, op)
                .ok_or_else(|| graph_err(&format!("no {op} after {value}")))
        };
        // A node without outputs is a malformed file: an error, not an index panic.
        let out0 = |n: &'a pb::NodeProto| {
            n.output
                .first()
                .map(String::as_str)
                .ok_or_else(|| graph_err(&format!("node {:?} has no output", n.name)))
        };
        let tr = next(out0(reshape)?, "Transpose")?;
        let mm = next(out0(tr)?, "MatMul")?;
        let mm_out = out0(mm)?;
        let mul = next(mm_out, "Mul")?;
        let scale_name = mul
            .input
            .iter()
            .find(|i| i.as_str() != mm_out)
            .ok_or_else(|| graph_err("the score scale is not a constant"))?;
        let scale = self.scalar(scale_name)?;
        let clip = next(out0(mul)?, "Clip")?;
        let (Some(lo), Some(hi)) = (clip.input.get(1), clip.input.get(2)) else {
            return Err(graph_err("the score Clip has no bounds"));
        };
        let (lo, hi) = (self.scalar(lo)?, self.scalar(hi)?);
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(graph_err(&format!("score clamp [{lo}, {hi}] is empty")));
        }
        next(out0(clip)?, "Exp")?;
        Ok(Attention {
            qkv,
            o,
            heads: heads as usize,
            hd: hd as usize,
            scale,
            lo,
            hi,
        })
    }

    pub(super) fn layer(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        attention: bool,
    ) -> Result<Layer, GraphError> {
        let mix = if attention {
            Mix::Attention(self.attention(&format!("{prefix}.mix"), d_in)?)
        } else {
            Mix::Dense(self.dense(&format!("{prefix}.mix"), d_in, d_in)?)
        };
        Ok(Layer {
            mix,
            norm1: self.norm(&format!("{prefix}.norm1"), d_in)?,
            reduce: self.dense(&format!("{prefix}.reduce"), d_in, d_out)?,
            ff0: self.dense(&format!("{prefix}.ff.0"), d_out, 2 * d_out)?,
            ff3: self.dense(&format!("{prefix}.ff.3"), 2 * d_out, d_out)?,
            norm2: self.norm(&format!("{prefix}.norm2"), d_out)?,
        })
    }
}
