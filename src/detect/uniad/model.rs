//! The Uni-AD ONNX model: loading, checking, and running it natively or with tract.
//!
//! The model maps `x: [batch, n, w]` (robust-z-scored windows, one token per metric)
//! to its reconstruction of the same shape; `batch` and `n` are symbolic, `w` is
//! fixed by the export. It is loaded, checked and optimised once ([`UniadModel::load`]);
//! [`UniadModel::infer`] then runs any batch size and metric count.
//!
//! Three execution modes ([`PlanMode`]):
//!
//! * `native` (default): the hand-written forward pass of `native.rs` for exactly this
//!   architecture, with the weights read from the same ONNX file. At load it must
//!   reproduce tract's symbolic plan on a fixed probe (n in {1, 3, 8, 38}, batch 1 and
//!   5, max abs difference 1e-4); a graph it does not support (a custom model) or a
//!   mismatch makes the model fall back to `bucketed`, with a warning saying why
//!   ([`UniadModel::native_fallback`]).
//! * `symbolic`: one tract plan that resolves `batch` and `n` at run time.
//! * `bucketed`: tract plans concretised per shape bucket (batch rounded up to a power
//!   of two, padded with zero windows; `n` exact) and cached. Building a concrete plan
//!   costs milliseconds, so it pays only when shapes repeat, which they do in the agent
//!   (same entities every cycle).
//!
//! `benches/uniad.rs` measures all three. tract is always loaded: it checks the
//! model's signature, runs the probe, and is the fallback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rand::{rngs::SmallRng, Rng, SeedableRng};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::native::NativeModel;

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

pub use crate::config::detectors::PlanMode;

type Plan = Arc<TypedRunnableModel>;

