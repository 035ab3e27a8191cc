//! The fault matrix (`cargo test --test faults`): what the agent does when its
//! surroundings fail. Each case asserts the agent keeps serving `/metrics`, counts the
//! failure by cause, marks entities stale, keeps its last scores, catches up without
//! gaps and loses no learned state. Real Prometheus and real processes wherever a real
//! one can produce the fault; a small TCP proxy in the harness for network faults.
//!
//! Needs `prometheus` and `promtool` on PATH (`scripts/install-deps.sh`); skipped locally
//! without them, failing in CI (`CI` set).

#[path = "../common/mod.rs"]
mod common;

/// Prometheus stopped, frozen (SIGSTOP), slowed, reset and truncated by a proxy, bad
/// PromQL, query timeouts and oversized answers.
mod prometheus;
/// The state directory: read-only, full, deleted, two agents on one directory, SIGKILL
/// during saves; reload storms and a config replaced by an invalid one.
mod state;
