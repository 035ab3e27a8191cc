//! kpiwatch: anomaly and performance-regression detection beside Prometheus.
//!
//! Two pipelines run in the agent, both one-way (`ARCHITECTURE.md` has the whole
//! picture, the dependency rules that `tests/it/architecture.rs` checks, and where each
//! kind of change goes):
//!
//! ```text
//! anomalies, per group, every interval (cycle):
//!   Prometheus ──query_range──▶ reader ──Series──▶ store ──EntityView──▶ detect ──Scores──▶ export ──/metrics──▶ Prometheus
//!                               (HTTP API)        ring buffers,          zscore, uniad,      score series
//!                                                 normalize (robust z)   adsketch            with entity labels
//!
//! regressions, per interface, every regressions.interval (regressions):
//!   discover ──▶ fetch (reader) ──LoadTest──▶ compare (detect::regress) ──Verdict──▶ export
//! ```
//!
//! `config` is a leaf every stage reads; `series` holds the types that cross stages;
//! only `cycle`, `regressions` and `app` see more than one stage.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | YAML → validated [`config::Config`], every error at once; detector options as plain data |
//! | [`reader`] | the Prometheus HTTP API client (auth, TLS, retries, caps) |
//! | `series` | the data types that cross stages: `Series`, `EntityView` |
//! | [`store`] | per-entity ring buffers aligned to the step, entity lifecycle, sharding |
//! | [`normalize`] | the shared robust z-score |
//! | [`ring`] | the bounded contiguous buffer behind every kept row |
//! | [`memory`] | handing the heap freed after large reads back to the OS |
//! | [`seasonal`] | the seasonal baseline: per-phase profiles, expected values, level shifts |
//! | [`detect`] | the [`detect::Detector`] trait, the detectors and the regression judge |
//! | [`export`] | the admin/metrics HTTP server and score series |
//! | [`telemetry`] | self-monitoring events and metrics |
//! | `state` | persisted learned state (atomic, versioned, checksummed), restored and saved without ever stopping the agent |
//! | [`clock`] | the one wall clock (milliseconds since the epoch) |
//! | [`cycle`] | one group's evaluation loop: tick, fetch, append, detect, export |
//! | `regressions` | the agent's second pipeline: discover → fetch → compare → export |
//! | `secret` | token files re-read on rotation, compared in constant time |
//! | [`app`] | wiring, reload, shutdown |
//! | [`backtest`] | the agent's cycles over a past range, the alerts its rules would have fired, the report |
//! | `eval` | accuracy measures of the offline tools (precision/recall/F1, PR-AUC) |
//! | [`dataset`] | CSV formats of the offline tools |
//! | [`cli`] | the command line |
//! | `lab` | (feature `lab`) the test service, load generator and recorder; never linked into the agent |

pub mod app;
pub mod backtest;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cycle;
pub mod dataset;
pub mod detect;
pub(crate) mod eval;
pub mod export;
#[cfg(feature = "lab")]
pub mod lab;
pub mod memory;
pub mod normalize;
pub mod reader;
pub(crate) mod regressions;
pub mod ring;
pub mod seasonal;
pub(crate) mod secret;
pub(crate) mod series;
pub(crate) mod state;
pub mod store;
pub mod telemetry;
