//! A native Rust forward pass for the Uni-AD architecture of `models/train/uniad/model.py`.
//!
//! The ONNX file stays the single source of truth: [`NativeModel::from_proto`] reads every
//! weight, bias, LayerNorm epsilon, head count, attention scale and score clamp from the
//! decoded graph (initializers, found through the nodes that use them), checks each
//! tensor's presence and shape against the architecture derived from W and H, and
//! returns a [`NativeError`] naming what is missing or wrong. [`super::UniadModel`] then
//! compares this forward pass with tract's on a fixed probe before using it, and falls
//! back to tract for any graph this code does not reproduce.
//!
//! The computation, for `t = batch × n` tokens at once (in chunks of whole entities that
//! keep the working set in the CPU cache):
//!
//! * dense layers: `[t, d_in] @ [d_in, d_out] + bias` (+ residual), with the weights
//!   packed at load into 8-column panels and a register-blocked kernel (4 rows × 8 or
//!   16 columns of accumulators); the Q, K and V projections are one `[d, 3d]` product;
//! * attention per (entity, head) over the entity's `n` tokens: `exp(clamp(s·scale))`
//!   normalised by its sum (the graph's softmax, no max subtraction);
//! * LayerNorm over the last axis (epsilon from the graph), exact GELU
//!   `0.5·x·(1 + erf(x/√2))` with erf evaluated in f64 (max abs error 7e-8).
//!
//! On x86-64 CPUs with AVX2 and FMA (checked at run time) the same code is compiled a
//! second time with those features enabled and selected; elsewhere the portable copy
//! runs (SSE2 on x86-64, NEON with fused multiply-add on aarch64).

use std::cell::RefCell;
use std::collections::HashMap;

use tract_onnx::pb;

use crate::detect::onnx_proto::{self, exp, TensorError};

/// Why the native forward pass cannot run a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(super) enum NativeError {
    /// A tensor the architecture needs is not in the graph.
    #[error("tensor {name} is missing")]
    Missing {
        /// The tensor (initializer name, or the layer and role).
        name: String,
    },
    /// A tensor has another shape than the architecture needs.
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The initializer.
        name: String,
        /// Its shape in the file.
        got: Vec<i64>,
        /// The shape the architecture needs.
        expected: Vec<usize>,
    },
    /// A tensor's data cannot be read as what it should hold.
    #[error("tensor {name}: {reason}")]
    Data {
        /// The initializer.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The graph is not built the way the native code expects.
    #[error("{0}")]
    Graph(String),
}

/// Width of a packed weight panel (columns).
const PANEL: usize = 8;
/// Lanes of the fixed-size arrays the other kernels work on.
const LANES: usize = 8;
/// Tokens per chunk: whole entities, about this many tokens, so the activations of one
/// chunk (at most ~100 KB at W = 64) stay in L2.
const CHUNK_TOKENS: usize = 128;

/// Whether the portable kernels use fused multiply-add (aarch64 has it in its base ISA;
/// x86-64's base ISA does not, and `mul_add` would call libm).
const PORTABLE_FMA: bool = cfg!(target_arch = "aarch64");

/// A dense layer `y = x @ W + b`, `W` `[k, n]` packed in panels of [`PANEL`] columns:
/// `panels[p·k + kk][l]` is `W[kk, p·8 + l]` (zeros past `n`).
#[derive(Debug, Clone)]
struct Dense {
    k: usize,
    n: usize,
    panels: Vec<[f32; PANEL]>,
    /// `n` biases, padded with zeros to a whole number of panels.
    bias: Vec<f32>,
}

impl Dense {
    /// `w` is row-major `[k, n]` (the MatMul layout), `b` has `n` values.
    fn new(w: &[f32], k: usize, n: usize, b: &[f32]) -> Dense {
        let np = n.div_ceil(PANEL);
        let mut panels = vec![[0.0; PANEL]; np * k];
        for (i, panel) in panels.iter_mut().enumerate() {
            let (p, kk) = (i / k, i % k);
            for (l, v) in panel.iter_mut().enumerate() {
                let col = p * PANEL + l;
                if col < n {
                    *v = w[kk * n + col];
                }
            }
        }
        let mut bias = b.to_vec();
        bias.resize(np * PANEL, 0.0);
        Dense { k, n, panels, bias }
    }
}

/// LayerNorm over the last axis.
#[derive(Debug, Clone)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

/// Multi-head self-attention across an entity's tokens.
#[derive(Debug, Clone)]
struct Attention {
    /// Q, K and V projections side by side: `[d, 3d]`.
    qkv: Dense,
    o: Dense,
    heads: usize,
    hd: usize,
    scale: f32,
    lo: f32,
    hi: f32,
}

