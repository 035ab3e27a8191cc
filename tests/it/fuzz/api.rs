//! The admin HTTP routes through `export::handle` (no socket): any method, path, query
//! and body gets an answer with a status and, for a refusal, a message; JSON routes
//! answer JSON. Label edits and regression checks start from valid bodies and are
//! edited; what is accepted must satisfy the documented rules.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use kpiwatch::detect::adsketch::{PatternSet, Scaler};
use kpiwatch::detect::regress::{Method as RegressMethod, Report};
use kpiwatch::export::catalog::{EditError, EditOutcome, LabelEditRequest, SeriesPatterns};
use kpiwatch::export::regress_api::{
    check_lengths, parse_request, CheckError, CheckRequest, RegressionChecker,
};
use kpiwatch::export::{handle, Admin, ApiRequest, CatalogHandle, PatternCatalog, ReloadRequest};
use proptest::prelude::*;
use serde_json::Value;
use tokio::sync::mpsc;

use super::mutate;

const ENTITY: &str = "instance=\"10.0.0.7:9100\"";

fn set() -> PatternSet {
    PatternSet::from_clusters(
        3,
        Scaler::fit(&[0.0, 10.0]),
        vec![
            (vec![0.1, 0.5, 0.9], 10, 0.2, false),
            (vec![0.2, 1.8, 0.2], 2, 0.1, true),
        ],
    )
}

/// Answers every check with a fixed report and keeps what it was asked.
#[derive(Debug, Default)]
struct Checker {
    seen: Mutex<Vec<CheckRequest>>,
}

impl RegressionChecker for Checker {
    fn check(&self, req: CheckRequest) -> BoxFuture<'static, Result<Report, CheckError>> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(req);
        Box::pin(async { Ok(Report::new(RegressMethod::Matched, Vec::new())) })
    }
}

/// An admin with everything behind it: a catalog whose edits a task applies to `set()`
/// (as the app and the group loop do), a regression checker, and a reload channel whose
/// answers alternate between accepted and rejected. Runs on `rt`.
fn admin(rt: &tokio::runtime::Runtime) -> (Admin, String, Arc<Checker>) {
    let _guard = rt.enter();
    let catalog = Arc::new(PatternCatalog::new());
    let s = SeriesPatterns::new("node", ENTITY, "cpu", &set());
    let id = s.id.clone();
    catalog.publish_group("node", [s], Instant::now());
    let (edits, mut edit_rx) = mpsc::channel::<LabelEditRequest>(4);
    let published = catalog.clone();
    rt.spawn(async move {
        let mut set = set();
        while let Some(req) = edit_rx.recv().await {
            let r = set
                .edit_labels(req.edit.id, req.edit.op.clone())
                .map(|p| EditOutcome {
                    pattern: p.clone(),
                    persisted: false,
                })
                .map_err(EditError::from);
            published.publish_series(SeriesPatterns::new("node", ENTITY, "cpu", &set));
            let _ = req.reply.send(r);
        }
    });
    let (reload, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    rt.spawn(async move {
        let mut n = 0u64;
        while let Some(answer) = reload_rx.recv().await {
            n += 1;
            let _ = answer.send(if n.is_multiple_of(2) {
                Ok("kpiwatch.yaml".into())
            } else {
                Err("kpiwatch.yaml: groups[0].window: 1 is out of range".into())
            });
        }
    });
    let checker = Arc::new(Checker::default());
    let admin = Admin {
        catalog: Some(CatalogHandle {
            patterns: catalog,
            edits,
        }),
        regressions: Some(checker.clone()),
        reload: Some(reload),
        ..Admin::default()
    };
    (admin, id, checker)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// Status and body of one request.
fn call(rt: &tokio::runtime::Runtime, admin: &Admin, req: &ApiRequest) -> (StatusCode, Bytes) {
    rt.block_on(async {
        let resp = handle(req, admin).await;
        let status = resp.status();
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(never) => match never {},
        };
        (status, body)
    })
}

/// A refusal says why: a non-empty text, or for the JSON API an `error` string.
fn assert_answer(path: &str, status: StatusCode, body: &[u8]) -> Result<(), TestCaseError> {
    prop_assert!(!body.is_empty(), "{status} with an empty body");
    if path.starts_with("/api/") {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| TestCaseError::fail(format!("{status} {path}: not JSON: {e}")))?;
        if !status.is_success() {
            let msg = v.get("error").and_then(Value::as_str).unwrap_or_default();
            prop_assert!(
                !msg.is_empty(),
                "{status} {path} without an error message: {v}"
            );
        }
    }
    Ok(())
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::PUT),
        Just(Method::POST),
        Just(Method::DELETE),
        Just(Method::HEAD),
        Just(Method::PATCH),
        Just(Method::OPTIONS),
    ]
}

