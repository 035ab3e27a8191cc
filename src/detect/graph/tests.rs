use super::*;

/// The shop's calls that matter here: frontend → catalog, checkout; catalog → cache,
/// database; checkout → payment → database.
fn shop() -> CallGraph {
    CallGraph::new(
        [
            ("frontend", "catalog", 10.0),
            ("frontend", "checkout", 2.0),
            ("catalog", "cache", 10.0),
            ("catalog", "database", 3.0),
            ("checkout", "payment", 2.0),
            ("payment", "database", 2.0),
        ],
        0.0,
    )
}

fn verdict<'a>(out: &'a [NodeVerdict], name: &str) -> &'a NodeVerdict {
    out.iter()
        .find(|v| v.name == name)
        .expect("node in the output")
}

const NORMAL: [(&str, f64); 6] = [
    ("frontend", 0.3),
    ("catalog", 0.2),
    ("checkout", 0.4),
    ("cache", 0.1),
    ("database", 0.5),
    ("payment", 0.2),
];

#[test]
fn a_slow_leaf_is_the_origin_and_its_callers_are_its_symptoms() {
    // The random walk keeps weight at a caller whose score is far above its
    // dependency's (the walk's self-loop): only the frontier promises this.
    {
        let method = RankMethod::Frontier;
        let mut a = GraphAnalyzer::new(method);
        let out = a.analyze(&shop(), &NORMAL);
        assert!(out
            .iter()
            .all(|v| v.rank.is_none() && v.symptom_of.is_none()));
        // The callers' scores are higher than the database's: a score ranking is wrong.
        let incident = [
            ("frontend", 4.0),
            ("catalog", 6.0),
            ("checkout", 0.4),
            ("cache", 0.1),
            ("database", 2.0),
            ("payment", 5.0),
        ];
        let out = a.analyze(&shop(), &incident);
        let db = verdict(&out, "database");
        assert_eq!(db.rank, Some(1), "{method:?}: {out:?}");
        assert_eq!(db.symptom_of, None);
        assert!(db.graph_score() > 1.0);
        for caller in ["frontend", "catalog", "payment"] {
            let v = verdict(&out, caller);
            assert_eq!(
                v.symptom_of.as_deref(),
                Some("database"),
                "{method:?} {caller}"
            );
            assert!(v.graph_score() <= 1.0);
            assert!(v.rank.unwrap() > 1);
        }
        assert_eq!(verdict(&out, "cache").rank, None);
        let shares: f64 = out.iter().map(|v| v.rootcause_score).sum();
        assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    }
}

#[test]
fn the_random_walk_ends_at_the_dependency_its_callers_share() {
    let mut a = GraphAnalyzer::new(RankMethod::RandomWalk);
    let incident = [
        ("frontend", 3.0),
        ("catalog", 3.5),
        ("payment", 3.0),
        ("database", 3.5),
    ];
    let out = a.analyze(&shop(), &incident);
    assert_eq!(verdict(&out, "database").rank, Some(1), "{out:?}");
    assert_eq!(
        verdict(&out, "catalog").symptom_of.as_deref(),
        Some("database")
    );
}

#[test]
fn highest_score_ranks_by_score_alone() {
    let mut a = GraphAnalyzer::new(RankMethod::HighestScore);
    let out = a.analyze(&shop(), &[("frontend", 4.0), ("database", 2.0)]);
    assert_eq!(verdict(&out, "frontend").rank, Some(1));
    assert_eq!(verdict(&out, "database").rank, Some(2));
    // The frontend reaches the database, but a symptom's cause must rank above it.
    assert_eq!(verdict(&out, "frontend").symptom_of, None);
}

#[test]
fn a_caller_that_went_anomalous_first_is_not_a_symptom() {
    let mut a = GraphAnalyzer::new(RankMethod::Frontier);
    a.analyze(&shop(), &[("frontend", 3.0), ("database", 0.5)]);
    let out = a.analyze(&shop(), &[("frontend", 3.0), ("database", 2.0)]);
    let front = verdict(&out, "frontend");
    assert_eq!(front.symptom_of, None, "{out:?}");
    assert_eq!(front.rank, Some(1));
    assert!(front.graph_score() > 1.0);
    // Once the frontend recovers, its onset is forgotten: a new anomaly starts anew.
    a.analyze(&shop(), &[("frontend", 0.5), ("database", 2.0)]);
    let out = a.analyze(&shop(), &[("frontend", 3.0), ("database", 2.0)]);
    assert_eq!(
        verdict(&out, "frontend").symptom_of.as_deref(),
        Some("database")
    );
}

