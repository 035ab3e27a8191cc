use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::Semaphore;
use url::Url;

use super::response::{decode, error_message};
use super::{Error, QueryResult};
use crate::config::{Auth, PrometheusConfig};
use crate::secret::{read_trimmed, SecretFile};
use crate::telemetry::Telemetry;

/// A Prometheus API client. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    auth: AuthState,
    retries: u32,
    backoff: Duration,
    timeout: Duration,
    max_bytes: u64,
    /// Bounds the queries in flight over all groups (`prometheus.max_concurrency`).
    permits: Arc<Semaphore>,
    /// Jitter for backoff; seeded so tests can reproduce delays.
    rng: Mutex<SmallRng>,
    telemetry: Telemetry,
}

enum AuthState {
    None,
    /// Re-read when the file changes: Kubernetes rotates projected service-account
    /// tokens in place.
    Bearer(SecretFile),
    Basic {
        username: String,
        password: String,
    },
}

// Never print secrets, even in debug output.
impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthState::None => f.write_str("None"),
            AuthState::Bearer(token) => write!(f, "Bearer({token:?})"),
            AuthState::Basic { username, .. } => write!(f, "Basic({username}, password redacted)"),
        }
    }
}

fn credentials_error(path: &Path, e: std::io::Error) -> Error {
    Error::Credentials {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl AuthState {
    fn apply(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, Error> {
        Ok(match self {
            AuthState::None => req,
            AuthState::Basic { username, password } => req.basic_auth(username, Some(password)),
            AuthState::Bearer(token) => req.bearer_auth(
                token
                    .read()
                    .map_err(|e| credentials_error(token.path(), e))?,
            ),
        })
    }
}

impl Client {
    /// Builds a client from validated config. Fails on unreadable or invalid TLS
    /// material or credential files.
    pub fn new(cfg: &PrometheusConfig, telemetry: Telemetry) -> Result<Client, Error> {
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| Error::Setup(e.to_string()))?;
            let mut value = HeaderValue::from_str(v).map_err(|e| Error::Setup(e.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .default_headers(headers)
            .user_agent(concat!("kpiwatch/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(cfg.tls.insecure_skip_verify);
        if let Some(ca) = &cfg.tls.ca_file {
            let pem =
                std::fs::read(ca).map_err(|e| Error::Setup(format!("{}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Setup(format!("{}: {e}", ca.display())))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let Some((cert, key)) = &cfg.tls.client_cert {
            let mut pem = std::fs::read(cert)
                .map_err(|e| Error::Setup(format!("{}: {e}", cert.display())))?;
            pem.extend(
                std::fs::read(key).map_err(|e| Error::Setup(format!("{}: {e}", key.display())))?,
            );
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::Setup(format!("client certificate: {e}")))?;
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(|e| Error::Setup(e.to_string()))?;
        let auth = match &cfg.auth {
            Auth::None => AuthState::None,
            Auth::BearerTokenFile(path) => AuthState::Bearer(SecretFile::new(path.clone())),
            Auth::Basic {
                username,
                password_file,
            } => AuthState::Basic {
                username: username.clone(),
                password: read_trimmed(password_file)
                    .map_err(|e| credentials_error(password_file, e))?,
            },
        };
        let mut base = cfg.url.clone();
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(Client {
            http,
            base,
            auth,
            retries: cfg.retries,
            backoff: cfg.retry_backoff,
            timeout: cfg.timeout,
            max_bytes: cfg.max_response_bytes,
            permits: Arc::new(Semaphore::new(cfg.max_concurrency)),
            rng: Mutex::new(SmallRng::seed_from_u64(0x6b70_6977)),
            telemetry,
        })
    }

    /// `/api/v1/query_range` over `[start_ms, end_ms]` at `step`.
    pub async fn query_range(
        &self,
        promql: &str,
        start_ms: i64,
        end_ms: i64,
        step: Duration,
    ) -> Result<QueryResult, Error> {
        let params = [
            ("query", promql.to_string()),
            ("start", format_ts(start_ms)),
            ("end", format_ts(end_ms)),
            ("step", format!("{}", step.as_secs_f64())),
        ];
        self.call("query_range", &params, promql).await
    }

    /// `/api/v1/query` at `time_ms`.
    pub async fn query(&self, promql: &str, time_ms: i64) -> Result<QueryResult, Error> {
        let params = [("query", promql.to_string()), ("time", format_ts(time_ms))];
        self.call("query", &params, promql).await
    }

    async fn call(
        &self,
        endpoint: &'static str,
        params: &[(&str, String)],
        promql: &str,
    ) -> Result<QueryResult, Error> {
        let mut attempt = 0;
        loop {
            match self.attempt(endpoint, params).await {
                Ok(r) => {
                    self.telemetry.query_finished(endpoint, None);
                    self.telemetry
                        .query_succeeded(promql, r.sample_count(), &r.warnings);
                    return Ok(r);
                }
                Err(e) if e.is_retryable() && attempt < self.retries => {
                    let delay = self.backoff_delay(attempt);
                    self.telemetry.query_retrying(e.cause(), &e, delay);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => {
                    self.telemetry.query_finished(endpoint, Some(e.cause()));
                    return Err(e);
                }
            }
        }
    }

    /// `backoff · 2^attempt`, jittered to 50–150% so that agents do not retry in step.
    fn backoff_delay(&self, attempt: u32) -> Duration {
        let factor: f64 = self
            .rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gen_range(0.5..1.5);
        self.backoff
            .mul_f64(factor * f64::from(1u32 << attempt.min(10)))
    }

    async fn attempt(
        &self,
        endpoint: &'static str,
        params: &[(&str, String)],
    ) -> Result<QueryResult, Error> {
        let path = format!("api/v1/{endpoint}");
        let url = self
            .base
            .join(&path)
            .map_err(|e| Error::Setup(e.to_string()))?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| Error::Setup(e.to_string()))?;
        let started = Instant::now();
        let result = self.send(url, &path, params).await;
        self.telemetry.query_attempted(endpoint, started.elapsed());
        result
    }

    async fn send(
        &self,
        url: Url,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<QueryResult, Error> {
        let req = self.auth.apply(self.http.post(url).form(params))?;
        let mut resp = req.send().await.map_err(|e| self.classify(e, path))?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > self.max_bytes) {
            return Err(Error::TooLarge {
                path: path.to_string(),
                limit: self.max_bytes,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.classify(e, path))? {
            if body.len() as u64 + chunk.len() as u64 > self.max_bytes {
                return Err(Error::TooLarge {
                    path: path.to_string(),
                    limit: self.max_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(Error::Http {
                path: path.to_string(),
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
        decode(&body, path)
    }

    fn classify(&self, e: reqwest::Error, path: &str) -> Error {
        if e.is_timeout() {
            Error::Timeout {
                path: path.to_string(),
                timeout_ms: self.timeout.as_millis() as u64,
            }
        } else {
            // Drop the URL from reqwest's message: it is in `path` already.
            Error::Connect {
                path: path.to_string(),
                message: e.without_url().to_string(),
            }
        }
    }
}

/// Unix seconds with millisecond precision, as the API expects.
fn format_ts(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

#[cfg(test)]
mod tests {
    use super::format_ts;

    #[test]
    fn timestamps_are_seconds_with_millis() {
        assert_eq!(format_ts(1_700_000_000_123), "1700000000.123");
        assert_eq!(format_ts(5), "0.005");
    }
}
