//! What the regression checks export, registered in the agent's registry.
//!
//! Per interface (label values are interface names and KPI names, bounded by the
//! discovery query):
//!
//! | metric | labels | value |
//! |---|---|---|
//! | `kpiwatch_regression` | interface | 1 regressed, 0 normal, NaN while the data is insufficient |
//! | `kpiwatch_regression_probability` | interface, kpi | P(regression) of the Siamese model (method siamese) |
//! | `kpiwatch_regression_p_value` | interface, kpi | p-value of matched / KS / MWU; low is a regression |
//! | `kpiwatch_regression_effect` | interface, kpi | current over baseline at matched load, minus 1 (0.18 = 18% higher), any method; absent when the loads do not overlap enough |
//! | `kpiwatch_regression_insufficient_data` | interface | 1 while some KPI cannot be judged (too short, gaps, no load) |
//! | `kpiwatch_regression_baseline_info` | interface, mode, version, current_version, baseline_start, baseline_end | 1: the baseline in use |
//!
//! Self-metrics (no interface label): `kpiwatch_regression_checks_total{result}`
//! (normal, regression, insufficient_data, error), `kpiwatch_regression_errors_total{cause}`,
//! `kpiwatch_regression_baseline_embeddings_total{source}` (cache, computed) and
//! `kpiwatch_regression_check_duration_seconds` (one interface: fetch and compare).

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus::{GaugeVec, Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use crate::detect::regress::{Report, Verdict};

/// Labels of the baseline info series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BaselineInfo {
    pub mode: &'static str,
    pub version: String,
    pub current_version: String,
    pub start: String,
    pub end: String,
}

/// What is published for one interface (to remove exactly that later).
#[derive(Debug, Default)]
struct Published {
    kpis: Vec<&'static str>,
    info: Option<BaselineInfo>,
}

/// The handles; cheap to share behind the runner's `Arc`.
#[derive(Debug)]
pub(crate) struct RegressionMetrics {
    regression: GaugeVec,
    probability: GaugeVec,
    p_value: GaugeVec,
    effect: GaugeVec,
    insufficient: GaugeVec,
    baseline_info: GaugeVec,
    checks: IntCounterVec,
    errors: IntCounterVec,
    embeddings: IntCounterVec,
    duration: Histogram,
    published: Mutex<BTreeMap<String, Published>>,
}

impl RegressionMetrics {
    /// Creates and registers the families in `r`.
    pub(crate) fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, prometheus::Error> {
                let g = GaugeVec::new(Opts::new(name, help), labels)?;
                r.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let counter =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                r.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "kpiwatch_regression_check_duration_seconds",
                "One interface's regression check: fetching its windows and comparing them.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )?;
        r.register(Box::new(duration.clone()))?;
        Ok(RegressionMetrics {
            regression: gauge("kpiwatch_regression", "1 when the interface regressed against its baseline (any KPI), 0 when not, NaN while the data is insufficient.", &["interface"])?,
            probability: gauge("kpiwatch_regression_probability", "P(regression) of each KPI from the Siamese model.", &["interface", "kpi"])?,
            p_value: gauge("kpiwatch_regression_p_value", "p-value of each KPI from the matched, KS or Mann-Whitney U test; below alpha is a regression.", &["interface", "kpi"])?,
            effect: gauge("kpiwatch_regression_effect", "Each KPI's current value over the baseline's at matched load, minus 1 (0.18 = 18% higher).", &["interface", "kpi"])?,
            insufficient: gauge("kpiwatch_regression_insufficient_data", "1 while some KPI of the interface cannot be judged (window too short, gaps, no load).", &["interface"])?,
            baseline_info: gauge("kpiwatch_regression_baseline_info", "The baseline an interface is compared with (value 1).", &["interface", "mode", "version", "current_version", "baseline_start", "baseline_end"])?,
            checks: counter("kpiwatch_regression_checks_total", "Interface regression checks by result.", "result")?,
            errors: counter("kpiwatch_regression_errors_total", "Failed regression checks by cause.", "cause")?,
            embeddings: counter("kpiwatch_regression_baseline_embeddings_total", "Baseline embeddings used, from the cache or computed.", "source")?,
            duration,
            published: Mutex::new(BTreeMap::new()),
        })
    }

    /// Publishes a comparison of `interface`.
    pub(super) fn publish(&self, interface: &str, report: &Report, info: BaselineInfo) {
        let flag = match report.verdict {
            Verdict::Regression => 1.0,
            Verdict::Normal => 0.0,
            Verdict::InsufficientData => f64::NAN,
        };
        self.regression.with_label_values(&[interface]).set(flag);
        let insufficient = report.kpis.values().any(|o| o.regression.is_none());
        self.insufficient
            .with_label_values(&[interface])
            .set(f64::from(u8::from(insufficient)));
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let entry = published.entry(interface.to_string()).or_default();
        self.remove_kpis(interface, entry);
        for (kpi, o) in &report.kpis {
            if let Some(p) = o.probability {
                self.probability.with_label_values(&[interface, kpi]).set(p);
            }
            if let Some(p) = o.p_value {
                self.p_value.with_label_values(&[interface, kpi]).set(p);
            }
            if let Some(e) = o.effect {
                self.effect.with_label_values(&[interface, kpi]).set(e);
            }
            entry.kpis.push(kpi);
        }
        self.set_info(interface, entry, info);
        self.checks
            .with_label_values(&[report.verdict.as_str()])
            .inc();
    }

