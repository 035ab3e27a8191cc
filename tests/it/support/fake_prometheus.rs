//! An in-process fake of the Prometheus HTTP API (`/api/v1/query_range`), scripted per
//! test to produce what a real server will not on demand: 5xx, 429, slow answers,
//! malformed JSON, NaN/Inf values, oversized bodies, series that come and go.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// What the next answers look like.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Series from [`Script::entities`].
    Normal,
    /// This HTTP status with a Prometheus error body.
    Status(u16),
    /// Answer normally after this delay.
    Delay(Duration),
    /// A body that is not JSON.
    Garbage,
    /// A valid answer padded to this many bytes.
    Oversized(usize),
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// PromQL.
    pub query: String,
    /// Range start (ms).
    pub start_ms: i64,
    /// Range end (ms).
    pub end_ms: i64,
    /// Step (ms).
    pub step_ms: i64,
    /// Samples per series returned.
    pub samples_per_series: usize,
    /// The `Authorization` header, if the request had one.
    pub authorization: Option<String>,
}

/// The script a test edits while the server runs.
#[derive(Debug)]
pub struct Script {
    /// Answer mode.
    pub mode: Mode,
    /// Entities present: values of the `instance` label.
    pub entities: Vec<String>,
    /// Value of every sample; `value(instance, ts_ms)`.
    pub value: fn(&str, i64) -> f64,
    /// Warnings attached to successful answers.
    pub warnings: Vec<String>,
    /// Modes used for the next requests before falling back to `mode` (for retries).
    pub next_modes: Vec<Mode>,
    /// Requests received.
    pub requests: Vec<Recorded>,
}

/// A running fake server.
pub struct FakePrometheus {
    /// Address to point kpiwatch at.
    pub addr: SocketAddr,
    /// The script.
    pub script: Arc<Mutex<Script>>,
}

fn default_value(_: &str, ts: i64) -> f64 {
    ((ts / 1000) % 10) as f64
}

impl FakePrometheus {
    /// Starts a server on a free loopback port, on the current tokio runtime.
    pub async fn start(entities: &[&str]) -> FakePrometheus {
        let script = Arc::new(Mutex::new(Script {
            mode: Mode::Normal,
            entities: entities.iter().map(|s| s.to_string()).collect(),
            value: default_value,
            warnings: vec![],
            next_modes: vec![],
            requests: vec![],
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = script.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, s.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakePrometheus { addr, script }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Edits the script.
    pub fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut self.script.lock().unwrap())
    }
}

fn parse_ts(s: &str) -> i64 {
    (s.parse::<f64>().unwrap() * 1000.0).round() as i64
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    script: Arc<Mutex<Script>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let query_string = req.uri().query().unwrap_or("").to_string();
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query_string.as_bytes())
            .into_owned()
            .collect();
    params.extend(url::form_urlencoded::parse(&body).into_owned());
    let (start, end) = (parse_ts(&params["start"]), parse_ts(&params["end"]));
    let step = (params["step"].parse::<f64>().unwrap() * 1000.0) as i64;
    let (mode, json, per_series) = {
        let mut s = script.lock().unwrap();
        let mode = if s.next_modes.is_empty() {
            s.mode.clone()
        } else {
            s.next_modes.remove(0)
        };
        let points: Vec<i64> = (0..)
            .map(|k| start + k * step)
            .take_while(|t| *t <= end)
            .collect();
        let result: Vec<serde_json::Value> = s
            .entities
            .iter()
            .map(|inst| {
                let values: Vec<serde_json::Value> = points
                    .iter()
                    .map(|&t| {
                        let v = (s.value)(inst, t);
                        let text = if v.is_nan() {
                            "NaN".to_string()
                        } else if v == f64::INFINITY {
                            "+Inf".into()
                        } else if v == f64::NEG_INFINITY {
                            "-Inf".into()
                        } else {
                            v.to_string()
                        };
                        serde_json::json!([t as f64 / 1000.0, text])
                    })
                    .collect();
                serde_json::json!({"metric": {"instance": inst, "job": "fake"}, "values": values})
            })
            .collect();
        let json = serde_json::json!({"status": "success", "warnings": s.warnings, "data": {"resultType": "matrix", "result": result}});
        let per_series = points.len();
        if mode == Mode::Normal || matches!(mode, Mode::Delay(_) | Mode::Oversized(_)) {
            let query = params["query"].clone();
            s.requests.push(Recorded {
                query,
                start_ms: start,
                end_ms: end,
                step_ms: step,
                samples_per_series: per_series,
                authorization,
            });
        }
        (mode, json, per_series)
    };
    let _ = per_series;
    let response = |status: u16, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        Ok(r)
    };
    match mode {
        Mode::Normal => response(200, json.to_string()),
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
            response(200, json.to_string())
        }
        Mode::Status(code) => response(
            code,
            r#"{"status":"error","errorType":"unavailable","error":"scripted failure"}"#.into(),
        ),
        Mode::Garbage => response(200, "<html>not json".into()),
        Mode::Oversized(n) => {
            let mut text = json.to_string();
            text.push_str(&" ".repeat(n));
            response(200, text)
        }
    }
}
