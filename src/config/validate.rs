//! Raw → validated config. Every check appends to one error list so that a user fixes
//! a file in one go.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::detectors::{AdsketchOptions, UniadOptions, ZscoreOptions};
use super::duration::parse_duration;
use super::error::{ConfigError, ConfigErrors};
use super::raw::{RawConfig, RawDetectors, RawGroup, RawPrometheus, RawShard};
use super::regressions::RegressionsConfig;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// File the config came from (for messages).
    pub source: String,
    /// Prometheus connection.
    pub prometheus: PrometheusConfig,
    /// Listen address of the admin/metrics server.
    pub listen: SocketAddr,
    /// When set, the admin server's write endpoints (reload, pattern label edits,
    /// regression checks) need `Authorization: Bearer <the file's content>`.
    pub write_token_file: Option<PathBuf>,
    /// TLS, basic auth and headers of the admin server (`server.web_config_file`).
    pub web: Option<super::WebConfig>,
    /// Which entities this agent keeps.
    pub shard: Shard,
    /// State directory, if state is persisted.
    pub state_dir: Option<PathBuf>,
    /// How often state is saved.
    pub state_save_interval: Duration,
    /// Entity groups, in file order.
    pub groups: Vec<GroupConfig>,
    /// Performance-regression checks, when configured.
    pub regressions: Option<RegressionsConfig>,
}

/// Validated `prometheus:`.
#[derive(Clone)]
pub struct PrometheusConfig {
    /// Base URL (no credentials in it: they are rejected).
    pub url: Url,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Queries in flight at once.
    pub max_concurrency: usize,
    /// Largest accepted response body.
    pub max_response_bytes: u64,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Authentication.
    pub auth: Auth,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Extra headers, validated as HTTP header names and values.
    pub headers: Vec<(String, String)>,
}

// Headers may carry tenant secrets: print names only.
impl std::fmt::Debug for PrometheusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusConfig")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("retries", &self.retries)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Authentication. Secrets stay in their files; only paths are kept here.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    /// No authentication.
    None,
    /// `Authorization: Bearer <contents of the file>`, re-read when the file changes.
    BearerTokenFile(PathBuf),
    /// Basic authentication with the password read from a file.
    Basic {
        /// User name.
        username: String,
        /// Password file.
        password_file: PathBuf,
    },
}

/// TLS settings (paths; the reader loads them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    /// Extra CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Skip verification of the server certificate.
    pub insecure_skip_verify: bool,
}

/// Which entities this agent keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum Shard {
    /// Every entity.
    All,
    /// DaemonSet mode: series whose `label` equals `name`.
    Node {
        /// This node's name.
        name: String,
        /// Label that carries the node name.
        label: String,
    },
    /// Deployment mode: stable hash of the entity key modulo `total` equals `index`.
    Hash {
        /// Number of agents.
        total: u64,
        /// This agent's index.
        index: u64,
    },
}

/// Gap fill policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Carry the last value forward.
    Previous,
    /// Fill with 0 (counters' rates that vanish when idle).
    Zero,
    /// Keep NaN; detectors see the gap.
    None,
}

/// One metric of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricQuery {
    /// Metric name (the `metric` label of per-metric outputs).
    pub name: String,
    /// PromQL expression.
    pub promql: String,
    /// Which deviations matter (`groups[].gates.<name>`; open by default).
    pub gate: super::Gate,
}

/// Enabled detectors of a group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetectorsConfig {
    /// Robust z-score detector.
    pub zscore: Option<ZscoreOptions>,
    /// ADSketch detector.
    pub adsketch: Option<AdsketchOptions>,
    /// Uni-AD detector; its model path is resolved against the config file's directory.
    pub uniad: Option<UniadOptions>,
}

