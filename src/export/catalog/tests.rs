//! The catalog's routes without a socket: a fake app answers edits on a pattern set.

use std::sync::Arc;
use std::time::Instant;

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::Method;
use tokio::sync::mpsc;

use super::*;
use crate::detect::adsketch::{PatternSet, Scaler};
use crate::export::server::{Admin, ApiRequest};

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

/// An admin whose edits are applied to `set()` by a task standing in for the app and
/// the group loop (same order: apply, republish, answer).
fn admin() -> (Admin, String) {
    let catalog = Arc::new(PatternCatalog::new());
    let s = SeriesPatterns::new("node", ENTITY, "cpu", &set());
    let id = s.id.clone();
    catalog.publish_group("node", [s], Instant::now());
    catalog.publish_counts("node", 1, 1);
    let (tx, mut rx) = mpsc::channel::<LabelEditRequest>(4);
    let published = catalog.clone();
    tokio::spawn(async move {
        let mut set = set();
        while let Some(req) = rx.recv().await {
            let r = set
                .edit_labels(req.edit.id, req.edit.op.clone())
                .map(|p| EditOutcome {
                    pattern: p.clone(),
                    persisted: true,
                })
                .map_err(EditError::from);
            published.publish_series(SeriesPatterns::new("node", ENTITY, "cpu", &set));
            let _ = req.reply.send(r);
        }
    });
    let admin = Admin {
        catalog: Some(CatalogHandle {
            patterns: catalog,
            edits: tx,
        }),
        ..Admin::default()
    };
    (admin, id)
}

