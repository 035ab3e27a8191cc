//! Prometheus-side faults, against one real Prometheus per test on loopback.
//!
//! `network_faults_and_a_stopped_prometheus_are_survived_and_caught_up_without_gaps`
//! puts a TCP proxy ([`proxy`]) between the agent and Prometheus and, one case after the
//! other on the same agent: throttles the answers (slow but within the timeout), delays
//! them past the timeout, resets connections, truncates answers, freezes Prometheus
//! (SIGSTOP) past the timeout, and kills it while a query is in flight, restarting it on
//! the same port and data directory. Prometheus keeps scraping through the network
//! faults, so every point of the fault must be fetched afterwards.
//!
//! `refused_oversized_and_timed_out_queries_are_counted_and_spare_the_other_metrics`
//! runs a second agent straight at Prometheus with a bad PromQL expression (400), an
//! answer over `max_response_bytes` and a query over Prometheus's `--query.timeout`.

#[path = "proxy.rs"]
mod proxy;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{
    free_port, http_get, metric, serve_exposition, start_prometheus_with, tools_or_skip, Proc, BIN,
};
use proxy::{Mode, Proxy};

/// The synthetic exporter's entities; each has both metrics.
const ENTITIES: [&str; 3] = ["e1", "e2", "e3"];
/// Series of the proxied group: entities × metrics.
const SERIES: f64 = 6.0;
/// How long each network fault lasts: several of the agent's 1 s cycles, and long enough
/// that a gap would be larger than the slack of the catch-up check.
const HOLD: Duration = Duration::from_secs(6);

/// Serves `fault_kpi_a` and `fault_kpi_b` for every entity, wandering gently with time.
fn start_exporter() -> u16 {
    let port = free_port();
    serve_exposition(port, || {
        let t = kpiwatch::clock::now_secs();
        let mut body = String::new();
        for (i, e) in ENTITIES.iter().enumerate() {
            let phase = t / 7.0 + i as f64;
            body.push_str(&format!(
                "fault_kpi_a{{entity=\"{e}\"}} {}\n",
                10.0 + phase.sin()
            ));
            body.push_str(&format!(
                "fault_kpi_b{{entity=\"{e}\"}} {}\n",
                50.0 + 5.0 * phase.cos()
            ));
        }
        body
    });
    port
}

/// Prometheus on `port` with `dir/prometheus.yml` and `dir/data` (so that a restart
/// finds its data), `--query.timeout=500ms`; its log is appended to `dir/prometheus.log`.
fn start_prometheus(dir: &Path, port: u16) -> Proc {
    start_prometheus_with(dir, port, &["--query.timeout=500ms"])
}

/// A fresh exporter, and Prometheus in `dir` scraping it: the Prometheus and its port.
fn prometheus_scraping_an_exporter(dir: &Path) -> (Proc, u16) {
    let (exporter, port) = (start_exporter(), free_port());
    write_prometheus_config(dir, exporter, port);
    (start_prometheus(dir, port), port)
}

/// Writes a Prometheus config scraping the exporter (and Prometheus itself) every second.
fn write_prometheus_config(dir: &Path, exporter: u16, prom: u16) {
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: kpi\n    static_configs: [{{targets: ['127.0.0.1:{exporter}']}}]\n  - job_name: prometheus\n    static_configs: [{{targets: ['127.0.0.1:{prom}']}}]\n"
        ),
    )
    .expect("write prometheus.yml");
}

/// A group at test speed over the exporter's entities; `metrics` is YAML lines
/// `name: 'promql'` indented for the group's `metrics:` map.
fn group(name: &str, interval: &str, metrics: &[(&str, &str)]) -> String {
    let mut g = format!(
        "  - name: {name}\n    interval: {interval}\n    step: 1s\n    window: 8\n    history: 1m\n    entity_labels: [entity]\n    expire_after: 10m\n    fill: previous\n    metrics:\n"
    );
    for (metric, promql) in metrics {
        g.push_str(&format!("      {metric}: '{promql}'\n"));
    }
    g.push_str("    detectors:\n      zscore: {threshold: 4.0, calibrate: false, min_points: 5}\n");
    g
}