impl DetectorsConfig {
    /// The names of the enabled detectors, in the order a graph prefers them for node
    /// scores.
    pub fn enabled_names(&self) -> Vec<&'static str> {
        [
            ("zscore", self.zscore.is_some()),
            ("uniad", self.uniad.is_some()),
            ("adsketch", self.adsketch.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }

    /// `true` when no detector is enabled.
    pub fn is_empty(&self) -> bool {
        self.zscore.is_none() && self.adsketch.is_none() && self.uniad.is_none()
    }
}

/// A validated group.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// Unique name.
    pub name: String,
    /// Evaluation interval.
    pub interval: Duration,
    /// Window resolution.
    pub step: Duration,
    /// Window length in steps.
    pub window: usize,
    /// History kept per series, in steps (≥ window).
    pub history_points: usize,
    /// Entity labels, sorted and deduplicated.
    pub entity_labels: Vec<String>,
    /// Absence before expiry.
    pub expire_after: Duration,
    /// Most entities tracked (the cardinality guard).
    pub max_entities: usize,
    /// Gap fill policy.
    pub fill: Fill,
    /// Metrics, sorted by name.
    pub metrics: Vec<MetricQuery>,
    /// Detectors.
    pub detectors: DetectorsConfig,
    /// The seasonal baseline, when `seasonality` is set.
    pub seasonality: Option<super::SeasonalityConfig>,
    /// The service graph, when `graph` is set.
    pub graph: Option<super::GraphConfig>,
}

/// Collects errors with the file name filled in.
struct Errors<'a> {
    file: &'a str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn push(&mut self, key: &str, msg: impl Into<String>) {
        self.list.push(ConfigError::new(self.file, key, msg));
    }

    /// Parses an optional duration, recording an error and returning the default on failure.
    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.push(key, e);
                default
            }
        }
    }

    /// Checks that a file referenced by the config exists and is readable.
    fn readable_file(&mut self, key: &str, value: &str, base: &Path) -> PathBuf {
        let path = resolve(base, value);
        if let Err(e) = std::fs::File::open(&path) {
            self.push(
                key,
                format!(
                    "cannot read {}: {e} (expected a readable file)",
                    path.display()
                ),
            );
        }
        path
    }

    /// A readable file whose content (trimmed) is not empty: an empty token would let
    /// every request with `Authorization: Bearer ` through.
    fn token_file(&mut self, key: &str, value: &str, base: &Path) -> PathBuf {
        let path = resolve(base, value);
        match crate::secret::read_trimmed(&path) {
            Ok(token) if token.is_empty() => self.push(
                key,
                format!("{} is empty (expected a token)", path.display()),
            ),
            Ok(_) => {}
            Err(e) => self.push(
                key,
                format!(
                    "cannot read {}: {e} (expected a readable file holding a token)",
                    path.display()
                ),
            ),
        }
        path
    }
}

pub(super) fn resolve(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Default listen address; 9847 is kpiwatch's port.
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:9847";

/// Default `groups[].max_entities`: the scale one agent is sized for (README, sizing).
pub(crate) const DEFAULT_MAX_ENTITIES: usize = 10_000;

pub(super) fn validate(raw: RawConfig, file: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let mut errs = Errors {
        file,
        list: Vec::new(),
    };
    let prometheus = validate_prometheus(raw.prometheus, &mut errs, base);
    let listen_str = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_str.parse().unwrap_or_else(|_| {
        errs.push(
            "server.listen",
            format!("{listen_str:?} is not a socket address (expected e.g. 0.0.0.0:9847)"),
        );
        SocketAddr::from(([0, 0, 0, 0], 9847))
    });
    let write_token_file = raw
        .server
        .write_token_file
        .as_deref()
        .map(|f| errs.token_file("server.write_token_file", f, base));
    let web = raw.server.web_config_file.as_deref().and_then(|f| {
        let path = resolve(base, f);
        match super::web::load_web_config(&path, write_token_file.is_some()) {
            Ok(web) => Some(web),
            Err(found) => {
                // Each names the web config file and its own key path.
                errs.list.extend(found.0);
                None
            }
        }
    });
    let shard = validate_shard(raw.shard, &mut errs);
    let state_dir = raw.state_dir.map(|d| resolve(base, &d));
    let state_save_interval = errs.duration(
        "state_save_interval",
        raw.state_save_interval.as_deref(),
        Duration::from_secs(300),
    );
    if state_save_interval < Duration::from_secs(1) {
        // A zero period would also stop the agent at start (tokio's interval panics).
        errs.push("state_save_interval", "must be at least 1s");
    }
    if raw.groups.is_empty() && raw.regressions.is_none() {
        errs.push(
            "groups",
            "no group defined (expected at least one, or a regressions section)",
        );
    }
    let mut names = BTreeSet::new();
    let groups: Vec<GroupConfig> = raw
        .groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            if !names.insert(g.name.clone()) {
                errs.push(
                    &format!("groups[{i}].name"),
                    format!("{:?} is used twice (expected unique group names)", g.name),
                );
            }
            validate_group(g, &format!("groups[{i}]"), &mut errs, base)
        })
        .collect();
    if shard != Shard::All {
        for (i, g) in groups.iter().enumerate().filter(|(_, g)| g.graph.is_some()) {
            errs.push(
                &format!("groups[{i}].graph"),
                format!(
                    "group {:?} has a graph, which needs all of its nodes, but this agent is sharded (shard:) and sees only some entities (expected this group in an agent without shard:, e.g. a second Helm release with shard: null as in the chart's ci/graph-values.yaml)",
                    g.name
                ),
            );
        }
    }
    let regressions = raw.regressions.map(|r| {
        let mut found = Vec::new();
        let validated = super::regressions::validate(r, base, &mut found);
        for (key, msg) in found {
            errs.push(&format!("regressions.{key}"), msg);
        }
        validated
    });
    if errs.list.is_empty() {
        Ok(Config {
            source: file.to_string(),
            prometheus,
            listen,
            write_token_file,
            web,
            shard,
            state_dir,
            state_save_interval,
            groups,
            regressions,
        })
    } else {
        Err(ConfigErrors(errs.list))
    }
}

