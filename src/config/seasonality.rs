//! `groups[].seasonality*` and `groups[].gates`: the seasonal baseline's settings and
//! the noise gates per metric, validated (see [`crate::seasonal`] for what they do).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{format_duration, parse_duration};

/// Default patience before a level shift is adopted.
pub const DEFAULT_ADAPT_AFTER: Duration = Duration::from_secs(3 * 3600);
/// The default learning history is this many times the longest period.
pub const DEFAULT_HISTORY_PERIODS: u32 = 4;
/// The learning history must cover at least this many of the longest period.
pub const MIN_HISTORY_PERIODS: u32 = 2;

/// The validated seasonal baseline of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalityConfig {
    /// Periods, shortest first, each a multiple of the group's step.
    pub periods: Vec<Duration>,
    /// How far back the baseline is learned from Prometheus at start.
    pub history: Duration,
    /// How long a level shift lasts before the baseline adopts it.
    pub adapt_after: Duration,
}

/// `groups[].gates.<metric>:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGate {
    /// Which deviations matter: up, down or both (default both).
    pub direction: Option<String>,
    /// Smallest deviation that matters, in the metric's units (default 0).
    pub min_deviation: Option<f64>,
    /// Smallest deviation that matters, as a fraction of the expected value (default 0).
    pub min_relative_deviation: Option<f64>,
}

/// Which side of the expected value matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Only values above the expected value.
    Up,
    /// Only values below it.
    Down,
    /// Both (the default).
    #[default]
    Both,
}

/// A noise gate: deviations it holds back cannot raise a metric's contribution to a
/// score above 1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gate {
    /// Which side matters.
    pub direction: Direction,
    /// Smallest absolute deviation that matters, metric units.
    pub min_deviation: f64,
    /// Smallest deviation that matters, as a fraction of `|expected|`.
    pub min_relative_deviation: f64,
}

impl Gate {
    /// The gate that lets every deviation through.
    pub const OPEN: Gate = Gate {
        direction: Direction::Both,
        min_deviation: 0.0,
        min_relative_deviation: 0.0,
    };

    /// `true` when a value `deviation` away from `expected` (metric units) is held
    /// back: on the side that does not matter, or smaller than both minimums allow.
    pub fn holds_back(&self, deviation: f64, expected: f64) -> bool {
        if !deviation.is_finite() {
            return false;
        }
        let wrong_side = match self.direction {
            Direction::Up => deviation < 0.0,
            Direction::Down => deviation > 0.0,
            Direction::Both => false,
        };
        let smallest = self
            .min_deviation
            .max(self.min_relative_deviation * expected.abs());
        wrong_side || deviation.abs() < smallest
    }

    /// `true` for [`Gate::OPEN`].
    pub fn is_open(&self) -> bool {
        *self == Gate::OPEN
    }
}

/// Validates the seasonality keys of a group; errors as `(key, message)`.
pub(super) fn validate_seasonality(
    periods: Option<&[String]>,
    history: Option<&str>,
    adapt_after: Option<&str>,
    step: Duration,
    key: &str,
    errs: &mut Vec<(String, String)>,
) -> Option<SeasonalityConfig> {
    let Some(periods) = periods else {
        for (k, v) in [
            ("seasonality_history", history),
            ("seasonality_adapt_after", adapt_after),
        ] {
            if v.is_some() {
                errs.push((format!("{key}.{k}"), "only applies with seasonality".into()));
            }
        }
        return None;
    };
    let step_ms = step.as_millis().max(1);
    let mut parsed = Vec::new();
    for (i, p) in periods.iter().enumerate() {
        let k = format!("{key}.seasonality[{i}]");
        match parse_duration(p) {
            Ok(d) if d.as_millis() < 2 * step_ms || !d.as_millis().is_multiple_of(step_ms) => {
                errs.push((
                    k,
                    format!(
                        "{p:?} is not a multiple of step = {} of at least two steps (expected e.g. 1d, 1w, or 10m for a lab)",
                        format_duration(step)
                    ),
                ));
            }
            Ok(d) => parsed.push(d),
            Err(e) => errs.push((k, e)),
        }
    }
    if periods.is_empty() {
        errs.push((
            format!("{key}.seasonality"),
            "is empty (expected periods such as [1d, 1w], or no key for no seasonality)".into(),
        ));
    }
    parsed.sort();
    parsed.dedup();
    let longest = parsed.last().copied().unwrap_or(step);
    let history = match history.map(parse_duration) {
        None => longest * DEFAULT_HISTORY_PERIODS,
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            errs.push((format!("{key}.seasonality_history"), e));
            longest * DEFAULT_HISTORY_PERIODS
        }
    };
    if history < longest * MIN_HISTORY_PERIODS {
        errs.push((
            format!("{key}.seasonality_history"),
            format!(
                "{} is too short for the period {} (expected at least {MIN_HISTORY_PERIODS} periods, {})",
                format_duration(history),
                format_duration(longest),
                format_duration(longest * MIN_HISTORY_PERIODS)
            ),
        ));
    }
    let adapt_after = match adapt_after.map(parse_duration) {
        None => DEFAULT_ADAPT_AFTER,
        Some(Ok(d)) if d < step => {
            errs.push((
                format!("{key}.seasonality_adapt_after"),
                format!("{} is shorter than one step", format_duration(d)),
            ));
            d
        }
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            errs.push((format!("{key}.seasonality_adapt_after"), e));
            DEFAULT_ADAPT_AFTER
        }
    };
    Some(SeasonalityConfig {
        periods: parsed,
        history,
        adapt_after,
    })
}

