//! Past query answers, fetched in large segments and served back to the cycle in the
//! ranges it asks for, as if Prometheus had been asked at the time.
//!
//! The agent asks, every cycle, for each metric's points since the last fetch. Over a
//! past range those answers do not change with the time they are asked, so a backtest
//! fetches each metric once per segment of [`segment_steps`] steps and
//! slices the answers per cycle. Only the points a later cycle can still ask for are
//! kept: at most `history_points` steps behind the cycle, plus the segment ahead.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cycle::{fetch_chunked, MAX_POINTS_PER_QUERY};
use crate::reader::{self, Client, QueryResult};
use crate::series::Series;

/// Steps per segment at least: short enough that the first replay starts soon and the
/// next segment's fetch overlaps the current one's replay, long enough that queries are
/// few (one per metric and segment).
pub const MIN_SEGMENT_STEPS: i64 = 720;

/// Steps per segment for a group keeping `history_points`: the first segment holds
/// the first cycle's whole window when one query's worth of points allows (a longer
/// window spans segments: the first cycle waits for the second).
pub fn segment_steps(history_points: usize) -> i64 {
    (history_points as i64).clamp(MIN_SEGMENT_STEPS, MAX_POINTS_PER_QUERY - 1)
}

/// A series' label pairs, as Prometheus answered them.
type Labels = Vec<(String, String)>;

/// One metric's kept answers: samples by label set, in time order.
#[derive(Debug, Default)]
struct MetricHistory {
    series: BTreeMap<Labels, Vec<(i64, f64)>>,
}

/// Where one reader's last answers ended, per metric and series (in the history's
/// order). Cycles ask for consecutive ranges, so the next answer starts there: a scan
/// of a step or two instead of a binary search through a segment that is not in cache.
/// Only a hint: after an append or trim moves series, answers stay right.
#[derive(Debug, Default, Clone)]
pub struct Cursor(Vec<Vec<usize>>);

/// The first index at or after which `samples` has timestamps `>= t`, searched from
/// `hint` forwards (a few steps, then a binary search), or before it when `t` is older.
fn seek(samples: &[(i64, f64)], hint: usize, t: i64) -> usize {
    let hint = hint.min(samples.len());
    if hint > 0 && samples[hint - 1].0 >= t {
        return samples[..hint].partition_point(|(ts, _)| *ts < t);
    }
    let near = samples[hint..]
        .iter()
        .take(8)
        .take_while(|(ts, _)| *ts < t)
        .count();
    if near < 8 {
        return hint + near;
    }
    hint + samples[hint..].partition_point(|(ts, _)| *ts < t)
}

/// Every metric's kept answers for one group.
#[derive(Debug)]
pub struct History {
    metrics: Vec<MetricHistory>,
}

/// One segment's answers, as fetched: per metric, the parts of its chunked query.
pub type Segment = Vec<Vec<QueryResult>>;

impl History {
    /// Nothing kept yet, for `metrics` metrics.
    pub fn new(metrics: usize) -> Self {
        History {
            metrics: (0..metrics).map(|_| MetricHistory::default()).collect(),
        }
    }

    /// Adds a fetched segment (its samples are newer than any kept).
    pub fn append(&mut self, segment: Segment) {
        for (m, parts) in self.metrics.iter_mut().zip(segment) {
            for part in parts {
                for s in part.series {
                    m.series.entry(s.labels).or_default().extend(s.samples);
                }
            }
        }
    }

    /// Drops samples older than `oldest_ms`, which no later cycle asks for.
    pub fn trim(&mut self, oldest_ms: i64) {
        for m in &mut self.metrics {
            m.series.retain(|_, samples| {
                let cut = samples.partition_point(|(t, _)| *t < oldest_ms);
                samples.drain(..cut);
                !samples.is_empty()
            });
        }
    }

    /// The answer Prometheus would give for `metric` over `[start_ms, end_ms]`: every
    /// kept series with a sample in the range (series without one are not answered).
    pub fn answer(
        &self,
        metric: usize,
        start_ms: i64,
        end_ms: i64,
        cursor: &mut Cursor,
    ) -> QueryResult {
        let kept = &self.metrics[metric].series;
        if cursor.0.len() <= metric {
            cursor.0.resize(self.metrics.len(), Vec::new());
        }
        let hints = &mut cursor.0[metric];
        hints.resize(kept.len(), 0);
        let series = kept
            .iter()
            .zip(hints.iter_mut())
            .filter_map(|((labels, samples), hint)| {
                let from = seek(samples, *hint, start_ms);
                let to = seek(samples, from, end_ms.saturating_add(1));
                *hint = to;
                (from < to).then(|| Series {
                    labels: labels.clone(),
                    samples: samples[from..to].to_vec(),
                })
            })
            .collect();
        QueryResult {
            series,
            warnings: Vec::new(),
        }
    }

    /// Samples kept, over every metric (for memory accounting).
    pub fn sample_count(&self) -> usize {
        self.metrics
            .iter()
            .flat_map(|m| m.series.values())
            .map(Vec::len)
            .sum()
    }
}

/// Fetches every metric over `[start_ms, end_ms]` (step boundaries), all metrics at
/// once (the client bounds how many queries run together and retries failures).
pub async fn fetch_segment(
    client: &Client,
    promql: &[String],
    start_ms: i64,
    end_ms: i64,
    step: Duration,
) -> Result<Segment, (usize, reader::Error)> {
    let jobs = promql.iter().enumerate().map(|(i, q)| async move {
        fetch_chunked(client, q, start_ms, end_ms, step)
            .await
            .map_err(|e| (i, e))
    });
    futures_util::future::join_all(jobs)
        .await
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, samples: &[(i64, f64)]) -> Series {
        Series {
            labels: vec![("instance".into(), name.into())],
            samples: samples.to_vec(),
        }
    }

    fn result(series: Vec<Series>) -> QueryResult {
        QueryResult {
            series,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn answers_are_the_kept_samples_of_the_range_and_omit_series_without_one() {
        let mut h = History::new(1);
        // One cursor throughout: the hints go stale as series come and go.
        h.append(vec![vec![result(vec![
            series("a", &[(0, 1.0), (10, 2.0), (20, 3.0)]),
            series("b", &[(0, 5.0)]),
        ])]]);
        h.append(vec![vec![result(vec![series("a", &[(30, 4.0)])])]]);
        let c = &mut Cursor::default();
        let r = h.answer(0, 10, 30, c);
        assert_eq!(
            r.series,
            vec![series("a", &[(10, 2.0), (20, 3.0), (30, 4.0)])]
        );
        assert_eq!(h.answer(0, 0, 0, c).series.len(), 2);
        h.trim(15);
        assert_eq!(h.sample_count(), 2);
        assert!(h.answer(0, 0, 10, c).series.is_empty());
    }

    #[test]
    fn seeking_from_a_hint_finds_what_a_binary_search_finds() {
        let samples: Vec<(i64, f64)> = (0..100).map(|i| (i * 10, 0.0)).collect();
        for hint in [0, 3, 50, 99, 100, 500] {
            for t in [-5, 0, 1, 10, 35, 300, 990, 991, 5000] {
                let want = samples.partition_point(|(ts, _)| *ts < t);
                assert_eq!(seek(&samples, hint, t), want, "hint {hint}, t {t}");
            }
        }
    }
}
