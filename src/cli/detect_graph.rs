//! `kpiwatch detect graph`: the service graph's root-cause ranking over recorded mesh
//! incidents, offline.
//!
//! Reads recordings in the lab's mesh format (`kpiwatch-lab-mesh/1`: `manifest.json`,
//! one `<service>.csv` per service, `edges.csv`; see docs/lab.md), scores every service
//! row by row with the z-score detector as the agent would (its metric columns, its
//! history), builds each row's call graph from the edges with traffic at that row, and
//! runs the graph layer over the rows in order, once per ranking method. For each fault
//! window of the manifest (an **incident**), the incident's first cycle is the window's
//! first row at which some service is anomalous; at that cycle and `--at` cycles later
//! it prints where the true root cause landed, and at the end, per method and against
//! two baselines (random among the anomalous services, the highest score), accuracy at
//! 1 and 3 and the precision of the symptom marks. The protocol of the evaluation in
//! BENCHMARKS.md ("Root cause on the service graph") is this command's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::detect::graph::{CallGraph, GraphAnalyzer, NodeVerdict, RankMethod};
use crate::detect::zscore::{ZscoreDetector, ZscoreOptions};

use super::offline::{replay, BaselineArgs};
use super::{EXIT_CONFIG, EXIT_FAILURE};

/// Arguments of `detect graph`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Mesh recordings: directories holding a `manifest.json` (searched below each
    /// directory given, e.g. tests/data/lab-mesh/s131).
    #[arg(required = true)]
    recordings: Vec<PathBuf>,
    /// The ranking method whose rankings are printed per incident (the summary has
    /// every method): frontier, random_walk or highest_score.
    #[arg(long, default_value = "frontier")]
    method: String,
    /// The service columns the node detector scores.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "error_ratio,latency_p95_ms"
    )]
    metrics: Vec<String>,
    /// Rows of history behind each score (the agent's `history`).
    #[arg(long, default_value_t = 120)]
    history: usize,
    /// Edges with fewer calls per second at a row are left out of that row's graph.
    #[arg(long, default_value_t = 0.0)]
    min_edge_rate: f64,
    /// Cycles after an incident's first at which it is judged too, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "0,5,10")]
    at: Vec<usize>,
    /// Write the summary as JSON to this file as well.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    baseline: BaselineArgs,
}

