//! `regressions:`: performance-regression checks per interface (issue 6), raw and
//! validated. See the commented section of `config/kpiwatch.example.yaml` and the README.
//!
//! Every query is PromQL. KPI queries are templates: `$interface` is replaced by the
//! interface's label value, escaped for a double-quoted PromQL string, so they are
//! written with an exact matcher such as `{route="$interface"}`. The workload query may
//! use `$interface` too, or be shared by every interface (e.g. the number of virtual
//! users of a load test).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::judge::{
    Kpi, Limits, Method, Options, Range, DEFAULT_MIN_EFFECT, ENCODER_FILE, HEAD_FILE,
};

/// The placeholder replaced by the interface's label value.
pub const PLACEHOLDER: &str = "$interface";

/// Most points Prometheus returns per series and query (its own limit is 11,000).
pub const MAX_POINTS: i64 = 11_000;

/// `regressions:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegressions {
    /// How often every interface is checked (default 1m).
    pub interval: Option<String>,
    /// Resolution of the windows, the `query_range` step (default 15s).
    pub step: Option<String>,
    /// Length of the baseline and current windows (default 30m).
    pub window: Option<String>,
    /// Shortest window that is judged; shorter gives insufficient data (default 10m).
    pub min_window: Option<String>,
    /// matched (default), siamese, ks or mwu.
    pub method: Option<String>,
    /// Significance level of matched / ks / mwu: p < alpha is a regression (default 0.05).
    pub alpha: Option<f64>,
    /// Matched method: smallest relative worsening at matched load that is a regression,
    /// per KPI name (defaults: response_time 0.2, throughput 0.2, success_rate 0.02).
    pub min_effect: Option<BTreeMap<String, f64>>,
    /// Siamese decision threshold: probability >= threshold is a regression (default 0.5).
    pub threshold: Option<f64>,
    /// Largest share of gap rows a window may have (default 0.2).
    pub max_gap_fraction: Option<f64>,
    /// Directory with regress_encoder.onnx and regress_head.onnx (siamese only),
    /// relative to this file.
    pub model: Option<String>,
    /// Label whose values are the interfaces (e.g. `route`).
    pub interface_label: String,
    /// Instant query listing the interfaces: one series per interface, with the label.
    pub discover: String,
    /// Workload (load context) query; may use `$interface`.
    pub workload: String,
    /// KPI name (response_time, throughput, success_rate) → query with `$interface`.
    pub kpis: BTreeMap<String, String>,
    /// How the baseline window is chosen.
    pub baseline: RawBaseline,
}

/// `regressions.baseline:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBaseline {
    /// version_change, offset or pinned.
    pub mode: String,
    /// version_change: query whose series carry the version label (e.g. an info metric).
    pub version_query: Option<String>,
    /// version_change: the label holding the version (default `version`).
    pub version_label: Option<String>,
    /// version_change: how far back a change is looked for (default 1h).
    pub lookback: Option<String>,
    /// version_change: time after a change left out of the current window (rollout,
    /// warm-up, rate() ranges spanning the change; default 1m).
    pub settle: Option<String>,
    /// offset: how much earlier the baseline window lies (e.g. 1d or 1w).
    pub offset: Option<String>,
    /// pinned: start of the baseline (RFC 3339 or Unix seconds).
    pub start: Option<TimeValue>,
    /// pinned: end of the baseline (RFC 3339 or Unix seconds).
    pub end: Option<TimeValue>,
}

/// A point in time as written in YAML or JSON: Unix seconds or an RFC 3339 string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TimeValue {
    /// Unix seconds.
    Seconds(f64),
    /// RFC 3339 (`2025-01-31T12:00:00Z`) or Unix seconds as text.
    Text(String),
}

impl TimeValue {
    /// Milliseconds since the Unix epoch, or what was expected.
    pub fn to_ms(&self) -> Result<i64, String> {
        match self {
            TimeValue::Seconds(s) if s.is_finite() && s.abs() < 1e12 => Ok((s * 1000.0) as i64),
            TimeValue::Seconds(s) => Err(format!(
                "{s} is not a time (expected Unix seconds or RFC 3339)"
            )),
            TimeValue::Text(t) => {
                if let Ok(s) = t.trim().parse::<f64>() {
                    return TimeValue::Seconds(s).to_ms();
                }
                chrono::DateTime::parse_from_rfc3339(t.trim())
                    .map(|d| d.timestamp_millis())
                    .map_err(|e| {
                        format!("{t:?} is not a time: {e} (expected RFC 3339 such as 2025-01-31T12:00:00Z, or Unix seconds)")
                    })
            }
        }
    }
}

