#!/usr/bin/env python3
"""Write kpiwatch's Grafana dashboards (deploy/grafana/*.json) from this description.

Run `python3 deploy/grafana/generate.py` after editing; `scripts/check-deploy.sh` fails
when the committed JSON differs from what this script writes, and
`scripts/deploy_lint.py` checks the structure and every PromQL expression.

The dashboards are provisioning-ready: fixed `uid`, no numeric `id`, no `__inputs`
(the import-only form), and every panel and query takes its data source from the
`datasource` variable, so they work unchanged with any Prometheus data source name.
Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}


def datasource_var() -> dict:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_var(name: str, label: str, query: str, multi: bool = True) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-var"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "options": [],
    }


def target(expr: str, legend: str = "__auto", instant: bool = False, ref: str = "A") -> dict:
    t = {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "range": not instant,
        "instant": instant,
    }
    if instant:
        t["format"] = "table"
    return t


class Layout:
    """Places panels left to right on Grafana's 24-column grid, with unique ids."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: dict, w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel["datasource"] = DS
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _newline(self) -> None:
        self.y += self.row_h
        self.x = 0
        self.row_h = 0

    def _id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def timeseries(
    title: str,
    desc: str,
    targets: list[dict],
    unit: str = "short",
    threshold_line: float | None = None,
    stack: bool = False,
) -> dict:
    custom: dict = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    defaults: dict = {"unit": unit, "custom": custom}
    if threshold_line is not None:
        custom["thresholdsStyle"] = {"mode": "line+area"}
        defaults["thresholds"] = thresholds((None, "transparent"), (threshold_line, "red"))
    if stack:
        custom["stacking"] = {"mode": "normal", "group": "A"}
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"displayMode": "table", "placement": "right", "calcs": ["max", "lastNotNull"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def band_panel(title: str, desc: str, selector: str) -> dict:
    """The expected value as a line and its band as two dashed edges, per series."""
    panel = timeseries(
        title,
        desc,
        [
            target(f"kpiwatch_expected_lower{selector}", legend="lower", ref="A"),
            target(f"kpiwatch_expected_upper{selector}", legend="upper", ref="B"),
            target(f"kpiwatch_expected_value{selector}", legend="expected", ref="C"),
        ],
    )
    dashed = {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}
    panel["fieldConfig"]["overrides"] = [
        {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": [dashed]}
        for ref in ("A", "B")
    ]
    return panel


def state_timeline(title: str, desc: str, targets: list[dict], ok: str, bad: str) -> dict:
    return {
        "type": "state-timeline",
        "title": title,
        "description": desc,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": thresholds((None, "green"), (1, "red")),
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": ok, "color": "green", "index": 0},
                            "1": {"text": bad, "color": "red", "index": 1},
                        },
                    }
                ],
            },
            "overrides": [],
        },
        "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.8, "legend": {"showLegend": False}},
    }


def table(title: str, desc: str, targets: list[dict], hide: list[str] | None = None) -> dict:
    exclude = {name: True for name in ["Time", "__name__"] + (hide or [])}
    return {
        "type": "table",
        "title": title,
        "description": desc,
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": [{"id": "organize", "options": {"excludeByName": exclude}}],
    }


def bargauge(title: str, desc: str, targets: list[dict], unit: str = "short", red_at: float | None = None) -> dict:
    defaults: dict = {"unit": unit, "min": 0}
    if red_at is not None:
        defaults["thresholds"] = thresholds((None, "green"), (red_at, "red"))
    return {
        "type": "bargauge",
        "title": title,
        "description": desc,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"orientation": "horizontal", "displayMode": "gradient", "reduceOptions": {"calcs": ["lastNotNull"], "values": False}},
    }


def stat(title: str, desc: str, targets: list[dict], unit: str = "short", red_at: float | None = None) -> dict:
    defaults: dict = {"unit": unit}
    if red_at is not None:
        defaults["thresholds"] = thresholds((None, "green"), (red_at, "red"))
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "values": False}, "colorMode": "background"},
    }


