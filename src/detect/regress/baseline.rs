//! Which windows to compare: baseline selection per mode, and version-change detection.
//!
//! Pure functions over timestamps (milliseconds since the Unix epoch) and version
//! samples; the agent (`crate::regressions`) fetches the data and calls them. Three
//! modes (DESIGN.md, "Baselines in Prometheus terms"):
//!
//! * **version change**: the baseline is the window *before* the latest change of a
//!   version label, the current window the one *after* it. The change lies between the
//!   last sample of the old version (`last_old_ms`) and the first sample of the new one
//!   (`first_new_ms`), so neither window contains the other version. The current window
//!   grows from the change until it reaches the configured length; it is judged as soon
//!   as it is at least the minimum length, and its verdict is final once full.
//! * **offset**: the same window a day (or a week, any offset) earlier.
//! * **pinned**: a fixed baseline range, compared with the latest window.

use std::collections::BTreeMap;

pub(crate) use crate::config::judge::Range;

/// The latest change of version in a timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// Version before the change.
    pub from: String,
    /// Version after the change.
    pub to: String,
    /// First sample of the old version's uninterrupted run (the baseline cannot start
    /// earlier: before it, yet another version ran).
    pub old_since_ms: i64,
    /// Last sample of the old version.
    pub last_old_ms: i64,
    /// First sample of the new version.
    pub first_new_ms: i64,
}

/// Merges the series of a version query into a timeline: at each timestamp, the
/// versions that have a (non-NaN) sample, sorted and joined with `+` (a rolling
/// deployment where two versions run at once is a version of its own). Input: one
/// `(version, samples)` per series; series with the same version are merged.
pub(crate) fn version_timeline(series: &[(String, Vec<(i64, f64)>)]) -> Vec<(i64, String)> {
    let mut at: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (version, samples) in series {
        for &(t, v) in samples {
            if !v.is_nan() {
                at.entry(t).or_default().push(version.as_str());
            }
        }
    }
    at.into_iter()
        .map(|(t, mut vs)| {
            vs.sort_unstable();
            vs.dedup();
            (t, vs.join("+"))
        })
        .collect()
}

/// The latest change in a timeline sorted by time (see [`version_timeline`]); `None`
/// when the version never changes. Gaps (no sample at all) are not changes: a version
/// that disappears and comes back is the same deployment.
pub(crate) fn last_change(timeline: &[(i64, String)]) -> Option<Change> {
    let idx = timeline.windows(2).rposition(|w| w[0].1 != w[1].1)?;
    let (last_old_ms, from) = &timeline[idx];
    let (first_new_ms, to) = &timeline[idx + 1];
    // Walk back over the old version's run.
    let run_start = timeline[..=idx]
        .iter()
        .rposition(|(_, v)| v != from)
        .map_or(0, |i| i + 1);
    Some(Change {
        from: from.clone(),
        to: to.clone(),
        old_since_ms: timeline[run_start].0,
        last_old_ms: *last_old_ms,
        first_new_ms: *first_new_ms,
    })
}

/// What to do for one interface at one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Compare these windows. `complete` is true when the current window has reached
    /// its full length: its verdict will not change any more.
    Judge {
        /// Baseline range.
        baseline: Range,
        /// Current range.
        current: Range,
        /// The current window is full (version change) or fixed (other modes).
        complete: bool,
    },
    /// The current window after a version change is still shorter than the minimum.
    Wait {
        /// Current window so far, ms.
        have_ms: i64,
        /// Minimum, ms.
        need_ms: i64,
    },
}

/// Windows around a version change at time `now_ms`. The baseline is the last
/// `window_ms` of the old version (shorter when the old version ran less: the
/// comparison then reports insufficient data if it is below the minimum); the current
/// window starts `settle_ms` after the new version's first sample (rollout, warm-up,
/// and `rate()` ranges that still span the change belong to neither window) and is at
/// most `window_ms` long.
pub(crate) fn version_change_plan(
    change: &Change,
    now_ms: i64,
    window_ms: i64,
    min_ms: i64,
    settle_ms: i64,
) -> Plan {
    let current_start = change.first_new_ms + settle_ms;
    let have_ms = now_ms - current_start;
    if have_ms < min_ms {
        return Plan::Wait {
            have_ms: have_ms.max(0),
            need_ms: min_ms,
        };
    }
    let baseline = Range {
        start_ms: change.old_since_ms.max(change.last_old_ms - window_ms),
        end_ms: change.last_old_ms,
    };
    let complete = have_ms >= window_ms;
    let current = Range {
        start_ms: current_start,
        end_ms: current_start + have_ms.min(window_ms),
    };
    Plan::Judge {
        baseline,
        current,
        complete,
    }
}

/// The latest window and the same window `offset_ms` earlier.
pub(crate) fn offset_plan(now_ms: i64, window_ms: i64, offset_ms: i64) -> Plan {
    let current = Range {
        start_ms: now_ms - window_ms,
        end_ms: now_ms,
    };
    Plan::Judge {
        baseline: Range {
            start_ms: current.start_ms - offset_ms,
            end_ms: current.end_ms - offset_ms,
        },
        current,
        complete: true,
    }
}

