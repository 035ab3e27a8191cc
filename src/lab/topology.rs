//! The lab's service topology: which services exist, what each costs, whom it calls and
//! how its clients behave (pool, timeout, retries). Checked before anything starts.
//!
//! The default, [`Topology::shop`], is a small web shop of nine services: an entry
//! service calling catalog, recommendation, cart and checkout, which call payment,
//! shipping, a cache and a database. Calls form a directed acyclic graph, so that a
//! request ends and a fault below the entry can only travel up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Services, their calls and the client settings every caller uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The service the load generator calls.
    pub entry: String,
    /// Services by name.
    pub services: BTreeMap<String, ServiceSpec>,
    /// How callers call their callees.
    #[serde(default)]
    pub client: ClientSpec,
}

/// The cost model of one service and the calls each of its requests makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Own service time per request (a sleep with lognormal noise), milliseconds.
    pub work_ms: f64,
    /// Own CPU per request (a busy loop), milliseconds.
    #[serde(default)]
    pub cpu_ms: f64,
    /// Requests served at once (a worker pool); others wait, then get 503.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Calls made by each request, in order, each with its probability.
    #[serde(default)]
    pub calls: Vec<Call>,
}

fn default_workers() -> usize {
    64
}

/// One outgoing call of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// The callee.
    pub to: String,
    /// Probability that a request makes this call (its weight in the call graph).
    #[serde(default = "default_probability")]
    pub p: f64,
}

fn default_probability() -> f64 {
    1.0
}

/// Client behaviour, the same for every edge: a bounded connection pool per callee, a
/// timeout per attempt (pool wait included) and retries, so that a slow callee queues
/// its callers, times them out and multiplies their load, as in real services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSpec {
    /// Requests in flight per callee (per caller process).
    pub pool: usize,
    /// Timeout of one attempt, milliseconds.
    pub timeout_ms: u64,
    /// Attempts after a failed one.
    pub retries: u32,
}

impl Default for ClientSpec {
    fn default() -> Self {
        ClientSpec {
            pool: 16,
            timeout_ms: 500,
            retries: 1,
        }
    }
}

impl Topology {
    /// The nine-service shop the lab records by default.
    pub fn shop() -> Topology {
        let service = |work_ms: f64, cpu_ms: f64, calls: &[(&str, f64)]| ServiceSpec {
            work_ms,
            cpu_ms,
            workers: default_workers(),
            calls: calls
                .iter()
                .map(|&(to, p)| Call { to: to.into(), p })
                .collect(),
        };
        let services = BTreeMap::from([
            (
                "frontend".to_string(),
                service(
                    2.0,
                    0.3,
                    &[
                        ("catalog", 1.0),
                        ("recommendation", 0.6),
                        ("cart", 0.5),
                        ("checkout", 0.2),
                    ],
                ),
            ),
            (
                "catalog".into(),
                service(3.0, 0.3, &[("cache", 1.0), ("database", 0.3)]),
            ),
            (
                "recommendation".into(),
                service(6.0, 0.8, &[("catalog", 0.5), ("cache", 0.5)]),
            ),
            (
                "cart".into(),
                service(2.0, 0.2, &[("cache", 1.0), ("database", 0.2)]),
            ),
            (
                "checkout".into(),
                service(
                    4.0,
                    0.4,
                    &[("cart", 1.0), ("payment", 1.0), ("shipping", 1.0)],
                ),
            ),
            ("payment".into(), service(12.0, 0.3, &[("database", 1.0)])),
            ("shipping".into(), service(5.0, 0.2, &[("database", 0.5)])),
            ("cache".into(), service(0.5, 0.05, &[])),
            ("database".into(), service(3.0, 0.3, &[])),
        ]);
        Topology {
            entry: "frontend".into(),
            services,
            client: ClientSpec::default(),
        }
    }

