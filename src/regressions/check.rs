//! `POST /api/v1/regressions/check` on the agent's runtime: the admin thread parses the
//! request (`export::regress_api`) and awaits this, which fetches both windows and
//! compares them like the loop does, without touching the loop's state or cache.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::fetch::{self, WindowQueries};
use super::runner::Regressions;
use crate::config::regressions::PLACEHOLDER;
use crate::detect::regress::{compare, Method, RegressError, Report};
use crate::export::regress_api::{check_lengths, CheckError, CheckRequest, RegressionChecker};

/// The agent's [`RegressionChecker`].
#[derive(Debug, Clone)]
pub(super) struct Checker(pub(super) Arc<Regressions>);

impl Regressions {
    /// The checker the admin server calls.
    pub(crate) fn checker(self: &Arc<Self>) -> Arc<dyn RegressionChecker> {
        Arc::new(Checker(self.clone()))
    }

    async fn check_now(&self, req: CheckRequest) -> Result<Report, CheckError> {
        let Some(s) = self.setup() else {
            return Err(CheckError::Unavailable(
                "regression checks are not configured (add a regressions: section)".into(),
            ));
        };
        let cfg = &s.cfg;
        check_lengths(&req, cfg.step.as_millis() as i64)?;
        if let Some(i) = &req.interface {
            self.known_interface(&s, i).await?;
        }
        let workload = req.workload.as_deref().unwrap_or(&cfg.workload);
        let kpis = if req.kpis.is_empty() {
            &cfg.kpis
        } else {
            &req.kpis
        };
        let queries = WindowQueries::new(workload, kpis, req.interface.as_deref());
        if req.interface.is_none()
            && (queries.workload.contains(PLACEHOLDER)
                || queries.kpis.iter().any(|(_, q)| q.contains(PLACEHOLDER)))
        {
            return Err(CheckError::BadRequest(format!(
                "the queries use {PLACEHOLDER} but no interface was given"
            )));
        }
        let fetch_window =
            |r| fetch::window(&s.client, &queries, &cfg.interface_label, r, cfg.step);
        let upstream = |e: super::Error| CheckError::Upstream(e.to_string());
        let baseline = fetch_window(req.baseline).await.map_err(upstream)?;
        let current = fetch_window(req.current).await.map_err(upstream)?;
        let mut opts = cfg.options.clone();
        if let Some(m) = req.method {
            opts.method = m;
        }
        opts.kpis = queries.kpis.iter().map(|(k, _)| *k).collect();
        let model = s.model.clone();
        let result = tokio::task::spawn_blocking(move || {
            compare(&baseline, &current, &opts, model.as_deref())
        })
        .await
        .map_err(|e| CheckError::Internal(format!("the comparison task failed: {e}")))?;
        match result {
            Ok(r) => {
                self.metrics.publish_check(&r);
                Ok(r)
            }
            Err(RegressError::NoModel) => Err(CheckError::BadRequest(format!(
                "method {} needs the model: set regressions.model, or ask for method matched, ks or mwu",
                Method::Siamese.name()
            ))),
            Err(e) => {
                self.metrics.failed("model");
                Err(CheckError::Internal(e.to_string()))
            }
        }
    }

    /// Accepts interfaces the loop has seen, else asks the discovery query now.
    async fn known_interface(&self, s: &super::Setup, interface: &str) -> Result<(), CheckError> {
        if self.state.lock().await.known.contains(interface) {
            return Ok(());
        }
        let now = crate::clock::now_ms();
        let found = fetch::discover(&s.client, &s.cfg.discover, &s.cfg.interface_label, now)
            .await
            .map_err(|e| CheckError::Upstream(e.to_string()))?;
        if found.contains(interface) {
            return Ok(());
        }
        let known: Vec<&str> = found.iter().map(String::as_str).collect();
        Err(CheckError::UnknownInterface(format!(
            "unknown interface {interface:?} (the discover query returns: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )))
    }
}

impl RegressionChecker for Checker {
    fn check(&self, req: CheckRequest) -> BoxFuture<'static, Result<Report, CheckError>> {
        let inner = self.0.clone();
        let runtime = inner.runtime.clone();
        // Run on the agent's runtime: the reader's connections live there, and the
        // admin thread stays free for scrapes and probes.
        Box::pin(async move {
            runtime
                .spawn(async move { inner.check_now(req).await })
                .await
                .map_err(|e| CheckError::Internal(format!("the check task failed: {e}")))?
        })
    }
}