/// Validated `regressions:`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionsConfig {
    /// Evaluation interval.
    pub interval: Duration,
    /// Window resolution (whole seconds).
    pub step: Duration,
    /// Full window length.
    pub window: Duration,
    /// Shortest judged window.
    pub min_window: Duration,
    /// Method, thresholds and insufficient-data limits.
    pub options: Options,
    /// Model directory (siamese), resolved against the config file.
    pub model: Option<PathBuf>,
    /// Label naming the interface.
    pub interface_label: String,
    /// Discovery query (instant).
    pub discover: String,
    /// Workload query template.
    pub workload: String,
    /// KPI query templates, in [`Kpi::ALL`] order.
    pub kpis: Vec<(Kpi, String)>,
    /// Baseline selection.
    pub baseline: BaselineConfig,
}

/// Validated `regressions.baseline:`.
#[derive(Debug, Clone, PartialEq)]
pub enum BaselineConfig {
    /// The window before the latest change of a version label.
    VersionChange {
        /// Query whose series carry the label.
        query: String,
        /// The label.
        label: String,
        /// How far back a change is looked for.
        lookback: Duration,
        /// Time after the change that belongs to neither window.
        settle: Duration,
    },
    /// The same window `offset` earlier.
    Offset {
        /// The offset.
        offset: Duration,
    },
    /// A fixed range.
    Pinned {
        /// The range.
        range: Range,
    },
}

impl BaselineConfig {
    /// The `mode` label of `kpiwatch_regression_baseline_info`.
    pub fn mode(&self) -> &'static str {
        match self {
            BaselineConfig::VersionChange { .. } => "version_change",
            BaselineConfig::Offset { .. } => "offset",
            BaselineConfig::Pinned { .. } => "pinned",
        }
    }
}

/// Replaces `$interface` with `value`, escaped for a double-quoted PromQL string.
pub fn fill_template(template: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    template.replace(PLACEHOLDER, &escaped)
}

fn duration(
    key: &str,
    v: Option<&str>,
    default: Duration,
    errs: &mut Vec<(String, String)>,
) -> Duration {
    match v.map(super::parse_duration) {
        None => default,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            errs.push((key.to_string(), e));
            default
        }
    }
}

fn query(key: &str, q: &str, errs: &mut Vec<(String, String)>) -> String {
    if q.trim().is_empty() {
        errs.push((key.to_string(), "PromQL expression is empty".into()));
    }
    q.to_string()
}

/// Validates `regressions:`; errors are `(key path below regressions, message)`.
pub(super) fn validate(
    raw: RawRegressions,
    base: &Path,
    errs: &mut Vec<(String, String)>,
) -> RegressionsConfig {
    let interval = duration(
        "interval",
        raw.interval.as_deref(),
        Duration::from_secs(60),
        errs,
    );
    if interval < Duration::from_secs(1) {
        errs.push(("interval".into(), "must be at least 1s".into()));
    }
    let step = duration("step", raw.step.as_deref(), Duration::from_secs(15), errs);
    if step < Duration::from_secs(1) || !step.as_millis().is_multiple_of(1000) {
        errs.push((
            "step".into(),
            "must be a whole number of seconds, at least 1s".into(),
        ));
    }
    let window = duration(
        "window",
        raw.window.as_deref(),
        Duration::from_secs(1800),
        errs,
    );
    let min_window = duration(
        "min_window",
        raw.min_window.as_deref(),
        Duration::from_secs(600),
        errs,
    );
    let step_ms = step.as_millis().max(1) as i64;
    let points = window.as_millis() as i64 / step_ms;
    let min_points = (min_window.as_millis() as i64 / step_ms).max(0) as usize;
    if points > MAX_POINTS {
        errs.push((
            "window".into(),
            format!("covers {points} steps (expected at most {MAX_POINTS}: raise step)"),
        ));
    }
    if min_window > window {
        errs.push((
            "min_window".into(),
            format!(
                "{} is longer than window {} (expected min_window <= window)",
                super::format_duration(min_window),
                super::format_duration(window)
            ),
        ));
    }
    if min_points < 3 {
        errs.push((
            "min_window".into(),
            format!(
                "covers {min_points} steps (expected at least 3 steps of {})",
                super::format_duration(step)
            ),
        ));
    }
    let method = match raw.method.as_deref().map(str::parse::<Method>) {
        None => Method::Matched,
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            errs.push(("method".into(), e));
            Method::Matched
        }
    };
    let alpha = raw.alpha.unwrap_or(0.05);
    if !(alpha > 0.0 && alpha < 1.0) {
        errs.push((
            "alpha".into(),
            format!("{alpha} is out of range (expected 0 < alpha < 1)"),
        ));
    }
    let threshold = raw.threshold.unwrap_or(0.5);
    if !(threshold > 0.0 && threshold < 1.0) {
        errs.push((
            "threshold".into(),
            format!("{threshold} is out of range (expected 0 < threshold < 1)"),
        ));
    }
    let min_effect = validate_min_effect(raw.min_effect.unwrap_or_default(), errs);
    let max_gap_fraction = raw
        .max_gap_fraction
        .unwrap_or(Limits::default().max_gap_fraction);
    if !(0.0..1.0).contains(&max_gap_fraction) {
        errs.push((
            "max_gap_fraction".into(),
            format!("{max_gap_fraction} is out of range (expected 0 <= max_gap_fraction < 1)"),
        ));
    }
    let model = validate_model(method, raw.model.as_deref(), base, errs);
    if !super::validate::is_label_name(&raw.interface_label) {
        errs.push((
            "interface_label".into(),
            format!(
                "{:?} is not a Prometheus label name (expected e.g. route)",
                raw.interface_label
            ),
        ));
    }
    let discover = query("discover", &raw.discover, errs);
    let workload = query("workload", &raw.workload, errs);
    let kpis = validate_kpis(raw.kpis, errs);
    let baseline = validate_baseline(raw.baseline, errs);
    RegressionsConfig {
        interval,
        step,
        window,
        min_window,
        options: Options {
            method,
            kpis: kpis.iter().map(|(k, _)| *k).collect(),
            alpha,
            threshold,
            min_effect,
            limits: Limits {
                min_points,
                max_gap_fraction,
                max_gap_run: Limits::default().max_gap_run.max(min_points / 2),
            },
        },
        model,
        interface_label: raw.interface_label,
        discover,
        workload,
        kpis,
        baseline,
    }
}

