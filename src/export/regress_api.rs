//! `POST /api/v1/regressions/check`: an on-demand regression comparison (a canary gate
//! for deployment pipelines).
//!
//! Request body (JSON; times are RFC 3339 strings or Unix seconds):
//!
//! ```json
//! {"interface": "search",
//!  "baseline": {"start": "2025-01-31T12:00:00Z", "end": "2025-01-31T12:30:00Z"},
//!  "current":  {"start": 1738328400, "end": 1738330200},
//!  "method": "siamese",
//!  "queries": {"workload": "...", "response_time": "...{route=\"$interface\"}..."}}
//! ```
//!
//! `interface` names a configured interface (the queries of `regressions:` are used,
//! with `$interface` replaced); `queries` (optional) replaces some or all of them for
//! this request; with `queries` holding a workload and at least one KPI, `interface` may
//! be omitted. `method` defaults to the configured one. The answer is the JSON of
//! `kpiwatch regress` (`{"method", "verdict", "kpis"}`), status 200 whatever the verdict;
//! errors are `{"error": "..."}` with 400 (bad JSON, end before start, a range longer
//! than 11,000 steps), 404 (unknown interface), 502 (Prometheus failed), 503 (no
//! `regressions:` configured) or 500.
//!
//! This module parses and answers; the comparison itself is behind [`RegressionChecker`]
//! (implemented by `crate::regressions`), which runs on the agent's runtime so the
//! admin thread never does the heavy work.

use std::collections::BTreeMap;
use std::fmt;

use futures_util::future::BoxFuture;
use hyper::{Method as HttpMethod, Response, StatusCode};
use serde::Deserialize;

use super::http::{json, Body};
use super::server::{Admin, ApiRequest};
use crate::config::regressions::{TimeValue, MAX_POINTS};
use crate::detect::regress::baseline::Range;
use crate::detect::regress::{Kpi, Method, Report};

/// Runs a check (the agent's implementation queries Prometheus; tests use a mock).
pub trait RegressionChecker: Send + Sync + fmt::Debug {
    /// Compares the request's windows.
    fn check(&self, req: CheckRequest) -> BoxFuture<'static, Result<Report, CheckError>>;
}

/// A parsed, range-checked request.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRequest {
    /// Configured interface, if named.
    pub interface: Option<String>,
    /// Workload query overriding the configured one.
    pub workload: Option<String>,
    /// KPI queries overriding the configured ones.
    pub kpis: Vec<(Kpi, String)>,
    /// Baseline range.
    pub baseline: Range,
    /// Current range.
    pub current: Range,
    /// Method overriding the configured one.
    pub method: Option<Method>,
}

/// Why a check was refused or failed; each maps to an HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The interface is not known (404).
    #[error("{0}")]
    UnknownInterface(String),
    /// Prometheus failed (502).
    #[error("{0}")]
    Upstream(String),
    /// Regression checks are not configured (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else, e.g. the model failed (500).
    #[error("{0}")]
    Internal(String),
}

