//! Lists that exist in more than one place agree with the code: the README's detector
//! defaults and the example config's (commented-out) detector and regression blocks
//! match the options' `Default`s, and the README's metric tables, `deploy_lint.py`'s
//! `EXPORTED` and the metric names in `src/` are one list. (The running agent's
//! `/metrics` is checked against the same README list in `tests/e2e.rs`.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kpiwatch::config::{self, judge, Config};
use kpiwatch::detect::adsketch::AdsketchOptions;
use kpiwatch::detect::uniad::UniadOptions;
use kpiwatch::detect::zscore::ZscoreOptions;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The example with its commented-out `adsketch:`, `uniad:` and `regressions:` blocks
/// turned on (`<indent># key:` and the `<indent>#   ...` lines below it), the model
/// paths pointed at this checkout's `models/`.
fn example_with_every_block() -> String {
    let mut out = String::new();
    let mut in_block: Option<usize> = None;
    for line in read("config/kpiwatch.example.yaml").lines() {
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start();
        let opens = ["# adsketch:", "# uniad:", "# regressions:"].contains(&body);
        if opens {
            in_block = Some(indent);
        } else if in_block.is_some_and(|i| i != indent || !body.starts_with("#   ")) {
            in_block = None;
        }
        if in_block.is_some() {
            out.push_str(&line[..indent]);
            out.push_str(&body["# ".len()..]);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.replace(
        "/usr/share/kpiwatch/models",
        &repo("models").display().to_string(),
    )
}

fn load_example_with_every_block() -> Config {
    let env = std::collections::HashMap::<String, String>::new();
    let text = example_with_every_block();
    config::parse_str(&text, &repo("config/kpiwatch.example.yaml"), &env)
        .unwrap_or_else(|e| panic!("the example with every block on:\n{e}\n---\n{text}"))
}

#[test]
fn example_detector_and_regression_blocks_parse_and_show_the_defaults() {
    let cfg = load_example_with_every_block();
    let d = &cfg.groups[0].detectors;
    let uniad = d.uniad.clone().expect("the example's uniad block");
    assert_eq!(
        uniad,
        UniadOptions::new(uniad.model.clone()),
        "uniad: every value shown is the default"
    );
    assert_eq!(
        d.adsketch.clone().expect("the example's adsketch block"),
        AdsketchOptions {
            // The example fits T_n + T_a into its 6h history at step 15s.
            train_points: 1080,
            ..AdsketchOptions::default()
        }
    );
    assert_eq!(d.zscore, Some(ZscoreOptions::default()));
    let r = cfg.regressions.expect("the example's regressions block");
    let defaults = judge::Options::default();
    assert_eq!(r.options.method, defaults.method);
    assert_eq!(r.options.threshold, defaults.threshold);
    assert_eq!(r.options.alpha, defaults.alpha);
    assert_eq!(
        r.options.limits.max_gap_fraction,
        defaults.limits.max_gap_fraction
    );
    assert_eq!(r.kpis.len(), judge::Kpi::ALL.len());
}

/// The README's `| `groups[].detectors.<d>[.sub].{a,b}` | `v1`, `v2` | … |` rows as
/// (dotted key below the detector, default as written).
fn readme_detector_defaults(detector: &str) -> Vec<(String, String)> {
    let prefix = format!("| `groups[].detectors.{detector}.");
    let mut out = Vec::new();
    for row in read("README.md").lines().filter(|l| l.starts_with(&prefix)) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let key = cells[1].trim_matches('`');
        let key = &key[prefix.len() - 3..]; // after "groups[].detectors.<d>."
        let (sub, names) = match key.rsplit_once(".{") {
            Some((sub, names)) => (format!("{sub}."), names.trim_end_matches('}')),
            None => (
                String::new(),
                key.trim_start_matches('{').trim_end_matches('}'),
            ),
        };
        let values: Vec<&str> = cells[2].split(", ").map(|v| v.trim_matches('`')).collect();
        let names: Vec<&str> = names.split(',').collect();
        assert_eq!(names.len(), values.len(), "README row {row}");
        for (n, v) in names.iter().zip(values) {
            out.push((format!("{sub}{n}"), v.to_string()));
        }
    }
    assert!(!out.is_empty(), "no README rows for {detector}");
    out
}

fn assert_readme_defaults(detector: &str, defaults: serde_json::Value) {
    for (key, written) in readme_detector_defaults(detector) {
        let mut actual = &defaults;
        for part in key.split('.') {
            actual = &actual[part];
        }
        let same = match actual {
            serde_json::Value::Number(n) => written.parse::<f64>().ok() == n.as_f64(),
            serde_json::Value::Bool(b) => written == b.to_string(),
            serde_json::Value::String(s) => &written == s || written == "required",
            other => panic!("{detector}.{key}: unexpected default {other}"),
        };
        assert!(
            same,
            "README says {detector}.{key} defaults to {written}, the code to {actual}"
        );
    }
}

#[test]
fn readme_detector_defaults_are_the_code_defaults() {
    assert_readme_defaults(
        "zscore",
        serde_json::to_value(ZscoreOptions::default()).unwrap(),
    );
    assert_readme_defaults(
        "uniad",
        serde_json::to_value(UniadOptions::new("required")).unwrap(),
    );
    assert_readme_defaults(
        "adsketch",
        serde_json::to_value(AdsketchOptions::default()).unwrap(),
    );
}

/// `deploy_lint.py`'s `HISTOGRAMS` and `EXPORTED` sets.
fn lint_metrics() -> BTreeSet<String> {
    let lint = read("scripts/deploy_lint.py");
    let mut names = BTreeSet::new();
    for set in ["HISTOGRAMS = {", "EXPORTED = {"] {
        let start = lint
            .find(set)
            .unwrap_or_else(|| panic!("deploy_lint.py has {set}"));
        let body = &lint[start..start + lint[start..].find('}').expect("set end")];
        names.extend(
            body.split('"')
                .skip(1)
                .step_by(2)
                .filter(|n| n.starts_with("kpiwatch_"))
                .map(str::to_string),
        );
    }
    names
}

#[test]
fn readme_and_deploy_lint_list_the_same_metrics_and_the_code_defines_each() {
    let readme = crate::common::readme_metrics();
    let lint = lint_metrics();
    assert_eq!(
        readme.difference(&lint).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in the README, missing from deploy_lint.py's EXPORTED"
    );
    assert_eq!(
        lint.difference(&readme).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in deploy_lint.py, missing from the README"
    );
    let mut src = String::new();
    for f in crate::support::rust_files(&repo("src")) {
        src.push_str(&std::fs::read_to_string(f).expect("source"));
    }
    for name in &readme {
        // A string literal that starts with the whole name: `"kpiwatch_x"` as registered,
        // or `"kpiwatch_x{..."` as rendered by hand.
        let quoted = format!("\"{name}");
        let named = src.match_indices(&quoted).any(|(i, _)| {
            src[i + quoted.len()..]
                .chars()
                .next()
                .is_some_and(|c| !(c.is_ascii_alphanumeric() || c == '_'))
        });
        assert!(named, "{name} is documented but no source file names it");
    }
}
