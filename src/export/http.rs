//! The HTTP plumbing every kpiwatch server shares (the admin server here, the lab's
//! service and metrics endpoints): one accept loop and the response helpers.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

/// Response body type of every endpoint.
pub type Body = Full<Bytes>;

/// How long a client may take to send a request's headers before its connection is
/// closed (a slowloris holds connections open by trickling them).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest read buffer of a connection, so about the most a request's headers may take
/// (hyper checks it between reads, so one read's worth more can pass); longer headers
/// get `431 Request Header Fields Too Large`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most connections served at once; further ones wait in the listen backlog until one
/// closes (an idle keep-alive connection holds its slot until it closes).
pub const MAX_CONNECTIONS: usize = 256;

/// Accepts HTTP/1 connections on `listener` and serves each request with `handler`, one
/// task per connection, until `shutdown` resolves, within [`HEADER_READ_TIMEOUT`],
/// [`MAX_HEADER_BYTES`] and [`MAX_CONNECTIONS`]. With a `web` guard whose config has
/// TLS, each connection first completes a TLS handshake (within the header timeout,
/// which a handshake is part of). An accept error (out of file descriptors and the
/// like) is logged and retried after a pause instead of spinning.
pub async fn serve_http<H, F>(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
    web: Option<Arc<super::web::WebGuard>>,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            s = Arc::clone(&slots).acquire_owned() => s,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed; retrying.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let web = web.clone();
        tokio::spawn(async move {
            match web.as_ref().and_then(|w| w.tls().map(|tls| (w, tls))) {
                None => serve_connection(stream, handler).await,
                Some((web, tls)) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    let handshake = async {
                        // A connection closed before its first byte (a kubelet
                        // tcpSocket probe, a port check) never tried TLS: not a failure.
                        if stream.peek(&mut [0u8; 1]).await? == 0 {
                            return Ok(None);
                        }
                        acceptor.accept(stream).await.map(Some)
                    };
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, handshake).await {
                        Ok(Ok(Some(tls_stream))) => serve_connection(tls_stream, handler).await,
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => web.handshake_failed(&e),
                        Err(_) => web.handshake_failed(&"no handshake within the header timeout"),
                    }
                }
            }
            drop(slot);
        });
    }
}

/// Serves one connection's requests (plain TCP or TLS) with `handler`.
async fn serve_connection<S, H, F>(stream: S, handler: H)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let service = hyper::service::service_fn(&handler);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .await;
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
    exposition(registry, |out, _| more(out), false)
}

/// Text is compressed in pieces of about this size while an exposition is written.
const GZIP_PIECE_BYTES: usize = 256 * 1024;

/// [`metrics`], gzip-compressed when `gzip` (the scraper sent `Accept-Encoding: gzip`,
/// as Prometheus does): the 1,000-entity bench exposition shrinks 15–19 times for about
/// 1–5 ms more (BENCHMARKS.md). The fastest level, because scrapes are frequent; higher
/// levels were not measured. `more` gets the text and a `drain` to call between series:
/// when compressing, `drain` compresses what is written once it passes
/// [`GZIP_PIECE_BYTES`] and clears it, so a large exposition is never whole in memory.
pub fn exposition(
    registry: &prometheus::Registry,
    more: impl FnOnce(&mut String, &mut dyn FnMut(&mut String)),
    gzip: bool,
) -> Response<Body> {
    use prometheus::Encoder;
    use std::io::Write as _;
    let mut buf = Vec::with_capacity(64 * 1024);
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding failed: {e}\n"),
        );
    }
    let mut out = String::from_utf8(buf).unwrap_or_default();
    const TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
    if !gzip {
        more(&mut out, &mut |_| {});
        return with_type(StatusCode::OK, out, TYPE);
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut failed = None;
    more(&mut out, &mut |text: &mut String| {
        if text.len() >= GZIP_PIECE_BYTES && failed.is_none() {
            failed = encoder.write_all(text.as_bytes()).err();
            text.clear();
        }
    });
    let compressed = match failed {
        Some(e) => Err(e),
        None => encoder
            .write_all(out.as_bytes())
            .and_then(|()| encoder.finish()),
    };
    match compressed {
        Ok(body) => {
            let mut r = with_type(StatusCode::OK, body, TYPE);
            let h = r.headers_mut();
            h.insert(
                hyper::header::CONTENT_ENCODING,
                hyper::header::HeaderValue::from_static("gzip"),
            );
            h.insert(
                hyper::header::VARY,
                hyper::header::HeaderValue::from_static("Accept-Encoding"),
            );
            r
        }
        // Compressing into memory cannot fail short of allocation.
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("compressing the exposition failed: {e}\n"),
        ),
    }
}

/// Whether an `Accept-Encoding` header value accepts gzip: a `gzip` (or `*`) coding
/// whose quality is not zero (RFC 9110 §12.5.3).
pub fn accepts_gzip(header: Option<&str>) -> bool {
    let Some(header) = header else { return false };
    header.split(',').any(|coding| {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or("").trim();
        let zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (name.eq_ignore_ascii_case("gzip") || name == "*") && !zero
    })
}
