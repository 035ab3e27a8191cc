"""Real lab load-test pairs (tests/data/lab/regress/) and their fixed split.

The lab campaign (`config/lab/regress-campaign.yaml`) has 18 runs; every pair is
(baseline run, current run) of one route, and all four routes of a run were recorded
at the same time. To keep leakage out, the split is by **current run**: every pair whose
current window comes from a run in TEST_RUNS is in the held-out test set (never trained
on, never used for model selection), whatever its route or baseline. The four baseline
runs (`base-*`, fault-free) appear as baselines on both sides; their windows carry no
degradation. VAL_RUNS are used for model selection (with the simulated validation split).

KPI labels that the recording does not show (evidence in models/regress.md) are left out
of *training* only (INVISIBLE); the test set keeps every label as recorded.
"""
from __future__ import annotations

import csv
import pathlib

import numpy as np

import features

KPIS = ("response_time", "throughput", "success_rate")
COLS = {"response_time": "rt_regressed", "throughput": "tps_regressed", "success_rate": "sr_regressed"}
LAB = pathlib.Path(__file__).resolve().parents[3] / "tests" / "data" / "lab" / "regress"

TEST_RUNS = (
    "base-log-30", "norm-steps-30", "norm-const-30",  # normal: other profile / duration / version
    "reg-latency-const-30", "reg-dependency-log-30", "reg-subtle-errors-log-45", "reg-gross-const-30",
)
VAL_RUNS = ("norm-log-45", "reg-cpu-const-30")
# (current run, kpi): injected, labelled regressed, but not visible in the recording.
INVISIBLE = {("reg-subtle-ramp-45", "response_time")}


def read(path: pathlib.Path) -> dict:
    with path.open() as f:
        rows = list(csv.DictReader(f))

    def col(name):
        return np.array([float(r[name]) if r[name] not in ("", "NaN", "nan") else np.nan for r in rows])

    return {k: col(k) for k in ("timestamp", "workload", *KPIS)}


def split_of(current_stem: str) -> str:
    run = current_stem.split("__")[0]
    if run in TEST_RUNS:
        return "test"
    if run in VAL_RUNS:
        return "val"
    return "train"


def load(split: str, lab: pathlib.Path = LAB, drop_invisible: bool = False) -> dict:
    """KPI pairs of one split ('train', 'val', 'test' or 'all'), in dataset.load's layout,
    plus 'pair_id', 'route' and 'skipped' (windows with < 20 usable rows)."""
    with (lab / "pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    out = {"b": [], "c": [], "raw_b": [], "raw_c": [], "label": [], "kpi": [], "pair": [],
           "pair_id": [], "route": [], "skipped": 0}
    for i, p in enumerate(pairs):
        if split != "all" and split_of(p["current"]) != split:
            continue
        b = read(lab / f"{p['baseline']}.csv")
        c = read(lab / f"{p['current']}.csv")
        for ki, kpi in enumerate(KPIS):
            if drop_invisible and (p["current"].split("__")[0], kpi) in INVISIBLE:
                continue
            wb, kb = features.clean(b, kpi)
            wc, kc = features.clean(c, kpi)
            if min(len(kb), len(kc)) < 20 or wb.max() <= 0 or wc.max() <= 0:
                out["skipped"] += 1
                continue
            fb, fc = features.pair_features(b, c, kpi)
            out["b"].append(fb)
            out["c"].append(fc)
            out["raw_b"].append(kb)
            out["raw_c"].append(kc)
            out["label"].append(int(p[COLS[kpi]]))
            out["kpi"].append(ki)
            out["pair"].append(i)
            out["pair_id"].append(p["pair_id"])
            out["route"].append(p["current"].split("__")[1])
    for k in ("label", "kpi", "pair"):
        out[k] = np.array(out[k], dtype=np.int64)
    return out


if __name__ == "__main__":
    for s in ("train", "val", "test"):
        d = load(s)
        print(s, "pairs", len(set(d["pair"].tolist())), "kpi pairs", len(d["label"]),
              "regressed", int(d["label"].sum()), "skipped", d["skipped"])
