//! State-directory and reload faults, against real agent processes.
//!
//! * `a_second_agent_on_the_same_state_dir_is_refused_and_writes_nothing`: the lock.
//! * `a_read_only_state_dir_...`, `a_full_state_dir_...`, `a_deleted_state_dir_...`:
//!   the directory fails under a running agent that scores a real Prometheus; saves
//!   fail and are counted by cause, the last good state file stays, scoring goes on.
//!   Read-only and full need `mount` (a tmpfs, as root); they skip with a message
//!   where mounting is not permitted.
//! * `sigkill_during_saves_never_leaves_a_torn_state_file`: 200 agents killed at seeded
//!   random moments, four in five just after a save began writing.
//! * `a_reload_storm_and_an_invalid_config_lose_nothing`: 100 reloads while cycles run,
//!   then the config replaced by invalid ones and fixed.
//!
//! The cases that score share one Prometheus scraping a synthetic exporter.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::common::{
    free_port, http, http_get, metric, serve_exposition, tools_or_skip, Proc, BIN,
};

/// The synthetic exporter's entities.
const ENTITIES: [&str; 4] = ["e0", "e1", "e2", "e3"];
/// The group every agent here runs.
const GROUP: &str = "faults";
/// Uni-AD thresholds of entities no exporter serves, seeded into the state file: learned
/// state that only the state file carries, so its loss would show.
const SEEDED_PREFIX: &str = "seeded-";

// --- the shared Prometheus -------------------------------------------------------------

/// One Prometheus for the whole binary, scraping the synthetic exporter every second.
/// It runs under `sh`, which stops it when the test process exits and closes the pipe
/// (a static is never dropped, so no `Drop` could).
struct SharedPrometheus {
    port: u16,
    _lifeline: Mutex<ChildStdin>,
    _sh: Mutex<Child>,
}

fn shared_prometheus() -> &'static SharedPrometheus {
    static SHARED: OnceLock<SharedPrometheus> = OnceLock::new();
    SHARED.get_or_init(|| {
        let exporter = free_port();
        serve_exposition(exporter, || {
            let t = kpiwatch::clock::now_secs();
            let mut body = String::new();
            for (i, e) in ENTITIES.iter().enumerate() {
                let phase = t / 5.0 + i as f64;
                // A little jitter keeps the spread (MAD) of every window above zero.
                let jitter = ((t * 7.3 + i as f64).sin() * 1000.0).fract() * 0.3;
                body.push_str(&format!(
                    "fault_state_a{{entity=\"{e}\"}} {}\n",
                    10.0 + phase.sin() + jitter
                ));
                body.push_str(&format!(
                    "fault_state_b{{entity=\"{e}\"}} {}\n",
                    50.0 + 5.0 * phase.cos() - jitter
                ));
            }
            body
        });
        let dir = tempfile::tempdir().expect("tempdir").keep();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: kpi\n    static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]\n"
            ),
        )
        .expect("prometheus.yml");
        let port = free_port();
        let script = r#"prometheus --config.file="$1/prometheus.yml" --storage.tsdb.path="$1/data" --web.listen-address="127.0.0.1:$2" 2>"$1/prometheus.log" & p=$!
read _
kill $p; wait $p; rm -rf "$1""#;
        let mut sh = Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(&dir)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let lifeline = sh.stdin.take().expect("sh stdin");
        SharedPrometheus {
            port,
            _lifeline: Mutex::new(lifeline),
            _sh: Mutex::new(sh),
        }
    })
}

// --- agents ------------------------------------------------------------------------------

/// A config for one agent: group `faults` (z-score and Uni-AD) every second.
#[derive(Clone)]
struct AgentConfig {
    prometheus: u16,
    listen: u16,
    state_dir: PathBuf,
    save_interval: &'static str,
}

impl AgentConfig {
    fn yaml(&self) -> String {
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/uniad.onnx");
        format!(
            "prometheus: {{url: 'http://127.0.0.1:{}', timeout: 2s, retries: 0}}\n\
             server: {{listen: '127.0.0.1:{}'}}\n\
             state_dir: '{}'\n\
             state_save_interval: {}\n\
             groups:\n  - name: {GROUP}\n    interval: 1s\n    step: 1s\n    window: 16\n    history: 1m\n    \
             entity_labels: [entity]\n    \
             metrics: {{a: 'max by (entity) (fault_state_a)', b: 'max by (entity) (fault_state_b)'}}\n    \
             detectors: {{zscore: {{calibrate: false, min_points: 8}}, uniad: {{model: '{model}'}}}}\n",
            self.prometheus,
            self.listen,
            self.state_dir.display(),
            self.save_interval,
        )
    }
}

