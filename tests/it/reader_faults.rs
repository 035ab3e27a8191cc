use std::time::Duration;

use kpiwatch::config::{self, PrometheusConfig};
use kpiwatch::reader::Client;
use kpiwatch::telemetry::{SelfMetrics, Telemetry};

use crate::support::fake_prometheus::{FakePrometheus, Mode};

fn prom_config(url: &str, extra: &str) -> PrometheusConfig {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "prometheus:\n  url: {url}\n  timeout: 300ms\n  retries: 2\n  retry_backoff: 10ms\n{extra}groups:\n  - name: g\n    entity_labels: [instance]\n    metrics: {{m: up}}\n    detectors: {{zscore: {{}}}}\n"
    );
    let path = crate::support::write(dir.path(), "k.yaml", &text);
    config::load(&path).unwrap().prometheus
}

fn client(url: &str, extra: &str) -> (Client, Telemetry) {
    let registry = prometheus::Registry::new();
    let t = Telemetry::new(SelfMetrics::new(&registry).unwrap());
    (Client::new(&prom_config(url, extra), t.clone()).unwrap(), t)
}

async fn range(c: &Client) -> Result<kpiwatch::reader::QueryResult, kpiwatch::reader::Error> {
    c.query_range("up", 1_000_000, 1_010_000, Duration::from_secs(5))
        .await
}

#[tokio::test]
async fn decodes_series_with_nan_and_infinities_and_counts_warnings() {
    let fake = FakePrometheus::start(&["a", "b"]).await;
    fake.with(|s| {
        s.value = |inst, ts| match (inst, ts % 15_000) {
            ("a", 0) => f64::NAN,
            ("a", _) => f64::INFINITY,
            _ => -1.5,
        };
        s.warnings = vec!["partial response".into()];
    });
    let (c, t) = client(&fake.url(), "");
    let r = range(&c).await.unwrap();
    assert_eq!(r.series.len(), 2);
    assert_eq!(r.series[0].samples.len(), 3);
    assert!(r.series[0].samples.iter().any(|s| s.1.is_nan()));
    assert!(r.series[0].samples.iter().any(|s| s.1 == f64::INFINITY));
    assert_eq!(r.series[1].samples[0].1, -1.5);
    assert_eq!(t.metrics.prometheus_warnings.get(), 1);
    assert_eq!(t.metrics.samples_fetched.get(), 6);
}

#[tokio::test]
async fn retries_5xx_and_429_then_succeeds() {
    let fake = FakePrometheus::start(&["a"]).await;
    fake.with(|s| s.next_modes = vec![Mode::Status(503), Mode::Status(429)]);
    let (c, t) = client(&fake.url(), "");
    assert!(range(&c).await.is_ok());
    assert_eq!(
        t.metrics
            .query_retries
            .with_label_values(&["http_5xx"])
            .get(),
        1
    );
    assert_eq!(
        t.metrics
            .query_retries
            .with_label_values(&["http_429"])
            .get(),
        1
    );
}

#[tokio::test]
async fn gives_up_after_retries_with_the_cause() {
    let fake = FakePrometheus::start(&["a"]).await;
    fake.with(|s| s.mode = Mode::Status(500));
    let (c, _) = client(&fake.url(), "");
    let e = range(&c).await.unwrap_err();
    assert_eq!(e.cause(), "http_5xx");
    assert!(e.to_string().contains("scripted failure"), "{e}");
    fake.with(|s| s.mode = Mode::Status(400));
    assert_eq!(range(&c).await.unwrap_err().cause(), "http_4xx");
}

#[tokio::test]
async fn times_out_slow_answers() {
    let fake = FakePrometheus::start(&["a"]).await;
    fake.with(|s| s.mode = Mode::Delay(Duration::from_secs(2)));
    let (c, t) = client(&fake.url(), "");
    let e = range(&c).await.unwrap_err();
    assert_eq!(e.cause(), "timeout");
    assert_eq!(
        t.metrics
            .query_retries
            .with_label_values(&["timeout"])
            .get(),
        2
    );
}

#[tokio::test]
async fn rejects_garbage_and_oversized_bodies() {
    let fake = FakePrometheus::start(&["a"]).await;
    fake.with(|s| s.mode = Mode::Garbage);
    let (c, _) = client(&fake.url(), "  max_response_bytes: 4096\n");
    assert_eq!(range(&c).await.unwrap_err().cause(), "decode");
    fake.with(|s| s.mode = Mode::Oversized(10_000));
    let e = range(&c).await.unwrap_err();
    assert_eq!(e.cause(), "too_large");
    assert!(e.to_string().contains("max_response_bytes"));
}

#[tokio::test]
async fn connection_refused_is_a_connect_error() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (c, _) = client(&format!("http://127.0.0.1:{port}"), "");
    assert_eq!(range(&c).await.unwrap_err().cause(), "connect");
}

#[tokio::test]
async fn sends_bearer_token_from_a_file_that_may_rotate() {
    let fake = FakePrometheus::start(&["a"]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = crate::support::write(dir.path(), "token", "s3cret\n");
    let (c, _) = client(
        &fake.url(),
        &format!("  bearer_token_file: {}\n", token.display()),
    );
    assert!(range(&c).await.is_ok());
    // The secret never appears in the client's debug output.
    assert!(!format!("{c:?}").contains("s3cret"));
    // Kubernetes rotates the token in place: the next request carries the new one.
    std::fs::write(&token, "rotated\n").unwrap();
    let written = std::fs::metadata(&token).unwrap().modified().unwrap();
    std::fs::File::options()
        .write(true)
        .open(&token)
        .unwrap()
        .set_modified(written + Duration::from_secs(5))
        .unwrap();
    assert!(range(&c).await.is_ok());
    let sent: Vec<Option<String>> =
        fake.with(|s| s.requests.iter().map(|r| r.authorization.clone()).collect());
    assert_eq!(
        sent,
        [
            Some("Bearer s3cret".to_string()),
            Some("Bearer rotated".to_string())
        ],
        "the trimmed token, re-read after the rotation"
    );
}