    /// Every problem, each as `path: message`; empty when the topology is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.services.contains_key(&self.entry) {
            out.push(format!(
                "entry: unknown service {:?} (expected one of {:?})",
                self.entry,
                self.services.keys().collect::<Vec<_>>()
            ));
        }
        for (name, s) in &self.services {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                out.push(format!(
                    "services.{name}: a name is letters, digits, '-' and '_'"
                ));
            }
            for (field, v, max) in [
                ("work_ms", s.work_ms, 10_000.0),
                ("cpu_ms", s.cpu_ms, 1_000.0),
            ] {
                if !v.is_finite() || !(0.0..=max).contains(&v) {
                    out.push(format!(
                        "services.{name}.{field}: {v} is out of range (expected 0 to {max})"
                    ));
                }
            }
            if !(1..=10_000).contains(&s.workers) {
                out.push(format!(
                    "services.{name}.workers: {} is out of range (expected 1 to 10000)",
                    s.workers
                ));
            }
            for (i, c) in s.calls.iter().enumerate() {
                if !self.services.contains_key(&c.to) {
                    out.push(format!(
                        "services.{name}.calls[{i}].to: unknown service {:?}",
                        c.to
                    ));
                }
                if !c.p.is_finite() || !(0.0..=1.0).contains(&c.p) {
                    out.push(format!(
                        "services.{name}.calls[{i}].p: {} is not a probability (expected 0 to 1)",
                        c.p
                    ));
                }
            }
        }
        if let Some(cycle) = self.cycle() {
            out.push(format!(
                "services: the calls form a cycle ({}); a request must end",
                cycle.join(" -> ")
            ));
        }
        if !(1..=1_000).contains(&self.client.pool) {
            out.push(format!(
                "client.pool: {} is out of range (expected 1 to 1000)",
                self.client.pool
            ));
        }
        if !(1..=60_000).contains(&self.client.timeout_ms) {
            out.push(format!(
                "client.timeout_ms: {} is out of range (expected 1 to 60000)",
                self.client.timeout_ms
            ));
        }
        if self.client.retries > 5 {
            out.push(format!(
                "client.retries: {} is out of range (expected 0 to 5)",
                self.client.retries
            ));
        }
        out
    }

    /// A cycle of calls, as the services along it (first repeated last), if any.
    fn cycle(&self) -> Option<Vec<String>> {
        // Depth-first search with the path on a stack; 0 = unseen, 1 = on the path, 2 = done.
        fn visit<'a>(
            t: &'a Topology,
            name: &'a str,
            state: &mut BTreeMap<&'a str, u8>,
            path: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            match state.get(name) {
                Some(2) => return None,
                Some(1) => {
                    let from = path.iter().position(|p| *p == name).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|s| s.to_string()).collect();
                    cycle.push(name.to_string());
                    return Some(cycle);
                }
                _ => {}
            }
            state.insert(name, 1);
            path.push(name);
            for c in t.services.get(name).map(|s| &s.calls[..]).unwrap_or(&[]) {
                if t.services.contains_key(&c.to) {
                    if let Some(cycle) = visit(t, &c.to, state, path) {
                        return Some(cycle);
                    }
                }
            }
            path.pop();
            state.insert(name, 2);
            None
        }
        let mut state = BTreeMap::new();
        self.services
            .keys()
            .find_map(|name| visit(self, name, &mut state, &mut Vec::new()))
    }

    /// This topology with the call probabilities `changes` sets (by calling service);
    /// changes to undeclared calls are ignored (scenario validation rejects them).
    pub fn with_calls(&self, changes: &BTreeMap<String, Vec<Call>>) -> Topology {
        let mut t = self.clone();
        for (caller, calls) in changes {
            let Some(spec) = t.services.get_mut(caller) else {
                continue;
            };
            for change in calls {
                if let Some(c) = spec.calls.iter_mut().find(|c| c.to == change.to) {
                    c.p = change.p;
                }
            }
        }
        t
    }

    /// The services that call `name`, directly or through others, with a call
    /// probability above zero: those a fault of `name` can reach.
    pub fn callers_of(&self, name: &str) -> Vec<String> {
        let mut found: Vec<String> = Vec::new();
        let mut frontier = vec![name.to_string()];
        while let Some(callee) = frontier.pop() {
            for (caller, s) in &self.services {
                let calls = s.calls.iter().any(|c| c.to == callee && c.p > 0.0);
                if calls && !found.contains(caller) {
                    found.push(caller.clone());
                    frontier.push(caller.clone());
                }
            }
        }
        found.sort();
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shop_is_valid_and_every_service_reaches_the_entry() {
        let t = Topology::shop();
        assert_eq!(t.problems(), Vec::<String>::new());
        assert_eq!(t.services.len(), 9);
        for name in t.services.keys().filter(|n| **n != t.entry) {
            assert!(
                t.callers_of(name).contains(&t.entry),
                "{name} is not below the entry"
            );
        }
        assert_eq!(
            t.callers_of("payment"),
            vec!["checkout".to_string(), "frontend".to_string()]
        );
        assert!(t.callers_of("frontend").is_empty());
    }

    #[test]
    fn cycles_unknown_callees_and_bad_numbers_are_reported() {
        let mut t = Topology::shop();
        t.services.get_mut("database").unwrap().calls.push(Call {
            to: "catalog".into(),
            p: 1.0,
        });
        t.services.get_mut("cache").unwrap().calls.push(Call {
            to: "nowhere".into(),
            p: 1.5,
        });
        t.client.timeout_ms = 0;
        t.entry = "gateway".into();
        let p = t.problems().join("\n");
        assert!(p.contains("entry: unknown service \"gateway\""), "{p}");
        assert!(
            p.contains("services.cache.calls[0].to: unknown service \"nowhere\""),
            "{p}"
        );
        assert!(
            p.contains("services.cache.calls[0].p: 1.5 is not a probability"),
            "{p}"
        );
        assert!(p.contains("client.timeout_ms: 0"), "{p}");
        assert!(
            p.contains("form a cycle (database -> catalog -> database)"),
            "{p}"
        );
    }

    #[test]
    fn a_topology_reads_from_yaml_with_defaults() {
        let t: Topology = serde_yaml::from_str(
            "entry: web\nservices:\n  web: {work_ms: 1, calls: [{to: db}]}\n  db: {work_ms: 2}\n",
        )
        .unwrap();
        assert!(t.problems().is_empty(), "{:?}", t.problems());
        assert_eq!(t.services["web"].calls[0].p, 1.0);
        assert_eq!(t.services["db"].workers, 64);
        assert_eq!(t.client, ClientSpec::default());
    }
}
