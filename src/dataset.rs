//! CSV tables shared by the offline tools, the benches and the lab.
//!
//! The formats are simple: a header row, then one row per timestamp, comma-separated,
//! numeric cells (`NaN`, `inf` and empty cells read as NaN). Timestamps may be numbers
//! (Unix seconds) or ISO-8601 / `YYYY-MM-DD HH:MM:SS` strings; they are kept as Unix
//! seconds in the `timestamp` column.

use std::path::{Path, PathBuf};

/// Errors reading a dataset, each naming the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file has no header row.
    #[error("{path}: empty file (expected a header row)")]
    Empty {
        /// File.
        path: PathBuf,
    },
    /// A row is malformed.
    #[error("{path}:{line}: {message}")]
    Row {
        /// File.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A required column is absent.
    #[error("{path}: no column {column:?} (columns: {columns})")]
    MissingColumn {
        /// File.
        path: PathBuf,
        /// Column looked for.
        column: String,
        /// Columns present, comma separated.
        columns: String,
    },
}

/// A table of named numeric columns of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Where it came from (for messages).
    pub path: PathBuf,
    /// Column names in file order.
    pub names: Vec<String>,
    /// Column values, `columns[i]` belongs to `names[i]`.
    pub columns: Vec<Vec<f64>>,
}

impl Table {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// `true` when there is no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column named `name`, if present.
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| self.columns[i].as_slice())
    }

    /// The column named `name`, or an error naming the columns that exist.
    pub fn require(&self, name: &str) -> Result<&[f64], DatasetError> {
        self.column(name)
            .ok_or_else(|| DatasetError::MissingColumn {
                path: self.path.clone(),
                column: name.to_string(),
                columns: self.names.join(","),
            })
    }

    /// The first present column among `names` (e.g. `label` or `is_anomaly`).
    pub fn first_of(&self, names: &[&str]) -> Option<&[f64]> {
        names.iter().find_map(|n| self.column(n))
    }
}

/// Reads a CSV file into a [`Table`].
pub fn read_csv(path: &Path) -> Result<Table, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_csv(&text, path)
}

/// A CSV text split into cells: the header and, for every non-blank line after it, its
/// 1-based line number and cells (trimmed, surrounding quotes removed). The one
/// tokenizer of the offline formats: this module's tables and the regression judge's
/// load tests (`detect::regress::LoadTest`), which read only the columns they need.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows<'a> {
    /// Header cells, in file order.
    pub header: Vec<&'a str>,
    /// `(line number, cells)` of each data row.
    pub rows: Vec<(usize, Vec<&'a str>)>,
}

fn cells(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|c| c.trim().trim_matches('"'))
        .collect()
}

/// Splits `text` into [`Rows`]; `None` when it has no header (nothing but blank lines).
pub fn split_rows(text: &str) -> Option<Rows<'_>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next()?;
    Some(Rows {
        header: cells(header),
        rows: lines.map(|(i, l)| (i + 1, cells(l))).collect(),
    })
}

/// A numeric cell: empty and `NaN` (any case) are gaps, read as NaN; otherwise a float
/// as Rust spells it (`inf` included). `None` when the cell is not a number.
pub fn parse_number(cell: &str) -> Option<f64> {
    if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    cell.parse::<f64>().ok()
}

/// Parses CSV text (see [`read_csv`]).
pub fn parse_csv(text: &str, path: &Path) -> Result<Table, DatasetError> {
    let rows = split_rows(text).ok_or_else(|| DatasetError::Empty {
        path: path.to_path_buf(),
    })?;
    let names: Vec<String> = rows.header.iter().map(|s| s.to_string()).collect();
    let mut columns = vec![Vec::new(); names.len()];
    for (line, cells) in rows.rows {
        if cells.len() != names.len() {
            return Err(DatasetError::Row {
                path: path.to_path_buf(),
                line,
                message: format!("{} cells, expected {}", cells.len(), names.len()),
            });
        }
        for (col, (cell, name)) in cells.iter().zip(&names).enumerate() {
            let v = parse_cell(cell, name == "timestamp").ok_or_else(|| DatasetError::Row {
                path: path.to_path_buf(),
                line,
                message: format!("column {name:?}: {cell:?} is not a number"),
            })?;
            columns[col].push(v);
        }
    }
    Ok(Table {
        path: path.to_path_buf(),
        names,
        columns,
    })
}

fn parse_cell(cell: &str, is_timestamp: bool) -> Option<f64> {
    parse_number(cell).or_else(|| is_timestamp.then(|| parse_time(cell)).flatten())
}

fn parse_time(cell: &str) -> Option<f64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(cell) {
        return Some(t.timestamp_millis() as f64 / 1000.0);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(cell, fmt) {
            return Some(t.and_utc().timestamp() as f64);
        }
    }
    None
}

/// Writes a table as CSV (numbers in their shortest round-trip form).
pub fn write_csv(path: &Path, names: &[&str], columns: &[&[f64]]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{}", names.join(","))?;
    let rows = columns.first().map_or(0, |c| c.len());
    for r in 0..rows {
        for (i, c) in columns.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write!(out, "{}", c[r])?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_dates_and_gaps() {
        let t = parse_csv(
            "timestamp,value,label\n2015-01-01 00:00:00,1.5,0\n1420070460,,1\n2015-01-01T00:02:00Z,NaN,0\n",
            Path::new("x.csv"),
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.column("timestamp").unwrap(),
            &[1420070400.0, 1420070460.0, 1420070520.0]
        );
        assert!(t.column("value").unwrap()[1].is_nan());
        assert_eq!(
            t.first_of(&["is_anomaly", "label"]).unwrap(),
            &[0.0, 1.0, 0.0]
        );
    }

    #[test]
    fn names_file_and_line_of_bad_rows() {
        let e = parse_csv("a,b\n1,2\n3\n", Path::new("d.csv")).unwrap_err();
        assert_eq!(e.to_string(), "d.csv:3: 1 cells, expected 2");
        let e = parse_csv("a\nx\n", Path::new("d.csv")).unwrap_err();
        assert!(e.to_string().contains("\"x\" is not a number"));
        let t = parse_csv("a\n1\n", Path::new("d.csv")).unwrap();
        assert!(t
            .require("b")
            .unwrap_err()
            .to_string()
            .contains("columns: a"));
    }
}
