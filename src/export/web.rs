//! The web config at run time (`server.web_config_file`, parsed and checked by
//! [`crate::config::load_web_config`]): TLS for each new connection, basic auth and
//! security headers for each request.
//!
//! The files (the web config and the certificates, keys and CAs it names) are looked at
//! again at most once a second, when a connection or request arrives: a rotated
//! certificate or a new user is in force within a second, with no reload and no
//! restart, as exporter-toolkit does. A changed file that does not load keeps the
//! previous settings (logged, `kpiwatch_web_config_reloads_total{result="failure"}`),
//! and so does a change that would turn TLS on or off: that needs a restart, because
//! the scraper's scheme must change with it.
//!
//! Basic auth guards every endpoint (as in Prometheus); a password is checked with
//! bcrypt once and then remembered for its user until the config changes, so scrapes
//! do not pay bcrypt's deliberate slowness. Wrong passwords always pay it, on blocking
//! threads, at most two at a time, so a password-guessing client cannot starve scrapes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::auth::Refusals;
use super::http::{text, Body};
use super::server::ApiRequest;
use crate::config::{load_web_config, WebConfig};
use crate::secret::same_secret;

/// How often the files are looked at again, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// The admin server's TLS, basic auth and headers. `Default` has no web config: plain
/// HTTP, open reads (unit tests, configs without `server.web_config_file`).
#[derive(Debug)]
pub struct WebGuard {
    watched: Mutex<Option<Watched>>,
    /// Users whose password was verified, with that password; cleared on change.
    verified: Mutex<HashMap<String, String>>,
    /// At most two bcrypt checks of unverified passwords at once.
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
    metrics: Option<WebMetrics>,
}

impl Default for WebGuard {
    fn default() -> Self {
        WebGuard {
            watched: Mutex::default(),
            verified: Mutex::default(),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(2)),
            metrics: None,
        }
    }
}

#[derive(Debug)]
struct Watched {
    config: Arc<WebConfig>,
    /// Modification times and sizes of `config.files`, as last read.
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
    write_token: bool,
}

#[derive(Debug, Clone)]
struct WebMetrics {
    reloads: IntCounterVec,
    last_reload_ok: IntGauge,
    handshakes_failed: IntCounter,
    refusals: Refusals,
}

