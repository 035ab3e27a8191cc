//! The CSV inputs of the offline commands: `dataset::parse_csv` (`kpiwatch detect ...`),
//! `LoadTest::parse_csv` (`kpiwatch regress`), and the commands themselves run on
//! edited files: a table or a clear `file:line` error, and an exit code, never a panic.

use std::path::Path;
use std::process::Command;

use kpiwatch::dataset::{parse_csv, DatasetError};
use kpiwatch::detect::regress::LoadTest;
use proptest::prelude::*;

use super::mutate;
use crate::common::BIN;

fn repo_text(p: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first `rows` lines of a shipped file: edits land on headers and cells alike, and
/// the offline commands finish quickly in a debug build.
fn head(p: &str, rows: usize) -> String {
    repo_text(p)
        .lines()
        .take(rows + 1)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A recorded lab entity (`detect ...` input: timestamp, metrics, label).
fn detect_seeds() -> Vec<String> {
    vec![
        head("tests/data/lab/anomaly/mixed/home.csv", 60),
        "timestamp,value,label\n2015-01-01 00:00:00,1.5,0\n1420070460,,1\n2015-01-01T00:02:00Z,NaN,0\n1420070580,2,0\n"
            .to_string(),
    ]
}

/// Shipped load tests (`regress` input: timestamp, workload, KPIs).
fn load_test_seeds() -> Vec<String> {
    vec![
        head("models/golden/regress_pair3_baseline.csv", 40),
        head("models/golden/regress_pair1_current.csv", 21),
    ]
}

fn lines_of(text: &str) -> usize {
    text.lines().count()
}

proptest! {
    #![proptest_config(mutate::config(1000))]

    /// An edited CSV is a rectangular table or an error naming the file (and the line,
    /// within the file, for a bad row).
    #[test]
    fn edited_tables_parse_or_name_file_and_line(text in mutate::mutated_text(detect_seeds(), 4)) {
        match parse_csv(&text, Path::new("in.csv")) {
            Ok(t) => {
                prop_assert_eq!(t.names.len(), t.columns.len());
                prop_assert!(t.columns.iter().all(|c| c.len() == t.len()));
                prop_assert!(t.len() <= lines_of(&text));
            }
            Err(e) => {
                prop_assert!(e.to_string().starts_with("in.csv"), "{e}");
                if let DatasetError::Row { line, .. } = e {
                    prop_assert!((2..=lines_of(&text)).contains(&line), "line {line}");
                }
            }
        }
    }

    /// An edited load test is ordered, finite-stamped and rectangular, or an error
    /// naming the file.
    #[test]
    fn edited_load_tests_parse_or_name_the_file(text in mutate::mutated_text(load_test_seeds(), 4)) {
        match LoadTest::parse_csv(&text, "base.csv") {
            Ok(t) => {
                prop_assert!(t.timestamp.iter().all(|x| x.is_finite()));
                prop_assert!(t.timestamp.windows(2).all(|w| w[0] < w[1]));
                prop_assert_eq!(t.workload.len(), t.len());
                prop_assert!(t.kpis.iter().flatten().all(|k| k.len() == t.len()));
            }
            Err(e) => prop_assert!(e.to_string().contains("base.csv"), "{e}"),
        }
    }

    /// Any text at all: an error or a table, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in "(\\PC|,|\n|\"){0,300}") {
        let _ = parse_csv(&text, Path::new("in.csv"));
        let _ = LoadTest::parse_csv(&text, "in.csv");
    }

    /// Generated tables round-trip: every value written in Rust's shortest form reads
    /// back bit for bit (NaN as NaN, empty cells as NaN).
    #[test]
    fn generated_tables_round_trip(
        names in prop::collection::btree_set("[a-z][a-z0-9_]{0,8}", 1..5),
        rows in prop::collection::vec(prop::collection::vec(any::<f64>(), 5), 0..20),
    ) {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut text = format!("{}\n", names.join(","));
        for r in &rows {
            let cells: Vec<String> = r[..names.len()].iter().map(|v| v.to_string()).collect();
            text.push_str(&cells.join(","));
            text.push('\n');
        }
        let t = parse_csv(&text, Path::new("gen.csv")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(t.len(), rows.len());
        for (c, name) in names.iter().enumerate() {
            let got = t.column(name).unwrap_or_default();
            for (g, r) in got.iter().zip(&rows) {
                let want = r[c];
                prop_assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "{g} != {want}");
            }
        }
    }
}

/// How the offline commands may end: success, an error (1, e.g. `regress` on a bad
/// file), bad input (2), and for `regress` a regression (3) or insufficient data (4),
/// verdicts like 0; an error or bad input says why on stderr. A panic exits with 101.
fn assert_clean_exit(out: &std::process::Output, allowed: &[i32]) -> Result<(), TestCaseError> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    prop_assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let code = out.status.code();
    prop_assert!(
        code.is_some_and(|c| allowed.contains(&c)),
        "exit {code:?}: {stderr}"
    );
    if matches!(code, Some(1 | 2)) {
        prop_assert!(
            stderr.lines().any(|l| l.starts_with("kpiwatch")),
            "no error message: {stderr:?}"
        );
    }
    Ok(())
}

proptest! {
    // Each case starts the binary: fewer cases than the in-process suites.
    #![proptest_config(mutate::config(64))]

    /// `kpiwatch detect zscore` on an edited CSV exits 0, 1 or 2.
    #[test]
    fn detect_zscore_exits_cleanly_on_edited_input(text in mutate::mutated(
        detect_seeds().into_iter().map(String::into_bytes).collect(), 3)
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let input = dir.path().join("in.csv");
        std::fs::write(&input, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let out = Command::new(BIN)
            .args(["detect", "zscore", "--history", "32", "--input"])
            .arg(&input)
            .output()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_clean_exit(&out, &[0, 1, 2])?;
    }

    /// `kpiwatch regress` on an edited baseline and current exits 0 to 4.
    #[test]
    fn regress_exits_cleanly_on_edited_input(
        base in mutate::mutated(load_test_seeds().into_iter().map(String::into_bytes).collect(), 3),
        current in mutate::mutated(load_test_seeds().into_iter().map(String::into_bytes).collect(), 1),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (b, c) = (dir.path().join("base.csv"), dir.path().join("current.csv"));
        std::fs::write(&b, &base).map_err(|e| TestCaseError::fail(e.to_string()))?;
        std::fs::write(&c, &current).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let out = Command::new(BIN)
            .args(["regress", "--min-points", "5", "--baseline"])
            .arg(&b)
            .arg("--current")
            .arg(&c)
            .output()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        assert_clean_exit(&out, &[0, 1, 2, 3, 4])?;
    }
}

/// Found by `detect_zscore_exits_cleanly_on_edited_input`: a CSV with a header and no
/// rows made `kpiwatch detect zscore` exit 1 without saying why (with a label column,
/// after accuracy figures over zero rows).
#[test]
fn detect_zscore_says_why_a_header_alone_fails() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "timestamp,value,label\n").expect("write");
    let out = Command::new(BIN)
        .args(["detect", "zscore", "--input"])
        .arg(&input)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The reason, and no accuracy figures over zero rows before it.
    assert!(stderr.starts_with("kpiwatch: "), "{stderr}");
    assert!(
        stderr.contains("in.csv") && stderr.contains("no data rows"),
        "{stderr}"
    );
}
