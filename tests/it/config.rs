//! Config files through the library loader: shipped files pass, and each bad file's
//! messages match its golden `.expected` file (paths shown relative to the repo).

use std::path::{Path, PathBuf};

use kpiwatch::config;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[test]
fn shipped_example_and_presets_are_valid() {
    // Presets use ${VAR:-default}, so they load with an empty environment.
    let env = std::collections::HashMap::<String, String>::new();
    for f in [
        "config/kpiwatch.example.yaml",
        "config/presets/node-exporter.yaml",
        "config/presets/http-service.yaml",
    ] {
        let c = config::load_with_env(&repo(f), &env).unwrap_or_else(|e| panic!("{f}:\n{e}"));
        assert!(!c.groups.is_empty());
        assert!(c.groups.iter().all(|g| g.detectors.zscore.is_some()));
    }
}

#[test]
fn bad_configs_name_file_key_and_expectation() {
    let dir = repo("tests/data/config/bad");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let env = std::collections::HashMap::<String, String>::new();
        let errs = config::load_with_env(&path, &env).expect_err("bad config must be rejected");
        let got = errs.to_string().replace(&format!("{}/", dir.display()), "");
        let expected_path = path.with_extension("expected");
        if std::env::var_os("KPIWATCH_BLESS").is_some() {
            std::fs::write(&expected_path, format!("{got}\n")).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        assert_eq!(got.trim_end(), expected.trim_end(), "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 5);
}

#[test]
fn env_expansion_feeds_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let path = crate::support::write(
        dir.path(),
        "k.yaml",
        "prometheus: {url: '${PROM}'}\nshard: {node_name: '${NODE_NAME}'}\ngroups: [{name: n, entity_labels: [node], metrics: {up: up}, detectors: {zscore: {}}}]\n",
    );
    let env: std::collections::HashMap<String, String> = [
        ("PROM".to_string(), "http://p:9090".to_string()),
        ("NODE_NAME".to_string(), "w1".to_string()),
    ]
    .into();
    let c = config::load_with_env(&path, &env).unwrap();
    assert_eq!(c.prometheus.url.as_str(), "http://p:9090/");
    assert_eq!(
        c.shard,
        config::Shard::Node {
            name: "w1".into(),
            label: "node".into()
        }
    );
}