def dashboard(uid: str, title: str, desc: str, variables: list[dict], layout: Layout) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["kpiwatch"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {
            "list": [
                {
                    "name": "kpiwatch alerts",
                    "datasource": DS,
                    "enable": True,
                    "iconColor": "red",
                    "expr": 'ALERTS{alertname=~"Kpiwatch.*", alertstate="firing"}',
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{group}} {{detector}} {{interface}}",
                    "step": "1m",
                }
            ]
        },
        "links": [{"title": "kpiwatch", "type": "dashboards", "tags": ["kpiwatch"], "asDropdown": True}],
        "templating": {"list": [datasource_var(), *variables]},
        "panels": layout.panels,
    }


# --- the dashboards --------------------------------------------------------------------

SEL = 'group=~"$group"'
SCORE_SEL = 'group=~"$group", detector=~"$detector"'


def anomalies() -> dict:
    lay = Layout()
    lay.row("Scores")
    lay.add(
        timeseries(
            "Anomaly score per entity",
            "kpiwatch_anomaly_score of every entity: 1.0 (the red line) is the detector's "
            "threshold, above it the entity is anomalous.",
            [target(f"kpiwatch_anomaly_score{{{SCORE_SEL}}}")],
            threshold_line=1.0,
        ),
        w=16,
        h=9,
    )
    lay.add(
        bargauge(
            "Highest scores now",
            "The 15 entities with the highest score at the end of the range.",
            [target(f"topk(15, kpiwatch_anomaly_score{{{SCORE_SEL}}})", instant=True)],
            red_at=1.0,
        ),
        w=8,
        h=9,
    )
    lay.add(
        state_timeline(
            "Anomaly flags",
            "kpiwatch_anomaly per entity and detector: red while the score is above threshold.",
            [target(f"kpiwatch_anomaly{{{SCORE_SEL}}}")],
            ok="normal",
            bad="anomalous",
        ),
        w=24,
        h=8,
    )
    lay.add(
        bargauge(
            "Noisiest entities (flags per 1,000 scored points, 1 d)",
            "1000 * increase(kpiwatch_flags_total[1d]) / increase(kpiwatch_scores_total[1d]) per "
            "entity and detector: the share of points scored above 1. With the default risk "
            "(0.001) a normal entity stays near 1; an entity far above it pages often and is "
            "worth retuning or muting (README, \"A noisy entity\").",
            [
                target(
                    f"topk(15, 1000 * increase(kpiwatch_flags_total{{{SCORE_SEL}}}[1d]) "
                    f"/ increase(kpiwatch_scores_total{{{SCORE_SEL}}}[1d]))",
                    instant=True,
                )
            ],
            red_at=20.0,
        ),
        w=24,
        h=8,
    )
    lay.row("Uni-AD: which metric")
    lay.add(
        bargauge(
            "Top contributing metrics",
            "Each metric's term of the Uni-AD score (eq. 7): the metrics that explain the "
            "current score.",
            [target(f"topk(10, kpiwatch_uniad_metric_contribution{{{SEL}}})", instant=True)],
        ),
        w=8,
        h=9,
    )
    lay.add(
        timeseries(
            "Metric contributions over time",
            "Uni-AD per-metric contributions of the 10 largest series over the range.",
            [target(f"topk(10, kpiwatch_uniad_metric_contribution{{{SEL}}})")],
        ),
        w=8,
        h=9,
    )
    lay.add(
        timeseries(
            "Reconstruction error",
            "Raw Uni-AD reconstruction error per entity (the score before the threshold).",
            [target(f"kpiwatch_uniad_reconstruction_error{{{SEL}}}")],
        ),
        w=8,
        h=9,
    )
    lay.row("Robust z-score")
    lay.add(
        timeseries(
            "Robust z-score per metric",
            "(x - median) / (1.4826 MAD) of each metric at the last step.",
            [target(f"kpiwatch_zscore_value{{{SEL}}}")],
        ),
        w=24,
        h=8,
    )
    lay.add(
        band_panel(
            "Expected value and band per metric",
            "kpiwatch_expected_value and the band (kpiwatch_expected_lower, kpiwatch_expected_upper) "
            "inside which the z-score detector's score of the metric stays at or below 1, in the "
            "metric's own units: the seasonal baseline's expectation when the group has "
            "seasonality, else the history's median. Pick one metric with the Metric variable.",
            f'{{{SEL}, metric=~"$metric"}}',
        ),
        w=24,
        h=9,
    )
    lay.row("ADSketch patterns")
    lay.add(
        table(
            "Current pattern matches",
            "The pattern each series matches now, its kind (normal or abnormal) and the "
            "issue labels people attached to it.",
            [target(f"kpiwatch_adsketch_match{{{SEL}}}", instant=True)],
            hide=["Value"],
        ),
        w=12,
        h=9,
    )
    lay.add(
        timeseries(
            "Abnormal matches",
            "Number of series matching an abnormal pattern, per issue label.",
            [target(f'count by (group, issue) (kpiwatch_adsketch_match{{{SEL}, kind="abnormal"}})', legend="{{group}} {{issue}}")],
        ),
        w=12,
        h=9,
    )
    lay.add(
        timeseries(
            "Distance to nearest pattern",
            "Euclidean distance of the latest subsequence to its nearest pattern.",
            [target(f"kpiwatch_adsketch_distance{{{SEL}}}")],
        ),
        w=16,
        h=8,
    )
    lay.add(
        stat(
            "Patterns",
            "Patterns kpiwatch knows, by kind.",
            [target(f"sum by (kind) (kpiwatch_adsketch_patterns{{{SEL}}})", legend="{{kind}}")],
        ),
        w=8,
        h=8,
    )
    lay.row("Service graph")
    lay.add(
        bargauge(
            "Probable root causes",
            "Groups with graph: the anomalous entities by root-cause rank (1 = the most "
            "probable origin of the incident; docs/graph.md). Empty when nothing is anomalous.",
            [target('sort(kpiwatch_rootcause_rank{group=~"$group"})', instant=True)],
        ),
        w=8,
        h=8,
    )
    lay.add(
        table(
            "Symptoms and their causes",
            "Entities anomalous only because an anomalous dependency (cause) is: their "
            "anomaly alerts are held back while the cause alerts.",
            [target('kpiwatch_symptom{group=~"$group"}', instant=True)],
            hide=["Value"],
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Root-cause score",
            "The ranking's share of the evidence that each anomalous entity is the origin "
            "(sums to 1 over the anomalous entities of a group).",
            [target('kpiwatch_rootcause_score{group=~"$group"} > 0')],
        ),
        w=8,
        h=8,
    )
    lay.row("Alerts")
    lay.add(
        table(
            "Firing kpiwatch alerts",
            "Alerts from deploy/rules/kpiwatch.rules.yml that fire now.",
            [target('ALERTS{alertname=~"Kpiwatch.*", alertstate="firing"}', instant=True)],
            hide=["Value", "alertstate"],
        ),
        w=24,
        h=8,
    )
    variables = [
        query_var("group", "Group", "label_values(kpiwatch_anomaly_score, group)"),
        query_var("detector", "Detector", 'label_values(kpiwatch_anomaly_score{group=~"$group"}, detector)'),
        query_var("metric", "Metric", 'label_values(kpiwatch_expected_value{group=~"$group"}, metric)'),
    ]
    return dashboard(
        "kpiwatch-anomalies",
        "kpiwatch / Anomalies",
        "Anomaly scores, flags and explanations (Uni-AD contributions, ADSketch patterns) per entity.",
        variables,
        lay,
    )


