//! Performance-regression detection: did an interface get slower, once load is accounted for?
//!
//! This module owns the comparison of a **current** window of an interface (API route)
//! with a **baseline** window, KPI by KPI (response time, throughput, success rate), with
//! the workload as context:
//!
//! * [`Method::Siamese`]: DynamicRegress (papers/dynamicregress-siamese-regression.md), a
//!   shared LSTM encoder over `(workload, kpi)` sequences of any length, `|Z₁ − Z₂|`,
//!   linear, softmax. [`model::RegressModel`] loads the ONNX export (encoder and head
//!   split so baseline embeddings can be cached) and runs it with a native LSTM
//!   ([`lstm`], weights read from the ONNX files) once it agrees with tract on a
//!   probe at load, else with tract.
//!   [`features`] is the input normalisation the model was trained with.
//! * [`Method::Matched`]: the workload-matched judge ([`matched`]): an effect size and a
//!   stratified rank test where the two windows' loads overlap, model-free.
//! * [`Method::Ks`] / [`Method::Mwu`]: two-sample tests on the KPI values alone
//!   ([`stats`]), cheap and model-free, blind to the workload.
//!
//! Whatever the method, every judged KPI also carries the matched effect size and the
//! workload range it was measured at, when the loads overlap enough.
//!
//! [`window`] reads the lab's CSV format and applies the insufficient-data rules;
//! [`verdict`] holds the per-KPI outcomes, the "any KPI ⇒ interface" rule and the JSON.
//! [`baseline`] chooses the windows to compare in the agent (version change, offset,
//! pinned) and [`cache`] keeps baseline embeddings ([`compare_with`] uses it).
//!
//! Must not: query Prometheus, serve HTTP (the canary API lives in `export/`), or train.

pub(crate) mod baseline;
pub(crate) mod cache;
pub(crate) mod features;
pub mod lstm;
pub mod matched;
pub mod model;
pub(crate) mod stats;
pub(crate) mod verdict;
pub(crate) mod window;

pub use crate::config::judge::{Kpi, Method, Options};
pub use matched::Matched;
pub use model::RegressModel;
pub use verdict::{KpiOutcome, Report, Verdict};
pub use window::{Insufficient, KpiPair, Limits, LoadTest, Series, WindowError};

/// A comparison that could not be carried out at all.
#[derive(Debug, thiserror::Error)]
pub enum RegressError {
    /// The Siamese method was asked for without a model.
    #[error("the siamese method needs a model (--model DIR with regress_encoder.onnx and regress_head.onnx)")]
    NoModel,
    /// The model failed.
    #[error(transparent)]
    Model(#[from] model::ModelError),
}

/// Judges one prepared KPI pair with a statistical test (`Ks` or `Mwu`).
pub fn judge_stat(method: Method, pair: &KpiPair, alpha: f64) -> KpiOutcome {
    let test = match method {
        Method::Mwu => stats::mann_whitney_u,
        _ => stats::ks_2samp,
    };
    match test(&pair.baseline.kpi, &pair.current.kpi) {
        Ok(r) => KpiOutcome {
            regression: Some(r.p_value < alpha),
            p_value: Some(r.p_value),
            statistic: Some(r.statistic),
            ..Default::default()
        },
        Err(e) => KpiOutcome::insufficient(e.to_string()),
    }
}

/// Judges one prepared KPI pair at matched workload: a regression when the stratified
/// test is significant and the KPI is worse by at least `min_effect`.
pub fn judge_matched(pair: &KpiPair, alpha: f64, min_effect: f64) -> KpiOutcome {
    match matched::compare(pair) {
        Ok(m) => KpiOutcome {
            regression: Some(m.p_value < alpha && m.worse_by(pair.kpi) >= min_effect),
            p_value: Some(m.p_value),
            ..KpiOutcome::default().with_effect(&m)
        },
        Err(why) => KpiOutcome::insufficient(why.0),
    }
}

/// How [`compare_with`] gets a baseline's embedding from its normalised sequence: the
/// agent passes one that looks it up in a [`cache::EmbeddingCache`] first.
pub type EmbedBaseline<'a> =
    dyn FnMut(&RegressModel, Kpi, &[f32]) -> Result<Vec<f32>, model::ModelError> + 'a;

/// Compares two windows KPI by KPI and applies the any-KPI rule.
pub fn compare(
    baseline: &LoadTest,
    current: &LoadTest,
    opts: &Options,
    model: Option<&RegressModel>,
) -> Result<Report, RegressError> {
    compare_with(baseline, current, opts, model, &mut |m, _, x| m.embed(x))
}

/// [`compare`], with the baseline embeddings obtained through `embed_baseline`.
pub fn compare_with(
    baseline: &LoadTest,
    current: &LoadTest,
    opts: &Options,
    model: Option<&RegressModel>,
    embed_baseline: &mut EmbedBaseline<'_>,
) -> Result<Report, RegressError> {
    if opts.method == Method::Siamese && model.is_none() {
        return Err(RegressError::NoModel);
    }
    let mut outcomes = Vec::with_capacity(opts.kpis.len());
    for &kpi in &opts.kpis {
        let outcome = match window::prepare(kpi, baseline, current, &opts.limits) {
            Err(why) => KpiOutcome::insufficient(why.0),
            Ok(pair) => {
                let mut outcome = match (opts.method, model) {
                    (Method::Siamese, Some(m)) => {
                        let (b, c) = features::pair_features(&pair);
                        let zb = embed_baseline(m, kpi, &b)?;
                        let p = m.probability(&zb, &m.embed(&c)?)?;
                        KpiOutcome {
                            regression: Some(f64::from(p) >= opts.threshold),
                            probability: Some(f64::from(p)),
                            ..Default::default()
                        }
                    }
                    (Method::Matched, _) => {
                        judge_matched(&pair, opts.alpha, opts.min_effect[kpi.index()])
                    }
                    (method, _) => judge_stat(method, &pair, opts.alpha),
                };
                if outcome.effect.is_none() && outcome.regression.is_some() {
                    if let Ok(m) = matched::compare(&pair) {
                        outcome = outcome.with_effect(&m);
                    }
                }
                outcome
            }
        };
        outcomes.push((kpi, outcome));
    }
    Ok(Report::new(opts.method, outcomes))
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
