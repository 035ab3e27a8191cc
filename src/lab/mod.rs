//! The lab: a real service under real load on loopback, faults and deployments injected
//! on a schedule, a real Prometheus scraping everything, and the recording exported as
//! labeled datasets (see `docs/lab.md` for the formats and commands).
//!
//! This module owns:
//! * [`service`]: the test service (hyper) with its metrics and the admin endpoint that
//!   switches fault modes and the deployed version at run time;
//! * [`topology`]: the service mesh's topology (services, calls, client settings) and
//!   its validation;
//! * [`mesh`]: one service of the mesh, calling its callees over HTTP, with its RED and
//!   service-graph metrics and its faults;
//! * [`load`]: the load generator (closed-loop virtual users or open-loop rate) and its
//!   load profiles;
//! * [`scenario`]: the YAML scenario format and its validation (everything is checked
//!   before any process starts);
//! * [`procs`]: the child processes (Prometheus, node_exporter, the service) under a
//!   supervisor that stops them all on error, crash or Ctrl-C;
//! * [`runner`]: plays a scenario's phases or load-test runs;
//! * [`record`]: `query_range` export into anomaly and regression datasets;
//! * [`mesh_record`]: the export of a mesh recording, with each fault window's root
//!   cause and the services it affected.
//!
//! It is used only by the `kpiwatch-lab` binary and the lab tests: no agent module may
//! `use crate::lab`.

pub mod load;
pub mod mesh;
pub mod mesh_record;
pub mod procs;
pub mod record;
pub mod runner;
pub mod scenario;
pub mod service;
pub mod topology;

use std::path::PathBuf;

/// Everything that can stop a lab run.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The scenario file could not be read or is invalid (every problem listed).
    #[error("scenario {file}: {}", problems.join("\n  "))]
    Scenario {
        /// The scenario file.
        file: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// A lab process could not be started.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// Role of the process (prometheus, node_exporter, service).
        name: String,
        /// Program path.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A lab process exited while the run needed it.
    #[error("{name} exited unexpectedly ({status}); last lines of {log}:\n{tail}")]
    Crashed {
        /// Role of the process.
        name: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: String,
        /// The end of its log.
        tail: String,
    },
    /// A component did not become ready in time.
    #[error("{what} not ready after {secs} s: {detail}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// How long we waited.
        secs: u64,
        /// The last error seen.
        detail: String,
    },
    /// An HTTP call to a lab component or to Prometheus failed.
    #[error("HTTP {url}: {detail}")]
    Http {
        /// The URL called.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The run was interrupted (Ctrl-C / SIGTERM).
    #[error("interrupted; every lab process was stopped")]
    Interrupted,
    /// Writing the dataset or a temporary file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A Prometheus metric could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl LabError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { path, source }
    }
}

/// A free loopback TCP port (bound then released: another process could take it in
/// between, which the readiness checks would then report).
pub fn free_port() -> Result<u16, LabError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(LabError::io("127.0.0.1:0"))?;
    let port = l.local_addr().map_err(LabError::io("127.0.0.1:0"))?.port();
    Ok(port)
}
