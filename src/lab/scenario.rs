//! Lab scenarios: the YAML format (see `docs/lab.md` and `config/lab/`) and its
//! validation. A scenario with an unknown key or an impossible value is rejected with
//! every problem listed, before any process starts.
//!
//! A scenario holds either `phases` (an anomaly recording: load profile, faults and
//! version per phase) or `regression` (a load-test campaign: separate runs, then the
//! baseline/current pairs to build from them).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::load::{LoadSettings, Mode, Profile};
use super::mesh::MeshFault;
use super::service::{Faults, ROUTES};
use super::topology::{Call, Topology};
use super::LabError;
use crate::config::judge::Kpi;
use crate::config::parse_duration;

/// Largest load level (virtual users or requests per second): the lab shares a small
/// machine, tens of requests per second are the intended range.
pub const MAX_LEVEL: f64 = 200.0;
/// Longest scenario accepted (sum of phases, or of runs and cool-downs).
pub const MAX_TOTAL: Duration = Duration::from_secs(6 * 3600);

/// The scenario file as written (`deny_unknown_fields` everywhere).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    /// Name; also the dataset directory name (letters, digits, `-`, `_`).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Seed of the service's and the load generator's randomness.
    #[serde(default)]
    pub seed: u64,
    /// Prometheus scrape interval (default `1s`).
    #[serde(default)]
    pub scrape_interval: Option<String>,
    /// Resolution of the exported dataset (default: the scrape interval).
    #[serde(default)]
    pub step: Option<String>,
    /// Range of the `rate()` windows in the export queries (default: 5 scrape intervals).
    #[serde(default)]
    pub rate_window: Option<String>,
    /// The load generator.
    pub load: RawLoad,
    /// A service mesh instead of the test service: `shop` (the default topology) or a
    /// topology of its own. Anomaly phases only.
    #[serde(default)]
    pub topology: Option<RawTopology>,
    /// Anomaly recording: the phases, played in order.
    #[serde(default)]
    pub phases: Vec<RawPhase>,
    /// Regression campaign: load-test runs and pairs.
    #[serde(default)]
    pub regression: Option<RawCampaign>,
}

/// `topology:`: a named topology or one written out.
#[derive(Debug, Clone)]
pub enum RawTopology {
    /// `shop`.
    Named(String),
    /// Services, calls and client settings.
    Custom(Topology),
}

impl<'de> Deserialize<'de> for RawTopology {
    /// A string names a topology; anything else is read as one written out, and its
    /// error says what is wrong in it (an untagged enum would only say that nothing
    /// matched).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(name) => Ok(RawTopology::Named(name)),
            other => Topology::deserialize(other)
                .map(RawTopology::Custom)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// `load:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoad {
    /// `closed` (virtual users, default) or `open` (arrival rate).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Mean think time of a virtual user (default `250ms`).
    #[serde(default)]
    pub think_time: Option<String>,
    /// Client timeout (default `5s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Route weights (default: every route, equal weights).
    #[serde(default)]
    pub mix: BTreeMap<String, f64>,
}

/// One phase of an anomaly recording.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhase {
    /// Phase name (appears in the manifest).
    pub name: String,
    /// How long it lasts.
    pub duration: String,
    /// Load profile over the phase.
    pub profile: Profile,
    /// Faults active during the phase (none: normal behaviour).
    #[serde(default)]
    pub faults: Vec<Faults>,
    /// Version deployed at the start of the phase (unchanged when absent).
    #[serde(default)]
    pub version: Option<String>,
    /// Mesh scenarios: faults active during the phase, by service.
    #[serde(default)]
    pub service_faults: BTreeMap<String, Vec<MeshFault>>,
    /// Mesh scenarios: call probabilities that differ from the topology during the
    /// phase, by calling service (a shifted weight, a failover).
    #[serde(default)]
    pub calls: BTreeMap<String, Vec<Call>>,
}