fn validate_prometheus(raw: RawPrometheus, errs: &mut Errors<'_>, base: &Path) -> PrometheusConfig {
    let url = match Url::parse(&raw.url) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            errs.push(
                "prometheus.url",
                format!(
                    "{:?} has scheme {:?} (expected http or https)",
                    raw.url,
                    u.scheme()
                ),
            );
            u
        }
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            // Credentials in URLs end up in logs; keep them in files.
            errs.push(
                "prometheus.url",
                "contains credentials (use basic_auth with password_file instead)",
            );
            u
        }
        Ok(u) => u,
        Err(e) => {
            errs.push(
                "prometheus.url",
                format!(
                    "{:?} is not a URL: {e} (expected e.g. http://prometheus:9090)",
                    raw.url
                ),
            );
            Url::parse("http://invalid.invalid").expect("static URL parses")
        }
    };
    let timeout = errs.duration(
        "prometheus.timeout",
        raw.timeout.as_deref(),
        Duration::from_secs(10),
    );
    if timeout.is_zero() {
        errs.push("prometheus.timeout", "must be greater than 0");
    }
    let max_concurrency = raw.max_concurrency.unwrap_or(4);
    if max_concurrency == 0 {
        errs.push("prometheus.max_concurrency", "must be at least 1");
    }
    let max_response_bytes = raw.max_response_bytes.unwrap_or(64 << 20);
    if max_response_bytes < 1024 {
        errs.push(
            "prometheus.max_response_bytes",
            format!("{max_response_bytes} is too small (expected at least 1024 bytes)"),
        );
    }
    let retry_backoff = errs.duration(
        "prometheus.retry_backoff",
        raw.retry_backoff.as_deref(),
        Duration::from_millis(200),
    );
    if retry_backoff > Duration::from_secs(60) {
        // Backoff doubles per retry: a longer base would stall a cycle for hours (and
        // a huge one would overflow the delay arithmetic).
        errs.push(
            "prometheus.retry_backoff",
            format!(
                "{} is too long (expected at most 1m)",
                super::format_duration(retry_backoff)
            ),
        );
    }
    let auth = match (raw.bearer_token_file, raw.basic_auth) {
        (Some(_), Some(_)) => {
            errs.push(
                "prometheus",
                "both bearer_token_file and basic_auth are set (expected at most one)",
            );
            Auth::None
        }
        (Some(t), None) => {
            Auth::BearerTokenFile(errs.readable_file("prometheus.bearer_token_file", &t, base))
        }
        (None, Some(b)) => Auth::Basic {
            username: b.username,
            password_file: errs.readable_file(
                "prometheus.basic_auth.password_file",
                &b.password_file,
                base,
            ),
        },
        (None, None) => Auth::None,
    };
    let tls = match raw.tls {
        None => TlsConfig::default(),
        Some(t) => {
            let ca_file = t
                .ca_file
                .map(|f| errs.readable_file("prometheus.tls.ca_file", &f, base));
            let client_cert = match (t.cert_file, t.key_file) {
                (Some(c), Some(k)) => Some((
                    errs.readable_file("prometheus.tls.cert_file", &c, base),
                    errs.readable_file("prometheus.tls.key_file", &k, base),
                )),
                (None, None) => None,
                _ => {
                    errs.push(
                        "prometheus.tls",
                        "cert_file and key_file go together (expected both or neither)",
                    );
                    None
                }
            };
            TlsConfig {
                ca_file,
                client_cert,
                insecure_skip_verify: t.insecure_skip_verify,
            }
        }
    };
    let mut headers = Vec::new();
    for (name, value) in raw.headers {
        let key = format!("prometheus.headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errs.push(&key, "is not a valid HTTP header name");
        } else if reqwest::header::HeaderValue::from_str(&value).is_err() {
            errs.push(
                &key,
                "value is not a valid HTTP header value (no control characters)",
            );
        } else {
            headers.push((name, value));
        }
    }
    PrometheusConfig {
        url,
        timeout,
        max_concurrency,
        max_response_bytes,
        retries: raw.retries.unwrap_or(2),
        retry_backoff,
        auth,
        tls,
        headers,
    }
}

