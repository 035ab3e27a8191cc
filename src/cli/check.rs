//! `kpiwatch check-config FILE`.

use std::path::Path;
use std::process::ExitCode;

use super::EXIT_CONFIG;

/// Prints every error of the file (one per line) and returns 2, or a summary, the
/// config's warnings (on stderr, `warning: ...`) and 0: a warning never fails the check.
pub(super) fn check_config(path: &Path) -> ExitCode {
    match crate::config::load(path) {
        Ok(c) => {
            let metrics: usize = c.groups.iter().map(|g| g.metrics.len()).sum();
            println!(
                "{}: OK ({} group(s), {} metric(s), listen {})",
                path.display(),
                c.groups.len(),
                metrics,
                c.listen
            );
            for warning in c.warnings() {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in &errs.0 {
                println!("{e}");
            }
            eprintln!("{} error(s).", errs.0.len());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
