//! The subsequence graph of Algorithm 1 (line 3) and its connected components.
//!
//! Nodes are subsequences: `T_n` subsequences are nodes `0..n_train`, `T_a` subsequences
//! are nodes `n_train..n_train + n_test`. Edges:
//!
//! * `i – NN(i)` for each `T_n` subsequence whose self-join distance is at most the
//!   `T_n` cut (the percentile guard of the paper's §5.3; with a clean `T_n` the cut is
//!   the maximum and every edge exists). `T_n` nodes above the cut are **removed** from
//!   the graph with their edges, as the reference does, so `T_a` subsequences whose
//!   nearest neighbour is such a node become isolated, i.e. anomaly candidates.
//! * `j – NN(j)` for each `T_a` subsequence whose AB-join distance is at most the `T_a`
//!   cut (the p-th percentile); otherwise the node stays isolated.
//!
//! Components come out in the order the reference (networkx) yields them: ordered by
//! the first node of each component in the order nodes were inserted into the graph
//! (for each `T_n` subsequence `i`: `i`, then `NN(i)`; then the `T_a` nodes). Members
//! are listed in ascending node order. That order matters: Affinity Propagation's
//! tie-breaking noise is drawn per position.

use super::matrix_profile::MatrixProfile;

/// Disjoint-set forest with path halving and union by size.
#[derive(Debug, Clone)]
pub(crate) struct UnionFind {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl UnionFind {
    /// `n` singletons.
    pub(crate) fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    /// Representative of `x`'s set.
    pub(crate) fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    /// Merges the sets of `a` and `b`; returns `false` if they were already one.
    pub(crate) fn union(&mut self, a: usize, b: usize) -> bool {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        if self.size[ra] < self.size[rb] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb] = ra;
        self.size[ra] += self.size[rb];
        true
    }
}

/// Connected components of the subsequence graph.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Components {
    /// Number of `T_n` nodes (`T_a` node `j` is node `n_train + j`).
    pub n_train: usize,
    /// Members of each component, ascending; components in the reference's order.
    pub members: Vec<Vec<usize>>,
}

impl Components {
    /// `true` when component `c` is a single `T_a` node: an anomaly candidate.
    pub(crate) fn is_candidate(&self, c: usize) -> bool {
        let m = &self.members[c];
        m.len() == 1 && m[0] >= self.n_train
    }
}

/// Builds the graph from the two matrix profiles and returns its components.
///
/// `train_cut` and `test_cut` are the distance cuts (edges need `distance <= cut`).
#[allow(clippy::needless_range_loop)] // node ids index several parallel arrays
pub(crate) fn components(
    train: &MatrixProfile,
    train_cut: f64,
    test: &MatrixProfile,
    test_cut: f64,
) -> Components {
    let nt = train.len();
    let na = test.len();
    let n = nt + na;
    let mut uf = UnionFind::new(n);
    let mut removed = vec![false; nt];
    // Insertion rank of each node, as networkx would record it.
    let mut rank = vec![usize::MAX; n];
    let mut next = 0usize;
    let mut insert = |rank: &mut Vec<usize>, v: usize| {
        if rank[v] == usize::MAX {
            rank[v] = next;
            next += 1;
        }
    };
    for i in 0..nt {
        insert(&mut rank, i);
        let j = train.index[i];
        if j < nt {
            insert(&mut rank, j);
        }
        // NaN and +inf distances (no neighbour) fail `<=`: no edge, and removed.
        if train.distance[i] <= train_cut && j < nt {
            uf.union(i, j);
        } else if train.distance[i] > train_cut || train.distance[i].is_nan() {
            removed[i] = true;
        }
    }
    // Removing a node drops its edges: rebuild the T_n part without removed nodes.
    if removed.iter().any(|&r| r) {
        uf = UnionFind::new(n);
        for i in 0..nt {
            let j = train.index[i];
            if !removed[i] && j < nt && !removed[j] && train.distance[i] <= train_cut {
                uf.union(i, j);
            }
        }
    }
    for k in 0..na {
        insert(&mut rank, nt + k);
        let j = test.index[k];
        if test.distance[k] <= test_cut && j < nt && !removed[j] {
            uf.union(j, nt + k);
        }
    }
    // Group by root; order groups by their earliest-inserted member.
    let mut root_group = vec![usize::MAX; n];
    let mut first_rank: Vec<usize> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for v in 0..n {
        if v < nt && removed[v] {
            continue;
        }
        let r = uf.find(v);
        if root_group[r] == usize::MAX {
            root_group[r] = members.len();
            members.push(Vec::new());
            first_rank.push(usize::MAX);
        }
        let g = root_group[r];
        members[g].push(v);
        first_rank[g] = first_rank[g].min(rank[v]);
    }
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&g| first_rank[g]);
    let mut sorted = Vec::with_capacity(members.len());
    for g in order {
        sorted.push(std::mem::take(&mut members[g]));
    }
    Components {
        n_train: nt,
        members: sorted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(distance: Vec<f64>, index: Vec<usize>) -> MatrixProfile {
        MatrixProfile { distance, index }
    }

    #[test]
    fn union_find_merges_transitively() {
        let mut uf = UnionFind::new(5);
        assert!(uf.union(0, 1));
        assert!(uf.union(3, 4));
        assert!(!uf.union(1, 0));
        assert!(uf.union(1, 4));
        assert_eq!(uf.find(0), uf.find(3));
        assert_ne!(uf.find(2), uf.find(0));
    }

    #[test]
    fn test_nodes_above_the_cut_are_isolated_candidates() {
        // T_n: 0-2, 1-3 (two components). T_a: node 4 -> 1 (kept), node 5 -> 0 (cut).
        let train = mp(vec![0.1, 0.1, 0.1, 0.1], vec![2, 3, 0, 1]);
        let test = mp(vec![0.2, 0.9], vec![1, 0]);
        let c = components(&train, 1.0, &test, 0.5);
        assert_eq!(c.members, vec![vec![0, 2], vec![1, 3, 4], vec![5]]);
        assert!(c.is_candidate(2));
        assert!(!c.is_candidate(0));
    }

    #[test]
    fn components_follow_networkx_insertion_order() {
        // Node 0's neighbour is 3, so insertion order is 0, 3, 1, 2: the component
        // holding 3 and the one holding 1 keep that order even though 1 < 3.
        let train = mp(vec![0.1, 0.1, 0.1, 0.1], vec![3, 2, 1, 0]);
        let test = mp(vec![], vec![]);
        let c = components(&train, 1.0, &test, 0.0);
        assert_eq!(c.members, vec![vec![0, 3], vec![1, 2]]);
    }

    #[test]
    fn guard_removes_noisy_train_nodes_and_their_edges() {
        // Node 1 is above the T_n cut: removed; node 2 pointed at it and is left alone
        // only if nothing else links it; the T_a node pointing at 1 becomes a candidate.
        let train = mp(vec![0.1, 5.0, 0.1, 0.1], vec![3, 2, 1, 0]);
        let test = mp(vec![0.1], vec![1]);
        let c = components(&train, 1.0, &test, 1.0);
        assert_eq!(c.members, vec![vec![0, 3], vec![2], vec![4]]);
        assert!(c.is_candidate(2));
        assert!(!c.is_candidate(1));
    }
}