fn validate_shard(raw: Option<RawShard>, errs: &mut Errors<'_>) -> Shard {
    let Some(s) = raw else { return Shard::All };
    match (s.node_name, s.total, s.index) {
        (Some(name), None, None) => {
            if name.is_empty() {
                errs.push(
                    "shard.node_name",
                    "is empty (expected the node name, e.g. ${NODE_NAME} from the downward API)",
                );
            }
            let label = s.node_label.unwrap_or_else(|| "node".to_string());
            if !is_label_name(&label) {
                errs.push(
                    "shard.node_label",
                    format!("{label:?} is not a Prometheus label name"),
                );
            }
            Shard::Node { name, label }
        }
        (None, Some(total), Some(index)) => {
            if s.node_label.is_some() {
                errs.push("shard.node_label", "only applies with node_name");
            }
            if total == 0 || index >= total {
                errs.push(
                    "shard.index",
                    format!("{index} of {total} (expected 0 <= index < total)"),
                );
            }
            Shard::Hash { total, index }
        }
        _ => {
            errs.push(
                "shard",
                "expected either node_name (DaemonSet mode) or total and index (hash mode)",
            );
            Shard::All
        }
    }
}

fn validate_group(g: RawGroup, key: &str, errs: &mut Errors<'_>, base: &Path) -> GroupConfig {
    if g.name.is_empty() {
        errs.push(&format!("{key}.name"), "is empty");
    }
    let interval = errs.duration(
        &format!("{key}.interval"),
        g.interval.as_deref(),
        Duration::from_secs(30),
    );
    if interval < Duration::from_secs(1) {
        errs.push(&format!("{key}.interval"), "must be at least 1s");
    }
    let step = errs.duration(&format!("{key}.step"), g.step.as_deref(), interval);
    if step < Duration::from_secs(1) || !step.as_millis().is_multiple_of(1000) {
        errs.push(
            &format!("{key}.step"),
            "must be a whole number of seconds, at least 1s",
        );
    }
    let window = g.window.unwrap_or(64);
    if !(2..=10_000).contains(&window) {
        errs.push(
            &format!("{key}.window"),
            format!("{window} is out of range (expected 2 to 10000 steps)"),
        );
    }
    let step_ms = step.as_millis().max(1) as usize;
    let history_points = match g.history.as_deref() {
        None => window * 4,
        Some(h) => match parse_duration(h) {
            Ok(d) => d.as_millis() as usize / step_ms,
            Err(e) => {
                errs.push(&format!("{key}.history"), e);
                window
            }
        },
    };
    if history_points < window {
        errs.push(
            &format!("{key}.history"),
            format!("covers {history_points} steps (expected at least window = {window} steps)"),
        );
    }
    if history_points > 100_000 {
        errs.push(
            &format!("{key}.history"),
            format!("covers {history_points} steps (expected at most 100000: raise step)"),
        );
    }
    let mut entity_labels = g.entity_labels;
    entity_labels.sort();
    entity_labels.dedup();
    if entity_labels.is_empty() {
        errs.push(
            &format!("{key}.entity_labels"),
            "is empty (expected the labels that identify an entity, e.g. [instance])",
        );
    }
    for l in &entity_labels {
        if !is_label_name(l) {
            errs.push(
                &format!("{key}.entity_labels"),
                format!("{l:?} is not a Prometheus label name"),
            );
        }
    }
    let expire_after = errs.duration(
        &format!("{key}.expire_after"),
        g.expire_after.as_deref(),
        interval * 10,
    );
    let max_entities = g.max_entities.unwrap_or(DEFAULT_MAX_ENTITIES);
    if max_entities == 0 {
        errs.push(
            &format!("{key}.max_entities"),
            "must be at least 1 (expected the most entities the group may track, default 10000)",
        );
    }
    let fill = match g.fill.as_deref() {
        None | Some("previous") => Fill::Previous,
        Some("zero") => Fill::Zero,
        Some("none") => Fill::None,
        Some(other) => {
            errs.push(
                &format!("{key}.fill"),
                format!("{other:?} is not a fill policy (expected previous, zero or none)"),
            );
            Fill::Previous
        }
    };
    if g.metrics.is_empty() {
        errs.push(
            &format!("{key}.metrics"),
            "is empty (expected name: PromQL pairs)",
        );
    }
    let mut found = Vec::new();
    let names: Vec<String> = g.metrics.keys().cloned().collect();
    let mut gates = super::seasonality::validate_gates(g.gates, &names, key, &mut found);
    let seasonality = super::seasonality::validate_seasonality(
        g.seasonality.as_deref(),
        g.seasonality_history.as_deref(),
        g.seasonality_adapt_after.as_deref(),
        step,
        key,
        &mut found,
    );
    for (k, msg) in found {
        errs.push(&k, msg);
    }
    let metrics = g
        .metrics
        .into_iter()
        .map(|(name, promql)| {
            if !is_label_name(&name) {
                errs.push(
                    &format!("{key}.metrics.{name}"),
                    "metric names must match [a-zA-Z_][a-zA-Z0-9_]*",
                );
            }
            if promql.trim().is_empty() {
                errs.push(
                    &format!("{key}.metrics.{name}"),
                    "PromQL expression is empty",
                );
            }
            let gate = gates.remove(&name).unwrap_or(super::Gate::OPEN);
            MetricQuery { name, promql, gate }
        })
        .collect();
    let detectors = validate_detectors(
        g.detectors,
        &format!("{key}.detectors"),
        history_points,
        errs,
        base,
    );
    let graph = g.graph.map(|raw| {
        let mut found = Vec::new();
        let enabled = detectors.enabled_names();
        let graph = super::graph::validate(
            raw,
            &format!("{key}.graph"),
            &entity_labels,
            &enabled,
            &mut found,
        );
        for (k, msg) in found {
            errs.push(&k, msg);
        }
        graph
    });
    GroupConfig {
        name: g.name,
        interval,
        step,
        window,
        history_points,
        entity_labels,
        expire_after,
        max_entities,
        fill,
        metrics,
        detectors,
        seasonality,
        graph,
    }
}

