//! `--set KEY=VALUE[,VALUE…]`: config values overridden for a backtest, several values
//! of a key swept one run each (the way to choose a threshold on real history).
//!
//! Keys are paths into the YAML: `groups[0].detectors.zscore.threshold`, or with the
//! group named, `groups[nodes].detectors.uniad.threshold.risk`. Values are YAML
//! scalars or flow collections (`4`, `1e-4`, `true`, `[1d, 1w]`); commas inside brackets
//! do not split values. Several keys sweep their every combination.

use serde_yaml::Value;

/// One `--set` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The path.
    pub key: String,
    /// The values to try, in order.
    pub values: Vec<String>,
}

/// One setting of the sweep: `(key, value)` for every override.
pub type Setting = Vec<(String, String)>;

/// Parses `KEY=V1[,V2…]`.
pub fn parse(arg: &str) -> Result<Override, String> {
    let (key, values) = arg.split_once('=').ok_or_else(|| {
        format!("--set {arg:?}: expected KEY=VALUE, e.g. groups[0].detectors.zscore.threshold=5")
    })?;
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in values.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(values[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(values[start..].trim().to_string());
    if key.trim().is_empty() || out.iter().any(String::is_empty) {
        return Err(format!("--set {arg:?}: empty key or value"));
    }
    Ok(Override {
        key: key.trim().to_string(),
        values: out,
    })
}

/// Every combination of the overrides' values (one empty setting without overrides).
pub fn settings(overrides: &[Override]) -> Vec<Setting> {
    let mut out: Vec<Setting> = vec![Vec::new()];
    for o in overrides {
        out = out
            .into_iter()
            .flat_map(|s| {
                o.values.iter().map(move |v| {
                    let mut s = s.clone();
                    s.push((o.key.clone(), v.clone()));
                    s
                })
            })
            .collect()
    }
    out
}

/// The config text with `setting` applied; `Err` names the key that does not fit.
pub fn apply(text: &str, setting: &Setting) -> Result<String, String> {
    if setting.is_empty() {
        return Ok(text.to_string());
    }
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    for (key, value) in setting {
        let value: Value = serde_yaml::from_str(value)
            .map_err(|e| format!("--set {key}={value}: not a YAML value ({e})"))?;
        let slot = walk(&mut doc, key).map_err(|e| format!("--set {key}: {e}"))?;
        *slot = value;
    }
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

/// The value at `key`, with missing mapping keys created.
fn walk<'a>(mut at: &'a mut Value, key: &str) -> Result<&'a mut Value, String> {
    for segment in key.split('.') {
        let (name, index) = match segment.split_once('[') {
            Some((n, rest)) => (n, Some(rest.strip_suffix(']').ok_or("unclosed [")?)),
            None => (segment, None),
        };
        let map = at
            .as_mapping_mut()
            .ok_or_else(|| format!("{name:?} is under a value that is not a mapping"))?;
        at = map
            .entry(Value::String(name.to_string()))
            .or_insert(Value::Mapping(Default::default()));
        if let Some(index) = index {
            let seq = at
                .as_sequence_mut()
                .ok_or_else(|| format!("{name:?} is not a list"))?;
            let len = seq.len();
            at = match index.parse::<usize>() {
                Ok(i) => seq
                    .get_mut(i)
                    .ok_or_else(|| format!("{name}[{i}]: the list has {len} item(s)"))?,
                Err(_) => seq
                    .iter_mut()
                    .find(|v| v.get("name").and_then(Value::as_str) == Some(index))
                    .ok_or_else(|| format!("{name}[{index}]: no item has name {index:?}"))?,
            };
        }
    }
    Ok(at)
}

/// `key=value, …` of a setting, for the sweep table.
pub fn describe(setting: &Setting) -> String {
    if setting.is_empty() {
        return "(config as written)".to_string();
    }
    setting
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "groups:\n  - name: a\n    detectors:\n      zscore: {threshold: 4}\n  - name: b\n    step: 15s\n";

    #[test]
    fn values_split_at_top_level_commas_and_sweep_every_combination() {
        let a = parse("groups[0].detectors.zscore.threshold=4,5, 6").unwrap();
        assert_eq!(a.values, ["4", "5", "6"]);
        let b = parse("groups[b].seasonality=[1d, 1w],[1d]").unwrap();
        assert_eq!(b.values, ["[1d, 1w]", "[1d]"]);
        assert_eq!(settings(&[a, b]).len(), 6);
        assert!(parse("no-equals").unwrap_err().contains("KEY=VALUE"));
        assert!(parse("k=1,,2").is_err());
    }

    #[test]
    fn paths_reach_list_items_by_index_or_name_and_create_missing_keys() {
        let s = vec![
            (
                "groups[0].detectors.zscore.threshold".to_string(),
                "5".to_string(),
            ),
            (
                "groups[b].detectors.uniad.threshold.risk".to_string(),
                "1e-4".to_string(),
            ),
        ];
        let doc: Value = serde_yaml::from_str(&apply(CONFIG, &s).unwrap()).unwrap();
        assert_eq!(
            doc["groups"][0]["detectors"]["zscore"]["threshold"],
            Value::from(5)
        );
        assert_eq!(
            doc["groups"][1]["detectors"]["uniad"]["threshold"]["risk"],
            Value::from(1e-4)
        );
        assert_eq!(doc["groups"][1]["step"], Value::from("15s"));
        let bad = vec![("groups[7].step".to_string(), "1s".to_string())];
        assert!(apply(CONFIG, &bad).unwrap_err().contains("has 2 item(s)"));
        let bad = vec![("groups[c].step".to_string(), "1s".to_string())];
        assert!(apply(CONFIG, &bad)
            .unwrap_err()
            .contains("no item has name \"c\""));
    }
}
