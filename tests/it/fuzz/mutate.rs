//! Structured mutations of valid documents, shared by every fuzz suite: the integration
//! suites of `tests/it/fuzz/` and the unit suites that sit beside crate-private parsers
//! (`src/reader/fuzz_tests.rs`, `src/detect/*/fuzz_tests.rs` include this file by path,
//! so its items are `pub(crate)`, which is what both crates accept without a lint).
//!
//! A case is a valid seed (the example config, a real `query_range` answer, a shipped
//! ONNX file, ...) edited one to a few times: truncated, a bit flipped, a byte set, a
//! line dropped or doubled, a span deleted, or a hostile token inserted or put in place
//! of the token at some position (huge numbers, NaN spellings, deep nesting, wrong
//! types, control characters). Random bytes alone almost never get past a parser's
//! first check; edits of a valid document reach the checks behind it.

#![allow(dead_code)] // Each suite uses the part it needs.

use proptest::prelude::*;
use proptest::sample::Index;

/// Number of cases of a suite: `PROPTEST_CASES` when set (the long campaign of
/// BENCHMARKS.md), otherwise `ci`, sized so that the whole fuzz suite stays well under a
/// minute in a debug build. `ProptestConfig::with_cases` would ignore the variable.
pub(crate) fn config(ci: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci);
    ProptestConfig {
        cases,
        // Failures are kept as named regression tests beside each suite, not as files
        // written into the shared tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Tokens that break parsers: numbers out of every range, NaN and infinity spellings,
/// wrong types, unbalanced brackets, YAML aliases and tags, `${` references, control
/// and non-ASCII characters.
pub(crate) const HOSTILE: &[&str] = &[
    "NaN",
    "nan",
    ".nan",
    "-inf",
    "+Inf",
    ".inf",
    "1e309",
    "-1e309",
    "1e-400",
    "0",
    "-0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "340282366920938463463374607431768211456",
    "0.30000000000000004",
    "0x10",
    "1_000",
    "",
    "null",
    "~",
    "true",
    "[]",
    "{}",
    "[",
    "]",
    "{",
    "}",
    "\"",
    "'",
    ",",
    ":",
    ": ",
    "- ",
    "\n",
    "\r\n",
    "\t",
    "\\",
    "\\u0000",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "é",
    "\u{10ffff}",
    "${",
    "${X}",
    "${X:-}",
    "$$",
    "*a",
    "&a ",
    "!!binary ",
    "!!float ",
    "? ",
    "|",
    ">",
    "%",
    "%zz",
    "%2F",
    "#",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0000-00-00 00:00:00",
    "1h1h",
    "30x",
    "99999999999999999999s",
];

/// Openers repeated into deep nesting (JSON, YAML flow and block styles, aliases).
const NESTING: &[&str] = &["[", "{", "[{\"a\":", "- ", "  ", "a: {", "&x [*x,"];
/// Units repeated into long runs (huge numbers, long names, many cells).
const RUNS: &[&str] = &["9", "a", "0.", ","];

/// One edit of a document; positions are [`Index`]es, taken modulo the length.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    /// Keep only a prefix.
    Truncate(Index),
    /// Flip one bit of one byte.
    FlipBit(Index, u8),
    /// Set one byte.
    SetByte(Index, u8),
    /// Insert a token.
    Insert(Index, String),
    /// Replace the token (run of letters, digits and `._+-`) at a position.
    Replace(Index, String),
    /// Delete a line.
    DeleteLine(Index),
    /// Repeat a line.
    DuplicateLine(Index),
    /// Delete up to `n` bytes.
    DeleteSpan(Index, u16),
}

/// A token for [`Edit::Insert`] and [`Edit::Replace`]: a hostile one, a number, deep
/// nesting, a long run, or arbitrary text.
pub(crate) fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(HOSTILE).prop_map(String::from),
        1 => any::<f64>().prop_map(|f| f.to_string()),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => any::<u64>().prop_map(|i| i.to_string()),
        1 => (prop::sample::select(NESTING), 100..3000usize).prop_map(|(s, n)| s.repeat(n)),
        1 => (prop::sample::select(RUNS), 300..20_000usize).prop_map(|(s, n)| s.repeat(n)),
        2 => "\\PC{0,16}",
    ]
}

/// One edit.
pub(crate) fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => any::<Index>().prop_map(Edit::Truncate),
        3 => (any::<Index>(), 0..8u8).prop_map(|(i, b)| Edit::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::SetByte(i, b)),
        3 => (any::<Index>(), token()).prop_map(|(i, t)| Edit::Insert(i, t)),
        5 => (any::<Index>(), token()).prop_map(|(i, t)| Edit::Replace(i, t)),
        2 => any::<Index>().prop_map(Edit::DeleteLine),
        1 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => (any::<Index>(), 1..64u16).prop_map(|(i, n)| Edit::DeleteSpan(i, n)),
    ]
}

/// One to `max` edits.
pub(crate) fn edits(max: usize) -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..=max)
}

fn at(i: &Index, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        i.index(len)
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-')
}

/// `(start, end)` of every line, newline included.
fn lines(doc: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in doc.iter().enumerate() {
        if b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < doc.len() {
        out.push((start, doc.len()));
    }
    out
}

/// Applies `edits` in order to a copy of `seed`.
pub(crate) fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut doc = seed.to_vec();
    for e in edits {
        let len = doc.len();
        match e {
            Edit::Truncate(i) => doc.truncate(at(i, len)),
            Edit::FlipBit(i, bit) if len > 0 => doc[at(i, len)] ^= 1 << bit,
            Edit::SetByte(i, b) if len > 0 => doc[at(i, len)] = *b,
            Edit::FlipBit(..) | Edit::SetByte(..) => {}
            Edit::Insert(i, t) => {
                let p = at(i, len + 1);
                doc.splice(p..p, t.bytes());
            }
            Edit::Replace(i, t) => {
                let p = at(i, len);
                let mut start = p;
                while start > 0 && is_token_byte(doc[start - 1]) {
                    start -= 1;
                }
                let mut end = p;
                while end < len && is_token_byte(doc[end]) {
                    end += 1;
                }
                doc.splice(start..end, t.bytes());
            }
            Edit::DeleteLine(i) | Edit::DuplicateLine(i) => {
                let ls = lines(&doc);
                if ls.is_empty() {
                    continue;
                }
                let (s, end) = ls[at(i, ls.len())];
                if matches!(e, Edit::DeleteLine(_)) {
                    doc.drain(s..end);
                } else {
                    let line = doc[s..end].to_vec();
                    doc.splice(end..end, line);
                }
            }
            Edit::DeleteSpan(i, n) => {
                let p = at(i, len);
                let end = (p + usize::from(*n)).min(len);
                doc.drain(p..end);
            }
        }
    }
    doc
}

/// A seed from `seeds`, edited one to `max_edits` times.
pub(crate) fn mutated(seeds: Vec<Vec<u8>>, max_edits: usize) -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(seeds), edits(max_edits)).prop_map(|(seed, e)| apply(&seed, &e))
}

/// The mutated document as text (invalid UTF-8 replaced), for parsers that take `&str`.
pub(crate) fn mutated_text(seeds: Vec<String>, max_edits: usize) -> impl Strategy<Value = String> {
    let seeds = seeds.into_iter().map(String::into_bytes).collect();
    mutated(seeds, max_edits).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}
