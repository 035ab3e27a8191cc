//! `server.web_config_file` over real sockets: the admin server speaks TLS with the
//! configured certificate, verifies client certificates when told to, asks for basic
//! auth, and serves a rotated certificate within a second. A real Prometheus scraping
//! it over HTTPS is in `tests/e2e.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kpiwatch::config::{load_web_config, WebConfig};
use kpiwatch::export::{Admin, AdminServer, Refusals, WebGuard};
use prometheus::Registry;

use crate::common::TestPki;

fn web_config(dir: &Path, text: &str) -> WebConfig {
    let path = dir.join("web.yml");
    std::fs::write(&path, text).unwrap();
    load_web_config(&path, false).unwrap_or_else(|e| panic!("{e}"))
}

/// An admin server on a free loopback port guarded by `config`.
fn serve(config: WebConfig) -> (AdminServer, Registry) {
    let registry = Registry::new();
    let web = WebGuard::new(
        Some(config),
        false,
        Refusals::new(&registry).unwrap(),
        &registry,
    )
    .unwrap();
    let admin = Admin {
        registry: registry.clone(),
        web: Arc::new(web),
        ..Admin::default()
    };
    let server = AdminServer::start("127.0.0.1:0".parse().unwrap(), admin).unwrap();
    (server, registry)
}

/// A client trusting `ca` (and presenting `identity` when given).
fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// The value of the unlabelled counter or gauge `name` (NaN when not registered).
fn metric(registry: &Registry, name: &str) -> f64 {
    let families = registry.gather();
    let Some(m) = families.iter().find(|f| f.name() == name) else {
        return f64::NAN;
    };
    let m = &m.get_metric()[0];
    // One of the two is set; the other reads 0.
    m.get_counter().get_value() + m.get_gauge().get_value()
}

fn handshakes_failed(registry: &Registry) -> f64 {
    metric(registry, "kpiwatch_http_tls_handshakes_failed_total")
}

fn last_reload_successful(registry: &Registry) -> f64 {
    metric(registry, "kpiwatch_web_config_last_reload_successful")
}

#[tokio::test]
async fn a_broken_change_keeps_the_previous_users_until_it_is_fixed_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let users = |user: &str, password: &str| {
        let hash = bcrypt::hash(password, 4).unwrap();
        format!("basic_auth_users:\n  {user}: '{hash}'\n")
    };
    let config = web_config(dir.path(), &users("prometheus", "old"));
    let (server, registry) = serve(config);
    let url = format!("http://{}/-/healthy", server.local_addr());
    let status = |user: &'static str, password: &'static str| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .get(&url)
                .basic_auth(user, Some(password))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status("prometheus", "old").await, 200);
    assert_eq!(last_reload_successful(&registry), 1.0);

    // A half-written file: refused, the previous users stay, the gauge says so.
    std::fs::write(dir.path().join("web.yml"), "basic_auth_users: [unclosed\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status("prometheus", "old").await, 200);
    assert_eq!(last_reload_successful(&registry), 0.0);

    // Fixed with a new password: adopted, the old one no longer opens.
    std::fs::write(dir.path().join("web.yml"), users("prometheus", "new")).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let _ = status("prometheus", "new").await; // the request that notices the change
    assert_eq!(status("prometheus", "new").await, 200);
    assert_eq!(status("prometheus", "old").await, 401);
    assert_eq!(last_reload_successful(&registry), 1.0);
    server.stop();
}

