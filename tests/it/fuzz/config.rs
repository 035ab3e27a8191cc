//! The config loader (`config::parse_str`: `${ENV}` expansion, YAML, validation) and
//! its two small parsers (`expand_env`, `parse_duration`) on mutated and generated
//! input: never a panic, and every error names the file and says what is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kpiwatch::config::{self, expand_env, format_duration, parse_duration, ConfigErrors};
use proptest::prelude::*;

use super::mutate;

/// Where the mutated configs claim to come from: the presets directory, so that the
/// relative file references resolve as they do for the example.
fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/presets/fuzzed.yaml")
}

fn repo_text(p: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Drops comment lines: edits of comments test nothing.
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Every key the loader knows, in one valid file (a regressions section, each detector,
/// shard, headers, `${ENV}` references).
const RICH: &str = r#"prometheus:
  url: ${PROM_URL:-http://127.0.0.1:9090}
  timeout: 10s
  max_concurrency: 4
  max_response_bytes: 1048576
  retries: 2
  retry_backoff: 200ms
  headers:
    X-Scope-OrgID: ${TENANT}
server:
  listen: 127.0.0.1:9847
shard:
  total: 3
  index: 1
state_save_interval: 1m
groups:
  - name: node
    interval: 30s
    step: 15s
    window: 32
    history: 1d
    entity_labels: [instance, job]
    expire_after: 10m
    max_entities: 100
    fill: zero
    seasonality: [1h]
    seasonality_history: 1d
    seasonality_adapt_after: 30m
    metrics:
      cpu: 'sum by (instance, job) (rate(node_cpu_seconds_total{mode!="idle"}[1m]))'
      load1: node_load1
    gates:
      cpu: {direction: up, min_deviation: 0.1}
    detectors:
      zscore: {threshold: 4.0}
      adsketch: {}
regressions:
  interval: 5m
  step: 15s
  window: 30m
  min_window: 10m
  method: matched
  alpha: 0.01
  min_effect: {response_time: 0.1}
  interface_label: route
  discover: sum by (route) (rate(http_requests_total[5m]))
  workload: sum(rate(http_requests_total{route="$interface"}[1m]))
  kpis:
    response_time: sum(rate(http_request_duration_seconds_sum{route="$interface"}[1m]))
    success_rate: sum(rate(http_requests_total{route="$interface",code!~"5.."}[1m])) / sum(rate(http_requests_total{route="$interface"}[1m]))
  baseline:
    mode: pinned
    start: 2025-01-31T12:00:00Z
    end: 1738328400
"#;

fn seeds() -> Vec<String> {
    vec![
        without_comments(&repo_text("config/kpiwatch.example.yaml")),
        without_comments(&repo_text("config/presets/node-exporter.yaml")),
        without_comments(&repo_text("config/presets/http-service.yaml")),
        RICH.to_string(),
    ]
}

fn env() -> HashMap<String, String> {
    [("TENANT", "team-a"), ("NODE_NAME", "worker-1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What every refusal must look like: at least one error, each naming this file and
/// saying something on one line.
fn assert_clear(errs: &ConfigErrors, file: &Path) -> Result<(), TestCaseError> {
    prop_assert!(!errs.0.is_empty(), "an empty error list");
    for e in &errs.0 {
        prop_assert_eq!(&e.file, &file.display().to_string());
        prop_assert!(!e.message.trim().is_empty(), "an empty message: {e:?}");
        prop_assert!(
            !e.to_string().contains('\n'),
            "a message over several lines: {e}"
        );
    }
    Ok(())
}

#[test]
fn the_seeds_are_valid() {
    for (i, s) in seeds().iter().enumerate() {
        config::parse_str(s, &config_path(), &env()).unwrap_or_else(|e| panic!("seed {i}:\n{e}"));
    }
}

proptest! {
    #![proptest_config(mutate::config(1000))]

    /// Edited configs load or are refused with errors naming the file, one line each.
    #[test]
    fn mutated_configs_load_or_name_the_file(text in mutate::mutated_text(seeds(), 4)) {
        let path = config_path();
        match config::parse_str(&text, &path, &env()) {
            Ok(c) => {
                // What validation promises about any config it accepts.
                for g in &c.groups {
                    prop_assert!((2..=10_000).contains(&g.window));
                    prop_assert!(g.history_points >= g.window);
                    prop_assert!(!g.interval.is_zero() && !g.step.is_zero());
                }
            }
            Err(errs) => assert_clear(&errs, &path)?,
        }
    }

    /// Arbitrary text (not YAML at all) is refused the same way.
    #[test]
    fn arbitrary_text_is_refused_with_the_file_named(text in "\\PC{0,400}") {
        let path = config_path();
        if let Err(errs) = config::parse_str(&text, &path, &env()) {
            assert_clear(&errs, &path)?;
        }
    }

    /// A valid generated group loads with exactly the values written.
    #[test]
    fn generated_groups_load_as_written(
        name in "[a-z][a-z0-9_]{0,15}",
        interval_s in 1u64..3600,
        step_s in 1u64..600,
        window in 2usize..=10_000,
        labels in prop::collection::btree_set("[a-z_][a-z0-9_]{0,10}", 1..4),
        metrics in prop::collection::btree_map("[a-z_][a-z0-9_]{0,10}", "[a-z_:][a-z0-9_:]{0,20}", 1..4),
        threshold in 1.0f64..20.0,
    ) {
        let labels: Vec<&String> = labels.iter().collect();
        let metrics_yaml: String = metrics
            .iter()
            .map(|(k, v)| format!("      {k}: '{v}'\n"))
            .collect();
        let text = format!(
            "prometheus: {{url: 'http://127.0.0.1:9090'}}\ngroups:\n  - name: {name}\n    interval: {interval_s}s\n    step: {step_s}s\n    window: {window}\n    entity_labels: {labels:?}\n    metrics:\n{metrics_yaml}    detectors: {{zscore: {{threshold: {threshold:?}}}}}\n"
        );
        let c = config::parse_str(&text, &config_path(), &env())
            .map_err(|e| TestCaseError::fail(format!("{e}\n---\n{text}")))?;
        let g = &c.groups[0];
        prop_assert_eq!(&g.name, &name);
        prop_assert_eq!(g.interval, Duration::from_secs(interval_s));
        prop_assert_eq!(g.step, Duration::from_secs(step_s));
        prop_assert_eq!(g.window, window);
        let names: Vec<&str> = g.metrics.iter().map(|m| m.name.as_str()).collect();
        let want: Vec<&str> = metrics.keys().map(String::as_str).collect();
        prop_assert_eq!(names, want);
        prop_assert_eq!(g.detectors.zscore.as_ref().map(|z| z.threshold), Some(threshold));
    }

    /// `${...}` expansion never panics; text without `$` comes back unchanged, and every
    /// error points at a line of the text.
    #[test]
    fn env_expansion_is_total(
        text in "(\\PC|\\$|\\{|\\}|:-|\n){0,200}",
        vars in prop::collection::hash_map("[A-Z_]{1,3}", "\\PC{0,8}", 0..4),
    ) {
        match expand_env(&text, &vars) {
            Ok(out) => {
                if !text.contains('$') {
                    prop_assert_eq!(out, text);
                }
            }
            Err(errs) => {
                let lines = text.split_inclusive('\n').count();
                prop_assert!(!errs.is_empty());
                for (line, msg) in errs {
                    prop_assert!((1..=lines).contains(&line), "line {line} of {lines}");
                    prop_assert!(!msg.is_empty());
                }
            }
        }
    }

    /// Set variables are replaced by their value, unset ones by their default, and `$$`
    /// is a literal `$`.
    #[test]
    fn env_references_expand_to_values_and_defaults(
        name in "[A-Z_][A-Z0-9_]{0,10}",
        value in "[^$\n]{0,20}",
        default in "[^$}\n]{0,20}",
        set in any::<bool>(),
    ) {
        let vars: HashMap<String, String> = if set {
            HashMap::from([(name.clone(), value.clone())])
        } else {
            HashMap::new()
        };
        let out = expand_env(&format!("a: ${{{name}:-{default}}} $$x\n"), &vars)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        let want = if set { &value } else { &default };
        prop_assert_eq!(out, format!("a: {want} $x\n"));
    }

    /// Any string is a duration or an error saying what a duration looks like.
    #[test]
    fn any_string_is_a_duration_or_a_clear_error(s in "([0-9]{0,25}(ms|s|m|h|d|w|y|x|)){0,4}|\\PC{0,12}") {
        if let Err(e) = parse_duration(&s) {
            prop_assert!(e.contains("duration"), "{e}");
        }
    }

    /// Generated durations parse to their value, and format back to text that parses
    /// to the same value.
    #[test]
    fn durations_round_trip(parts in prop::collection::vec(0u64..1000, 7)) {
        const UNITS: [(&str, u64); 7] = [
            ("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000),
            ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1),
        ];
        let mut text = String::new();
        let mut ms = 0u64;
        for (n, (unit, size)) in parts.iter().zip(UNITS) {
            if *n > 0 {
                text.push_str(&format!("{n}{unit}"));
                ms += n * size;
            }
        }
        if text.is_empty() {
            text.push('0');
        }
        let d = parse_duration(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(d, Duration::from_millis(ms));
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}

/// A YAML "billion laughs": nine levels of ten aliases each, which expand to 10^9
/// strings, put where the loader buffers a value whole before typing it (the untagged
/// `baseline.start`) and where it expects a list. serde_yaml caps alias replays at
/// 100 × the events of the document, so the file is refused with the file named instead
/// of exhausting memory.
#[test]
fn alias_bombs_are_refused() {
    let mut bomb = format!("[&l0 [{}]", ["lol"; 10].join(", "));
    for i in 1..9 {
        let p = i - 1;
        bomb.push_str(&format!(
            ", &l{i} [{}]",
            vec![format!("*l{p}"); 10].join(", ")
        ));
    }
    bomb.push(']');
    let path = config_path();
    let docs = [
        format!(
            "prometheus: {{url: 'http://127.0.0.1:9090'}}\nregressions:\n  interface_label: route\n  discover: up\n  workload: up\n  kpis: {{response_time: up}}\n  baseline: {{mode: pinned, start: {bomb}, end: 1}}\n"
        ),
        format!(
            "prometheus: {{url: 'http://127.0.0.1:9090'}}\ngroups: [{{name: n, entity_labels: {bomb}, metrics: {{up: up}}, detectors: {{zscore: {{}}}}}}]\n"
        ),
        format!("x-lol: {bomb}\nprometheus: {{url: 'http://127.0.0.1:9090'}}\n"),
    ];
    for doc in docs {
        let errs =
            config::parse_str(&doc, &path, &env()).expect_err("an alias bomb must be refused");
        assert_clear(&errs, &path).unwrap();
    }
}

/// Nesting far deeper than any config is refused, naming the line, before the YAML
/// parser sees it. Found here: serde_yaml's recursion limit (128) applies only after
/// libyaml has parsed the whole document, whose time grows faster than linearly with
/// depth; this test took 75 s before `config::nesting` bounded the depth.
#[test]
fn deep_nesting_is_refused() {
    let path = config_path();
    for doc in [
        format!("prometheus: {{url: x}}\ngroups: {}", "[".repeat(100_000)),
        format!("prometheus: {{url: x}}\ngroups: {}", "{a: ".repeat(100_000)),
        format!(
            "prometheus: {{url: x}}\ngroups:\n{}",
            (0..2_000)
                .map(|i| format!("{}- \n", " ".repeat(i)))
                .collect::<String>()
        ),
    ] {
        let errs = config::parse_str(&doc, &path, &env()).expect_err("refused");
        assert_clear(&errs, &path).unwrap();
        assert!(errs.0[0].key_path.starts_with("line "), "{errs}");
    }
}
