//! The DynamicRegress Siamese model in tract: the only tract import of `detect/regress`.
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
//! Both are loaded, optimised and made runnable once ([`RegressModel::load`]); the plans
//! are immutable, so one model serves any number of threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

/// File name of the encoder inside a model directory.
pub const ENCODER_FILE: &str = "regress_encoder.onnx";
/// File name of the head inside a model directory.
pub const HEAD_FILE: &str = "regress_head.onnx";

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
    /// Inference failed or the input had the wrong shape.
    #[error("regression model inference failed: {0}")]
    Inference(String),
}

fn infer_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Inference(format!("{e:#}"))
}

type Plan = Arc<TypedSimplePlan>;

/// The loaded encoder and head.
#[derive(Debug, Clone)]
pub struct RegressModel {
    encoder: Plan,
    head: Plan,
    hidden: usize,
}

fn load_plan(path: &Path) -> Result<Plan, ModelError> {
    let err = |e: TractError| ModelError::Load {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    };
    tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(err)
}

impl RegressModel {
    /// Loads `regress_encoder.onnx` and `regress_head.onnx` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        Self::load_files(&dir.join(ENCODER_FILE), &dir.join(HEAD_FILE))
    }

    /// Loads an encoder and a head from explicit paths.
    pub fn load_files(encoder: &Path, head: &Path) -> Result<Self, ModelError> {
        let encoder_plan = load_plan(encoder)?;
        let head_plan = load_plan(head)?;
        let mut model = RegressModel {
            encoder: encoder_plan,
            head: head_plan,
            hidden: 0,
        };
        // Discover the embedding size with a one-step probe rather than trusting metadata.
        let z = model.embed_batch(&[0.0, 0.0], 1, 1)?;
        model.hidden = z.len();
        if model.hidden == 0 {
            return Err(ModelError::Load {
                path: encoder.to_path_buf(),
                message: "empty embedding".into(),
            });
        }
        Ok(model)
    }

    /// Embedding size H.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Embeds `batch` sequences of `len` steps each; `x` is `[batch, len, 2]` row-major.
    /// Returns `[batch, H]` row-major.
    pub fn embed_batch(&self, x: &[f32], batch: usize, len: usize) -> Result<Vec<f32>, ModelError> {
        if batch == 0 || len == 0 || x.len() != batch * len * 2 {
            return Err(ModelError::Inference(format!(
                "input has {} values, expected batch {batch} x length {len} x 2",
                x.len()
            )));
        }
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
        let h = self.hidden.max(1);
        if batch == 0 || z1.len() != batch * h || z2.len() != batch * h {
            return Err(ModelError::Inference(format!(
                "embeddings have {} and {} values, expected batch {batch} x {h}",
                z1.len(),
                z2.len()
            )));
        }
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
        Ok(p.chunks_exact(2).map(|r| r[1]).collect())
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