impl CheckError {
    fn status(&self) -> StatusCode {
        match self {
            CheckError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CheckError::UnknownInterface(_) => StatusCode::NOT_FOUND,
            CheckError::Upstream(_) => StatusCode::BAD_GATEWAY,
            CheckError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CheckError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: TimeValue,
    end: TimeValue,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    interface: Option<String>,
    baseline: RawRange,
    current: RawRange,
    method: Option<String>,
    #[serde(default)]
    queries: BTreeMap<String, String>,
}

fn range(which: &str, r: &RawRange) -> Result<Range, CheckError> {
    let bad = |e: String| CheckError::BadRequest(format!("{which}: {e}"));
    let start_ms = r.start.to_ms().map_err(|e| bad(format!("start: {e}")))?;
    let end_ms = r.end.to_ms().map_err(|e| bad(format!("end: {e}")))?;
    if end_ms <= start_ms {
        return Err(bad("end is not after start (expected start < end)".into()));
    }
    Ok(Range { start_ms, end_ms })
}

/// Parses a request body.
pub fn parse_request(body: &[u8]) -> Result<CheckRequest, CheckError> {
    let raw: RawCheck = serde_json::from_slice(body).map_err(|e| {
        CheckError::BadRequest(format!(
            "the body is not a valid check request: {e} (expected {{\"interface\": ..., \"baseline\": {{\"start\", \"end\"}}, \"current\": {{\"start\", \"end\"}}}})"
        ))
    })?;
    let baseline = range("baseline", &raw.baseline)?;
    let current = range("current", &raw.current)?;
    let method = raw
        .method
        .as_deref()
        .map(str::parse::<Method>)
        .transpose()
        .map_err(|e| CheckError::BadRequest(format!("method: {e}")))?;
    let mut workload = None;
    let mut kpis = Vec::new();
    for (name, q) in raw.queries {
        if q.trim().is_empty() {
            return Err(CheckError::BadRequest(format!(
                "queries.{name}: PromQL expression is empty"
            )));
        }
        if name == "workload" {
            workload = Some(q);
        } else {
            let kpi = name
                .parse::<Kpi>()
                .map_err(|e| CheckError::BadRequest(format!("queries: {e}")))?;
            kpis.push((kpi, q));
        }
    }
    if raw.interface.is_none() && (workload.is_none() || kpis.is_empty()) {
        return Err(CheckError::BadRequest(
            "no interface (expected \"interface\", or \"queries\" with a workload and at least one KPI)"
                .into(),
        ));
    }
    Ok(CheckRequest {
        interface: raw.interface,
        workload,
        kpis,
        baseline,
        current,
        method,
    })
}

/// Refuses ranges Prometheus would refuse: more than [`MAX_POINTS`] steps of `step_ms`.
pub fn check_lengths(req: &CheckRequest, step_ms: i64) -> Result<(), CheckError> {
    for (which, r) in [("baseline", req.baseline), ("current", req.current)] {
        let steps = r.len_ms() / step_ms.max(1);
        if steps > MAX_POINTS {
            return Err(CheckError::BadRequest(format!(
                "{which}: the range covers {steps} steps of {} s (expected at most {MAX_POINTS}: shorten it)",
                step_ms / 1000
            )));
        }
    }
    Ok(())
}

fn error(e: &CheckError) -> Response<Body> {
    json(e.status(), &serde_json::json!({ "error": e.to_string() }))
}

/// Answers the regression routes.
pub async fn handle(req: &ApiRequest, admin: &Admin) -> Response<Body> {
    if req.path != "/api/v1/regressions/check" {
        return error(&CheckError::UnknownInterface(
            "not found (expected POST /api/v1/regressions/check)".into(),
        ));
    }
    if req.method != HttpMethod::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method not allowed (expected POST)"}),
        );
    }
    let Some(checker) = admin.regressions.clone() else {
        return error(&CheckError::Unavailable(
            "regression checks are not configured (add a regressions: section)".into(),
        ));
    };
    let parsed = match parse_request(&req.body) {
        Ok(r) => r,
        Err(e) => return error(&e),
    };
    match checker.check(parsed).await {
        Ok(report) => match serde_json::to_value(&report) {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => error(&CheckError::Internal(format!(
                "cannot encode the report: {e}"
            ))),
        },
        Err(e) => error(&e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;
    use hyper::body::Bytes;

    use super::*;
    use crate::detect::regress::KpiOutcome;

    /// Records requests; answers a fixed result.
    #[derive(Debug)]
    struct Mock {
        seen: Mutex<Vec<CheckRequest>>,
        answer: Result<Report, CheckError>,
    }

    impl RegressionChecker for Mock {
        fn check(&self, req: CheckRequest) -> BoxFuture<'static, Result<Report, CheckError>> {
            self.seen.lock().unwrap().push(req);
            let a = self.answer.clone();
            Box::pin(async move { a })
        }
    }

    fn admin(answer: Result<Report, CheckError>) -> (Admin, Arc<Mock>) {
        let mock = Arc::new(Mock {
            seen: Mutex::new(Vec::new()),
            answer,
        });
        let admin = Admin {
            regressions: Some(mock.clone()),
            ..Admin::default()
        };
        (admin, mock)
    }

    fn regression() -> Report {
        Report::new(
            Method::Ks,
            vec![(
                Kpi::ResponseTime,
                KpiOutcome {
                    regression: Some(true),
                    p_value: Some(0.001),
                    ..Default::default()
                },
            )],
        )
    }

    async fn post(a: &Admin, body: &str) -> (u16, serde_json::Value) {
        let req = ApiRequest {
            body: Bytes::from(body.to_string()),
            ..ApiRequest::new(HttpMethod::POST, "/api/v1/regressions/check")
        };
        let r = handle(&req, a).await;
        let status = r.status().as_u16();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    const GOOD: &str = r#"{"interface":"search","method":"ks",
        "baseline":{"start":"2023-11-14T22:13:20Z","end":1700000600},
        "current":{"start":"1700000600","end":1700001200}}"#;

    #[tokio::test]
    async fn a_valid_request_reaches_the_checker_and_returns_the_cli_json() {
        let (a, mock) = admin(Ok(regression()));
        let (status, v) = post(&a, GOOD).await;
        assert_eq!(status, 200);
        assert_eq!(v["verdict"], "regression");
        assert_eq!(v["kpis"]["response_time"]["p_value"], 0.001);
        let seen = mock.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].interface.as_deref(), Some("search"));
        assert_eq!(seen[0].method, Some(Method::Ks));
        assert_eq!(
            seen[0].baseline,
            Range {
                start_ms: 1_700_000_000_000,
                end_ms: 1_700_000_600_000
            }
        );
    }

    #[tokio::test]
    async fn bad_input_gets_a_4xx_with_the_reason() {
        let (a, mock) = admin(Ok(regression()));
        let cases = [
            ("{not json", "not a valid check request"),
            (
                r#"{"interface":"x","baseline":{"start":10,"end":5},"current":{"start":1,"end":2}}"#,
                "baseline: end is not after start",
            ),
            (
                r#"{"interface":"x","baseline":{"start":1,"end":5},"current":{"start":"soon","end":2}}"#,
                "current: start: \"soon\" is not a time",
            ),
            (
                r#"{"baseline":{"start":1,"end":5},"current":{"start":6,"end":9}}"#,
                "no interface",
            ),
            (
                r#"{"interface":"x","method":"t-test","baseline":{"start":1,"end":5},"current":{"start":6,"end":9}}"#,
                "unknown method",
            ),
            (
                r#"{"interface":"x","queries":{"latency":"up"},"baseline":{"start":1,"end":5},"current":{"start":6,"end":9}}"#,
                "unknown KPI `latency`",
            ),
            (
                r#"{"interface":"x","extra":1,"baseline":{"start":1,"end":5},"current":{"start":6,"end":9}}"#,
                "unknown field `extra`",
            ),
        ];
        for (body, reason) in cases {
            let (status, v) = post(&a, body).await;
            assert_eq!(status, 400, "{body}");
            let msg = v["error"].as_str().unwrap();
            assert!(msg.contains(reason), "{body}: {msg}");
        }
        assert!(
            mock.seen.lock().unwrap().is_empty(),
            "nothing reached the checker"
        );
    }

    #[tokio::test]
    async fn checker_errors_map_to_statuses() {
        for (e, want) in [
            (
                CheckError::UnknownInterface("unknown interface \"x\"".into()),
                404,
            ),
            (CheckError::Upstream("Prometheus is down".into()), 502),
            (CheckError::BadRequest("too long".into()), 400),
        ] {
            let (a, _) = admin(Err(e.clone()));
            let (status, v) = post(&a, GOOD).await;
            assert_eq!(status, want);
            assert_eq!(v["error"], e.to_string());
        }
        let (status, v) = post(&Admin::default(), GOOD).await;
        assert_eq!(status, 503);
        assert!(v["error"].as_str().unwrap().contains("not configured"));
        let get = handle(
            &ApiRequest::new(HttpMethod::GET, "/api/v1/regressions/check"),
            &Admin::default(),
        )
        .await;
        assert_eq!(get.status(), 405);
    }

    #[test]
    fn ranges_longer_than_prometheus_allows_are_refused() {
        let mut req = parse_request(GOOD.as_bytes()).unwrap();
        assert!(check_lengths(&req, 1000).is_ok());
        req.current.end_ms = req.current.start_ms + (MAX_POINTS + 1) * 1000;
        let e = check_lengths(&req, 1000).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("current: the range covers 11001 steps"),
            "{e}"
        );
        assert!(check_lengths(&req, 15_000).is_ok());
    }
}
