#!/usr/bin/env python3
"""Lint kpiwatch's deployment artefacts: rules, dashboards, manifests, Helm chart.

Usage (scripts/check-deploy.sh runs all of it inside .venv-deploy):

    deploy_lint.py sync                      rewrite the copies from their sources
    deploy_lint.py kustomize DIR             render DIR's kustomization (no kubectl)
    deploy_lint.py selftest                  prove that `check` fails on known-bad changes
    deploy_lint.py check MANIFESTS... [--configs-out DIR] [--bad-values-out DIR]

`check` exits 1 with one line per problem. It checks that

* the copies of the alert rules (PrometheusRule object, Helm chart) and of the
  dashboards (Helm chart) equal their sources, and that the dashboards equal what
  deploy/grafana/generate.py writes;
* the dashboards are provisioning-ready (fixed uid, no numeric id or __inputs, every
  panel, query, variable and annotation takes its data source from the `datasource`
  variable, unique panel ids, panels on the 24-column grid without overlap) and show
  every metric kpiwatch exports;
* every PromQL expression of the rules (including queries inside annotation templates)
  and of the dashboards parses (promtool) and names only metrics kpiwatch exports or
  standard ones (`up`, `ALERTS`, ...);
* every alert has severity, summary, description and a runbook_url whose anchor is a
  heading of docs/deploy.md;
* the given rendered manifests (kustomize output) and the Helm chart rendered with its
  default and ci/ values pass kubernetes-validate (strict) for built-in kinds, the
  ServiceMonitor matches the Service, the PodMonitor the agent pods, the PrometheusRule
  equals the rule file, and the DaemonSet keeps its promises (non-root, read-only root,
  no capabilities, probes, NODE_NAME, resources); rendered once more with writeTokenSecret set, the config's
  server.write_token_file must be that Secret's `token` key, mounted read-only as a
  directory (not subPath, so that a rotated token reaches the agent); with webConfigSecret
  set (ci/web-config-values.yaml and a PodMonitor case), server.web_config_file must
  likewise be that Secret's `web.yml` key, the probes must be tcpSocket (an httpGet gets
  401 under basic auth) and the monitors must scrape with scheme https when
  webConfigTLS is true (and without it when false);
* every values file in helm/kpiwatch/tests/bad-values/ is rejected by Helm's schema
  validation and by `jsonschema`, and Helm's lint is clean.

With --configs-out it writes each rendered kpiwatch.yaml there (for `kpiwatch
check-config`); with --bad-values-out, each bad values file merged over values.yaml (for
check-jsonschema, which must reject them).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/rules/kpiwatch.rules.yml"
PROM_RULE = ROOT / "deploy/prometheus-operator/prometheusrule.yaml"
CHART = ROOT / "helm/kpiwatch"
GRAFANA = ROOT / "deploy/grafana"
DOCS = ROOT / "docs/deploy.md"
K8S_VERSIONS = ["1.27.0", "1.32.0"]

HISTOGRAMS = {
    "kpiwatch_query_duration_seconds",
    "kpiwatch_cycle_duration_seconds",
    "kpiwatch_inference_duration_seconds",
    "kpiwatch_regression_check_duration_seconds",
}
# What kpiwatch exports (the agent's contract). tests/it/docs.rs checks that this list,
# the README's metric tables and the source agree; tests/e2e.rs checks the running agent.
EXPORTED = {
    "kpiwatch_anomaly_score",
    "kpiwatch_anomaly",
    "kpiwatch_zscore_value",
    "kpiwatch_expected_value",
    "kpiwatch_expected_lower",
    "kpiwatch_expected_upper",
    "kpiwatch_uniad_reconstruction_error",
    "kpiwatch_uniad_metric_contribution",
    "kpiwatch_adsketch_distance",
    "kpiwatch_adsketch_match",
    "kpiwatch_adsketch_patterns",
    "kpiwatch_regression_probability",
    "kpiwatch_regression_p_value",
    "kpiwatch_regression_effect",
    "kpiwatch_regression",
    "kpiwatch_regression_insufficient_data",
    "kpiwatch_regression_baseline_info",
    "kpiwatch_regression_checks_total",
    "kpiwatch_regression_errors_total",
    "kpiwatch_regression_baseline_embeddings_total",
    "kpiwatch_build_info",
    "kpiwatch_query_errors_total",
    "kpiwatch_samples_fetched_total",
    "kpiwatch_cycles_total",
    "kpiwatch_cycle_overruns_total",
    "kpiwatch_last_successful_cycle_timestamp_seconds",
    "kpiwatch_entities",
    "kpiwatch_entities_stale",
    "kpiwatch_series",
    "kpiwatch_state_saves_total",
    "kpiwatch_state_last_save_timestamp_seconds",
    "kpiwatch_state_save_errors_total",
    "kpiwatch_config_reloads_total",
    "kpiwatch_config_last_reload_successful",
    # Beyond the design brief's list: self-metrics the agent also exports.
    "kpiwatch_query_retries_total",
    "kpiwatch_prometheus_warnings_total",
    "kpiwatch_detector_skipped_total",
    "kpiwatch_entities_expired_total",
    "kpiwatch_entities_dropped_total",
    "kpiwatch_queries_total",
    "kpiwatch_http_requests_refused_total",
    "kpiwatch_http_tls_handshakes_failed_total",
    "kpiwatch_web_config_reloads_total",
    "kpiwatch_web_config_last_reload_successful",
    "kpiwatch_scores_total",
    "kpiwatch_flags_total",
    "kpiwatch_level_shifts_total",
    "kpiwatch_seasonal_series_learned_total",
    "kpiwatch_rootcause_rank",
    "kpiwatch_rootcause_score",
    "kpiwatch_symptom",
    "kpiwatch_graph_nodes",
    "kpiwatch_graph_edges",
    "kpiwatch_graph_edges_unknown",
} | HISTOGRAMS
STANDARD = {
    "up",
    "ALERTS",
    "ALERTS_FOR_STATE",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}
ALLOWED = (
    EXPORTED
    | STANDARD
    | {h + s for h in HISTOGRAMS for s in ("_bucket", "_count", "_sum")}
)

AGGREGATORS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<dur>\d+(?:ms|s|m|h|d|w|y)(?:\d+(?:ms|s|m|h|d|w|y))*(?![a-zA-Z_]))
  | (?P<num>0x[0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
    """,
    re.X,
)


