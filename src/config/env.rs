//! `${VAR}` and `${VAR:-default}` expansion of the config text, with an injected lookup
//! so that tests never touch the process environment.

use std::collections::HashMap;

/// Where `${VAR}` values come from.
pub trait EnvLookup {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl EnvLookup for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvLookup for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

/// Expands `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. A `$` not followed by
/// `{` or `$` is kept as is (PromQL never uses `${`). Returns every unset variable and
/// malformed reference as `(line, message)`.
pub fn expand_env(text: &str, env: &dyn EnvLookup) -> Result<String, Vec<(usize, String)>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let line_no = line_no + 1;
        // YAML comments may mention ${VAR} in documentation; leave them alone.
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push((line_no, "unterminated ${ (expected ${VAR})".to_string()));
                    out.push_str(&rest[pos..]);
                    rest = "";
                    break;
                };
                let inner = &body[..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    errors.push((
                        line_no,
                        format!("${{{inner}}} is not a variable reference (expected ${{NAME}} or ${{NAME:-default}})"),
                    ));
                } else if let Some(v) = env.get(name) {
                    out.push_str(&v);
                } else if let Some(d) = default {
                    out.push_str(d);
                } else {
                    errors.push((
                        line_no,
                        format!("environment variable {name} is not set (use ${{{name}:-default}} for a default)"),
                    ));
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        let e = env(&[("NODE_NAME", "worker-1")]);
        let got = expand_env("node: ${NODE_NAME}\nport: ${PORT:-9847}\n", &e).unwrap();
        assert_eq!(got, "node: worker-1\nport: 9847\n");
    }

    #[test]
    fn keeps_promql_dollars_and_comments() {
        let e = env(&[]);
        let text = "q: 'x{a=\"$1\"}'\n# see ${UNSET}\ncost: $$5\n";
        assert_eq!(
            expand_env(text, &e).unwrap(),
            "q: 'x{a=\"$1\"}'\n# see ${UNSET}\ncost: $5\n"
        );
    }

    #[test]
    fn reports_every_unset_variable_with_its_line() {
        let e = env(&[]);
        let errs = expand_env("a: ${A}\nb: ok\nc: ${C} ${bad-name}\n", &e).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![1, 3, 3]);
        assert!(errs[0].1.contains("A is not set"));
    }
}