#[tokio::test]
async fn tls_with_basic_auth_serves_only_trusting_clients_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let config = web_config(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{hash}'\n\
             http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=31536000\n",
            pki.server_cert.display(),
            pki.server_key.display()
        ),
    );
    let (server, registry) = serve(config);
    let url = format!("https://localhost:{}/metrics", server.local_addr().port());
    let c = client(&pki.ca, None);

    let ok = c
        .get(&url)
        .basic_auth("prometheus", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    assert!(ok
        .text()
        .await
        .unwrap()
        .contains("kpiwatch_http_tls_handshakes_failed_total"));
    let no_password = c.get(&url).send().await.unwrap();
    assert_eq!(no_password.status(), 401);
    let wrong = c
        .get(&url)
        .basic_auth("prometheus", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // A connection closed before its first byte (a kubelet tcpSocket probe) is not a
    // failed handshake: probes must not raise the counter.
    for _ in 0..3 {
        drop(
            tokio::net::TcpStream::connect(server.local_addr())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handshakes_failed(&registry), 0.0, "TCP probes were counted");

    // Plain HTTP on the TLS port, and a client that does not trust the CA, get nothing.
    let plain = format!("http://127.0.0.1:{}/metrics", server.local_addr().port());
    assert!(reqwest::Client::new().get(&plain).send().await.is_err());
    let other = TestPki::generate(dir.path(), "other-");
    assert!(client(&other.ca, None).get(&url).send().await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        handshakes_failed(&registry) >= 2.0,
        "{}",
        handshakes_failed(&registry)
    );
    server.stop();
}

#[tokio::test]
async fn client_certificates_are_verified_against_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "");
    let stranger = TestPki::generate(dir.path(), "stranger-");
    let config = web_config(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    );
    let (server, _registry) = serve(config);
    let url = format!("https://localhost:{}/-/healthy", server.local_addr().port());
    let with_cert = client(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    assert_eq!(with_cert.get(&url).send().await.unwrap().status(), 200);
    assert!(
        client(&pki.ca, None).get(&url).send().await.is_err(),
        "no client certificate"
    );
    let foreign = client(&pki.ca, Some((&stranger.client_cert, &stranger.client_key)));
    assert!(
        foreign.get(&url).send().await.is_err(),
        "a certificate of another CA"
    );
    server.stop();
}

#[tokio::test]
async fn a_rotated_certificate_is_served_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestPki::generate(dir.path(), "");
    let config = web_config(
        dir.path(),
        &format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            first.server_cert.display(),
            first.server_key.display()
        ),
    );
    let (server, _registry) = serve(config);
    let url = format!("https://localhost:{}/-/healthy", server.local_addr().port());
    assert_eq!(
        client(&first.ca, None)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Rotation as cert-manager does it: new files in place, from another CA here so
    // that the old and new certificates can be told apart.
    let second = TestPki::generate(dir.path(), "second-");
    std::fs::copy(&second.server_cert, &first.server_cert).unwrap();
    std::fs::copy(&second.server_key, &first.server_key).unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The first connection after the change may still see the old certificate (the
    // check happens when a connection arrives); the next ones see the new one.
    let _ = client(&second.ca, None).get(&url).send().await;
    let fresh = client(&second.ca, None);
    assert_eq!(fresh.get(&url).send().await.unwrap().status(), 200);
    assert!(client(&first.ca, None).get(&url).send().await.is_err());
    server.stop();
}

#[test]
fn a_key_that_does_not_fit_the_certificate_is_refused_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestPki::generate(dir.path(), "a-");
    let b = TestPki::generate(dir.path(), "b-");
    let path = dir.path().join("web.yml");
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
            a.server_cert.display(),
            b.server_key.display()
        ),
    )
    .unwrap();
    let e = load_web_config(&path, false).expect_err("mismatched key");
    assert_eq!(e.0[0].key_path, "tls_server_config.key_file", "{e}");
    assert!(
        e.0[0].message.contains("does not fit the certificate"),
        "{e}"
    );
}

#[test]
fn check_config_reports_the_web_config_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yml"),
        "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
    )
    .unwrap();
    let config = dir.path().join("kpiwatch.yaml");
    std::fs::write(
        &config,
        "prometheus:\n  url: http://127.0.0.1:9090\nserver:\n  web_config_file: web.yml\ngroups:\n  - name: g\n    entity_labels: [instance]\n    metrics:\n      m: up\n    detectors:\n      zscore: {}\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::common::BIN)
        .args(["check-config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("web.yml: tls_server_config.cert_file: cannot read ")
            && stdout.contains("web.yml: tls_server_config.key_file: cannot read "),
        "{stdout}"
    );
}
