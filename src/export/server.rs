use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::{mpsc, oneshot};

use super::ScoreBoard;

/// A reload request: the app answers with `Ok(source)` or `Err(reasons)`.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What the admin endpoints read.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Self-monitoring metrics.
    pub registry: Registry,
    /// Score series.
    pub scores: Arc<ScoreBoard>,
    /// Latch set after the first successful cycle; never reset.
    pub ready: Arc<AtomicBool>,
    /// Where `POST /-/reload` sends its request (absent in tests without an app).
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

const INDEX: &str = "<!doctype html><title>kpiwatch</title><h1>kpiwatch</h1><ul>\
<li><a href=\"/metrics\">/metrics</a> scores and self-monitoring</li>\
<li><a href=\"/-/healthy\">/-/healthy</a></li><li><a href=\"/-/ready\">/-/ready</a></li>\
<li>POST /-/reload re-reads the config</li></ul>";

/// Routes one request. Separate from the socket so tests call it directly.
pub async fn handle(method: &Method, path: &str, admin: &Admin) -> Response<Body> {
    match (method, path) {
        (&Method::GET, "/metrics") => metrics(admin),
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
        (&Method::GET, "/") => {
            let mut r = text(StatusCode::OK, INDEX);
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        (_, "/metrics" | "/-/healthy" | "/-/ready" | "/-/reload" | "/") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "Not found. Endpoints: /metrics, /-/healthy, /-/ready, POST /-/reload.\n",
        ),
    }
}

fn metrics(admin: &Admin) -> Response<Body> {
    let mut buf = Vec::with_capacity(64 * 1024);
    if let Err(e) = TextEncoder::new().encode(&admin.registry.gather(), &mut buf) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}\n"),
        );
    }
    let mut out = String::from_utf8(buf).unwrap_or_default();
    admin.scores.render(&mut out);
    let mut r = text(StatusCode::OK, out);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
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

async fn serve(listener: TcpListener, admin: Admin, mut stop: oneshot::Receiver<()>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Admin server cannot start.");
            return;
        }
    };
    let admin = Arc::new(admin);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "Admin server accept failed; retrying.");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let admin = admin.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handle(req.method(), req.uri().path(), &admin).await,
                        )
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn admin() -> Admin {
        Admin {
            registry: Registry::new(),
            scores: Arc::new(ScoreBoard::new()),
            ready: Arc::new(AtomicBool::new(false)),
            reload: None,
        }
    }

    async fn body(r: Response<Body>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn readiness_is_a_latch() {
        let a = admin();
        assert_eq!(handle(&Method::GET, "/-/ready", &a).await.status(), 503);
        a.ready.store(true, Ordering::Release);
        assert_eq!(handle(&Method::GET, "/-/ready", &a).await.status(), 200);
        assert_eq!(handle(&Method::GET, "/-/healthy", &a).await.status(), 200);
    }

    #[tokio::test]
    async fn routes_and_methods() {
        let a = admin();
        assert_eq!(handle(&Method::GET, "/nope", &a).await.status(), 404);
        assert_eq!(handle(&Method::POST, "/metrics", &a).await.status(), 405);
        assert_eq!(handle(&Method::POST, "/-/reload", &a).await.status(), 503);
        let r = handle(&Method::GET, "/metrics", &a).await;
        assert_eq!(r.status(), 200);
        assert!(
            body(r).await.is_empty(),
            "nothing registered, nothing published"
        );
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
        let r = handle(&Method::POST, "/-/reload", &a).await;
        assert_eq!(r.status(), 500);
        assert!(body(r).await.contains("groups[0].interval: bad"));
        assert_eq!(handle(&Method::POST, "/-/reload", &a).await.status(), 200);
    }
}
