//! `kpiwatch backtest`: what the config's detectors and alert rules would have done over
//! a past range of real Prometheus history (see [`crate::backtest`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use super::{EXIT_CONFIG, EXIT_FAILURE};
use crate::backtest::{self, alerts, incidents, overrides, report, Options};
use crate::config::Config;

/// The rules shipped in `deploy/rules/kpiwatch.rules.yml`, the default of `--rules`.
const SHIPPED_RULES: &str = include_str!("../../deploy/rules/kpiwatch.rules.yml");

/// The arguments of `kpiwatch backtest` (its help text is on [`super::Command::Backtest`]).
#[derive(Debug, Parser)]
#[command(
    after_help = "Examples:\n  kpiwatch backtest --config kpiwatch.yaml --from now-1d --to now\n  kpiwatch backtest --config kpiwatch.yaml --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z --out bt/\n  kpiwatch backtest --config kpiwatch.yaml --from now-7d --to now --labels incidents.csv --group nodes\n  kpiwatch backtest --config kpiwatch.yaml --from now-7d --labels incidents.csv --set 'groups[nodes].detectors.zscore.threshold=4,5,6'\n\nOutputs in --out: alerts.csv, scores.csv, report.html (sweep.csv for sweeps); columns in docs/backtest.md."
)]
pub struct Args {
    /// Config file (YAML), as `kpiwatch run` takes it.
    #[arg(long, short)]
    pub config: PathBuf,
    /// First cycle: RFC 3339, Unix seconds, now or now-DURATION (now-7d, now-6h30m).
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// Last cycle (at most now).
    #[arg(long, value_name = "TIME", default_value = "now")]
    pub to: String,
    /// Only these groups (repeat for several); default every group.
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// Prometheus rule file whose score alerts to evaluate; default the shipped
    /// deploy/rules/kpiwatch.rules.yml.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Known incidents (CSV: `start`, `end` and entity label columns): adds
    /// precision, recall, F1 and time to detect per detector.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Directory for alerts.csv, scores.csv and report.html (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a config value for the run: `KEY=VALUE`, or `KEY=V1,V2,…` to sweep
    /// (one run and one summary row per value; several --set sweep every combination).
    /// KEY is a path such as groups[0].detectors.zscore.threshold or
    /// groups[node].detectors.uniad.threshold.risk.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Threads per group (its entities split among them); default: the CPUs.
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Parses `--from`/`--to`: RFC 3339, Unix seconds, `now`, `now-DURATION`.
pub(crate) fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = s.strip_prefix("now-") {
        let d = crate::config::parse_duration(ago)?;
        return Ok(now_ms - d.as_millis() as i64);
    }
    incidents::parse_instant(s).ok_or_else(|| {
        format!("{s:?} is not a time (expected RFC 3339 such as 2026-12-01T00:00:00Z, Unix seconds, now or now-1d)")
    })
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("kpiwatch backtest: {msg}");
    ExitCode::from(EXIT_CONFIG)
}