/// `regression:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCampaign {
    /// Idle time between runs (default `4s`), so rate windows do not mix runs.
    #[serde(default)]
    pub cooldown: Option<String>,
    /// The load-test runs, played in order.
    pub runs: Vec<RawRun>,
    /// `[baseline, current]` run ids; each expands to one pair per route.
    pub pairs: Vec<[String; 2]>,
}

/// One load-test run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRun {
    /// Run id (letters, digits, `-`, `_`), used in file names.
    pub id: String,
    /// Deployed version during the run (default `v1`).
    #[serde(default)]
    pub version: Option<String>,
    /// Load profile.
    pub profile: Profile,
    /// Run length.
    pub duration: String,
    /// Injected degradation (none for normal runs).
    #[serde(default)]
    pub faults: Vec<Faults>,
    /// KPIs the degradation is meant to regress on the routes it hits.
    #[serde(default)]
    pub regressed: Vec<Kpi>,
}

/// A validated scenario: durations parsed, limits checked.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (safe as a directory name).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Prometheus scrape interval.
    pub scrape_interval: Duration,
    /// Dataset resolution.
    pub step: Duration,
    /// `rate()` range in export queries.
    pub rate_window: Duration,
    /// Load generator settings.
    pub load: LoadSettings,
    /// The service mesh played instead of the test service, if any.
    pub mesh: Option<Topology>,
    /// What to play.
    pub body: Body,
}

/// Anomaly phases or a regression campaign.
#[derive(Debug, Clone)]
pub enum Body {
    /// Anomaly recording.
    Anomaly(Vec<Phase>),
    /// Load-test campaign.
    Regression(Campaign),
}

/// A validated phase.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Name.
    pub name: String,
    /// Length.
    pub duration: Duration,
    /// Load profile.
    pub profile: Profile,
    /// Active faults.
    pub faults: Vec<Faults>,
    /// Version deployed at the start, if it changes.
    pub version: Option<String>,
    /// Mesh faults by service.
    pub service_faults: BTreeMap<String, Vec<MeshFault>>,
    /// Mesh call probabilities that differ from the topology, by calling service.
    pub calls: BTreeMap<String, Vec<Call>>,
}

impl Phase {
    /// The services a mesh fault hits in this phase.
    pub fn faulty_services(&self) -> Vec<&str> {
        self.service_faults
            .iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(s, _)| s.as_str())
            .collect()
    }
}

/// A validated campaign.
#[derive(Debug, Clone)]
pub struct Campaign {
    /// Idle time between runs.
    pub cooldown: Duration,
    /// Runs in order.
    pub runs: Vec<Run>,
    /// `(baseline, current)` indices into `runs`.
    pub pairs: Vec<(usize, usize)>,
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Id.
    pub id: String,
    /// Version.
    pub version: String,
    /// Load profile.
    pub profile: Profile,
    /// Length.
    pub duration: Duration,
    /// Injected degradation.
    pub faults: Vec<Faults>,
    /// KPIs meant to regress on the routes the faults hit.
    pub regressed: Vec<Kpi>,
}

impl Run {
    /// KPIs regressed on `route` in this run (empty when its faults miss the route).
    pub fn regressed_on(&self, route: &str) -> Vec<Kpi> {
        if self
            .faults
            .iter()
            .any(|f| f.affected_routes().contains(&route))
        {
            self.regressed.clone()
        } else {
            Vec::new()
        }
    }
}

impl Scenario {
    /// Total wall time of the scenario's phases or runs (cool-downs included).
    pub fn total_duration(&self) -> Duration {
        match &self.body {
            Body::Anomaly(phases) => phases.iter().map(|p| p.duration).sum(),
            Body::Regression(c) => c.runs.iter().map(|r| r.duration + c.cooldown).sum(),
        }
    }
}

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, LabError> {
    let text = std::fs::read_to_string(path).map_err(LabError::io(path))?;
    parse(&text).map_err(|problems| LabError::Scenario {
        file: path.to_path_buf(),
        problems,
    })
}

