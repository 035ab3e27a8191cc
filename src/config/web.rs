//! The web configuration file (`server.web_config_file`): TLS and basic auth for
//! kpiwatch's own HTTP server, in the format of the Prometheus exporter-toolkit that
//! every official exporter reads with `--web.config.file`, so one file serves
//! node_exporter and kpiwatch alike:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/kpiwatch/tls/tls.crt
//!   key_file: /etc/kpiwatch/tls/tls.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional; needs client_ca_file
//!   client_ca_file: /etc/kpiwatch/tls/ca.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! basic_auth_users:
//!   prometheus: $2y$10$...   # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
//!
//! Everything is checked here, certificates and keys included, so `check-config` and the
//! start of the agent fail on a bad file with its key path, and a file changed at run
//! time is adopted only when it is whole. What kpiwatch does not do is refused by name
//! rather than ignored: TLS 1.0/1.1 as the highest version, `RequestClientCert` and
//! `RequireAnyClientCert` (client certificates are always verified), cipher suites and
//! curves outside rustls's safe set, and `client_allowed_sans`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::error::{ConfigError, ConfigErrors};
use super::validate::resolve;

/// A validated web configuration: what the admin server needs, ready to use.
#[derive(Clone)]
pub struct WebConfig {
    /// The file it came from (for messages).
    pub file: PathBuf,
    /// TLS for every connection, when `tls_server_config` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name → bcrypt hash; every request needs one of them when not empty.
    pub users: BTreeMap<String, String>,
    /// Response headers added to every answer (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
    /// Every file it was built from (itself, certificates, keys, CAs): a change to any of
    /// them is a reason to read it again.
    pub files: Vec<PathBuf>,
}

// The TLS config holds the private key and `users` hold password hashes: name only.
impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("file", &self.file)
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    /// TLS; plain HTTP when absent.
    tls_server_config: Option<RawTls>,
    /// HTTP settings.
    http_server_config: Option<RawHttp>,
    /// User name → bcrypt hash.
    #[serde(default)]
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    /// Server certificate chain (PEM file).
    cert_file: Option<String>,
    /// Server key (PEM file).
    key_file: Option<String>,
    /// Server certificate chain, inline PEM.
    cert: Option<String>,
    /// Server key, inline PEM.
    key: Option<String>,
    /// Go's `tls.ClientAuthType` name (default `NoClientCert`).
    client_auth_type: Option<String>,
    /// CA certificates that client certificates must chain to.
    client_ca_file: Option<String>,
    /// Lowest TLS version (default TLS12).
    min_version: Option<String>,
    /// Highest TLS version (default TLS13).
    max_version: Option<String>,
    /// TLS 1.2 cipher suites by Go name (TLS 1.3's are always on).
    cipher_suites: Option<Vec<String>>,
    /// Key exchange groups by Go name.
    curve_preferences: Option<Vec<String>>,
    /// Choose the cipher suite by the server's order.
    prefer_server_cipher_suites: Option<bool>,
    /// Not supported: refused by name.
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// HTTP/2 (kpiwatch serves HTTP/1.1 only; the key is accepted so exporter files work).
    http2: Option<bool>,
    /// Security headers added to every response.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// The response headers the exporter-toolkit lets a web config set, and what each may
/// hold (`None`: anything).
const ALLOWED_HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Content-Security-Policy", None),
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
];

/// Reads and checks the web config at `path`. `write_token` says whether
/// `server.write_token_file` is set, which cannot go with basic auth (both use the
/// `Authorization` header).
pub fn load_web_config(path: &Path, write_token: bool) -> Result<WebConfig, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(ConfigError::new(
            &file,
            "",
            format!("cannot read the web config file: {e}"),
        ))
    })?;
    let raw: Option<RawWeb> = super::deserialize_yaml(&text, &file)?;
    // An empty file is a valid web config that changes nothing, as in exporter-toolkit.
    let raw = raw.unwrap_or_default();
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let mut check = Check {
        file: &file,
        errors: Vec::new(),
        files: vec![path.to_path_buf()],
    };
    let tls = raw
        .tls_server_config
        .and_then(|t| check.tls(t, base))
        .map(Arc::new);
    let users = check.users(raw.basic_auth_users, write_token);
    let headers = check.headers(raw.http_server_config.unwrap_or_default());
    if check.errors.is_empty() {
        Ok(WebConfig {
            file: path.to_path_buf(),
            tls,
            users,
            headers,
            files: check.files,
        })
    } else {
        Err(ConfigErrors(check.errors))
    }
}

