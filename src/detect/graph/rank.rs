//! The ranking methods ([`RankMethod`], documented with the config): how likely each
//! anomalous node is the origin of the incident.

use super::Suspect;
use crate::config::RankMethod;

/// Weight of an explained node against an unexplained one of the same score in
/// [`RankMethod::Frontier`].
const EXPLAINED_FACTOR: f64 = 0.01;
/// Random walk: probability of restarting at each step.
const RESTART: f64 = 0.15;
/// Random walk: weight of a step back toward a caller, relative to its score.
const BACKWARD: f64 = 0.2;
/// Random walk: most power iterations, and the total change of the distribution in one
/// below which it has converged.
const ITERATIONS: usize = 50;
const CONVERGED: f64 = 1e-9;

/// Per suspect a weight by `method`, larger = more probable origin (≥ 0).
pub(super) fn weights(
    method: RankMethod,
    suspects: &[Suspect],
    explains: &[Vec<usize>],
) -> Vec<f64> {
    match method {
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
        let change: f64 = p.iter().zip(&next).map(|(a, b)| (a - b).abs()).sum();
        std::mem::swap(&mut p, &mut next);
        if change < CONVERGED {
            break;
        }
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
