//! The DynamicRegress Siamese model: the only module of `detect/regress` that reads ONNX
//! (tract here, the protobuf in its [`lstm`] submodule).
//!
//! The ONNX export is split in two graphs so that a baseline's embedding can be computed
//! once and cached (DESIGN.md):
//!
//! * `regress_encoder.onnx`: `x [batch, T, 2]` (`(workload, kpi)` per step, normalised by
//!   [`super::features`]) → `z [batch, H]`, the last hidden state of two stacked
//!   single-layer LSTMs (a 2-layer `nn.LSTM` trips a tract bug when batch ≠ 1). `batch`
//!   and `T` are symbolic: any batch of equal-length sequences runs.
//! * `regress_head.onnx`: `z1 [batch, H]`, `z2 [batch, H]` → `p [batch, 2]`, the softmax of
//!   a linear layer over `|z1 − z2|`; column 1 is P(regression).
//!
//! Two engines run them ([`Engine`]): tract, for any graph it can load, and the native
//! code of [`lstm`] (same weights, read from the same files), which avoids tract's
//! per-step scan-loop overhead (about 8× faster at batch 1, T = 300). [`RegressModel::load`]
//! always builds the tract plans; it then uses the native engine when both graphs have
//! the shape [`lstm`] supports **and** it agrees with tract within [`PROBE_TOL`] on a
//! fixed probe, and otherwise stays on tract with a warning (a custom model still works).
//! Everything is immutable once loaded, so one model serves any number of threads.

use super::lstm;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

pub use crate::config::judge::{ENCODER_FILE, HEAD_FILE};

/// Largest absolute difference between the native engine and tract allowed on the
/// load-time probe (embeddings and probabilities).
pub const PROBE_TOL: f32 = 1e-4;

/// A model failure.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The ONNX file could not be loaded or optimised.
    #[error("cannot load the regression model {path}: {message}")]
    Load {
        /// File.
        path: PathBuf,
        /// tract's error chain.
        message: String,
    },
    /// [`Engine::Native`] was asked for and the files cannot run natively.
    #[error("the regression model {path} cannot run natively: {source}")]
    Native {
        /// File (the encoder's, for a probe mismatch).
        path: PathBuf,
        /// Why.
        source: lstm::GraphError,
    },
    /// Inference failed or the input had the wrong shape.
    #[error("regression model inference failed: {0}")]
    Inference(String),
}

fn infer_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Inference(format!("{e:#}"))
}

type Plan = Arc<TypedSimplePlan>;

/// Which code runs the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// Native when the graphs are supported and agree with tract on the probe, else tract
    /// (with a `warn` log saying why).
    #[default]
    Auto,
    /// tract only (benchmarks, tests, or to rule the native code out).
    Tract,
    /// Native or a [`ModelError::Native`] load error.
    Native,
}

/// The native encoder and head, both checked against tract.
#[derive(Debug)]
struct Native {
    encoder: lstm::Encoder,
    head: lstm::Head,
}

/// The loaded encoder and head.
#[derive(Debug, Clone)]
pub struct RegressModel {
    encoder: Plan,
    head: Plan,
    native: Option<Arc<Native>>,
    hidden: usize,
}

fn load_plan(path: &Path) -> Result<Plan, ModelError> {
    let err = |message: String| ModelError::Load {
        path: path.to_path_buf(),
        message,
    };
    let proto = crate::detect::onnx_proto::read_proto(path).map_err(err)?;
    crate::detect::onnx_proto::check_for_tract(&proto).map_err(|e| err(e.to_string()))?;
    // What `model_for_path` does, on the checked proto: external data is looked up
    // beside the file.
    let dir = path.parent().and_then(Path::to_str);
    let parsed = tract_onnx::onnx()
        .parse(&proto, dir)
        .map_err(|e| err(format!("{e:#}")))?;
    if !parsed.unresolved_inputs.is_empty() {
        return Err(err(format!(
            "could not resolve inputs {:?}",
            parsed.unresolved_inputs
        )));
    }
    parsed
        .model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| err(format!("{e:#}")))
}