#[derive(Debug, Clone)]
enum Mix {
    Attention(Attention),
    Dense(Dense),
}

/// One modified Transformer encoder layer (attention mix) or Base layer (dense mix):
/// `x = LN1(x + mix(x))`, `y = reduce(x)`, `out = LN2(y + ff3(gelu(ff0(y))))`.
#[derive(Debug, Clone)]
struct Layer {
    mix: Mix,
    norm1: Norm,
    reduce: Dense,
    ff0: Dense,
    ff3: Dense,
    norm2: Norm,
}

impl Layer {
    fn d_in(&self) -> usize {
        self.reduce.k
    }
    fn d_out(&self) -> usize {
        self.reduce.n
    }
}

/// The Uni-AD model with its weights, ready for [`NativeModel::infer`].
#[derive(Debug, Clone)]
pub(super) struct NativeModel {
    w: usize,
    h: usize,
    /// The `mask_last` variant's input mask (`x · mask`), when the graph has one.
    mask: Option<Vec<f32>>,
    trans: Vec<Layer>,
    trans_out: Dense,
    base: Vec<Layer>,
    base_out: Dense,
    dec: Vec<Layer>,
    dec_out: Dense,
    /// AVX2 + FMA kernels (x86-64 CPUs that have both).
    wide: bool,
}

/// Per-thread buffers, grown on demand and reused across calls.
#[derive(Default)]
struct Scratch {
    xin: Vec<f32>,
    pa: Vec<f32>,
    pb: Vec<f32>,
    z: Vec<f32>,
    tmp: Tmp,
}

#[derive(Default)]
struct Tmp {
    qkv: Vec<f32>,
    attn: Vec<f32>,
    x1: Vec<f32>,
    y: Vec<f32>,
    hh: Vec<f32>,
    kt: Vec<[f32; LANES]>,
    vp: Vec<[f32; LANES]>,
    s: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn grow8(v: &mut Vec<[f32; LANES]>, len: usize) -> &mut [[f32; LANES]] {
    if v.len() < len {
        v.resize(len, [0.0; LANES]);
    }
    &mut v[..len]
}

fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

// ---------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------

/// Read access to a decoded ONNX graph.
struct Graph<'a> {
    graph: &'a pb::GraphProto,
    tensors: HashMap<&'a str, &'a pb::TensorProto>,
}

impl<'a> Graph<'a> {
    fn new(graph: &'a pb::GraphProto) -> Graph<'a> {
        Graph {
            graph,
            tensors: onnx_proto::constants(graph),
        }
    }

    fn tensor(&self, name: &str) -> Result<&'a pb::TensorProto, NativeError> {
        self.tensors
            .get(name)
            .copied()
            .ok_or_else(|| NativeError::Missing { name: name.into() })
    }

    /// The f32 values of tensor `name`, which must have exactly `shape`.
    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, NativeError> {
        let t = self.tensor(name)?;
        if t.dims.len() != shape.len() || t.dims.iter().zip(shape).any(|(&g, &e)| g != e as i64) {
            return Err(NativeError::Shape {
                name: name.into(),
                got: t.dims.clone(),
                expected: shape.to_vec(),
            });
        }
        Ok(onnx_proto::floats(t)?)
    }

    /// A float tensor of one element (any rank).
    fn scalar(&self, name: &str) -> Result<f32, NativeError> {
        let t = self.tensor(name)?;
        if t.dims.iter().any(|&d| d != 1) {
            return Err(NativeError::Shape {
                name: name.into(),
                got: t.dims.clone(),
                expected: vec![],
            });
        }
        Ok(onnx_proto::floats(t)?[0])
    }

    /// The single value of a one-element integer (int64 or int32) tensor.
    fn int(&self, name: &str) -> Result<i64, NativeError> {
        let t = self.tensor(name)?;
        if t.dims.iter().any(|&d| d != 1) {
            return Err(NativeError::Shape {
                name: name.into(),
                got: t.dims.clone(),
                expected: vec![1],
            });
        }
        match onnx_proto::ints(t)?.as_slice() {
            [v] => Ok(*v),
            _ => Err(NativeError::Data {
                name: name.into(),
                reason: "holds no single integer".into(),
            }),
        }
    }

