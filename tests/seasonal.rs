//! The seasonal baseline end to end on real parts: Debian's Prometheus on loopback
//! scrapes a small exporter this test serves (a series with a broad peak every 2
//! minutes) and the agent; twenty minutes of the same series are backfilled with
//! `promtool tsdb create-blocks-from openmetrics`, so the agent learns the rhythm from
//! Prometheus's history at its first cycle, as it would learn last week in production.
//!
//! One agent runs two groups over the same series: `plain` (the z-score detector alone)
//! and `seasonal` (the same detector with `seasonality: [2m]`). Both use the fixed
//! threshold (`calibrate: false`): a calibrated threshold also learns that the peaks
//! are ordinary, by raising the bar for every point, and the test is about the other
//! remedy. The recurring peak must flag in `plain` and not in `seasonal`; then an
//! off-phase spike of the peak's height must flag in `seasonal`; and the
//! `kpiwatch_expected_*` band must reach Prometheus.
//!
//! Needs `prometheus` and `promtool` on PATH (`scripts/install-deps.sh`). Without them
//! the test is skipped locally and fails in CI (`CI` set).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, http_get, metric, query, start_prometheus, wait_for};

/// The period of the rhythm, seconds.
const PERIOD: i64 = 120;
/// Width of the peak, seconds, and its height above the base of 100.
const PEAK_WIDTH: i64 = 40;
const PEAK: f64 = 60.0;
/// Seconds of history backfilled before the test starts (ten periods).
const BACKFILL_S: i64 = 1200;

fn now_s() -> i64 {
    kpiwatch::clock::now_ms() / 1000
}

/// The series at second `t`: 100, a raised-cosine peak of `PEAK` over `PEAK_WIDTH`
/// seconds centred on phase `center` of each period, uniform noise of ±6 (hashed, so
/// deterministic), and `spike` added while a spike is injected.
fn value(t: i64, center: i64, spike: f64) -> f64 {
    let noise = ((t as u64).wrapping_mul(2_654_435_761) % (1 << 32)) as f64 / (1u64 << 32) as f64;
    let off = (t - center).rem_euclid(PERIOD);
    let off = if off > PERIOD / 2 { off - PERIOD } else { off };
    let peak = if off.abs() < PEAK_WIDTH / 2 {
        PEAK * 0.5 * (1.0 + (std::f64::consts::TAU * off as f64 / PEAK_WIDTH as f64).cos())
    } else {
        0.0
    };
    100.0 + peak + 12.0 * (noise - 0.5) + spike
}

/// Serves `/metrics` with the current value; `spike_until` (Unix seconds) adds a
/// spike of `PEAK` while the clock is before it.
fn serve_exporter(port: u16, center: i64, spike_until: Arc<AtomicI64>) {
    common::serve_exposition(port, move || {
        let t = now_s();
        let spike = if t < spike_until.load(Ordering::Relaxed) {
            PEAK
        } else {
            0.0
        };
        format!(
            "# TYPE kpiwatch_demo_value gauge\nkpiwatch_demo_value{{entity=\"demo\"}} {}\n",
            value(t, center, spike)
        )
    });
}

/// Writes `BACKFILL_S` seconds of the series with the labels scraping gives it.
fn backfill(dir: &Path, exporter: u16, t0: i64, center: i64) {
    let mut om = String::from("# TYPE kpiwatch_demo_value gauge\n");
    for t in t0 - BACKFILL_S..t0 {
        om.push_str(&format!(
            "kpiwatch_demo_value{{entity=\"demo\",instance=\"127.0.0.1:{exporter}\",job=\"demo\"}} {} {t}\n",
            value(t, center, 0.0)
        ));
    }
    om.push_str("# EOF\n");
    common::promtool_backfill(dir, &om);
}

/// The z-score detector's score of `group` in the agent's exposition.
fn score(agent: u16, group: &str) -> Option<f64> {
    let (status, body) = http_get(agent, "/metrics")?;
    if status != 200 {
        return None;
    }
    metric(
        &body,
        &format!("kpiwatch_anomaly_score{{group=\"{group}\",entity=\"demo\",detector=\"zscore\"}}"),
    )
}

/// The largest score of each group seen while polling until Unix second `until`.
fn max_scores_until(agent: u16, until: i64) -> (f64, f64) {
    let (mut plain, mut seasonal) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    while now_s() < until {
        plain = plain.max(score(agent, "plain").unwrap_or(f64::NEG_INFINITY));
        seasonal = seasonal.max(score(agent, "seasonal").unwrap_or(f64::NEG_INFINITY));
        std::thread::sleep(Duration::from_millis(500));
    }
    (plain, seasonal)
}

