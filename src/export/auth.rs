//! Who may use the admin server's write endpoints, and the count of refused requests
//! (shared with basic auth, [`super::web`]).
//!
//! Reads (`/metrics`, health, the pattern catalog) are open, as Prometheus' own are.
//! Requests that change something or cost work (`POST /-/reload`, pattern label edits,
//! `POST /api/v1/regressions/check`: every method but GET and HEAD) need
//! `Authorization: Bearer <token>` when `server.write_token_file` is set. Without it they
//! are open, and the agent says so at start when it listens beyond loopback.

use std::path::PathBuf;

use hyper::{Method, Response, StatusCode};
use prometheus::{IntCounterVec, Opts, Registry};

use super::http::{text, Body};
use super::server::ApiRequest;
use crate::secret::{same_secret, SecretFile};

/// The write-endpoint check. `Default` lets every request through (unit tests, and
/// configs without `server.write_token_file`).
#[derive(Debug, Default)]
pub struct WriteAuth {
    token: Option<SecretFile>,
    /// Absent in unit tests.
    refused: Option<Refusals>,
}

/// `kpiwatch_http_requests_refused_total{reason}`: requests the admin server refused,
/// whether for the write token or for basic auth.
#[derive(Debug, Clone)]
pub struct Refusals(IntCounterVec);

impl Refusals {
    /// Creates and registers the counter.
    pub fn new(registry: &Registry) -> prometheus::Result<Refusals> {
        let refused = IntCounterVec::new(
            Opts::new(
                "kpiwatch_http_requests_refused_total",
                "Requests to the admin server refused, by reason (missing_token, \
                 wrong_token, token_unreadable for writes; missing_credentials, \
                 wrong_credentials for basic auth).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Refusals(refused))
    }

    /// Counts one refusal.
    pub(crate) fn count(&self, reason: &'static str) {
        self.0.with_label_values(&[reason]).inc();
    }
}

/// Why a write request was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not the configured one.
    Wrong,
    /// The token file cannot be read now: refuse rather than let anything through.
    TokenUnreadable,
}

impl WriteAuth {
    /// Checks writes against the token in `token_file` (read again when it changes),
    /// or lets them through when `None`; counts refusals in `refused`.
    pub fn new(token_file: Option<PathBuf>, refused: Refusals) -> Self {
        WriteAuth {
            token: token_file.map(SecretFile::new),
            refused: Some(refused),
        }
    }

    /// `None` when `req` may go on; else the response that refuses it.
    pub fn refuse(&self, req: &ApiRequest) -> Option<Response<Body>> {
        if matches!(req.method, Method::GET | Method::HEAD) {
            return None;
        }
        let token = self.token.as_ref()?;
        let refusal = match token.read() {
            Err(e) => {
                tracing::error!(file = %token.path().display(), error = %e,
                    "server.write_token_file cannot be read; refusing write requests.");
                Refusal::TokenUnreadable
            }
            Ok(expected) => match bearer(req) {
                None => Refusal::Missing,
                Some(given) if same_secret(given.as_bytes(), expected.as_bytes()) => return None,
                Some(_) => Refusal::Wrong,
            },
        };
        let reason = match refusal {
            Refusal::Missing => "missing_token",
            Refusal::Wrong => "wrong_token",
            Refusal::TokenUnreadable => "token_unreadable",
        };
        if let Some(c) = &self.refused {
            c.count(reason);
        }
        // Debug only: a scanner must not be able to fill the logs. The counter counts.
        tracing::debug!(method = %req.method, path = %req.path, reason, "Write request refused.");
        Some(refusal_response(refusal))
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(req: &ApiRequest) -> Option<&str> {
    let value = req.authorization.as_deref()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn refusal_response(refusal: Refusal) -> Response<Body> {
    if refusal == Refusal::TokenUnreadable {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "Write requests are refused: the agent cannot read its server.write_token_file \
             (see its log).\n",
        );
    }
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "This request changes the agent: send `Authorization: Bearer <token>` with the \
         token of server.write_token_file.\n",
    );
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer realm=\"kpiwatch\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, authorization: Option<&str>) -> ApiRequest {
        let mut r = ApiRequest::new(method, "/-/reload");
        r.authorization = authorization.map(str::to_string);
        r
    }

    fn auth_with(token: &str) -> (WriteAuth, Registry, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "kpiwatch-write-token-{}-{token}",
            std::process::id()
        ));
        std::fs::write(&path, format!("{token}\n")).unwrap();
        let registry = Registry::new();
        let auth = WriteAuth::new(Some(path.clone()), Refusals::new(&registry).unwrap());
        (auth, registry, path)
    }

    fn refused(registry: &Registry, reason: &str) -> u64 {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "kpiwatch_http_requests_refused_total")
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| m.get_label().iter().any(|l| l.value() == reason))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    #[test]
    fn without_a_token_file_everything_passes() {
        let auth = WriteAuth::default();
        assert!(auth.refuse(&request(Method::POST, None)).is_none());
    }

    #[test]
    fn writes_need_the_token_and_reads_do_not() {
        let (auth, registry, path) = auth_with("t0ken-a");
        assert!(auth.refuse(&request(Method::GET, None)).is_none());
        assert!(auth.refuse(&request(Method::HEAD, None)).is_none());

        let r = auth.refuse(&request(Method::POST, None)).expect("refused");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(hyper::header::WWW_AUTHENTICATE));
        let r = auth.refuse(&request(Method::PUT, Some("Bearer t0ken-b")));
        assert_eq!(r.expect("refused").status(), StatusCode::UNAUTHORIZED);
        let r = auth.refuse(&request(Method::DELETE, Some("Basic dDBrZW4tYQ==")));
        assert_eq!(r.expect("refused").status(), StatusCode::UNAUTHORIZED);
        assert!(auth
            .refuse(&request(Method::DELETE, Some("Bearer ")))
            .is_some());

        assert!(auth
            .refuse(&request(Method::POST, Some("Bearer t0ken-a")))
            .is_none());
        assert!(auth
            .refuse(&request(Method::POST, Some("bearer  t0ken-a ")))
            .is_none());
        // No header, a Basic header and an empty bearer token carry no token at all.
        assert_eq!(refused(&registry, "missing_token"), 3);
        assert_eq!(refused(&registry, "wrong_token"), 1);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn an_unreadable_token_file_refuses_writes_instead_of_opening_them() {
        let (auth, registry, path) = auth_with("t0ken-c");
        std::fs::remove_file(&path).unwrap();
        let r = auth.refuse(&request(Method::POST, Some("Bearer t0ken-c")));
        assert_eq!(
            r.expect("refused").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(refused(&registry, "token_unreadable"), 1);
    }
}