    fn nodes(&self) -> impl Iterator<Item = &'a pb::NodeProto> {
        self.graph.node.iter()
    }

    /// The node of type `op` that reads `value`.
    fn consumer(&self, value: &str, op: &str) -> Option<&'a pb::NodeProto> {
        self.nodes()
            .find(|n| n.op_type == op && n.input.iter().any(|i| i == value))
    }

    fn producer(&self, value: &str) -> Option<&'a pb::NodeProto> {
        self.nodes().find(|n| n.output.iter().any(|o| o == value))
    }

    /// Weights and bias of the linear layer `prefix` (PyTorch `nn.Linear`, exported as
    /// `Add(MatMul(x, W), prefix.bias)` with `W` stored `[k, n]`).
    fn linear(
        &self,
        prefix: &str,
        k: usize,
        n: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), NativeError> {
        let bias_name = format!("{prefix}.bias");
        let b = self.floats(&bias_name, &[n])?;
        let add = self.consumer(&bias_name, "Add").ok_or_else(|| {
            NativeError::Graph(format!("{bias_name} is not the bias of an Add node"))
        })?;
        let matmul = add
            .input
            .iter()
            .filter(|i| **i != bias_name)
            .find_map(|i| self.producer(i))
            .filter(|p| p.op_type == "MatMul")
            .ok_or_else(|| {
                NativeError::Graph(format!("{bias_name} is not added to a MatMul's output"))
            })?;
        let w_name = matmul
            .input
            .get(1)
            .ok_or_else(|| NativeError::Graph(format!("the MatMul of {prefix} has one input")))?;
        if !self.tensors.contains_key(w_name.as_str()) {
            return Err(NativeError::Missing {
                name: format!("{prefix} weight ({w_name})"),
            });
        }
        let w = self.floats(w_name, &[k, n]).map_err(|e| match e {
            NativeError::Shape { got, expected, .. } => NativeError::Shape {
                name: format!("{prefix} weight ({w_name})"),
                got,
                expected,
            },
            e => e,
        })?;
        Ok((w, b))
    }

    fn dense(&self, prefix: &str, k: usize, n: usize) -> Result<Dense, NativeError> {
        let (w, b) = self.linear(prefix, k, n)?;
        Ok(Dense::new(&w, k, n, &b))
    }

    fn norm(&self, prefix: &str, d: usize) -> Result<Norm, NativeError> {
        let g_name = format!("{prefix}.weight");
        let gamma = self.floats(&g_name, &[d])?;
        let beta = self.floats(&format!("{prefix}.bias"), &[d])?;
        let node = self
            .nodes()
            .find(|n| n.op_type == "LayerNormalization" && n.input.get(1) == Some(&g_name))
            .ok_or_else(|| {
                NativeError::Graph(format!("{g_name} is not the scale of a LayerNormalization"))
            })?;
        let mut eps = 1e-5;
        for a in &node.attribute {
            match a.name.as_str() {
                "epsilon" => eps = a.f,
                "axis" if a.i != -1 && a.i != 2 => {
                    return Err(NativeError::Graph(format!(
                        "LayerNormalization of {prefix} is over axis {}, not the last",
                        a.i
                    )))
                }
                _ => {}
            }
        }
        Ok(Norm { gamma, beta, eps })
    }

    fn attention(&self, prefix: &str, d: usize) -> Result<Attention, NativeError> {
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
        let graph_err = |what: &str| NativeError::Graph(format!("attention {prefix}: {what}"));
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
            .and_then(|s| self.producer(s))
            .filter(|p| p.op_type == "Concat" && p.input.len() == 4)
            .ok_or_else(|| graph_err("the head shape is not a Concat of 4 values"))?;
        let heads = self.int(&shape.input[2])?;
        let hd = self.int(&shape.input[3])?;
        if heads <= 0 || hd <= 0 || (heads * hd) as usize != d {
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

    fn layer(
        &self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        attention: bool,
    ) -> Result<Layer, NativeError> {
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

impl From<TensorError> for NativeError {
    fn from(e: TensorError) -> Self {
        NativeError::Data {
            name: e.name,
            reason: e.detail,
        }
    }
}

/// Layer `l` outputs the power of two nearest above `w / 2^(l+1)` (model.py).
fn encoder_sizes(w: usize) -> [usize; 2] {
    let size = |div: f64| (w as f64 / div).max(1.0).log2().ceil().exp2() as usize;
    [size(2.0), size(4.0)]
}

impl NativeModel {
    /// Builds the forward pass of the Uni-AD graph in `proto` with window length `w`
    /// (the input's last dimension, checked by the caller).
    pub(super) fn from_proto(proto: &pb::ModelProto, w: usize) -> Result<NativeModel, NativeError> {
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| NativeError::Graph("the model has no graph".into()))?;
        let g = Graph::new(graph);
        let enc = encoder_sizes(w);
        // H is the width of the Transformer branch's output layer.
        let h = g
            .tensor("trans.2.bias")?
            .dims
            .first()
            .copied()
            .filter(|&h| h > 0)
            .ok_or_else(|| NativeError::Graph("trans.2.bias has no length".into()))?
            as usize;
        let dec: Vec<usize> = enc
            .iter()
            .rev()
            .map(|&s| h.max(h * (s as f64 / h as f64).round_ties_even() as usize))
            .collect();
        let dims = [w, enc[0], enc[1]];
        let ddims = [2 * h, dec[0], dec[1]];
        let mut trans = Vec::new();
        let mut base = Vec::new();
        let mut decoder = Vec::new();
        for i in 0..2 {
            trans.push(g.layer(&format!("trans.{i}"), dims[i], dims[i + 1], true)?);
            base.push(g.layer(&format!("base.{i}"), dims[i], dims[i + 1], false)?);
            decoder.push(g.layer(&format!("decoder.{i}"), ddims[i], ddims[i + 1], false)?);
        }
        let trans_out = g.dense("trans.2", enc[1], h)?;
        let base_out = g.dense("base.2", enc[1], h)?;
        let dec_out = g.dense("decoder.2", dec[1], w)?;

        // mask_last: the input multiplied by a constant [w] vector before anything else.
        let input = graph
            .input
            .first()
            .ok_or_else(|| NativeError::Graph("the graph has no input".into()))?;
        let mut mask = None;
        for node in g.nodes() {
            if node.op_type == "Mul" && node.input.contains(&input.name) {
                let other = node.input.iter().find(|i| **i != input.name);
                match other.map(|o| g.floats(o, &[w])) {
                    Some(Ok(m)) if mask.is_none() => mask = Some(m),
                    _ => {
                        return Err(NativeError::Graph(format!(
                            "the input is multiplied by something other than one [{w}] mask"
                        )))
                    }
                }
            }
        }
        Ok(NativeModel {
            w,
            h,
            mask,
            trans,
            trans_out,
            base,
            base_out,
            dec: decoder,
            dec_out,
            wide: wide_supported(),
        })
    }

    /// Uses the portable kernels even where AVX2 + FMA are available (tests, and the
    /// bench through `KPIWATCH_UNIAD_PORTABLE=1`).
    pub(super) fn portable(mut self) -> NativeModel {
        self.wide = false;
        self
    }

    /// Whether the AVX2 + FMA kernels run.
    pub(super) fn wide(&self) -> bool {
        self.wide
    }

    /// Reconstructs `batch` (row-major `[ents, n, w]`, length checked by the caller).
    pub(super) fn infer(&self, batch: &[f32], ents: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; batch.len()];
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut s) => self.run(batch, ents, n, &mut out, &mut s),
            // Not reachable (no re-entry), but a fresh scratch is always correct.
            Err(_) => self.run(batch, ents, n, &mut out, &mut Scratch::default()),
        });
        out
    }

    fn run(&self, batch: &[f32], ents: usize, n: usize, out: &mut [f32], s: &mut Scratch) {
        let per = (CHUNK_TOKENS / n).max(1);
        let stride = n * self.w;
        let mut e = 0;
        while e < ents {
            let m = per.min(ents - e);
            let x = &batch[e * stride..(e + m) * stride];
            let y = &mut out[e * stride..(e + m) * stride];
            self.chunk_dispatch(x, m, n, y, s);
            e += m;
        }
    }

    fn chunk_dispatch(&self, x: &[f32], ents: usize, n: usize, out: &mut [f32], s: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        if self.wide {
            // SAFETY: `wide` is true only when `wide_supported()` found AVX2 and FMA on
            // this CPU (`from_proto`), the only features `avx2::chunk` requires.
            #[allow(unsafe_code)]
            unsafe {
                avx2::chunk(self, x, ents, n, out, s)
            };
            return;
        }
        portable::chunk(self, x, ents, n, out, s);
    }
}