class Problems(list):
    def add(self, where: str, what: str) -> None:
        self.append(f"{where}: {what}")


# --- PromQL ---------------------------------------------------------------------------


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot tokenise at {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords)."""
    toks = tokens(expr)
    names: set[str] = set()
    brace = bracket = 0
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text == "{":
            brace += 1
        elif text == "}":
            brace -= 1
        elif text == "[":
            bracket += 1
        elif text == "]":
            bracket -= 1
        elif kind == "ident" and brace == 0 and bracket == 0:
            if text in LABEL_LIST_KEYWORDS and nxt == "(":
                depth, i = 0, i + 1
                while i < len(toks):  # skip the label list
                    depth += {"(": 1, ")": -1}.get(toks[i][1], 0)
                    if depth == 0:
                        break
                    i += 1
            elif nxt == "(" or text in KEYWORDS or (text in AGGREGATORS and nxt in ("by", "without")):
                pass  # a function, an aggregation or a keyword
            else:
                names.add(text)
        i += 1
    return names


GRAFANA_INTERVALS = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")
GRAFANA_VAR = re.compile(r"\$\{[a-zA-Z_][a-zA-Z0-9_]*(?::[a-z]+)?\}|\$[a-zA-Z_][a-zA-Z0-9_]*")


def concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced, so promtool can parse it."""
    expr = GRAFANA_INTERVALS.sub("5m", expr)
    return GRAFANA_VAR.sub("x", expr)


def check_promql(exprs: list[tuple[str, str]], problems: Problems) -> None:
    """Names must be known; syntax is checked by promtool on recording rules."""
    rules = []
    for n, (where, expr) in enumerate(exprs):
        try:
            unknown = metric_names(expr) - ALLOWED
        except ValueError as e:
            problems.add(where, str(e))
            continue
        for name in sorted(unknown):
            problems.add(where, f"metric {name!r} is neither exported by kpiwatch nor standard")
        rules.append({"record": f"lint:expr_{n}", "expr": expr})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exprs.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "lint", "rules": rules}]}))
        res = subprocess.run(["promtool", "check", "rules", "--lint=none", str(path)], capture_output=True, text=True)
        if res.returncode != 0:
            out = res.stdout + res.stderr
            for m in re.finditer(r"lint:expr_(\d+)", out):
                problems.add(exprs[int(m.group(1))][0], "promtool cannot parse the expression")
            problems.add("promql", "promtool check rules failed:\n" + out.strip())


# --- rules ------------------------------------------------------------------------------


def doc_anchors() -> set[str]:
    if not DOCS.exists():
        return set()
    anchors = set()
    for line in DOCS.read_text().splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def rule_exprs(rules: dict, src: str, problems: Problems) -> list[tuple[str, str]]:
    exprs = []
    anchors = doc_anchors()
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            where = f"{src}: {group['name']}/{name}"
            exprs.append((where, rule["expr"]))
            if "alert" not in rule:
                continue
            if rule.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
                problems.add(where, "severity label must be info, warning or critical")
            ann = rule.get("annotations", {})
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key):
                    problems.add(where, f"annotation {key} is missing")
            if DOCS.exists() and f"`{name}`" not in DOCS.read_text():
                problems.add(where, f"not listed in {DOCS.relative_to(ROOT)}")
            anchor = ann.get("runbook_url", "").partition("#")[2]
            if anchor not in anchors:
                problems.add(where, f"runbook anchor #{anchor} is not a heading of {DOCS.relative_to(ROOT)}")
            # Queries inside templates: {{ ... printf "EXPR" ... | query }}
            for text in ann.values():
                for m in re.finditer(r'printf\s+"((?:\\.|[^"\\])*)"[^}]*\|\s*query', text):
                    q = m.group(1).replace('\\"', '"').replace("%q", '"x"').replace("%s", "x")
                    exprs.append((where + " (annotation query)", q))
    return exprs