/// Starts the agent with `prometheus` (YAML lines of the `prometheus:` section) and
/// `groups`, serving on `port`; config and log under `dir/<name>.*`.
fn start_agent(dir: &Path, name: &str, port: u16, prometheus: &str, groups: &str) -> Proc {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!("prometheus:\n{prometheus}server:\n  listen: 127.0.0.1:{port}\ngroups:\n{groups}"),
    )
    .expect("write agent config");
    Proc(
        Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "kpiwatch=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).expect("agent log"))
            .spawn()
            .expect("start kpiwatch"),
    )
}

/// Waits (at most 30 s) until the agent started as `name` answers on `port`.
fn wait_listening(agent: &mut Proc, port: u16, dir: &Path, name: &str) {
    let start = Instant::now();
    while http_get(port, "/-/healthy").is_none() {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!("{name} exited ({status})\n{}", log_tail(dir, name, 40));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name} not listening after 30 s\n{}",
            log_tail(dir, name, 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of `dir/<name>.log`, for failure messages.
fn log_tail(dir: &Path, name: &str, n: usize) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One scrape of the agent's `/metrics`, which must answer 200 whatever else is failing.
fn scrape(port: u16, dir: &Path, agent: &str) -> String {
    match http_get(port, "/metrics") {
        Some((200, body)) => body,
        other => panic!(
            "/metrics did not answer 200 ({:?})\n{}",
            other.map(|(s, _)| s),
            log_tail(dir, agent, 40)
        ),
    }
}

/// A sample of the exposition, 0 when the series is absent (a counter not moved yet).
fn value(text: &str, series: &str) -> f64 {
    metric(text, &format!("{series} ")).unwrap_or(0.0)
}

/// Whether `text` exports the z-score of every entity of `group`.
fn scores_exported(text: &str, group: &str) -> bool {
    ENTITIES.iter().all(|e| {
        text.lines().any(|l| {
            l.starts_with("kpiwatch_anomaly_score{")
                && l.contains(&format!("group=\"{group}\""))
                && l.contains(&format!("entity=\"{e}\""))
                && l.contains("detector=\"zscore\"")
        })
    })
}

/// What the fault cases compare before and after, read from one scrape.
#[derive(Debug, Clone, Copy)]
struct Reading {
    fetched: f64,
    last_success: f64,
    ok: f64,
    error: f64,
    stale: f64,
    warming: f64,
}

fn reading(text: &str) -> Reading {
    Reading {
        fetched: value(text, "kpiwatch_samples_fetched_total"),
        last_success: value(
            text,
            r#"kpiwatch_last_successful_cycle_timestamp_seconds{group="kpi"}"#,
        ),
        ok: value(text, r#"kpiwatch_cycles_total{group="kpi",result="ok"}"#),
        error: value(text, r#"kpiwatch_cycles_total{group="kpi",result="error"}"#),
        stale: value(text, r#"kpiwatch_entities_stale{group="kpi"}"#),
        warming: value(
            text,
            r#"kpiwatch_detector_skipped_total{detector="zscore",reason="warming_up"}"#,
        ),
    }
}

fn errors(text: &str, cause: &str) -> f64 {
    value(
        text,
        &format!("kpiwatch_query_errors_total{{cause=\"{cause}\"}}"),
    )
}

/// The proxied agent and what it depends on.
struct Rig {
    dir: tempfile::TempDir,
    prom_port: u16,
    prometheus: Proc,
    proxy: Proxy,
    agent_port: u16,
    _agent: Proc,
}

impl Rig {
    fn scrape(&self) -> String {
        scrape(self.agent_port, self.dir.path(), "agent")
    }

    /// Polls `/metrics` every 250 ms until `done` holds; panics after `timeout` with the
    /// agent's log.
    fn wait(&self, what: &str, timeout: Duration, mut done: impl FnMut(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.scrape();
            if done(&text) {
                eprintln!("{what}: after {:.1}s", start.elapsed().as_secs_f64());
                return text;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}\n{}",
                log_tail(self.dir.path(), "agent", 40)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for two good cycles after now with every entity fresh: the agent has caught
    /// up with whatever it missed. The reading comes from one scrape.
    fn caught_up(&self, what: &str) -> Reading {
        let ok = reading(&self.scrape()).ok;
        let text = self.wait(what, Duration::from_secs(40), |m| {
            let r = reading(m);
            r.ok >= ok + 2.0 && r.stale == 0.0 && scores_exported(m, "kpi")
        });
        reading(&text)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.prometheus.0.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} prometheus");
    }

    /// Runs one fault from `start` to `stop`, `HOLD` apart, and asserts what the agent
    /// does: `/metrics` answers 200 with every score throughout, the failure is counted
    /// under `cause`, the entities go stale, and after `stop` it catches up with every
    /// point of the fault, fetched once, learned state intact. Returns the caught-up
    /// reading, the next case's starting point.
    fn fault(
        &mut self,
        name: &str,
        cause: &str,
        before: Reading,
        start: impl FnOnce(&mut Rig),
        stop: impl FnOnce(&mut Rig),
    ) -> Reading {
        let errors_before = errors(&self.scrape(), cause);
        start(self);
        let began = Instant::now();
        let mut saw_stale = false;
        while began.elapsed() < HOLD {
            let text = self.scrape();
            assert!(
                scores_exported(&text, "kpi"),
                "{name}: the last scores left /metrics during the fault"
            );
            saw_stale |= reading(&text).stale == ENTITIES.len() as f64;
            std::thread::sleep(Duration::from_millis(250));
        }
        let during = self.scrape();
        stop(self);
        let counted = errors(&during, cause) - errors_before;
        eprintln!("{name}: {counted} query errors counted as {cause}");
        assert!(
            counted >= 1.0,
            "{name}: no query error counted as {cause}\n{during}"
        );
        assert!(
            reading(&during).error > before.error,
            "{name}: no failed cycle"
        );
        assert!(saw_stale, "{name}: the entities were never reported stale");
        let after = self.caught_up(&format!("{name}: caught up"));
        // Prometheus kept the points of the fault (scraped, or served by its 5-minute
        // lookback), so the agent must have fetched one point per series and second from
        // the last good cycle before the fault to the last one after it: fewer is a gap,
        // many more is history fetched again (state lost). The slack covers the time
        // between a cycle's range end and its success timestamp, and a cycle counted in
        // one reading's samples but not yet in its timestamp.
        let expected = (after.last_success - before.last_success) * SERIES;
        let fetched = after.fetched - before.fetched;
        eprintln!("{name}: fetched {fetched} samples, {expected:.0} expected");
        assert!(
            (fetched - expected).abs() <= 3.0 * SERIES,
            "{name}: fetched {fetched} samples from Prometheus across the fault, expected about {expected:.0}"
        );
        assert_eq!(
            after.warming, before.warming,
            "{name}: the detector warmed up again: learned state was lost"
        );
        after
    }
}

#[test]
fn network_faults_and_a_stopped_prometheus_are_survived_and_caught_up_without_gaps() {
    if !tools_or_skip(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (prometheus, prom_port) = prometheus_scraping_an_exporter(dir.path());
    let agent_port = free_port();
    let proxy = Proxy::start(prom_port);
    // A short timeout and one quick retry, so that a failed cycle takes about 2 s.
    let settings = format!(
        "  url: http://127.0.0.1:{}\n  timeout: 1s\n  retries: 1\n  retry_backoff: 100ms\n",
        proxy.port
    );
    let groups = group(
        "kpi",
        "1s",
        &[("kpi_a", "fault_kpi_a"), ("kpi_b", "fault_kpi_b")],
    );
    let mut agent = start_agent(dir.path(), "agent", agent_port, &settings, &groups);
    wait_listening(&mut agent, agent_port, dir.path(), "agent");
    let mut rig = Rig {
        dir,
        prom_port,
        prometheus,
        proxy,
        agent_port,
        _agent: agent,
    };
    let mut before = rig.caught_up("first scores");

    // Slow but within the timeout (an answer of a cycle is well under 1 KB): the
    // agent keeps scoring and misses nothing.
    rig.proxy.set_mode(Mode::Throttle(4_000));
    let throttled = rig.wait(
        "two good cycles through the throttle",
        Duration::from_secs(20),
        |m| reading(m).ok >= before.ok + 2.0,
    );
    assert_eq!(reading(&throttled).stale, 0.0);
    rig.proxy.set_mode(Mode::Pass);
    before = rig.caught_up("caught up after the throttle");

    before = rig.fault(
        "delay past the timeout",
        "timeout",
        before,
        |r| r.proxy.set_mode(Mode::Delay(Duration::from_secs(3))),
        |r| r.proxy.set_mode(Mode::Pass),
    );
    before = rig.fault(
        "connections reset",
        "connect",
        before,
        |r| r.proxy.set_mode(Mode::Reset),
        |r| r.proxy.set_mode(Mode::Pass),
    );
    // 160 bytes: past Prometheus's headers (about 130 with gzip), inside the (gzip)
    // body of every answer.
    before = rig.fault(
        "answers truncated",
        "connect",
        before,
        |r| r.proxy.set_mode(Mode::Truncate(160)),
        |r| r.proxy.set_mode(Mode::Pass),
    );
    before = rig.fault(
        "Prometheus frozen (SIGSTOP)",
        "timeout",
        before,
        |r| r.signal("STOP"),
        |r| r.signal("CONT"),
    );
    // Stopped mid-cycle: frozen until a query of the agent is waiting on it, then
    // killed with that query in flight, and restarted on the same port and data.
    rig.fault(
        "Prometheus killed mid-query",
        "connect",
        before,
        |r| {
            r.signal("STOP");
            let frozen = Instant::now();
            while r.proxy.awaiting() == 0 {
                assert!(
                    frozen.elapsed() < Duration::from_secs(5),
                    "no query reached the frozen Prometheus"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            r.prometheus.kill();
        },
        |r| r.prometheus = start_prometheus(r.dir.path(), r.prom_port),
    );
}

#[test]
fn refused_oversized_and_timed_out_queries_are_counted_and_spare_the_other_metrics() {
    if !tools_or_skip(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prometheus, prom_port) = prometheus_scraping_an_exporter(dir.path());
    let agent_port = free_port();
    // 16 KiB: a minute of the three entities fits (about 5 KB); the same three series
    // carrying a 6,000-character label do not, from their first sample on (a query
    // whose size grows with Prometheus's uptime, such as every series it has, may fit
    // in the first cycle and create entities that are never refreshed again). The
    // agent's timeout is longer than Prometheus's --query.timeout, so that
    // Prometheus's error is the one seen.
    let settings = format!(
        "  url: http://127.0.0.1:{prom_port}\n  timeout: 5s\n  retries: 0\n  max_response_bytes: 16384\n"
    );
    let good = ("kpi_a", "fault_kpi_a");
    let padded = format!(
        "label_replace(fault_kpi_a, \"pad\", \"{}\", \"\", \"\")",
        "x".repeat(6000)
    );
    let groups = [
        group("refused", "1s", &[good, ("kpi_b", "sum(fault_kpi_b")]),
        group("oversized", "1s", &[good, ("padded", padded.as_str())]),
        // A subquery of 3.6 million steps: about 2 s of evaluation, past the 500 ms.
        group(
            "slow",
            "5s",
            &[("heavy", "count_over_time(vector(1)[1h:1ms])")],
        ),
    ]
    .concat();
    let mut _agent = start_agent(dir.path(), "refusals", agent_port, &settings, &groups);
    wait_listening(&mut _agent, agent_port, dir.path(), "refusals");
    let ok = |m: &str, group: &str| {
        value(
            m,
            &format!("kpiwatch_cycles_total{{group=\"{group}\",result=\"ok\"}}"),
        )
    };
    let fresh = |m: &str, group: &str| {
        value(m, &format!("kpiwatch_entities_stale{{group=\"{group}\"}}")) == 0.0
    };
    let start = Instant::now();
    let text = loop {
        let m = scrape(agent_port, dir.path(), "refusals");
        let done = errors(&m, "http_4xx") >= 2.0
            && errors(&m, "too_large") >= 2.0
            && errors(&m, "http_5xx") >= 1.0
            && ok(&m, "refused") >= 2.0
            && ok(&m, "oversized") >= 2.0
            && scores_exported(&m, "refused")
            && scores_exported(&m, "oversized")
            && fresh(&m, "refused")
            && fresh(&m, "oversized");
        if done {
            eprintln!(
                "refusals counted, other metrics scored: after {:.1}s",
                start.elapsed().as_secs_f64()
            );
            break m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for the refusals to be counted and the other metrics scored\n{m}\n{}",
            log_tail(dir.path(), "refusals", 40)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // The refused metric left the others fresh (waited for above: on a loaded machine
    // Prometheus's 500 ms --query.timeout can fail one of their cycles now and then,
    // which is a passing failure, not a refusal); the query Prometheus timed out on
    // fails its group's cycle (a timeout may pass), which stays stale.
    assert!(
        value(
            &text,
            r#"kpiwatch_cycles_total{group="slow",result="error"}"#
        ) >= 1.0
    );
    assert_eq!(
        value(&text, r#"kpiwatch_cycles_total{group="slow",result="ok"}"#),
        0.0
    );
}

/// A SIGTERM that arrives while a cycle waits on a Prometheus that answers after a
/// minute: the agent's periodic saves must not hold up the signal (a save waits at most
/// a couple of seconds for a busy group and keeps its last saved state instead), so the
/// agent exits within its shutdown grace, well before the kubelet's SIGKILL, and the
/// state file still holds the busy group.
#[test]
fn sigterm_during_a_cycle_stuck_on_prometheus_exits_within_the_grace_with_the_state_kept() {
    if !tools_or_skip(&["prometheus"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prometheus, prom_port) = prometheus_scraping_an_exporter(dir.path());
    let agent_port = free_port();
    let proxy = Proxy::start(prom_port);
    let state = dir.path().join("state");
    let config = dir.path().join("stuck.yaml");
    std::fs::write(
        &config,
        format!(
            "prometheus:\n  url: http://127.0.0.1:{}\n  timeout: 120s\n  retries: 0\nserver:\n  listen: 127.0.0.1:{agent_port}\nstate_dir: {}\nstate_save_interval: 1s\ngroups:\n{}",
            proxy.port,
            state.display(),
            group("kpi", "1s", &[("kpi_a", "fault_kpi_a")])
        ),
    )
    .expect("write agent config");
    let log = dir.path().join("stuck.log");
    let mut agent = super::common::start_agent(&config, &log);
    wait_listening(&mut agent, agent_port, dir.path(), "stuck");
    let saved = |text: &str| value(text, r#"kpiwatch_state_saves_total{result="success"}"#);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !{
        let text = scrape(agent_port, dir.path(), "stuck");
        scores_exported(&text, "kpi") && saved(&text) >= 2.0
    } {
        assert!(
            Instant::now() < deadline,
            "no scores and saves\n{}",
            log_tail(dir.path(), "stuck", 40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Every answer now comes after 90 s: the next cycle waits on it, and periodic
    // saves come due meanwhile.
    proxy.set_mode(Mode::Delay(Duration::from_secs(90)));
    let ok = |text: &str| value(text, r#"kpiwatch_cycles_total{group="kpi",result="ok"}"#);
    std::thread::sleep(Duration::from_secs(2));
    let stuck_at = ok(&scrape(agent_port, dir.path(), "stuck"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        ok(&scrape(agent_port, dir.path(), "stuck")),
        stuck_at,
        "the group's cycle is not stuck on the delayed answer"
    );
    let term = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exited = loop {
        if let Ok(Some(status)) = agent.0.try_wait() {
            break status;
        }
        assert!(
            term.elapsed() < Duration::from_secs(25),
            "still running 25 s after SIGTERM\n{}",
            log_tail(dir.path(), "stuck", 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "exited {:.1} s after SIGTERM ({exited})",
        term.elapsed().as_secs_f64()
    );
    assert!(exited.success(), "{}", log_tail(dir.path(), "stuck", 40));
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        text.contains(
            "Group busy in a cycle; the state file keeps what the last save holds for it."
        ),
        "{text}"
    );
    let file = std::fs::read_to_string(state.join("state.json")).expect("state file");
    assert!(
        file.contains("\"kpi\""),
        "the busy group left the state file"
    );
}
