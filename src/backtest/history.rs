//! Past query answers, fetched in large segments and served back to the cycle in the
//! ranges it asks for, as if Prometheus had been asked at the time.
//!
//! The agent asks, every cycle, for each metric's points since the last fetch. Over a
//! past range those answers do not change with the time they are asked, so a backtest
//! fetches each metric once per segment of up to [`MAX_POINTS_PER_QUERY`] steps and
//! slices the answers per cycle. Only the points a later cycle can still ask for are
//! kept: at most `history_points` steps behind the cycle, plus the segment ahead.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::cycle::{fetch_chunked, MAX_POINTS_PER_QUERY};
use crate::reader::{self, Client, QueryResult};
use crate::series::Series;

/// Steps per segment: one query per metric and segment.
pub const SEGMENT_STEPS: i64 = MAX_POINTS_PER_QUERY - 1;

/// A series' label pairs, as Prometheus answered them.
type Labels = Vec<(String, String)>;

/// One metric's kept answers: samples by label set, in time order.
#[derive(Debug, Default)]
struct MetricHistory {
    series: BTreeMap<Labels, Vec<(i64, f64)>>,
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
    pub fn answer(&self, metric: usize, start_ms: i64, end_ms: i64) -> QueryResult {
        let series = self.metrics[metric]
            .series
            .iter()
            .filter_map(|(labels, samples)| {
                let from = samples.partition_point(|(t, _)| *t < start_ms);
                let to = samples.partition_point(|(t, _)| *t <= end_ms);
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
        h.append(vec![vec![result(vec![
            series("a", &[(0, 1.0), (10, 2.0), (20, 3.0)]),
            series("b", &[(0, 5.0)]),
        ])]]);
        h.append(vec![vec![result(vec![series("a", &[(30, 4.0)])])]]);
        let r = h.answer(0, 10, 30);
        assert_eq!(
            r.series,
            vec![series("a", &[(10, 2.0), (20, 3.0), (30, 4.0)])]
        );
        assert_eq!(h.answer(0, 0, 0).series.len(), 2);
        h.trim(15);
        assert_eq!(h.sample_count(), 2);
        assert!(h.answer(0, 0, 10).series.is_empty());
    }
}