impl WebGuard {
    /// Serves with `config` (from the agent's config) and watches its files.
    /// `write_token` says whether `server.write_token_file` is set (a later version of
    /// the file may not add basic auth then). Registers its metrics in `registry`.
    pub fn new(
        config: Option<WebConfig>,
        write_token: bool,
        refusals: Refusals,
        registry: &Registry,
    ) -> prometheus::Result<WebGuard> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "kpiwatch_web_config_reloads_total",
                "Changes to server.web_config_file or the files it names, by result \
                 (success, failure: the previous settings stay).",
            ),
            &["result"],
        )?;
        // A rejected change stays rejected until the file is fixed: the alert rule
        // needs a state, not a count that ages out of its window.
        let last_reload_ok = IntGauge::new(
            "kpiwatch_web_config_last_reload_successful",
            "1 when the web config in force is the one on disk, 0 while a change to \
             server.web_config_file or its files is rejected (the previous settings stay).",
        )?;
        last_reload_ok.set(1);
        let handshakes_failed = IntCounter::new(
            "kpiwatch_http_tls_handshakes_failed_total",
            "Connections to the admin server closed because their TLS handshake failed \
             or timed out.",
        )?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_reload_ok.clone()))?;
        registry.register(Box::new(handshakes_failed.clone()))?;
        Ok(WebGuard {
            verified: Mutex::default(),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(2)),
            watched: Mutex::new(config.map(|config| Watched {
                stamps: stamps(&config.files),
                config: Arc::new(config),
                checked: Instant::now(),
                write_token,
            })),
            metrics: Some(WebMetrics {
                reloads,
                last_reload_ok,
                handshakes_failed,
                refusals,
            }),
        })
    }

    /// The web config in force, after looking at its files if a second has passed.
    fn current(&self) -> Option<Arc<WebConfig>> {
        let mut guard = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let watched = guard.as_mut()?;
        if watched.checked.elapsed() >= RECHECK {
            watched.checked = Instant::now();
            let now = stamps(&watched.config.files);
            if now != watched.stamps {
                watched.stamps = now;
                if self.adopt(watched) {
                    self.verified
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                }
            }
        }
        Some(watched.config.clone())
    }

    /// Loads the changed files; `true` when the new settings were adopted.
    fn adopt(&self, watched: &mut Watched) -> bool {
        let file = watched.config.file.clone();
        let result = load_web_config(&file, watched.write_token).and_then(|new| {
            if new.tls.is_some() != watched.config.tls.is_some() {
                Err(crate::config::ConfigErrors::one(
                    crate::config::ConfigError {
                        file: file.display().to_string(),
                        key_path: "tls_server_config".into(),
                        message: "turning TLS on or off needs a restart (the scrapers' scheme \
                              changes with it); keeping the previous settings"
                            .into(),
                    },
                ))
            } else {
                Ok(new)
            }
        });
        let outcome = match result {
            Ok(new) => {
                tracing::info!(file = %file.display(), tls = new.tls.is_some(), users = new.users.len(), "Web config reloaded.");
                // The new config may name other files: watch those from now on.
                watched.stamps = stamps(&new.files);
                watched.config = Arc::new(new);
                "success"
            }
            Err(e) => {
                tracing::error!(file = %file.display(), error = %e, "Web config change rejected; the previous settings stay.");
                "failure"
            }
        };
        if let Some(m) = &self.metrics {
            m.reloads.with_label_values(&[outcome]).inc();
            m.last_reload_ok.set(i64::from(outcome == "success"));
        }
        outcome == "success"
    }

    /// The TLS settings for a new connection; `None` serves plain HTTP.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.current()?.tls.clone()
    }

    /// Counts a connection lost in its TLS handshake.
    pub fn handshake_failed(&self, error: &dyn std::fmt::Display) {
        // Debug only: a port scanner must not be able to fill the logs.
        tracing::debug!(error = %error, "TLS handshake failed.");
        if let Some(m) = &self.metrics {
            m.handshakes_failed.inc();
        }
    }

    /// `None` when `req` carries the credentials of a configured user (or there are no
    /// users); else the 401 that refuses it.
    pub async fn refuse(&self, req: &ApiRequest) -> Option<Response<Body>> {
        let config = self.current()?;
        if config.users.is_empty() {
            return None;
        }
        let reason = match basic_credentials(req) {
            None => "missing_credentials",
            Some((user, password)) => {
                if self.verify(&config, &user, &password).await {
                    return None;
                }
                "wrong_credentials"
            }
        };
        if let Some(m) = &self.metrics {
            m.refusals.count(reason);
        }
        tracing::debug!(method = %req.method, path = %req.path, reason, "Request refused by basic auth.");
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: this server needs basic auth (basic_auth_users of its web config).\n",
        );
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"kpiwatch\""),
        );
        Some(r)
    }

    async fn verify(&self, config: &WebConfig, user: &str, password: &str) -> bool {
        let known = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .is_some_and(|p| same_secret(p.as_bytes(), password.as_bytes()));
        if known {
            return true;
        }
        let hash = config.users.get(user);
        // An unknown user is checked against a configured user's hash all the same (and
        // refused whatever the outcome), so that a wrong user name takes as long as a
        // wrong password.
        let Some(checked) = hash.or_else(|| config.users.values().next()) else {
            return false;
        };
        let (given, checked) = (password.to_string(), checked.clone());
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        let matched = tokio::task::spawn_blocking(move || bcrypt::verify(given, &checked))
            .await
            .is_ok_and(|r| r.unwrap_or(false));
        if matched && hash.is_some() {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(user.to_string(), password.to_string());
            return true;
        }
        false
    }

    /// Adds the web config's `http_server_config.headers` to `response`.
    pub fn add_headers(&self, response: &mut Response<Body>) {
        let Some(config) = self.current() else {
            return;
        };
        for (name, value) in &config.headers {
            // Checked when the file was loaded; a value that still does not convert is
            // left out rather than failing the answer.
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::from_str(value),
            ) {
                response.headers_mut().insert(n, v);
            }
        }
    }
}

/// User and password of an `Authorization: Basic` header.
fn basic_credentials(req: &ApiRequest) -> Option<(String, String)> {
    let (scheme, encoded) = req.authorization.as_deref()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
