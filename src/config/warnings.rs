//! Valid configs that are probably not what the operator meant: said by the agent at
//! start (as warnings) and by `kpiwatch check-config`, so that they are seen before a
//! deployment, not at 3 a.m.

use super::{Config, Shard};

impl Config {
    /// One sentence per risky setting, empty when there is none.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let basic_auth = self.web.as_ref().is_some_and(|w| !w.users.is_empty());
        if self.write_token_file.is_none() && !basic_auth && !self.listen.ip().is_loopback() {
            out.push(format!(
                "Write endpoints (POST /-/reload, pattern label edits, POST \
                 /api/v1/regressions/check) on {} need no token: set \
                 server.write_token_file (or basic_auth_users in server.web_config_file), \
                 or keep the port on a trusted network.",
                self.listen
            ));
        }
        // Hash mode splits interfaces too (by the hash of their name); a node has no
        // interfaces of its own.
        if self.regressions.is_some() && matches!(self.shard, Shard::Node { .. }) {
            out.push(
                "Regression checks are not split by node: every agent of the DaemonSet runs \
                 all of them and exports the same interfaces. Run them in one agent (a \
                 config with groups: [] and no shard; Helm: a second release pinned to one \
                 node, see helm/kpiwatch/ci/regressions-values.yaml)."
                    .to_string(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use crate::config::parse_str;

    const REGRESSIONS: &str =
        "groups: []\nregressions:\n  method: mwu\n  interface_label: route\n  \
        discover: up\n  workload: up\n  kpis:\n    response_time: up{route=\"$interface\"}\n  \
        baseline:\n    mode: offset\n    offset: 1d\n";

    fn warnings(top: &str) -> Vec<String> {
        let text = format!("prometheus:\n  url: http://127.0.0.1:9090\n{top}{REGRESSIONS}");
        let env: HashMap<String, String> = HashMap::new();
        parse_str(&text, Path::new("test.yaml"), &env)
            .expect("test config is valid")
            .warnings()
    }

    const LOOPBACK: &str = "server:\n  listen: 127.0.0.1:9847\n";

    #[test]
    fn only_node_sharded_agents_with_regressions_are_warned() {
        let w = warnings(&format!("{LOOPBACK}shard:\n  node_name: n1\n"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("Regression checks are not split by node"),
            "{w:?}"
        );
        // Hash mode splits interfaces among the agents (regressions::runner).
        assert!(warnings(&format!("{LOOPBACK}shard:\n  total: 3\n  index: 1\n")).is_empty());
        assert!(warnings(&format!("{LOOPBACK}shard:\n  total: 1\n  index: 0\n")).is_empty());
        assert!(warnings(LOOPBACK).is_empty());
    }

    #[test]
    fn open_writes_beyond_loopback_are_warned() {
        let w = warnings("server:\n  listen: 0.0.0.0:9847\n");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("0.0.0.0:9847 need no token"), "{w:?}");
    }
}
