//! Basic auth, headers and changes of the web config, without a socket (TLS over real
//! sockets is in `tests/it/web.rs` and, scraped by Prometheus, in `tests/e2e.rs`).

use super::*;
use crate::config::load_web_config;
use hyper::Method;

struct Fixture {
    guard: WebGuard,
    registry: Registry,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn fixture(text: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.yml");
    std::fs::write(&path, text).unwrap();
    let registry = Registry::new();
    let config = load_web_config(&path, false).unwrap();
    let guard = WebGuard::new(
        Some(config),
        false,
        Refusals::new(&registry).unwrap(),
        &registry,
    )
    .unwrap();
    Fixture {
        guard,
        registry,
        path,
        _dir: dir,
    }
}

fn users(pairs: &[(&str, &str)]) -> String {
    let mut text = String::from("basic_auth_users:\n");
    for (user, password) in pairs {
        text += &format!("  {user}: '{}'\n", bcrypt::hash(password, 4).unwrap());
    }
    text
}

fn request(authorization: Option<String>) -> ApiRequest {
    let mut r = ApiRequest::new(Method::GET, "/metrics");
    r.authorization = authorization;
    r
}

fn basic(user: &str, password: &str) -> Option<String> {
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    ))
}

fn counter(registry: &Registry, name: &str, label: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn without_users_every_request_passes() {
    let f = fixture("");
    assert!(f.guard.refuse(&request(None)).await.is_none());
    assert!(WebGuard::default().refuse(&request(None)).await.is_none());
}

#[tokio::test]
async fn only_a_configured_user_with_the_right_password_passes() {
    let f = fixture(&users(&[("alice", "s3cret"), ("bob", "hunter2")]));
    let refused = f
        .guard
        .refuse(&request(None))
        .await
        .expect("no credentials");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers()[hyper::header::WWW_AUTHENTICATE],
        "Basic realm=\"kpiwatch\""
    );
    for wrong in [
        basic("alice", "hunter2"),
        basic("carol", "s3cret"),
        basic("alice", ""),
        Some("Bearer s3cret".into()),
        Some("Basic !!!not-base64".into()),
    ] {
        assert!(
            f.guard.refuse(&request(wrong.clone())).await.is_some(),
            "{wrong:?}"
        );
    }
    assert!(f
        .guard
        .refuse(&request(basic("alice", "s3cret")))
        .await
        .is_none());
    assert!(f
        .guard
        .refuse(&request(basic("bob", "hunter2")))
        .await
        .is_none());
    assert_eq!(
        counter(
            &f.registry,
            "kpiwatch_http_requests_refused_total",
            "wrong_credentials"
        ),
        3
    );
    assert_eq!(
        counter(
            &f.registry,
            "kpiwatch_http_requests_refused_total",
            "missing_credentials"
        ),
        3
    );
}

#[tokio::test]
async fn a_verified_password_is_remembered_only_for_its_own_value() {
    let f = fixture(&users(&[("alice", "pw:with:colons")]));
    assert!(f
        .guard
        .refuse(&request(basic("alice", "pw:with:colons")))
        .await
        .is_none());
    assert!(f.guard.verified.lock().unwrap().contains_key("alice"));
    // The cache must not let a different password through.
    assert!(f
        .guard
        .refuse(&request(basic("alice", "pw")))
        .await
        .is_some());
    assert!(f
        .guard
        .refuse(&request(basic("alice", "pw:with:colons")))
        .await
        .is_none());
}

#[tokio::test]
async fn a_changed_file_is_adopted_and_a_broken_one_keeps_the_old_users() {
    let f = fixture(&users(&[("alice", "one")]));
    assert!(f
        .guard
        .refuse(&request(basic("alice", "one")))
        .await
        .is_none());

    std::fs::write(&f.path, users(&[("alice", "two")])).unwrap();
    std::thread::sleep(RECHECK + Duration::from_millis(100));
    assert!(
        f.guard
            .refuse(&request(basic("alice", "one")))
            .await
            .is_some(),
        "old password still accepted"
    );
    assert!(f
        .guard
        .refuse(&request(basic("alice", "two")))
        .await
        .is_none());
    assert_eq!(
        counter(&f.registry, "kpiwatch_web_config_reloads_total", "success"),
        1
    );

    std::fs::write(&f.path, "basic_auth_users: {alice: not-a-hash}\n").unwrap();
    std::thread::sleep(RECHECK + Duration::from_millis(100));
    assert!(
        f.guard
            .refuse(&request(basic("alice", "two")))
            .await
            .is_none(),
        "previous users stay"
    );
    assert_eq!(
        counter(&f.registry, "kpiwatch_web_config_reloads_total", "failure"),
        1
    );
}

#[tokio::test]
async fn configured_headers_are_added_to_answers() {
    let f = fixture("http_server_config:\n  headers:\n    X-Frame-Options: deny\n");
    let mut r = crate::export::http::text(StatusCode::OK, "x");
    f.guard.add_headers(&mut r);
    assert_eq!(r.headers()["x-frame-options"], "deny");
}