def regressions() -> dict:
    lay = Layout()
    sel = 'interface=~"$interface"'
    ri = "$__rate_interval"
    lay.add(
        stat(
            "Interfaces regressed now",
            "Interfaces whose regression flag is 1.",
            [target(f"count(kpiwatch_regression{{{sel}}} == 1) or vector(0)", legend="regressed")],
            red_at=1,
        ),
        w=6,
        h=5,
    )
    insufficient_now = stat(
        "Interfaces with insufficient data now",
        "Interfaces with a KPI that cannot be judged (window shorter than min_window, too "
        "many gaps, no load): their flag is NaN, never 0.",
        [target(f"count(kpiwatch_regression_insufficient_data{{{sel}}} == 1) or vector(0)", legend="insufficient data")],
    )
    insufficient_now["fieldConfig"]["defaults"]["thresholds"] = thresholds((None, "green"), (1, "orange"))
    lay.add(insufficient_now, w=6, h=5)
    lay.add(
        table(
            "Baselines",
            "The baseline each interface is compared with (mode: version change, day/week "
            "before, pinned).",
            [target(f"kpiwatch_regression_baseline_info{{{sel}}}", instant=True)],
            hide=["Value"],
        ),
        w=12,
        h=5,
    )
    lay.add(
        state_timeline(
            "Regression flag per interface",
            "kpiwatch_regression: red while any KPI of the interface is judged regressed, "
            "whatever the method; empty while the data is insufficient (NaN).",
            [target(f"kpiwatch_regression{{{sel}}}", legend="{{interface}}")],
            ok="ok",
            bad="regressed",
        ),
        w=24,
        h=8,
    )
    insufficient = state_timeline(
        "Insufficient data per interface",
        "kpiwatch_regression_insufficient_data: orange while some KPI of the interface cannot "
        "be judged (window too short, gaps, no load).",
        [target(f"kpiwatch_regression_insufficient_data{{{sel}}}", legend="{{interface}}")],
        ok="judged",
        bad="insufficient data",
    )
    defaults = insufficient["fieldConfig"]["defaults"]
    defaults["thresholds"] = thresholds((None, "green"), (1, "orange"))
    defaults["mappings"][0]["options"]["1"]["color"] = "orange"
    lay.add(insufficient, w=24, h=6)
    lay.add(
        timeseries(
            "Regression probability per interface and KPI",
            "Siamese method only: P(regression) per KPI (kpiwatch_regression_probability). "
            "A KPI counts as regressed at or above regressions.threshold; the line is the "
            "default, 0.5. Empty with ks or mwu: see the p-values.",
            [target(f"kpiwatch_regression_probability{{{sel}}}", legend="{{interface}} {{kpi}}")],
            unit="percentunit",
            threshold_line=0.5,
        ),
        w=24,
        h=10,
    )
    lay.add(
        bargauge(
            "Probability now",
            "Siamese method only: latest P(regression) per interface and KPI.",
            [target(f"sort_desc(kpiwatch_regression_probability{{{sel}}})", legend="{{interface}} {{kpi}}", instant=True)],
            unit="percentunit",
            red_at=0.5,
        ),
        w=24,
        h=8,
    )
    p_values = timeseries(
        "p-value per interface and KPI",
        "matched, ks and mwu methods: p-value of each KPI's test (kpiwatch_regression_p_value), "
        "log scale. A KPI counts as regressed below regressions.alpha; the red area is "
        "under the default, 0.05. Empty with the siamese method: see the probabilities.",
        [target(f"kpiwatch_regression_p_value{{{sel}}}", legend="{{interface}} {{kpi}}")],
    )
    custom = p_values["fieldConfig"]["defaults"]["custom"]
    custom["scaleDistribution"] = {"type": "log", "log": 10}
    custom["thresholdsStyle"] = {"mode": "line+area"}
    p_values["fieldConfig"]["defaults"]["thresholds"] = thresholds((None, "red"), (0.05, "transparent"))
    p_values["fieldConfig"]["defaults"]["max"] = 1
    lay.add(p_values, w=24, h=10)
    lay.add(
        timeseries(
            "Change at matched load",
            "Any method: each KPI's current value over the baseline's at the same workload, "
            "minus 1 (kpiwatch_regression_effect; +18% = 18% higher). Response time up, "
            "throughput or success rate down is worse. Missing where the two windows' loads "
            "overlap too little to compare.",
            [target(f"kpiwatch_regression_effect{{{sel}}}", legend="{{interface}} {{kpi}}")],
            unit="percentunit",
        ),
        w=24,
        h=10,
    )
    lay.add(
        timeseries(
            "Regression checks by result",
            "Interface checks per second: normal, regression, insufficient_data, error "
            "(all interfaces, scheduled and on-demand checks).",
            [target(f"sum by (result) (rate(kpiwatch_regression_checks_total[{ri}]))", legend="{{result}}")],
            unit="ops",
            stack=True,
        ),
        w=12,
        h=8,
    )
    lay.add(
        timeseries(
            "Regression check errors by cause",
            "Failed checks per second (kpiwatch_regression_errors_total): a query cause "
            "(timeout, connect, http_4xx, ...), series, out_of_range, model or task. "
            "KpiwatchRegressionErrors fires when they recur.",
            [target(f"sum by (cause) (rate(kpiwatch_regression_errors_total[{ri}]))", legend="{{cause}}")],
            unit="ops",
            stack=True,
        ),
        w=12,
        h=8,
    )
    lay.add(
        timeseries(
            "Regression check duration",
            "p50 and p99 of one interface check, fetch and comparison together "
            "(kpiwatch_regression_check_duration_seconds). A rising p99 with the siamese "
            "method while baselines are computed is expected after a deployment.",
            [
                target(
                    f"histogram_quantile(0.5, sum by (le) (rate(kpiwatch_regression_check_duration_seconds_bucket[{ri}])))",
                    legend="p50",
                ),
                target(
                    f"histogram_quantile(0.99, sum by (le) (rate(kpiwatch_regression_check_duration_seconds_bucket[{ri}])))",
                    legend="p99",
                    ref="B",
                ),
            ],
            unit="s",
        ),
        w=12,
        h=8,
    )
    lay.add(
        timeseries(
            "Baseline embeddings: cache hits and computations",
            "Siamese baseline embeddings per second by source "
            "(kpiwatch_regression_baseline_embeddings_total): `cache` reuses the embedding of "
            "an unchanged baseline window, `computed` encodes it anew (after a deployment "
            "or a restart).",
            [
                target(
                    f"sum by (source) (rate(kpiwatch_regression_baseline_embeddings_total[{ri}]))",
                    legend="{{source}}",
                )
            ],
            unit="ops",
            stack=True,
        ),
        w=12,
        h=8,
    )
    variables = [query_var("interface", "Interface", "label_values(kpiwatch_regression, interface)")]
    return dashboard(
        "kpiwatch-regressions",
        "kpiwatch / Performance regressions",
        "DynamicRegress: regression flags per interface, the per-KPI evidence of the method "
        "(siamese probabilities, ks/mwu p-values), insufficient data and failing checks.",
        variables,
        lay,
    )


