//! Reload (SIGHUP or `POST /-/reload`): build the new config's parts, then swap them in;
//! a config that fails anywhere is rejected as a whole and the running one stays. A
//! group busy in a cycle (a slow Prometheus) is waited for, however long the cycle
//! takes: its runner carries what it learned.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::{build_runner, Agent, StopWait};
use crate::config::{self, Config, GroupConfig};
use crate::cycle::GroupRunner;
use crate::reader::Client;
use crate::regressions::Setup as RegressSetup;

/// Everything a new config needs, built before anything running is touched.
struct Next {
    config: Config,
    client: Arc<Client>,
    fresh: HashMap<String, GroupRunner>,
    regressions: Option<RegressSetup>,
}

impl Agent {
    /// Re-reads the config; on success swaps groups, keeping the runners (store and
    /// detectors) of groups whose config did not change. On failure nothing changes:
    /// every reason to reject is found before anything stops, and all of them take the
    /// one reject path below.
    pub(super) async fn reload(&mut self) -> Result<String, String> {
        match self.prepare(self.config_path.clone()).await {
            Ok(next) => Ok(self.apply(next).await),
            Err(reason) => {
                self.ctx.telemetry.reload_rejected(&reason);
                Err(reason)
            }
        }
    }

    /// Loads the new config and builds everything it needs (client, group runners with
    /// their models, regression setup), touching nothing that runs.
    async fn prepare(&self, path: PathBuf) -> Result<Next, String> {
        let config = tokio::task::spawn_blocking(move || config::load(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|errs| errs.to_string())?;
        let client = Arc::new(
            Client::new(&config.prometheus, self.ctx.telemetry.clone())
                .map_err(|e| e.to_string())?,
        );
        // Build new runners before stopping anything, so that a model that fails to
        // load leaves the old config running. A group whose config is unchanged keeps
        // its runner (see `apply`): building one would load its models for nothing,
        // on every reload of a storm.
        let mut fresh = HashMap::new();
        for g in &config.groups {
            if self.keeps_runner(g, &config) {
                continue;
            }
            let runner = build_runner(g, &config).map_err(|e| format!("{e:#}"))?;
            fresh.insert(g.name.clone(), runner);
        }
        let regressions =
            RegressSetup::build(&config, client.clone()).map_err(|e| format!("{e:#}"))?;
        Ok(Next {
            config,
            client,
            fresh,
            regressions,
        })
    }

    /// Whether `apply` keeps the running runner of `g` under `new`: same group config
    /// and same shard.
    fn keeps_runner(&self, g: &GroupConfig, new: &Config) -> bool {
        new.shard == self.config.shard && self.config.groups.iter().any(|running| running == g)
    }

    /// Swaps in a prepared config; returns its source file.
    async fn apply(&mut self, next: Next) -> String {
        let Next {
            config: new,
            client,
            mut fresh,
            regressions: regress_setup,
        } = next;
        for (key, note) in self.restart_only.changed_keys(&new) {
            warn!(key, "{key} changes only on restart; the value the agent started with stays in use{note}.");
        }
        let same_shard = new.shard == self.config.shard;
        let old: HashMap<String, GroupRunner> = self
            .stop_groups(StopWait::UntilDone)
            .await
            .into_iter()
            .map(|r| (r.config().name.clone(), r))
            .collect();
        self.ctx.client = client;
        let mut old = old;
        for g in &new.groups {
            let runner = match old.remove(&g.name) {
                Some(prev) if same_shard && prev.config() == g => prev,
                Some(prev) => {
                    let Some(mut r) = fresh_runner(&mut fresh, g, &new) else {
                        continue;
                    };
                    r.restore(&prev.snapshots());
                    self.ctx
                        .scores
                        .retain_detectors(&g.name, &r.published_detectors());
                    r
                }
                None => match fresh_runner(&mut fresh, g, &new) {
                    Some(r) => r,
                    None => continue,
                },
            };
            self.spawn(runner);
        }
        for removed in old.keys() {
            self.ctx.telemetry.group_removed(removed);
        }
        let names: Vec<String> = new.groups.iter().map(|g| g.name.clone()).collect();
        self.ctx.scores.retain_groups(&names);
        self.regressions.apply(regress_setup).await;
        self.ctx.catalog.retain_groups(&names);
        self.config = new;
        self.ctx.telemetry.reload_applied(&self.config.source);
        self.config.source.clone()
    }
}

/// The runner `prepare` built for `g`, or, for an unchanged group whose loop ended
/// abnormally (a panic: `prepare` built none, expecting to keep it), a new one: it built
/// once with this config, so a failure now is logged and the group skipped until the
/// next reload rather than aborting a reload half applied.
fn fresh_runner(
    fresh: &mut HashMap<String, GroupRunner>,
    g: &GroupConfig,
    config: &Config,
) -> Option<GroupRunner> {
    if let Some(r) = fresh.remove(&g.name) {
        return Some(r);
    }
    match build_runner(g, config) {
        Ok(r) => Some(r),
        Err(e) => {
            warn!(group = %g.name, error = format!("{e:#}"), "Group not restarted after the reload; the next reload tries again.");
            None
        }
    }
}

/// The keys a reload cannot change: the server, its token and web config readers and the save timer are
/// built once at start. Reloads are compared with the values the agent started with, so
/// that a change keeps being reported on every reload until a restart applies it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RestartOnly {
    listen: std::net::SocketAddr,
    write_token_file: Option<PathBuf>,
    web_config_file: Option<PathBuf>,
    state_save_interval: Duration,
    /// The agent holds the lock on the state directory it started with.
    state_dir: Option<PathBuf>,
}

