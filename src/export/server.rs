use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};
use prometheus::Registry;
use tokio::sync::{mpsc, oneshot};

pub use super::http::Body;
use super::http::{html, text};
use super::ScoreBoard;

/// A reload request: the app answers with `Ok(source)` or `Err(reasons)`.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What the admin endpoints read. `Default` gives an admin with nothing behind it
/// (no reload channel, no catalog), which is what unit tests want.
#[derive(Debug, Clone, Default)]
pub struct Admin {
    /// Self-monitoring metrics.
    pub registry: Registry,
    /// Score series.
    pub scores: Arc<ScoreBoard>,
    /// Latch set after the first successful cycle; never reset.
    pub ready: Arc<AtomicBool>,
    /// Where `POST /-/reload` sends its request (absent in tests without an app).
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
    /// Runs `POST /api/v1/regressions/check` (absent without `regressions:`).
    pub regressions: Option<Arc<dyn super::regress_api::RegressionChecker>>,
    /// The ADSketch pattern catalog (`/patterns`, `/api/v1/patterns`).
    pub catalog: Option<super::catalog::CatalogHandle>,
    /// Who may write (`server.write_token_file`); the default lets everyone.
    pub write_auth: Arc<super::auth::WriteAuth>,
    /// TLS, basic auth and headers (`server.web_config_file`); the default has none.
    pub web: Arc<super::web::WebGuard>,
}

/// Largest request body read (label edits and regression checks are small); larger
/// requests get 413 without being read further.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Longest wait for a request body once its headers are in; a slower body gets 408.
pub(crate) const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One request as the routes see it: the body is already read (bounded).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path without the query string.
    pub path: String,
    /// Raw query string (`a=1&b=2`), if any.
    pub query: Option<String>,
    /// Request body.
    pub body: Bytes,
    /// The `Authorization` header, if any (checked by [`super::auth::WriteAuth`]).
    pub authorization: Option<String>,
    /// Whether `Accept-Encoding` allows gzip (`/metrics` is then compressed).
    pub accepts_gzip: bool,
}

impl ApiRequest {
    /// A request without query or body (tests, simple GETs).
    pub fn new(method: Method, path: &str) -> ApiRequest {
        ApiRequest {
            method,
            path: path.to_string(),
            query: None,
            body: Bytes::new(),
            authorization: None,
            accepts_gzip: false,
        }
    }
}

const INDEX: &str = "<!doctype html><title>kpiwatch</title><h1>kpiwatch</h1><ul>\
<li><a href=\"/metrics\">/metrics</a> scores and self-monitoring</li>\
<li><a href=\"/-/healthy\">/-/healthy</a></li><li><a href=\"/-/ready\">/-/ready</a></li>\
<li>POST /-/reload re-reads the config</li>\
<li><a href=\"/patterns\">/patterns</a> the ADSketch pattern catalog \
(<a href=\"/api/v1/patterns\">JSON</a>)</li>\
<li>POST /api/v1/regressions/check runs an on-demand regression check</li></ul>";

/// Answers one request: basic auth, the write token, the route, and the web config's
/// headers. Separate from the socket so tests call it directly.
pub async fn handle(req: &ApiRequest, admin: &Admin) -> Response<Body> {
    let mut response = match admin.web.refuse(req).await {
        Some(refused) => refused,
        None => match admin.write_auth.refuse(req) {
            Some(refused) => refused,
            None => route(req, admin).await,
        },
    };
    admin.web.add_headers(&mut response);
    response
}