/// Paths built from the routes' own pieces, the real series id and hostile segments
/// (percent escapes cut short or not UTF-8, huge ids, dots, unicode).
fn path(series: String) -> impl Strategy<Value = String> {
    let prefix = prop::sample::select(vec![
        "/api/v1/patterns",
        "/api/v1/patterns/",
        "/api/v1/regressions",
        "/api/v1/regressions/check",
        "/patterns",
        "/-/reload",
        "/metrics",
        "/-/ready",
        "/",
        "",
    ]);
    let segment = prop_oneof![
        Just(series),
        Just("labels".to_string()),
        Just("0".to_string()),
        Just("1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("%".to_string()),
        Just("%e".to_string()),
        Just("%ff%fe".to_string()),
        Just("%2F%2e%2E".to_string()),
        Just("team%2Fdb".to_string()),
        Just("..".to_string()),
        "[a-z0-9_.:/-]{1,80}",
        "\\PC{0,12}",
        "(%[0-9a-fA-F]{0,2}){1,8}",
    ];
    (prefix, prop::collection::vec(segment, 0..5))
        .prop_map(|(p, segs)| format!("{p}/{}", segs.join("/")))
}

/// A valid `POST /api/v1/regressions/check` body, and variants of it.
const CHECK_SEEDS: &[&str] = &[
    r#"{"interface": "search", "baseline": {"start": "2025-01-31T12:00:00Z", "end": "2025-01-31T12:30:00Z"}, "current": {"start": 1738328400, "end": 1738330200}, "method": "siamese"}"#,
    r#"{"baseline": {"start": 1738326000, "end": "1738327800"}, "current": {"start": 1738328400.5, "end": 1738330200}, "queries": {"workload": "sum(rate(http_requests_total[1m]))", "response_time": "histogram_quantile(0.9, sum by (le) (rate(d_bucket{route=\"$interface\"}[1m])))"}}"#,
];

/// A valid label body.
const LABEL_SEEDS: &[&str] = &[
    r#"{"labels": ["disk-full", "team/db", "a.b:c_d"]}"#,
    r#"{"labels": []}"#,
];

fn label_ok(l: &str) -> bool {
    (1..=64).contains(&l.len())
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:/-".contains(c))
}

proptest! {
    #![proptest_config(mutate::config(1000))]

    /// Any method, path, query and body: a status and a reason, JSON on the API.
    #[test]
    fn any_request_gets_an_answer_with_a_reason(
        (m, p) in (method(), path(SeriesPatterns::new("node", ENTITY, "cpu", &set()).id)),
        query in proptest::option::of("(\\PC|&|=|%){0,40}"),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let rt = runtime();
        let (admin, _, _) = admin(&rt);
        let req = ApiRequest {
            query,
            body: Bytes::from(body),
            ..ApiRequest::new(m, &p)
        };
        let (status, body) = call(&rt, &admin, &req);
        if status != StatusCode::OK || p.starts_with("/api/") {
            assert_answer(&p, status, &body)?;
        }
    }

    /// Edited label bodies: applied labels follow the rules (1 to 64 bytes of
    /// `[A-Za-z0-9_.:/-]`, at most 16, no repeats); anything else is a 4xx with a reason.
    #[test]
    fn edited_label_bodies_are_applied_only_when_valid(
        body in mutate::mutated(LABEL_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(), 3),
        pattern in 0u64..3,
    ) {
        let rt = runtime();
        let (admin, series, _) = admin(&rt);
        let path = format!("/api/v1/patterns/{series}/{pattern}/labels");
        let req = ApiRequest {
            body: Bytes::from(body),
            ..ApiRequest::new(Method::PUT, &path)
        };
        let (status, answer) = call(&rt, &admin, &req);
        assert_answer(&path, status, &answer)?;
        if status == StatusCode::OK {
            let v: Value = serde_json::from_slice(&answer).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let labels: Vec<&str> = v["data"]["labels"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            prop_assert!(labels.len() <= 16);
            for (k, l) in labels.iter().enumerate() {
                prop_assert!(label_ok(l), "accepted label {l:?}");
                prop_assert!(!labels[..k].contains(l), "repeated label {l:?}");
            }
        } else {
            prop_assert!(status.is_client_error(), "{status}");
        }
    }

    /// Edited check bodies: a parsed request has ordered, bounded ranges and a known
    /// method; anything else is a 400 naming what is wrong. The route agrees with
    /// `parse_request`, and the length check never overflows.
    #[test]
    fn edited_check_bodies_parse_or_are_bad_requests(
        body in mutate::mutated(CHECK_SEEDS.iter().map(|s| s.as_bytes().to_vec()).collect(), 3),
        step_ms in prop_oneof![Just(0i64), Just(-1), Just(i64::MIN), Just(i64::MAX), 1i64..3_600_000],
    ) {
        match parse_request(&body) {
            Ok(req) => {
                for r in [req.baseline, req.current] {
                    prop_assert!(r.start_ms < r.end_ms);
                    // Unix seconds are accepted below 1e12; RFC 3339 years end at 9999.
                    prop_assert!(r.start_ms.abs() < 1_000_000_000_000_000 && r.end_ms.abs() < 1_000_000_000_000_000);
                }
                prop_assert!(req.interface.is_some() || (req.workload.is_some() && !req.kpis.is_empty()));
                let _ = check_lengths(&req, step_ms);
            }
            Err(e) => {
                prop_assert!(matches!(e, CheckError::BadRequest(_)), "{e:?}");
                prop_assert!(!e.to_string().is_empty());
            }
        }
        let rt = runtime();
        let (admin, _, checker) = admin(&rt);
        let path = "/api/v1/regressions/check";
        let req = ApiRequest {
            body: Bytes::from(body.clone()),
            ..ApiRequest::new(Method::POST, path)
        };
        let (status, answer) = call(&rt, &admin, &req);
        assert_answer(path, status, &answer)?;
        let parsed = parse_request(&body).is_ok();
        prop_assert_eq!(status == StatusCode::OK, parsed, "{}", status);
        prop_assert_eq!(checker.seen.lock().map(|s| s.len()).unwrap_or(0), usize::from(parsed));
    }
}

/// A reload is answered with the app's verdict whatever the body, and only POST or PUT
/// reach the app.
#[test]
fn reload_answers_the_apps_verdict_and_refuses_other_methods() {
    let rt = runtime();
    let (admin, _, _) = admin(&rt);
    let mut statuses = Vec::new();
    for body in [&b""[..], b"{}", b"\xff\xfe garbage", &[b'['; 4096]] {
        let req = ApiRequest {
            body: Bytes::copy_from_slice(body),
            ..ApiRequest::new(Method::POST, "/-/reload")
        };
        let (status, text) = call(&rt, &admin, &req);
        assert!(!text.is_empty());
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::OK
        ]
    );
    for m in [Method::GET, Method::DELETE, Method::PATCH] {
        let (status, _) = call(&rt, &admin, &ApiRequest::new(m, "/-/reload"));
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
