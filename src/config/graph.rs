//! `groups[].graph`: the service graph of a group, validated (see
//! [`crate::detect::graph`] for what the graph layer does with it).

use serde::Deserialize;

/// How the anomalous nodes of a graph are ranked (`graph.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RankMethod {
    /// Nodes that no anomalous dependency explains first (an anomalous node none of
    /// whose callees, direct or further down, is anomalous and started no later), by
    /// score; the explained ones after them, by score.
    #[default]
    Frontier,
    /// A personalised random walk (after MicroRCA and CloudRanger) from each anomalous
    /// node toward the anomalous dependencies that explain it, weighted by their scores;
    /// the walk's stationary share ranks.
    RandomWalk,
    /// The highest score first: the graph ignored (a baseline to beat).
    HighestScore,
}

impl RankMethod {
    /// Every method, in the order reports list them.
    pub const ALL: [RankMethod; 3] = [
        RankMethod::Frontier,
        RankMethod::RandomWalk,
        RankMethod::HighestScore,
    ];

    /// The config and report name.
    pub fn name(self) -> &'static str {
        match self {
            RankMethod::Frontier => "frontier",
            RankMethod::RandomWalk => "random_walk",
            RankMethod::HighestScore => "highest_score",
        }
    }

    /// The method called `name`.
    pub fn parse(name: &str) -> Option<RankMethod> {
        RankMethod::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Where a graph's edges come from: a PromQL expression with one series per edge whose
/// value is the calls per second, and the labels that name the two ends.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeQuery {
    /// The PromQL expression, evaluated at each cycle's time.
    pub promql: String,
    /// The label naming the calling service.
    pub caller_label: String,
    /// The label naming the called service.
    pub callee_label: String,
}

/// The presets of `graph.edges`.
const PRESETS: [(&str, &str, &str, &str); 2] = [
    (
        "tempo",
        "sum by (client, server) (rate(traces_service_graph_request_total[5m]))",
        "client",
        "server",
    ),
    (
        "istio",
        r#"sum by (source_workload, destination_workload) (rate(istio_requests_total{reporter="destination"}[5m]))"#,
        "source_workload",
        "destination_workload",
    ),
];

/// The validated `graph:` of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphConfig {
    /// The edges read from Prometheus every cycle, if any.
    pub query: Option<EdgeQuery>,
    /// Edges declared in the config `(caller, callee)`, always present.
    pub static_edges: Vec<(String, String)>,
    /// The entity label whose value names an entity's node (service).
    pub node_label: String,
    /// Edges with fewer calls per second are left out.
    pub min_edge_rate: f64,
    /// The group's detector whose scores are the nodes' scores.
    pub detector: String,
    /// How the anomalous nodes are ranked.
    pub method: RankMethod,
}

/// `groups[].graph:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGraph {
    /// A preset of the edge query: tempo or istio.
    pub edges: Option<String>,
    /// A PromQL expression with one series per edge (value: calls per second).
    pub query: Option<String>,
    /// The query's label naming the caller (default client).
    pub caller_label: Option<String>,
    /// The query's label naming the callee (default server).
    pub callee_label: Option<String>,
    /// Edges declared here.
    #[serde(default)]
    pub static_edges: Vec<RawStaticEdge>,
    /// The entity label naming a node (default: the group's only entity label).
    pub node_label: Option<String>,
    /// Fewest calls per second of an edge (default 0: any traffic).
    pub min_edge_rate: Option<f64>,
    /// The detector providing node scores (default: zscore, else uniad, else adsketch).
    pub detector: Option<String>,
    /// frontier (default), random_walk or highest_score.
    pub method: Option<String>,
}

/// One of `graph.static_edges`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStaticEdge {
    /// The calling service.
    pub caller: String,
    /// The called service.
    pub callee: String,
}

