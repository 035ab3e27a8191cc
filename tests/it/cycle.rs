use std::sync::atomic::Ordering;

use kpiwatch::app::build_detectors;
use kpiwatch::config::{self, Config};
use kpiwatch::cycle::{CycleContext, CycleResult, GroupRunner};
use kpiwatch::reader::Client;
use kpiwatch::store::ShardFilter;
use kpiwatch::telemetry::{SelfMetrics, Telemetry};

use crate::support::fake_prometheus::{FakePrometheus, Mode};

const STEP_MS: i64 = 15_000;

fn load(url: &str, group_extra: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "prometheus:\n  url: {url}\n  timeout: 500ms\n  retries: 0\ngroups:\n  - name: node\n    interval: 30s\n    step: 15s\n    window: 16\n    history: 10m\n    expire_after: 2m\n    entity_labels: [instance]\n    metrics:\n      cpu: cpu_query\n      mem: mem_query\n    detectors:\n      zscore: {{threshold: 4, calibrate: false}}\n{group_extra}"
    );
    let path = crate::support::write(dir.path(), "k.yaml", &text);
    config::load(&path).unwrap()
}

fn setup(cfg: &Config) -> (GroupRunner, CycleContext) {
    setup_in(cfg, &prometheus::Registry::new())
}

/// [`setup`], with the self-metrics registered in `registry`.
fn setup_in(cfg: &Config, registry: &prometheus::Registry) -> (GroupRunner, CycleContext) {
    let telemetry = Telemetry::new(SelfMetrics::new(registry).unwrap());
    let client = Client::new(&cfg.prometheus, telemetry.clone()).unwrap();
    let ctx = CycleContext::new(client, telemetry);
    let g = cfg.groups[0].clone();
    let runner = GroupRunner::new(
        g.clone(),
        ShardFilter(cfg.shard.clone()),
        build_detectors(&g.detectors).unwrap(),
    );
    (runner, ctx)
}

fn rendered(ctx: &CycleContext) -> String {
    let mut s = String::new();
    ctx.scores.render(&mut s);
    s
}

