#!/usr/bin/env python3
"""Regression judges on the lab's recorded load-test pairs, through `kpiwatch regress`.

Protocol: docs/regression-judging.md (written before the held-out pairs were scored).

    cargo build --release
    python3 scripts/regress_study.py --select          # choose min_effect on the selection runs
    python3 scripts/regress_study.py [--json out.json] # score the held-out runs

The split is the Siamese model's (`models/train/regress/labdata.py`, by current run):
TEST_RUNS are held out, everything else is the selection set. Every KPI of every pair
is one sample; a KPI the method could not judge counts as not flagged. Standard library
only.
"""
from __future__ import annotations

import argparse
import ast
import csv
import json
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAB = ROOT / "tests" / "data" / "lab" / "regress"
BIN = ROOT / "target" / "release" / "kpiwatch"
KPIS = ("response_time", "throughput", "success_rate")
LABEL = {"response_time": "rt_regressed", "throughput": "tps_regressed", "success_rate": "sr_regressed"}
GRID = {
    "response_time": (0.02, 0.05, 0.10, 0.15, 0.20),
    "throughput": (0.02, 0.05, 0.10, 0.15, 0.20),
    "success_rate": (0.005, 0.01, 0.02, 0.05),
}
ALPHA = 0.05


def split_runs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """TEST_RUNS and VAL_RUNS, read from labdata.py (one definition of the split)."""
    tree = ast.parse((ROOT / "models" / "train" / "regress" / "labdata.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in ("TEST_RUNS", "VAL_RUNS"):
                found[node.targets[0].id] = ast.literal_eval(node.value)
    return found["TEST_RUNS"], found["VAL_RUNS"]


def run(pair: dict, method: str, extra: list[str]) -> dict:
    cmd = [str(BIN), "regress", "--baseline", str(LAB / f"{pair['baseline']}.csv"),
           "--current", str(LAB / f"{pair['current']}.csv"), "--method", method,
           "--model", str(ROOT / "models"), *extra]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode not in (0, 3, 4):
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr}")
    return json.loads(out.stdout)


def judge_all(pairs: list[dict], method: str, extra: list[str] = ()) -> list[dict]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda p: run(p, method, list(extra)), pairs))


def samples(pairs, reports, flag=lambda kpi, o: bool(o.get("regression"))):
    """(kpi, label, flagged, outcome, pair) per KPI pair."""
    out = []
    for p, r in zip(pairs, reports):
        for kpi in KPIS:
            o = r["kpis"][kpi]
            out.append((kpi, int(p[LABEL[kpi]]), flag(kpi, o), o, p))
    return out


def prf(rows) -> dict:
    tp = sum(1 for r in rows if r[1] and r[2])
    fp = sum(1 for r in rows if not r[1] and r[2])
    fn = sum(1 for r in rows if r[1] and not r[2])
    p = tp / (tp + fp) if tp + fp else 0.0
    rc = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * rc / (p + rc) if p + rc else 0.0
    return {"p": round(p, 3), "r": round(rc, 3), "f1": round(f1, 3), "tp": tp, "fp": fp, "fn": fn}


def worse_by(kpi: str, effect: float) -> float:
    return effect if kpi == "response_time" else -effect


def matched_flag(min_effect: dict):
    def flag(kpi, o):
        e, p = o.get("effect"), o.get("p_value")
        return e is not None and p is not None and p < ALPHA and worse_by(kpi, e) >= min_effect[kpi]
    return flag


def profile(run_id: str) -> str:
    return run_id.split("-")[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--select", action="store_true", help="choose min_effect on the selection runs")
    ap.add_argument("--json", type=pathlib.Path, help="write the figures here")
    args = ap.parse_args()
    if not BIN.exists():
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    test_runs, _ = split_runs()
    with (LAB / "pairs.csv").open() as f:
        every = list(csv.DictReader(f))
    held_out = [p for p in every if p["current"].split("__")[0] in test_runs]
    selection = [p for p in every if p["current"].split("__")[0] not in test_runs]

    if args.select:
        zero = ["--min-effect", "response_time=0,throughput=0,success_rate=0"]
        rows = samples(selection, judge_all(selection, "matched", zero))
        chosen = {}
        for kpi in KPIS:
            mine = [r for r in rows if r[0] == kpi]
            scores = []
            for me in GRID[kpi]:
                f = matched_flag({kpi: me})
                s = prf([(k, y, f(k, o), o, p) for k, y, _, o, p in mine])
                scores.append((s["f1"], me, s))
                print(f"{kpi:13} min_effect {me:<6} {s}")
            best = max(scores, key=lambda t: (t[0], t[1]))
            chosen[kpi] = best[1]
        print(f"selection pairs {len(selection)}, chosen min_effect: {chosen}")
        return

    results = {}
    reports = {m: judge_all(held_out, m) for m in ("siamese", "matched", "ks", "mwu")}
    per = {m: samples(held_out, r) for m, r in reports.items()}
    both = [(k, y, f and g[2], o, p) for (k, y, f, o, p), g in zip(per["siamese"], per["matched"])]
    either = [(k, y, f or g[2], o, p) for (k, y, f, o, p), g in zip(per["siamese"], per["matched"])]
    fallback = [(k, y, g[2] if g[3].get("regression") is not None else f, o, p)
                for (k, y, f, o, p), g in zip(per["siamese"], per["matched"])]
    per["siamese and matched"] = both
    per["siamese or matched"] = either
    per["matched, else siamese"] = fallback
    print(f"held-out: {len(held_out)} pairs, {len(per['ks'])} KPI pairs, "
          f"{sum(r[1] for r in per['ks'])} regressed")
    print(f"{'method':22} {'P':>6} {'R':>6} {'F1':>6}   F1 RT / TPS / SR      normal pairs of other load profiles flagged")
    for m, rows in per.items():
        overall = prf(rows)
        by_kpi = {k: prf([r for r in rows if r[0] == k]) for k in KPIS}
        normal_other = {}
        for r in rows:
            b_run, c_run = r[4]["baseline"].split("__")[0], r[4]["current"].split("__")[0]
            if r[4]["label"] == "0" and profile(b_run) != profile(c_run):
                normal_other.setdefault(r[4]["pair_id"], False)
                normal_other[r[4]["pair_id"]] |= r[2]
        share = sum(normal_other.values()) / max(1, len(normal_other))
        results[m] = {"overall": overall, "by_kpi": by_kpi,
                      "normal_other_profile_flagged": [sum(normal_other.values()), len(normal_other)]}
        print(f"{m:22} {overall['p']:6.3f} {overall['r']:6.3f} {overall['f1']:6.3f}   "
              f"{by_kpi['response_time']['f1']:.3f} / {by_kpi['throughput']['f1']:.3f} / "
              f"{by_kpi['success_rate']['f1']:.3f}   {sum(normal_other.values())} of {len(normal_other)} ({share:.0%})")
    unjudged = sum(1 for r in per["matched"] if r[3].get("regression") is None)
    print(f"matched could not judge {unjudged} KPI pairs")
    results["matched_unjudged"] = unjudged
    errors = [(r[4]["pair_id"], r[4]["baseline"], r[4]["current"], r[0], r[1], r[3].get("effect"), r[3].get("p_value"))
              for r in per["matched"] if r[1] != r[2]]
    print("matched errors (pair, baseline, current, kpi, label, effect, p):")
    for e in errors:
        print("  ", e)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