# --- dashboards -------------------------------------------------------------------------

DS_VAR = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"row", "timeseries", "stat", "table", "bargauge", "state-timeline", "gauge", "text", "heatmap"}


def walk_panels(panels: list[dict]):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def check_dashboard(path: Path, dash: dict, problems: Problems) -> list[tuple[str, str]]:
    where = str(path.relative_to(ROOT))
    exprs: list[tuple[str, str]] = []
    for key in ("uid", "title", "panels", "templating", "schemaVersion"):
        if key not in dash:
            problems.add(where, f"missing top-level {key!r}")
    if not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", str(dash.get("uid", ""))):
        problems.add(where, "uid must be 1-40 characters of [a-zA-Z0-9_-] (provisioning keys on it)")
    if dash.get("id") is not None:
        problems.add(where, "numeric id must be absent or null for provisioning")
    for key in ("__inputs", "__requires"):
        if key in dash:
            problems.add(where, f"{key} belongs to the import format, not provisioning")
    variables = dash.get("templating", {}).get("list", [])
    ds_vars = [v for v in variables if v.get("type") == "datasource"]
    if not any(v.get("name") == "datasource" and v.get("query") == "prometheus" for v in ds_vars):
        problems.add(where, "needs a datasource variable named 'datasource' of type prometheus")
    for v in variables:
        if v.get("type") == "query":
            if v.get("datasource") != DS_VAR:
                problems.add(where, f"variable {v.get('name')}: datasource must be {DS_VAR}")
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q or ""
            m = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]\w*\)", q.strip())
            if m:
                exprs.append((f"{where}: variable {v['name']}", concrete(m.group(1))))
            elif not re.fullmatch(r"label_values\(\s*[a-zA-Z_]\w*\s*\)", q.strip()):
                exprs.append((f"{where}: variable {v['name']}", concrete(q)))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("builtIn"):
            continue
        if a.get("datasource") != DS_VAR:
            problems.add(where, f"annotation {a.get('name')}: datasource must be {DS_VAR}")
        if a.get("expr"):
            exprs.append((f"{where}: annotation {a.get('name')}", concrete(a["expr"])))
    ids: set[int] = set()
    boxes: list[tuple[str, int, int, int, int]] = []
    for p in walk_panels(dash.get("panels", [])):
        pw = f"{where}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("type") not in PANEL_TYPES:
            problems.add(pw, f"unexpected panel type {p.get('type')!r}")
        if not isinstance(p.get("id"), int) or p["id"] in ids:
            problems.add(pw, "panel ids must be unique integers")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["x"] < 0 or g["x"] + g["w"] > 24:
            problems.add(pw, f"gridPos {g} is not on the 24-column grid")
            continue
        for other, x, y, w, h in boxes:
            if g["x"] < x + w and x < g["x"] + g["w"] and g["y"] < y + h and y < g["y"] + g["h"]:
                problems.add(pw, f"overlaps {other}")
        boxes.append((pw, g["x"], g["y"], g["w"], g["h"]))
        if p.get("type") in ("row", "text"):
            continue
        if not p.get("title"):
            problems.add(pw, "panel without a title")
        elif DOCS.exists() and f"| {p['title']} |" not in DOCS.read_text():
            problems.add(pw, f"not listed in {DOCS.relative_to(ROOT)}'s panel tables")
        if p.get("datasource") != DS_VAR:
            problems.add(pw, f"datasource must be {DS_VAR}")
        targets = p.get("targets", [])
        if not targets:
            problems.add(pw, "panel without queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            problems.add(pw, "duplicate refId")
        for t in targets:
            if t.get("datasource") != DS_VAR:
                problems.add(pw, f"query {t.get('refId')}: datasource must be {DS_VAR}")
            if not t.get("expr"):
                problems.add(pw, f"query {t.get('refId')}: empty expr")
            else:
                exprs.append((f"{pw} query {t.get('refId')}", concrete(t["expr"])))
    # Any other data source reference (a name or a fixed uid) breaks provisioning.
    for ds in datasource_refs(dash):
        if ds != DS_VAR:
            problems.add(where, f"hard-coded datasource {json.dumps(ds)}")
    return exprs


def datasource_refs(node):
    """Every value under a "datasource" key, except the datasource variable's own query."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource":
                yield v
            else:
                yield from datasource_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from datasource_refs(v)


def check_dashboards(problems: Problems) -> list[tuple[str, str]]:
    exprs: list[tuple[str, str]] = []
    paths = sorted(GRAFANA.glob("*.json"))
    if not paths:
        problems.add("deploy/grafana", "no dashboards")
    uids = {}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(GRAFANA / "generate.py"), tmp], check=True, capture_output=True)
        generated = {p.name for p in Path(tmp).glob("*.json")}
        if generated != {p.name for p in paths}:
            problems.add("deploy/grafana", f"files differ from generate.py's: {sorted(generated)}")
        for path in paths:
            gen = Path(tmp) / path.name
            if gen.exists() and gen.read_text() != path.read_text():
                problems.add(str(path.relative_to(ROOT)), "differs from `python3 deploy/grafana/generate.py` output")
    for path in paths:
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            problems.add(str(path.relative_to(ROOT)), f"invalid JSON: {e}")
            continue
        if dash.get("uid") in uids:
            problems.add(path.name, f"uid {dash['uid']} also used by {uids[dash['uid']]}")
        uids[dash.get("uid")] = path.name
        exprs += check_dashboard(path, dash, problems)
    shown: set[str] = set()
    for _, e in exprs:
        shown |= {re.sub(r"_(bucket|count|sum)$", "", n) for n in metric_names(e)}
    for name in sorted(EXPORTED - shown):
        problems.add("deploy/grafana", f"no dashboard shows {name}")
    return exprs


# --- copies -----------------------------------------------------------------------------


def prometheus_rule_object(rules: dict) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "kpiwatch",
            "namespace": "kpiwatch",
            "labels": {"app.kubernetes.io/name": "kpiwatch", "release": "kube-prometheus-stack"},
        },
        "spec": rules,
    }


PROM_RULE_HEADER = (
    "# Generated from deploy/rules/kpiwatch.rules.yml by `scripts/deploy_lint.py sync`;\n"
    "# edit that file instead. The `release` label must match your Prometheus object's\n"
    "# ruleSelector (kube-prometheus-stack selects its own release name).\n"
)


def copies() -> list[tuple[Path, Path]]:
    pairs = [(RULES, CHART / "files/kpiwatch.rules.yml")]
    pairs += [(p, CHART / "dashboards" / p.name) for p in sorted(GRAFANA.glob("*.json"))]
    return pairs


def sync() -> int:
    for src, dst in copies():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        print(f"copied {src.relative_to(ROOT)} -> {dst.relative_to(ROOT)}")
    rules = yaml.safe_load(RULES.read_text())
    PROM_RULE.write_text(PROM_RULE_HEADER + yaml.safe_dump(prometheus_rule_object(rules), sort_keys=False, width=100))
    print(f"wrote {PROM_RULE.relative_to(ROOT)}")
    return 0


def check_copies(problems: Problems) -> None:
    for src, dst in copies():
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            problems.add(str(dst.relative_to(ROOT)), f"differs from {src.relative_to(ROOT)} (run scripts/deploy_lint.py sync)")
    chart_dash = {p.name for p in (CHART / "dashboards").glob("*.json")}
    if chart_dash != {p.name for p in GRAFANA.glob("*.json")}:
        problems.add("helm/kpiwatch/dashboards", "holds other dashboards than deploy/grafana")


# --- manifests --------------------------------------------------------------------------


def check_daemonset(where: str, ds: dict, problems: Problems, web_config: bool = False) -> None:
    """``web_config``: the agent's config sets server.web_config_file."""
    spec = ds["spec"]["template"]["spec"]
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.add(where, "pod must set runAsNonRoot and seccompProfile RuntimeDefault")
    agent = next((c for c in spec["containers"] if c["name"] == "kpiwatch"), None)
    if agent is None:
        problems.add(where, "no container named kpiwatch")
        return
    sc = agent.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.add(where, "root filesystem must be read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.add(where, "allowPrivilegeEscalation must be false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
        problems.add(where, "all capabilities must be dropped and none added")
    probes = {
        "livenessProbe": "/-/healthy",
        "readinessProbe": "/-/ready",
    }
    ports = {p.get("name") for p in agent.get("ports", [])} | {p.get("containerPort") for p in agent.get("ports", [])}
    for probe, path in probes.items():
        if web_config:
            # Basic auth may guard every path, and kubelet probes cannot send it.
            if agent.get(probe, {}).get("tcpSocket", {}).get("port") not in ports or "httpGet" in agent.get(probe, {}):
                problems.add(where, f"{probe} must be a tcpSocket probe of the agent's port with server.web_config_file (an httpGet gets 401 under basic auth)")
        elif agent.get(probe, {}).get("httpGet", {}).get("path") != path:
            problems.add(where, f"{probe} must GET {path}")
    res = agent.get("resources", {})
    for kind in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(res.get(kind, {})):
            problems.add(where, f"resources.{kind} must set cpu and memory")
    env = {e["name"]: e for e in agent.get("env", [])}
    if env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "spec.nodeName":
        problems.add(where, "NODE_NAME must come from the downward API (spec.nodeName)")
    args = agent.get("args", [])
    if not args or args[0] != "run" or "--config=/etc/kpiwatch/kpiwatch.yaml" not in args:
        problems.add(where, "args must be `run --config=/etc/kpiwatch/kpiwatch.yaml ...`")
    mounts = {m["mountPath"]: m["name"] for m in agent.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for path in ("/etc/kpiwatch", "/var/lib/kpiwatch", "/tmp"):
        if mounts.get(path) not in volumes:
            problems.add(where, f"{path} must be mounted from a volume (the root filesystem is read-only)")
    state = volumes.get(mounts.get("/var/lib/kpiwatch", ""), {})
    if not ({"emptyDir", "hostPath"} & set(state)):
        problems.add(where, "the state volume must be an emptyDir or a hostPath")


def check_manifests(docs: list[dict], src: str, problems: Problems, configs_out: Path | None, tag: str) -> None:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        where = f"{src}: {d['kind']}/{d['metadata']['name']}"
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        import kubernetes_validate as kv

        for version in K8S_VERSIONS:
            try:
                kv.validate(d, version, strict=True)
            except kv.ValidationError as e:
                problems.add(where, f"invalid for Kubernetes {version}: {str(e).splitlines()[0]}")
            except kv.SchemaNotFoundError:
                problems.add(where, f"no schema for {d['apiVersion']} {d['kind']} in Kubernetes {version}")
    for kind in ("ConfigMap", "DaemonSet", "ServiceAccount"):
        if kind not in by_kind:
            problems.add(src, f"no {kind}")
    configs = [c for c in by_kind.get("ConfigMap", []) if "kpiwatch.yaml" in c.get("data", {})]
    web_config = any((yaml.safe_load(c["data"]["kpiwatch.yaml"]).get("server") or {}).get("web_config_file") for c in configs)
    for ds in by_kind.get("DaemonSet", []):
        check_daemonset(f"{src}: DaemonSet/{ds['metadata']['name']}", ds, problems, web_config)
    if len(configs) != 1:
        problems.add(src, "expected exactly one ConfigMap with a kpiwatch.yaml key")
    for cm in configs:
        cfg = yaml.safe_load(cm["data"]["kpiwatch.yaml"])
        port = int(str(cfg.get("server", {}).get("listen", ":9847")).rpartition(":")[2])
        for ds in by_kind.get("DaemonSet", []):
            agent = ds["spec"]["template"]["spec"]["containers"][0]
            if agent["ports"][0]["containerPort"] != port:
                problems.add(src, f"container port {agent['ports'][0]['containerPort']} != server.listen port {port}")
        if configs_out:
            configs_out.mkdir(parents=True, exist_ok=True)
            (configs_out / f"{tag}.yaml").write_text(cm["data"]["kpiwatch.yaml"])
    services = [
        (svc["metadata"].get("labels", {}), {p.get("name") for p in svc["spec"]["ports"]})
        for svc in by_kind.get("Service", [])
    ]
    for sm in by_kind.get("ServiceMonitor", []):
        check_monitor(f"{src}: ServiceMonitor/{sm['metadata']['name']}", sm, "endpoints", services, "Service", problems)
    pods = [
        (pod["metadata"].get("labels", {}), {p.get("name") for c in pod["spec"]["containers"] for p in c.get("ports", [])})
        for pod in (ds["spec"]["template"] for ds in by_kind.get("DaemonSet", []))
    ]
    for pm in by_kind.get("PodMonitor", []):
        check_monitor(f"{src}: PodMonitor/{pm['metadata']['name']}", pm, "podMetricsEndpoints", pods, "agent pod", problems)
    rules = yaml.safe_load(RULES.read_text())
    for pr in by_kind.get("PrometheusRule", []):
        if pr["spec"] != rules:
            problems.add(f"{src}: PrometheusRule/{pr['metadata']['name']}", "spec differs from deploy/rules/kpiwatch.rules.yml")


def check_monitor(
    where: str,
    monitor: dict,
    endpoints_key: str,
    targets: list[tuple[dict, set]],
    what: str,
    problems: Problems,
) -> None:
    """A ServiceMonitor (targets: the Services) or PodMonitor (the agent pods) must select
    a target, name one of its ports, honour the score series' labels and come out as
    job="kpiwatch". ``targets``: (labels, port names) of each candidate."""
    sel = monitor["spec"]["selector"]["matchLabels"]
    chosen = [(labels, ports) for labels, ports in targets if sel.items() <= labels.items()]
    if not chosen:
        problems.add(where, f"selects no {what}")
    ports = set().union(*(p for _, p in chosen))
    for ep in monitor["spec"][endpoints_key]:
        if ep.get("port") not in ports:
            problems.add(where, f"endpoint port {ep.get('port')!r} is not a port of the selected {what}s")
        if ep.get("honorLabels") is not True:
            problems.add(where, "honorLabels must be true (score series carry entity labels)")
    job_label = monitor["spec"].get("jobLabel")
    if any(labels.get(job_label) != "kpiwatch" for labels, _ in chosen):
        problems.add(where, "job label must come out as job=\"kpiwatch\" (the health alerts select it)")


WRITE_TOKEN_SECRET = "kpiwatch-write-token"
WEB_CONFIG_SECRET = "kpiwatch-web"
# Values naming a Secret whose file the agent's config points at: (config key under
# server, the Secret's key). The file exists only in the pod, so `kpiwatch check-config`
# cannot run on such a config here.
SECRET_FILES = {
    "writeTokenSecret": ("write_token_file", "token"),
    "webConfigSecret": ("web_config_file", "web.yml"),
}


def check_secret_file(docs: list[dict], src: str, value: str, secret: str, problems: Problems) -> None:
    """With writeTokenSecret (webConfigSecret), server.write_token_file (web_config_file)
    must be the Secret's `token` (`web.yml`) key, mounted read-only as a directory (a
    subPath mount never sees a rotated token or certificate)."""
    config_key, secret_key = SECRET_FILES[value]
    for cm in (d for d in docs if d["kind"] == "ConfigMap" and "kpiwatch.yaml" in d.get("data", {})):
        path = (yaml.safe_load(cm["data"]["kpiwatch.yaml"]).get("server") or {}).get(config_key)
        if not path:
            problems.add(src, f"{value} is set but the config has no server.{config_key}")
            continue
        for ds in (d for d in docs if d["kind"] == "DaemonSet"):
            where = f"{src}: DaemonSet/{ds['metadata']['name']}"
            spec = ds["spec"]["template"]["spec"]
            agent = next((c for c in spec["containers"] if c["name"] == "kpiwatch"), {})
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            found = False
            for m in agent.get("volumeMounts", []):
                sec = volumes.get(m["name"], {}).get("secret", {})
                if sec.get("secretName") != secret:
                    continue
                if m.get("subPath"):
                    problems.add(where, f"the Secret {secret} is mounted with subPath: an updated Secret never reaches the agent")
                if m.get("readOnly") is not True:
                    problems.add(where, f"the Secret {secret} must be mounted read-only")
                try:
                    rel = str(PurePosixPath(path).relative_to(m["mountPath"]))
                except ValueError:
                    continue
                items = {i["path"]: i["key"] for i in sec.get("items", [])}
                found |= items.get(rel, rel if not items else None) == secret_key
            if not found:
                problems.add(where, f"server.{config_key} {path} is not the `{secret_key}` key of the mounted Secret {secret}")


def check_monitor_scheme(docs: list[dict], src: str, https: bool, problems: Problems) -> None:
    """With a web config that has TLS the agent serves HTTPS only: every monitor
    endpoint must say scheme https; without TLS, plain HTTP."""
    for d in docs:
        endpoints = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}.get(d["kind"])
        for ep in d["spec"][endpoints] if endpoints else []:
            if (ep.get("scheme", "http").lower() == "https") != https:
                problems.add(f"{src}: {d['kind']}/{d['metadata']['name']}", f"scheme must be {'https: the web config has TLS' if https else 'http: the agent serves no TLS'} (webConfigSecret, webConfigTLS)")


def deep_merge(base: dict, over: dict) -> dict:
    """Helm's values merge: maps merge recursively, anything else replaces, null deletes."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def check_helm(problems: Problems, configs_out: Path | None, bad_out: Path | None) -> None:
    import helm_python as helm
    import jsonschema

    chart = helm.Chart.load(str(CHART))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    cases = [("default", {})] + [(p.stem, yaml.safe_load(p.read_text())) for p in sorted((CHART / "ci").glob("*.yaml"))]
    # Rendered and validated, but their configs are not written out (SECRET_FILES).
    cases.append(("writeTokenSecret", {"writeTokenSecret": WRITE_TOKEN_SECRET}))
    # ci/web-config-values.yaml covers the ServiceMonitor; this the PodMonitor.
    cases.append((
        "webConfigSecret-podMonitor",
        {"webConfigSecret": WEB_CONFIG_SECRET, "service": {"enabled": False}, "podMonitor": {"enabled": True}},
    ))
    kinds_seen: set[str] = set()
    for name, values in cases:
        src = f"helm template ({name} values)"
        try:
            rendered = chart.render(values, name="kpiwatch", namespace="kpiwatch", is_install=True)
        except helm.HelmError as e:
            problems.add(src, f"does not render: {e}")
            continue
        docs = []
        for tpl, text in rendered.items():
            if tpl.endswith("NOTES.txt"):
                continue
            try:
                docs += [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d]
            except yaml.YAMLError as e:
                problems.add(f"{src}: {tpl}", f"renders invalid YAML: {e}")
        kinds_seen |= {d["kind"] for d in docs}
        secret_files = [v for v in SECRET_FILES if values.get(v)]
        check_manifests(docs, src, problems, None if secret_files else configs_out, f"helm-{name}")
        for value in secret_files:
            check_secret_file(docs, src, value, values[value], problems)
        merged = deep_merge(defaults, values)
        check_monitor_scheme(docs, src, bool(merged.get("webConfigSecret") and merged.get("webConfigTLS")), problems)
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        if kind not in kinds_seen:
            problems.add("helm/kpiwatch/ci", f"no values file renders a {kind}")
    report = helm.lint(str(CHART), strict=True)
    for msg in report.get("messages", []):
        if msg.get("severity", 0) >= 2:
            problems.add("helm lint", f"{msg.get('path')}: {msg.get('error')}")
    for err in report.get("errors", []):
        problems.add("helm lint", str(err))
    bad_files = sorted((CHART / "tests/bad-values").glob("*.yaml"))
    if not bad_files:
        problems.add("helm/kpiwatch/tests/bad-values", "no bad values files")
    for path in bad_files:
        where = str(path.relative_to(ROOT))
        over = yaml.safe_load(path.read_text())
        try:
            chart.validate_schema(over)
            problems.add(where, "Helm's schema validation accepts it")
        except helm.HelmError:
            pass
        try:
            chart.render(over, name="kpiwatch", namespace="kpiwatch", is_install=True)
            problems.add(where, "helm template renders it")
        except helm.HelmError:
            pass
        merged = deep_merge(defaults, over)
        if not list(jsonschema.Draft7Validator(schema).iter_errors(merged)):
            problems.add(where, "jsonschema accepts it (merged over values.yaml)")
        if bad_out:
            bad_out.mkdir(parents=True, exist_ok=True)
            (bad_out / path.name).write_text(yaml.safe_dump(merged))
    if list(jsonschema.Draft7Validator(schema).iter_errors(defaults)):
        problems.add("helm/kpiwatch/values.yaml", "does not satisfy values.schema.json")


# --- fallback kustomize ---------------------------------------------------------------

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def kustomize(directory: Path) -> list[dict]:
    """The subset of kustomize that deploy/ uses (resources, namespace, labels, images),
    for machines without kubectl; check-deploy.sh prefers `kubectl kustomize`."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
    if unknown:
        raise SystemExit(f"{directory}: fallback renderer does not support {sorted(unknown)}")
    docs: list[dict] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            docs += kustomize(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for d in docs:
        meta = d.setdefault("metadata", {})
        if k.get("namespace") and d["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = k["namespace"]
        for entry in k.get("labels", []):
            meta.setdefault("labels", {}).update(entry.get("pairs", {}))
        pod = d.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            for img in k.get("images", []):
                if c["image"].split(":")[0] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img.get('newTag', 'latest')}"
    return docs


# --- self-test --------------------------------------------------------------------------

# (file, old text, new text, a problem `check` must then report)
MUTATIONS = [
    ("deploy/grafana/kpiwatch-agent.json", '"expr": "sum(up{', '"expr": "sum(node_load1{', "metric 'node_load1' is neither"),
    ("deploy/grafana/kpiwatch-anomalies.json", '"uid": "${datasource}"', '"uid": "P1809F7CD0C75ACF3"', "hard-coded datasource"),
    ("deploy/grafana/kpiwatch-regressions.json", '"uid": "kpiwatch-regressions"', '"uid": "kpiwatch-regressions", "id": 7', "numeric id"),
    ("deploy/rules/kpiwatch.rules.yml", "kpiwatch_regression == 1", "kpiwatch_regresion == 1", "'kpiwatch_regresion' is neither"),
    ("deploy/rules/kpiwatch.rules.yml", "docs/deploy.md#kpiwatchdown", "docs/deploy.md#nowhere", "#nowhere is not a heading"),
    ("deploy/rules/kpiwatch.rules.yml", "          severity: critical", "          severity: page", "severity label"),
    ("helm/kpiwatch/templates/daemonset.yaml", "path: /-/ready", "path: /-/healthy", "readinessProbe must GET /-/ready"),
    ("helm/kpiwatch/templates/daemonset.yaml", "- --config=/etc/kpiwatch/kpiwatch.yaml", "- --config=/kpiwatch.yaml", "args must be"),
    ("helm/kpiwatch/values.yaml", "  readOnlyRootFilesystem: true", "  readOnlyRootFilesystem: false", "root filesystem must be read-only"),
    ("helm/kpiwatch/values.yaml", "  honorLabels: true", "  honorLabels: false", "honorLabels must be true"),
    ("helm/kpiwatch/values.schema.json", '"enum": [\n        "text",', '"enum": [\n        "xml",\n        "text",', "log-format.yaml: Helm's schema validation accepts it"),
    ("helm/kpiwatch/templates/_helpers.tpl", '(include "kpiwatch.writeTokenFile" .)', '"/etc/kpiwatch/token"', "is not the `token` key of the mounted Secret"),
    ("helm/kpiwatch/templates/_helpers.tpl", '(include "kpiwatch.webConfigFile" .)', '"/etc/kpiwatch/web.yml"', "is not the `web.yml` key of the mounted Secret"),
    ("helm/kpiwatch/templates/daemonset.yaml", "          livenessProbe:\n            tcpSocket:\n", "          livenessProbe:\n            httpGet:\n              path: /-/healthy\n", "livenessProbe must be a tcpSocket probe"),
    ("helm/kpiwatch/templates/_helpers.tpl", "{{- if and .Values.webConfigSecret .Values.webConfigTLS -}}https", "{{- if false -}}https", "ServiceMonitor/kpiwatch: scheme must be https"),
    ("helm/kpiwatch/templates/podmonitor.yaml", "      scheme: https", "      scheme: http", "PodMonitor/kpiwatch: scheme must be https"),
    ("helm/kpiwatch/values.schema.json", '"minimum": 1024', '"minimum": 1', "max-response-bytes.yaml: Helm's schema validation accepts it"),
    ("helm/kpiwatch/templates/servicemonitor.yaml", "    - port: metrics", "    - port: web", "'web' is not a port of the selected Services"),
    ("helm/kpiwatch/templates/podmonitor.yaml", "    - port: metrics", "    - port: http", "'http' is not a port of the selected agent pods"),
    ("helm/kpiwatch/templates/podmonitor.yaml", "jobLabel: app.kubernetes.io/name", "jobLabel: app.kubernetes.io/component", "PodMonitor/kpiwatch: job label must come out"),
    ("helm/kpiwatch/templates/service.yaml", "port: {{ .Values.port }}", "port: {{ .Values.port | quote }}", "invalid for Kubernetes"),
    ("docs/deploy.md", "| Anomaly flags |", "| Flags |", "not listed in docs/deploy.md's panel tables"),
]


def selftest() -> int:
    """Applies each mutation to a copy of the tree and expects `check` to report it."""
    failures = 0
    for rel, old, new, expect in MUTATIONS:
        with tempfile.TemporaryDirectory() as tmp:
            for part in ("deploy", "helm", "docs", "scripts"):
                shutil.copytree(ROOT / part, Path(tmp) / part, ignore=shutil.ignore_patterns("__pycache__"))
            target = Path(tmp) / rel
            text = target.read_text()
            if old not in text:
                print(f"FAIL selftest: {rel} no longer contains {old!r}; update MUTATIONS")
                failures += 1
                continue
            target.write_text(text.replace(old, new, 1))
            if rel.startswith("deploy/grafana/"):  # keep the generator in step
                shutil.copyfile(target, Path(tmp) / "helm/kpiwatch/dashboards" / target.name)
            res = subprocess.run(
                [sys.executable, str(Path(tmp) / "scripts/deploy_lint.py"), "check"],
                capture_output=True,
                text=True,
            )
            if res.returncode == 0 or expect not in res.stdout:
                print(f"FAIL selftest: {rel}: {old!r} -> {new!r} was not reported as {expect!r}")
                failures += 1
            else:
                print(f"ok: {rel}: {new!r} reported ({expect})")
    print(f"deploy_lint selftest: {len(MUTATIONS)} mutations, {failures} not caught")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("sync")
    sub.add_parser("selftest", help="check that `check` catches known-bad mutations")
    kus = sub.add_parser("kustomize", help="render a kustomization without kubectl")
    kus.add_argument("directory", type=Path)
    chk = sub.add_parser("check")
    chk.add_argument("manifests", nargs="*", type=Path, help="rendered kustomize output files")
    chk.add_argument("--configs-out", type=Path)
    chk.add_argument("--bad-values-out", type=Path)
    chk.add_argument("--no-helm", action="store_true", help="skip the Helm chart checks")
    args = ap.parse_args()
    if args.cmd == "sync":
        return sync()
    if args.cmd == "selftest":
        return selftest()
    if args.cmd == "kustomize":
        print(yaml.safe_dump_all(kustomize(args.directory), sort_keys=False), end="")
        return 0
    problems = Problems()
    check_copies(problems)
    rules = yaml.safe_load(RULES.read_text())
    exprs = rule_exprs(rules, str(RULES.relative_to(ROOT)), problems)
    exprs += check_dashboards(problems)
    check_promql(exprs, problems)
    for path in args.manifests:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        check_manifests(docs, path.name, problems, args.configs_out, path.stem)
    if not args.no_helm:
        check_helm(problems, args.configs_out, args.bad_values_out)
    for p in problems:
        print(f"FAIL {p}")
    print(f"deploy_lint: {len(exprs)} PromQL expressions, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
