//! Child processes of a lab run (Prometheus, node_exporter, the service) under one
//! [`Supervisor`]: each writes its output to a log file in the run's temporary
//! directory; [`Supervisor::watch`] fails as soon as one exits; dropping the supervisor
//! kills every child and removes the temporary directory, so an error, a panic or
//! Ctrl-C never leaves a process behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::LabError;

/// Where the lab finds Prometheus (override with `KPIWATCH_PROMETHEUS`).
pub const PROMETHEUS_BIN: &str = "/usr/bin/prometheus";
/// Where the lab finds node_exporter (override with `KPIWATCH_NODE_EXPORTER`).
pub const NODE_EXPORTER_BIN: &str = "/usr/bin/prometheus-node-exporter";

#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Owns the run's temporary directory and its child processes.
#[derive(Debug)]
pub struct Supervisor {
    dir: PathBuf,
    keep_dir: bool,
    procs: Vec<Proc>,
}

impl Supervisor {
    /// Creates a fresh temporary directory for the run.
    pub fn new(keep_dir: bool) -> Result<Self, LabError> {
        // pid + time + a per-process sequence number: two supervisors started in the
        // same millisecond (parallel tests) must never share, and so delete, one
        // directory. `create_dir` (not `_all`) fails rather than reuse an existing one.
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "kpiwatch-lab-{}-{}-{seq}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        std::fs::create_dir(&dir).map_err(LabError::io(&dir))?;
        Ok(Self {
            dir,
            keep_dir,
            procs: Vec::new(),
        })
    }

    /// The run's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts `program args…` as the child called `name`, output to `<dir>/<name>.log`.
    pub fn spawn(&mut self, name: &str, program: &str, args: &[String]) -> Result<(), LabError> {
        let log = self.dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(LabError::io(&log))?;
        let err = out.try_clone().map_err(LabError::io(&log))?;
        let mut cmd = Command::new(program);
        // Own process group: a terminal Ctrl-C reaches only the runner, which then stops
        // the children itself (and reports "interrupted" rather than a crash).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn {
                name: name.into(),
                program: program.into(),
                source,
            })?;
        tracing::info!(name, program, pid = child.id(), log = %log.display(), "Started lab process.");
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
        Ok(())
    }

    /// Process ids of the running children, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// Checks every child once; an exited child is an error naming it, with its log tail.
    pub fn check(&mut self) -> Result<(), LabError> {
        for p in &mut self.procs {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(LabError::Crashed {
                    name: p.name.clone(),
                    status: status.to_string(),
                    log: p.log.display().to_string(),
                    tail: log_tail(&p.log, 15),
                });
            }
        }
        Ok(())
    }

    /// Resolves with an error as soon as a child exits (never resolves otherwise).
    pub async fn watch(&mut self) -> LabError {
        loop {
            if let Err(e) = self.check() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Kills every child (idempotent) and waits for them.
    pub fn stop_all(&mut self) {
        for p in self.procs.iter_mut().rev() {
            if let Ok(None) = p.child.try_wait() {
                let _ = p.child.kill();
                let _ = p.child.wait();
                tracing::info!(name = %p.name, "Stopped lab process.");
            }
        }
        self.procs.clear();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read log: {e})"),
    }
}

/// The program to run for `default`, overridable through environment variable `var`.
pub fn program(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Writes the Prometheus configuration scraping the lab's targets every `scrape`.
pub fn write_prometheus_config(
    dir: &Path,
    scrape: Duration,
    targets: &[(&str, u16)],
) -> Result<PathBuf, LabError> {
    let secs = scrape.as_secs_f64();
    let interval = if scrape.subsec_millis() == 0 {
        format!("{}s", scrape.as_secs())
    } else {
        format!("{}ms", scrape.as_millis())
    };
    let mut yaml = format!(
        "global:\n  scrape_interval: {interval}\n  scrape_timeout: {}ms\n  evaluation_interval: {interval}\nscrape_configs:\n",
        ((secs * 1000.0 * 0.8) as u64).max(100)
    );
    for (job, port) in targets {
        yaml.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ));
    }
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, yaml).map_err(LabError::io(&path))?;
    Ok(path)
}

/// Polls `url` until it answers 2xx, the supervisor reports a crash, or `secs` pass.
pub async fn wait_ready(
    sup: &mut Supervisor,
    client: &reqwest::Client,
    what: &str,
    url: &str,
    secs: u64,
) -> Result<(), LabError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = String::from("no answer yet");
    while tokio::time::Instant::now() < deadline {
        sup.check()?;
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(LabError::NotReady {
        what: what.into(),
        secs,
        detail: last,
    })
}