/// Most cached concrete plans before the cache is cleared.
const MAX_PLANS: usize = 64;
/// Batches above this size run on the symbolic plan rather than a padded bucket.
const MAX_BUCKET: usize = 1024;
/// Largest difference between the native pass and tract the load-time probe accepts.
const PROBE_TOLERANCE: f32 = 1e-4;
/// Longest window a model may declare: the longest `groups[].window` a config accepts.
/// The file's claim sizes the trial run and the probe, so it is checked first.
pub(super) const MAX_WINDOW: usize = 10_000;
/// Metric counts and batch sizes of the load-time probe.
const PROBE_NS: [usize; 4] = [1, 3, 8, 38];
const PROBE_BATCHES: [usize; 2] = [1, 5];

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
    /// The mode that runs: the one asked for, or `Bucketed` after a native fallback.
    mode: PlanMode,
    plans: Mutex<HashMap<(usize, usize), Plan>>,
    /// The native forward pass, in `Native` mode.
    native: Option<NativeModel>,
    /// Why `Native` was asked for and not used.
    fallback: Option<String>,
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
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &*bytes)
            .map_err(|e| invalid(path, e))?;
        Self::from_proto(&proto, path, mode)
    }

    /// Loads a decoded ONNX model; `path` only names it in errors and logs.
    pub(super) fn from_proto(
        proto: &pb::ModelProto,
        path: &Path,
        mode: PlanMode,
    ) -> Result<Self, ModelError> {
        crate::detect::onnx_proto::contain_panics(|| Self::load_checked(proto, path, mode))
            .map_err(|e| invalid(path, e))?
    }

    /// [`UniadModel::from_proto`] without the panic guard.
    fn load_checked(
        proto: &pb::ModelProto,
        path: &Path,
        mode: PlanMode,
    ) -> Result<Self, ModelError> {
        crate::detect::onnx_proto::check_for_tract(proto).map_err(|e| invalid(path, e))?;
        let inference = tract_onnx::onnx()
            .model_for_proto_model(proto)
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
            TDim::Val(v) if *v > 0 && *v as u64 <= MAX_WINDOW as u64 => *v as usize,
            _ => {
                return Err(signature(
                    path,
                    format!("window length {w} is not a fixed size from 1 to {MAX_WINDOW}"),
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
        let mut model = UniadModel {
            path: path.to_path_buf(),
            w,
            batch_sym: batch_sym.clone(),
            n_sym: n_sym.clone(),
            typed,
            symbolic,
            mode,
            plans: Mutex::new(HashMap::new()),
            native: None,
            fallback: None,
        };
        if mode == PlanMode::Native {
            match model.checked_native(proto) {
                Ok(native) => model.native = Some(native),
                Err(reason) => {
                    tracing::warn!(
                        model = %path.display(),
                        %reason,
                        "Uni-AD: the native forward pass cannot run this model; using tract (plan: bucketed)"
                    );
                    model.mode = PlanMode::Bucketed;
                    model.fallback = Some(reason);
                }
            }
        }
        // A trial run catches models whose ops fail only at run time, and weights that
        // are NaN or overflow (tract runs them; every score would be NaN). The input
        // is a ramp in [-1, 1]: zeros would hide a weight that only a value multiplies.
        let ramp: Vec<f32> = (0..2 * w).map(|i| (i % 9) as f32 / 4.0 - 1.0).collect();
        let trial = model.infer(&ramp, 1, 2).map_err(|e| invalid(path, e))?;
        if trial.iter().any(|x| !x.is_finite()) {
            return Err(invalid(
                path,
                "its reconstruction of a finite trial input is not finite (NaN or huge weights)",
            ));
        }
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

    /// The mode that runs: the one asked for, or [`PlanMode::Bucketed`] when
    /// [`PlanMode::Native`] was asked for and fell back.
    pub fn plan_mode(&self) -> PlanMode {
        self.mode
    }

    /// Why the native forward pass was asked for and not used (`None` when it runs or
    /// was not asked for).
    pub fn native_fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Builds the native forward pass and checks it against tract's symbolic plan on
    /// a fixed probe; the error says why it cannot be used.
    fn checked_native(&self, proto: &pb::ModelProto) -> Result<NativeModel, String> {
        let mut native = NativeModel::from_proto(proto, self.w)
            .map_err(|e| format!("not the Uni-AD architecture of model.py: {e}"))?;
        if std::env::var_os("KPIWATCH_UNIAD_PORTABLE").is_some_and(|v| v == "1") {
            native = native.portable();
        }
        let mut rng = SmallRng::seed_from_u64(0x0A11_CE5E);
        for n in PROBE_NS {
            for batch in PROBE_BATCHES {
                let mut input: Vec<f32> = (0..batch * n * self.w)
                    .map(|_| rng.gen_range(-3.0..3.0))
                    .collect();
                // A spike at the last step of the first metric, as anomalies look.
                input[self.w - 1] = 12.0;
                let want = self
                    .run_plan(&self.symbolic, &input, batch, batch, n)
                    .map_err(|e| format!("tract failed on the probe: {e}"))?;
                let got = native.infer(&input, batch, n);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, |m, d| if d.is_nan() || d > m { d } else { m });
                if err.is_nan() || err > PROBE_TOLERANCE {
                    return Err(format!(
                        "it differs from tract by {err} (more than {PROBE_TOLERANCE}) on the probe at batch {batch}, n {n}"
                    ));
                }
            }
        }
        tracing::debug!(
            model = %self.path.display(),
            avx2 = native.wide(),
            "Uni-AD: native forward pass checked against tract"
        );
        Ok(native)
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
        if let Some(native) = &self.native {
            return Ok(native.infer(batch, batch_size, n));
        }
        let (plan, rows) = match self.mode {
            PlanMode::Bucketed if batch_size <= MAX_BUCKET => {
                let bucket = batch_size.next_power_of_two();
                (self.concrete_plan(bucket, n)?, bucket)
            }
            _ => (self.symbolic.clone(), batch_size),
        };
        self.run_plan(&plan, batch, batch_size, rows, n)
    }

    /// Runs `plan` on `batch` (`batch_size × n` windows, checked), padded with zero
    /// windows to `rows`.
    fn run_plan(
        &self,
        plan: &Plan,
        batch: &[f32],
        batch_size: usize,
        rows: usize,
        n: usize,
    ) -> Result<Vec<f32>, ModelError> {
        let want = batch_size * n * self.w;
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