/// Runs the command.
pub(crate) fn run(args: &Args) -> ExitCode {
    let now = crate::clock::now_ms();
    let (from_ms, to_ms) = match (parse_time(&args.from, now), parse_time(&args.to, now)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) => return usage(format!("--from: {e}")),
        (_, Err(e)) => return usage(format!("--to: {e}")),
    };
    if to_ms < from_ms {
        return usage(format!(
            "--to {} is before --from {}",
            report::rfc3339(to_ms),
            report::rfc3339(from_ms)
        ));
    }
    if to_ms > now {
        return usage(format!(
            "--to {} is in the future (now is {}): the agent cannot have seen it",
            report::rfc3339(to_ms),
            report::rfc3339(now)
        ));
    }
    let configs = match sweep_configs(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let config = &configs[0].1;
    if let Some(g) = args
        .groups
        .iter()
        .find(|g| !config.groups.iter().any(|c| &&c.name == g))
    {
        let names: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
        return usage(format!(
            "--group {g:?} is not in {} (groups: {})",
            args.config.display(),
            names.join(", ")
        ));
    }
    let rules = match &args.rules {
        Some(path) => alerts::load(path).map_err(|e| e.to_string()),
        None => alerts::parse(SHIPPED_RULES).map_err(|e| format!("the shipped rules: {e}")),
    };
    let rules = match rules {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let known = match args.labels.as_deref().map(incidents::load).transpose() {
        Ok(k) => k,
        Err(e) => return usage(format!("--labels: {e}")),
    };
    let opts = Options {
        from_ms,
        to_ms,
        groups: args.groups.clone(),
        workers: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
    };
    let cycles: usize = configs
        .iter()
        .flat_map(|(_, c)| backtest::selected_groups(c, &opts))
        .map(|g| backtest::cycle_times(from_ms, to_ms, g.interval).len())
        .sum();
    let bar = progress_bar(cycles as u64, args.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kpiwatch backtest: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let sweeping = configs.len() > 1;
    let mut rows = Vec::new();
    for (setting, config) in &configs {
        let outcome = match runtime.block_on(backtest::run(config, &opts, &bar)) {
            Ok(o) => o,
            Err(e) => {
                bar.abandon();
                eprintln!("kpiwatch backtest: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        let fired = alerts::evaluate(&rules, &outcome.recorder);
        let scored = known
            .as_deref()
            .map(|k| incidents::score(k, &fired, &outcome.recorder, to_ms));
        if sweeping {
            rows.push(report::sweep_row(
                setting,
                &fired,
                scored.as_deref(),
                from_ms,
                to_ms,
            ));
            continue;
        }
        bar.finish_and_clear();
        let text = report::summary(&outcome, &rules, &fired, from_ms, to_ms, scored.as_deref());
        print!("{text}");
        if let Some(dir) = &args.out {
            if let Err(e) = write_outputs(dir, &outcome, &fired, &text, from_ms, to_ms) {
                eprintln!("kpiwatch backtest: writing {}: {e}", dir.display());
                return ExitCode::from(EXIT_FAILURE);
            }
            println!(
                "\nWrote {0}/alerts.csv, {0}/scores.csv and {0}/report.html.",
                dir.display()
            );
        }
    }
    if sweeping {
        bar.finish_and_clear();
        let table = report::sweep_table(&rows, known.is_some());
        print!("{table}");
        if let Some(dir) = &args.out {
            let written = std::fs::create_dir_all(dir)
                .and_then(|()| report::write_sweep(&dir.join("sweep.csv"), &rows));
            if let Err(e) = written {
                eprintln!("kpiwatch backtest: writing {}: {e}", dir.display());
                return ExitCode::from(EXIT_FAILURE);
            }
            println!("\nWrote {}/sweep.csv.", dir.display());
        }
    }
    ExitCode::SUCCESS
}

/// The config of every setting `--set` asks for (the file as written without it), each
/// validated before anything runs; `Err` is the exit code after the message.
fn sweep_configs(args: &Args) -> Result<Vec<(overrides::Setting, Config)>, ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| usage(format!("{}: {e}", args.config.display())))?;
    let sets = args
        .set
        .iter()
        .map(|s| overrides::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let mut out = Vec::new();
    for setting in overrides::settings(&sets) {
        let edited = overrides::apply(&text, &setting).map_err(usage)?;
        match crate::config::parse_str(&edited, &args.config, &crate::config::ProcessEnv) {
            Ok(c) => out.push((setting, c)),
            Err(errs) => {
                eprintln!("{errs}");
                return Err(usage(format!(
                    "{} error(s) in {} with {}",
                    errs.0.len(),
                    args.config.display(),
                    overrides::describe(&setting)
                )));
            }
        }
    }
    Ok(out)
}

fn write_outputs(
    dir: &Path,
    outcome: &backtest::Outcome,
    fired: &[alerts::Alert],
    text: &str,
    from_ms: i64,
    to_ms: i64,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    report::write_alerts(&dir.join("alerts.csv"), fired)?;
    report::write_scores(&dir.join("scores.csv"), &outcome.recorder)?;
    report::write_html(
        &dir.join("report.html"),
        &outcome.recorder,
        fired,
        text,
        from_ms,
        to_ms,
    )
}

/// A bar on stderr, one tick per cycle; hidden with `--quiet` (indicatif also hides
/// it when stderr is not a terminal).
fn progress_bar(total: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} cycles ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_take_rfc3339_unix_seconds_and_now_relative_forms() {
        let now = 1_796_119_200_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("now-1h30m", now), Ok(now - 5_400_000));
        assert_eq!(parse_time("2026-12-01T10:00:00Z", 0), Ok(1_796_119_200_000));
        assert_eq!(parse_time("1796119200", 0), Ok(1_796_119_200_000));
        assert!(parse_time("yesterday", now)
            .unwrap_err()
            .contains("RFC 3339"));
        assert!(parse_time("now-1x", now).is_err());
    }
}