/// `min_effect:` merged into the defaults; unknown KPIs and values outside `[0, 1)`
/// are errors.
fn validate_min_effect(raw: BTreeMap<String, f64>, errs: &mut Vec<(String, String)>) -> [f64; 3] {
    let mut out = DEFAULT_MIN_EFFECT;
    for (name, v) in raw {
        let key = format!("min_effect.{name}");
        match name.parse::<Kpi>() {
            Err(e) => errs.push((key, e)),
            Ok(_) if !(0.0..1.0).contains(&v) => errs.push((
                key,
                format!("{v} is out of range (expected a fraction 0 <= min_effect < 1, e.g. 0.1 for 10%)"),
            )),
            Ok(kpi) => out[kpi.index()] = v,
        }
    }
    out
}

fn validate_model(
    method: Method,
    model: Option<&str>,
    base: &Path,
    errs: &mut Vec<(String, String)>,
) -> Option<PathBuf> {
    let Some(dir) = model else {
        if method == Method::Siamese {
            errs.push((
                "model".into(),
                "is required with method siamese (expected the directory holding regress_encoder.onnx and regress_head.onnx, e.g. /usr/share/kpiwatch/models)".into(),
            ));
        }
        return None;
    };
    let dir = super::validate::resolve(base, dir);
    for f in [ENCODER_FILE, HEAD_FILE] {
        let p = dir.join(f);
        if let Err(e) = std::fs::File::open(&p) {
            errs.push((
                "model".into(),
                format!("cannot read {}: {e} (expected a directory holding {ENCODER_FILE} and {HEAD_FILE})", p.display()),
            ));
        }
    }
    Some(dir)
}

fn validate_kpis(
    raw: BTreeMap<String, String>,
    errs: &mut Vec<(String, String)>,
) -> Vec<(Kpi, String)> {
    if raw.is_empty() {
        errs.push((
            "kpis".into(),
            "is empty (expected at least one of response_time, throughput, success_rate)".into(),
        ));
    }
    let mut kpis = Vec::new();
    for (name, q) in raw {
        let key = format!("kpis.{name}");
        match name.parse::<Kpi>() {
            Ok(k) => {
                if !q.contains(PLACEHOLDER) {
                    errs.push((
                        key.clone(),
                        format!("has no {PLACEHOLDER} (expected a template such as rate(http_requests_total{{route=\"{PLACEHOLDER}\"}}[1m]))"),
                    ));
                }
                kpis.push((k, query(&key, &q, errs)));
            }
            Err(e) => errs.push((key, e)),
        }
    }
    kpis.sort_by_key(|(k, _)| *k);
    kpis
}