/// Starts `kpiwatch run --config cfg`, its output in `log`.
fn start_agent(cfg: &Path, log: &Path) -> Proc {
    let out = std::fs::File::create(log).expect("agent log");
    let err = out.try_clone().expect("agent log");
    Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start kpiwatch"),
    )
}

/// Polls `ok` every 100 ms for at most `timeout`; panics naming `what`, with the log,
/// when it times out or the agent exits.
fn wait_agent(
    agent: &mut Proc,
    log: &Path,
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) {
    let start = Instant::now();
    loop {
        if ok() {
            return;
        }
        let text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!(
                "the agent exited ({status}) while waiting for {what}\n{}",
                text()
            );
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\n{}",
            text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/metrics` of the agent on `port` (empty when it does not answer 200).
fn scrape(port: u16) -> String {
    match http_get(port, "/metrics") {
        Some((200, body)) => body,
        _ => String::new(),
    }
}

fn value(metrics: &str, series: &str) -> f64 {
    metric(metrics, series).unwrap_or(0.0)
}

fn cycles_ok(metrics: &str) -> f64 {
    value(
        metrics,
        &format!("kpiwatch_cycles_total{{group=\"{GROUP}\",result=\"ok\"}}"),
    )
}

fn saves(metrics: &str, result: &str) -> f64 {
    value(
        metrics,
        &format!("kpiwatch_state_saves_total{{result=\"{result}\"}}"),
    )
}

fn save_errors(metrics: &str, cause: &str) -> f64 {
    value(
        metrics,
        &format!("kpiwatch_state_save_errors_total{{cause=\"{cause}\"}}"),
    )
}

/// Every entity has a z-score anomaly score on `/metrics`.
fn scores_every_entity(metrics: &str) -> bool {
    ENTITIES.iter().all(|e| {
        metrics.contains(&format!(
            "kpiwatch_anomaly_score{{group=\"{GROUP}\",entity=\"{e}\",detector=\"zscore\"}}"
        ))
    })
}

/// Waits until the agent scores every entity and has saved its state at least once.
fn wait_scoring_and_saved(agent: &mut Proc, log: &Path, port: u16) {
    wait_agent(
        agent,
        log,
        "scores for every entity and a state save",
        Duration::from_secs(90),
        || {
            let m = scrape(port);
            scores_every_entity(&m) && saves(&m, "success") >= 1.0
        },
    );
}

/// The agent is still up and scoring: `/metrics` answers, every entity keeps its score,
/// no entity is stale, and at least two more good cycles run.
fn assert_keeps_scoring(agent: &mut Proc, log: &Path, port: u16) {
    let before = cycles_ok(&scrape(port));
    wait_agent(
        agent,
        log,
        "two more good cycles",
        Duration::from_secs(20),
        || cycles_ok(&scrape(port)) >= before + 2.0,
    );
    let m = scrape(port);
    assert!(scores_every_entity(&m), "scores lost:\n{m}");
    assert_eq!(
        value(&m, &format!("kpiwatch_entities_stale{{group=\"{GROUP}\"}}")),
        0.0,
        "entities went stale though Prometheus is fine"
    );
}

// --- the state file, read by the test itself -------------------------------------------

/// The payload of the state file in `dir`, after checking its header, length and
/// checksum as the agent does: `Err` for a missing, torn or edited file.
fn load_state(dir: &Path) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(dir.join("state.json")).map_err(|e| format!("read: {e}"))?;
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[..split]).map_err(|e| format!("header: {e}"))?;
    let payload = &bytes[split + 1..];
    if header["format"] != "kpiwatch-state" || header["version"] != 1 {
        return Err(format!("unexpected header {header}"));
    }
    if header["bytes"].as_u64() != Some(payload.len() as u64) {
        return Err(format!(
            "{} bytes, header says {}",
            payload.len(),
            header["bytes"]
        ));
    }
    if header["crc32"].as_u64() != Some(u64::from(crc32fast::hash(payload))) {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(payload).map_err(|e| format!("payload: {e}"))
}

/// Writes a valid state file into `dir` whose Uni-AD snapshot holds `entities` seeded
/// thresholds of `peaks` peaks each (a bigger file makes a slower save).
fn seed_state(dir: &Path, entities: usize, peaks: usize) {
    let mut thresholds = serde_json::Map::new();
    for i in 0..entities {
        let peaks: Vec<f64> = (0..peaks)
            .map(|p| 0.01 + (i * 31 + p) as f64 * 1e-4)
            .collect();
        thresholds.insert(
            format!("{SEEDED_PREFIX}{i}"),
            serde_json::json!({"phase": "running", "t": 1.25, "n": 5000 + i, "peaks": peaks, "zq": 2.5, "streak": 0}),
        );
    }
    let payload = serde_json::to_vec(&serde_json::json!({
        "groups": {GROUP: {"uniad": {"version": 3, "scale_errors": false, "thresholds": thresholds}}}
    }))
    .expect("payload");
    let header = serde_json::json!({
        "format": "kpiwatch-state", "version": 1, "crc32": crc32fast::hash(&payload), "bytes": payload.len()
    });
    std::fs::create_dir_all(dir).expect("state dir");
    let mut bytes = serde_json::to_vec(&header).expect("header");
    bytes.push(b'\n');
    bytes.extend_from_slice(&payload);
    std::fs::write(dir.join("state.json"), bytes).expect("seed state");
}

/// The seeded Uni-AD threshold keys the state in `payload` holds.
fn seeded_keys(payload: &serde_json::Value) -> usize {
    payload["groups"][GROUP]["uniad"]["thresholds"]
        .as_object()
        .map_or(0, |t| {
            t.keys().filter(|k| k.starts_with(SEEDED_PREFIX)).count()
        })
}

/// Files in `dir` named as a corrupt state file set aside, or a save's temp file.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("corrupt") || n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

// --- mounts ------------------------------------------------------------------------------

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `64m`) on `at`; `None`, with a message, where
    /// mounting is not permitted (not root, or a sandbox without the capability).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).expect("mount point");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let ok = root
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(at)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs (root: {root}); chmod cannot make a directory read-only or full for root");
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }

    /// Remounts with `option` (`ro`, `rw`). A save holding its temp file open for
    /// writing makes `remount,ro` fail with EBUSY for a moment: tried again for 2 s.
    fn remount(&self, option: &str) {
        for _ in 0..100 {
            let ok = Command::new("mount")
                .args(["-o", &format!("remount,{option}")])
                .arg(&self.0)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cannot remount {option} {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs a second agent on `cfg` and returns its exit status and output; it must exit
/// by itself (refused) within 20 s.
fn run_to_exit(cfg: &Path) -> (ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kpiwatch");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the second agent was not refused within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// Asserts that an agent on `cfg` (whose `listen` is `port`) is refused because
/// `holder` holds `state_dir`: non-zero exit, the directory and PID named, port unbound.
fn assert_refused(cfg: &Path, port: u16, state_dir: &Path, holder: u32) {
    let (status, out) = run_to_exit(cfg);
    assert!(!status.success(), "the second agent ran:\n{out}");
    assert!(
        out.contains(&format!("state_dir {} is locked", state_dir.display()))
            && out.contains(&format!("pid {holder}")),
        "the refusal names the directory and the holder's PID:\n{out}"
    );
    assert!(
        http_get(port, "/-/healthy").is_none(),
        "the refused agent bound its port"
    );
}

fn write_config(dir: &Path, name: &str, cfg: &AgentConfig) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, cfg.yaml()).expect("config");
    path
}

fn sigterm_and_wait(agent: &mut Proc) -> ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -TERM");
    let start = Instant::now();
    loop {
        if let Some(s) = agent.0.try_wait().expect("wait") {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- the cases ---------------------------------------------------------------------------

#[test]
fn a_second_agent_on_the_same_state_dir_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    seed_state(&state, 10, 4);
    // Prometheus is down: the lock does not depend on it. A long save interval keeps
    // the first agent from writing while the second is checked.
    let first = AgentConfig {
        prometheus: free_port(),
        listen: free_port(),
        state_dir: state.clone(),
        save_interval: "1h",
    };
    let cfg = write_config(dir.path(), "first.yaml", &first);
    let log = dir.path().join("first.log");
    let mut agent = start_agent(&cfg, &log);
    wait_agent(
        &mut agent,
        &log,
        "the first agent's /-/healthy",
        Duration::from_secs(30),
        || http_get(first.listen, "/-/healthy").is_some_and(|(s, _)| s == 200),
    );
    let listing = |d: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = listing(&state);

    let second = AgentConfig {
        listen: free_port(),
        ..first.clone()
    };
    let cfg2 = write_config(dir.path(), "second.yaml", &second);
    assert_refused(&cfg2, second.listen, &state, agent.0.id());
    assert_eq!(
        listing(&state),
        before,
        "the refused agent wrote in the directory"
    );
    assert!(http_get(first.listen, "/-/healthy").is_some_and(|(s, _)| s == 200));

    // SIGKILL gives no chance to clean up, yet the kernel drops the lock: the
    // successor starts and restores the state.
    agent.kill();
    let log2 = dir.path().join("second.log");
    let mut successor = start_agent(&cfg2, &log2);
    wait_agent(
        &mut successor,
        &log2,
        "the successor's restore",
        Duration::from_secs(30),
        || std::fs::read_to_string(&log2).is_ok_and(|l| l.contains("State restored.")),
    );
}

#[test]
fn a_read_only_state_dir_fails_saves_by_cause_and_keeps_the_last_good_file() {
    if !tools_or_skip(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let Some(fs) = Tmpfs::mount(&state, "64m") else {
        return;
    };
    seed_state(&state, 50, 8);
    let cfg = AgentConfig {
        prometheus: shared_prometheus().port,
        listen: free_port(),
        state_dir: state.clone(),
        save_interval: "1s",
    };
    let cfg_path = write_config(dir.path(), "k.yaml", &cfg);
    let log = dir.path().join("agent.log");
    let mut agent = start_agent(&cfg_path, &log);
    wait_scoring_and_saved(&mut agent, &log, cfg.listen);

    // Read-only under the running agent.
    fs.remount("ro");
    let good = std::fs::read(state.join("state.json")).expect("state file");
    wait_agent(
        &mut agent,
        &log,
        "two saves failed as read_only",
        Duration::from_secs(15),
        || save_errors(&scrape(cfg.listen), "read_only") >= 2.0,
    );
    assert_keeps_scoring(&mut agent, &log, cfg.listen);
    assert_eq!(
        std::fs::read(state.join("state.json")).expect("state file"),
        good
    );
    assert_eq!(seeded_keys(&load_state(&state).expect("valid state")), 50);
    // The lock still holds on a read-only directory.
    let second = AgentConfig {
        listen: free_port(),
        ..cfg.clone()
    };
    let cfg2 = write_config(dir.path(), "second.yaml", &second);
    assert_refused(&cfg2, second.listen, &state, agent.0.id());

    // Read-only from the start: the agent runs on what it restored, says loudly that
    // nothing is saved, and counts every failed save.
    agent.kill();
    let log = dir.path().join("agent-ro.log");
    let mut agent = start_agent(&cfg_path, &log);
    wait_agent(
        &mut agent,
        &log,
        "saves failing as read_only after a start on a read-only directory",
        Duration::from_secs(60),
        || {
            let m = scrape(cfg.listen);
            scores_every_entity(&m) && save_errors(&m, "read_only") >= 2.0
        },
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("State restored."), "{text}");
    assert!(text.contains("State directory is not writable"), "{text}");
    assert_keeps_scoring(&mut agent, &log, cfg.listen);
    assert_eq!(
        std::fs::read(state.join("state.json")).expect("state file"),
        good
    );

    // Writable again: the next save takes the lock and writes the whole state.
    fs.remount("rw");
    let failed = save_errors(&scrape(cfg.listen), "read_only");
    let saved = saves(&scrape(cfg.listen), "success");
    wait_agent(
        &mut agent,
        &log,
        "a good save once writable",
        Duration::from_secs(15),
        || saves(&scrape(cfg.listen), "success") > saved,
    );
    assert!(save_errors(&scrape(cfg.listen), "read_only") <= failed + 1.0);
    assert_eq!(seeded_keys(&load_state(&state).expect("valid state")), 50);
    assert_refused(&cfg2, second.listen, &state, agent.0.id());
    assert!(leftovers(&state).is_empty(), "{:?}", leftovers(&state));
    agent.kill();
}

#[test]
fn a_full_state_dir_fails_saves_as_no_space_and_keeps_the_last_good_file() {
    if !tools_or_skip(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let Some(_fs) = Tmpfs::mount(&state, "2m") else {
        return;
    };
    seed_state(&state, 50, 8);
    let cfg = AgentConfig {
        prometheus: shared_prometheus().port,
        listen: free_port(),
        state_dir: state.clone(),
        save_interval: "1s",
    };
    let cfg_path = write_config(dir.path(), "k.yaml", &cfg);
    let log = dir.path().join("agent.log");
    let mut agent = start_agent(&cfg_path, &log);
    wait_scoring_and_saved(&mut agent, &log, cfg.listen);

    // Fill the file system to the last byte.
    let filler = state.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last partial chunk, byte by byte in 4 KiB steps.
        while f.write_all(&chunk[..4096]).is_ok() {}
        while f.write_all(&chunk[..1]).is_ok() {}
    }
    // A save that began before the disk filled up may still finish: read "good" after.
    std::thread::sleep(Duration::from_millis(1500));
    let good = std::fs::read(state.join("state.json")).expect("state file");
    let failed = save_errors(&scrape(cfg.listen), "no_space");
    wait_agent(
        &mut agent,
        &log,
        "two saves failed as no_space",
        Duration::from_secs(15),
        || save_errors(&scrape(cfg.listen), "no_space") >= failed + 2.0,
    );
    assert_keeps_scoring(&mut agent, &log, cfg.listen);
    assert_eq!(
        std::fs::read(state.join("state.json")).expect("state file"),
        good
    );
    assert_eq!(seeded_keys(&load_state(&state).expect("valid state")), 50);
    // A failed save removes its partial temp file (each new save recreates it for a
    // moment, so look more than once).
    let mut clean = false;
    for _ in 0..40 {
        if leftovers(&state).is_empty() {
            clean = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(clean, "a partial temp file stays: {:?}", leftovers(&state));

    // Space again: the next save writes the whole state.
    std::fs::remove_file(&filler).expect("remove filler");
    let saved = saves(&scrape(cfg.listen), "success");
    wait_agent(
        &mut agent,
        &log,
        "a good save with space again",
        Duration::from_secs(15),
        || saves(&scrape(cfg.listen), "success") > saved,
    );
    assert_eq!(seeded_keys(&load_state(&state).expect("valid state")), 50);
    assert!(sigterm_and_wait(&mut agent).success());
    assert!(leftovers(&state).is_empty(), "{:?}", leftovers(&state));
}

#[test]
fn a_deleted_state_dir_is_recreated_by_the_next_save_and_locked_again() {
    if !tools_or_skip(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    seed_state(&state, 50, 8);
    let cfg = AgentConfig {
        prometheus: shared_prometheus().port,
        listen: free_port(),
        state_dir: state.clone(),
        save_interval: "1s",
    };
    let cfg_path = write_config(dir.path(), "k.yaml", &cfg);
    let log = dir.path().join("agent.log");
    let mut agent = start_agent(&cfg_path, &log);
    wait_scoring_and_saved(&mut agent, &log, cfg.listen);

    std::fs::remove_dir_all(&state).expect("rm -rf state");
    let saved = saves(&scrape(cfg.listen), "success");
    wait_agent(
        &mut agent,
        &log,
        "two saves after the directory was deleted",
        Duration::from_secs(15),
        || saves(&scrape(cfg.listen), "success") >= saved + 2.0,
    );
    assert_keeps_scoring(&mut agent, &log, cfg.listen);
    let payload = load_state(&state).expect("the recreated state file is valid");
    assert_eq!(
        seeded_keys(&payload),
        50,
        "learned state lost with the directory"
    );
    // The lock was taken again on the new directory.
    let second = AgentConfig {
        listen: free_port(),
        ..cfg.clone()
    };
    let cfg2 = write_config(dir.path(), "second.yaml", &second);
    assert_refused(&cfg2, second.listen, &state, agent.0.id());
    assert!(sigterm_and_wait(&mut agent).success());
}

/// How many agents are started and killed.
const KILLS: usize = 200;
/// Agents run side by side (each on its own directory) to keep the wall time down: most
/// of an agent's life here is the 1 s wait for its first save. Divides `KILLS`.
const LANES: usize = 5;

#[test]
fn sigkill_during_saves_never_leaves_a_torn_state_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A state file of about 1 MB, so that writing and syncing it takes measurable time.
    let template = dir.path().join("template");
    seed_state(&template, 1500, 30);
    // Prometheus is down: saves run on their timer all the same, and the state holds
    // exactly what was restored, so every complete file has the same content.
    let dead = free_port();
    // The content every complete file must have: what the agent itself writes after
    // restoring the seed.
    let canonical = {
        let cfg = AgentConfig {
            prometheus: dead,
            listen: free_port(),
            state_dir: template.clone(),
            save_interval: "1s",
        };
        let cfg_path = write_config(dir.path(), "template.yaml", &cfg);
        let log = dir.path().join("template.log");
        let mut agent = start_agent(&cfg_path, &log);
        wait_agent(&mut agent, &log, "a save", Duration::from_secs(30), || {
            saves(&scrape(cfg.listen), "success") >= 1.0
        });
        assert!(sigterm_and_wait(&mut agent).success());
        load_state(&template).expect("the agent's own file is valid")
    };
    assert_eq!(seeded_keys(&canonical), 1500);
    let size = std::fs::metadata(template.join("state.json"))
        .expect("state")
        .len();

    let seed: u64 = 21;
    let lanes: Vec<_> = (0..LANES)
        .map(|lane| {
            let root = dir.path().join(format!("lane{lane}"));
            let state = root.join("state");
            std::fs::create_dir_all(&state).expect("lane dir");
            std::fs::copy(template.join("state.json"), state.join("state.json")).expect("copy");
            let canonical = canonical.clone();
            std::thread::spawn(move || kill_loop(lane, seed, &root, dead, &canonical))
        })
        .collect();
    let mut total = Tally::default();
    for lane in lanes {
        let t = lane.join().expect("a lane failed");
        total.add(&t);
    }
    eprintln!(
        "{KILLS} SIGKILLs on a {size}-byte state file: {} while the temp file was being written, {} left the previous file, {} a new one; {} temp files left behind and removed at the next start",
        total.during_write, total.previous, total.new, total.leftover_removed
    );
    assert_eq!(total.previous + total.new, KILLS);
    // The kills landed where they matter: many while a save was writing.
    assert!(total.during_write >= KILLS / 4, "{total:?}");
}

/// What the kills of one lane found.
#[derive(Debug, Default)]
struct Tally {
    /// The temp file existed at the kill (a save was being written or synced).
    during_write: usize,
    /// The state file was the one from before the agent started.
    previous: usize,
    /// A save completed (a new file, same content).
    new: usize,
    /// Temp files of killed saves that the next agent removed at start.
    leftover_removed: usize,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.during_write += o.during_write;
        self.previous += o.previous;
        self.new += o.new;
        self.leftover_removed += o.leftover_removed;
    }
}

/// Starts and kills `KILLS / LANES` agents on `root/state`. Four kills in five come
/// at a random moment of a save's write: a delay drawn up to a bound after its temp file
/// appears, the bound shrinking after a kill that came too late (the rename was done)
/// and growing after one that came in time, so that it follows this disk's write time.
/// The fifth comes at a random moment of the agent's first 1.5 s. After each kill the
/// state file must load with a valid checksum, hold `canonical`, and be the previous
/// or a new file.
fn kill_loop(
    lane: usize,
    seed: u64,
    root: &Path,
    dead: u16,
    canonical: &serde_json::Value,
) -> Tally {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed + lane as u64);
    let state = root.join("state");
    let tmp = state.join(".state.json.tmp");
    let cfg = AgentConfig {
        prometheus: dead,
        listen: free_port(),
        state_dir: state.clone(),
        save_interval: "1s",
    };
    let cfg_path = write_config(root, "k.yaml", &cfg);
    let log = root.join("agent.log");
    let mut tally = Tally::default();
    let mut bound_us: u64 = 20_000;
    for round in 0..KILLS / LANES {
        let before = std::fs::metadata(state.join("state.json"))
            .expect("state file")
            .ino();
        let leftover = tmp.metadata().and_then(|m| m.modified()).ok();
        let mut agent = start_agent(&cfg_path, &log);
        let started = Instant::now();
        if round % 5 == 4 {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..1500)));
        } else {
            // The first save begins about 1 s after start; its temp file is fresh
            // (modified since the spawn), unlike one a killed save left behind.
            while tmp.metadata().and_then(|m| m.modified()).ok() == leftover || !tmp.exists() {
                if started.elapsed() > Duration::from_secs(10) {
                    panic!(
                        "lane {lane} round {round}: no save within 10 s\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..bound_us)));
        }
        let in_write = tmp.exists();
        agent.kill();
        if round % 5 != 4 {
            bound_us = if in_write && tmp.exists() {
                (bound_us * 5 / 4).min(100_000)
            } else {
                (bound_us * 3 / 4).max(1_000)
            };
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !text.contains("unusable"),
            "lane {lane} round {round}: {text}"
        );
        if leftover.is_some() && text.contains("Removed the temp file") {
            tally.leftover_removed += 1;
        }
        let payload = load_state(&state)
            .unwrap_or_else(|e| panic!("lane {lane} round {round}: torn state file: {e}"));
        assert!(
            &payload == canonical,
            "lane {lane} round {round}: the state file lost content"
        );
        let after = std::fs::metadata(state.join("state.json"))
            .expect("state file")
            .ino();
        if after == before {
            tally.previous += 1;
        } else {
            tally.new += 1;
        }
        if in_write && tmp.exists() {
            tally.during_write += 1;
        }
        let corrupt = leftovers(&state)
            .into_iter()
            .filter(|n| n.contains("corrupt"))
            .count();
        assert_eq!(
            corrupt, 0,
            "lane {lane} round {round}: a file was set aside as corrupt"
        );
    }
    tally
}

// --- reloads -------------------------------------------------------------------------------

fn reloads(metrics: &str, result: &str) -> f64 {
    value(
        metrics,
        &format!("kpiwatch_config_reloads_total{{result=\"{result}\"}}"),
    )
}

/// Replaces `path` the way config management does: a new file renamed over the old.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("rename config");
}

#[test]
fn a_reload_storm_and_an_invalid_config_lose_nothing() {
    if !tools_or_skip(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    seed_state(&state, 50, 8);
    let cfg = AgentConfig {
        prometheus: shared_prometheus().port,
        listen: free_port(),
        state_dir: state.clone(),
        save_interval: "1s",
    };
    let port = cfg.listen;
    let cfg_path = write_config(dir.path(), "k.yaml", &cfg);
    let good_yaml = cfg.yaml();
    let log = dir.path().join("agent.log");
    let mut agent = start_agent(&cfg_path, &log);
    wait_scoring_and_saved(&mut agent, &log, port);

    // 80 POST /-/reload from four clients at once, then 20 SIGHUPs, each awaited
    // (signals that arrive together may be delivered once).
    let before = scrape(port);
    let ok_before = cycles_ok(&before);
    let storm = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..20)
                    .filter(|_| {
                        http(port, "POST", "/-/reload", None).is_some_and(|(s, _)| s == 200)
                    })
                    .count()
            })
        })
        .collect();
    let accepted: usize = clients.into_iter().map(|c| c.join().expect("client")).sum();
    assert_eq!(accepted, 80, "every POST /-/reload answered 200");
    for i in 1..=20 {
        let ok = Command::new("kill")
            .args(["-HUP", &agent.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok);
        wait_agent(
            &mut agent,
            &log,
            "a SIGHUP reload",
            Duration::from_secs(10),
            || reloads(&scrape(port), "success") >= 80.0 + f64::from(i),
        );
    }
    eprintln!("100 reloads in {:.1}s", storm.elapsed().as_secs_f64());
    let after = scrape(port);
    assert_eq!(reloads(&after, "success"), 100.0);
    assert_eq!(reloads(&after, "failure"), 0.0);
    assert!(
        cycles_ok(&after) > ok_before,
        "no good cycle during the storm"
    );
    assert_keeps_scoring(&mut agent, &log, port);
    // Nothing learned was dropped: a save after the storm still holds the seeded
    // Uni-AD thresholds, which only the restored detector carries (a runner rebuilt
    // without its predecessor's snapshot would have none).
    let saved = saves(&scrape(port), "success");
    wait_agent(
        &mut agent,
        &log,
        "a save after the storm",
        Duration::from_secs(10),
        || saves(&scrape(port), "success") > saved,
    );
    assert_eq!(seeded_keys(&load_state(&state).expect("valid state")), 50);

    // The config replaced by invalid ones, then fixed: each rejection keeps the running
    // config, answers with the reason, and is counted.
    let unknown_key = format!("{good_yaml}bogus_key: 1\n");
    let cases: [(&str, Option<&str>, &str); 3] = [
        (
            "a YAML syntax error",
            Some("groups: [\n  - name: x\n"),
            "k.yaml",
        ),
        ("an unknown key", Some(&unknown_key), "bogus_key"),
        ("a deleted file", None, "k.yaml"),
    ];
    for (n, (what, text, reason)) in cases.iter().enumerate() {
        match text {
            Some(t) => replace_file(&cfg_path, t),
            None => std::fs::remove_file(&cfg_path).expect("rm config"),
        }
        let (status, body) = http(port, "POST", "/-/reload", None).expect("reload answered");
        assert_eq!(status, 500, "{what}: {body}");
        assert!(
            body.contains(reason),
            "{what}: the answer names {reason:?}: {body}"
        );
        let m = scrape(port);
        assert_eq!(reloads(&m, "failure"), (n + 1) as f64, "{what}");
        assert_eq!(
            value(&m, "kpiwatch_config_last_reload_successful"),
            0.0,
            "{what}"
        );
        assert_keeps_scoring(&mut agent, &log, port);
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("Config reload rejected"), "{text}");
    replace_file(&cfg_path, &good_yaml);
    let (status, body) = http(port, "POST", "/-/reload", None).expect("reload answered");
    assert_eq!(status, 200, "{body}");
    let m = scrape(port);
    assert_eq!(reloads(&m, "success"), 101.0);
    assert_eq!(value(&m, "kpiwatch_config_last_reload_successful"), 1.0);
    assert_keeps_scoring(&mut agent, &log, port);
    assert!(sigterm_and_wait(&mut agent).success());
    assert_eq!(seeded_keys(&load_state(&state).expect("valid state")), 50);
}

/// A loopback server that accepts connections and never answers, so that every query
/// runs into the agent's timeout, until `release` is set: then it closes them all, and
/// every later one at once. At most 64 connections are held.
fn black_hole() -> (u16, std::sync::Arc<BlackHole>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hole = std::sync::Arc::new(BlackHole::default());
    let h = hole.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut held = h.held.lock().unwrap_or_else(|p| p.into_inner());
            if !h.released.load(std::sync::atomic::Ordering::SeqCst) && held.len() < 64 {
                held.push(stream);
            }
        }
    });
    (port, hole)
}

/// The connections a [`black_hole`] holds.
#[derive(Default)]
struct BlackHole {
    released: std::sync::atomic::AtomicBool,
    held: Mutex<Vec<std::net::TcpStream>>,
}

impl BlackHole {
    fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for s in held.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_reload_during_a_cycle_longer_than_the_grace_period_keeps_the_learned_state() {
    // A query timeout of 11 s against a server that never answers: each cycle takes
    // 11 s, longer than the 10 s grace period of a group's stop. No timer save (1h):
    // the state is written at shutdown, from the group's runner.
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    seed_state(&state, 50, 8);
    let (prometheus, hole) = black_hole();
    let cfg = AgentConfig {
        prometheus,
        listen: free_port(),
        state_dir: state.clone(),
        save_interval: "1h",
    };
    let port = cfg.listen;
    let yaml = cfg.yaml().replace("timeout: 2s", "timeout: 11s");
    let cfg_path = dir.path().join("k.yaml");
    std::fs::write(&cfg_path, &yaml).expect("config");
    let log = dir.path().join("agent.log");
    let mut agent = start_agent(&cfg_path, &log);
    wait_agent(
        &mut agent,
        &log,
        "/-/healthy",
        Duration::from_secs(30),
        || http_get(port, "/-/healthy").is_some_and(|(s, _)| s == 200),
    );
    // The group's first cycle began at start and waits for its answers. One reload
    // keeps the group's config, the next changes it (a new min_points). By SIGHUP: a
    // reload that waits for the group outlasts the test client's timeout.
    let hup = |agent: &Proc| {
        let ok = Command::new("kill")
            .args(["-HUP", &agent.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -HUP");
    };
    std::thread::sleep(Duration::from_secs(1));
    hup(&agent);
    wait_agent(
        &mut agent,
        &log,
        "the first reload",
        Duration::from_secs(30),
        || reloads(&scrape(port), "success") >= 1.0,
    );
    replace_file(&cfg_path, &yaml.replace("min_points: 8", "min_points: 9"));
    hup(&agent);
    wait_agent(
        &mut agent,
        &log,
        "the second reload",
        Duration::from_secs(30),
        || reloads(&scrape(port), "success") >= 2.0,
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("Group still busy"),
        "no reload met a busy group, so this test proves nothing:\n{text}"
    );
    // Queries fail at once from now on: the group stops within the grace period at
    // shutdown, and its runner's state is saved.
    hole.release();
    assert!(sigterm_and_wait(&mut agent).success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("Group busy at shutdown"), "{text}");
    assert_eq!(
        seeded_keys(&load_state(&state).expect("valid state")),
        50,
        "the reload dropped the busy group's learned state\n{text}"
    );
}
