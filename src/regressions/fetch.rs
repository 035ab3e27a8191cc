//! The Prometheus side of regression checks: which interfaces exist, when the version
//! changed, and the windows themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::try_join_all;

use super::Error;
use crate::config::regressions::{fill_template, MAX_POINTS};
use crate::detect::regress::baseline::{last_change, version_timeline, Change, Range};
use crate::detect::regress::{Kpi, LoadTest};
use crate::reader::{Client, Series};

/// Interface label values of the discovery query's series at `now_ms`.
pub(super) async fn discover(
    client: &Client,
    query: &str,
    label: &str,
    now_ms: i64,
) -> Result<BTreeSet<String>, Error> {
    let r = client
        .query(query, now_ms)
        .await
        .map_err(|source| Error::Query {
            what: "discover".into(),
            query: query.into(),
            source,
        })?;
    Ok(r.series
        .iter()
        .filter_map(|s| s.label(label).map(str::to_string))
        .collect())
}

/// The latest version change, per interface when the version series carry the
/// interface label, else shared by every interface.
#[derive(Debug, Default)]
pub(super) struct VersionChanges {
    shared: Option<Change>,
    per_interface: BTreeMap<String, Change>,
}

impl VersionChanges {
    /// The change that applies to `interface`.
    pub(super) fn get(&self, interface: &str) -> Option<&Change> {
        self.per_interface.get(interface).or(self.shared.as_ref())
    }
}

/// One series of the version query: its version and samples.
type VersionSeries = (String, Vec<(i64, f64)>);

/// Step of the version query: the window step, coarser when the lookback would need
/// more points than Prometheus returns.
fn version_step(step: Duration, lookback: Duration) -> Duration {
    let min_s = lookback.as_secs().div_ceil(MAX_POINTS as u64 - 1);
    step.max(Duration::from_secs(min_s))
}

/// Finds the latest change of `version_label` over `[now − lookback, now]`.
pub(super) async fn version_changes(
    client: &Client,
    query: &str,
    version_label: &str,
    interface_label: &str,
    now_ms: i64,
    lookback: Duration,
    step: Duration,
) -> Result<VersionChanges, Error> {
    let step = version_step(step, lookback);
    let r = client
        .query_range(query, now_ms - lookback.as_millis() as i64, now_ms, step)
        .await
        .map_err(|source| Error::Query {
            what: "version".into(),
            query: query.into(),
            source,
        })?;
    // Version series grouped by interface (`None`: shared by every interface).
    let mut grouped: BTreeMap<Option<String>, Vec<VersionSeries>> = BTreeMap::new();
    for s in &r.series {
        let Some(version) = s.label(version_label) else {
            continue;
        };
        grouped
            .entry(s.label(interface_label).map(str::to_string))
            .or_default()
            .push((version.to_string(), s.samples.clone()));
    }
    let mut out = VersionChanges::default();
    for (interface, series) in grouped {
        let change = last_change(&version_timeline(&series));
        match (interface, change) {
            (None, c) => out.shared = c,
            (Some(i), Some(c)) => {
                out.per_interface.insert(i, c);
            }
            (Some(_), None) => {}
        }
    }
    Ok(out)
}

/// Which column a query fills, for messages and domain checks.
#[derive(Debug, Clone, Copy)]
enum Column {
    Workload,
    Kpi(Kpi),
}

impl Column {
    fn name(self) -> &'static str {
        match self {
            Column::Workload => "workload",
            Column::Kpi(k) => k.name(),
        }
    }

    /// Whether `v` is in the column's domain, and the rule otherwise.
    fn check(self, v: f64) -> Result<(), &'static str> {
        match self {
            Column::Kpi(Kpi::SuccessRate) if !(0.0..=1.0).contains(&v) => {
                Err("a fraction in [0, 1]")
            }
            _ if v < 0.0 => Err("a value >= 0"),
            _ => Ok(()),
        }
    }
}

/// One column on the grid `start, start + step, … ≤ end`: missing points, NaN and ±Inf
/// are gaps (NaN); a value outside the column's domain is an error.
fn column(
    series: &[Series],
    col: Column,
    query: &str,
    label: &str,
    range: Range,
    step_ms: i64,
) -> Result<Vec<f64>, Error> {
    let n = (range.len_ms() / step_ms.max(1) + 1) as usize;
    let mut out = vec![f64::NAN; n];
    match series {
        [] => return Ok(out),
        [s] => {
            for &(t, v) in &s.samples {
                let offset = t - range.start_ms;
                if offset < 0 || offset % step_ms != 0 {
                    continue;
                }
                let Some(slot) = out.get_mut((offset / step_ms) as usize) else {
                    continue;
                };
                if !v.is_finite() {
                    continue;
                }
                col.check(v).map_err(|rule| Error::OutOfRange {
                    what: col.name().into(),
                    query: query.into(),
                    value: v,
                    at_s: t as f64 / 1000.0,
                    rule,
                })?;
                *slot = v;
            }
        }
        many => {
            return Err(Error::TooManySeries {
                what: col.name().into(),
                query: query.into(),
                count: many.len(),
                label: label.into(),
            })
        }
    }
    Ok(out)
}

