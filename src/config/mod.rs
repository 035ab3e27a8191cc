//! Configuration: YAML file → [`raw::RawConfig`] (a serde mirror, unknown keys rejected)
//! → validated [`Config`], in which durations are [`std::time::Duration`], URLs are
//! [`url::Url`] and referenced files have been checked.
//!
//! Loading reports every problem it can find at once, each naming the file, the key path
//! and what was expected (see [`ConfigError`]). Nothing else in kpiwatch sees raw YAML.
//! This module is a leaf: it depends on no other kpiwatch module except the detector
//! option types it embeds, does no network I/O and never prints secrets.

pub mod detectors;
mod duration;
mod env;
mod error;
pub mod graph;
pub mod judge;
mod nesting;
pub(crate) mod raw;
pub mod regressions;
pub mod seasonality;
mod validate;
mod warnings;
mod web;

pub use duration::{format_duration, parse_duration};
pub use env::{expand_env, EnvLookup, ProcessEnv};
pub use error::{ConfigError, ConfigErrors};
pub use graph::{EdgeQuery, GraphConfig, RankMethod};
pub use regressions::{BaselineConfig, RegressionsConfig};
pub use seasonality::{Direction, Gate, SeasonalityConfig};
pub use validate::{
    Auth, Config, DetectorsConfig, Fill, GroupConfig, MetricQuery, PrometheusConfig, Shard,
    TlsConfig,
};
pub use web::{load_web_config, WebConfig};

use std::path::Path;

/// Reads, expands, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_with_env(path, &ProcessEnv)
}

/// Like [`load`], with an injected environment (tests pass a map).
pub fn load_with_env(path: &Path, env: &dyn EnvLookup) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(ConfigError::new(
            &file,
            "",
            format!("cannot read the file: {e}"),
        ))
    })?;
    parse_str(&text, path, env)
}

/// Parses config text as if it had been read from `path` (relative file references
/// are resolved against `path`'s directory).
pub fn parse_str(text: &str, path: &Path, env: &dyn EnvLookup) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let expanded = expand_env(text, env).map_err(|errs| {
        ConfigErrors(
            errs.into_iter()
                .map(|(line, msg)| ConfigError::new(&file, &format!("line {line}"), msg))
                .collect(),
        )
    })?;
    let raw: raw::RawConfig = deserialize_yaml(&expanded, &file)?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    validate::validate(raw, &file, base_dir)
}

/// Deserialises YAML `text` of `file` into its serde mirror: nesting bounded first, then
/// the first error with its key path (`groups[1].detectors.zscore.threshold`).
fn deserialize_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigErrors> {
    nesting::check(text).map_err(|(line, msg)| {
        ConfigErrors::one(ConfigError::new(file, &format!("line {line}"), msg))
    })?;
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        ConfigErrors::one(ConfigError::new(
            file,
            &key,
            strip_yaml_path(&e.into_inner().to_string()),
        ))
    })
}

/// serde_yaml prefixes its messages with its own (less precise) key path, e.g.
/// `groups[0]: unknown field ...`; the key path from serde_path_to_error replaces it.
fn strip_yaml_path(msg: &str) -> String {
    match msg.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && !prefix.contains(' ') => rest.to_string(),
        _ => msg.to_string(),
    }
}
