//! A bound on how deeply a config nests, checked before the YAML parser sees the text.
//!
//! serde_yaml refuses nesting deeper than 128 levels, but only once libyaml has turned
//! the whole document into events, and libyaml's time grows faster than linearly with
//! depth: 20,000 nested `{a: ` took 5 s in a debug build, 100,000 took over a minute
//! (found by `tests/it/fuzz/config.rs`). A config nests a handful of levels; these
//! limits are far above that and far below where the parser slows down.

/// Deepest nesting of flow collections (`[` and `{` outside quotes and comments).
pub(super) const MAX_FLOW_DEPTH: usize = 100;
/// Widest indentation of a line, in columns.
pub(super) const MAX_INDENT: usize = 512;

/// `Err((line, message))` at the first line that nests too deep.
pub(super) fn check(text: &str) -> Result<(), (usize, String)> {
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if indent > MAX_INDENT {
            return Err((
                line_no,
                format!("indented {indent} columns (expected at most {MAX_INDENT})"),
            ));
        }
        // Quotes may hide brackets (PromQL regexes); a quote never spans lines in a
        // config that nests this deep, so the scan restarts at each line.
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                // A comment starts at `#` after a blank (or at the line start).
                (None, '#') if prev.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err((
                            line_no,
                            format!(
                                "nested more than {MAX_FLOW_DEPTH} levels deep in [ ] and {{ }}"
                            ),
                        ));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_configs_pass_and_deep_ones_name_the_line() {
        let ok = "groups:\n  - metrics: {cpu: 'sum(rate(x{mode!=\"idle\"}[1m]))', q: rate(y{a=\"[\"}[5m])}\n    labels: [a, b]  # [[[[ comment\n";
        assert_eq!(check(ok), Ok(()));
        let deep = format!("a: 1\nb: {}", "[".repeat(MAX_FLOW_DEPTH + 1));
        let (line, msg) = check(&deep).expect_err("too deep");
        assert_eq!(line, 2);
        assert!(msg.contains("100 levels"), "{msg}");
        let (line, _) =
            check(&format!("a:\n{}- x\n", " ".repeat(MAX_INDENT + 1))).expect_err("too wide");
        assert_eq!(line, 2);
        assert_eq!(check(&"[".repeat(MAX_FLOW_DEPTH)), Ok(()));
    }
}
