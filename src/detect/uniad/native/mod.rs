//! A native Rust forward pass for the Uni-AD architecture of `models/train/uniad/model.py`.
//!
//! The ONNX file stays the single source of truth: [`NativeModel::from_proto`] reads every
//! weight, bias, LayerNorm epsilon, head count, attention scale and score clamp from the
//! decoded graph (initializers, found through the nodes that use them), checks each
//! tensor's presence and shape against the architecture derived from W and H, and
//! returns a [`GraphError`] naming what is missing or wrong. [`super::UniadModel`] then
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

use tract_onnx::pb;

use crate::detect::onnx_graph::{Graph, GraphError};

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

mod kernels;
mod weights;

/// Layer `l` outputs the power of two nearest above `w / 2^(l+1)` (model.py).
fn encoder_sizes(w: usize) -> [usize; 2] {
    let size = |div: f64| (w as f64 / div).max(1.0).log2().ceil().exp2() as usize;
    [size(2.0), size(4.0)]
}

impl NativeModel {
    /// Builds the forward pass of the Uni-AD graph in `proto` with window length `w`
    /// (the input's last dimension, checked by the caller).
    pub(super) fn from_proto(proto: &pb::ModelProto, w: usize) -> Result<NativeModel, GraphError> {
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| GraphError::Graph("the model has no graph".into()))?;
        let g = Graph::new(graph);
        let enc = encoder_sizes(w);
        // H is the width of the Transformer branch's output layer.
        let h = g
            .tensor("trans.2.bias")?
            .dims
            .first()
            .copied()
            .filter(|&h| h > 0)
            .ok_or_else(|| GraphError::Graph("trans.2.bias has no length".into()))?
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
            .ok_or_else(|| GraphError::Graph("the graph has no input".into()))?;
        let mut mask = None;
        for node in g.nodes() {
            if node.op_type == "Mul" && node.input.contains(&input.name) {
                let other = node.input.iter().find(|i| **i != input.name);
                match other.map(|o| g.floats(o, &[w])) {
                    Some(Ok(m)) if mask.is_none() => mask = Some(m),
                    _ => {
                        return Err(GraphError::Graph(format!(
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
                kernels::avx2::chunk(self, x, ents, n, out, s)
            };
            return;
        }
        kernels::portable::chunk(self, x, ents, n, out, s);
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
