//! The command line: `run`, `check-config`, `version`, `backtest`, and the offline
//! tools under `detect` and `regress`. Parses arguments, initialises logging and maps outcomes to
//! exit codes; the work itself lives in [`crate::app`], [`crate::config`] and the
//! detectors.
//!
//! Exit codes: 0 success, 1 runtime error, 2 invalid config or usage.

mod backtest;
mod check;
mod detect_adsketch;
mod detect_graph;
mod detect_uniad;
mod detect_zscore;
mod offline;
pub(crate) mod regress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for an invalid config or invalid arguments.
pub const EXIT_CONFIG: u8 = 2;

/// kpiwatch: anomaly and performance-regression detection beside Prometheus.
///
/// kpiwatch reads metric windows from Prometheus (query_range), scores every entity
/// (node, pod, service, route) with its detectors, and serves the scores on /metrics
/// as kpiwatch_anomaly_score{detector,...}, where 1.0 is the threshold: alert on
/// `kpiwatch_anomaly_score > 1`.
#[derive(Debug, Parser)]
#[command(
    name = "kpiwatch",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Examples:\n  kpiwatch check-config config/kpiwatch.example.yaml\n  kpiwatch run --config /etc/kpiwatch/kpiwatch.yaml\n  kpiwatch backtest --config kpiwatch.yaml --from now-7d --out bt/\n  kpiwatch --log-format json run --config kpiwatch.yaml\n\nDocs: README.md (metrics, configuration reference, alerting)."
)]
pub struct Cli {
    /// Log level or tracing filter (error, warn, info, debug, trace, or e.g.
    /// `kpiwatch=debug,reqwest=warn`).
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "KPIWATCH_LOG_LEVEL"
    )]
    pub log_level: String,
    /// Log format: human-readable text or one JSON object per line (for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "KPIWATCH_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: read Prometheus, score entities, serve /metrics.
    ///
    /// The config is validated before any port is bound. SIGHUP or `POST /-/reload`
    /// reloads it (a broken new config keeps the old one running); SIGTERM or SIGINT
    /// stops after saving learned state.
    Run {
        /// Config file (YAML). See config/kpiwatch.example.yaml.
        #[arg(long, short, env = "KPIWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and print every error (exit 0 if valid, 2 if not); warnings
    /// about valid but risky settings go to stderr.
    CheckConfig {
        /// Config file (YAML).
        file: PathBuf,
    },
    /// Print the version and build information.
    Version,
    /// Run a detector offline on a CSV file (tuning, evaluation, reproduction).
    #[command(subcommand)]
    Detect(DetectCommand),
    /// Replay the config over past Prometheus history: the alerts it would have fired
    /// (summary, alerts.csv, scores.csv, report.html).
    ///
    /// Runs the config's groups cycle by cycle as the agent would have (same store,
    /// normaliser, seasonal baseline, detectors and state), from history fetched in
    /// segments, and turns the scores into the alerts of the rule file, honouring `for:`.
    /// Times are RFC 3339 (2026-12-01T00:00:00Z), Unix seconds, `now` or `now-DURATION`.
    /// Exit codes: 0 done, 1 Prometheus failed after the client's retries, 2 bad
    /// arguments, config, rules or labels. Details: docs/backtest.md.
    Backtest(backtest::Args),
    /// Compare a current load test with a baseline per KPI (exit 0 normal, 3 regression, 4 insufficient data).
    Regress(regress::RegressArgs),
}

/// Offline detectors.
#[derive(Debug, Subcommand)]
pub enum DetectCommand {
    /// Robust z-score on each column of a CSV (`timestamp` + metric columns [+ `label`]).
    Zscore(detect_zscore::Args),
    /// ADSketch patterns: learn on --train/--test, match --online (see `detect adsketch --help`).
    Adsketch(detect_adsketch::Args),
    /// Uni-AD (shared ONNX model) on a CSV entity (`timestamp` + metric columns [+ `label`]).
    Uniad(detect_uniad::Args),
    /// Root cause on the service graph over recorded mesh incidents (lab recordings; see `detect graph --help`).
    Graph(detect_graph::Args),
}

/// Initialises tracing; `Err` describes a bad filter.
pub fn init_tracing(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
        format!("--log-level {level:?}: {e} (expected e.g. info or kpiwatch=debug)")
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    if let Err(e) = init_tracing(&cli.log_level, cli.log_format) {
        eprintln!("kpiwatch: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match cli.command {
        Command::Run { config } => run_agent(config),
        Command::CheckConfig { file } => check::check_config(&file),
        Command::Version => {
            println!(
                "kpiwatch {} (revision {}, {} {})",
                env!("CARGO_PKG_VERSION"),
                option_env!("KPIWATCH_REVISION").unwrap_or("unknown"),
                std::env::consts::OS,
                std::env::consts::ARCH
            );
            ExitCode::SUCCESS
        }
        Command::Detect(DetectCommand::Zscore(args)) => detect_zscore::run(&args),
        Command::Detect(DetectCommand::Adsketch(args)) => detect_adsketch::run(&args),
        Command::Detect(DetectCommand::Uniad(args)) => detect_uniad::run(&args),
        Command::Detect(DetectCommand::Graph(args)) => detect_graph::run(&args),
        Command::Regress(args) => regress::run(&args),
        Command::Backtest(args) => backtest::run(&args),
    }
}

fn run_agent(path: PathBuf) -> ExitCode {
    let config = match crate::config::load(&path) {
        Ok(c) => c,
        Err(errs) => {
            eprintln!("{errs}");
            eprintln!(
                "kpiwatch: {} error(s) in {}; not starting.",
                errs.0.len(),
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kpiwatch-worker")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kpiwatch: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(crate::app::run(path, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "kpiwatch failed.");
            eprintln!("kpiwatch: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