/// Validates `raw` for a group with `entity_labels` and the detectors `enabled` (in
/// their default order of preference); problems go to `found` as `(key, message)`.
pub(crate) fn validate(
    raw: RawGraph,
    key: &str,
    entity_labels: &[String],
    enabled: &[&str],
    found: &mut Vec<(String, String)>,
) -> GraphConfig {
    let mut err = |k: &str, m: String| found.push((format!("{key}.{k}"), m));
    let label = |k: &str, v: Option<String>, default: &str, err: &mut dyn FnMut(&str, String)| {
        let v = v.unwrap_or_else(|| default.to_string());
        if !super::validate::is_label_name(&v) {
            err(k, format!("{v:?} is not a Prometheus label name"));
        }
        v
    };
    let query = match (raw.edges.as_deref(), raw.query) {
        (Some(_), Some(_)) => {
            err(
                "query",
                "is set beside edges (expected a preset or a query, not both)".into(),
            );
            None
        }
        (Some(name), None) => {
            if raw.caller_label.is_some() || raw.callee_label.is_some() {
                err(
                    "edges",
                    format!("the {name} preset names its own labels (caller_label and callee_label go with query)"),
                );
            }
            match PRESETS.iter().find(|p| p.0 == name) {
                Some(&(_, promql, caller, callee)) => Some(EdgeQuery {
                    promql: promql.into(),
                    caller_label: caller.into(),
                    callee_label: callee.into(),
                }),
                None => {
                    err(
                        "edges",
                        format!("{name:?} is not a preset (expected tempo or istio, or a query)"),
                    );
                    None
                }
            }
        }
        (None, Some(promql)) => {
            if promql.trim().is_empty() {
                err("query", "PromQL expression is empty".into());
            }
            let caller_label = label("caller_label", raw.caller_label, "client", &mut err);
            let callee_label = label("callee_label", raw.callee_label, "server", &mut err);
            if caller_label == callee_label {
                err(
                    "callee_label",
                    format!("{callee_label:?} is also the caller_label (expected two labels)"),
                );
            }
            Some(EdgeQuery {
                promql,
                caller_label,
                callee_label,
            })
        }
        (None, None) => {
            if raw.static_edges.is_empty() {
                err(
                    "edges",
                    "no edges (expected edges: tempo or istio, a query, or static_edges)".into(),
                );
            }
            None
        }
    };
    let static_edges = raw
        .static_edges
        .into_iter()
        .map(|e| (e.caller, e.callee))
        .collect();
    let node_label = match raw.node_label {
        Some(l) => {
            if !entity_labels.contains(&l) {
                err(
                    "node_label",
                    format!("{l:?} is not one of the group's entity_labels {entity_labels:?}"),
                );
            }
            l
        }
        None => match entity_labels {
            [only] => only.clone(),
            _ => {
                err(
                    "node_label",
                    format!("is required when the group has several entity_labels (expected one of {entity_labels:?}, the label naming a service)"),
                );
                String::new()
            }
        },
    };
    let min_edge_rate = raw.min_edge_rate.unwrap_or(0.0);
    if !min_edge_rate.is_finite() || min_edge_rate < 0.0 {
        err(
            "min_edge_rate",
            format!("{min_edge_rate} is not a rate >= 0 (calls per second)"),
        );
    }
    let detector = match raw.detector {
        Some(d) => {
            if !enabled.contains(&d.as_str()) {
                err(
                    "detector",
                    format!("{d:?} is not enabled in this group (enabled: {enabled:?})"),
                );
            }
            d
        }
        None => match enabled.first() {
            Some(d) => d.to_string(),
            None => {
                err(
                    "detector",
                    "the group has no detector to score the nodes".into(),
                );
                String::new()
            }
        },
    };
    let method = match raw.method.as_deref() {
        None => RankMethod::default(),
        Some(m) => RankMethod::parse(m).unwrap_or_else(|| {
            err(
                "method",
                format!("{m:?} is not a ranking (expected frontier, random_walk or highest_score)"),
            );
            RankMethod::default()
        }),
    };
    GraphConfig {
        query,
        static_edges,
        node_label,
        min_edge_rate,
        detector,
        method,
    }
}