/// Collects every problem of one web config file.
struct Check<'a> {
    file: &'a str,
    errors: Vec<ConfigError>,
    files: Vec<PathBuf>,
}

impl Check<'_> {
    fn push(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::new(self.file, key, message));
    }

    /// The PEM text of a `*_file` key or its inline twin (exactly one of them).
    fn pem(
        &mut self,
        key: &str,
        file: Option<String>,
        inline: Option<String>,
        base: &Path,
    ) -> Option<(String, Vec<u8>)> {
        let inline_key = key.trim_end_matches("_file");
        match (file, inline) {
            (Some(_), Some(_)) => {
                self.push(
                    key,
                    format!("set both {key} and {inline_key} (expected one)"),
                );
                None
            }
            (None, Some(text)) => Some((inline_key.to_string(), text.into_bytes())),
            (Some(f), None) => {
                let path = resolve(base, &f);
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        self.files.push(path);
                        Some((key.to_string(), bytes))
                    }
                    Err(e) => {
                        self.push(key, format!("cannot read {}: {e}", path.display()));
                        None
                    }
                }
            }
            (None, None) => {
                self.push(
                    key,
                    format!("missing (expected {key}, or {inline_key} with inline PEM)"),
                );
                None
            }
        }
    }

    fn certificates(&mut self, key: &str, pem: &[u8]) -> Vec<CertificateDer<'static>> {
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
        match certs {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                self.push(key, "holds no PEM CERTIFICATE block");
                Vec::new()
            }
            Err(e) => {
                self.push(key, format!("is not valid PEM: {e}"));
                Vec::new()
            }
        }
    }

    fn tls(&mut self, raw: RawTls, base: &Path) -> Option<rustls::ServerConfig> {
        let k = |name: &str| format!("tls_server_config.{name}");
        let errors_before = self.errors.len();
        let cert = self.pem(&k("cert_file"), raw.cert_file, raw.cert, base);
        let key = self.pem(&k("key_file"), raw.key_file, raw.key, base);
        let chain = cert
            .map(|(key, pem)| self.certificates(&key, &pem))
            .unwrap_or_default();
        let private_key = key.and_then(|(key, pem)| match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(k) => Some(k),
            Err(e) => {
                self.push(
                    &key,
                    format!("holds no usable private key (PEM PRIVATE KEY, RSA or EC): {e}"),
                );
                None
            }
        });
        let versions = self.versions(raw.min_version.as_deref(), raw.max_version.as_deref());
        let crypto = self.crypto(raw.cipher_suites, raw.curve_preferences);
        let client_ca = raw.client_ca_file.and_then(|f| {
            let path = resolve(base, &f);
            match std::fs::read(&path) {
                Ok(pem) => {
                    self.files.push(path);
                    Some(self.certificates(&k("client_ca_file"), &pem))
                }
                Err(e) => {
                    self.push(
                        &k("client_ca_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        });
        if raw.client_allowed_sans.is_some() {
            self.push(
                &k("client_allowed_sans"),
                "is not supported by kpiwatch (verify clients with client_ca_file alone)",
            );
        }
        let client_auth = self.client_auth(raw.client_auth_type.as_deref(), client_ca.is_some());
        if self.errors.len() > errors_before {
            return None;
        }
        let crypto = Arc::new(crypto?);
        let builder = match rustls::ServerConfig::builder_with_provider(crypto.clone())
            .with_protocol_versions(&versions?)
        {
            Ok(b) => b,
            Err(e) => {
                self.push(&k("cipher_suites"), format!("no usable cipher suite: {e}"));
                return None;
            }
        };
        let builder = match (client_auth?, client_ca) {
            (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
            (auth, Some(cas)) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in cas {
                    if let Err(e) = roots.add(ca) {
                        self.push(
                            &k("client_ca_file"),
                            format!("unusable CA certificate: {e}"),
                        );
                        return None;
                    }
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    crypto,
                );
                let verifier = if auth == ClientAuth::IfGiven {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                match verifier.build() {
                    Ok(v) => builder.with_client_cert_verifier(v),
                    Err(e) => {
                        self.push(
                            &k("client_ca_file"),
                            format!("unusable CA certificates: {e}"),
                        );
                        return None;
                    }
                }
            }
        };
        match builder.with_single_cert(chain, private_key?) {
            Ok(mut config) => {
                config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(false);
                Some(config)
            }
            Err(e) => {
                self.push(
                    &k("key_file"),
                    format!("the key does not fit the certificate: {e}"),
                );
                None
            }
        }
    }

    fn versions(
        &mut self,
        min: Option<&str>,
        max: Option<&str>,
    ) -> Option<Vec<&'static rustls::SupportedProtocolVersion>> {
        let parse = |v: Option<&str>, default: u8| -> Result<u8, String> {
            match v {
                None => Ok(default),
                Some("TLS10") => Ok(10),
                Some("TLS11") => Ok(11),
                Some("TLS12") => Ok(12),
                Some("TLS13") => Ok(13),
                Some(other) => Err(format!(
                    "{other:?} is not a TLS version (expected TLS10, TLS11, TLS12 or TLS13)"
                )),
            }
        };
        let (min, max) = match (parse(min, 12), parse(max, 13)) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                if let Err(e) = a {
                    self.push("tls_server_config.min_version", e);
                }
                if let Err(e) = b {
                    self.push("tls_server_config.max_version", e);
                }
                return None;
            }
        };
        if max < 12 {
            self.push(
                "tls_server_config.max_version",
                "kpiwatch speaks TLS 1.2 and 1.3 only (expected TLS12 or TLS13)",
            );
            return None;
        }
        if min > max {
            self.push(
                "tls_server_config.min_version",
                "is above max_version (expected min_version <= max_version)",
            );
            return None;
        }
        // TLS 1.0 and 1.1 as the lowest version mean "whatever is lowest": 1.2 here.
        Some(
            [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(v, _)| (min.max(12)..=max).contains(v))
                .map(|(_, v)| v)
                .collect(),
        )
    }

    fn crypto(
        &mut self,
        suites: Option<Vec<String>>,
        curves: Option<Vec<String>>,
    ) -> Option<rustls::crypto::CryptoProvider> {
        use provider::cipher_suite as cs;
        let mut crypto = provider::default_provider();
        let ok_before = self.errors.len();
        if let Some(names) = suites {
            // Go's names of the TLS 1.2 suites rustls implements; TLS 1.3 suites are not
            // configurable in Go either.
            let known: [(&str, rustls::SupportedCipherSuite); 6] = [
                (
                    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                ),
                (
                    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                ),
                (
                    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                ),
                (
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                    cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                ),
                (
                    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                ),
                (
                    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                    cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                ),
            ];
            let mut chosen: Vec<rustls::SupportedCipherSuite> = crypto
                .cipher_suites
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS13)
                .copied()
                .collect();
            for (i, name) in names.iter().enumerate() {
                // Go also accepts the short CHACHA20 names without _SHA256.
                let full = if name.ends_with("CHACHA20_POLY1305") {
                    format!("{name}_SHA256")
                } else {
                    name.clone()
                };
                match known.iter().find(|(n, _)| *n == full) {
                    Some((_, s)) => chosen.push(*s),
                    None => self.push(
                        &format!("tls_server_config.cipher_suites[{i}]"),
                        format!(
                            "{name:?} is not supported (expected one of {})",
                            known.map(|(n, _)| n).join(", ")
                        ),
                    ),
                }
            }
            crypto.cipher_suites = chosen;
        }
        if let Some(names) = curves {
            let known: [(&str, &'static dyn rustls::crypto::SupportedKxGroup); 3] = [
                ("X25519", provider::kx_group::X25519),
                ("CurveP256", provider::kx_group::SECP256R1),
                ("CurveP384", provider::kx_group::SECP384R1),
            ];
            let mut chosen = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match known.iter().find(|(n, _)| n == name) {
                    Some((_, g)) => chosen.push(*g),
                    None => self.push(
                        &format!("tls_server_config.curve_preferences[{i}]"),
                        format!(
                            "{name:?} is not supported (expected X25519, CurveP256 or CurveP384)"
                        ),
                    ),
                }
            }
            if chosen.is_empty() && self.errors.len() == ok_before {
                self.push(
                    "tls_server_config.curve_preferences",
                    "is empty (expected at least one curve)",
                );
            }
            crypto.kx_groups = chosen;
        }
        (self.errors.len() == ok_before).then_some(crypto)
    }

    fn client_auth(&mut self, kind: Option<&str>, have_ca: bool) -> Option<ClientAuth> {
        let key = "tls_server_config.client_auth_type";
        let auth = match kind.unwrap_or("NoClientCert") {
            "NoClientCert" => ClientAuth::None,
            "VerifyClientCertIfGiven" => ClientAuth::IfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::Required,
            "RequestClientCert" | "RequireAnyClientCert" => {
                self.push(
                    key,
                    format!(
                        "{:?} accepts unverified client certificates, which kpiwatch does not \
                         (expected VerifyClientCertIfGiven or RequireAndVerifyClientCert with \
                         client_ca_file)",
                        kind.unwrap_or_default()
                    ),
                );
                return None;
            }
            other => {
                self.push(
                    key,
                    format!(
                        "{other:?} is not a client auth type (expected NoClientCert, \
                         VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
                    ),
                );
                return None;
            }
        };
        match (auth, have_ca) {
            (ClientAuth::None, true) => {
                self.push(
                    "tls_server_config.client_ca_file",
                    "is set but client_auth_type is NoClientCert (expected \
                     VerifyClientCertIfGiven or RequireAndVerifyClientCert)",
                );
                None
            }
            (ClientAuth::IfGiven | ClientAuth::Required, false) => {
                self.push(key, "needs tls_server_config.client_ca_file");
                None
            }
            _ => Some(auth),
        }
    }

    fn users(
        &mut self,
        users: BTreeMap<String, String>,
        write_token: bool,
    ) -> BTreeMap<String, String> {
        for (user, hash) in &users {
            if user.is_empty() || user.contains(':') {
                self.push(
                    "basic_auth_users",
                    format!("{user:?} is not a user name (expected a non-empty name without ':')"),
                );
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                self.push(
                    &format!("basic_auth_users.{user}"),
                    "is not a bcrypt hash (expected $2a$, $2b$ or $2y$..., e.g. from \
                     `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
                );
            }
        }
        if write_token && !users.is_empty() {
            self.push(
                "basic_auth_users",
                "cannot be combined with server.write_token_file: both use the Authorization \
                 header (with basic auth, every user may write, as in Prometheus)",
            );
        }
        users
    }

    fn headers(&mut self, http: RawHttp) -> Vec<(String, String)> {
        // http2 is accepted and ignored: kpiwatch serves HTTP/1.1, which is what
        // Prometheus scrapes with by default.
        let _ = http.http2;
        let mut out = Vec::new();
        for (name, value) in http.headers {
            let key = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = ALLOWED_HEADERS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            else {
                self.push(
                    &key,
                    format!(
                        "is not a header a web config may set (expected one of {})",
                        ALLOWED_HEADERS.map(|(n, _)| n).join(", ")
                    ),
                );
                continue;
            };
            if let Some(values) = allowed {
                if !values.iter().any(|v| v.eq_ignore_ascii_case(&value)) {
                    self.push(
                        &key,
                        format!(
                            "{value:?} is not allowed (expected one of {})",
                            values.join(", ")
                        ),
                    );
                    continue;
                }
            }
            // What an HTTP header value may hold: visible ASCII, spaces and tabs.
            if !value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
            {
                self.push(&key, format!("{value:?} is not a valid header value"));
                continue;
            }
            out.push((name, value));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    IfGiven,
    Required,
}

#[cfg(test)]
mod tests;
