//! Property-based fuzzing of the parsers that take outside input (issue 21, "Bad
//! input, fuzzed"), on stable Rust with proptest: each suite feeds its parser edited
//! valid documents (see [`mutate`]), arbitrary input and generated valid input, and
//! asserts no panic, a bounded result and a clear, typed error.
//!
//! | suite | parser | where |
//! |---|---|---|
//! | `config` | `config::parse_str` (`${ENV}`, YAML, validation), `expand_env`, `parse_duration` | here |
//! | `csv` | `dataset::parse_csv`, `LoadTest::parse_csv`, the offline commands end to end | here |
//! | `api` | `export::handle`: pattern catalog paths and label bodies, regression checks, reload | here |
//! | Prometheus answers | `reader::response::decode` (crate-private) | `src/reader/fuzz_tests.rs` |
//! | ONNX models | Uni-AD and regression model loading (proto-level edits need crate-private loaders) | `src/detect/{uniad,regress}/fuzz_tests.rs` |
//!
//! CI runs each property with the case count given in its `mutate::config(N)`; a longer
//! campaign sets `PROPTEST_CASES` (BENCHMARKS.md, "Fuzzing", has the command and the
//! figures). Inputs that once failed are kept as plain `#[test]`s next to the fix.

mod mutate;

/// Admin HTTP routes: paths, queries and bodies.
mod api;
/// Config text, `${ENV}` references and durations.
mod config;
/// CSV inputs of `kpiwatch detect ...` and `kpiwatch regress`.
mod csv;
