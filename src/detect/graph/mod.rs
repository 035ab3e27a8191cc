//! The service graph: which anomalous service is the probable origin of an incident, and
//! which anomalies are only symptoms of an anomalous dependency.
//!
//! Model-free, after the first half of the graph-contrastive paper (services as a
//! time-varying dependency graph along which performance anomalies spread): callers
//! suffer from their callees, so an anomaly that a callee's anomaly explains is a
//! symptom, and the origin is where the explanation stops.
//!
//! Each cycle the agent hands [`GraphAnalyzer::analyze`] the call graph of that cycle
//! ([`CallGraph`], from edges whose rate is at least the configured minimum) and every
//! node's score from one of the group's detectors. The analyzer remembers when each
//! node's current anomaly began (its **onset**, in cycles) and answers, per node:
//!
//! * a **rank** among the anomalous nodes (1 = the most probable origin) by one of the
//!   [`RankMethod`]s, and the method's score;
//! * a **symptom** mark with its cause, by a rule that errs on the side of showing an
//!   alert: a node is a symptom of `cause` only when `cause` is anomalous too, is
//!   reachable from the node along calls (directly or through other services), did not
//!   start later, and is ranked above it. The rank-1 node is never a symptom.
//!
//! Pure synchronous code: the cycle queries the edges and publishes the verdicts.

mod rank;

pub use crate::config::RankMethod;

use std::collections::HashMap;

/// Who calls whom, with how many calls per second; nodes are service names.
#[derive(Debug, Clone, Default)]
pub struct CallGraph {
    names: Vec<String>,
    index: HashMap<String, usize, BuildFastHasher>,
    /// Per node, its callees with the rate of calls to each.
    callees: Vec<Vec<(usize, f64)>>,
    /// Per node, its callers with the rate of their calls.
    callers: Vec<Vec<(usize, f64)>>,
    edges: usize,
}

impl CallGraph {
    /// The graph of `(caller, callee, rate)` edges with a rate of at least `min_rate`
    /// (a NaN rate counts as 0; a static edge has rate `f64::INFINITY`). Repeated edges
    /// add their rates; a call of a service to itself is left out (it explains
    /// nothing).
    pub fn new<'a>(
        edges: impl IntoIterator<Item = (&'a str, &'a str, f64)>,
        min_rate: f64,
    ) -> Self {
        let mut g = CallGraph::default();
        for (caller, callee, rate) in edges {
            let rate = if rate.is_nan() { 0.0 } else { rate };
            if caller != callee {
                let (a, b) = (g.intern(caller), g.intern(callee));
                g.callees[a].push((b, rate));
            }
        }
        // Repeated edges add up; then the ones below the minimum go. Lists are short
        // (a service's callees): sorting each beats hashing every edge.
        for a in 0..g.callees.len() {
            let list = &mut g.callees[a];
            list.sort_unstable_by_key(|e| e.0);
            list.dedup_by(|later, first| {
                let same = later.0 == first.0;
                if same {
                    first.1 += later.1;
                }
                same
            });
            list.retain(|&(_, r)| r >= min_rate && r > 0.0);
            for &(b, r) in list.iter() {
                g.callers[b].push((a, r));
            }
            g.edges += list.len();
        }
        g
    }

    fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len();
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        self.callees.push(Vec::new());
        self.callers.push(Vec::new());
        i
    }

    /// Nodes named by some edge, kept or not.
    pub fn node_count(&self) -> usize {
        self.names.len()
    }

    /// Edges kept (at least the minimum rate).
    pub fn edge_count(&self) -> usize {
        self.edges
    }

    /// Node names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The node called `name`, if an edge names it.
    pub fn node(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Direct callees of `node` with their call rates.
    pub fn callees(&self, node: usize) -> &[(usize, f64)] {
        &self.callees[node]
    }

    /// Direct callers of `node` with their call rates.
    pub fn callers(&self, node: usize) -> &[(usize, f64)] {
        &self.callers[node]
    }

    /// Edges of which at least one end is not in `known` (a node without an entity:
    /// a service the group does not monitor, or a label that does not match).
    pub fn edges_to_unknown(&self, known: impl Fn(&str) -> bool) -> usize {
        (0..self.names.len())
            .flat_map(|a| self.callees[a].iter().map(move |&(b, _)| (a, b)))
            .filter(|&(a, b)| !known(&self.names[a]) || !known(&self.names[b]))
            .count()
    }

    /// Nodes reachable from `from` along calls, `from` left out, each at most once
    /// (`seen` is scratch space of `node_count()` flags, cleared on return).
    fn reachable(&self, from: usize, seen: &mut [bool], out: &mut Vec<usize>) {
        out.clear();
        seen[from] = true;
        let mut stack = vec![from];
        while let Some(v) = stack.pop() {
            for &(u, _) in &self.callees[v] {
                if !seen[u] {
                    seen[u] = true;
                    out.push(u);
                    stack.push(u);
                }
            }
        }
        seen[from] = false;
        for &u in out.iter() {
            seen[u] = false;
        }
    }
}

