use super::*;
use crate::config::Shard;

const STEP: i64 = 15_000;

fn cfg(fill: Fill) -> StoreConfig {
    StoreConfig {
        step_ms: STEP,
        history_points: 8,
        entity_labels: vec!["instance".into()],
        metric_names: vec!["cpu".into(), "mem".into()],
        expire_after_ms: 60_000,
        max_entities: 10_000,
        fill,
        shard: ShardFilter(Shard::All),
        seasonality: None,
        gates: vec![],
    }
}

fn series(instance: &str, samples: &[(i64, f64)]) -> Series {
    Series {
        labels: vec![
            ("instance".into(), instance.into()),
            ("job".into(), "node".into()),
        ],
        samples: samples.to_vec(),
    }
}

fn row(store: &GroupStore, key: &str, metric: usize) -> Vec<f64> {
    store.entity(key).unwrap().rows[metric]
        .as_ref()
        .unwrap()
        .as_slice()
        .iter()
        .map(|&v| f64::from(v))
        .collect()
}

#[test]
fn first_fetch_covers_history_then_only_new_points() {
    let mut s = GroupStore::new(cfg(Fill::None));
    let now = 1_000 * STEP + 7_000;
    let (start, end) = s.next_range(0, now).unwrap();
    assert_eq!(end, 1_000 * STEP);
    assert_eq!((end - start) / STEP + 1, 8, "whole history, 8 points");
    s.mark_fetched(0, end);
    assert_eq!(
        s.next_range(0, now + 5_000),
        None,
        "nothing new within the step"
    );
    assert_eq!(
        s.next_range(0, now + 2 * STEP),
        Some((end + STEP, end + 2 * STEP))
    );
    // After an outage longer than the history, never fetch more than the history.
    let (start, end) = s.next_range(0, now + 100 * STEP).unwrap();
    assert_eq!((end - start) / STEP + 1, 8);
}

#[test]
fn rows_stay_aligned_and_gaps_follow_the_fill_policy() {
    for (fill, expect_gap) in [
        (Fill::None, f64::NAN),
        (Fill::Previous, 2.0),
        (Fill::Zero, 0.0),
    ] {
        let mut s = GroupStore::new(cfg(fill));
        s.ingest(
            0,
            &[series(
                "a",
                &[(STEP, 1.0), (2 * STEP, 2.0), (4 * STEP, 4.0)],
            )],
            0,
        );
        s.ingest(1, &[series("a", &[(4 * STEP, 40.0)])], 0);
        let out = s.finish_cycle(5 * STEP, 0);
        assert_eq!(out.fresh, vec!["instance=\"a\"".to_string()]);
        let cpu = row(&s, "instance=\"a\"", 0);
        let mem = row(&s, "instance=\"a\"", 1);
        assert_eq!(cpu.len(), 5);
        assert_eq!(mem.len(), 5, "a metric that appears later is back-filled");
        let (gap, last) = (cpu[2], cpu[4]);
        assert!(
            gap.to_bits() == expect_gap.to_bits() || gap == expect_gap,
            "{fill:?}: {gap}"
        );
        assert_eq!(cpu[3], 4.0);
        assert_eq!(mem[3], 40.0);
        assert!(mem[0].is_nan(), "no invented past for a new metric");
        let _ = last;
    }
}

#[test]
fn non_finite_values_are_gaps() {
    let mut s = GroupStore::new(cfg(Fill::Previous));
    s.ingest(
        0,
        &[series(
            "a",
            &[(STEP, 1.0), (2 * STEP, f64::NAN), (3 * STEP, f64::INFINITY)],
        )],
        0,
    );
    s.finish_cycle(3 * STEP, 0);
    assert_eq!(row(&s, "instance=\"a\"", 0), vec![1.0, 1.0, 1.0]);
}

#[test]
fn history_is_bounded_and_old_points_are_ignored() {
    let mut s = GroupStore::new(cfg(Fill::None));
    let samples: Vec<(i64, f64)> = (1..=20).map(|i| (i * STEP, i as f64)).collect();
    let st = s.ingest(0, &[series("a", &samples)], 0);
    assert_eq!(st.stored, 20);
    let st = s.ingest(0, &[series("a", &[(2 * STEP, 0.0)])], 0);
    assert_eq!(st.too_old, 1);
    s.finish_cycle(20 * STEP, 0);
    let r = row(&s, "instance=\"a\"", 0);
    assert_eq!(r, (13..=20).map(|i| i as f64).collect::<Vec<_>>());
}

