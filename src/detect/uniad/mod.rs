//! Uni-AD: one shared Transformer autoencoder for every entity of a group.
//!
//! Uni-AD (He, Chen, Huang; `papers/uniad-model-sharing.md`) reconstructs an entity's
//! last `W` points of each metric, one token per metric, with no positional encoding:
//! the same model serves every entity, whatever its number of metrics, including
//! entities created after training. The score at the last step is eq. 7 of the paper,
//! `s_t = 1/|M| Σ_i (X[i,t] − X'[i,t])² / c_i`, and its terms are the per-metric
//! contributions ("which metric"). By default `c_i = 1`, the paper's form; with
//! `scale_errors: true`, `c_i` is metric i's typical squared error for this entity
//! (`scale.rs`).
//! Each entity's score is compared with its own
//! streaming peaks-over-threshold threshold (SPOT on the score's root, 3-sigma during
//! warm-up, learning a lasting change after `adapt_after` flags), and
//! `anomaly_score = s_t / threshold`.
//!
//! | file | owns |
//! |---|---|
//! | `detector.rs` | [`UniadDetector`], [`UniadOptions`]: normalisation, batching entities by metric count, eq. 7, thresholds, snapshot |
//! | `model.rs` | [`UniadModel`]: loading and checking the ONNX model, running it natively or with tract ([`PlanMode`]), the native pass's load-time check against tract and its fallback |
//! | `native.rs` | the native forward pass of this architecture (weights from the ONNX file's initializers; blocked dense kernels, AVX2 + FMA when the CPU has them) |
//! | `scale.rs` | per-metric error scales (`scale_errors: true`): each squared error divided by its typical value for the entity before eq. 7's mean |
//! | `spot.rs` | [`Spot`]: the per-entity streaming threshold |
//!
//! Training, export and golden vectors live in `models/train/uniad/` (Python); the
//! shipped model is `models/uniad.onnx` with its card `models/uniad.md`.
//! Nothing here does I/O except reading the model file at construction.

mod detector;
#[cfg(test)]
mod fuzz_tests;
mod model;
mod native;
mod scale;
mod spot;
#[cfg(test)]
mod tests;

pub use detector::{UniadDetector, UniadOptions};
pub use model::{ModelError, PlanMode, UniadModel};
pub use spot::{Spot, SpotOptions};