/// What to fetch for one window: the queries with `$interface` already filled in.
#[derive(Debug, Clone)]
pub(super) struct WindowQueries {
    /// Workload query.
    pub workload: String,
    /// KPI queries.
    pub kpis: Vec<(Kpi, String)>,
}

impl WindowQueries {
    /// Fills the templates for `interface` (templates without `$interface` stay as they are).
    pub(super) fn new(workload: &str, kpis: &[(Kpi, String)], interface: Option<&str>) -> Self {
        let fill = |t: &str| match interface {
            Some(i) => fill_template(t, i),
            None => t.to_string(),
        };
        WindowQueries {
            workload: fill(workload),
            kpis: kpis.iter().map(|(k, q)| (*k, fill(q))).collect(),
        }
    }
}

/// Fetches one window (all its queries concurrently) as a [`LoadTest`].
pub(super) async fn window(
    client: &Client,
    queries: &WindowQueries,
    label: &str,
    range: Range,
    step: Duration,
) -> Result<LoadTest, Error> {
    let step_ms = step.as_millis().max(1) as i64;
    let cols: Vec<(Column, &str)> = std::iter::once((Column::Workload, queries.workload.as_str()))
        .chain(
            queries
                .kpis
                .iter()
                .map(|(k, q)| (Column::Kpi(*k), q.as_str())),
        )
        .collect();
    let fetched = try_join_all(cols.iter().map(|&(col, q)| async move {
        let r = client
            .query_range(q, range.start_ms, range.end_ms, step)
            .await
            .map_err(|source| Error::Query {
                what: col.name().into(),
                query: q.into(),
                source,
            })?;
        column(&r.series, col, q, label, range, step_ms)
    }))
    .await?;
    let n = fetched.first().map_or(0, Vec::len);
    let mut out = LoadTest {
        timestamp: (0..n)
            .map(|i| (range.start_ms + i as i64 * step_ms) as f64 / 1000.0)
            .collect(),
        ..LoadTest::default()
    };
    for ((col, _), values) in cols.into_iter().zip(fetched) {
        match col {
            Column::Workload => out.workload = values,
            Column::Kpi(k) => out.kpis[k.index()] = Some(values),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(samples: &[(i64, f64)]) -> Series {
        Series {
            labels: vec![],
            samples: samples.to_vec(),
        }
    }

    const R: Range = Range {
        start_ms: 10_000,
        end_ms: 14_000,
    };

    #[test]
    fn columns_are_aligned_with_gaps_for_missing_and_non_finite_points() {
        let s = series(&[
            (10_000, 1.0),
            (11_000, f64::NAN),
            (12_500, 9.0), // off the grid
            (13_000, f64::INFINITY),
            (14_000, 2.0),
        ]);
        let c = column(&[s], Column::Workload, "q", "route", R, 1000).unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!((c[0], c[4]), (1.0, 2.0));
        assert!(c[1].is_nan() && c[2].is_nan() && c[3].is_nan());
        let empty = column(&[], Column::Workload, "q", "route", R, 1000).unwrap();
        assert!(empty.iter().all(|v| v.is_nan()), "no series: all gaps");
    }

    #[test]
    fn wrong_domains_and_ambiguous_results_are_errors() {
        let pct = series(&[(10_000, 99.5)]);
        let e = column(&[pct], Column::Kpi(Kpi::SuccessRate), "q", "route", R, 1000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "success_rate query `q` returned 99.5 at 10 s (expected a fraction in [0, 1])"
        );
        assert_eq!(e.cause(), "out_of_range");
        let two = [series(&[]), series(&[])];
        let e = column(&two, Column::Workload, "q", "route", R, 1000).unwrap_err();
        assert!(e.to_string().contains("returned 2 series"), "{e}");
    }

    #[test]
    fn the_version_step_keeps_under_prometheus_limit() {
        let s = Duration::from_secs(1);
        assert_eq!(version_step(s, Duration::from_secs(3600)), s);
        let day = version_step(s, Duration::from_secs(86_400));
        assert!(86_400 / day.as_secs() < MAX_POINTS as u64, "{day:?}");
    }

    #[test]
    fn templates_are_filled_per_interface() {
        let q = WindowQueries::new(
            "sum(users)",
            &[(Kpi::Throughput, r#"rate(x{route="$interface"}[1m])"#.into())],
            Some("search"),
        );
        assert_eq!(q.workload, "sum(users)");
        assert_eq!(q.kpis[0].1, r#"rate(x{route="search"}[1m])"#);
    }
}