#[test]
fn entities_expire_after_their_absence() {
    let mut s = GroupStore::new(cfg(Fill::None));
    s.ingest(
        0,
        &[series("a", &[(STEP, 1.0)]), series("b", &[(STEP, 1.0)])],
        0,
    );
    s.finish_cycle(STEP, 0);
    assert_eq!(s.entity_count(), 2);
    s.ingest(0, &[series("a", &[(2 * STEP, 1.0)])], 30_000);
    let out = s.finish_cycle(2 * STEP, 30_000);
    assert!(out.expired.is_empty(), "absent 30 s < 60 s");
    s.ingest(0, &[series("a", &[(3 * STEP, 1.0)])], 61_000);
    let out = s.finish_cycle(3 * STEP, 61_000);
    assert_eq!(out.expired.len(), 1);
    assert_eq!(out.expired[0].0, "instance=\"b\"");
    assert_eq!(
        out.expired[0].1,
        vec![("instance".to_string(), "b".to_string())]
    );
    assert_eq!(s.entity_count(), 1);
}

#[test]
fn entities_beyond_max_entities_are_refused_counted_once_per_cycle_and_admitted_when_room_frees() {
    let mut c = cfg(Fill::None);
    c.max_entities = 2;
    let mut s = GroupStore::new(c);
    let answer: Vec<Series> = ["a", "b", "c", "d"]
        .iter()
        .map(|i| series(i, &[(STEP, 1.0)]))
        .collect();
    let st = s.ingest(0, &answer, 0);
    assert_eq!((st.stored, st.over_limit), (2, 2));
    // The second metric's answer names the same refused entities: one count each.
    let st = s.ingest(1, &answer, 0);
    assert_eq!(st.over_limit, 2);
    let out = s.finish_cycle(STEP, 0);
    assert_eq!(out.dropped, 2);
    assert_eq!(s.entity_count(), 2);
    assert!(s.entity("instance=\"c\"").is_none());
    // Tracked entities keep their data; "b" goes away and expires, freeing a slot.
    s.ingest(0, &[series("a", &[(2 * STEP, 1.0)])], 30_000);
    assert_eq!(s.finish_cycle(2 * STEP, 30_000).dropped, 0);
    s.ingest(0, &[series("a", &[(3 * STEP, 1.0)])], 61_000);
    let out = s.finish_cycle(3 * STEP, 61_000);
    assert_eq!(out.expired.len(), 1);
    let st = s.ingest(0, &[series("c", &[(4 * STEP, 1.0)])], 70_000);
    assert_eq!(st.over_limit, 0);
    assert_eq!(s.finish_cycle(4 * STEP, 70_000).dropped, 0);
    assert!(s.entity("instance=\"c\"").is_some());
}

#[test]
fn node_shard_filters_series() {
    let mut c = cfg(Fill::None);
    c.shard = ShardFilter(Shard::Node {
        name: "n1".into(),
        label: "node".into(),
    });
    let mut s = GroupStore::new(c);
    let mut mine = series("a", &[(STEP, 1.0)]);
    mine.labels.push(("node".into(), "n1".into()));
    let mut other = series("b", &[(STEP, 1.0)]);
    other.labels.push(("node".into(), "n2".into()));
    let st = s.ingest(0, &[mine, other], 0);
    assert_eq!(st.filtered, 1);
    assert_eq!(
        s.finish_cycle(STEP, 0).fresh,
        vec!["instance=\"a\"".to_string()]
    );
}

#[test]
fn views_expose_present_metrics_with_statistics() {
    let mut s = GroupStore::new(cfg(Fill::None));
    let samples: Vec<(i64, f64)> = (1..=8).map(|i| (i * STEP, i as f64)).collect();
    s.ingest(0, &[series("a", &samples), series("b", &samples)], 0);
    s.ingest(1, &[series("b", &samples)], 0);
    let out = s.finish_cycle(8 * STEP, 0);
    let batch = s.views(&out.fresh);
    let views = batch.views();
    assert_eq!(views.len(), 2);
    assert_eq!(views[0].metric_names, &["cpu"]);
    assert_eq!(views[1].metric_names, &["cpu", "mem"]);
    assert_eq!(views[1].len(), 8);
    assert_eq!(views[1].end_ms, 8 * STEP);
    assert_eq!(views[1].stats[0].median, 4.5);
    assert_eq!(views[1].stats[0].count, 8);
}

