//! `kpiwatch regress`: offline performance-regression check of two load tests.
//!
//! ```text
//! kpiwatch regress --baseline before.csv --current after.csv [--method siamese|matched|ks|mwu]
//!                  [--kpi response_time,throughput,success_rate] [--model DIR] [--plot FILE.svg]
//!                  [--min-effect response_time=0.2,throughput=0.2,success_rate=0.02]
//! ```
//!
//! Input: CSV `timestamp,workload,response_time,throughput,success_rate` (the lab's
//! format, see `detect::regress::window`). Output: one JSON object on stdout (see
//! `detect::regress::verdict`). Exit codes, so that CI pipelines can gate on them:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | normal: every asked KPI was judged and none regressed |
//! | 1 | error: unreadable or malformed file, model failure |
//! | 2 | usage: bad arguments (clap's own code too) |
//! | 3 | regression: at least one KPI regressed |
//! | 4 | insufficient data: nothing regressed but some KPI could not be judged |

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::detect::regress::{self, Kpi, LoadTest, Method, Options, Report, WindowError};

/// Exit code for errors (unreadable input, model failure).
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit code for bad arguments.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Arguments of `kpiwatch regress`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegressArgs {
    /// Baseline load test (CSV: timestamp,workload,response_time,throughput,success_rate).
    #[arg(long, value_name = "FILE")]
    pub baseline: PathBuf,
    /// Current load test, same format.
    #[arg(long, value_name = "FILE")]
    pub current: PathBuf,
    /// matched (compares at matched workload: effect size and a rank test; model-free),
    /// siamese (DynamicRegress model), ks (Kolmogorov–Smirnov) or mwu (Mann–Whitney U).
    #[arg(long, default_value = "matched", value_parser = parse_method)]
    pub method: Method,
    /// KPIs to judge, comma separated (default: all three).
    #[arg(long, value_delimiter = ',', value_parser = parse_kpi)]
    pub kpi: Vec<Kpi>,
    /// Significance level of matched / ks / mwu: p < alpha is a regression.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Matched method: smallest relative worsening at matched load that counts, per KPI
    /// (KPI=FRACTION, comma separated; unnamed KPIs keep their defaults
    /// response_time=0.2, throughput=0.2, success_rate=0.02).
    #[arg(long, value_delimiter = ',', value_name = "KPI=FRACTION", value_parser = parse_min_effect)]
    pub min_effect: Vec<(Kpi, f64)>,
    /// Siamese decision threshold: probability >= threshold is a regression.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// Fewest usable points per window and KPI; fewer gives insufficient_data.
    #[arg(long, default_value_t = 20)]
    pub min_points: usize,
    /// Directory with regress_encoder.onnx and regress_head.onnx.
    #[arg(
        long,
        value_name = "DIR",
        env = "KPIWATCH_REGRESS_MODEL",
        default_value = "models"
    )]
    pub model: PathBuf,
    /// Also draw each KPI against workload for both windows into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

fn parse_method(s: &str) -> Result<Method, String> {
    s.parse()
}

fn parse_kpi(s: &str) -> Result<Kpi, String> {
    s.parse()
}

fn parse_min_effect(s: &str) -> Result<(Kpi, f64), String> {
    let (kpi, v) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not KPI=FRACTION (e.g. response_time=0.1)"))?;
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|_| format!("`{v}` is not a number (expected a fraction such as 0.1)"))?;
    if !(0.0..1.0).contains(&v) {
        return Err(format!("{v} is out of range (expected 0 <= FRACTION < 1)"));
    }
    Ok((kpi.trim().parse()?, v))
}

