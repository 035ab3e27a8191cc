//! The `kpiwatch` binary: everything is in the library; see `kpiwatch --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    kpiwatch::cli::run(kpiwatch::cli::Cli::parse())
}