#[test]
fn recurring_peaks_flag_only_without_seasonality_and_an_off_phase_spike_flags_with_it() {
    if !common::tools_or_skip(&["prometheus", "promtool"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (prom, exporter, agent) = (free_port(), free_port(), free_port());
    let t0 = now_s();
    // The next live peak is centred 55 s from now: it rises after the agent is up.
    let center = t0 + 55;
    let spike_until = Arc::new(AtomicI64::new(0));
    serve_exporter(exporter, center, spike_until.clone());
    backfill(dir.path(), exporter, t0, center);
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: demo\n    static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]\n  - job_name: kpiwatch\n    honor_labels: true\n    static_configs: [{{targets: ['127.0.0.1:{agent}']}}]\n"
        ),
    )
    .unwrap();
    let _prometheus = start_prometheus(dir.path(), prom);
    wait_for("Prometheus ready", Duration::from_secs(60), || {
        http_get(prom, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    let group = |name: &str, extra: &str| {
        format!(
            r#"  - name: {name}
    interval: 1s
    step: 1s
    window: 16
    history: 4m
    entity_labels: [entity]
{extra}    metrics:
      value: 'max by (entity) (kpiwatch_demo_value)'
    detectors:
      zscore:
        calibrate: false
"#
        )
    };
    std::fs::write(
        dir.path().join("kpiwatch.yaml"),
        format!(
            "prometheus:\n  url: http://127.0.0.1:{prom}\nserver:\n  listen: 127.0.0.1:{agent}\ngroups:\n{}{}",
            group("plain", ""),
            group(
                "seasonal",
                "    seasonality: [2m]\n    seasonality_history: 16m\n"
            ),
        ),
    )
    .unwrap();
    let _agent = common::start_agent(
        &dir.path().join("kpiwatch.yaml"),
        &dir.path().join("agent.log"),
    );
    let log = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
    wait_for("both groups scored", Duration::from_secs(60), || {
        score(agent, "plain").is_some() && score(agent, "seasonal").is_some()
    });
    let learned = http_get(agent, "/metrics")
        .and_then(|(_, body)| {
            metric(
                &body,
                "kpiwatch_seasonal_series_learned_total{group=\"seasonal\"}",
            )
        })
        .unwrap_or(0.0);
    assert_eq!(
        learned,
        1.0,
        "the baseline was learned from history\n{}",
        log()
    );

    // The live peak: [center - 20, center + 20].
    assert!(
        now_s() < center - PEAK_WIDTH / 2,
        "the agent started too late for the first live peak\n{}",
        log()
    );
    let (plain, seasonal) = max_scores_until(agent, center + PEAK_WIDTH / 2 + 2);
    eprintln!("recurring peak: largest score {plain:.2} without seasonality, {seasonal:.2} with");
    assert!(
        plain > 1.0,
        "the peak flags without seasonality (max score {plain})"
    );
    assert!(
        seasonal <= 1.0,
        "the peak does not flag with seasonality (max score {seasonal})\n{}",
        log()
    );

    // An off-phase spike of the peak's height, in the trough, for 8 s.
    let spike_at = now_s() + 3;
    std::thread::sleep(Duration::from_secs(3));
    spike_until.store(spike_at + 8, Ordering::Relaxed);
    let (_, seasonal) = max_scores_until(agent, spike_at + 12);
    eprintln!("off-phase spike: largest score {seasonal:.2} with seasonality");
    assert!(
        seasonal > 1.0,
        "an off-phase spike flags with seasonality (max score {seasonal})\n{}",
        log()
    );

    // The band reached Prometheus, in the metric's units, around the base level.
    wait_for("the band in Prometheus", Duration::from_secs(30), || {
        let upper = query(
            prom,
            "kpiwatch_expected_upper{group=\"seasonal\",metric=\"value\"}",
        );
        let lower = query(
            prom,
            "kpiwatch_expected_lower{group=\"seasonal\",metric=\"value\"}",
        );
        let value = |v: &[serde_json::Value]| {
            v.first()
                .and_then(|s| s["value"][1].as_str())
                .and_then(|s| s.parse::<f64>().ok())
        };
        matches!((value(&lower), value(&upper)), (Some(l), Some(u)) if l < u && l > 0.0 && u < 400.0)
    });
}
