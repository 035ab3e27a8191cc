#!/usr/bin/env python3
"""With and without the seasonal baseline: false alarms, flag precision/recall/F1, PR-AUC.

Runs `kpiwatch detect zscore` and `kpiwatch detect uniad` at their defaults over the NAB
subset (seasonal: realTraffic, realTweets, realAdExchange; other: artificial) and Yahoo
A1, each series once without and once with `--seasonality` (1d,1w for NAB's Unix
timestamps, 24s,168s for Yahoo's hour indices), and prints one row per detector, data set
and setting. Protocol: docs/seasonality.md. Standard library only.

    cargo build --release
    python3 scripts/seasonality_study.py --json /tmp/seasonal.json
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from false_alarm_study import ROOT, measure, nab_series, yahoo_series  # noqa: E402

SEASONAL_NAB = ("realTraffic/", "realTweets/", "realAdExchange/")
SETTINGS = {
    "nab": ["--seasonality", "1d,1w"],
    "yahoo_a1": ["--seasonality", "24s,168s", "--seasonality-adapt-after", "3s"],
}


def data_sets(tmp):
    out = []
    for _, name, path in nab_series(tmp):
        label = "nab seasonal" if name.startswith(SEASONAL_NAB) else "nab other"
        out.append((label, "nab", name, path))
    for _, name, path in yahoo_series():
        out.append(("yahoo_a1", "yahoo_a1", name, path))
    return out


def row(det, ds, setting, rs):
    fa = [r["fa_per_1000"] for r in rs]
    worst = max(fa)
    anomalous = sum(r["anomalous_points"] for r in rs)
    true_flags = sum(r["true_flags"] for r in rs)
    flags = true_flags + sum(r["false_flags"] for r in rs)
    recall = true_flags / anomalous if anomalous else float("nan")
    precision = true_flags / flags if flags else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    aucs = [r["pr_auc"] for r in rs if r["pr_auc"] is not None]
    auc = statistics.mean(aucs) if aucs else float("nan")
    return (
        f"| {det} | {ds} | {setting} | {len(rs)} | {statistics.median(fa):.1f} | {worst:.1f} | "
        f"{sum(r['false_flags'] for r in rs)} | {precision:.3f} | {recall:.3f} | {f1:.3f} | {auc:.3f} |"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kpiwatch", default=os.path.join(ROOT, "target", "release", "kpiwatch"))
    p.add_argument("--detectors", default="zscore,uniad")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", help="write every series' figures here")
    args = p.parse_args()
    if not os.path.exists(args.kpiwatch):
        sys.exit(f"{args.kpiwatch} not found: run `cargo build --release` first")
    with tempfile.TemporaryDirectory() as tmp:
        series = data_sets(tmp)
        jobs = [
            (d, label, source, name, path, setting)
            for d in args.detectors.split(",")
            for label, source, name, path in series
            for setting in ("off", "on")
        ]
        results = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {
                pool.submit(
                    measure, args.kpiwatch, d, label, name, path,
                    SETTINGS[source] if setting == "on" else [],
                ): setting
                for d, label, source, name, path, setting in jobs
            }
            for i, f in enumerate(concurrent.futures.as_completed(futures), 1):
                r = f.result()
                r["seasonality"] = futures[f]
                results.append(r)
                if sys.stderr.isatty() or i == len(jobs):
                    end = "\n" if i == len(jobs) else ""
                    print(f"\r{i}/{len(jobs)} runs done", end=end, file=sys.stderr, flush=True)
    groups = {}
    for r in results:
        groups.setdefault((r["detector"], r["dataset"], r["seasonality"]), []).append(r)
    print(
        "| detector | data set | seasonality | series | false flags / 1,000 normal: median | worst "
        "| false flags (all) | flag precision | flag recall | flag F1 | mean PR-AUC |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (det, ds, setting), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "off")):
        print(row(det, ds, setting, rs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(sorted(results, key=lambda r: (r["detector"], r["dataset"], r["series"], r["seasonality"])), f, indent=1)


if __name__ == "__main__":
    main()
