//! ADSketch: interpretable anomaly detection by metric patterns, with online adaptation.
//!
//! Implements Chen et al., *Adaptive Performance Anomaly Detection for Online Service
//! Systems via Pattern Sketching* (ICSE '22), `papers/adsketch-pattern-sketching.txt`,
//! following the authors' public reference implementation where the paper is silent.
//!
//! What this module owns, in data-flow order:
//!
//! * [`matrix_profile`]: non-normalised matrix profile (self-join and AB-join).
//! * [`graph`]: the subsequence graph of Algorithm 1 (line 3) and its connected components.
//! * [`affinity`]: Affinity Propagation, behaving like scikit-learn's.
//! * [`offline`]: Algorithm 1 (pattern discovery) and the min-max scaler fitted on `T_n`.
//! * [`pattern`]: the per-series pattern store (stable ids, mean, size, radius, kind,
//!   issue labels), versioned serde state, bounded memory.
//! * [`online`]: Algorithm 2 (detection) and Algorithm 3 (adaptive pattern learning).
//! * [`eval`]: the paper's point-wise evaluation (precision, recall, F1).
//! * [`detector`]: [`AdsketchDetector`], the agent's [`crate::detect::Detector`].
//!
//! What it must not do: I/O other than the offline CLI's (which lives in `cli/`),
//! HTML/JSON rendering of the pattern catalog (`export/`), the state file format (`state/`).

pub(crate) mod affinity;
pub(crate) mod detector;
pub mod eval;
pub(crate) mod graph;
pub(crate) mod matrix_profile;
pub(crate) mod offline;
pub(crate) mod online;
pub(crate) mod pattern;

pub use detector::{AdsketchDetector, AdsketchOptions};
pub use offline::{discover, OfflineParams, OfflineResult, Scaler};
pub use pattern::{Kind, LabelError, LabelOp, Pattern, PatternSet};

/// Why ADSketch could not learn or score a series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdsketchError {
    /// The series has fewer points than one subsequence needs.
    #[error("{what} has {len} points, fewer than the subsequence length m = {m}")]
    TooShort {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The subsequence length.
        m: usize,
    },
    /// A value is NaN or infinite (the matrix profile needs finite values).
    #[error("{what} has a non-finite value at position {pos}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Position of the first bad value.
        pos: usize,
    },
    /// A parameter is out of range.
    #[error("invalid parameter {name}: {reason}")]
    Param {
        /// Parameter name.
        name: &'static str,
        /// What is expected.
        reason: String,
    },
    /// A saved pattern set could not be used.
    #[error("pattern state: {0}")]
    State(String),
}

#[cfg(test)]
mod tests;
