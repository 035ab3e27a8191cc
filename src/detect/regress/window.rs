//! Load-test windows: the CSV format, sanity rules and the per-KPI pairs the methods judge.
//!
//! The format is the lab's (`kpiwatch-lab`):
//! `timestamp,workload,response_time,throughput,success_rate` with a header row. Columns
//! may come in any order and extra columns are ignored; a KPI column may be absent when
//! that KPI is not asked for. Empty cells and `NaN` are gaps. `success_rate` is a
//! fraction in `[0, 1]`. Timestamps must increase strictly.
//!
//! A window that cannot be judged is never reported as "no regression": [`prepare`]
//! returns [`Insufficient`] with the reason (too few points, too many gaps, no load).

use std::fmt;

pub use crate::config::judge::Limits;

use super::Kpi;

/// Why a load-test file could not be read at all (as opposed to [`Insufficient`]).
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file has no header row.
    #[error("{path}: the file is empty (expected a header `timestamp,workload,...`)")]
    Empty {
        /// File path.
        path: String,
    },
    /// A required column is missing from the header.
    #[error("{path}: no column `{column}` in the header")]
    MissingColumn {
        /// File path.
        path: String,
        /// Column name.
        column: &'static str,
    },
    /// A cell is not a number.
    #[error("{path}:{line}: column `{column}`: `{value}` is not a number")]
    BadNumber {
        /// File path.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Column name.
        column: String,
        /// Offending text.
        value: String,
    },
    /// A row has fewer cells than the header.
    #[error("{path}:{line}: {got} cells, the header has {want}")]
    ShortRow {
        /// File path.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Cells present.
        got: usize,
        /// Cells expected.
        want: usize,
    },
    /// Timestamps do not increase.
    #[error("{path}:{line}: timestamp {ts} does not increase")]
    Unordered {
        /// File path.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Offending timestamp.
        ts: f64,
    },
    /// A value is outside the KPI's domain (negative load or latency, success rate > 1).
    #[error("{path}:{line}: column `{column}`: {value} is out of range ({rule})")]
    OutOfRange {
        /// File path.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Column name.
        column: &'static str,
        /// Offending value.
        value: f64,
        /// What the value must satisfy.
        rule: &'static str,
    },
}

/// One load test (or one Prometheus window of an interface): workload and KPI columns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadTest {
    /// Seconds (any epoch), strictly increasing.
    pub timestamp: Vec<f64>,
    /// Load context: virtual users or request rate. `NaN` = gap.
    pub workload: Vec<f64>,
    /// KPI columns in [`Kpi::ALL`] order; `None` when the file has no such column.
    pub kpis: [Option<Vec<f64>>; 3],
}

