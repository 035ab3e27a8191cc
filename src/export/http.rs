//! The HTTP plumbing every kpiwatch server shares (the admin server here, the lab's
//! service and metrics endpoints): one accept loop and the response helpers.

use std::convert::Infallible;
use std::future::Future;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// Response body type of every endpoint.
pub type Body = Full<Bytes>;

/// Accepts HTTP/1 connections on `listener` and serves each request with `handler`, one
/// task per connection, until `shutdown` resolves. An accept error (out of file
/// descriptors and the like) is logged and retried after a pause instead of spinning.
pub async fn serve_http<H, F>(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed; retrying.");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(&handler);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn with_type(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, body, "text/plain; charset=utf-8")
}

/// An HTML response.
pub fn html(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, body, "text/html; charset=utf-8")
}

/// A JSON response (500 with the reason if `value` cannot be serialised).
pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, body, "application/json"),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The Prometheus text exposition of `registry`, followed by what `more` appends (series
/// rendered by hand, such as the score board); 500 if the registry cannot be encoded.
pub fn metrics(registry: &prometheus::Registry, more: impl FnOnce(&mut String)) -> Response<Body> {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(64 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}\n"),
        );
    }
    let mut out = String::from_utf8(buf).unwrap_or_default();
    more(&mut out);
    with_type(
        StatusCode::OK,
        out,
        "text/plain; version=0.0.4; charset=utf-8",
    )
}