/// Deterministic probe input: `batch` sequences of `len` steps, workload in `[0, 1.5]`
/// and KPI values up to ±30 (the normalised range, saturating some gates).
fn probe_sequences(batch: usize, len: usize, seed: usize) -> Vec<f32> {
    (0..batch * len)
        .flat_map(|i| {
            let (b, t) = ((i / len + seed) as f32, (i % len) as f32);
            let workload = 0.75 + 0.75 * (0.13 * t + 0.7 * b).sin();
            let kpi = 3.0 * (0.41 * t + b).sin() + if t as usize % 11 == 5 { 27.0 } else { 0.0 };
            [workload, kpi]
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

impl Native {
    /// Checks a native encoder and head against the tract plans of `model`.
    fn new(
        encoder: lstm::Encoder,
        head: lstm::Head,
        model: &RegressModel,
    ) -> Result<Self, lstm::GraphError> {
        if encoder.input_size() != 2 {
            return Err(lstm::GraphError::Graph(format!(
                "the encoder reads {} features per step, expected 2",
                encoder.input_size()
            )));
        }
        if encoder.hidden() != model.hidden || head.hidden() != model.hidden {
            return Err(lstm::GraphError::Graph(format!(
                "hidden sizes: native encoder {}, native head {}, tract {}",
                encoder.hidden(),
                head.hidden(),
                model.hidden
            )));
        }
        let native = Native { encoder, head };
        native.probe(model)?;
        Ok(native)
    }

    /// Runs the fixed probe through both engines.
    fn probe(&self, model: &RegressModel) -> Result<(), lstm::GraphError> {
        let fail = |what: String, diff: f32| lstm::GraphError::Mismatch { what, diff };
        let tract_err = |e: ModelError| fail(format!("tract failed: {e}"), f32::INFINITY);
        // (batch, len): batch 1 at several lengths, and a batch of 3.
        let mut zs = Vec::new();
        for (i, (batch, len)) in [(1, 1), (1, 17), (1, 64), (3, 40)].into_iter().enumerate() {
            let x = probe_sequences(batch, len, i);
            let want = model.tract_embed(&x, batch, len).map_err(tract_err)?;
            let got = self.encoder.embed_batch(&x, batch, len);
            let d = max_abs_diff(&got, &want);
            if d > PROBE_TOL {
                return Err(fail(format!("encoder, batch {batch} length {len}"), d));
            }
            zs.extend(want);
        }
        // Head: every probe embedding against the next one (6 pairs).
        let h = model.hidden;
        let n = zs.len() / h;
        let z2: Vec<f32> = zs[h..].iter().chain(&zs[..h]).copied().collect();
        let want = model.tract_softmax(&zs, &z2, n).map_err(tract_err)?;
        let d = max_abs_diff(&self.head.softmax_batch(&zs, &z2), &want);
        if d > PROBE_TOL {
            return Err(fail(format!("head, batch {n}"), d));
        }
        Ok(())
    }
}

impl RegressModel {
    /// Loads `regress_encoder.onnx` and `regress_head.onnx` from `dir` ([`Engine::Auto`]).
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Self::load_files(&dir.join(ENCODER_FILE), &dir.join(HEAD_FILE))
    }

    /// Loads an encoder and a head from explicit paths ([`Engine::Auto`]).
    pub fn load_files(encoder: &Path, head: &Path) -> Result<Self, ModelError> {
        Self::load_files_with(encoder, head, Engine::Auto)
    }

    /// Loads from `dir` with the given engine choice.
    pub fn load_with(dir: &Path, engine: Engine) -> Result<Self, ModelError> {
        Self::load_files_with(&dir.join(ENCODER_FILE), &dir.join(HEAD_FILE), engine)
    }

    /// Loads an encoder and a head from explicit paths with the given engine choice.
    pub fn load_files_with(
        encoder: &Path,
        head: &Path,
        engine: Engine,
    ) -> Result<Self, ModelError> {
        crate::detect::onnx_proto::contain_panics(|| Self::load_checked(encoder, head, engine))
            .map_err(|e| ModelError::Load {
                path: encoder.to_path_buf(),
                message: format!("{e} (with the head {})", head.display()),
            })?
    }

    /// [`RegressModel::load_files_with`] without the panic guard.
    fn load_checked(encoder: &Path, head: &Path, engine: Engine) -> Result<Self, ModelError> {
        let encoder_plan = load_plan(encoder)?;
        let head_plan = load_plan(head)?;
        let mut model = RegressModel {
            encoder: encoder_plan,
            head: head_plan,
            native: None,
            hidden: 0,
        };
        // Discover the embedding size with a one-step probe rather than trusting metadata.
        // A file that loads but cannot run is named in the error like one that cannot load.
        let failed = |path: &Path| {
            let path = path.to_path_buf();
            move |e: ModelError| ModelError::Load {
                path,
                message: format!("the load-time probe failed: {e}"),
            }
        };
        let z = model
            .tract_embed(&[0.0, 0.0], 1, 1)
            .map_err(failed(encoder))?;
        model.hidden = z.len();
        if model.hidden == 0 {
            return Err(ModelError::Load {
                path: encoder.to_path_buf(),
                message: "empty embedding".into(),
            });
        }
        // NaN or overflowing weights run in tract and make every probability NaN, which
        // compares as "no regression": refuse them here, each file by its own probe.
        let not_finite = |path: &Path, what: &str| ModelError::Load {
            path: path.to_path_buf(),
            message: format!("{what} of a finite probe is not finite (NaN or huge weights)"),
        };
        let probe = probe_sequences(1, 8, 0);
        let z = model.tract_embed(&probe, 1, 8).map_err(failed(encoder))?;
        if z.iter().any(|x| !x.is_finite()) {
            return Err(not_finite(encoder, "the embedding"));
        }
        let z2: Vec<f32> = z.iter().map(|x| x + 0.5).collect();
        let p = model.tract_softmax(&z, &z2, 1).map_err(failed(head))?;
        if p.iter().any(|p| !p.is_finite()) {
            return Err(not_finite(head, "the probability"));
        }
        let native = |model: &RegressModel| -> Result<Native, ModelError> {
            let err = |path: &Path| {
                let path = path.to_path_buf();
                move |source| ModelError::Native { path, source }
            };
            let enc = lstm::Encoder::load(encoder).map_err(err(encoder))?;
            let hd = lstm::Head::load(head).map_err(err(head))?;
            Native::new(enc, hd, model).map_err(err(encoder))
        };
        match engine {
            Engine::Tract => {}
            Engine::Native => model.native = Some(Arc::new(native(&model)?)),
            Engine::Auto => match native(&model) {
                Ok(n) => model.native = Some(Arc::new(n)),
                Err(e) => tracing::warn!(
                    error = %e,
                    "regression model: the native engine cannot run these files, using tract (slower)"
                ),
            },
        }
        Ok(model)
    }

    /// Switches to a native encoder and head (tests: from an edited proto) if they agree
    /// with this model's tract plans on the probe; on error the engine is unchanged.
    #[cfg(test)]
    pub(crate) fn use_native(
        &mut self,
        encoder: lstm::Encoder,
        head: lstm::Head,
    ) -> Result<(), lstm::GraphError> {
        self.native = Some(Arc::new(Native::new(encoder, head, self)?));
        Ok(())
    }

    /// The engine in use: `"native"` or `"tract"`.
    pub fn engine(&self) -> &'static str {
        if self.native.is_some() {
            "native"
        } else {
            "tract"
        }
    }

    /// Embedding size H.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Embeds `batch` sequences of `len` steps each; `x` is `[batch, len, 2]` row-major.
    /// Returns `[batch, H]` row-major.
    pub fn embed_batch(&self, x: &[f32], batch: usize, len: usize) -> Result<Vec<f32>, ModelError> {
        match &self.native {
            Some(native) => {
                check_input(x, batch, len)?;
                Ok(native.encoder.embed_batch(x, batch, len))
            }
            None => self.tract_embed(x, batch, len),
        }
    }

    fn tract_embed(&self, x: &[f32], batch: usize, len: usize) -> Result<Vec<f32>, ModelError> {
        check_input(x, batch, len)?;
        let t = Tensor::from_shape(&[batch, len, 2], x).map_err(infer_err)?;
        let out = self.encoder.run(tvec!(t.into())).map_err(infer_err)?;
        let z = out
            .first()
            .ok_or_else(|| infer_err("encoder returned nothing"))?;
        Ok(z.to_plain_array_view::<f32>()
            .map_err(infer_err)?
            .iter()
            .copied()
            .collect())
    }

    /// Embeds one sequence (`[len, 2]` row-major, `len = x.len() / 2`).
    pub fn embed(&self, x: &[f32]) -> Result<Vec<f32>, ModelError> {
        self.embed_batch(x, 1, x.len() / 2)
    }

    /// P(regression) for `batch` pairs of embeddings, each `[batch, H]` row-major.
    pub fn probability_batch(
        &self,
        z1: &[f32],
        z2: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let p = match &self.native {
            Some(native) => {
                self.check_embeddings(z1, z2, batch)?;
                native.head.softmax_batch(z1, z2)
            }
            None => self.tract_softmax(z1, z2, batch)?,
        };
        Ok(p.chunks_exact(2).map(|r| r[1]).collect())
    }

    fn check_embeddings(&self, z1: &[f32], z2: &[f32], batch: usize) -> Result<(), ModelError> {
        let h = self.hidden.max(1);
        if batch == 0 || z1.len() != batch * h || z2.len() != batch * h {
            return Err(ModelError::Inference(format!(
                "embeddings have {} and {} values, expected batch {batch} x {h}",
                z1.len(),
                z2.len()
            )));
        }
        Ok(())
    }

    /// Both softmax columns from tract, `[batch, 2]`.
    fn tract_softmax(&self, z1: &[f32], z2: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
        self.check_embeddings(z1, z2, batch)?;
        let h = self.hidden;
        let a = Tensor::from_shape(&[batch, h], z1).map_err(infer_err)?;
        let b = Tensor::from_shape(&[batch, h], z2).map_err(infer_err)?;
        let out = self
            .head
            .run(tvec!(a.into(), b.into()))
            .map_err(infer_err)?;
        let p = out
            .first()
            .ok_or_else(|| infer_err("head returned nothing"))?;
        let p: Vec<f32> = p
            .to_plain_array_view::<f32>()
            .map_err(infer_err)?
            .iter()
            .copied()
            .collect();
        if p.len() != batch * 2 {
            return Err(infer_err(format!(
                "head returned {} values for batch {batch}",
                p.len()
            )));
        }
        Ok(p)
    }

    /// P(regression) of one pair of embeddings (e.g. a cached baseline and a fresh current).
    pub fn probability(&self, z_baseline: &[f32], z_current: &[f32]) -> Result<f32, ModelError> {
        Ok(self.probability_batch(z_baseline, z_current, 1)?[0])
    }

    /// P(regression) of two normalised sequences (`[len, 2]` each, lengths may differ).
    pub fn pair_probability(&self, baseline: &[f32], current: &[f32]) -> Result<f32, ModelError> {
        let zb = self.embed(baseline)?;
        let zc = self.embed(current)?;
        self.probability(&zb, &zc)
    }
}

fn check_input(x: &[f32], batch: usize, len: usize) -> Result<(), ModelError> {
    if batch == 0 || len == 0 || x.len() != batch * len * 2 {
        return Err(ModelError::Inference(format!(
            "input has {} values, expected batch {batch} x length {len} x 2",
            x.len()
        )));
    }
    Ok(())
}