/// Why `kpiwatch regress` failed; [`RegressCliError::exit_code`] maps it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegressCliError {
    /// Bad argument values.
    #[error("{0}")]
    Usage(String),
    /// A window file could not be read.
    #[error(transparent)]
    Window(#[from] WindowError),
    /// The model could not be loaded or failed.
    #[error(transparent)]
    Model(#[from] regress::model::ModelError),
    /// The comparison failed.
    #[error(transparent)]
    Compare(#[from] regress::RegressError),
    /// The plot could not be written.
    #[error("cannot write the plot {path}: {source}")]
    Plot {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl RegressCliError {
    /// Process exit code (1 error, 2 usage).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            RegressCliError::Usage(_) => EXIT_USAGE,
            _ => EXIT_ERROR,
        }
    }
}

impl RegressArgs {
    fn options(&self) -> Result<Options, RegressCliError> {
        if self.alpha.is_nan() || self.alpha <= 0.0 || self.alpha >= 1.0 {
            return Err(RegressCliError::Usage(format!(
                "--alpha must be in (0, 1), got {}",
                self.alpha
            )));
        }
        if self.threshold.is_nan() || self.threshold <= 0.0 || self.threshold >= 1.0 {
            return Err(RegressCliError::Usage(format!(
                "--threshold must be in (0, 1), got {}",
                self.threshold
            )));
        }
        if self.min_points < 2 {
            return Err(RegressCliError::Usage(
                "--min-points must be at least 2".into(),
            ));
        }
        let mut kpis = if self.kpi.is_empty() {
            Kpi::ALL.to_vec()
        } else {
            self.kpi.clone()
        };
        kpis.sort();
        kpis.dedup();
        let mut opts = Options {
            method: self.method,
            kpis,
            alpha: self.alpha,
            threshold: self.threshold,
            ..Default::default()
        };
        opts.limits.min_points = self.min_points;
        for &(kpi, v) in &self.min_effect {
            opts.min_effect[kpi.index()] = v;
        }
        Ok(opts)
    }
}

/// Reads a load-test CSV file (the format of `detect::regress::window`).
fn read_load_test(path: &std::path::Path) -> Result<LoadTest, WindowError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WindowError::Io {
        path: name.clone(),
        source,
    })?;
    LoadTest::parse_csv(&text, &name)
}