fn validate_baseline(raw: RawBaseline, errs: &mut Vec<(String, String)>) -> BaselineConfig {
    let mut misplaced = |present: bool, field: &str, mode: &str| {
        if present {
            errs.push((
                format!("baseline.{field}"),
                format!("only applies with mode {mode}"),
            ));
        }
    };
    let fallback = BaselineConfig::Offset {
        offset: Duration::from_secs(86_400),
    };
    // Keys that only mode version_change takes (rejected in the other modes).
    let version_change_keys = [
        (raw.version_query.is_some(), "version_query"),
        (raw.version_label.is_some(), "version_label"),
        (raw.lookback.is_some(), "lookback"),
        (raw.settle.is_some(), "settle"),
    ];
    match raw.mode.as_str() {
        "version_change" => {
            misplaced(raw.offset.is_some(), "offset", "offset");
            misplaced(raw.start.is_some(), "start", "pinned");
            misplaced(raw.end.is_some(), "end", "pinned");
            let query = match raw.version_query {
                Some(q) => query("baseline.version_query", &q, errs),
                None => {
                    errs.push((
                        "baseline.version_query".into(),
                        "is required with mode version_change (expected a query whose series carry the version label, e.g. app_build_info)".into(),
                    ));
                    String::new()
                }
            };
            let label = raw.version_label.unwrap_or_else(|| "version".into());
            if !super::validate::is_label_name(&label) {
                errs.push((
                    "baseline.version_label".into(),
                    format!("{label:?} is not a Prometheus label name"),
                ));
            }
            let lookback = duration(
                "baseline.lookback",
                raw.lookback.as_deref(),
                Duration::from_secs(3600),
                errs,
            );
            let settle = duration(
                "baseline.settle",
                raw.settle.as_deref(),
                Duration::from_secs(60),
                errs,
            );
            BaselineConfig::VersionChange {
                query,
                label,
                lookback,
                settle,
            }
        }
        "offset" => {
            for (present, field) in version_change_keys {
                misplaced(present, field, "version_change");
            }
            misplaced(raw.start.is_some(), "start", "pinned");
            misplaced(raw.end.is_some(), "end", "pinned");
            let Some(text) = raw.offset else {
                errs.push((
                    "baseline.offset".into(),
                    "is required with mode offset (expected e.g. 1d or 1w)".into(),
                ));
                return fallback;
            };
            let offset = duration(
                "baseline.offset",
                Some(&text),
                Duration::from_secs(86_400),
                errs,
            );
            if offset.is_zero() {
                errs.push(("baseline.offset".into(), "must be greater than 0".into()));
            }
            BaselineConfig::Offset { offset }
        }
        "pinned" => {
            for (present, field) in version_change_keys {
                misplaced(present, field, "version_change");
            }
            misplaced(raw.offset.is_some(), "offset", "offset");
            let mut time = |field: &str, v: Option<TimeValue>| match v.map(|t| t.to_ms()) {
                Some(Ok(ms)) => Some(ms),
                Some(Err(e)) => {
                    errs.push((format!("baseline.{field}"), e));
                    None
                }
                None => {
                    errs.push((
                        format!("baseline.{field}"),
                        "is required with mode pinned (expected RFC 3339 or Unix seconds)".into(),
                    ));
                    None
                }
            };
            let (start, end) = (time("start", raw.start), time("end", raw.end));
            match (start, end) {
                (Some(start_ms), Some(end_ms)) if end_ms > start_ms => BaselineConfig::Pinned {
                    range: Range { start_ms, end_ms },
                },
                (Some(_), Some(_)) => {
                    errs.push((
                        "baseline.end".into(),
                        "is not after start (expected start < end)".into(),
                    ));
                    fallback
                }
                _ => fallback,
            }
        }
        other => {
            errs.push((
                "baseline.mode".into(),
                format!(
                    "{other:?} is not a baseline mode (expected version_change, offset or pinned)"
                ),
            ));
            fallback
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_the_label_value() {
        assert_eq!(
            fill_template(r#"rate(x{route="$interface"}[1m])"#, r#"GET /a"b\c"#),
            r#"rate(x{route="GET /a\"b\\c"}[1m])"#
        );
    }

    #[test]
    fn times_are_rfc3339_or_unix_seconds() {
        assert_eq!(TimeValue::Seconds(1.5).to_ms(), Ok(1500));
        assert_eq!(
            TimeValue::Text("1700000000".into()).to_ms(),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            TimeValue::Text("2023-11-14T22:13:20Z".into()).to_ms(),
            Ok(1_700_000_000_000)
        );
        assert!(TimeValue::Text("yesterday".into())
            .to_ms()
            .unwrap_err()
            .contains("expected RFC 3339"));
        assert!(TimeValue::Seconds(f64::NAN).to_ms().is_err());
    }
}
