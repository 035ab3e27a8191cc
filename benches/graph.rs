//! The service graph's cost per cycle: building the call graph from the cycle's edge
//! list and analysing it (onsets, explanations, ranking, symptom marks), at 1,000 nodes
//! and 5,000 edges with 10, 100 and 1,000 anomalous nodes (an incident, a large one, and
//! everything anomalous at once), for each ranking method. Single thread.
//!
//! `cargo bench --bench graph`. The graph is a random layered DAG (each node calls
//! five nodes of later layers), fixed by a seed; anomalous nodes are spread over it.

mod support;

use criterion::{criterion_group, criterion_main, Criterion};
use kpiwatch::config::RankMethod;
use kpiwatch::detect::graph::{CallGraph, GraphAnalyzer};

const NODES: usize = 1_000;
const CALLS_PER_NODE: usize = 5;

/// `(caller, callee, rate)` edges of a layered DAG: node i calls five nodes above i.
fn edges(names: &[String]) -> Vec<(String, String, f64)> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = Vec::new();
    for i in 0..names.len() - 1 {
        for _ in 0..CALLS_PER_NODE {
            let span = (names.len() - i - 1) as u64;
            let j = i + 1 + (next() % span) as usize;
            out.push((
                names[i].clone(),
                names[j].clone(),
                1.0 + (next() % 100) as f64,
            ));
        }
    }
    out
}

fn bench_graph(c: &mut Criterion) {
    let names: Vec<String> = (0..NODES).map(|i| format!("svc-{i:04}")).collect();
    let edges = edges(&names);
    let mut group = c.benchmark_group("graph_cycle_1000_nodes_5000_edges");
    let cases: &[usize] = if support::measuring() {
        &[10, 100, 1_000]
    } else {
        &[10]
    };
    for &anomalous in cases {
        let every = NODES / anomalous;
        let scores: Vec<(&str, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let s = if i % every == 0 {
                    2.0 + (i % 7) as f64
                } else {
                    0.4
                };
                (n.as_str(), s)
            })
            .collect();
        if anomalous == cases[0] {
            group.bench_function("build_only", |b| {
                b.iter(|| {
                    CallGraph::new(
                        edges.iter().map(|(a, b, r)| (a.as_str(), b.as_str(), *r)),
                        0.0,
                    )
                })
            });
        }
        for method in RankMethod::ALL {
            let mut analyzer = GraphAnalyzer::new(method);
            group.bench_function(format!("{}_{anomalous}_anomalous", method.name()), |b| {
                b.iter(|| {
                    let graph = CallGraph::new(
                        edges.iter().map(|(a, b, r)| (a.as_str(), b.as_str(), *r)),
                        0.0,
                    );
                    analyzer.analyze(&graph, &scores)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_graph);
criterion_main!(benches);
