//! Options of the regression judge (`detect::regress`): the KPIs, the methods, the
//! settings of one comparison and the model's file names. Plain data beside the config,
//! so that `config::regressions` describes a check without reading a detector.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A key performance indicator of an interface. Written in full (`response_time`); the
/// lab's scenarios and datasets also use the short names (`rt`, `tps`, `sr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kpi {
    /// Mean response time (seconds or any unit, consistently in both windows).
    #[serde(alias = "rt")]
    ResponseTime,
    /// Successful requests per second.
    #[serde(alias = "tps")]
    Throughput,
    /// Fraction of successful requests, in `[0, 1]`.
    #[serde(alias = "sr")]
    SuccessRate,
}

impl Kpi {
    /// All KPIs, in CSV column order.
    pub const ALL: [Kpi; 3] = [Kpi::ResponseTime, Kpi::Throughput, Kpi::SuccessRate];

    /// Column name and JSON key.
    pub fn name(self) -> &'static str {
        match self {
            Kpi::ResponseTime => "response_time",
            Kpi::Throughput => "throughput",
            Kpi::SuccessRate => "success_rate",
        }
    }

    /// The short name of the lab's datasets (`rt_regressed`, …).
    pub fn short(self) -> &'static str {
        match self {
            Kpi::ResponseTime => "rt",
            Kpi::Throughput => "tps",
            Kpi::SuccessRate => "sr",
        }
    }

    /// Position in [`Kpi::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kpi {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kpi::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            format!("unknown KPI `{s}` (expected response_time, throughput or success_rate)")
        })
    }
}

/// How a KPI pair is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// DynamicRegress Siamese LSTM (needs the model).
    Siamese,
    /// Two-sample Kolmogorov–Smirnov test on the KPI values.
    Ks,
    /// Mann–Whitney U test on the KPI values.
    Mwu,
    /// Workload-matched comparison: effect size and a stratified rank test where the
    /// two windows' loads overlap (`detect::regress::matched`).
    Matched,
}

impl Method {
    /// The JSON / CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Method::Siamese => "siamese",
            Method::Ks => "ks",
            Method::Mwu => "mwu",
            Method::Matched => "matched",
        }
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "siamese" => Ok(Method::Siamese),
            "ks" => Ok(Method::Ks),
            "mwu" => Ok(Method::Mwu),
            "matched" => Ok(Method::Matched),
            _ => Err(format!(
                "unknown method `{s}` (expected siamese, matched, ks or mwu)"
            )),
        }
    }
}

/// Default minimum effects of the matched method: response time, throughput, success
/// rate (relative; `0.02` of a success rate near 1 is two percentage points). Chosen on
/// the lab's selection pairs (docs/regression-judging.md).
pub const DEFAULT_MIN_EFFECT: [f64; 3] = [0.20, 0.20, 0.02];

/// Settings of one comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Method.
    pub method: Method,
    /// KPIs to judge (the interface verdict covers exactly these).
    pub kpis: Vec<Kpi>,
    /// Significance level of KS / MWU: `p < alpha` is a regression.
    pub alpha: f64,
    /// Siamese decision threshold: `probability >= threshold` is a regression.
    pub threshold: f64,
    /// Smallest relative change in the bad direction at matched load that the matched
    /// method calls a regression, per KPI (indexed by [`Kpi::index`]).
    pub min_effect: [f64; 3],
    /// Insufficient-data rules.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            method: Method::Matched,
            kpis: Kpi::ALL.to_vec(),
            alpha: 0.05,
            threshold: 0.5,
            min_effect: DEFAULT_MIN_EFFECT,
            limits: Limits::default(),
        }
    }
}

/// Limits under which a KPI pair is "insufficient data" instead of judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Fewest usable (non-gap) points each window must have.
    pub min_points: usize,
    /// Largest share of gap rows (workload or KPI `NaN`) a window may have.
    pub max_gap_fraction: f64,
    /// Longest run of consecutive gap rows a window may have.
    pub max_gap_run: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_points: 20,
            max_gap_fraction: 0.2,
            max_gap_run: 30,
        }
    }
}

/// A closed time range `[start_ms, end_ms]` of sample timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Range {
    /// First timestamp, ms.
    pub start_ms: i64,
    /// Last timestamp, ms (`>= start_ms`).
    pub end_ms: i64,
}

impl Range {
    /// Length in milliseconds.
    pub fn len_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// File name of the encoder inside a model directory.
pub const ENCODER_FILE: &str = "regress_encoder.onnx";
/// File name of the head inside a model directory.
pub const HEAD_FILE: &str = "regress_head.onnx";
