//! The Uni-AD ONNX model run with tract: the only tract import for Uni-AD.
//!
//! The model maps `x: [batch, n, w]` (robust-z-scored windows, one token per metric)
//! to its reconstruction of the same shape; `batch` and `n` are symbolic, `w` is
//! fixed by the export. It is loaded, checked and optimised once ([`UniadModel::load`]);
//! [`UniadModel::infer`] then runs any batch size and metric count.
//!
//! Two execution modes ([`PlanMode`]): one symbolic plan that resolves `batch` and
//! `n` at run time, or plans concretised per shape bucket (batch rounded up to a
//! power of two, padded with zero windows; `n` exact) and cached. Building a
//! concrete plan costs milliseconds, so it pays only when shapes repeat, which they
//! do in the agent (same entities every cycle). `benches/uniad.rs` measures both.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

/// Why the model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file could not be read.
    #[error("cannot read Uni-AD model {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a loadable ONNX model (corrupt, truncated, unsupported ops).
    #[error("Uni-AD model {path} is not a valid ONNX model: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// tract's explanation.
        reason: String,
    },
    /// The model loads but does not have Uni-AD's signature.
    #[error("Uni-AD model {path} has the wrong signature: {reason} (expected one input [batch, n, W] and one output of the same shape)")]
    Signature {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The caller's buffer does not match `batch × n × w`.
    #[error("input holds {got} values, expected batch {batch} x n {n} x w {w}")]
    InputSize {
        /// Values given.
        got: usize,
        /// Batch size asked.
        batch: usize,
        /// Metric count asked.
        n: usize,
        /// Window length of the model.
        w: usize,
    },
    /// tract failed while running the model.
    #[error("Uni-AD inference failed: {0}")]
    Run(String),
}

/// How [`UniadModel::infer`] turns shapes into plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanMode {
    /// One plan with symbolic `batch` and `n`.
    Symbolic,
    /// Plans concretised per (batch bucket, n), cached.
    #[default]
    Bucketed,
}

type Plan = Arc<TypedRunnableModel>;

/// Most cached concrete plans before the cache is cleared.
const MAX_PLANS: usize = 64;
/// Batches above this size run on the symbolic plan rather than a padded bucket.
const MAX_BUCKET: usize = 1024;

/// A loaded, optimised Uni-AD model.
#[derive(Debug)]
pub struct UniadModel {
    path: PathBuf,
    w: usize,
    batch_sym: Symbol,
    n_sym: Symbol,
    /// Decluttered symbolic model, the source of concrete plans.
    typed: TypedModel,
    symbolic: Plan,
    mode: PlanMode,
    plans: Mutex<HashMap<(usize, usize), Plan>>,
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Invalid {
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    }
}

fn signature(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Signature {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl UniadModel {
    /// Reads, checks and optimises the model at `path`.
    pub fn load(path: &Path, mode: PlanMode) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path, mode)
    }

    /// Loads a model from bytes; `path` only names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, mode: PlanMode) -> Result<Self, ModelError> {
        let inference = tract_onnx::onnx()
            .model_for_read(&mut &*bytes)
            .map_err(|e| invalid(path, e))?;
        if inference.inputs.len() != 1 || inference.outputs.len() != 1 {
            return Err(signature(
                path,
                format!(
                    "{} inputs and {} outputs",
                    inference.inputs.len(),
                    inference.outputs.len()
                ),
            ));
        }
        let typed = inference
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| invalid(path, e))?;
        let fact = typed.input_fact(0).map_err(|e| invalid(path, e))?.clone();
        if fact.datum_type != f32::datum_type() {
            return Err(signature(path, format!("input type {:?}", fact.datum_type)));
        }
        let dims: Vec<TDim> = fact.shape.iter().cloned().collect();
        let [b, n, w] = dims.as_slice() else {
            return Err(signature(path, format!("input rank {}", dims.len())));
        };
        let (TDim::Sym(batch_sym), TDim::Sym(n_sym)) = (b, n) else {
            return Err(signature(
                path,
                format!("input shape {dims:?}: batch and n must be symbolic"),
            ));
        };
        let w = match w {
            TDim::Val(v) if *v > 0 => *v as usize,
            _ => {
                return Err(signature(
                    path,
                    format!("window length {w} is not a fixed positive size"),
                ))
            }
        };
        let out: Vec<TDim> = typed
            .output_fact(0)
            .map_err(|e| invalid(path, e))?
            .shape
            .iter()
            .cloned()
            .collect();
        if out != dims {
            return Err(signature(
                path,
                format!("output shape {out:?} differs from input {dims:?}"),
            ));
        }
        let symbolic = typed
            .clone()
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| invalid(path, e))?;
        let model = UniadModel {
            path: path.to_path_buf(),
            w,
            batch_sym: batch_sym.clone(),
            n_sym: n_sym.clone(),
            typed,
            symbolic,
            mode,
            plans: Mutex::new(HashMap::new()),
        };
        // A trial run catches models whose ops fail only at run time.
        model
            .infer(&vec![0.0; 2 * w], 1, 2)
            .map_err(|e| invalid(path, e))?;
        Ok(model)
    }

    /// Window length W the model was exported with.
    pub fn window(&self) -> usize {
        self.w
    }

    /// The file the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reconstructs `batch_size` windows of `n` metrics: `batch` is row-major
    /// `[batch_size, n, w]`, and so is the result.
    pub fn infer(
        &self,
        batch: &[f32],
        batch_size: usize,
        n: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let want = batch_size * n * self.w;
        if batch.len() != want || batch_size == 0 || n == 0 {
            return Err(ModelError::InputSize {
                got: batch.len(),
                batch: batch_size,
                n,
                w: self.w,
            });
        }
        let (plan, rows) = match self.mode {
            PlanMode::Bucketed if batch_size <= MAX_BUCKET => {
                let bucket = batch_size.next_power_of_two();
                (self.concrete_plan(bucket, n)?, bucket)
            }
            _ => (self.symbolic.clone(), batch_size),
        };
        let input = if rows == batch_size {
            Tensor::from_shape(&[rows, n, self.w], batch)
        } else {
            let mut padded = Vec::with_capacity(rows * n * self.w);
            padded.extend_from_slice(batch);
            padded.resize(rows * n * self.w, 0.0);
            Tensor::from_shape(&[rows, n, self.w], &padded)
        }
        .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let out = plan
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        let view = out
            .first()
            .ok_or_else(|| ModelError::Run("model returned no output".into()))?
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        if view.len() != rows * n * self.w {
            return Err(ModelError::Run(format!(
                "output holds {} values, expected {}",
                view.len(),
                rows * n * self.w
            )));
        }
        // Row-major iteration; padding rows (if any) come last and are dropped.
        Ok(view.iter().take(want).copied().collect())
    }

    fn concrete_plan(&self, batch: usize, n: usize) -> Result<Plan, ModelError> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = plans.get(&(batch, n)) {
            return Ok(p.clone());
        }
        let subs = HashMap::from([
            (self.batch_sym.clone(), TDim::Val(batch as i64)),
            (self.n_sym.clone(), TDim::Val(n as i64)),
        ]);
        let plan = self
            .typed
            .set_symbols(&subs)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| ModelError::Run(format!("{e:#}")))?;
        if plans.len() >= MAX_PLANS {
            plans.clear();
        }
        plans.insert((batch, n), plan.clone());
        Ok(plan)
    }
}