fn validate_detectors(
    mut raw: RawDetectors,
    key: &str,
    history_points: usize,
    errs: &mut Errors<'_>,
    base: &Path,
) -> DetectorsConfig {
    if let Some(u) = &mut raw.uniad {
        if let Err(e) = u.validate() {
            errs.push(&format!("{key}.uniad"), e);
        }
        let model = u.model.display().to_string();
        u.model = errs.readable_file(&format!("{key}.uniad.model"), &model, base);
    }
    if let Some(z) = &raw.zscore {
        if let Err(e) = z.validate() {
            errs.push(&format!("{key}.zscore"), e);
        }
    }
    if let Some(a) = &raw.adsketch {
        if let Err(e) = a.validate() {
            errs.push(&format!("{key}.adsketch"), e);
        }
        // ADSketch learns from the history the store keeps; it must hold T_n and T_a.
        let needed = a.train_points + a.test_points;
        if needed > history_points {
            errs.push(
                &format!("{key}.adsketch"),
                format!("train_points + test_points = {needed} steps exceed the group's history of {history_points} steps (raise history or lower them)"),
            );
        }
    }
    let d = DetectorsConfig {
        zscore: raw.zscore,
        adsketch: raw.adsketch,
        uniad: raw.uniad,
    };
    if d.is_empty() {
        errs.push(
            key,
            "no detector enabled (expected at least one, e.g. zscore: {})",
        );
    }
    d
}

/// Prometheus label (and metric-part) names: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub(crate) fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