impl RestartOnly {
    pub(super) fn of(config: &Config) -> Self {
        RestartOnly {
            listen: config.listen,
            write_token_file: config.write_token_file.clone(),
            web_config_file: config.web.as_ref().map(|w| w.file.clone()),
            state_save_interval: config.state_save_interval,
            state_dir: config.state_dir.clone(),
        }
    }

    /// The keys whose value in `new` differs from the running one, each with a note.
    fn changed_keys(&self, new: &Config) -> Vec<(&'static str, &'static str)> {
        let mut keys = Vec::new();
        if new.listen != self.listen {
            keys.push(("server.listen", ""));
        }
        if new.write_token_file != self.write_token_file {
            keys.push((
                "server.write_token_file",
                " (a new token in the same file is read at once)",
            ));
        }
        if new.web.as_ref().map(|w| &w.file) != self.web_config_file.as_ref() {
            keys.push((
                "server.web_config_file",
                " (changes inside the same file are read within a second)",
            ));
        }
        if new.state_save_interval != self.state_save_interval {
            keys.push(("state_save_interval", ""));
        }
        if new.state_dir != self.state_dir {
            keys.push((
                "state_dir",
                " (the agent holds the lock on the directory it started with and saves there)",
            ));
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid config.
    fn config() -> Config {
        let text =
            "prometheus:\n  url: http://127.0.0.1:9090\ngroups:\n  - name: g\n    metrics:\n      \
                    m: up\n    entity_labels: [instance]\n    detectors:\n      zscore: {}\n";
        let env = std::collections::HashMap::new();
        config::parse_str(text, std::path::Path::new("test.yaml"), &env)
            .expect("test config is valid")
    }

    #[test]
    fn restart_only_keys_are_compared_with_the_values_at_start() {
        let started = config();
        let running = RestartOnly::of(&started);
        let mut moved = started.clone();
        moved.listen = "127.0.0.1:9999".parse().expect("address");
        moved.state_save_interval = Duration::from_secs(7);
        let keys = |c: &Config| -> Vec<&str> {
            running
                .changed_keys(c)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(keys(&moved), ["server.listen", "state_save_interval"]);
        moved.write_token_file = Some(PathBuf::from("/run/token"));
        assert_eq!(
            keys(&moved),
            [
                "server.listen",
                "server.write_token_file",
                "state_save_interval"
            ]
        );
        assert!(keys(&started).is_empty());
    }

    #[test]
    fn state_dir_changes_only_on_restart() {
        let mut started = config();
        started.state_dir = Some(PathBuf::from("/var/lib/kpiwatch"));
        let running = RestartOnly::of(&started);
        let mut moved = started.clone();
        moved.state_dir = Some(PathBuf::from("/var/lib/elsewhere"));
        let keys: Vec<&str> = running
            .changed_keys(&moved)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["state_dir"]);
    }
}
