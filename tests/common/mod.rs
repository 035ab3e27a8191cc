//! Harness shared by the end-to-end test binaries (`mod common;`): loopback ports, a
//! minimal HTTP/1.1 client, real Prometheus processes, polling with a deadline.
//!
//! Each test binary uses part of it, hence the `dead_code` allowance; its items are
//! `pub` for the test modules that import them (`unreachable_pub` would flag them).
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The agent binary built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_kpiwatch");

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when every tool is on PATH. Otherwise skips locally (false) and fails in CI,
/// where `scripts/install-deps.sh` must have installed them.
pub fn tools_or_skip(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("missing {missing:?}: run scripts/install-deps.sh");
    }
    eprintln!("SKIPPED: missing {missing:?} (run scripts/install-deps.sh)");
    false
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to 127.0.0.1:`port`; `None` when the connection fails.
/// Returns the status and the (de-chunked) body.
pub fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    http_as(port, method, path, body, None)
}

/// `http` with `Authorization: Bearer <token>` when `token` is given.
pub fn http_as(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let buf = String::from_utf8_lossy(&buf).to_string();
    let status = buf.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// `GET path`.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "GET", path, None)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Instant query through Prometheus's HTTP API; the `result` array (empty on any error).
pub fn query(prom_port: u16, promql: &str) -> Vec<serde_json::Value> {
    let q: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
    let Some((200, body)) = http_get(prom_port, &format!("/api/v1/query?query={q}")) else {
        return vec![];
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Polls `f` every 0.5 s until it is true; panics after `timeout` naming `what`.
/// Returns how long it took (also printed, for the closing notes).
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = start.elapsed();
    eprintln!("{what}: after {:.1}s", took.as_secs_f64());
    took
}

/// A child process killed when dropped, so a failing test leaves nothing behind.
pub struct Proc(pub Child);

impl Proc {
    /// Kills the process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Child processes, killed on drop; their output goes to files shown on failure, and a
/// wait fails at once, with the logs, when one of them exits.
pub struct Procs {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Procs {
    /// Logs go to `dir/<name>.log`.
    pub fn new(dir: &Path) -> Self {
        Procs {
            dir: dir.to_path_buf(),
            children: Vec::new(),
        }
    }

    /// Starts `cmd` as `name`, its output to its log file.
    pub fn spawn(&mut self, name: &str, cmd: &mut Command) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let err = log.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        self.children.push((name.to_string(), child));
    }

    /// Polls `ok` every 250 ms; on timeout, or when a child exits, panics with the logs.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if ok() {
                return;
            }
            let exited = self.children.iter_mut().find_map(|(name, child)| {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|status| (name.clone(), status))
            });
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}) while waiting for {what}\n{}",
                    self.logs()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts Alertmanager (`program`) as `alertmanager` on loopback `port` with
    /// `config` (YAML), its config and data in the log directory, no cluster.
    pub fn spawn_alertmanager(&mut self, program: &std::ffi::OsStr, port: u16, config: &str) {
        let dir = self.dir.clone();
        std::fs::write(dir.join("alertmanager.yml"), config).expect("write alertmanager.yml");
        self.spawn(
            "alertmanager",
            Command::new(program).args([
                format!("--config.file={}", dir.join("alertmanager.yml").display()),
                format!("--storage.path={}", dir.join("am-data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".to_string(),
                "--log.level=warn".to_string(),
            ]),
        );
    }

    /// Waits (30 s at most) until the server on `port` answers `GET /-/ready` with 200.
    pub fn wait_ready(&mut self, what: &str, port: u16) {
        self.wait_for(&format!("{what} ready"), Duration::from_secs(30), || {
            http_get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
        });
    }

    /// The last 40 lines of every log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {name} (last {} lines) ---\n", tail.len()));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts Debian's `prometheus` with `dir/prometheus.yml`, data and log in `dir`.
pub fn start_prometheus(dir: &Path, port: u16) -> Proc {
    start_prometheus_with(dir, port, &[])
}

/// [`start_prometheus`] with `extra` command-line flags. The log is appended to, so
/// that a restarted Prometheus in the same directory keeps the earlier lines.
pub fn start_prometheus_with(dir: &Path, port: u16, extra: &[&str]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("prometheus.log"))
        .expect("prometheus log");
    Proc(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    )
}

/// `kpiwatch run --config CONFIG`, its log (stderr) written to `log`.
pub fn start_agent(config: &Path, log: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The value of the first exposition line starting with `prefix`.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Asserts that `promtool check metrics` accepts `exposition` (Prometheus text format).
pub fn assert_promtool_accepts(exposition: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool on PATH");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kpiwatch_*` names in backticks in the README's "Metrics provided" section and in
/// its regression section's self-metric sentence.
pub fn readme_metrics() -> std::collections::BTreeSet<String> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("## Metrics provided")
        .expect("README metrics section");
    let end = start + readme[start..].find("\n## ").expect("section end");
    let regress = readme
        .find("Self-metrics: `kpiwatch_regression")
        .expect("regression self-metrics");
    // The sentence runs to the end of its paragraph.
    let regress_end = regress
        + readme[regress..]
            .find("\n\n")
            .unwrap_or(readme.len() - regress);
    let mut names = std::collections::BTreeSet::new();
    for text in [&readme[start..end], &readme[regress..regress_end]] {
        for tick in text.split('`').skip(1).step_by(2) {
            let name: String = tick
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.starts_with("kpiwatch_") && !tick.contains(' ') {
                names.insert(name);
            }
        }
    }
    names
}

/// Writes `openmetrics` (an OpenMetrics text ending in `# EOF`) into Prometheus blocks
/// under `dir/data` with `promtool tsdb create-blocks-from openmetrics`: history a test's
/// Prometheus then serves as if it had scraped it.
pub fn promtool_backfill(dir: &Path, openmetrics: &str) {
    let file = dir.join("history.om");
    std::fs::write(&file, openmetrics).expect("write history.om");
    promtool_backfill_file(dir, &file);
}

/// [`promtool_backfill`] from an OpenMetrics file already written (large histories are
/// streamed to disk rather than held in memory).
pub fn promtool_backfill_file(dir: &Path, file: &Path) {
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(file)
        .arg(dir.join("data"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool backfill failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves `/metrics` on 127.0.0.1:`port` from a thread that lives as long as the test:
/// every request gets `body()` in the text exposition format.
pub fn serve_exposition(port: u16, body: impl Fn() -> String + Send + 'static) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind exporter");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = body();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}

/// Runs Chromium headless with `args` and a private profile; returns stdout. Killed
/// after a minute.
pub fn chromium(dir: &Path, args: &[String]) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read while it runs: a page larger than the pipe buffer would block it otherwise.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    reader.join().unwrap()
}

/// How many pixels of `png` have exactly the colour `rgb`, and how many colours there are.
pub fn colours(png: &Path, rgb: [u8; 3]) -> (usize, usize, (u32, u32)) {
    let mut decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let mut seen = std::collections::HashSet::new();
    let mut matching = 0;
    for px in buf[..info.buffer_size()].chunks(channels) {
        seen.insert([px[0], px[1], px[2]]);
        if px[..3] == rgb {
            matching += 1;
        }
    }
    (matching, seen.len(), (info.width, info.height))
}

/// Certificates for TLS tests, written as PEM files into a directory: a CA, a server
/// certificate for `localhost` and 127.0.0.1 signed by it, and a client certificate
/// signed by it (for client-certificate checks).
pub struct TestPki {
    /// The CA certificate (what a client trusts).
    pub ca: PathBuf,
    /// Server certificate and key.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate and key.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates fresh keys and certificates into `dir` (file names prefixed `prefix`).
    pub fn generate(dir: &Path, prefix: &str) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kpiwatch test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["client.kpiwatch.test".into()]);
        let write = |name: &str, text: &str| {
            let path = dir.join(format!("{prefix}{name}"));
            std::fs::write(&path, text).unwrap();
            path
        };
        TestPki {
            ca: write("ca.crt", &ca.pem()),
            server_cert: write("server.crt", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.crt", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

/// The shipped rules with every `for:` set to 2s.
pub fn shortened_rules() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/rules/kpiwatch.rules.yml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = String::new();
    let mut shortened = 0;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("for:") {
            out.push_str(&line[..line.len() - trimmed.len()]);
            out.push_str("for: 2s\n");
            shortened += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    assert!(shortened > 0, "no `for:` found in {}", path.display());
    out
}