def agent() -> dict:
    lay = Layout()
    s = 'job=~"$job", instance=~"$instance"'
    ri = "$__rate_interval"
    lay.row("Agents")
    lay.add(stat("Agents up", "Scraped kpiwatch agents that answer.", [target(f'sum(up{{{s}}})', legend="up")]), w=4, h=5)
    lay.add(
        table("Versions", "kpiwatch_build_info of every agent.", [target(f"kpiwatch_build_info{{{s}}}", instant=True)], hide=["Value"]),
        w=10,
        h=5,
    )
    lay.add(
        stat(
            "Config reload OK",
            "kpiwatch_config_last_reload_successful (0 = the last reload was rejected) and "
            "kpiwatch_web_config_last_reload_successful (0 = a change to the web config or "
            "its certificates was rejected).",
            [
                target(f"min(kpiwatch_config_last_reload_successful{{{s}}})", legend="config"),
                target(f"min(kpiwatch_web_config_last_reload_successful{{{s}}})", legend="web config", ref="B"),
            ],
        ),
        w=5,
        h=5,
    )
    lay.add(
        stat(
            "Since last state save",
            "Age of the newest saved state.",
            [target(f"time() - max(kpiwatch_state_last_save_timestamp_seconds{{{s}}})", legend="age")],
            unit="s",
        ),
        w=5,
        h=5,
    )
    lay.row("Cycles")
    lay.add(
        timeseries(
            "Cycles by result",
            "Cycles per second per group, ok and error.",
            [target(f"sum by (group, result) (rate(kpiwatch_cycles_total{{{s}}}[{ri}]))", legend="{{group}} {{result}}")],
            unit="ops",
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Cycle duration p50 / p99",
            "From the kpiwatch_cycle_duration_seconds histogram.",
            [
                target(
                    f"histogram_quantile(0.99, sum by (group, le) (rate(kpiwatch_cycle_duration_seconds_bucket{{{s}}}[{ri}])))",
                    legend="p99 {{group}}",
                ),
                target(
                    f"histogram_quantile(0.5, sum by (group, le) (rate(kpiwatch_cycle_duration_seconds_bucket{{{s}}}[{ri}])))",
                    legend="p50 {{group}}",
                    ref="B",
                ),
            ],
            unit="s",
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Since last successful cycle",
            "Seconds since each group's last successful cycle (KpiwatchCycleStale fires above 900).",
            [target(f"time() - kpiwatch_last_successful_cycle_timestamp_seconds{{{s}}}", legend="{{instance}} {{group}}")],
            unit="s",
            threshold_line=900,
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Overruns",
            "Ticks skipped because the previous cycle was still running.",
            [target(f"sum by (group) (rate(kpiwatch_cycle_overruns_total{{{s}}}[{ri}]))", legend="{{group}}")],
            unit="ops",
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Entities, stale entities and series",
            "What each group tracks.",
            [
                target(f"sum by (group) (kpiwatch_entities{{{s}}})", legend="entities {{group}}"),
                target(f"sum by (group) (kpiwatch_entities_stale{{{s}}})", legend="stale {{group}}", ref="B"),
                target(f"sum by (group) (kpiwatch_series{{{s}}})", legend="series {{group}}", ref="C"),
            ],
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Inference duration p99",
            "From kpiwatch_inference_duration_seconds, per detector.",
            [
                target(
                    f"histogram_quantile(0.99, sum by (detector, le) (rate(kpiwatch_inference_duration_seconds_bucket{{{s}}}[{ri}])))",
                    legend="{{detector}}",
                )
            ],
            unit="s",
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Detector skips by reason",
            "Entities a detector could not score: warming_up, no_data, inference.",
            [target(f"sum by (detector, reason) (rate(kpiwatch_detector_skipped_total{{{s}}}[{ri}]))", legend="{{detector}} {{reason}}")],
            unit="ops",
            stack=True,
        ),
        w=12,
        h=8,
    )
    lay.add(
        timeseries(
            "Entities expired",
            "Entities dropped after being absent for expire_after, per group.",
            [target(f"sum by (group) (increase(kpiwatch_entities_expired_total{{{s}}}[{ri}]))", legend="{{group}}")],
        ),
        w=12,
        h=8,
    )
    lay.add(
        timeseries(
            "Entities refused at max_entities",
            "New entities not tracked because the group already tracks max_entities "
            "(kpiwatch_entities_dropped_total, counted once per cycle they appear in). "
            "Anything above zero: a label explosion or a group past its sizing.",
            [target(f"sum by (group) (increase(kpiwatch_entities_dropped_total{{{s}}}[{ri}]))", legend="{{group}}")],
        ),
        w=12,
        h=8,
    )
    lay.add(
        timeseries(
            "Seasonal baselines: learned and level shifts",
            "Series whose seasonal baseline was learned from Prometheus history at start, and "
            "level shifts the baselines adopted after seasonality_adapt_after (each also logged "
            "with its entity, metric and change), per group.",
            [
                target(f"sum by (group) (increase(kpiwatch_seasonal_series_learned_total{{{s}}}[{ri}]))", legend="{{group}} learned", ref="A"),
                target(f"sum by (group) (increase(kpiwatch_level_shifts_total{{{s}}}[{ri}]))", legend="{{group}} level shifts", ref="B"),
            ],
        ),
        w=12,
        h=8,
    )
    lay.add(
        timeseries(
            "Service graph: nodes, edges, edges to unknown services",
            "Groups with graph: services and edges of the last cycle, and edges with an end "
            "that is no entity of the group (a service not monitored, or a node_label that "
            "does not match the edge labels; near 0 when the graph is well configured).",
            [
                target(f"max by (group) (kpiwatch_graph_nodes{{{s}}})", legend="{{group}} nodes", ref="A"),
                target(f"max by (group) (kpiwatch_graph_edges{{{s}}})", legend="{{group}} edges", ref="B"),
                target(f"max by (group) (kpiwatch_graph_edges_unknown{{{s}}})", legend="{{group}} edges to unknown", ref="C"),
            ],
        ),
        w=12,
        h=8,
    )
    lay.row("Prometheus queries")
    lay.add(
        timeseries(
            "Query duration p99",
            "kpiwatch_query_duration_seconds per API endpoint.",
            [
                target(
                    f"histogram_quantile(0.99, sum by (endpoint, le) (rate(kpiwatch_query_duration_seconds_bucket{{{s}}}[{ri}])))",
                    legend="{{endpoint}}",
                )
            ],
            unit="s",
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Query errors by cause",
            "timeout, connect, http_4xx, http_429, http_5xx, decode, too_large, prometheus_error.",
            [target(f"sum by (cause) (rate(kpiwatch_query_errors_total{{{s}}}[{ri}]))", legend="{{cause}}")],
            unit="ops",
            stack=True,
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Samples fetched",
            "Samples per second read from Prometheus.",
            [target(f"sum by (instance) (rate(kpiwatch_samples_fetched_total{{{s}}}[{ri}]))", legend="{{instance}}")],
            unit="ops",
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Query failure ratio",
            "Failed queries (after retries) / queries, each query counted once however many "
            "attempts it took: what KpiwatchQueryErrors alerts on above 5%.",
            [
                target(
                    f"sum by (instance) (rate(kpiwatch_query_errors_total{{{s}}}[{ri}])) / "
                    f"sum by (instance) (rate(kpiwatch_queries_total{{{s}}}[{ri}]))",
                    legend="{{instance}}",
                )
            ],
            unit="percentunit",
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Query retries by cause",
            "Failed attempts that were retried (errors counts only queries that failed after retries).",
            [target(f"sum by (cause) (rate(kpiwatch_query_retries_total{{{s}}}[{ri}]))", legend="{{cause}}")],
            unit="ops",
            stack=True,
        ),
        w=8,
        h=8,
    )
    lay.add(
        timeseries(
            "Prometheus warnings",
            "Warnings Prometheus returned with query results (also logged by the agent).",
            [target(f"sum by (instance) (rate(kpiwatch_prometheus_warnings_total{{{s}}}[{ri}]))", legend="{{instance}}")],
            unit="ops",
        ),
        w=8,
        h=8,
    )
    lay.row("State and configuration")
    lay.add(
        timeseries(
            "State saves by result",
            "kpiwatch_state_saves_total: success and failure; kpiwatch_state_save_errors_total: failures by cause (read_only, no_space, locked, ...). A failed save keeps the previous state file.",
            [
                target(f"sum by (result) (increase(kpiwatch_state_saves_total{{{s}}}[{ri}]))", legend="{{result}}"),
                target(f"sum by (cause) (increase(kpiwatch_state_save_errors_total{{{s}}}[{ri}]))", legend="failure: {{cause}}", ref="B"),
            ],
        ),
        w=12,
        h=7,
    )
    lay.add(
        timeseries(
            "Config reloads by result",
            "kpiwatch_config_reloads_total: accepted and rejected reloads.",
            [target(f"sum by (result) (increase(kpiwatch_config_reloads_total{{{s}}}[{ri}]))", legend="{{result}}")],
        ),
        w=12,
        h=7,
    )
    lay.add(
        timeseries(
            "Requests refused, TLS handshakes failed, web config changes",
            "kpiwatch_http_requests_refused_total: requests refused for a missing or wrong bearer "
            "token on writes (server.write_token_file, or its file unreadable) or missing or wrong "
            "basic auth credentials (server.web_config_file). "
            "kpiwatch_http_tls_handshakes_failed_total: connections lost in the TLS handshake "
            "(an untrusting scraper, plain HTTP on the TLS port, an expired certificate). "
            "kpiwatch_web_config_reloads_total: changes of the web config or its certificates, "
            "adopted or rejected (the previous settings stay).",
            [
                target(f"sum by (reason) (increase(kpiwatch_http_requests_refused_total{{{s}}}[{ri}]))", legend="refused: {{reason}}"),
                target(f"sum(increase(kpiwatch_http_tls_handshakes_failed_total{{{s}}}[{ri}]))", legend="TLS handshakes failed", ref="B"),
                target(f"sum by (result) (increase(kpiwatch_web_config_reloads_total{{{s}}}[{ri}]))", legend="web config: {{result}}", ref="C"),
            ],
        ),
        w=24,
        h=7,
    )
    variables = [
        query_var("job", "Job", "label_values(kpiwatch_build_info, job)"),
        query_var("instance", "Agent", 'label_values(kpiwatch_build_info{job=~"$job"}, instance)'),
    ]
    return dashboard(
        "kpiwatch-agent",
        "kpiwatch / Agent",
        "Self-monitoring of the kpiwatch agents: cycles, queries, inference, state.",
        variables,
        lay,
    )


DASHBOARDS = {
    "kpiwatch-anomalies.json": anomalies,
    "kpiwatch-regressions.json": regressions,
    "kpiwatch-agent.json": agent,
}


def render(build) -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else HERE
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, build in DASHBOARDS.items():
        (out_dir / name).write_text(render(build))
        print(f"wrote {out_dir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