/// The latest window against a fixed baseline.
pub(crate) fn pinned_plan(now_ms: i64, window_ms: i64, baseline: Range) -> Plan {
    Plan::Judge {
        baseline,
        current: Range {
            start_ms: now_ms - window_ms,
            end_ms: now_ms,
        },
        complete: true,
    }
}

/// Aligns `t_ms` down to a multiple of `step_ms`, so that successive evaluations ask
/// Prometheus for the same grid (and cached baselines keep their key).
pub(crate) fn align_down(t_ms: i64, step_ms: i64) -> i64 {
    t_ms - t_ms.rem_euclid(step_ms.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(points: &[(i64, &str)]) -> Vec<(i64, String)> {
        points.iter().map(|(t, v)| (*t, v.to_string())).collect()
    }

    #[test]
    fn timeline_merges_series_and_marks_overlaps() {
        let series = vec![
            ("v1".to_string(), vec![(1, 1.0), (2, 1.0), (3, 1.0)]),
            ("v2".to_string(), vec![(3, 1.0), (4, 1.0), (5, f64::NAN)]),
        ];
        assert_eq!(
            version_timeline(&series),
            tl(&[(1, "v1"), (2, "v1"), (3, "v1+v2"), (4, "v2")])
        );
    }

    #[test]
    fn finds_the_latest_change_and_the_old_versions_run() {
        let t = tl(&[
            (0, "v0"),
            (10, "v1"),
            (20, "v1"),
            (30, "v1"),
            // a gap (no sample at 40) is not a change
            (50, "v1"),
            (60, "v2"),
            (70, "v2"),
        ]);
        let c = last_change(&t).expect("a change");
        assert_eq!(
            c,
            Change {
                from: "v1".into(),
                to: "v2".into(),
                old_since_ms: 10,
                last_old_ms: 50,
                first_new_ms: 60,
            }
        );
        assert_eq!(last_change(&tl(&[(0, "v1"), (1, "v1")])), None);
        assert_eq!(last_change(&[]), None);
    }

    #[test]
    fn version_change_waits_then_grows_then_completes() {
        let c = Change {
            from: "v1".into(),
            to: "v2".into(),
            old_since_ms: 0,
            last_old_ms: 100_000,
            first_new_ms: 101_000,
        };
        // 10 s after the change, minimum 20 s: wait.
        assert_eq!(
            version_change_plan(&c, 111_000, 30_000, 20_000, 0),
            Plan::Wait {
                have_ms: 10_000,
                need_ms: 20_000
            }
        );
        // 25 s: judged on a partial current window, baseline = the last 30 s of v1.
        assert_eq!(
            version_change_plan(&c, 126_000, 30_000, 20_000, 0),
            Plan::Judge {
                baseline: Range {
                    start_ms: 70_000,
                    end_ms: 100_000
                },
                current: Range {
                    start_ms: 101_000,
                    end_ms: 126_000
                },
                complete: false,
            }
        );
        // Long after: the current window stops at its full length and is final.
        let Plan::Judge {
            current, complete, ..
        } = version_change_plan(&c, 500_000, 30_000, 20_000, 0)
        else {
            panic!("expected a judgement");
        };
        assert_eq!(current.end_ms, 131_000);
        assert!(complete);
        // With 5 s of settling, the current window starts later and needs 5 s more.
        assert!(matches!(
            version_change_plan(&c, 121_000, 30_000, 20_000, 5_000),
            Plan::Wait {
                have_ms: 15_000,
                ..
            }
        ));
        let Plan::Judge { current, .. } = version_change_plan(&c, 500_000, 30_000, 20_000, 5_000)
        else {
            panic!("expected a judgement");
        };
        assert_eq!((current.start_ms, current.end_ms), (106_000, 136_000));
    }

    #[test]
    fn the_baseline_never_reaches_into_the_version_before() {
        let c = Change {
            from: "v1".into(),
            to: "v2".into(),
            old_since_ms: 90_000,
            last_old_ms: 100_000,
            first_new_ms: 101_000,
        };
        let Plan::Judge { baseline, .. } = version_change_plan(&c, 200_000, 30_000, 20_000, 0)
        else {
            panic!("expected a judgement");
        };
        assert_eq!(baseline.start_ms, 90_000, "v1 ran only 10 s");
    }

    #[test]
    fn offset_and_pinned_windows() {
        let day = 86_400_000;
        assert_eq!(
            offset_plan(day + 60_000, 60_000, day),
            Plan::Judge {
                baseline: Range {
                    start_ms: 0,
                    end_ms: 60_000
                },
                current: Range {
                    start_ms: day,
                    end_ms: day + 60_000
                },
                complete: true,
            }
        );
        let pinned = Range {
            start_ms: 5,
            end_ms: 9,
        };
        let Plan::Judge {
            baseline, current, ..
        } = pinned_plan(1_000, 100, pinned)
        else {
            panic!("expected a judgement");
        };
        assert_eq!((baseline, current.start_ms), (pinned, 900));
        assert_eq!(align_down(12_345, 1_000), 12_000);
        assert_eq!(align_down(-1, 1_000), -1_000);
    }
}
