//! `kpiwatch-lab`: runs lab scenarios (real service, real load, real Prometheus) and
//! records labeled datasets. See `docs/lab.md`.
//!
//! * `kpiwatch-lab check <scenario.yaml>…`: validate scenarios (exit 2 on problems);
//! * `kpiwatch-lab run <scenario.yaml>… --out tests/data/lab`: play and record;
//! * `kpiwatch-lab serve --listen 127.0.0.1:8080`: the test service alone (the runner
//!   starts it this way as a child process);
//! * `kpiwatch-lab serve --service NAME --mesh mesh.json`: one service of the service
//!   mesh, on the address the mesh file gives it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kpiwatch::lab::runner::{self, RunOptions};
use kpiwatch::lab::{scenario, service, LabError};

#[derive(Debug, Parser)]
#[command(
    name = "kpiwatch-lab",
    version,
    about = "The kpiwatch lab: real workloads with injected faults, recorded as labeled datasets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate scenario files without starting anything.
    Check {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// Play scenarios one after the other and record their datasets.
    Run {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Dataset root directory.
        #[arg(long, default_value = "tests/data/lab")]
        out: PathBuf,
        /// Keep the temporary directory (Prometheus data, process logs).
        #[arg(long)]
        keep_tmp: bool,
        /// Replace every scenario's `seed` (noise of the service and the load): records a
        /// replicate of a scenario, same schedule, fresh noise. Use another --out.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Serve the lab's test service, or with --service one service of the mesh.
    Serve {
        /// Listen address (of the test service; a mesh service listens on its address in
        /// the mesh file).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Serve this service of the mesh instead of the test service (needs --mesh).
        #[arg(long, requires = "mesh")]
        service: Option<String>,
        /// The mesh file (JSON: `topology`, `addresses` by service, `seed`).
        #[arg(long, requires = "service")]
        mesh: Option<PathBuf>,
        /// Initial version label.
        #[arg(long, default_value = "v1")]
        version: String,
        /// Seed of the service's noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Check { scenarios } => check(&scenarios),
        Command::Run {
            scenarios,
            out,
            keep_tmp,
            seed,
        } => {
            // Validate every scenario before starting anything.
            let mut loaded = Vec::new();
            for path in &scenarios {
                match scenario::load(path) {
                    Ok(mut sc) => {
                        if let Some(seed) = seed {
                            sc.load.seed = seed;
                        }
                        loaded.push(sc)
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            let opts = RunOptions {
                out,
                keep_tmp,
                service_program: None,
            };
            block_on(async {
                for sc in &loaded {
                    let s = runner::run(sc, &opts).await?;
                    println!(
                        "{}: wrote {} files to {} ({} labeled {})",
                        sc.name,
                        s.files,
                        s.dir.display(),
                        s.labeled,
                        match sc.body {
                            scenario::Body::Anomaly(_) => "fault windows",
                            scenario::Body::Regression(_) => "pairs",
                        }
                    );
                }
                Ok(())
            })
        }
        Command::Serve {
            service: Some(name),
            mesh: Some(mesh),
            ..
        } => block_on(serve_mesh(name, mesh)),
        Command::Serve {
            listen,
            version,
            seed,
            ..
        } => block_on(async move {
            let svc = service::Service::new(&version, seed)?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .map_err(|source| LabError::Io {
                    path: listen.clone().into(),
                    source,
                })?;
            tracing::info!(%listen, %version, "Lab service listening.");
            service::run(listener, svc, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
            Ok(())
        }),
    }
}

fn check(paths: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in paths {
        match scenario::load(path) {
            Ok(sc) => println!(
                "{}: ok ({}, {:?})",
                path.display(),
                sc.name,
                sc.total_duration()
            ),
            Err(e) => {
                ok = false;
                eprintln!("error: {e}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// Serves one mesh service on its address in the mesh file until Ctrl-C.
async fn serve_mesh(name: String, path: PathBuf) -> Result<(), LabError> {
    use kpiwatch::lab::mesh;
    let io = |source| LabError::Io {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let file: mesh::MeshFile = serde_json::from_str(&text).map_err(|e| LabError::Scenario {
        file: path.clone(),
        problems: vec![e.to_string()],
    })?;
    let problems = file.topology.problems();
    if !problems.is_empty() {
        return Err(LabError::Scenario {
            file: path.clone(),
            problems,
        });
    }
    let listen = file
        .addresses
        .get(&name)
        .cloned()
        .ok_or_else(|| LabError::Scenario {
            file: path.clone(),
            problems: vec![format!("addresses: no address for service {name:?}")],
        })?;
    let service = mesh::MeshService::new(&name, &file.topology, &file.addresses, file.seed)?;
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(io)?;
    tracing::info!(service = %name, %listen, "Mesh service listening.");
    mesh::run(listener, service, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

fn block_on(fut: impl std::future::Future<Output = Result<(), LabError>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
