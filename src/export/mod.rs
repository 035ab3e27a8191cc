//! What kpiwatch serves: the admin/metrics HTTP server and the score series.
//!
//! Endpoints (all on `server.listen`):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/metrics` | self-monitoring metrics and every score series, Prometheus text format |
//! | GET | `/-/healthy` | 200 while the process runs |
//! | GET | `/-/ready` | 503 until the first successful cycle, then 200 for good |
//! | POST | `/-/reload` | re-reads the config; 200, or 500 with the reasons (the old config keeps running) |
//! | GET | `/patterns`, `/api/v1/patterns…` | the ADSketch pattern catalog (page, JSON, label edits; see [`catalog`]) |
//! | POST | `/api/v1/regressions/check` | an on-demand regression comparison (see [`regress_api`]) |
//! | GET | `/` | a short page linking the above |
//!
//! Request bodies over [`MAX_BODY_BYTES`] get 413 without being read further. With
//! `server.write_token_file`, every method but GET and HEAD needs
//! `Authorization: Bearer <token>` (401 without it; see [`auth`]). With
//! `server.web_config_file` (the exporter-toolkit format), connections use TLS and every
//! request needs basic auth when the file says so (see [`web`]).
//!
//! The server runs on its own thread with a current-thread runtime, so a busy worker
//! pool cannot delay scrapes or probes. It computes nothing: scores are published into
//! [`ScoreBoard`] by the cycles, and reloads are requested from the app over a channel.

pub mod auth;
pub mod catalog;
pub mod http;
pub mod regress_api;
mod scores;
mod server;
pub mod web;

pub use auth::{Refusals, WriteAuth};
pub use catalog::{CatalogHandle, PatternCatalog};
pub use scores::{ScoreBoard, ScoreSink, SeriesLabels, GRAPH_DETECTOR};
pub use server::{handle, Admin, AdminServer, ApiRequest, Body, ReloadRequest, MAX_BODY_BYTES};
pub use web::WebGuard;
