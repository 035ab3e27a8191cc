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
        fill,
        shard: ShardFilter(Shard::All),
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
        .to_vec()
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