/// Validates `groups[].gates` against the group's metric names.
pub(super) fn validate_gates(
    raw: BTreeMap<String, RawGate>,
    metrics: &[String],
    key: &str,
    errs: &mut Vec<(String, String)>,
) -> BTreeMap<String, Gate> {
    let mut gates = BTreeMap::new();
    for (name, g) in raw {
        let k = format!("{key}.gates.{name}");
        if !metrics.contains(&name) {
            errs.push((
                k.clone(),
                format!("{name:?} is not a metric of this group (expected one of {metrics:?})"),
            ));
        }
        let direction = match g.direction.as_deref() {
            None | Some("both") => Direction::Both,
            Some("up") => Direction::Up,
            Some("down") => Direction::Down,
            Some(other) => {
                errs.push((
                    format!("{k}.direction"),
                    format!("{other:?} is not a direction (expected up, down or both)"),
                ));
                Direction::Both
            }
        };
        let mut amount = |field: &str, v: Option<f64>| {
            let v = v.unwrap_or(0.0);
            if !v.is_finite() || v < 0.0 {
                errs.push((
                    format!("{k}.{field}"),
                    format!("{v} is not a deviation (expected a number >= 0)"),
                ));
                return 0.0;
            }
            v
        };
        let gate = Gate {
            direction,
            min_deviation: amount("min_deviation", g.min_deviation),
            min_relative_deviation: amount("min_relative_deviation", g.min_relative_deviation),
        };
        gates.insert(name, gate);
    }
    gates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_hold_back_the_side_and_size_that_do_not_matter() {
        let latency = Gate {
            direction: Direction::Up,
            min_deviation: 0.0,
            min_relative_deviation: 0.2,
        };
        assert!(latency.holds_back(-50.0, 100.0));
        assert!(latency.holds_back(19.0, 100.0));
        assert!(!latency.holds_back(21.0, 100.0));
        let errors = Gate {
            direction: Direction::Up,
            min_deviation: 0.01,
            min_relative_deviation: 0.0,
        };
        assert!(errors.holds_back(0.005, 0.0));
        assert!(!errors.holds_back(0.02, 0.0));
        assert!(!Gate::OPEN.holds_back(-1e-9, 5.0));
        assert!(!Gate::OPEN.holds_back(f64::NAN, 5.0));
    }

    #[test]
    fn periods_must_be_multiples_of_the_step_and_history_must_cover_two() {
        let mut errs = Vec::new();
        let s = validate_seasonality(
            Some(&["1d".into(), "7m".into(), "1x".into()]),
            Some("1d"),
            None,
            Duration::from_secs(120),
            "groups[0]",
            &mut errs,
        )
        .unwrap();
        assert_eq!(s.periods, vec![Duration::from_secs(86_400)]);
        let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "groups[0].seasonality[1]",
                "groups[0].seasonality[2]",
                "groups[0].seasonality_history"
            ]
        );
        let mut errs = Vec::new();
        let s = validate_seasonality(
            Some(&["10m".into()]),
            None,
            None,
            Duration::from_secs(5),
            "g",
            &mut errs,
        )
        .unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(s.history, Duration::from_secs(2400));
        assert_eq!(s.adapt_after, DEFAULT_ADAPT_AFTER);
    }
}