/// A store with a 2-minute seasonal baseline over 1 s steps and 4 minutes of history.
fn seasonal_cfg() -> StoreConfig {
    StoreConfig {
        step_ms: 1000,
        history_points: 240,
        seasonality: Some(SeasonalSettings {
            periods_ms: vec![120_000],
            adapt_after_points: 600,
        }),
        gates: vec![Gate::OPEN, Gate::OPEN],
        ..cfg(Fill::Previous)
    }
}

/// 100 ± 60 over every 2 minutes, and a little (hashed) noise.
fn rhythm(t_ms: i64) -> f64 {
    let phase = t_ms.rem_euclid(120_000) as f64 / 120_000.0;
    let noise = ((t_ms as u64 / 1000).wrapping_mul(2_654_435_761) % 1000) as f64 / 250.0;
    100.0 + 60.0 * (std::f64::consts::TAU * phase).sin() + noise
}

#[test]
fn seasonal_views_hold_residuals_and_the_expectation_in_the_metric_units() {
    let mut s = GroupStore::new(seasonal_cfg());
    let history: Vec<(i64, f64)> = (0..1200).map(|i| (i * 1000, rhythm(i * 1000))).collect();
    assert_eq!(s.learn_seasonal(0, &[series("a", &history)], 0), 1);
    let now = 6_000_000;
    let live: Vec<(i64, f64)> = (0..240)
        .map(|i| now - 239_000 + i * 1000)
        .map(|t| (t, rhythm(t)))
        .collect();
    s.ingest(0, &[series("a", &live)], now);
    let out = s.finish_cycle(now, now);
    let batch = s.views(&out.fresh);
    let view = batch.views()[0];
    // The rhythm's crests and troughs are ordinary residuals, not ±60-unit deviations.
    assert!(
        view.row(0).iter().all(|u| u.abs() < 4.0),
        "{:?}",
        view.row(0)
    );
    let e = view.expectation(0);
    assert!((e.value - rhythm(now)).abs() < 5.0, "{e:?}");
    assert!(out.level_shifts.is_empty());
}

#[test]
fn seasonal_baselines_survive_a_restart_through_their_state() {
    let mut s = GroupStore::new(seasonal_cfg());
    let history: Vec<(i64, f64)> = (0..1200).map(|i| (i * 1000, rhythm(i * 1000))).collect();
    s.learn_seasonal(0, &[series("a", &history)], 0);
    let state = s.seasonal_state();
    let json = serde_json::to_string(&state).unwrap();

    let mut restarted = GroupStore::new(seasonal_cfg());
    assert_eq!(
        restarted.restore_seasonal(serde_json::from_str(&json).unwrap()),
        1
    );
    let t = 6_000_000;
    restarted.ingest(0, &[series("a", &[(t, rhythm(t))])], t);
    let out = restarted.finish_cycle(t, t);
    let batch = restarted.views(&out.fresh);
    // The restored baseline expects the rhythm at once (it then learned one point);
    // a store that restored nothing has no expectation yet.
    let expected = state["instance=\"a\""]["cpu"].expectation(t);
    let restored = batch.views()[0].expectation(0);
    assert!(
        (restored.value - expected.value).abs() < 0.5,
        "{restored:?} vs {expected:?}"
    );
    let mut fresh = GroupStore::new(seasonal_cfg());
    fresh.ingest(0, &[series("a", &[(t, rhythm(t))])], t);
    let out = fresh.finish_cycle(t, t);
    assert_eq!(
        fresh.views(&out.fresh).views()[0].expectation(0),
        Expectation::IDENTITY
    );
    // A baseline of another layout (the period changed) is not restored.
    let mut other = seasonal_cfg();
    other.seasonality.as_mut().unwrap().periods_ms = vec![60_000];
    let mut changed = GroupStore::new(other);
    assert_eq!(
        changed.restore_seasonal(serde_json::from_str(&json).unwrap()),
        0
    );
}