fn wide_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

// ---------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------

/// The network's functions, compiled once per instruction set: `kernels!(attrs; WIDE)`
/// defines `chunk` and the kernels it calls, each with `attrs` (the target features),
/// over the shared `inline(always)` implementations below. Functions with the same
/// target features call each other safely, so only the entry point needs `unsafe`.
macro_rules! kernels {
    ($(#[$attr:meta])* ; $wide:expr) => {
        use super::*;

        /// The whole network on `ents` entities of `n` tokens.
        $(#[$attr])*
        pub(super) fn chunk(
            m: &NativeModel,
            x: &[f32],
            ents: usize,
            n: usize,
            out: &mut [f32],
            s: &mut Scratch,
        ) {
            let t = ents * n;
            let w = m.w;
            let x: &[f32] = match &m.mask {
                Some(mask) => {
                    let xin = grow(&mut s.xin, t * w);
                    for (row, src) in xin.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
                        for ((o, &v), &k) in row.iter_mut().zip(src).zip(mask) {
                            *o = v * k;
                        }
                    }
                    &s.xin[..t * w]
                }
                None => x,
            };
            let h2 = 2 * m.h;
            let mut z = std::mem::take(&mut s.z);
            let zs = grow(&mut z, t * h2);
            let mut pa = std::mem::take(&mut s.pa);
            let mut pb = std::mem::take(&mut s.pb);
            // Transformer branch -> z[:, ..h]; Base branch -> z[:, h..].
            for (layers, head, col0) in [(&m.trans, &m.trans_out, 0), (&m.base, &m.base_out, m.h)] {
                let last = stack(layers, x, t, n, &mut pa, &mut pb, &mut s.tmp);
                dense(last, t, head, zs, h2, col0, None);
            }
            let last = stack(&m.dec, zs, t, n, &mut pa, &mut pb, &mut s.tmp);
            dense(last, t, &m.dec_out, out, w, 0, None);
            s.z = z;
            s.pa = pa;
            s.pb = pb;
        }

        /// Runs `layers` one after the other from `x`; returns the last output.
        $(#[$attr])*
        fn stack<'b>(
            layers: &[Layer],
            x: &[f32],
            t: usize,
            n: usize,
            pa: &'b mut Vec<f32>,
            pb: &'b mut Vec<f32>,
            tmp: &mut Tmp,
        ) -> &'b [f32] {
            let mut len = 0;
            for (i, l) in layers.iter().enumerate() {
                let dout = l.d_out();
                if i == 0 {
                    let out = grow(pa, t * dout);
                    layer(l, x, t, n, out, tmp);
                } else {
                    let out = grow(pb, t * dout);
                    layer(l, &pa[..len], t, n, out, tmp);
                    std::mem::swap(pa, pb);
                }
                len = t * dout;
            }
            &pa[..len]
        }

        $(#[$attr])*
        fn layer(l: &Layer, x: &[f32], t: usize, n: usize, out: &mut [f32], tmp: &mut Tmp) {
            let (din, dout) = (l.d_in(), l.d_out());
            let x1 = grow(&mut tmp.x1, t * din);
            match &l.mix {
                Mix::Attention(a) => {
                    let qkv = grow(&mut tmp.qkv, t * 3 * din);
                    dense(x, t, &a.qkv, qkv, 3 * din, 0, None);
                    let att = grow(&mut tmp.attn, t * din);
                    attention(a, qkv, t / n, n, att, &mut tmp.kt, &mut tmp.vp, &mut tmp.s);
                    dense(att, t, &a.o, x1, din, 0, Some(x));
                }
                Mix::Dense(m) => dense(x, t, m, x1, din, 0, Some(x)),
            }
            layer_norm(x1, din, &l.norm1);
            let y = grow(&mut tmp.y, t * dout);
            dense(x1, t, &l.reduce, y, dout, 0, None);
            let hh = grow(&mut tmp.hh, t * 2 * dout);
            dense(y, t, &l.ff0, hh, 2 * dout, 0, None);
            gelu(hh);
            dense(hh, t, &l.ff3, out, dout, 0, Some(y));
            layer_norm(out, dout, &l.norm2);
        }

        $(#[$attr])*
        pub(super) fn dense(
            a: &[f32],
            rows: usize,
            d: &Dense,
            c: &mut [f32],
            ldc: usize,
            col0: usize,
            res: Option<&[f32]>,
        ) {
            dense_impl::<$wide>(a, rows, d, c, ldc, col0, res)
        }

        $(#[$attr])*
        fn layer_norm(x: &mut [f32], d: usize, norm: &Norm) {
            layer_norm_impl(x, d, norm)
        }

        $(#[$attr])*
        fn gelu(x: &mut [f32]) {
            gelu_impl(x)
        }

        #[allow(clippy::too_many_arguments)]
        $(#[$attr])*
        fn attention(
            a: &Attention,
            qkv: &[f32],
            ents: usize,
            n: usize,
            out: &mut [f32],
            kt: &mut Vec<[f32; LANES]>,
            vp: &mut Vec<[f32; LANES]>,
            s: &mut Vec<f32>,
        ) {
            attention_impl::<$wide>(a, qkv, ents, n, out, kt, vp, s)
        }
    };
}

/// The kernels for any CPU (SSE2 on x86-64, NEON on aarch64).
mod portable {
    kernels!(; false);
}

/// The kernels with AVX2 and FMA; callable only where `wide_supported()`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    kernels!(#[target_feature(enable = "avx2,fma")]; true);
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// One small matrix product `C = A @ B (+ bias) (+ residual)` for the blocked kernel.
struct Gemm<'a> {
    /// Row `r` of A starts at `a[r · lda]` and has `k` values.
    a: &'a [f32],
    lda: usize,
    rows: usize,
    k: usize,
    /// B in panels of 8 columns: panel `p` is `panels[p·k..(p+1)·k]`.
    panels: &'a [[f32; PANEL]],
    /// Columns of C written (the last panel may be partial).
    cols: usize,
    /// Added to every row (at least `cols` values, padded to whole panels).
    bias: Option<&'a [f32]>,
    /// Added too: row `r` at `res[r · ldr]`.
    res: Option<(&'a [f32], usize)>,
}

/// `c[r · ldc + col0 + j] = (A @ B)[r, j] (+ bias[j]) (+ res[r, j])`.
#[inline(always)]
fn gemm<const WIDE: bool>(g: &Gemm<'_>, c: &mut [f32], ldc: usize, col0: usize) {
    let mut i = 0;
    while i + 4 <= g.rows {
        row_block::<4, WIDE>(g, i, c, ldc, col0);
        i += 4;
    }
    match g.rows - i {
        3 => row_block::<3, WIDE>(g, i, c, ldc, col0),
        2 => row_block::<2, WIDE>(g, i, c, ldc, col0),
        1 => row_block::<1, WIDE>(g, i, c, ldc, col0),
        _ => {}
    }
}

/// A dense layer on `rows` tokens: `c[r, col0 + j] = a[r, :] @ W[:, j] + b[j]
/// (+ res[r, j])`, `a` `[rows, k]`, `c` row stride `ldc`, `res` row stride `d.n`.
#[inline(always)]
fn dense_impl<const WIDE: bool>(
    a: &[f32],
    rows: usize,
    d: &Dense,
    c: &mut [f32],
    ldc: usize,
    col0: usize,
    res: Option<&[f32]>,
) {
    let g = Gemm {
        a,
        lda: d.k,
        rows,
        k: d.k,
        panels: &d.panels,
        cols: d.n,
        bias: Some(&d.bias),
        res: res.map(|r| (r, d.n)),
    };
    gemm::<WIDE>(&g, c, ldc, col0);
}

#[inline(always)]
fn row_block<const MR: usize, const WIDE: bool>(
    g: &Gemm<'_>,
    row0: usize,
    c: &mut [f32],
    ldc: usize,
    col0: usize,
) {
    let np = g.cols.div_ceil(PANEL);
    let mut p = 0;
    if WIDE || PORTABLE_FMA {
        // 16 columns at a time: 2·MR accumulators of 8 lanes (AVX2: one register each).
        while p + 2 <= np {
            let acc = micro::<MR, 2, true>(g, row0, p);
            store::<MR, 2>(g, &acc, row0, p, c, ldc, col0);
            p += 2;
        }
        if p < np {
            let acc = micro::<MR, 1, true>(g, row0, p);
            store::<MR, 1>(g, &acc, row0, p, c, ldc, col0);
        }
    } else {
        // SSE2: 8 columns are two registers already.
        while p < np {
            let acc = micro::<MR, 1, false>(g, row0, p);
            store::<MR, 1>(g, &acc, row0, p, c, ldc, col0);
            p += 1;
        }
    }
}

/// `MR` rows × `NP` panels of 8 columns of `A @ B`, accumulated over all of `k`.
#[inline(always)]
fn micro<const MR: usize, const NP: usize, const FMA: bool>(
    g: &Gemm<'_>,
    row0: usize,
    p0: usize,
) -> [[[f32; PANEL]; NP]; MR] {
    let k = g.k;
    let mut arows: [&[f32]; MR] = [&[]; MR];
    for (r, row) in arows.iter_mut().enumerate() {
        *row = &g.a[(row0 + r) * g.lda..][..k];
    }
    let mut bp: [&[[f32; PANEL]]; NP] = [&[]; NP];
    for (q, panel) in bp.iter_mut().enumerate() {
        *panel = &g.panels[(p0 + q) * k..][..k];
    }
    let mut acc = [[[0.0f32; PANEL]; NP]; MR];
    for kk in 0..k {
        let mut bv = [[0.0f32; PANEL]; NP];
        for q in 0..NP {
            bv[q] = bp[q][kk];
        }
        for r in 0..MR {
            let av = arows[r][kk];
            for q in 0..NP {
                for l in 0..PANEL {
                    acc[r][q][l] = madd::<FMA>(av, bv[q][l], acc[r][q][l]);
                }
            }
        }
    }
    acc
}

#[inline(always)]
fn store<const MR: usize, const NP: usize>(
    g: &Gemm<'_>,
    acc: &[[[f32; PANEL]; NP]; MR],
    row0: usize,
    p0: usize,
    c: &mut [f32],
    ldc: usize,
    col0: usize,
) {
    for (r, acc_r) in acc.iter().enumerate() {
        let row = row0 + r;
        for (q, acc_q) in acc_r.iter().enumerate() {
            let j0 = (p0 + q) * PANEL;
            let mut v = *acc_q;
            if let Some(bias) = g.bias {
                let b = &bias[j0..j0 + PANEL];
                for l in 0..PANEL {
                    v[l] += b[l];
                }
            }
            if j0 + PANEL <= g.cols {
                if let Some((res, ldr)) = g.res {
                    let rs = &res[row * ldr + j0..][..PANEL];
                    for l in 0..PANEL {
                        v[l] += rs[l];
                    }
                }
                c[row * ldc + col0 + j0..][..PANEL].copy_from_slice(&v);
            } else {
                // The last, partial panel of a layer whose width is not a multiple of 8.
                for l in 0..g.cols - j0 {
                    let extra = g.res.map_or(0.0, |(res, ldr)| res[row * ldr + j0 + l]);
                    c[row * ldc + col0 + j0 + l] = v[l] + extra;
                }
            }
        }
    }
}

/// Sum of `x` with 8 independent partial sums (vectorisable).
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += v;
    }
    s
}

/// LayerNorm of every row of `x` (row length `d`), in place.
#[inline(always)]
fn layer_norm_impl(x: &mut [f32], d: usize, norm: &Norm) {
    let inv_d = 1.0 / d as f32;
    let (g, b) = (&norm.gamma[..d], &norm.beta[..d]);
    for row in x.chunks_exact_mut(d) {
        let mean = sum8(row) * inv_d;
        let mut acc = [0.0f32; 8];
        let chunks = row.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for l in 0..8 {
                let v = c[l] - mean;
                acc[l] += v * v;
            }
        }
        let mut ss =
            ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for &v in rest {
            ss += (v - mean) * (v - mean);
        }
        let inv = 1.0 / (ss * inv_d + norm.eps).sqrt();
        for ((v, &gi), &bi) in row.iter_mut().zip(g).zip(b) {
            *v = (*v - mean) * inv * gi + bi;
        }
    }
}

/// erf(x), the rational approximation of Eigen's `generic_fast_erf_float` (x clamped to
/// ±4) evaluated in f64: max abs error 6.5e-8 before the final rounding to f32.
#[inline(always)]
fn erf64(x: f64) -> f64 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_258_013_06e-10;
    p = p * x2 + 2.770_681_424_959_02e-8;
    p = p * x2 - 2.101_024_020_825_08e-6;
    p = p * x2 - 5.692_506_394_623_46e-5;
    p = p * x2 - 7.349_906_303_268_55e-4;
    p = p * x2 - 2.954_599_808_540_25e-3;
    p = p * x2 - 1.609_603_332_624_15e-2;
    let mut q = -1.456_607_184_649_96e-5;
    q = q * x2 - 2.133_740_552_789_05e-4;
    q = q * x2 - 1.682_826_974_382_03e-3;
    q = q * x2 - 7.373_329_167_204_68e-3;
    q = q * x2 - 1.426_473_905_141_89e-2;
    x * p / q
}

/// erf for f32 arguments (through [`erf64`]).
#[cfg(test)]
fn erf(x: f32) -> f32 {
    erf64(f64::from(x)) as f32
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))`, in place.
#[inline(always)]
fn gelu_impl(x: &mut [f32]) {
    for v in x.iter_mut() {
        let xd = f64::from(*v);
        *v = (0.5 * xd * (1.0 + erf64(xd * std::f64::consts::FRAC_1_SQRT_2))) as f32;
    }
}

/// Self-attention of every entity (`ents` × `n` tokens): `qkv` is `[t, 3d]` (Q | K | V),
/// `out` `[t, d]`, heads side by side. Per (entity, head), `S = Q Kᵀ` and `O = P V` run
/// through the blocked kernel: Kᵀ and V packed into panels of 8 keys / 8 features.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attention_impl<const WIDE: bool>(
    a: &Attention,
    qkv: &[f32],
    ents: usize,
    n: usize,
    out: &mut [f32],
    kt: &mut Vec<[f32; LANES]>,
    vp: &mut Vec<[f32; LANES]>,
    s: &mut Vec<f32>,
) {
    let (heads, hd) = (a.heads, a.hd);
    let d = heads * hd;
    let ld = 3 * d;
    // Keys in panels of 8 (the last one zero-padded, its scores masked out).
    let nc = n.div_ceil(LANES);
    let ncp = nc * LANES;
    let kt = grow8(kt, nc * hd);
    let vp = grow8(vp, (hd / LANES) * n);
    let s = grow(s, n * ncp);
    for e in 0..ents {
        let tok = &qkv[e * n * ld..(e + 1) * n * ld];
        let o_ent = &mut out[e * n * d..(e + 1) * n * d];
        for h in 0..heads {
            // kt[jc·hd + c][l] = K[jc·8 + l, h·hd + c]; vp[cc·n + j] = V[j, h·hd + cc·8..][..8].
            kt.fill([0.0; LANES]);
            for (j, row) in tok.chunks_exact(ld).enumerate() {
                let k = &row[d + h * hd..][..hd];
                let (jc, l) = (j / LANES, j % LANES);
                for (c, &kc) in k.iter().enumerate() {
                    kt[jc * hd + c][l] = kc;
                }
                let v = &row[2 * d + h * hd..][..hd];
                for (cc, vc) in v.chunks_exact(LANES).enumerate() {
                    vp[cc * n + j].copy_from_slice(vc);
                }
            }
            let scores = Gemm {
                a: &tok[h * hd..],
                lda: ld,
                rows: n,
                k: hd,
                panels: kt,
                cols: ncp,
                bias: None,
                res: None,
            };
            gemm::<WIDE>(&scores, s, ncp, 0);
            for row in s.chunks_exact_mut(ncp) {
                let (keys, pad) = row.split_at_mut(n);
                for v in keys.iter_mut() {
                    let x = *v * a.scale;
                    let x = if x < a.lo { a.lo } else { x };
                    let x = if x > a.hi { a.hi } else { x };
                    *v = exp(x);
                }
                pad.fill(0.0);
                let sum = sum8(keys);
                for v in row.iter_mut() {
                    *v /= sum;
                }
            }
            let mix = Gemm {
                a: s,
                lda: ncp,
                rows: n,
                k: n,
                panels: vp,
                cols: hd,
                bias: None,
                res: None,
            };
            gemm::<WIDE>(&mix, o_ent, d, h * hd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_within_1_2e_7_of_libm() {
        let mut worst = 0.0f64;
        for i in -80_000..=80_000 {
            let x = i as f32 * 1e-4;
            let err = (f64::from(erf(x)) - libm::erf(f64::from(x))).abs();
            worst = worst.max(err);
        }
        assert!(worst <= 1.2e-7, "max abs error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(100.0), 1.0);
        assert_eq!(erf(-100.0), -1.0);
    }

    #[test]
    fn dense_kernel_matches_a_naive_product_for_every_shape() {
        // Shapes with row and column tails, with and without a residual, both kernels.
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for (rows, k, n) in [
            (1, 3, 5),
            (7, 16, 8),
            (9, 64, 192),
            (6, 32, 24),
            (13, 8, 17),
        ] {
            let w: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let a: Vec<f32> = (0..rows * k).map(|_| next()).collect();
            let r: Vec<f32> = (0..rows * n).map(|_| next()).collect();
            let d = Dense::new(&w, k, n, &b);
            let ldc = n + 3;
            for res in [None, Some(&r[..])] {
                let mut want = vec![0.0f32; rows * ldc];
                for i in 0..rows {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|kk| a[i * k + kk] * w[kk * n + j]).sum();
                        want[i * ldc + 2 + j] = dot + b[j] + res.map_or(0.0, |r| r[i * n + j]);
                    }
                }
                let mut got = vec![0.0f32; rows * ldc];
                portable::dense(&a, rows, &d, &mut got, ldc, 2, res);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(err < 1e-5, "portable {rows}x{k}x{n}: {err}");
                if wide_supported() {
                    let mut got = vec![0.0f32; rows * ldc];
                    wide_dense(&a, rows, &d, &mut got, ldc, res);
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    assert!(err < 1e-5, "avx2 {rows}x{k}x{n}: {err}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn wide_dense(
        a: &[f32],
        rows: usize,
        d: &Dense,
        c: &mut [f32],
        ldc: usize,
        res: Option<&[f32]>,
    ) {
        // SAFETY: called only when `wide_supported()` found AVX2 and FMA.
        #[allow(unsafe_code)]
        unsafe {
            avx2::dense(a, rows, d, c, ldc, 2, res)
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn wide_dense(_: &[f32], _: usize, _: &Dense, _: &mut [f32], _: usize, _: Option<&[f32]>) {}
}