async fn route(req: &ApiRequest, admin: &Admin) -> Response<Body> {
    let path = req.path.as_str();
    if path == "/patterns" || path.starts_with("/api/v1/patterns") {
        return super::catalog::handle(req, admin).await;
    }
    if path.starts_with("/api/v1/regressions") {
        return super::regress_api::handle(req, admin).await;
    }
    match (&req.method, path) {
        (&Method::GET, "/metrics") => metrics(admin, req.accepts_gzip),
        (&Method::GET, "/-/healthy") => text(StatusCode::OK, "kpiwatch is healthy.\n"),
        (&Method::GET, "/-/ready") => {
            if admin.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "kpiwatch is ready.\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kpiwatch is not ready: no successful cycle yet.\n",
                )
            }
        }
        (&Method::POST, "/-/reload") | (&Method::PUT, "/-/reload") => reload(admin).await,
        (&Method::GET, "/") => html(StatusCode::OK, INDEX),
        (_, "/metrics" | "/-/healthy" | "/-/ready" | "/-/reload" | "/") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "Not found. Endpoints: /metrics, /-/healthy, /-/ready, POST /-/reload, /patterns, \
             /api/v1/patterns, POST /api/v1/regressions/check.\n",
        ),
    }
}

fn metrics(admin: &Admin, gzip: bool) -> Response<Body> {
    super::http::exposition(
        &admin.registry,
        |out, drain| {
            admin.scores.render_chunked(out, drain);
            if let Some(c) = &admin.catalog {
                c.patterns.render_counts(out);
            }
        },
        gzip,
    )
}

async fn reload(admin: &Admin) -> Response<Body> {
    let Some(tx) = &admin.reload else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Reload is not available.\n",
        );
    };
    let (answer_tx, answer_rx) = oneshot::channel();
    if tx.send(answer_tx).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The agent is shutting down.\n",
        );
    }
    match answer_rx.await {
        Ok(Ok(source)) => text(StatusCode::OK, format!("Config reloaded from {source}.\n")),
        Ok(Err(reasons)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Config rejected; the previous config keeps running:\n{reasons}\n"),
        ),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "The agent is shutting down.\n",
        ),
    }
}

/// The admin server's thread.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` now (so that a taken port fails at start) and serves on a thread.
    pub fn start(addr: SocketAddr, admin: Admin) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("kpiwatch-admin".into())
            .spawn(move || runtime.block_on(serve(listener, admin, stop_rx)))?;
        Ok(AdminServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(listener: TcpListener, admin: Admin, stop: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Admin server cannot start.");
            return;
        }
    };
    let admin = Arc::new(admin);
    let stopped = async {
        let _ = stop.await;
    };
    let web = Some(admin.web.clone());
    super::http::serve_http(listener, stopped, web, move |req| {
        let admin = admin.clone();
        async move { Ok::<_, std::convert::Infallible>(receive(req, &admin).await) }
    })
    .await;
}