/// Runs the command.
pub(super) fn run(args: &Args) -> ExitCode {
    let Some(shown) = RankMethod::parse(&args.method) else {
        eprintln!(
            "kpiwatch: --method {:?} is not frontier, random_walk or highest_score",
            args.method
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let mut dirs = Vec::new();
    for r in &args.recordings {
        if let Err(e) = find_manifests(r, &mut dirs) {
            eprintln!("kpiwatch: {}: {e}", r.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if dirs.is_empty() {
        eprintln!("kpiwatch: no manifest.json under the directories given (expected mesh recordings, see docs/lab.md)");
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut tally = Tally::new(&args.at);
    for dir in &dirs {
        let rec = match Recording::load(dir, &args.metrics) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("kpiwatch: {}: {e}", dir.display());
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let replayed = match rec.replay(args) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("kpiwatch: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        for w in &rec.windows {
            tally.judge(&rec, &replayed, w, shown);
        }
    }
    print!("{}", tally.summary());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&tally.to_json()).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("kpiwatch: {}: cannot write: {e}", path.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    ExitCode::SUCCESS
}

/// Every directory at or below `dir` that holds a `manifest.json`, sorted.
fn find_manifests(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if dir.join("manifest.json").is_file() {
        out.push(dir.to_path_buf());
        return Ok(());
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    for d in subdirs {
        find_manifests(&d, out)?;
    }
    Ok(())
}

/// Where in the call graph a root cause sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Depth {
    Entry,
    Middle,
    Leaf,
}

impl Depth {
    fn name(self) -> &'static str {
        match self {
            Depth::Entry => "entry",
            Depth::Middle => "middle",
            Depth::Leaf => "leaf",
        }
    }
}

/// A fault window of the manifest.
#[derive(Debug)]
struct Window {
    phase: String,
    root: String,
    depth: Depth,
    affected: BTreeSet<String>,
    start: f64,
    end: f64,
}

/// One recording, read.
struct Recording {
    name: String,
    services: Vec<String>,
    /// Row timestamps (Unix seconds), shared by every service file.
    ts: Vec<f64>,
    /// Per service, its metric columns (in `--metrics` order) on the shared rows.
    columns: Vec<Vec<Vec<f64>>>,
    /// Per row, its edges `(client, server, rps)`.
    edges: Vec<Vec<(String, String, f64)>>,
    windows: Vec<Window>,
}

/// What the graph layer said at every row, per method.
struct Replayed {
    /// `verdicts[method][row]`, in the order of `RankMethod::ALL`; per row the services
    /// in the recording's order.
    verdicts: Vec<Vec<Vec<NodeVerdict>>>,
}

impl Recording {
    fn load(dir: &Path, metrics: &[String]) -> Result<Recording, String> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let m: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        if m["format"] != "kpiwatch-lab-mesh/1" {
            return Err(format!(
                "{}: format {} is not kpiwatch-lab-mesh/1",
                path.display(),
                m["format"]
            ));
        }
        let topology = &m["topology"];
        let entry = topology["entry"].as_str().unwrap_or_default().to_string();
        let callees_of = |s: &str| {
            topology["services"][s]["calls"]
                .as_array()
                .map_or(0, |c| c.len())
        };
        let services: Vec<(String, String)> = m["services"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((s["service"].as_str()?.into(), s["file"].as_str()?.into()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if services.is_empty() {
            return Err(format!("{}: no services", path.display()));
        }
        let mut windows = Vec::new();
        for w in m["windows"].as_array().into_iter().flatten() {
            let root = w["root_cause"].as_str().unwrap_or_default().to_string();
            let depth = if root == entry {
                Depth::Entry
            } else if callees_of(&root) == 0 {
                Depth::Leaf
            } else {
                Depth::Middle
            };
            windows.push(Window {
                phase: w["phase"].as_str().unwrap_or_default().to_string(),
                affected: w["affected"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect(),
                start: w["start"].as_f64().unwrap_or(f64::NAN),
                end: w["end"].as_f64().unwrap_or(f64::NAN),
                root,
                depth,
            });
        }
        let mut ts = Vec::new();
        let mut columns = Vec::new();
        for (s, file) in &services {
            let table = crate::dataset::read_csv(&dir.join(file)).map_err(|e| e.to_string())?;
            let t = table.require("timestamp").map_err(|e| e.to_string())?;
            if ts.is_empty() {
                ts = t.to_vec();
            } else if t != ts.as_slice() {
                return Err(format!(
                    "{s}.csv: its rows are not the other services' rows"
                ));
            }
            let cols = metrics
                .iter()
                .map(|c| table.require(c).map(<[f64]>::to_vec))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            columns.push(cols);
        }
        let row_of: HashMap<i64, usize> = ts
            .iter()
            .enumerate()
            .map(|(i, &t)| (t.round() as i64, i))
            .collect();
        let mut edges = vec![Vec::new(); ts.len()];
        let epath = dir.join("edges.csv");
        let etext = std::fs::read_to_string(&epath)
            .map_err(|e| format!("{}: cannot read: {e}", epath.display()))?;
        for (n, line) in etext.lines().enumerate().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            let (Some(t), Some(c), Some(s), Some(r)) =
                (cells.first(), cells.get(1), cells.get(2), cells.get(3))
            else {
                return Err(format!(
                    "{}:{}: expected timestamp,client,server,rps,...",
                    epath.display(),
                    n + 1
                ));
            };
            let t = crate::dataset::parse_number(t).unwrap_or(f64::NAN);
            let rate = crate::dataset::parse_number(r).unwrap_or(f64::NAN);
            if let Some(&row) = row_of.get(&(t.round() as i64)) {
                edges[row].push((c.to_string(), s.to_string(), rate));
            }
        }
        let name = format!(
            "{} s{}",
            m["scenario"].as_str().unwrap_or("?"),
            m["seed"].as_u64().unwrap_or(0)
        );
        Ok(Recording {
            name,
            services: services.into_iter().map(|(s, _)| s).collect(),
            ts,
            columns,
            edges,
            windows,
        })
    }

    /// Scores every service row by row and runs each method's graph layer over the rows.
    fn replay(&self, args: &Args) -> Result<Replayed, String> {
        let baseline = args.baseline.resolve(&self.ts)?;
        let names: Vec<&str> = args.metrics.iter().map(String::as_str).collect();
        let scores: Vec<Vec<f64>> = self
            .columns
            .iter()
            .map(|cols| {
                let mut detector = ZscoreDetector::new(ZscoreOptions::default());
                let cols: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
                replay(&mut detector, &cols, &names, args.history.max(2), &baseline)
                    .into_iter()
                    .map(|s| s.map_or(f64::NAN, |s| s.anomaly_score))
                    .collect()
            })
            .collect();
        let verdicts = RankMethod::ALL
            .iter()
            .map(|&method| {
                let mut analyzer = GraphAnalyzer::new(method);
                (0..self.ts.len())
                    .map(|row| {
                        let graph = CallGraph::new(
                            self.edges[row]
                                .iter()
                                .map(|(c, s, r)| (c.as_str(), s.as_str(), *r)),
                            args.min_edge_rate,
                        );
                        let nodes: Vec<(&str, f64)> = self
                            .services
                            .iter()
                            .zip(&scores)
                            .map(|(s, sc)| (s.as_str(), sc[row]))
                            .collect();
                        analyzer.analyze(&graph, &nodes)
                    })
                    .collect()
            })
            .collect();
        Ok(Replayed { verdicts })
    }
}

/// Counts of one method (or baseline) at one offset.
#[derive(Debug, Default, Clone)]
struct Hits {
    judged: usize,
    top1: f64,
    top3: f64,
}

/// Symptom marks of one method over the judged rows.
#[derive(Debug, Default, Clone)]
struct Marks {
    marks: usize,
    correct: usize,
    /// Incidents in which the true root cause was marked a symptom at a judged row.
    origin_hidden: usize,
}

/// The evaluation's running totals.
struct Tally {
    at: Vec<usize>,
    incidents: usize,
    undetected: usize,
    /// `(method or baseline name, depth or "all", offset) → hits`.
    hits: BTreeMap<(String, String, usize), Hits>,
    marks: BTreeMap<String, Marks>,
    lines: String,
}

/// The baseline that picks at random among the anomalous services (expected hits).
const RANDOM: &str = "random";
/// Not a ranking: how often the root cause was anomalous at all (every ranking's ceiling).
const DETECTED: &str = "root_anomalous";

impl Tally {
    fn new(at: &[usize]) -> Self {
        Tally {
            at: at.to_vec(),
            incidents: 0,
            undetected: 0,
            hits: BTreeMap::new(),
            marks: BTreeMap::new(),
            lines: String::new(),
        }
    }

    fn add(&mut self, who: &str, depth: Depth, at: usize, top1: f64, top3: f64) {
        for d in ["all", depth.name()] {
            let h = self
                .hits
                .entry((who.to_string(), d.to_string(), at))
                .or_default();
            h.judged += 1;
            h.top1 += top1;
            h.top3 += top3;
        }
    }

    /// Judges one incident: its first anomalous row in the window, then `at` rows later.
    fn judge(&mut self, rec: &Recording, replayed: &Replayed, w: &Window, shown: RankMethod) {
        use std::fmt::Write as _;
        self.incidents += 1;
        let rows: Vec<usize> = (0..rec.ts.len())
            .filter(|&r| rec.ts[r] >= w.start && rec.ts[r] <= w.end)
            .collect();
        let any = &replayed.verdicts[0];
        let first = rows
            .iter()
            .copied()
            .find(|&r| any[r].iter().any(|v| v.rank.is_some()));
        let root_idx = rec.services.iter().position(|s| *s == w.root);
        let _ = write!(
            self.lines,
            "{} {} (root {}, {}):",
            rec.name,
            w.phase,
            w.root,
            w.depth.name()
        );
        let Some(first) = first else {
            self.undetected += 1;
            let _ = writeln!(self.lines, " no service anomalous in the window");
            for &at in &self.at.clone() {
                for m in RankMethod::ALL {
                    self.add(m.name(), w.depth, at, 0.0, 0.0);
                }
                self.add(RANDOM, w.depth, at, 0.0, 0.0);
                self.add(DETECTED, w.depth, at, 0.0, 0.0);
            }
            return;
        };
        let mut hidden = vec![false; RankMethod::ALL.len()];
        for &at in &self.at.clone() {
            let row = first + at;
            if rows.last().is_none_or(|&last| row > last) {
                continue;
            }
            for (k, m) in RankMethod::ALL.iter().enumerate() {
                let verdicts = &replayed.verdicts[k][row];
                let rank = root_idx.and_then(|i| verdicts[i].rank);
                let hit = |n: u32| f64::from(u8::from(rank.is_some_and(|r| r <= n)));
                self.add(m.name(), w.depth, at, hit(1), hit(3));
                let marks = self.marks.entry(m.name().to_string()).or_default();
                for v in verdicts.iter().filter(|v| v.symptom_of.is_some()) {
                    marks.marks += 1;
                    if v.name != w.root && w.affected.contains(&v.name) {
                        marks.correct += 1;
                    }
                    if v.name == w.root {
                        hidden[k] = true;
                    }
                }
                if *m == shown {
                    let mut ranked: Vec<&NodeVerdict> =
                        verdicts.iter().filter(|v| v.rank.is_some()).collect();
                    ranked.sort_by_key(|v| v.rank);
                    let list: Vec<String> = ranked
                        .iter()
                        .map(|v| match &v.symptom_of {
                            Some(c) => format!("{}({}←{c})", v.name, v.rank.unwrap_or(0)),
                            None => format!("{}({})", v.name, v.rank.unwrap_or(0)),
                        })
                        .collect();
                    let _ = write!(
                        self.lines,
                        " | +{at}: {} → root at {}",
                        list.join(" "),
                        rank.map_or("-".to_string(), |r| r.to_string())
                    );
                }
            }
            // Random among the anomalous: expected hits.
            let anomalous = any[row].iter().filter(|v| v.rank.is_some()).count() as f64;
            let root_anomalous = root_idx.is_some_and(|i| any[row][i].rank.is_some());
            let (r1, r3) = if root_anomalous {
                (1.0 / anomalous, anomalous.min(3.0) / anomalous)
            } else {
                (0.0, 0.0)
            };
            self.add(RANDOM, w.depth, at, r1, r3);
            // The ceiling every ranking shares: the node detector flagged the root.
            let ceiling = f64::from(u8::from(root_anomalous));
            self.add(DETECTED, w.depth, at, ceiling, ceiling);
        }
        for (k, m) in RankMethod::ALL.iter().enumerate() {
            if hidden[k] {
                self.marks
                    .entry(m.name().to_string())
                    .or_default()
                    .origin_hidden += 1;
            }
        }
        self.lines.push('\n');
    }

    fn who() -> Vec<&'static str> {
        RankMethod::ALL
            .iter()
            .map(|m| m.name())
            .chain([RANDOM, DETECTED])
            .collect()
    }

    fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = self.lines.clone();
        let _ = writeln!(
            out,
            "\n{} incidents, {} with no service anomalous in the window",
            self.incidents, self.undetected
        );
        let _ = writeln!(
            out,
            "\naccuracy at 1 / at 3 (incidents judged), per cycle after the first:"
        );
        for depth in ["all", "entry", "middle", "leaf"] {
            for &at in &self.at {
                let mut cells = Vec::new();
                for who in Self::who() {
                    if let Some(h) = self.hits.get(&(who.to_string(), depth.to_string(), at)) {
                        cells.push(format!(
                            "{who} {:.2}/{:.2}",
                            h.top1 / h.judged as f64,
                            h.top3 / h.judged as f64
                        ));
                    }
                }
                if let Some(h) = self.hits.get(&(RANDOM.to_string(), depth.to_string(), at)) {
                    let _ = writeln!(
                        out,
                        "  {depth:<6} +{at:<3} n={:<3} {}",
                        h.judged,
                        cells.join("  ")
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "\nsymptom marks (judged rows): precision, origin marked a symptom"
        );
        for (who, m) in &self.marks {
            let _ = writeln!(
                out,
                "  {who:<14} {} marks, precision {:.2}, origin hidden in {} of {} incidents ({:.1}%)",
                m.marks,
                ratio(m.correct, m.marks),
                m.origin_hidden,
                self.incidents,
                100.0 * ratio(m.origin_hidden, self.incidents)
            );
        }
        out
    }

    fn to_json(&self) -> serde_json::Value {
        let mut acc = serde_json::Map::new();
        for ((who, depth, at), h) in &self.hits {
            acc.insert(
                format!("{who}/{depth}/+{at}"),
                serde_json::json!({
                    "judged": h.judged,
                    "top1": h.top1 / h.judged as f64,
                    "top3": h.top3 / h.judged as f64,
                }),
            );
        }
        let marks: serde_json::Map<String, serde_json::Value> = self
            .marks
            .iter()
            .map(|(who, m)| {
                (
                    who.clone(),
                    serde_json::json!({
                        "marks": m.marks,
                        "precision": ratio(m.correct, m.marks),
                        "origin_hidden": m.origin_hidden,
                        "origin_hidden_share": ratio(m.origin_hidden, self.incidents),
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "incidents": self.incidents,
            "undetected": self.undetected,
            "accuracy": acc,
            "symptoms": marks,
        })
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
