//! The serde mirror of the YAML file. Every struct rejects unknown keys, so a misspelt
//! key is an error, not a silently ignored setting. Values stay as written (durations as
//! strings) until [`super::validate`] checks them; see `config/kpiwatch.example.yaml` for
//! the documented example of every key.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::detectors::{AdsketchOptions, UniadOptions, ZscoreOptions};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Where to read metrics from.
    pub prometheus: RawPrometheus,
    /// The agent's own HTTP server.
    #[serde(default)]
    pub server: RawServer,
    /// Which entities this agent watches (all when absent).
    pub shard: Option<RawShard>,
    /// Directory for learned state; in memory only when absent.
    pub state_dir: Option<String>,
    /// How often state is saved (default 5m).
    pub state_save_interval: Option<String>,
    /// Entity groups (may be empty when `regressions` is set).
    #[serde(default)]
    pub groups: Vec<RawGroup>,
    /// Performance-regression checks per interface.
    pub regressions: Option<super::regressions::RawRegressions>,
}

/// `prometheus:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrometheus {
    /// Base URL of the HTTP API.
    pub url: String,
    /// Per-request timeout (default 10s).
    pub timeout: Option<String>,
    /// Queries in flight at once (default 4).
    pub max_concurrency: Option<usize>,
    /// Largest accepted response body in bytes (default 64 MiB).
    pub max_response_bytes: Option<u64>,
    /// Retries on connection errors, timeouts, 429 and 5xx (default 2).
    pub retries: Option<u32>,
    /// First retry delay, doubled each retry, jittered (default 200ms).
    pub retry_backoff: Option<String>,
    /// File holding a bearer token, re-read when it changes.
    pub bearer_token_file: Option<String>,
    /// Basic authentication.
    pub basic_auth: Option<RawBasicAuth>,
    /// TLS settings.
    pub tls: Option<RawTls>,
    /// Extra headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `prometheus.basic_auth:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBasicAuth {
    /// User name.
    pub username: String,
    /// File holding the password (never the password itself: configs get committed).
    pub password_file: String,
}

/// `prometheus.tls:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    /// PEM file of CA certificates to trust in addition to the system roots.
    pub ca_file: Option<String>,
    /// PEM client certificate (with `key_file`) for mutual TLS.
    pub cert_file: Option<String>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<String>,
    /// Skip server certificate verification (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// `server:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    /// Listen address (default `0.0.0.0:9847`).
    pub listen: Option<String>,
    /// File holding the bearer token that write requests (every method but GET and
    /// HEAD) must carry; re-read when it changes. Writes are open when absent.
    pub write_token_file: Option<String>,
    /// Exporter-toolkit web config (TLS, basic auth, security headers); re-read when it
    /// or a file it names changes.
    pub web_config_file: Option<String>,
}

/// `shard:`: either node mode or hash mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShard {
    /// Node mode: keep entities whose `node_label` equals this (usually `${NODE_NAME}`).
    pub node_name: Option<String>,
    /// Node mode: label carrying the node name (default `node`).
    pub node_label: Option<String>,
    /// Hash mode: number of agents.
    pub total: Option<u64>,
    /// Hash mode: this agent's index, 0-based.
    pub index: Option<u64>,
}

/// One entry of `groups:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    /// Unique group name (the `group` label of exported series).
    pub name: String,
    /// Evaluation interval (default 30s).
    pub interval: Option<String>,
    /// Resolution of the windows (default: the interval).
    pub step: Option<String>,
    /// Window length W in steps (default 64).
    pub window: Option<usize>,
    /// History kept per series (default 4 windows).
    pub history: Option<String>,
    /// Labels identifying an entity.
    pub entity_labels: Vec<String>,
    /// Absence after which an entity expires (default 10 intervals).
    pub expire_after: Option<String>,
    /// Most entities tracked; new ones beyond it are dropped and counted (default 10000).
    pub max_entities: Option<usize>,
    /// Gap fill policy: previous (default), zero or none.
    pub fill: Option<String>,
    /// Metric name → PromQL.
    pub metrics: BTreeMap<String, String>,
    /// Detectors and their options.
    #[serde(default)]
    pub detectors: RawDetectors,
    /// Periods of the seasonal baseline, e.g. `[1d, 1w]` (off when absent).
    pub seasonality: Option<Vec<String>>,
    /// How far back the baseline is learned at start (default 4 × the longest period).
    pub seasonality_history: Option<String>,
    /// How long a level shift lasts before the baseline adopts it (default 3h).
    pub seasonality_adapt_after: Option<String>,
    /// Noise gates, by metric name.
    #[serde(default)]
    pub gates: BTreeMap<String, super::seasonality::RawGate>,
    /// The service graph: root cause and symptom marks across the group's entities.
    pub graph: Option<super::graph::RawGraph>,
}

/// `groups[].detectors:`. Each key enables one detector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDetectors {
    /// Robust z-score on the last step.
    pub zscore: Option<ZscoreOptions>,
    /// ADSketch: interpretable patterns per metric series, learned online.
    pub adsketch: Option<AdsketchOptions>,
    /// Uni-AD: the shared Transformer autoencoder over each entity's metrics.
    pub uniad: Option<UniadOptions>,
}