async fn call(a: &Admin, method: Method, path: &str, body: &str) -> (u16, String) {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (path, None),
    };
    let req = ApiRequest {
        method,
        path: path.to_string(),
        query,
        body: Bytes::from(body.to_string()),
        authorization: None,
        accepts_gzip: false,
    };
    let r = crate::export::handle(&req, a).await;
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn labels(a: &Admin, series: &str) -> Vec<Vec<String>> {
    let (status, body) = call(a, Method::GET, &format!("/api/v1/patterns/{series}"), "").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::from_value(p["labels"].clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn lists_with_filters_and_rejects_unknown_parameters() {
    let (a, id) = admin();
    let (status, body) = call(&a, Method::GET, "/api/v1/patterns", "").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let s = &v["data"]["series"][0];
    assert_eq!(s["series"], id.as_str());
    assert_eq!(s["entity"], ENTITY);
    assert_eq!(
        (s["normal"].as_u64(), s["abnormal"].as_u64()),
        (Some(1), Some(1))
    );
    let p = &s["patterns"][1];
    assert_eq!(p["kind"], "abnormal");
    assert_eq!(p["size"], 2);
    assert_eq!(p["mean"], serde_json::json!([0.2, 1.8, 0.2]));
    // Back in the metric's units: the scaler maps 0..10 onto 0..1.
    let v0 = p["mean_value"][1].as_f64().unwrap();
    assert!((v0 - 18.0).abs() < 1e-9, "{v0}");
    assert!(p["last_match"].is_null());

    for (query, n) in [
        ("group=node", 1),
        ("group=other", 0),
        ("entity=10.0.0.7", 1),
        ("entity=10.0.0.8", 0),
        ("metric=cpu&group=node", 1),
        ("metric=mem", 0),
    ] {
        let (status, body) = call(&a, Method::GET, &format!("/api/v1/patterns?{query}"), "").await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["series"].as_array().unwrap().len(), n, "{query}");
    }
    let (status, body) = call(&a, Method::GET, "/api/v1/patterns?grup=node", "").await;
    assert_eq!(status, 400);
    assert!(body.contains("unknown parameter \\\"grup\\\""), "{body}");
    assert_eq!(call(&a, Method::POST, "/api/v1/patterns", "").await.0, 405);
    assert_eq!(
        call(&a, Method::GET, "/api/v1/patterns/nope", "").await.0,
        404
    );
}

#[tokio::test]
async fn label_edits_apply_and_bad_ones_change_nothing() {
    let (a, id) = admin();
    let base = format!("/api/v1/patterns/{id}");
    let (status, body) = call(
        &a,
        Method::PUT,
        &format!("{base}/1/labels"),
        r#"{"labels": ["cache-flush", "team:db"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"persisted\":true"), "{body}");
    let (status, _) = call(
        &a,
        Method::PUT,
        &format!("{base}/0/labels/daily%2Fpeak"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&a, Method::DELETE, &format!("{base}/1/labels/team:db"), "").await;
    assert_eq!(status, 200);
    let expected = vec![
        vec!["daily/peak".to_string()],
        vec!["cache-flush".to_string()],
    ];
    assert_eq!(labels(&a, &id).await, expected);

    let too_many: Vec<String> = (0..17).map(|k| format!("l{k}")).collect();
    let too_many = serde_json::json!({ "labels": too_many }).to_string();
    let long = format!(r#"{{"labels": ["{}"]}}"#, "x".repeat(65));
    let bad: Vec<(Method, String, String, u16, &str)> = vec![
        (
            Method::PUT,
            format!("{base}/1/labels"),
            long,
            400,
            "expected 1 to 64",
        ),
        (
            Method::PUT,
            format!("{base}/1/labels"),
            r#"{"labels": ["a b"]}"#.into(),
            400,
            "allowed: letters",
        ),
        (
            Method::PUT,
            format!("{base}/1/labels"),
            too_many,
            400,
            "at most 16",
        ),
        (
            Method::PUT,
            format!("{base}/1/labels"),
            r#"{"labels": ["a", "a"]}"#.into(),
            400,
            "repeated",
        ),
        (
            Method::PUT,
            format!("{base}/1/labels"),
            r#"{"labels": ["#.into(),
            400,
            "body is not",
        ),
        (
            Method::PUT,
            format!("{base}/1/labels"),
            r#"{"labels": "x"}"#.into(),
            400,
            "body is not",
        ),
        (
            Method::PUT,
            format!("{base}/1/labels"),
            r#"{"labels": [], "x": 1}"#.into(),
            400,
            "unknown field",
        ),
        (
            Method::PUT,
            format!("{base}/1/labels/a%20b"),
            String::new(),
            400,
            "allowed: letters",
        ),
        (
            Method::PUT,
            format!("{base}/1/labels/%zz"),
            String::new(),
            400,
            "percent-encoded",
        ),
        (
            Method::PUT,
            format!("{base}/99/labels"),
            r#"{"labels": ["ok"]}"#.into(),
            404,
            "no pattern with id 99",
        ),
        (
            Method::PUT,
            format!("{base}/x/labels"),
            r#"{"labels": ["ok"]}"#.into(),
            400,
            "not a number",
        ),
        (
            Method::DELETE,
            format!("{base}/1/labels/never-set"),
            String::new(),
            404,
            "has no label",
        ),
        (
            Method::PUT,
            "/api/v1/patterns/0000/1/labels".into(),
            r#"{"labels": ["ok"]}"#.into(),
            404,
            "no series",
        ),
        (
            Method::POST,
            format!("{base}/1/labels"),
            r#"{"labels": ["ok"]}"#.into(),
            405,
            "PUT or DELETE",
        ),
    ];
    for (method, path, body, want, reason) in bad {
        let (status, answer) = call(&a, method.clone(), &path, &body).await;
        assert_eq!(status, want, "{method} {path} {body}: {answer}");
        assert!(answer.contains(reason), "{method} {path}: {answer}");
        assert!(answer.contains("\"status\":\"error\""), "{answer}");
        assert_eq!(labels(&a, &id).await, expected, "after {method} {path}");
    }
    let (status, _) = call(&a, Method::DELETE, &format!("{base}/1/labels"), "").await;
    assert_eq!(status, 200);
    assert_eq!(labels(&a, &id).await[1], Vec::<String>::new());
}

#[tokio::test]
async fn page_draws_one_sparkline_per_pattern_and_escapes() {
    let (a, _) = admin();
    let (status, page) = call(&a, Method::GET, "/patterns", "").await;
    assert_eq!(status, 200);
    assert_eq!(page.matches("<svg class=\"spark\"").count(), 2);
    assert_eq!(page.matches("<polyline points=\"").count(), 2);
    // The entity key's quotes are escaped, never raw inside the markup.
    assert!(
        page.contains("instance=&quot;10.0.0.7:9100&quot;"),
        "{page}"
    );
    assert!(!page.contains(ENTITY));
    // Abnormal first.
    assert!(page.find("pattern-1").unwrap() < page.find("pattern-0").unwrap());
    let (_, filtered) = call(&a, Method::GET, "/patterns?group=other", "").await;
    assert!(filtered.contains("No patterns yet"));
    assert_eq!(call(&a, Method::GET, "/patterns?x=1", "").await.0, 400);
}

#[tokio::test]
async fn without_a_catalog_the_routes_say_so() {
    let (status, body) = call(&Admin::default(), Method::GET, "/api/v1/patterns", "").await;
    assert_eq!(status, 404);
    assert!(body.contains("not available"));
}

#[test]
fn sparkline_points_span_the_box() {
    let pts = page::points(&[0.0, 0.5, 1.0], 0.0, 1.0);
    let pairs: Vec<&str> = pts.split(' ').collect();
    assert_eq!(pairs, ["3.0,45.0", "80.0,24.0", "157.0,3.0"]);
    // A flat line on an empty range stays inside the box.
    assert!(!page::points(&[2.0, 2.0], 2.0, 2.0).contains("NaN"));
}

#[test]
fn counts_render_per_group_and_kind() {
    let c = PatternCatalog::new();
    let mut out = String::new();
    c.render_counts(&mut out);
    assert!(out.is_empty());
    c.publish_counts("node", 7, 2);
    c.render_counts(&mut out);
    assert!(out.contains("# TYPE kpiwatch_adsketch_patterns gauge\n"));
    assert!(out.contains("kpiwatch_adsketch_patterns{group=\"node\",kind=\"normal\"} 7\n"));
    assert!(out.contains("kpiwatch_adsketch_patterns{group=\"node\",kind=\"abnormal\"} 2\n"));
    c.retain_groups(&[]);
    let mut out = String::new();
    c.render_counts(&mut out);
    assert!(out.is_empty());
}

#[test]
fn series_ids_are_stable_and_distinct() {
    assert_eq!(series_id("g", "e", "m"), series_id("g", "e", "m"));
    assert_eq!(series_id("g", "e", "m").len(), 16);
    assert_ne!(series_id("ab", "c", "m"), series_id("a", "bc", "m"));
    assert_ne!(series_id("g", "e", "m1"), series_id("g", "e", "m2"));
}

#[test]
fn refresh_is_due_first_and_after_the_interval() {
    let c = PatternCatalog::new();
    let t = Instant::now();
    assert!(c.refresh_due("g", t));
    c.publish_group("g", [], t);
    assert!(!c.refresh_due("g", t));
    assert!(c.refresh_due("g", t + REFRESH));
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("team%2Fdb").as_deref(), Some("team/db"));
    assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    assert_eq!(percent_decode("%4"), None);
    assert_eq!(percent_decode("%zz"), None);
    assert_eq!(percent_decode("%ff"), None);
}

#[test]
fn listings_are_sorted_by_entity_then_metric_and_limited() {
    let c = PatternCatalog::new();
    let series = [("b", "cpu"), ("a", "mem"), ("a", "cpu")]
        .map(|(e, m)| SeriesPatterns::new("g", e, m, &set()));
    c.publish_group("g", series, Instant::now());
    let (all, total) = c.list(&Filter::default(), 10);
    let order: Vec<(&str, &str)> = all
        .iter()
        .map(|s| (s.entity.as_str(), s.metric.as_str()))
        .collect();
    assert_eq!(order, [("a", "cpu"), ("a", "mem"), ("b", "cpu")]);
    assert_eq!(total, 3);
    let (two, total) = c.list(&Filter::default(), 2);
    assert_eq!((two.len(), total), (2, 3));
    let id = series_id("g", "b", "cpu");
    assert_eq!(
        c.series(&id).map(|s| s.entity.clone()).as_deref(),
        Some("b")
    );
}
