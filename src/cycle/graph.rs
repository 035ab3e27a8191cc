//! A group's service graph in the cycle: reads the edges every cycle (they change with
//! deploys and failovers), keeps each entity's latest node score from the configured
//! detector, and publishes the graph layer's verdicts ([`crate::detect::graph`]).

use std::collections::HashMap;

use crate::config::GraphConfig;
use crate::detect::graph::{CallGraph, GraphAnalyzer};
use crate::export::{ScoreSink, SeriesLabels};
use crate::reader::Client;
use crate::telemetry::Telemetry;

/// The metric name under which a failed edge query is reported.
const EDGES: &str = "graph edges";

/// The graph layer of one group.
#[derive(Debug)]
pub(super) struct GraphLayer {
    cfg: GraphConfig,
    analyzer: GraphAnalyzer,
    /// The edges of the last good query `(caller, callee, calls per second)`.
    queried: Vec<(String, String, f64)>,
    /// Per entity key: its node name and latest score from the configured detector.
    nodes: HashMap<String, (String, f64)>,
}

impl GraphLayer {
    pub(super) fn new(cfg: GraphConfig) -> Self {
        GraphLayer {
            analyzer: GraphAnalyzer::new(cfg.method),
            cfg,
            queried: Vec::new(),
            nodes: HashMap::new(),
        }
    }

    /// The detector whose scores are the nodes' scores.
    pub(super) fn detector(&self) -> &str {
        &self.cfg.detector
    }