/// Runs the comparison and returns the report (no printing).
pub(crate) fn evaluate(args: &RegressArgs) -> Result<Report, RegressCliError> {
    let opts = args.options()?;
    let baseline = read_load_test(&args.baseline)?;
    let current = read_load_test(&args.current)?;
    let model = match opts.method {
        Method::Siamese => Some(regress::RegressModel::load(&args.model)?),
        _ => None,
    };
    let report = regress::compare(&baseline, &current, &opts, model.as_ref())?;
    if let Some(path) = &args.plot {
        let svg = plot_svg(&baseline, &current, &opts.kpis, &report);
        std::fs::write(path, svg).map_err(|source| RegressCliError::Plot {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

/// Runs the comparison, prints the JSON report and returns the exit code of its verdict.
pub(crate) fn check(args: &RegressArgs) -> Result<u8, RegressCliError> {
    let report = evaluate(args)?;
    println!("{}", report.to_json());
    Ok(report.verdict.exit_code())
}

/// `kpiwatch regress`: [`check`], with errors printed to stderr and mapped to 1 or 2.
pub(crate) fn run(args: &RegressArgs) -> ExitCode {
    match check(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kpiwatch regress: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

const W: f64 = 360.0;
const H: f64 = 260.0;
const PAD: f64 = 44.0;

/// One panel per KPI: the KPI (y) against workload (x), baseline blue, current orange.
pub(crate) fn plot_svg(
    baseline: &LoadTest,
    current: &LoadTest,
    kpis: &[Kpi],
    report: &Report,
) -> String {
    let width = W * kpis.len().max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-family="sans-serif" font-size="11">"#,
        h = H + 20.0
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, &kpi) in kpis.iter().enumerate() {
        panel(&mut s, i as f64 * W, kpi, baseline, current, report);
    }
    let _ = write!(
        s,
        r##"<text x="8" y="{y}"><tspan fill="#1f77b4">● baseline</tspan>  <tspan fill="#ff7f0e">● current</tspan>  verdict: {v}</text></svg>"##,
        y = H + 14.0,
        v = report.verdict.as_str()
    );
    s
}

fn points(t: &LoadTest, kpi: Kpi) -> Vec<(f64, f64)> {
    let Some(k) = t.kpi(kpi) else {
        return Vec::new();
    };
    t.workload
        .iter()
        .zip(k)
        .filter(|(w, v)| w.is_finite() && v.is_finite())
        .map(|(&w, &v)| (w, v))
        .collect()
}

fn panel(s: &mut String, x0: f64, kpi: Kpi, b: &LoadTest, c: &LoadTest, report: &Report) {
    let (pb, pc) = (points(b, kpi), points(c, kpi));
    let all = pb.iter().chain(&pc);
    let (mut xmin, mut xmax, mut ymin, mut ymax) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (xmin, xmax, ymin, ymax) = (xmin.min(x), xmax.max(x), ymin.min(y), ymax.max(y));
    }
    if xmin > xmax {
        (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
    }
    let (xr, yr) = ((xmax - xmin).max(1e-12), (ymax - ymin).max(1e-12));
    let px = |x: f64| x0 + PAD + (x - xmin) / xr * (W - PAD - 10.0);
    let py = |y: f64| H - PAD + 10.0 - (y - ymin) / yr * (H - PAD - 10.0);
    let outcome = report.kpis.get(kpi.name());
    let label = match outcome.and_then(|o| o.regression) {
        Some(true) => "REGRESSION",
        Some(false) => "normal",
        None => "insufficient data",
    };
    let _ = write!(
        s,
        r##"<g><rect x="{x}" y="10" width="{w}" height="{h}" fill="none" stroke="#ccc"/><text x="{tx}" y="22">{kpi} vs workload: {label}</text><text x="{tx}" y="{by}">workload {xmin:.3} … {xmax:.3}</text><text x="{lx}" y="{ly}" transform="rotate(-90 {lx} {ly})">{ymin:.4} … {ymax:.4}</text>"##,
        x = x0 + PAD,
        w = W - PAD - 10.0,
        h = H - PAD,
        tx = x0 + PAD + 4.0,
        by = H - 4.0,
        lx = x0 + 12.0,
        ly = H - PAD,
    );
    for (pts, color) in [(&pb, "#1f77b4"), (&pc, "#ff7f0e")] {
        for &(x, y) in pts.iter() {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{color}" fill-opacity="0.6"/>"#,
                px(x),
                py(y)
            );
        }
    }
    s.push_str("</g>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::regress::Verdict;
    use std::path::Path;

    fn repo_path(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    fn write_csv(dir: &Path, name: &str, rt: f64, n: usize) -> PathBuf {
        let mut s = String::from("timestamp,workload,response_time,throughput,success_rate\n");
        for i in 0..n {
            let w = 5.0 + i as f64;
            let wiggle = ((i * 31) % 7) as f64 / 70.0;
            let _ = writeln!(s, "{i},{w},{},{},1.0", rt * (1.0 + wiggle), w * 3.0);
        }
        let p = dir.join(name);
        std::fs::write(&p, s).unwrap();
        p
    }

    fn args(b: PathBuf, c: PathBuf, method: Method) -> RegressArgs {
        RegressArgs {
            baseline: b,
            current: c,
            method,
            kpi: vec![],
            alpha: 0.05,
            min_effect: Vec::new(),
            threshold: 0.5,
            min_points: 20,
            model: repo_path("models"),
            plot: None,
        }
    }

    #[test]
    fn ks_gate_exit_codes_and_plot() {
        let dir = tempfile::tempdir().unwrap();
        let b = write_csv(dir.path(), "b.csv", 0.1, 80);
        let slow = write_csv(dir.path(), "c.csv", 0.2, 80);
        let short = write_csv(dir.path(), "s.csv", 0.1, 10);
        assert_eq!(check(&args(b.clone(), b.clone(), Method::Ks)).unwrap(), 0);
        let mut a = args(b.clone(), slow, Method::Mwu);
        a.plot = Some(dir.path().join("p.svg"));
        let r = evaluate(&a).unwrap();
        assert_eq!(r.verdict, Verdict::Regression);
        assert_eq!(r.verdict.exit_code(), 3);
        let svg = std::fs::read_to_string(dir.path().join("p.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>") && svg.contains("REGRESSION"));
        assert_eq!(check(&args(b.clone(), short, Method::Ks)).unwrap(), 4);
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let b = write_csv(dir.path(), "b.csv", 0.1, 80);
        let missing = dir.path().join("nope.csv");
        let e = check(&args(b.clone(), missing, Method::Ks)).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_ERROR);
        assert!(e.to_string().contains("nope.csv"));
        let mut a = args(b.clone(), b.clone(), Method::Ks);
        a.alpha = 1.5;
        assert_eq!(check(&a).unwrap_err().exit_code(), EXIT_USAGE);
        let mut a = args(b.clone(), b, Method::Siamese);
        a.model = dir.path().to_path_buf();
        let e = check(&a).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_ERROR);
        assert!(e.to_string().contains("regress_encoder.onnx"), "{e}");
    }
}
