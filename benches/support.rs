//! Shared by the benches: whether this run measures or only smoke-tests.
//!
//! `cargo bench` passes `--bench` to a bench binary; `cargo test --benches` (CI, debug
//! build) does not. Without it a bench runs only its smallest cases, once, so CI checks
//! that the bench code compiles and runs without paying for unoptimised kernels on the
//! large ones. The figures in BENCHMARKS.md always come from `cargo bench`.

/// `true` under `cargo bench`, `false` when `cargo test` smoke-runs the bench.
pub(crate) fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}
