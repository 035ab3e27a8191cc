//! The agent's robust z-score (`kpiwatch::normalize::RobustStats`) against the one Uni-AD
//! is trained with (`models/train/uniad/data.py`): `models/golden/normalize_flat.json`,
//! written by `models/train/uniad/make_normalize_golden.py`, holds series (flat, constant,
//! mostly zero, steps, gaps as `null`, noisy) with the training side's median, scale,
//! count and z-scores. Both must agree within a relative 1e-9.

use std::path::Path;

use kpiwatch::normalize::RobustStats;

#[derive(serde::Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    values: Vec<Option<f64>>,
    median: f64,
    scale: f64,
    count: usize,
    z: Vec<Option<f64>>,
}

fn golden() -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/golden/normalize_flat.json");
    let text = std::fs::read_to_string(&path).expect("models/golden/normalize_flat.json exists");
    serde_json::from_str(&text).expect("normalize_flat.json parses")
}

/// Equal within a relative 1e-9 (exactly equal when either side is 0).
fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn robust_stats_match_the_training_normaliser() {
    let g = golden();
    assert!(g.cases.len() >= 6, "too few golden series");
    let mut scratch = Vec::new();
    for c in &g.cases {
        let values: Vec<f64> = c.values.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
        // No finite value: the agent has no statistics and uses the identity; the
        // training side writes the identity's median and scale with count 0.
        let s = RobustStats::fit(&values, &mut scratch).unwrap_or(RobustStats::IDENTITY);
        assert_eq!(s.count, c.count, "{}: count", c.name);
        assert!(
            close(s.median, c.median),
            "{}: median {} vs {}",
            c.name,
            s.median,
            c.median
        );
        assert!(
            close(s.scale, c.scale),
            "{}: scale {} vs {}",
            c.name,
            s.scale,
            c.scale
        );
        assert_eq!(c.z.len(), values.len(), "{}: one z per value", c.name);
        for (i, (&x, want)) in values.iter().zip(&c.z).enumerate() {
            let got = s.z(x);
            match want {
                Some(w) => assert!(close(got, *w), "{}[{i}]: z {got} vs {w}", c.name),
                None => assert!(got.is_nan(), "{}[{i}]: z {got}, want NaN (a gap)", c.name),
            }
        }
    }
}

#[test]
fn golden_covers_the_flat_cases() {
    let g = golden();
    let names: Vec<&str> = g.cases.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "flat",
        "constant_zero",
        "mostly_zero_bursts",
        "nan_gaps",
        "normal_noisy",
        "step",
    ] {
        assert!(names.contains(&want), "golden lacks the series {want}");
    }
}