    /// Marks `interface` as waiting for a long enough current window: flag NaN,
    /// insufficient data 1, no per-KPI values, the new baseline in the info series.
    pub(super) fn waiting(&self, interface: &str, info: BaselineInfo) {
        self.regression
            .with_label_values(&[interface])
            .set(f64::NAN);
        self.insufficient.with_label_values(&[interface]).set(1.0);
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let entry = published.entry(interface.to_string()).or_default();
        self.remove_kpis(interface, entry);
        self.set_info(interface, entry, info);
    }

    fn set_info(&self, interface: &str, entry: &mut Published, info: BaselineInfo) {
        if entry.info.as_ref() == Some(&info) {
            return;
        }
        if let Some(old) = entry.info.take() {
            let _ = self
                .baseline_info
                .remove_label_values(&info_labels(interface, &old));
        }
        self.baseline_info
            .with_label_values(&info_labels(interface, &info))
            .set(1.0);
        entry.info = Some(info);
    }

    fn remove_kpis(&self, interface: &str, entry: &mut Published) {
        for kpi in entry.kpis.drain(..) {
            let _ = self.probability.remove_label_values(&[interface, kpi]);
            let _ = self.p_value.remove_label_values(&[interface, kpi]);
            let _ = self.effect.remove_label_values(&[interface, kpi]);
        }
    }

    /// Removes every series of interfaces for which `keep` is false.
    pub(super) fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = published.keys().filter(|i| !keep(i)).cloned().collect();
        for interface in gone {
            if let Some(mut entry) = published.remove(&interface) {
                self.remove_kpis(&interface, &mut entry);
                if let Some(info) = entry.info {
                    let _ = self
                        .baseline_info
                        .remove_label_values(&info_labels(&interface, &info));
                }
            }
            let _ = self.regression.remove_label_values(&[&interface]);
            let _ = self.insufficient.remove_label_values(&[&interface]);
        }
    }

    /// Counts an on-demand check's result (nothing per interface is exported for it).
    pub(super) fn publish_check(&self, report: &Report) {
        self.checks
            .with_label_values(&[report.verdict.as_str()])
            .inc();
    }

    /// Counts a failed check.
    pub(super) fn failed(&self, cause: &'static str) {
        self.errors.with_label_values(&[cause]).inc();
        self.checks.with_label_values(&["error"]).inc();
    }

    /// Counts baseline embeddings taken from the cache and computed.
    pub(super) fn embeddings(&self, cached: u64, computed: u64) {
        self.embeddings.with_label_values(&["cache"]).inc_by(cached);
        self.embeddings
            .with_label_values(&["computed"])
            .inc_by(computed);
    }

    /// Records one interface check's duration.
    pub(super) fn observe(&self, seconds: f64) {
        self.duration.observe(seconds);
    }
}

fn info_labels<'a>(interface: &'a str, i: &'a BaselineInfo) -> [&'a str; 6] {
    [
        interface,
        i.mode,
        &i.version,
        &i.current_version,
        &i.start,
        &i.end,
    ]
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, TextEncoder};

    use super::*;
    use crate::detect::regress::{Kpi, KpiOutcome, Method};

    fn render(r: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn info(start: &str) -> BaselineInfo {
        BaselineInfo {
            mode: "version_change",
            version: "v1".into(),
            current_version: "v2".into(),
            start: start.into(),
            end: "e".into(),
        }
    }

    #[test]
    fn verdicts_probabilities_effects_and_the_baseline_are_exported_and_replaced() {
        let r = Registry::new();
        let m = RegressionMetrics::new(&r).unwrap();
        let report = Report::new(
            Method::Siamese,
            vec![
                (
                    Kpi::ResponseTime,
                    KpiOutcome {
                        regression: Some(true),
                        probability: Some(0.9),
                        effect: Some(0.25),
                        workload_range: Some([4.0, 12.0]),
                        ..Default::default()
                    },
                ),
                (Kpi::Throughput, KpiOutcome::insufficient("short")),
            ],
        );
        m.publish("search", &report, info("a"));
        let text = render(&r);
        assert!(
            text.contains(r#"kpiwatch_regression{interface="search"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"kpiwatch_regression_probability{interface="search",kpi="response_time"} 0.9"#
        ));
        assert!(text.contains(
            r#"kpiwatch_regression_effect{interface="search",kpi="response_time"} 0.25"#
        ));
        assert!(
            !text.contains(r#"kpiwatch_regression_effect{interface="search",kpi="throughput"}"#)
        );
        assert!(text.contains(r#"kpiwatch_regression_insufficient_data{interface="search"} 1"#));
        assert!(text.contains(r#"kpiwatch_regression_checks_total{result="regression"} 1"#));
        assert!(text.contains(r#"baseline_start="a""#));

        // A new baseline: waiting replaces the info series and drops the KPI values.
        m.waiting("search", info("b"));
        let text = render(&r);
        assert!(
            text.contains(r#"kpiwatch_regression{interface="search"} NaN"#),
            "{text}"
        );
        assert!(!text.contains("kpiwatch_regression_probability{"), "{text}");
        assert!(!text.contains("kpiwatch_regression_effect{"), "{text}");
        assert!(!text.contains(r#"baseline_start="a""#));
        assert!(text.contains(r#"baseline_start="b""#));

        m.retain(|i| i != "search");
        let text = render(&r);
        assert!(!text.contains(r#"interface="search""#), "{text}");
    }
}
