//! kpiwatch: anomaly and performance-regression detection beside Prometheus.
//!
//! ```text
//! Prometheus ──query_range──▶ store ──▶ normalize ──▶ detect ──▶ export (/metrics) ──▶ Prometheus
//!  (HTTP API)   reader        per-entity   robust       zscore, uniad,     scores with      ▲ scrape
//!               incremental   ring buffers z-score      adsketch, regress  entity labels
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | YAML → validated [`config::Config`], every error at once |
//! | [`reader`] | the Prometheus HTTP API client (auth, TLS, retries, caps) |
//! | [`store`] | per-entity ring buffers aligned to the step, entity lifecycle, sharding |
//! | [`normalize`] | the shared robust z-score |
//! | [`detect`] | the [`detect::Detector`] trait and the detectors |
//! | [`export`] | the admin/metrics HTTP server and score series |
//! | [`telemetry`] | self-monitoring events and metrics |
//! | [`state`] | persisted learned state (atomic, versioned, checksummed) |
//! | [`cycle`] | one group's evaluation loop |
//! | [`regressions`] | the agent's regression checks per interface (loop, canary API, exports) |
//! | [`secret`] | token files re-read on rotation, compared in constant time |
//! | [`app`] | wiring, reload, shutdown |
//! | [`dataset`] | CSV formats of the offline tools |
//! | [`cli`] | the command line |

pub mod app;
pub mod cli;
pub mod config;
pub mod cycle;
pub mod dataset;
pub mod detect;
pub mod eval;
pub mod export;
pub mod lab;
pub mod normalize;
pub mod reader;
pub mod regressions;
pub mod secret;
pub mod state;
pub mod store;
pub mod telemetry;