#[tokio::test]
async fn after_warm_up_each_cycle_fetches_only_new_points() {
    let fake = FakePrometheus::start(&["a", "b"]).await;
    let cfg = load(&fake.url(), "");
    let (mut runner, ctx) = setup(&cfg);
    let t0 = 1_700_000_000_000i64;
    for cycle in 0..6i64 {
        let now = t0 + cycle * 30_000 + 1_234;
        let (r, result) = runner.run_cycle(&ctx, now).await;
        runner = r;
        assert_eq!(result, CycleResult::Ok);
    }
    let requests = fake.with(|s| s.requests.clone());
    // First cycle: the whole history (10m / 15s = 40 points) of each metric, in two
    // consecutive chunks: 10 steps while the number of series is unknown, then the rest
    // in one (two series are far below the samples an answer may hold).
    let (first, later) = requests.split_at(4);
    for query in ["cpu_query", "mem_query"] {
        let chunks: Vec<_> = first.iter().filter(|r| r.query == query).collect();
        assert_eq!(chunks.len(), 2, "{first:?}");
        assert_eq!(chunks[0].samples_per_series, 10);
        assert_eq!(chunks[1].samples_per_series, 30);
        assert_eq!(
            chunks[1].start_ms,
            chunks[0].end_ms + STEP_MS,
            "no gap, no overlap"
        );
    }
    assert_eq!(later.len(), 10, "then one query per metric per cycle");
    // Later cycles: 30 s interval / 15 s step = 2 new points, never more than new + 1.
    for r in later {
        assert!(r.samples_per_series <= 2 + 1, "{r:?}");
        assert_eq!(r.samples_per_series, 2);
        assert_eq!(r.step_ms, STEP_MS);
    }
    assert!(ctx.ready.load(Ordering::Acquire));
    let out = rendered(&ctx);
    assert!(
        out.contains(r#"kpiwatch_anomaly_score{group="node",instance="a",detector="zscore"}"#),
        "{out}"
    );
    assert!(out.contains(r#"kpiwatch_zscore_value{group="node",instance="b",metric="mem"}"#));
}

#[tokio::test]
async fn a_group_at_max_entities_tracks_no_more_and_counts_the_rest_each_cycle() {
    let fake = FakePrometheus::start(&["a", "b", "c"]).await;
    let cfg = load(&fake.url(), "    max_entities: 2\n");
    let registry = prometheus::Registry::new();
    let (mut runner, ctx) = setup_in(&cfg, &registry);
    let t0 = 1_700_000_000_000i64;
    for cycle in 0..2i64 {
        let (r, result) = runner.run_cycle(&ctx, t0 + cycle * 30_000).await;
        runner = r;
        assert_eq!(result, CycleResult::Ok);
    }
    assert_eq!(runner.store().entity_count(), 2);
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut text,
    )
    .unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains(r#"kpiwatch_entities_dropped_total{group="node"} 2"#),
        "one refused entity in each of two cycles:\n{text}"
    );
    assert!(
        text.contains(r#"kpiwatch_entities{group="node"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn every_entity_of_a_group_scored_in_several_chunks_is_published_once_per_cycle() {
    // More entities than the cycle scores at a time (1,024), and not a multiple of it.
    let names: Vec<String> = (0..2_500).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fake = FakePrometheus::start(&refs).await;
    let cfg = load(&fake.url(), "");
    let (mut runner, ctx) = setup(&cfg);
    let t0 = 1_700_000_000_000i64;
    for cycle in 0..2i64 {
        let (r, result) = runner.run_cycle(&ctx, t0 + cycle * 30_000).await;
        runner = r;
        assert_eq!(result, CycleResult::Ok);
    }
    let text = rendered(&ctx);
    let counts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("kpiwatch_scores_total{"))
        .collect();
    assert_eq!(counts.len(), names.len(), "one counter per entity");
    for name in &names {
        let line = format!(
            r#"kpiwatch_scores_total{{group="node",instance="{name}",detector="zscore"}} 2"#
        );
        assert!(counts.contains(&line.as_str()), "{line} missing");
    }
}

#[tokio::test]
async fn entities_appear_and_expire_with_their_series() {
    let fake = FakePrometheus::start(&["a", "b"]).await;
    let cfg = load(&fake.url(), "");
    let (mut runner, ctx) = setup(&cfg);
    let t0 = 1_700_000_000_000i64;
    let (r, _) = runner.run_cycle(&ctx, t0).await;
    runner = r;
    assert!(rendered(&ctx).contains("instance=\"b\""));
    // b disappears and c appears.
    fake.with(|s| s.entities = vec!["a".into(), "c".into()]);
    let (r, _) = runner.run_cycle(&ctx, t0 + 30_000).await;
    runner = r;
    assert_eq!(
        runner.store().entity_count(),
        3,
        "b is absent but not expired yet"
    );
    assert!(
        runner.store().entity("instance=\"c\"").is_some(),
        "c is tracked from its first cycle"
    );
    // expire_after is 2m; c warms up with the points of later cycles (2 per cycle, 16 needed).
    let mut t = t0 + 30_000;
    for _ in 0..4 {
        t += 30_000;
        let (r, _) = runner.run_cycle(&ctx, t).await;
        runner = r;
    }
    assert_eq!(runner.store().entity_count(), 2);
    let out = rendered(&ctx);
    assert!(
        !out.contains("instance=\"b\""),
        "expired series leave /metrics:\n{out}"
    );
    assert!(out.contains("instance=\"a\""));
    assert!(
        !out.contains("instance=\"c\""),
        "c is still warming up (10 of 16 points)"
    );
    for _ in 0..3 {
        t += 30_000;
        let (r, _) = runner.run_cycle(&ctx, t).await;
        runner = r;
    }
    assert!(
        rendered(&ctx).contains("instance=\"c\""),
        "c is scored once it has min_points"
    );
    assert_eq!(
        ctx.telemetry
            .metrics
            .entities_expired
            .with_label_values(&["node"])
            .get(),
        1
    );
}

#[tokio::test]
async fn failures_mark_entities_stale_and_the_next_good_cycle_catches_up() {
    let fake = FakePrometheus::start(&["a"]).await;
    let cfg = load(&fake.url(), "");
    let (mut runner, ctx) = setup(&cfg);
    let t0 = 1_700_000_000_000i64;
    let (r, _) = runner.run_cycle(&ctx, t0).await;
    runner = r;
    fake.with(|s| s.mode = Mode::Status(503));
    for i in 1..=3 {
        let (r, result) = runner.run_cycle(&ctx, t0 + i * 30_000).await;
        runner = r;
        assert_eq!(result, CycleResult::QueryFailed);
    }
    let m = &ctx.telemetry.metrics;
    assert_eq!(m.entities_stale.with_label_values(&["node"]).get(), 1);
    assert_eq!(
        m.query_errors.with_label_values(&["http_5xx"]).get(),
        6,
        "2 metrics x 3 cycles"
    );
    assert_eq!(m.cycles.with_label_values(&["node", "error"]).get(), 3);
    assert!(
        rendered(&ctx).contains("instance=\"a\""),
        "last scores are kept while stale"
    );
    assert!(
        ctx.ready.load(Ordering::Acquire),
        "readiness is a latch: failed cycles do not revert it (staleness is in metrics)"
    );

    fake.with(|s| {
        s.mode = Mode::Normal;
        s.requests.clear();
    });
    let (r, result) = runner.run_cycle(&ctx, t0 + 4 * 30_000).await;
    runner = r;
    assert_eq!(result, CycleResult::Ok);
    assert_eq!(m.entities_stale.with_label_values(&["node"]).get(), 0);
    // The missed 3 cycles (6 points) plus the new 2 are fetched in one go.
    let requests = fake.with(|s| s.requests.clone());
    assert_eq!(requests[0].samples_per_series, 8);
    let e = runner.store().entity("instance=\"a\"").unwrap();
    assert!(
        e.rows[0]
            .as_ref()
            .unwrap()
            .as_slice()
            .iter()
            .all(|v| v.is_finite()),
        "no gap left behind"
    );
}

#[tokio::test]
async fn nan_values_are_filled_and_scores_stay_finite() {
    let fake = FakePrometheus::start(&["a"]).await;
    fake.with(|s| {
        s.value = |_, ts| {
            if (ts / 15_000) % 4 == 0 {
                f64::NAN
            } else {
                1.0 + ((ts / 15_000) % 3) as f64
            }
        }
    });
    let cfg = load(&fake.url(), "");
    let (runner, ctx) = setup(&cfg);
    let (runner, result) = runner.run_cycle(&ctx, 1_700_000_000_000).await;
    assert_eq!(result, CycleResult::Ok);
    let out = rendered(&ctx);
    let line = out
        .lines()
        .find(|l| l.starts_with("kpiwatch_anomaly_score{"))
        .unwrap();
    let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v.is_finite(), "{line}");
    drop(runner);
}

/// A refused query leaves only its own metric out of a cycle (tests/faults covers one
/// refused metric beside good ones on real Prometheus); with every query refused there
/// is nothing to score, so the cycle fails, counted under the refusal's cause.
#[tokio::test]
async fn a_cycle_whose_every_query_is_refused_fails_and_counts_http_4xx() {
    let fake = FakePrometheus::start(&["a"]).await;
    fake.with(|s| s.mode = Mode::Status(400));
    let cfg = load(&fake.url(), "");
    let (runner, ctx) = setup(&cfg);
    let (_, result) = runner.run_cycle(&ctx, 1_700_000_000_000).await;
    assert_eq!(result, CycleResult::QueryFailed);
    let m = &ctx.telemetry.metrics;
    assert_eq!(m.query_errors.with_label_values(&["http_4xx"]).get(), 2);
    assert_eq!(m.cycles.with_label_values(&["node", "error"]).get(), 1);
    assert!(!ctx.ready.load(Ordering::Acquire));
}
