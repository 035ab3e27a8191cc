//! The JSON half of the catalog: listing patterns and editing their issue labels.
//!
//! Answers follow the Prometheus HTTP API's envelope: `{"status":"success","data":…}`
//! or `{"status":"error","errorType":…,"error":…}`, so tools that read one read both.

use std::time::Duration;

use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::board::{Filter, SeriesPatterns};
use super::edit::{CatalogHandle, EditError, EditOutcome, LabelEdit, LabelEditRequest};
use crate::detect::adsketch::pattern::validate_labels;
use crate::detect::adsketch::{LabelError, LabelOp, Pattern};
use crate::export::http::{json, Body};

/// Most series one listing returns unless `limit` says otherwise.
pub(super) const DEFAULT_LIMIT: usize = 1000;

/// How long an edit waits for the group, which takes edits between cycles (a cycle
/// in progress finishes first).
const EDIT_TIMEOUT: Duration = Duration::from_secs(60);

/// An error answer in the Prometheus API's shape.
pub(super) fn error(status: StatusCode, error_type: &str, message: &str) -> Response<Body> {
    json(
        status,
        &json!({"status": "error", "errorType": error_type, "error": message}),
    )
}

fn success(data: Value) -> Response<Body> {
    json(StatusCode::OK, &json!({"status": "success", "data": data}))
}

/// Seconds since the epoch, as Prometheus writes timestamps.
fn seconds(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| json!(ms as f64 / 1000.0))
}

fn pattern_json(p: &Pattern, s: &SeriesPatterns) -> Value {
    // Means are stored in the scaled units (T_n's range is [0, 1]); people read the
    // metric's own units, so both are given.
    let value: Vec<f64> = p
        .mean
        .iter()
        .map(|&x| (x - s.scaler.min) / s.scaler.scale)
        .collect();
    json!({
        "id": p.id,
        "kind": p.kind.as_str(),
        "origin": p.origin,
        "size": p.size,
        "radius": p.radius,
        "mean": p.mean,
        "mean_value": value,
        "labels": p.labels,
        "issue_group": p.group,
        "first_match": seconds(p.first_match_ms),
        "last_match": seconds(p.last_match_ms),
    })
}

pub(super) fn series_json(s: &SeriesPatterns) -> Value {
    let (normal, abnormal) = s.counts();
    json!({
        "series": s.id,
        "group": s.group,
        "entity": s.entity,
        "metric": s.metric,
        "m": s.m,
        "scaler": {"scale": s.scaler.scale, "min": s.scaler.min},
        "normal": normal,
        "abnormal": abnormal,
        "dropped": s.dropped,
        "patterns": s.patterns.iter().map(|p| pattern_json(p, s)).collect::<Vec<_>>(),
    })
}

/// The listing filter and limit from the query string; unknown parameters are errors
/// (a misspelt filter would otherwise silently list everything).
pub(super) fn parse_query(query: Option<&str>) -> Result<(Filter, usize), String> {
    let mut filter = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "group" => filter.group = Some(v),
            "entity" => filter.entity = Some(v),
            "metric" => filter.metric = Some(v),
            "limit" => {
                limit = v.parse().map_err(|_| {
                    format!("limit {v:?} is not a number of series (expected e.g. limit=100)")
                })?
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?} (expected group, entity, metric or limit)"
                ))
            }
        }
    }
    Ok((filter, limit))
}

/// `GET /api/v1/patterns`.
pub(super) fn list(handle: &CatalogHandle, query: Option<&str>) -> Response<Body> {
    let (filter, limit) = match parse_query(query) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", &e),
    };
    let (series, total) = handle.patterns.list(&filter, limit);
    success(json!({
        "series": series.iter().map(|s| series_json(s)).collect::<Vec<_>>(),
        "total": total,
        "truncated": total > series.len(),
    }))
}

/// `GET /api/v1/patterns/{series}`.
pub(super) fn one(handle: &CatalogHandle, series: &str) -> Response<Body> {
    match handle.patterns.series(series) {
        Some(s) => success(series_json(&s)),
        None => unknown_series(series),
    }
}

fn unknown_series(series: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no series {series:?} in the catalog (GET /api/v1/patterns lists them)"),
    )
}

/// The body of `PUT …/labels`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsBody {
    labels: Vec<String>,
}

/// `PUT`/`DELETE` of `…/{series}/{id}/labels[/{label}]`: parses and validates the
/// request, then hands the edit to the app and waits for its answer.
pub(super) async fn edit(
    handle: &CatalogHandle,
    method: &Method,
    series: &str,
    id: &str,
    label: Option<String>,
    body: &[u8],
) -> Response<Body> {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_data",
            &format!("pattern id {id:?} is not a number"),
        );
    };
    let op = match (method, label) {
        (&Method::PUT, None) => match serde_json::from_slice::<LabelsBody>(body) {
            Ok(b) => LabelOp::Set(b.labels),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_data",
                    &format!("body is not {{\"labels\": [\"...\"]}}: {e}"),
                )
            }
        },
        (&Method::DELETE, None) => LabelOp::Clear,
        (&Method::PUT, Some(l)) => LabelOp::Add(l),
        (&Method::DELETE, Some(l)) => LabelOp::Remove(l),
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_data",
                "labels take PUT or DELETE",
            )
        }
    };
    // Check what can be checked here, so that a bad request is answered without
    // waiting for the group; the detector checks the result again before changing it.
    let checked = match &op {
        LabelOp::Set(labels) => validate_labels(labels),
        LabelOp::Add(l) => validate_labels(std::slice::from_ref(l)),
        LabelOp::Remove(_) | LabelOp::Clear => Ok(()),
    };
    if let Err(e) = checked {
        return edit_error(&EditError::Label(LabelError::from_validation(e)));
    }
    let Some(s) = handle.patterns.series(series) else {
        return unknown_series(series);
    };
    let edit = LabelEdit {
        group: s.group.clone(),
        entity: s.entity.clone(),
        metric: s.metric.clone(),
        id,
        op,
    };
    match send(handle, edit).await {
        Ok(EditOutcome { pattern, persisted }) => {
            let mut data = pattern_json(&pattern, &s);
            data["persisted"] = json!(persisted);
            success(data)
        }
        Err(e) => edit_error(&e),
    }
}

async fn send(handle: &CatalogHandle, edit: LabelEdit) -> Result<EditOutcome, EditError> {
    let (reply, answer) = oneshot::channel();
    handle
        .edits
        .send(LabelEditRequest { edit, reply })
        .await
        .map_err(|_| EditError::Unavailable("shutting down"))?;
    match tokio::time::timeout(EDIT_TIMEOUT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(EditError::Unavailable("shutting down")),
        Err(_) => Err(EditError::TimedOut(EDIT_TIMEOUT.as_secs())),
    }
}

fn edit_error(e: &EditError) -> Response<Body> {
    let (status, kind) = match e {
        EditError::Label(l) if l.is_not_found() => (StatusCode::NOT_FOUND, "not_found"),
        EditError::Label(_) => (StatusCode::BAD_REQUEST, "bad_data"),
        EditError::UnknownGroup(_) | EditError::NotEnabled(_) => {
            (StatusCode::NOT_FOUND, "not_found")
        }
        EditError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        EditError::TimedOut(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        EditError::NotSaved(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status, kind, &e.to_string())
}