/// Parses and validates scenario text; on failure returns every problem found.
pub fn parse(text: &str) -> Result<Scenario, Vec<String>> {
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: RawScenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        vec![format!("{path}: {}", e.into_inner())]
    })?;
    validate(raw)
}

struct Problems(Vec<String>);
impl Problems {
    fn duration(&mut self, key: &str, s: &str, min: Duration, max: Duration) -> Duration {
        match parse_duration(s) {
            Ok(d) if d >= min && d <= max => d,
            Ok(d) => {
                self.0.push(format!(
                    "{key}: {d:?} is out of range (expected {min:?} to {max:?})"
                ));
                min
            }
            Err(e) => {
                self.0.push(format!("{key}: {e}"));
                min
            }
        }
    }
    fn faults(&mut self, key: &str, faults: &[Faults]) {
        for (i, f) in faults.iter().enumerate() {
            for p in f.problems() {
                self.0.push(format!("{key}.faults[{i}].{p}"));
            }
        }
    }
    fn profile(&mut self, key: &str, p: &Profile) {
        for e in p.problems(MAX_LEVEL) {
            self.0.push(format!("{key}.profile.{e}"));
        }
    }
}

/// Turns a raw scenario into a [`Scenario`], collecting every problem.
pub fn validate(raw: RawScenario) -> Result<Scenario, Vec<String>> {
    let mut p = Problems(Vec::new());
    if !safe_name(&raw.name) {
        p.0.push(format!(
            "name: {:?} must be 1-64 letters, digits, '-' or '_'",
            raw.name
        ));
    }
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let scrape = p.duration(
        "scrape_interval",
        raw.scrape_interval.as_deref().unwrap_or("1s"),
        ms(250),
        s(60),
    );
    let step = match raw.step.as_deref() {
        Some(v) => p.duration("step", v, scrape, s(300)),
        None => scrape,
    };
    let rate_window = match raw.rate_window.as_deref() {
        Some(v) => p.duration("rate_window", v, scrape * 2, s(600)),
        None => scrape * 5,
    };
    let mesh = validate_topology(&mut p, &raw);
    let mut load = validate_load(&mut p, &raw.load, raw.seed);
    if mesh.is_some() {
        // The load goes to the entry service, which serves one kind of request.
        load.mix = vec![(MESH_ROUTE.to_string(), 1.0)];
    }
    let body = match (&raw.regression, raw.phases.is_empty()) {
        (Some(_), false) => {
            p.0.push("phases and regression are exclusive: a scenario is one or the other".into());
            None
        }
        (None, true) => {
            p.0.push("phases: empty (give phases, or a regression campaign)".into());
            None
        }
        (None, false) => Some(Body::Anomaly(validate_phases(
            &mut p,
            &raw.phases,
            mesh.as_ref(),
        ))),
        (Some(c), true) => Some(Body::Regression(validate_campaign(&mut p, c))),
    };
    if !p.0.is_empty() {
        return Err(p.0);
    }
    let Some(body) = body else {
        return Err(vec!["no phases".into()]);
    };
    let sc = Scenario {
        name: raw.name,
        description: raw.description,
        scrape_interval: scrape,
        step,
        rate_window,
        load,
        mesh,
        body,
    };
    if sc.total_duration() > MAX_TOTAL {
        return Err(vec![format!(
            "total duration {:?} is above the limit {MAX_TOTAL:?}",
            sc.total_duration()
        )]);
    }
    Ok(sc)
}

/// The route the load generator asks a mesh's entry service for (`/api/shop`).
pub const MESH_ROUTE: &str = "shop";