    /// Reads the edges at `now_ms`. A failed query keeps the last edges (a graph a cycle
    /// old explains better than none) and is logged like a failed metric query.
    pub(super) async fn fetch_edges(
        &mut self,
        client: &Client,
        now_ms: i64,
        group: &str,
        telemetry: &Telemetry,
    ) {
        let Some(q) = &self.cfg.query else {
            return;
        };
        match client.query(&q.promql, now_ms).await {
            Ok(answer) => {
                let label = |s: &crate::series::Series, name: &str| {
                    s.labels
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                self.queried = answer
                    .series
                    .iter()
                    .filter_map(|s| {
                        let rate = s.samples.last()?.1;
                        Some((label(s, &q.caller_label)?, label(s, &q.callee_label)?, rate))
                    })
                    .collect();
            }
            Err(e) => telemetry.query_failed(group, EDGES, e.cause(), &e),
        }
    }

    /// Keeps an entity's latest node score (entities without the node label are no
    /// node).
    pub(super) fn record(&mut self, key: &str, labels: &[(String, String)], score: f64) {
        if let Some((_, node)) = labels.iter().find(|(k, _)| *k == self.cfg.node_label) {
            match self.nodes.get_mut(key) {
                Some(entry) => entry.1 = score,
                None => {
                    self.nodes.insert(key.to_string(), (node.clone(), score));
                }
            }
        }
    }

    /// An entity expired.
    pub(super) fn forget(&mut self, key: &str) {
        self.nodes.remove(key);
    }

    /// Analyses this cycle's graph and publishes a verdict for every entity that is a
    /// node with a score (one still warming up is a node without one: it counts as known
    /// for the edges, and gets no series yet). Several entities of one node (pods of a
    /// service) share the node's verdict; the node's score is the highest of theirs.
    pub(super) fn publish(
        &mut self,
        group: &str,
        labels: &HashMap<String, SeriesLabels>,
        sink: &mut dyn ScoreSink,
        telemetry: &Telemetry,
    ) {
        let statics = self
            .cfg
            .static_edges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str(), f64::INFINITY));
        let queried = self
            .queried
            .iter()
            .map(|(a, b, r)| (a.as_str(), b.as_str(), *r));
        let graph = CallGraph::new(statics.chain(queried), self.cfg.min_edge_rate);
        let mut scores: HashMap<&str, f64> = HashMap::new();
        for (node, score) in self.nodes.values() {
            let s = scores.entry(node.as_str()).or_insert(f64::NAN);
            // NaN (no score) loses to any number.
            *s = s.max(*score);
        }
        let mut nodes: Vec<(&str, f64)> = scores.into_iter().collect();
        nodes.sort_by(|a, b| a.0.cmp(b.0));
        let verdicts = self.analyzer.analyze(&graph, &nodes);
        let unknown = graph.edges_to_unknown(|n| nodes.binary_search_by(|p| p.0.cmp(n)).is_ok());
        let named = graph
            .names()
            .iter()
            .filter(|n| nodes.binary_search_by(|p| p.0.cmp(n.as_str())).is_err())
            .count();
        telemetry.graph_analyzed(group, nodes.len() + named, graph.edge_count(), unknown);
        for (key, (node, _)) in &self.nodes {
            let (Some(l), Ok(i)) = (
                labels.get(key),
                nodes.binary_search_by(|p| p.0.cmp(node.as_str())),
            ) else {
                continue;
            };
            if verdicts[i].score.is_nan() {
                continue;
            }
            sink.publish_graph(group, key, l, &verdicts[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RankMethod;
    use crate::detect::graph::NodeVerdict;
    use crate::detect::{EntityView, Scores};

    /// What the layer published, by entity key.
    #[derive(Default)]
    struct Published(Vec<(String, NodeVerdict)>);

    impl ScoreSink for Published {
        fn publish(
            &mut self,
            _: &str,
            _: &EntityView<'_>,
            _: &SeriesLabels,
            _: &'static str,
            _: &Scores,
        ) {
        }
        fn remove_entity(&mut self, _: &str, _: &str) {}
        fn publish_graph(&mut self, _: &str, key: &str, _: &SeriesLabels, v: &NodeVerdict) {
            self.0.push((key.to_string(), v.clone()));
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pods_share_their_service_verdict_and_entities_without_the_label_are_no_node() {
        let cfg = GraphConfig {
            query: None,
            static_edges: vec![("web".into(), "db".into())],
            node_label: "service".into(),
            min_edge_rate: 0.0,
            detector: "zscore".into(),
            method: RankMethod::Frontier,
        };
        let mut layer = GraphLayer::new(cfg);
        let entities = [
            (
                "web-1",
                labels(&[("service", "web"), ("pod", "web-1")]),
                3.0,
            ),
            (
                "web-2",
                labels(&[("service", "web"), ("pod", "web-2")]),
                0.5,
            ),
            ("db-1", labels(&[("service", "db"), ("pod", "db-1")]), 2.0),
            ("batch", labels(&[("pod", "batch")]), 9.0),
            // Warming up: a node with no score yet.
            (
                "cache-1",
                labels(&[("service", "cache"), ("pod", "cache-1")]),
                f64::NAN,
            ),
        ];
        let mut rendered = HashMap::new();
        for (key, l, score) in &entities {
            layer.record(key, l, *score);
            rendered.insert(key.to_string(), SeriesLabels::new("g", l));
        }
        let registry = prometheus::Registry::new();
        let telemetry =
            Telemetry::new(crate::telemetry::SelfMetrics::new(&registry).expect("self-metrics"));
        let mut out = Published::default();
        layer.publish("g", &rendered, &mut out, &telemetry);
        let by_key: HashMap<&str, &NodeVerdict> =
            out.0.iter().map(|(k, v)| (k.as_str(), v)).collect();
        assert_eq!(
            by_key.len(),
            3,
            "the entity without a service label is no node, the warming one has no verdict yet"
        );
        // Both pods carry the web service's verdict: its score is the higher pod's.
        for pod in ["web-1", "web-2"] {
            assert_eq!(by_key[pod].score, 3.0);
            assert_eq!(by_key[pod].symptom_of.as_deref(), Some("db"), "{pod}");
        }
        assert_eq!(by_key["db-1"].rank, Some(1));
        // An expired pod leaves the service; the other pod still speaks for it.
        layer.forget("web-1");
        let mut out = Published::default();
        layer.publish("g", &rendered, &mut out, &telemetry);
        let web2 = out.0.iter().find(|(k, _)| k == "web-2").expect("web-2");
        assert_eq!(web2.1.score, 0.5);
        assert_eq!(web2.1.rank, None);
    }
}