/// A hasher for service names, several times faster than the default SipHash on the
/// thousands of lookups a graph's build makes every cycle. Not resistant to collision
/// attacks: the names come from the user's own Prometheus.
#[derive(Debug, Clone, Copy, Default)]
struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type BuildFastHasher = std::hash::BuildHasherDefault<FastHasher>;

/// What the graph says about one node in one cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeVerdict {
    /// The node (service) name.
    pub name: String,
    /// Its score from the group's node detector (1.0 = threshold).
    pub score: f64,
    /// 1 = the most probable origin among the anomalous nodes; `None` when the node is
    /// not anomalous.
    pub rank: Option<u32>,
    /// The ranking method's score, the node's share of the evidence among the
    /// anomalous nodes (they sum to 1); 0 when the node is not anomalous.
    pub rootcause_score: f64,
    /// When the node is a symptom: the anomalous dependency that explains it.
    pub symptom_of: Option<String>,
}

impl NodeVerdict {
    /// The graph's own anomaly score: the node's score for a probable origin, at most
    /// 1 (not anomalous) for a symptom, so that an alert on it pages once per incident.
    pub fn graph_score(&self) -> f64 {
        match self.symptom_of {
            Some(_) => self.score.min(1.0),
            None => self.score,
        }
    }
}

/// The graph layer of one group: remembers each anomalous node's onset across cycles.
#[derive(Debug, Clone)]
pub struct GraphAnalyzer {
    method: RankMethod,
    cycle: u64,
    /// Cycle at which each currently anomalous node's anomaly began.
    onsets: HashMap<String, u64>,
}

/// One anomalous node as the ranking methods see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Suspect {
    /// Index in the call graph; `None` for a node no edge names.
    node: Option<usize>,
    score: f64,
    onset: u64,
}

impl GraphAnalyzer {
    /// An analyzer ranking by `method`.
    pub fn new(method: RankMethod) -> Self {
        GraphAnalyzer {
            method,
            cycle: 0,
            onsets: HashMap::new(),
        }
    }

    /// The verdicts of one cycle, in the order of `scores` (`(node name, score)`; a
    /// NaN score counts as not anomalous).
    pub fn analyze(&mut self, graph: &CallGraph, scores: &[(&str, f64)]) -> Vec<NodeVerdict> {
        self.cycle += 1;
        let anomalous = |s: f64| s > 1.0;
        let now: std::collections::HashSet<&str> = scores
            .iter()
            .filter(|(_, s)| anomalous(*s))
            .map(|(n, _)| *n)
            .collect();
        self.onsets.retain(|name, _| now.contains(name.as_str()));
        let suspects: Vec<(usize, Suspect)> = scores
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| anomalous(*s))
            .map(|(i, &(name, score))| {
                let onset = *self.onsets.entry(name.to_string()).or_insert(self.cycle);
                let node = graph.node(name);
                (i, Suspect { node, score, onset })
            })
            .collect();
        let only: Vec<Suspect> = suspects.iter().map(|(_, s)| *s).collect();
        let explains = explanations(graph, &only);
        let weights = rank::weights(self.method, &only, &explains);
        let order = rank::order(&only, &weights);
        let total: f64 = weights.iter().sum();
        let mut out: Vec<NodeVerdict> = scores
            .iter()
            .map(|&(name, score)| NodeVerdict {
                name: name.to_string(),
                score,
                rank: None,
                rootcause_score: 0.0,
                symptom_of: None,
            })
            .collect();
        let mut rank_of = vec![0u32; only.len()];
        for (r, &k) in order.iter().enumerate() {
            rank_of[k] = r as u32 + 1;
        }
        for (k, &(i, _)) in suspects.iter().enumerate() {
            let v = &mut out[i];
            v.rank = Some(rank_of[k]);
            v.rootcause_score = if total > 0.0 { weights[k] / total } else { 0.0 };
            // The best-ranked explanation that is itself ranked above the node.
            v.symptom_of = explains[k]
                .iter()
                .filter(|&&c| rank_of[c] < rank_of[k])
                .min_by_key(|&&c| rank_of[c])
                .map(|&c| scores[suspects[c].0].0.to_string());
        }
        out
    }
}

/// Per suspect, the other suspects that explain it: reachable from it along calls and
/// not started later.
fn explanations(graph: &CallGraph, suspects: &[Suspect]) -> Vec<Vec<usize>> {
    let mut at: Vec<Option<usize>> = vec![None; graph.node_count()];
    for (k, s) in suspects.iter().enumerate() {
        if let Some(n) = s.node {
            at[n] = Some(k);
        }
    }
    let mut seen = vec![false; graph.node_count()];
    let mut reach = Vec::new();
    suspects
        .iter()
        .map(|s| {
            let Some(n) = s.node else {
                return Vec::new();
            };
            graph.reachable(n, &mut seen, &mut reach);
            reach
                .iter()
                .filter_map(|&u| at[u])
                .filter(|&c| suspects[c].onset <= s.onset)
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests;
