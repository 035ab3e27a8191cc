#![allow(unreachable_pub)]
//! The integration tests (one binary, `cargo test --test it`).

#[path = "../common/mod.rs"]
mod common;
mod support;

/// The module picture of ARCHITECTURE.md: allowed dependencies, one row per module.
mod architecture;
/// The `kpiwatch` binary: check-config exit codes, run, reload, shutdown with state.
mod cli;
/// Config files: the shipped example and presets pass; bad files give golden errors.
mod config;
/// Whole cycles against a fake server: incremental fetch, entity lifecycle, staleness.
mod cycle;
/// Lists kept in two places agree: README defaults, the example config, the metric list.
mod docs;
/// Property-based fuzzing of the parsers of outside input: config, CSV, admin API (issue 21).
mod fuzz;
/// The robust z-score against the training normaliser's golden pairs (models/golden/normalize_flat.json).
mod normalize_golden;
/// The Prometheus client against a fake server: timeouts, 5xx, 429, garbage, caps, NaN.
mod reader_faults;
/// The admin server's web config over real sockets: TLS, client certificates, basic
/// auth, certificate rotation.
mod web;
