//! The module picture of `ARCHITECTURE.md` holds: every `crate::` path in `src/` is an
//! edge its dependency table allows, every module has a row, and `src/lib.rs` lists
//! every module in its table. A forbidden `use` fails here with the file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The idents between backticks in a table cell.
fn ticked(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// One row of the dependency table.
struct Rule {
    may_use: BTreeSet<String>,
    never: BTreeSet<String>,
}

/// The table between the `dependency-table` markers of `ARCHITECTURE.md`.
fn rules() -> BTreeMap<String, Rule> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text
        .find("<!-- dependency-table:start -->")
        .expect("ARCHITECTURE.md has the dependency-table:start marker");
    let end = text
        .find("<!-- dependency-table:end -->")
        .expect("ARCHITECTURE.md has the dependency-table:end marker");
    let mut rules = BTreeMap::new();
    for line in text[start..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| module | may use | never |` rows; skip the header and the rule line.
        if cells.len() < 5 || !cells[1].starts_with('`') {
            continue;
        }
        let module = ticked(cells[1]).into_iter().next().expect("module name");
        let rule = Rule {
            may_use: ticked(cells[2]),
            never: ticked(cells[3]),
        };
        assert!(
            rules.insert(module.clone(), rule).is_none(),
            "ARCHITECTURE.md: `{module}` has two rows"
        );
    }
    assert!(
        rules.len() > 10,
        "the dependency table was not found or is empty"
    );
    rules
}

/// The top-level modules declared in `src/lib.rs`.
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            ["pub mod ", "pub(crate) mod ", "mod "]
                .iter()
                .find_map(|p| l.strip_prefix(p))
        })
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

/// The top-level module a file of `src/` belongs to (`None`: the crate root or a binary).
fn module_of(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root().join("src")).expect("under src");
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// The top-level modules named by `crate::` paths on a line of code, including each
/// item of a `crate::{a, b::c}` group (which may continue on the next lines: `pending`
/// carries an open group's text).
fn crate_paths(line: &str, pending: &mut Option<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut text = line.to_string();
    if let Some(open) = pending.take() {
        text = format!("crate::{{{open} {line}");
    }
    let mut rest = text.as_str();
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Items of the group up to its matching brace.
            let mut depth = 1;
            let mut end = None;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                *pending = Some(group.to_string());
                break;
            };
            let mut depth = 0;
            let mut item_start = true;
            for c in group[..end].chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        item_start = false;
                        found.push(String::new());
                        found.last_mut().expect("pushed").push(c);
                    }
                    c if !item_start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        if let Some(last) = found.last_mut() {
                            if !last.contains(':') {
                                last.push(c);
                            }
                        }
                    }
                    ':' if depth == 0 => {
                        if let Some(last) = found.last_mut() {
                            last.push(':');
                        }
                    }
                    _ => {}
                }
            }
            rest = &group[end..];
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
            rest = after;
        }
    }
    found
        .into_iter()
        .map(|m| m.trim_end_matches(':').to_string())
        .filter(|m| !m.is_empty() && m != "self")
        .collect()
}

/// Every `crate::<module>` edge of `src/`, as (from, to, "file:line").
fn edges() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for file in crate::support::rust_files(&root().join("src")) {
        let Some(from) = module_of(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("readable source");
        let mut pending = None;
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for to in crate_paths(code, &mut pending) {
                if to != from {
                    let rel = file.strip_prefix(root()).expect("under root").display();
                    out.push((from.clone(), to, format!("{rel}:{}", n + 1)));
                }
            }
        }
    }
    out
}

#[test]
fn every_crate_path_in_src_is_an_allowed_dependency() {
    let rules = rules();
    let mut broken = Vec::new();
    for (from, to, at) in edges() {
        let rule = rules
            .get(&from)
            .unwrap_or_else(|| panic!("{at}: module `{from}` has no row in ARCHITECTURE.md"));
        if !rule.may_use.contains(&to) {
            let why = if rule.never.contains(&to) {
                "a `never` edge"
            } else {
                "not in its `may use` list"
            };
            broken.push(format!("{at}: `{from}` uses `crate::{to}`: {why}"));
        }
    }
    assert!(
        broken.is_empty(),
        "dependencies that ARCHITECTURE.md does not allow:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_dependency_table_has_a_row_per_module_and_no_contradiction() {
    let rules = rules();
    let declared = declared_modules();
    let listed: BTreeSet<String> = rules.keys().cloned().collect();
    assert_eq!(
        listed, declared,
        "ARCHITECTURE.md's rows vs the modules of src/lib.rs"
    );
    for (module, rule) in &rules {
        for dep in rule.may_use.iter().chain(&rule.never) {
            assert!(
                declared.contains(dep),
                "`{module}` names an unknown module `{dep}`"
            );
        }
        let both: Vec<_> = rule.may_use.intersection(&rule.never).collect();
        assert!(
            both.is_empty(),
            "`{module}` both may and may never use {both:?}"
        );
        assert!(!rule.may_use.contains(module), "`{module}` lists itself");
    }
    // The rules the picture promises.
    assert!(
        rules["config"].may_use.iter().all(|m| m == "secret"),
        "config stays a leaf"
    );
    for module in listed.iter().filter(|m| *m != "lab") {
        assert!(
            !rules[module].may_use.contains("lab"),
            "`{module}` may not link the lab"
        );
    }
}

#[test]
fn lib_rs_module_table_lists_every_module() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    let table: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! | "))
        .filter_map(|row| ticked(row.split('|').next()?).into_iter().next())
        .collect();
    assert_eq!(
        table,
        declared_modules(),
        "src/lib.rs's doc table vs its `mod`s"
    );
}

#[test]
fn crate_paths_are_read_from_single_paths_and_groups() {
    let mut pending = None;
    assert_eq!(
        crate_paths("use crate::store::ShardFilter;", &mut pending),
        ["store"]
    );
    assert_eq!(
        crate_paths(
            "use crate::{config::Fill, reader::{self, Series}, normalize};",
            &mut pending
        ),
        ["config", "reader", "normalize"]
    );
    assert_eq!(
        crate_paths("let x = crate::clock::now_ms();", &mut pending),
        ["clock"]
    );
    assert!(crate_paths("use crate::{", &mut pending).is_empty());
    assert!(pending.is_some());
    assert_eq!(
        crate_paths("    detect::Scores, export,", &mut pending),
        Vec::<String>::new()
    );
    assert_eq!(crate_paths("};", &mut pending), ["detect", "export"]);
}