/// Reads the body (at most [`MAX_BODY_BYTES`], within [`BODY_READ_TIMEOUT`]) and routes
/// the request.
async fn receive(req: hyper::Request<hyper::body::Incoming>, admin: &Admin) -> Response<Body> {
    use http_body_util::{BodyExt, Limited};
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(body, MAX_BODY_BYTES).collect(),
    );
    let Ok(read) = read.await else {
        return text(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "Request body not received within {} s.\n",
                BODY_READ_TIMEOUT.as_secs()
            ),
        );
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let too_large = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("Request body over {MAX_BODY_BYTES} bytes.\n"),
                )
            } else {
                text(
                    StatusCode::BAD_REQUEST,
                    format!("Cannot read the request body: {e}\n"),
                )
            };
        }
    };
    let req = ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        body,
        // A header that is not visible ASCII cannot hold a valid token: treat as absent.
        authorization: parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        accepts_gzip: super::http::accepts_gzip(
            parts
                .headers
                .get(hyper::header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok()),
        ),
    };
    handle(&req, admin).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn admin() -> Admin {
        Admin::default()
    }

    async fn get(a: &Admin, method: Method, path: &str) -> Response<Body> {
        handle(&ApiRequest::new(method, path), a).await
    }

    async fn body(r: Response<Body>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn readiness_is_a_latch() {
        let a = admin();
        assert_eq!(get(&a, Method::GET, "/-/ready").await.status(), 503);
        a.ready.store(true, Ordering::Release);
        assert_eq!(get(&a, Method::GET, "/-/ready").await.status(), 200);
        assert_eq!(get(&a, Method::GET, "/-/healthy").await.status(), 200);
        // Once on, it stays on: answering probes and scrapes never resets it.
        for path in ["/metrics", "/-/ready", "/-/ready"] {
            get(&a, Method::GET, path).await;
        }
        assert!(a.ready.load(Ordering::Acquire));
        assert_eq!(get(&a, Method::GET, "/-/ready").await.status(), 200);
    }

    #[tokio::test]
    async fn routes_and_methods() {
        let a = admin();
        assert_eq!(get(&a, Method::GET, "/nope").await.status(), 404);
        assert_eq!(get(&a, Method::POST, "/metrics").await.status(), 405);
        assert_eq!(get(&a, Method::POST, "/-/reload").await.status(), 503);
        let r = get(&a, Method::GET, "/metrics").await;
        assert_eq!(r.status(), 200);
        assert!(
            body(r).await.is_empty(),
            "nothing registered, nothing published"
        );
    }

    #[tokio::test]
    async fn metrics_are_gzipped_only_for_a_scraper_that_accepts_it() {
        let a = admin();
        let g = prometheus::IntGauge::new("kpiwatch_test_gauge", "A gauge.").unwrap();
        g.set(42);
        a.registry.register(Box::new(g)).unwrap();
        let plain = get(&a, Method::GET, "/metrics").await;
        assert!(plain
            .headers()
            .get(hyper::header::CONTENT_ENCODING)
            .is_none());
        let plain = body(plain).await;
        assert!(plain.contains("kpiwatch_test_gauge 42"), "{plain}");
        let mut req = ApiRequest::new(Method::GET, "/metrics");
        req.accepts_gzip = true;
        let r = handle(&req, &a).await;
        assert_eq!(r.headers()[hyper::header::CONTENT_ENCODING], "gzip");
        assert_eq!(r.headers()[hyper::header::VARY], "Accept-Encoding");
        let zipped = r.into_body().collect().await.unwrap().to_bytes();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut text)
            .unwrap();
        assert_eq!(text, plain);
    }

    #[tokio::test]
    async fn a_large_exposition_is_compressed_in_pieces_into_the_same_text() {
        use crate::detect::{Band, MetricScore, Scores};
        use crate::export::SeriesLabels;
        let a = admin();
        let metric = MetricScore {
            contribution: 1.25,
            band: Some(Band {
                expected: 50.0,
                lower: 40.0,
                upper: 60.5,
            }),
            ..Default::default()
        };
        let scores = Scores {
            anomaly_score: 0.5,
            raw: 2.0,
            threshold: 4.0,
            metrics: smallvec::smallvec![metric.clone(), metric],
        };
        for i in 0..1_000 {
            let key = format!("10.0.{}.{}:9100", i / 256, i % 256);
            let labels = SeriesLabels::new("node", &[("instance".into(), key.clone())]);
            a.scores
                .publish("node", &key, &labels, "zscore", &["cpu", "mem"], &scores);
        }
        let plain = body(get(&a, Method::GET, "/metrics").await).await;
        assert!(
            plain.len() > 3 * 256 * 1024,
            "several compressed pieces: {} bytes",
            plain.len()
        );
        let mut req = ApiRequest::new(Method::GET, "/metrics");
        req.accepts_gzip = true;
        let zipped = handle(&req, &a)
            .await
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped[..]), &mut text)
            .unwrap();
        assert!(
            text == plain,
            "the decompressed exposition differs from the plain one"
        );
    }

    #[test]
    fn accept_encoding_is_parsed_with_its_qualities() {
        use crate::export::http::accepts_gzip;
        for yes in [
            "gzip",
            "identity, GZIP",
            "br;q=1.0, gzip;q=0.8, *;q=0.1",
            "*",
        ] {
            assert!(accepts_gzip(Some(yes)), "{yes}");
        }
        for no in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip; q=0.0",
            "x-gzip",
        ] {
            assert!(!accepts_gzip(Some(no)), "{no}");
        }
        assert!(!accepts_gzip(None));
    }

    #[tokio::test]
    async fn reload_answers_with_the_apps_verdict() {
        let (tx, mut rx) = mpsc::channel::<ReloadRequest>(1);
        let mut a = admin();
        a.reload = Some(tx);
        tokio::spawn(async move {
            let first = rx.recv().await.unwrap();
            first
                .send(Err("kpiwatch.yaml: groups[0].interval: bad".into()))
                .unwrap();
            let second = rx.recv().await.unwrap();
            second.send(Ok("kpiwatch.yaml".into())).unwrap();
        });
        let r = get(&a, Method::POST, "/-/reload").await;
        assert_eq!(r.status(), 500);
        assert!(body(r).await.contains("groups[0].interval: bad"));
        assert_eq!(get(&a, Method::POST, "/-/reload").await.status(), 200);
    }

    /// Over a real socket: the `Authorization` header reaches the check, reads stay
    /// open, and only the right token gets a write through to the app.
    /// Writes `request` on a fresh connection to `addr` and reads until the server
    /// closes it (or 30 s pass): what came back.
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut out));
        assert!(read.await.is_ok(), "the server closed the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn slow_or_oversized_requests_are_cut_off_over_a_real_socket() {
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), admin()).unwrap();
        let addr = server.local_addr();
        // Headers trickled and never finished: the connection is closed, no answer.
        let slow = tokio::spawn(raw(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n"));
        // Headers well over the limit: 431 (the limit is checked between reads).
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(2 * super::super::http::MAX_HEADER_BYTES)
        );
        let answer = raw(addr, huge.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        // A body announced and never sent: 408.
        let answer = raw(
            addr,
            b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        // Meanwhile a well-formed request is served.
        let ok = raw(
            addr,
            b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert_eq!(slow.await.unwrap(), "", "closed without an answer");
        server.stop();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_slot() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), admin()).unwrap();
        let addr = server.local_addr();
        let mut idle = Vec::new();
        for _ in 0..super::super::http::MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
        waiting
            .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            waiting.read_exact(&mut first),
        )
        .await;
        assert!(early.is_err(), "no slot free: not served yet");
        drop(idle.pop());
        let served = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            waiting.read_exact(&mut first),
        )
        .await;
        assert!(served.is_ok(), "served once a slot freed");
        assert_eq!(&first, b"HTTP/1.1 200");
        server.stop();
    }

    #[tokio::test]
    async fn writes_over_the_socket_need_the_configured_token() {
        let token_file =
            std::env::temp_dir().join(format!("kpiwatch-server-token-{}", std::process::id()));
        std::fs::write(&token_file, "let-me-write\n").unwrap();
        let (tx, mut rx) = mpsc::channel::<ReloadRequest>(1);
        let mut a = admin();
        a.reload = Some(tx);
        a.write_auth = Arc::new(super::super::auth::WriteAuth::new(
            Some(token_file.clone()),
            super::super::auth::Refusals::new(&a.registry).unwrap(),
        ));
        let reloads = tokio::spawn(async move {
            let mut count = 0;
            while let Some(answer) = rx.recv().await {
                count += 1;
                answer.send(Ok("kpiwatch.yaml".into())).unwrap();
            }
            count
        });
        let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), a).unwrap();
        let url = |path: &str| format!("http://{}{path}", server.local_addr());
        let http = reqwest::Client::new();

        let reload = |token: Option<&str>| {
            let mut req = http.post(url("/-/reload"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            async move { req.send().await.unwrap().status() }
        };
        assert_eq!(reload(None).await, 401);
        assert_eq!(reload(Some("guess")).await, 401);
        assert_eq!(reload(Some("let-me-write")).await, 200);
        let metrics = http.get(url("/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        let text = metrics.text().await.unwrap();
        assert!(text.contains("kpiwatch_http_requests_refused_total{reason=\"missing_token\"} 1"));
        assert!(text.contains("kpiwatch_http_requests_refused_total{reason=\"wrong_token\"} 1"));

        server.stop();
        assert_eq!(
            reloads.await.unwrap(),
            1,
            "only the authorised reload reached the app"
        );
        std::fs::remove_file(token_file).unwrap();
    }
}
