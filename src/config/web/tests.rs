//! Web config files that must be refused, each with its key path. Files with working
//! certificates are checked in `tests/it/web.rs`, which can generate them.

use super::*;

/// Loads `text` as a web config file in a fresh directory.
fn load(text: &str, write_token: bool) -> Result<WebConfig, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(&path, text).unwrap();
    load_web_config(&path, write_token)
}

/// The `key: message` part of every error (the file name differs per run).
fn errors(text: &str) -> Vec<String> {
    let errs = load(text, false).expect_err("must be refused");
    errs.0
        .iter()
        .map(|e| format!("{}: {}", e.key_path, e.message))
        .collect()
}

fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

#[test]
fn an_empty_file_and_users_alone_are_valid() {
    let empty = load("", false).unwrap();
    assert!(empty.tls.is_none() && empty.users.is_empty());
    let users = load(
        &format!("basic_auth_users:\n  alice: '{}'\n", hash("pw")),
        false,
    )
    .unwrap();
    assert_eq!(users.users.keys().collect::<Vec<_>>(), ["alice"]);
    assert_eq!(users.files.len(), 1, "only the file itself to watch");
}

#[test]
fn unknown_keys_and_wrong_types_name_their_path() {
    let e = errors("tls_server_config:\n  cert_fil: a.pem\n");
    assert!(
        e[0].starts_with("tls_server_config.cert_fil: unknown field `cert_fil`"),
        "{e:?}"
    );
    let e = errors("basic_auth_users: [alice]\n");
    assert!(e[0].starts_with("basic_auth_users: invalid type"), "{e:?}");
}

#[test]
fn users_need_bcrypt_hashes_and_cannot_join_a_write_token() {
    let e = errors("basic_auth_users:\n  alice: plaintext\n");
    assert!(
        e[0].starts_with("basic_auth_users.alice: is not a bcrypt hash"),
        "{e:?}"
    );
    let text = format!("basic_auth_users:\n  alice: '{}'\n", hash("pw"));
    let e = load(&text, true).expect_err("refused beside a write token");
    assert!(
        e.0[0]
            .message
            .contains("cannot be combined with server.write_token_file"),
        "{e}"
    );
}

#[test]
fn every_tls_problem_is_reported_at_once() {
    let e = errors(
        "tls_server_config:\n  cert_file: missing.crt\n  key: inline\n  key_file: k.pem\n  \
         min_version: TLS14\n  client_auth_type: RequireAnyClientCert\n  \
         cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n  curve_preferences: [CurveP521]\n  \
         client_allowed_sans: [a]\n",
    );
    let expect = [
        "tls_server_config.cert_file: cannot read ",
        "tls_server_config.key_file: set both tls_server_config.key_file and tls_server_config.key",
        "tls_server_config.min_version: \"TLS14\" is not a TLS version",
        "tls_server_config.cipher_suites[0]: \"TLS_RSA_WITH_RC4_128_SHA\" is not supported",
        "tls_server_config.curve_preferences[0]: \"CurveP521\" is not supported",
        "tls_server_config.client_allowed_sans: is not supported",
        "tls_server_config.client_auth_type: \"RequireAnyClientCert\" accepts unverified",
    ];
    for prefix in expect {
        assert!(
            e.iter().any(|m| m.starts_with(prefix)),
            "{prefix:?} not in {e:#?}"
        );
    }
}

#[test]
fn versions_below_tls12_and_inverted_ranges_are_refused() {
    let e = errors("tls_server_config:\n  cert: x\n  key: y\n  max_version: TLS11\n");
    assert!(
        e.iter().any(|m| m
            .starts_with("tls_server_config.max_version: kpiwatch speaks TLS 1.2 and 1.3 only")),
        "{e:?}"
    );
    let e = errors(
        "tls_server_config:\n  cert: x\n  key: y\n  min_version: TLS13\n  max_version: TLS12\n",
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("tls_server_config.min_version: is above max_version")),
        "{e:?}"
    );
}

#[test]
fn inline_pem_that_is_not_pem_is_refused() {
    let e = errors("tls_server_config:\n  cert: not pem\n  key: not pem either\n");
    assert!(
        e.iter()
            .any(|m| m.starts_with("tls_server_config.cert: holds no PEM CERTIFICATE")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("tls_server_config.key: holds no usable private key")),
        "{e:?}"
    );
}

#[test]
fn client_certificates_need_a_ca_and_a_verifying_type() {
    let e = errors(
        "tls_server_config:\n  cert: x\n  key: y\n  client_auth_type: RequireAndVerifyClientCert\n",
    );
    assert!(
        e.iter()
            .any(|m| m
                == "tls_server_config.client_auth_type: needs tls_server_config.client_ca_file"),
        "{e:?}"
    );
}

#[test]
fn only_the_exporter_toolkit_headers_with_their_values_are_allowed() {
    let e = errors(
        "http_server_config:\n  headers:\n    X-Frame-Options: allow-all\n    Server: kpiwatch\n",
    );
    assert!(
        e.iter().any(|m| m.starts_with(
            "http_server_config.headers.X-Frame-Options: \"allow-all\" is not allowed"
        )),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with(
            "http_server_config.headers.Server: is not a header a web config may set"
        )),
        "{e:?}"
    );
    let ok = load(
        "http_server_config:\n  http2: true\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
        false,
    )
    .unwrap();
    assert_eq!(ok.headers.len(), 2);
}

#[test]
fn debug_output_shows_no_hash() {
    let h = hash("pw");
    let text = format!("basic_auth_users:\n  alice: '{h}'\n");
    let shown = format!("{:?}", load(&text, false).unwrap());
    assert!(shown.contains("alice") && !shown.contains(&h), "{shown}");
}
