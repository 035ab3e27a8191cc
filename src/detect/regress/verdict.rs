//! The result of a comparison: per-KPI outcomes, the interface verdict and its JSON form.
//!
//! The rule is the paper's expert rule: **an interface regressed if any of its KPIs
//! did**. A KPI that could not be judged never counts as "normal": when no judged KPI
//! regressed and at least one could not be judged, the verdict is `insufficient_data`.
//!
//! JSON (what `kpiwatch regress` prints and the canary API returns):
//!
//! ```json
//! {"method": "siamese", "verdict": "regression",
//!  "kpis": {"response_time": {"regression": true, "probability": 0.97,
//!                             "effect": 0.18, "workload_range": [4.0, 12.0]},
//!           "throughput": {"regression": false, "probability": 0.08,
//!                          "effect": -0.01, "workload_range": [4.0, 12.0]},
//!           "success_rate": {"regression": null, "reason": "the current window has 12 usable success_rate points, at least 20 are needed"}}}
//! ```
//!
//! KS and MWU report `p_value` (and `statistic`) instead of `probability`; the matched
//! method its one-sided `p_value`. `effect` (current over baseline at matched workload,
//! minus 1) and `workload_range` come with every judged KPI whose loads overlap enough.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Kpi, Method};

/// The interface-level verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No judged KPI regressed and every asked KPI was judged.
    Normal,
    /// At least one KPI regressed.
    Regression,
    /// No KPI regressed but at least one could not be judged.
    InsufficientData,
}

impl Verdict {
    /// Process exit code of `kpiwatch regress` for this verdict (errors use 1, usage 2).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Normal => 0,
            Verdict::Regression => 3,
            Verdict::InsufficientData => 4,
        }
    }

    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Normal => "normal",
            Verdict::Regression => "regression",
            Verdict::InsufficientData => "insufficient_data",
        }
    }
}

/// Outcome for one KPI.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct KpiOutcome {
    /// `Some(true)` regressed, `Some(false)` not, `None` not judged (see `reason`).
    pub regression: Option<bool>,
    /// P(regression) from the Siamese model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Two-sided p-value of KS / MWU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Test statistic of KS (`D`) / MWU (`U₁`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// Current over baseline at matched workload, minus 1 (`0.18`: 18% higher), whatever
    /// the method; absent when the loads overlap too little (`detect::regress::matched`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    /// The workload range `[low, high]` the effect was measured at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_range: Option<[f64; 2]>,
    /// Why the KPI was not judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl KpiOutcome {
    /// A KPI that could not be judged.
    pub fn insufficient(reason: impl Into<String>) -> Self {
        KpiOutcome {
            reason: Some(reason.into()),
            ..Default::default()
        }
    }

    /// This outcome with the matched effect size and its workload range.
    pub fn with_effect(self, m: &super::Matched) -> Self {
        KpiOutcome {
            effect: Some(m.effect),
            workload_range: Some([m.workload.0, m.workload.1]),
            ..self
        }
    }
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Method used.
    pub method: Method,
    /// Interface verdict, from [`Report::kpis`] by the any-KPI rule.
    pub verdict: Verdict,
    /// Per KPI outcome, keyed by KPI name.
    pub kpis: BTreeMap<&'static str, KpiOutcome>,
}

impl Report {
    /// Builds the report and derives the verdict from the outcomes.
    pub fn new(method: Method, outcomes: Vec<(Kpi, KpiOutcome)>) -> Self {
        let verdict = verdict_of(outcomes.iter().map(|(_, o)| o.regression));
        let kpis = outcomes.into_iter().map(|(k, o)| (k.name(), o)).collect();
        Report {
            method,
            verdict,
            kpis,
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The any-KPI rule over per-KPI outcomes (`None` = not judged). No outcome at all is
/// insufficient data, never "normal".
pub(crate) fn verdict_of(outcomes: impl IntoIterator<Item = Option<bool>>) -> Verdict {
    let mut any = false;
    let mut unjudged = false;
    for o in outcomes {
        any = true;
        match o {
            Some(true) => return Verdict::Regression,
            Some(false) => {}
            None => unjudged = true,
        }
    }
    if !any || unjudged {
        Verdict::InsufficientData
    } else {
        Verdict::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_kpi_rule() {
        assert_eq!(
            verdict_of([Some(false), Some(false), Some(false)]),
            Verdict::Normal
        );
        assert_eq!(
            verdict_of([Some(false), Some(true), Some(false)]),
            Verdict::Regression
        );
        assert_eq!(verdict_of([None, Some(true)]), Verdict::Regression);
        assert_eq!(verdict_of([Some(false), None]), Verdict::InsufficientData);
        assert_eq!(verdict_of([]), Verdict::InsufficientData);
    }

    #[test]
    fn json_shape() {
        let r = Report::new(
            Method::Siamese,
            vec![
                (
                    Kpi::ResponseTime,
                    KpiOutcome {
                        regression: Some(true),
                        probability: Some(0.97),
                        ..Default::default()
                    },
                ),
                (Kpi::SuccessRate, KpiOutcome::insufficient("too short")),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["method"], "siamese");
        assert_eq!(v["verdict"], "regression");
        assert_eq!(v["kpis"]["response_time"]["regression"], true);
        assert_eq!(v["kpis"]["response_time"]["probability"], 0.97);
        assert!(v["kpis"]["response_time"].get("p_value").is_none());
        assert!(v["kpis"]["success_rate"]["regression"].is_null());
        assert_eq!(v["kpis"]["success_rate"]["reason"], "too short");
        assert_eq!(Verdict::Regression.exit_code(), 3);
    }
}
