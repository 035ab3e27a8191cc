//! The ranking methods: how likely each anomalous node is the origin of the incident.

use super::{CallGraph, Suspect};

/// How the anomalous nodes are ranked (`graph.method` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RankMethod {
    /// Nodes that no anomalous dependency explains first (an anomalous node none of
    /// whose callees, direct or further down, is anomalous and started no later), by
    /// score; the explained ones after them, by score.
    #[default]
    Frontier,
    /// A personalised random walk (after MicroRCA and CloudRanger): from each anomalous
    /// node toward the anomalous dependencies that explain it, weighted by their
    /// scores, a little back toward its callers, staying with a weight of what its own
    /// score exceeds its dependencies' by; restarts in proportion to the scores. The
    /// walk's stationary share is the node's weight.
    RandomWalk,
    /// The highest score first: the graph ignored (a baseline to beat).
    HighestScore,
}

/// Weight of an explained node against an unexplained one of the same score in
/// [`RankMethod::Frontier`].
const EXPLAINED_FACTOR: f64 = 0.01;
/// Random walk: probability of restarting at each step.
const RESTART: f64 = 0.15;
/// Random walk: weight of a step back toward a caller, relative to its score.
const BACKWARD: f64 = 0.2;
/// Random walk: power iterations (the walk converges well before on incident-sized
/// graphs).
const ITERATIONS: usize = 50;

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

    /// Per suspect a weight, larger = more probable origin (≥ 0).
    pub(super) fn weights(
        self,
        _graph: &CallGraph,
        suspects: &[Suspect],
        explains: &[Vec<usize>],
    ) -> Vec<f64> {
        match self {
            RankMethod::HighestScore => suspects.iter().map(|s| s.score).collect(),
            RankMethod::Frontier => suspects
                .iter()
                .zip(explains)
                .map(|(s, e)| {
                    if e.is_empty() {
                        s.score
                    } else {
                        s.score * EXPLAINED_FACTOR
                    }
                })
                .collect(),
            RankMethod::RandomWalk => random_walk(suspects, explains),
        }
    }
}

/// The stationary distribution of the personalised walk over the suspects.
fn random_walk(suspects: &[Suspect], explains: &[Vec<usize>]) -> Vec<f64> {
    let n = suspects.len();
    if n == 0 {
        return Vec::new();
    }
    let score = |k: usize| suspects[k].score.max(0.0);
    // Transitions as (to, weight) per node, normalised below.
    let mut out: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
    for (k, e) in explains.iter().enumerate() {
        let mut strongest: f64 = 0.0;
        for &c in e {
            out[k].push((c, score(c)));
            out[c].push((k, BACKWARD * score(k)));
            strongest = strongest.max(score(c));
        }
        out[k].push((k, (score(k) - strongest).max(0.0)));
    }
    let total: f64 = (0..n).map(score).sum();
    let restart: Vec<f64> = (0..n)
        .map(|k| {
            if total > 0.0 {
                score(k) / total
            } else {
                1.0 / n as f64
            }
        })
        .collect();
    let mut p = restart.clone();
    let mut next = vec![0.0; n];
    for _ in 0..ITERATIONS {
        next.iter_mut()
            .zip(&restart)
            .for_each(|(x, r)| *x = RESTART * r);
        for (k, edges) in out.iter().enumerate() {
            let sum: f64 = edges.iter().map(|e| e.1).sum();
            if sum <= 0.0 {
                // Nowhere to go: the walk stays.
                next[k] += (1.0 - RESTART) * p[k];
                continue;
            }
            for &(to, w) in edges {
                next[to] += (1.0 - RESTART) * p[k] * w / sum;
            }
        }
        std::mem::swap(&mut p, &mut next);
    }
    p
}

/// Suspect indices from the most to the least probable origin: by weight, then the
/// earlier onset, then the higher score, then the input order (deterministic).
pub(super) fn order(suspects: &[Suspect], weights: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..suspects.len()).collect();
    idx.sort_by(|&a, &b| {
        weights[b]
            .total_cmp(&weights[a])
            .then(suspects[a].onset.cmp(&suspects[b].onset))
            .then(suspects[b].score.total_cmp(&suspects[a].score))
            .then(a.cmp(&b))
    });
    idx
}
