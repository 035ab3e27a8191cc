//! Golden tests: tract reproduces PyTorch on the exported DynamicRegress model.
//!
//! `models/golden/regress_golden.json` and `models/golden/regress_pair*.csv` are written
//! by `models/train/regress/export.py` from the same weights as `models/regress_*.onnx`.

use std::path::{Path, PathBuf};

use super::*;

const TOL: f32 = 1e-4;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

#[derive(serde::Deserialize)]
struct EncoderCase {
    batch: usize,
    len: usize,
    x: Vec<f32>,
    z: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct HeadCase {
    batch: usize,
    z1: Vec<f32>,
    z2: Vec<f32>,
    p: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct PairCase {
    id: usize,
    probability: std::collections::BTreeMap<String, f32>,
}

#[derive(serde::Deserialize)]
struct Golden {
    hidden: usize,
    encoder: Vec<EncoderCase>,
    head: HeadCase,
    pairs: Vec<PairCase>,
}

fn golden() -> Golden {
    let text =
        std::fs::read_to_string(models().join("golden/regress_golden.json")).expect("golden file");
    serde_json::from_str(&text).expect("golden parses")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tract_reproduces_the_encoder_and_head() {
    let g = golden();
    let m = RegressModel::load(&models()).expect("model loads");
    assert_eq!(m.hidden(), g.hidden);
    for case in &g.encoder {
        let z = m.embed_batch(&case.x, case.batch, case.len).unwrap();
        let d = max_diff(&z, &case.z);
        assert!(
            d <= TOL,
            "encoder batch {} len {}: max |diff| {d}",
            case.batch,
            case.len
        );
    }
    let p = m
        .probability_batch(&g.head.z1, &g.head.z2, g.head.batch)
        .unwrap();
    let want: Vec<f32> = g.head.p.chunks_exact(2).map(|r| r[1]).collect();
    assert!(max_diff(&p, &want) <= TOL);
}

#[test]
fn cached_baseline_embedding_gives_the_same_probability() {
    let g = golden();
    let m = RegressModel::load(&models()).unwrap();
    let a = &g.encoder[0]; // batch 4, equal lengths
    let seq = |i: usize| &a.x[i * a.len * 2..(i + 1) * a.len * 2];
    let zb = m.embed(seq(0)).unwrap();
    let direct = m.pair_probability(seq(0), seq(1)).unwrap();
    let cached = m.probability(&zb, &m.embed(seq(1)).unwrap()).unwrap();
    assert_eq!(direct, cached);
    // identical windows: |z1 − z2| = 0, the head's bias alone must say "normal"
    assert!(m.pair_probability(seq(2), seq(2)).unwrap() < 0.5);
}

#[test]
fn csv_pairs_match_python_end_to_end() {
    let g = golden();
    let m = RegressModel::load(&models()).unwrap();
    let opts = Options {
        limits: Limits {
            min_points: 2,
            ..Limits::default()
        },
        ..Options::default()
    };
    for pair in &g.pairs {
        let dir = models().join("golden");
        let b =
            LoadTest::read_csv(&dir.join(format!("regress_pair{}_baseline.csv", pair.id))).unwrap();
        let c =
            LoadTest::read_csv(&dir.join(format!("regress_pair{}_current.csv", pair.id))).unwrap();
        let r = compare(&b, &c, &opts, Some(&m)).unwrap();
        for (kpi, want) in &pair.probability {
            let got = r.kpis[kpi.as_str()].probability.unwrap() as f32;
            assert!(
                (got - want).abs() <= TOL,
                "pair {} {kpi}: {got} vs {want}",
                pair.id
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let m = RegressModel::load(&models()).unwrap();
    assert!(m.embed_batch(&[0.0; 5], 1, 3).is_err());
    assert!(m.embed(&[]).is_err());
    assert!(m.probability(&[0.0; 3], &[0.0; 3]).is_err());
    let missing = RegressModel::load(Path::new("/nonexistent")).unwrap_err();
    assert!(missing.to_string().contains("regress_encoder.onnx"));
}