#[test]
fn an_anomaly_is_explained_through_a_dependency_that_looks_normal() {
    // frontend → checkout (normal) → payment (anomalous).
    let mut a = GraphAnalyzer::new(RankMethod::Frontier);
    let out = a.analyze(
        &shop(),
        &[("frontend", 3.0), ("checkout", 0.8), ("payment", 2.0)],
    );
    assert_eq!(verdict(&out, "payment").rank, Some(1));
    assert_eq!(
        verdict(&out, "frontend").symptom_of.as_deref(),
        Some("payment")
    );
    assert_eq!(verdict(&out, "checkout").rank, None);
}

#[test]
fn an_entry_fault_alone_is_its_own_origin() {
    let mut a = GraphAnalyzer::new(RankMethod::RandomWalk);
    let out = a.analyze(
        &shop(),
        &[("frontend", 3.0), ("catalog", 0.9), ("database", 0.2)],
    );
    assert_eq!(verdict(&out, "frontend").rank, Some(1));
    assert_eq!(verdict(&out, "frontend").symptom_of, None);
    assert_eq!(verdict(&out, "frontend").rootcause_score, 1.0);
}

#[test]
fn in_a_call_cycle_the_first_ranked_node_is_never_a_symptom() {
    let g = CallGraph::new([("a", "b", 1.0), ("b", "a", 1.0)], 0.0);
    for method in RankMethod::ALL {
        let mut an = GraphAnalyzer::new(method);
        let out = an.analyze(&g, &[("a", 2.0), ("b", 3.0)]);
        let first = out.iter().find(|v| v.rank == Some(1)).unwrap();
        assert_eq!(first.symptom_of, None, "{method:?}");
        assert_eq!(out.iter().filter(|v| v.symptom_of.is_some()).count(), 1);
    }
}

#[test]
fn nodes_without_edges_are_ranked_by_their_score_and_explain_nothing() {
    let mut a = GraphAnalyzer::new(RankMethod::Frontier);
    let out = a.analyze(
        &shop(),
        &[("batch", 5.0), ("database", 2.0), ("payment", 3.0)],
    );
    assert_eq!(verdict(&out, "batch").rank, Some(1));
    assert_eq!(verdict(&out, "database").rank, Some(2));
    assert_eq!(
        verdict(&out, "payment").symptom_of.as_deref(),
        Some("database")
    );
    assert!(out.iter().all(|v| v.score.is_nan() || v.rank.is_some()));
}

#[test]
fn edges_below_the_minimum_rate_are_dropped_and_repeats_add_up() {
    let g = CallGraph::new(
        [
            ("a", "b", 0.4),
            ("a", "b", 0.4),
            ("a", "c", 0.5),
            ("a", "a", 9.0),
            ("c", "d", f64::NAN),
            ("s", "t", f64::INFINITY),
        ],
        0.6,
    );
    assert_eq!(g.edge_count(), 2, "a→b (0.8) and the static s→t");
    assert_eq!(
        g.callees(g.node("a").unwrap()),
        &[(g.node("b").unwrap(), 0.8)]
    );
    assert_eq!(g.node_count(), 6);
    let known = |n: &str| n != "t";
    assert_eq!(g.edges_to_unknown(known), 1);
    let mut a = GraphAnalyzer::new(RankMethod::Frontier);
    let out = a.analyze(&g, &[("a", 2.0), ("c", 3.0)]);
    assert_eq!(
        verdict(&out, "a").symptom_of,
        None,
        "a → c is below the minimum"
    );
}

#[test]
fn a_nan_score_is_not_anomalous() {
    let mut a = GraphAnalyzer::new(RankMethod::Frontier);
    let out = a.analyze(&shop(), &[("frontend", f64::NAN), ("database", 2.0)]);
    assert_eq!(verdict(&out, "frontend").rank, None);
    assert_eq!(verdict(&out, "database").rank, Some(1));
}

#[test]
fn method_names_round_trip() {
    for m in RankMethod::ALL {
        assert_eq!(RankMethod::parse(m.name()), Some(m));
    }
    assert_eq!(RankMethod::parse("pagerank"), None);
}