/// The scenario's topology, checked, if it has one.
fn validate_topology(p: &mut Problems, raw: &RawScenario) -> Option<Topology> {
    let topology = match raw.topology.as_ref()? {
        RawTopology::Named(n) if n == "shop" => Topology::shop(),
        RawTopology::Named(n) => {
            p.0.push(format!(
                "topology: unknown topology {n:?} (expected \"shop\" or a topology written out)"
            ));
            return None;
        }
        RawTopology::Custom(t) => t.clone(),
    };
    for e in topology.problems() {
        p.0.push(format!("topology.{e}"));
    }
    if raw.regression.is_some() {
        p.0.push("topology: a mesh scenario has phases, not a regression campaign".into());
    }
    if !raw.load.mix.is_empty() {
        p.0.push("load.mix: a mesh's load goes to its entry service; leave mix out".into());
    }
    Some(topology)
}

/// Checks a phase's mesh keys against `mesh` (or their absence without a mesh).
fn validate_mesh_phase(p: &mut Problems, key: &str, ph: &RawPhase, mesh: Option<&Topology>) {
    let Some(t) = mesh else {
        if !ph.service_faults.is_empty() || !ph.calls.is_empty() {
            p.0.push(format!(
                "{key}: service_faults and calls need a topology (use faults for the test service)"
            ));
        }
        return;
    };
    if !ph.faults.is_empty() || ph.version.is_some() {
        p.0.push(format!(
            "{key}: a mesh phase injects service_faults (faults and version are the test service's)"
        ));
    }
    for (service, faults) in &ph.service_faults {
        if !t.services.contains_key(service) {
            p.0.push(format!("{key}.service_faults.{service}: unknown service"));
        }
        for (i, f) in faults.iter().enumerate() {
            for e in f.problems() {
                p.0.push(format!("{key}.service_faults.{service}[{i}].{e}"));
            }
        }
    }
    for (service, calls) in &ph.calls {
        let declared = t.services.get(service).map(|s| &s.calls[..]).unwrap_or(&[]);
        if !t.services.contains_key(service) {
            p.0.push(format!("{key}.calls.{service}: unknown service"));
        }
        for (i, c) in calls.iter().enumerate() {
            if !declared.iter().any(|d| d.to == c.to) {
                p.0.push(format!(
                    "{key}.calls.{service}[{i}].to: {service} has no declared call to {:?}",
                    c.to
                ));
            }
            if !c.p.is_finite() || !(0.0..=1.0).contains(&c.p) {
                p.0.push(format!(
                    "{key}.calls.{service}[{i}].p: {} is not a probability (expected 0 to 1)",
                    c.p
                ));
            }
        }
    }
}

fn validate_load(p: &mut Problems, raw: &RawLoad, seed: u64) -> LoadSettings {
    let think_time = p.duration(
        "load.think_time",
        raw.think_time.as_deref().unwrap_or("250ms"),
        Duration::ZERO,
        Duration::from_secs(60),
    );
    let timeout = p.duration(
        "load.timeout",
        raw.timeout.as_deref().unwrap_or("5s"),
        Duration::from_millis(100),
        Duration::from_secs(120),
    );
    let mut mix: Vec<(String, f64)> = Vec::new();
    if raw.mix.is_empty() {
        mix = ROUTES.iter().map(|r| ((*r).to_string(), 1.0)).collect();
    }
    for (route, w) in &raw.mix {
        if !ROUTES.contains(&route.as_str()) {
            p.0.push(format!(
                "load.mix.{route}: unknown route (expected one of {ROUTES:?})"
            ));
        }
        if !w.is_finite() || *w < 0.0 {
            p.0.push(format!("load.mix.{route}: weight {w} must be >= 0"));
        }
        mix.push((route.clone(), *w));
    }
    if !raw.mix.is_empty() && raw.mix.values().filter(|w| w.is_finite()).sum::<f64>() <= 0.0 {
        p.0.push("load.mix: weights sum to zero".into());
    }
    LoadSettings {
        mode: raw.mode.unwrap_or(Mode::Closed),
        think_time,
        timeout,
        mix,
        seed,
    }
}