impl LoadTest {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.timestamp.len()
    }

    /// `true` when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.timestamp.is_empty()
    }

    /// The column of `kpi`, if present.
    pub fn kpi(&self, kpi: Kpi) -> Option<&[f64]> {
        self.kpis[kpi.index()].as_deref()
    }

    /// Parses CSV text (the caller reads the file); `name` is used in error messages.
    pub fn parse_csv(text: &str, name: &str) -> Result<Self, WindowError> {
        let rows = crate::dataset::split_rows(text)
            .ok_or_else(|| WindowError::Empty { path: name.into() })?;
        let cols = rows.header;
        let find = |c: &'static str| cols.iter().position(|h| *h == c);
        let missing = |column| WindowError::MissingColumn {
            path: name.into(),
            column,
        };
        let ts_col = find("timestamp").ok_or_else(|| missing("timestamp"))?;
        let wl_col = find("workload").ok_or_else(|| missing("workload"))?;
        let kpi_cols: Vec<Option<usize>> = Kpi::ALL.iter().map(|k| find(k.name())).collect();
        let mut out = LoadTest {
            kpis: [
                kpi_cols[0].map(|_| Vec::new()),
                kpi_cols[1].map(|_| Vec::new()),
                kpi_cols[2].map(|_| Vec::new()),
            ],
            ..Default::default()
        };
        for (lineno, cells) in rows.rows {
            if cells.len() < cols.len() {
                return Err(WindowError::ShortRow {
                    path: name.into(),
                    line: lineno,
                    got: cells.len(),
                    want: cols.len(),
                });
            }
            let num = |c: usize| parse_cell(cells[c], name, lineno, cols[c]);
            let ts = num(ts_col)?;
            if !ts.is_finite() || out.timestamp.last().is_some_and(|&prev| ts <= prev) {
                return Err(WindowError::Unordered {
                    path: name.into(),
                    line: lineno,
                    ts,
                });
            }
            out.timestamp.push(ts);
            let wl = num(wl_col)?;
            check_range(wl, "workload", name, lineno)?;
            out.workload.push(wl);
            for (k, col) in Kpi::ALL.iter().zip(&kpi_cols) {
                if let Some(c) = col {
                    let v = num(*c)?;
                    check_range(v, k.name(), name, lineno)?;
                    if let Some(vec) = out.kpis[k.index()].as_mut() {
                        vec.push(v);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn parse_cell(cell: &str, path: &str, line: usize, column: &str) -> Result<f64, WindowError> {
    crate::dataset::parse_number(cell).ok_or_else(|| WindowError::BadNumber {
        path: path.into(),
        line,
        column: column.into(),
        value: cell.into(),
    })
}

fn check_range(v: f64, column: &'static str, path: &str, line: usize) -> Result<(), WindowError> {
    let (ok, rule) = match column {
        "success_rate" => (
            v.is_nan() || (0.0..=1.0).contains(&v),
            "a fraction in [0, 1]",
        ),
        _ => (v.is_nan() || (v >= 0.0 && v.is_finite()), "finite and >= 0"),
    };
    if ok {
        Ok(())
    } else {
        Err(WindowError::OutOfRange {
            path: path.into(),
            line,
            column,
            value: v,
            rule,
        })
    }
}

/// Why a KPI pair was not judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insufficient(pub String);

impl fmt::Display for Insufficient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One window of one KPI with its workload, gaps removed (rows kept in time order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Workload at each kept row.
    pub workload: Vec<f64>,
    /// KPI at each kept row.
    pub kpi: Vec<f64>,
}

/// Baseline and current series of one KPI, ready for a method.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiPair {
    /// Which KPI.
    pub kpi: Kpi,
    /// Baseline window.
    pub baseline: Series,
    /// Current window.
    pub current: Series,
}

/// Extracts and checks one KPI of both windows.
pub(crate) fn prepare(
    kpi: Kpi,
    baseline: &LoadTest,
    current: &LoadTest,
    limits: &Limits,
) -> Result<KpiPair, Insufficient> {
    let b = series(kpi, baseline, limits, "baseline")?;
    let c = series(kpi, current, limits, "current")?;
    Ok(KpiPair {
        kpi,
        baseline: b,
        current: c,
    })
}

fn series(kpi: Kpi, w: &LoadTest, limits: &Limits, which: &str) -> Result<Series, Insufficient> {
    let Some(values) = w.kpi(kpi) else {
        return Err(Insufficient(format!(
            "the {which} window has no {} column",
            kpi.name()
        )));
    };
    let n = w.len();
    if n == 0 {
        return Err(Insufficient(format!("the {which} window is empty")));
    }
    let mut out = Series::default();
    let (mut gaps, mut run, mut longest) = (0usize, 0usize, 0usize);
    for (&wl, &v) in w.workload.iter().zip(values) {
        if wl.is_nan() || v.is_nan() {
            gaps += 1;
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
            out.workload.push(wl);
            out.kpi.push(v);
        }
    }
    if out.kpi.len() < limits.min_points {
        return Err(Insufficient(format!(
            "the {which} window has {} usable {} points, at least {} are needed",
            out.kpi.len(),
            kpi.name(),
            limits.min_points
        )));
    }
    if gaps as f64 > limits.max_gap_fraction * n as f64 {
        return Err(Insufficient(format!(
            "the {which} window has {gaps} gap rows of {n} for {} (more than {:.0}%)",
            kpi.name(),
            limits.max_gap_fraction * 100.0
        )));
    }
    if longest > limits.max_gap_run {
        return Err(Insufficient(format!(
            "the {which} window has a run of {longest} gap rows for {} (at most {} allowed)",
            kpi.name(),
            limits.max_gap_run
        )));
    }
    if out.workload.iter().all(|&x| x <= 0.0) {
        return Err(Insufficient(format!(
            "the {which} window has zero workload throughout"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(rows: &[(f64, f64, f64)]) -> String {
        let mut s = String::from("timestamp,workload,response_time,throughput,success_rate\n");
        for (i, (w, rt, tps)) in rows.iter().enumerate() {
            s.push_str(&format!("{i},{w},{rt},{tps},1.0\n"));
        }
        s
    }

    fn steady(n: usize) -> Vec<(f64, f64, f64)> {
        (0..n)
            .map(|i| (10.0, 0.1 + (i % 3) as f64 * 0.01, 50.0))
            .collect()
    }

    #[test]
    fn parses_columns_in_any_order_with_gaps() {
        let t = LoadTest::parse_csv(
            "workload,timestamp,extra,response_time\n5,1,x,0.2\n6,2,y,NaN\n7,3,z,\n",
            "t",
        )
        .unwrap();
        assert_eq!(t.timestamp, vec![1.0, 2.0, 3.0]);
        assert_eq!(t.workload, vec![5.0, 6.0, 7.0]);
        let rt = t.kpi(Kpi::ResponseTime).unwrap();
        assert_eq!(rt[0], 0.2);
        assert!(rt[1].is_nan() && rt[2].is_nan());
        assert!(t.kpi(Kpi::Throughput).is_none());
    }

    #[test]
    fn rejects_malformed_files() {
        assert!(matches!(
            LoadTest::parse_csv("", "f"),
            Err(WindowError::Empty { .. })
        ));
        assert!(matches!(
            LoadTest::parse_csv("timestamp,response_time\n1,2\n", "f"),
            Err(WindowError::MissingColumn {
                column: "workload",
                ..
            })
        ));
        let e = LoadTest::parse_csv("timestamp,workload\n1,abc\n", "f").unwrap_err();
        assert_eq!(
            e.to_string(),
            "f:2: column `workload`: `abc` is not a number"
        );
        assert!(matches!(
            LoadTest::parse_csv("timestamp,workload\n2,1\n1,1\n", "f"),
            Err(WindowError::Unordered { line: 3, .. })
        ));
        assert!(matches!(
            LoadTest::parse_csv("timestamp,workload,success_rate\n1,1,97\n", "f"),
            Err(WindowError::OutOfRange {
                column: "success_rate",
                ..
            })
        ));
        assert!(matches!(
            LoadTest::parse_csv("timestamp,workload,throughput\n1,1\n", "f"),
            Err(WindowError::ShortRow { .. })
        ));
    }

    #[test]
    fn insufficient_windows_say_why() {
        let limits = Limits::default();
        let good = LoadTest::parse_csv(&csv(&steady(60)), "g").unwrap();
        assert!(prepare(Kpi::ResponseTime, &good, &good, &limits).is_ok());

        let short = LoadTest::parse_csv(&csv(&steady(10)), "s").unwrap();
        let why = prepare(Kpi::ResponseTime, &good, &short, &limits).unwrap_err();
        assert!(why.0.contains("current window has 10 usable"), "{why}");

        let header_only = LoadTest::parse_csv(&csv(&[]), "h").unwrap();
        let why = prepare(Kpi::Throughput, &header_only, &good, &limits).unwrap_err();
        assert!(why.0.contains("baseline window is empty"), "{why}");

        let mut idle = steady(60);
        idle.iter_mut().for_each(|r| r.0 = 0.0);
        let idle = LoadTest::parse_csv(&csv(&idle), "i").unwrap();
        let why = prepare(Kpi::Throughput, &good, &idle, &limits).unwrap_err();
        assert!(why.0.contains("zero workload throughout"), "{why}");

        let mut holes = steady(100);
        (20..55).for_each(|i| holes[i].1 = f64::NAN);
        let holes = LoadTest::parse_csv(&csv(&holes), "n").unwrap();
        let why = prepare(Kpi::ResponseTime, &good, &holes, &limits).unwrap_err();
        assert!(why.0.contains("gap rows"), "{why}");
        // The same holes do not matter for a KPI that has none.
        assert!(prepare(Kpi::Throughput, &good, &holes, &limits).is_ok());
    }
}