fn validate_phases(p: &mut Problems, raw: &[RawPhase], mesh: Option<&Topology>) -> Vec<Phase> {
    let mut names = HashSet::new();
    raw.iter()
        .enumerate()
        .map(|(i, ph)| {
            let key = format!("phases[{i}]");
            if ph.name.is_empty() || !names.insert(ph.name.clone()) {
                p.0.push(format!("{key}.name: {:?} is empty or repeated", ph.name));
            }
            let duration = p.duration(
                &format!("{key}.duration"),
                &ph.duration,
                Duration::from_secs(1),
                MAX_TOTAL,
            );
            p.profile(&key, &ph.profile);
            p.faults(&key, &ph.faults);
            validate_mesh_phase(p, &key, ph, mesh);
            if let Some(v) = &ph.version {
                if !safe_name(v) {
                    p.0.push(format!(
                        "{key}.version: {v:?} must be letters, digits, '-' or '_'"
                    ));
                }
            }
            Phase {
                name: ph.name.clone(),
                duration,
                profile: ph.profile.clone(),
                faults: ph.faults.clone(),
                version: ph.version.clone(),
                service_faults: ph.service_faults.clone(),
                calls: ph.calls.clone(),
            }
        })
        .collect()
}

fn validate_campaign(p: &mut Problems, raw: &RawCampaign) -> Campaign {
    let cooldown = p.duration(
        "regression.cooldown",
        raw.cooldown.as_deref().unwrap_or("4s"),
        Duration::ZERO,
        Duration::from_secs(600),
    );
    let mut ids = HashSet::new();
    let runs: Vec<Run> = raw
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let key = format!("regression.runs[{i}]");
            if !safe_name(&r.id) || !ids.insert(r.id.clone()) {
                p.0.push(format!("{key}.id: {:?} is repeated or not letters, digits, '-', '_'", r.id));
            }
            let duration = p.duration(&format!("{key}.duration"), &r.duration, Duration::from_secs(5), MAX_TOTAL);
            p.profile(&key, &r.profile);
            p.faults(&key, &r.faults);
            if r.faults.is_empty() != r.regressed.is_empty() {
                p.0.push(format!(
                    "{key}: faults and regressed go together (a degradation must say which KPIs it regresses)"
                ));
            }
            let version = r.version.clone().unwrap_or_else(|| "v1".into());
            if !safe_name(&version) {
                p.0.push(format!("{key}.version: {version:?} must be letters, digits, '-' or '_'"));
            }
            Run {
                id: r.id.clone(),
                version,
                profile: r.profile.clone(),
                duration,
                faults: r.faults.clone(),
                regressed: r.regressed.clone(),
            }
        })
        .collect();
    if runs.is_empty() {
        p.0.push("regression.runs: empty".into());
    }
    let index = |id: &str| runs.iter().position(|r| r.id == id);
    let mut pairs = Vec::new();
    for (i, [b, c]) in raw.pairs.iter().enumerate() {
        let key = format!("regression.pairs[{i}]");
        match (index(b), index(c)) {
            (Some(bi), Some(ci)) if bi == ci => {
                p.0.push(format!("{key}: a run cannot be its own baseline"))
            }
            (Some(bi), Some(ci)) => {
                if !runs[bi].faults.is_empty() {
                    p.0.push(format!(
                        "{key}: baseline {b:?} has faults (a baseline must be fault-free)"
                    ));
                }
                pairs.push((bi, ci));
            }
            (bi, ci) => {
                for (id, found) in [(b, bi), (c, ci)] {
                    if found.is_none() {
                        p.0.push(format!("{key}: unknown run {id:?}"));
                    }
                }
            }
        }
    }
    if raw.pairs.is_empty() {
        p.0.push("regression.pairs: empty".into());
    }
    Campaign {
        cooldown,
        runs,
        pairs,
    }
}
