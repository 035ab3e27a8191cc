#!/usr/bin/env python3
"""False alarms per 1,000 normal points, flag recall and PR-AUC of the offline detectors.

Runs `kpiwatch detect zscore` and `kpiwatch detect uniad` at their defaults (one series per
entity, as a new user would) over every series of the NAB subset and Yahoo A1 in
../shared/datasets (or any directory of labelled CSVs given with --csv-dir) and prints,
per detector and data set, the median and the worst series' false flags per 1,000 normal
points, the pooled flag recall, the share of labelled segments with at least one flag and
the mean PR-AUC of the score. Protocol: docs/false-alarms.md. Standard library only.

    cargo build --release
    python3 scripts/false_alarm_study.py --json /tmp/fa.json
"""

import argparse
import concurrent.futures
import csv
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "datasets")


def nab_series(out_dir):
    """NAB CSVs with a label column from the combined anomaly windows."""
    base = os.path.join(SHARED, "nab")
    with open(os.path.join(base, "combined_windows.json")) as f:
        windows = json.load(f)
    series = []
    for name, wins in sorted(windows.items()):
        path = os.path.join(base, "data", name)
        if not os.path.exists(path):
            continue
        spans = [(parse_time(a), parse_time(b)) for a, b in wins]
        rows = []
        with open(path) as f:
            for r in csv.DictReader(f):
                t = parse_time(r["timestamp"])
                label = int(any(a <= t <= b for a, b in spans))
                rows.append((int(t.timestamp()), r["value"], label))
        dest = os.path.join(out_dir, "nab__" + name.replace("/", "__"))
        with open(dest, "w") as f:
            f.write("timestamp,value,label\n")
            for t, v, l in rows:
                f.write(f"{t},{v},{l}\n")
        series.append(("nab", name, dest))
    return series


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace(" ", "T").split(".")[0]).replace(
        tzinfo=datetime.timezone.utc
    )


def yahoo_series():
    base = os.path.join(SHARED, "yahoo_a1")
    names = sorted(
        (n for n in os.listdir(base) if n.endswith(".csv")),
        key=lambda n: int(n.split("_")[1].split(".")[0]),
    )
    return [("yahoo_a1", n, os.path.join(base, n)) for n in names]


def lab_series():
    """The lab's labelled multivariate entities (reference and replica recordings)."""
    import glob

    paths = sorted(glob.glob(os.path.join(ROOT, "tests/data/lab/anomaly/*/*.csv")))
    paths += sorted(glob.glob(os.path.join(ROOT, "tests/data/lab-replica/*/anomaly/*/*.csv")))
    return [("lab", os.path.relpath(p, os.path.join(ROOT, "tests/data")), p) for p in paths]


def dir_series(directory, label):
    names = sorted(n for n in os.listdir(directory) if n.endswith(".csv"))
    return [(label, n, os.path.join(directory, n)) for n in names]


def read_labels(path):
    with open(path) as f:
        reader = csv.DictReader(f)
        key = "label" if "label" in reader.fieldnames else "is_anomaly"
        return [float(r[key]) > 0.5 for r in reader]


def run_detector(binary, detector, path, extra):
    cmd = [binary, "detect", detector, "--input", path] + extra
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    rows = list(csv.DictReader(out.stdout.splitlines()))
    scores, flags = [], []
    for r in rows:
        s = r.get("score", "")
        try:
            v = float(s)
        except ValueError:
            v = float("nan")
        scores.append(v)
        flags.append(r["flag"] == "1")
    return scores, flags


def pr_auc(scores, labels):
    pos = sum(labels)
    if pos == 0:
        return None
    pairs = sorted(
        ((s if s == s else float("-inf"), l) for s, l in zip(scores, labels)),
        key=lambda p: -p[0],
    )
    tp = fp = 0
    ap = last_recall = 0.0
    for k, (s, l) in enumerate(pairs):
        tp += l
        fp += not l
        if k + 1 == len(pairs) or pairs[k + 1][0] != s:
            recall = tp / pos
            ap += (recall - last_recall) * tp / (tp + fp)
            last_recall = recall
    return ap


def segments(labels):
    out, start = [], None
    for i, l in enumerate(labels + [False]):
        if l and start is None:
            start = i
        elif not l and start is not None:
            out.append((start, i))
            start = None
    return out


def measure(binary, detector, dataset, name, path, extra):
    labels = read_labels(path)
    scores, flags = run_detector(binary, detector, path, extra)
    normal = sum(not l for l in labels)
    false_flags = sum(f and not l for f, l in zip(flags, labels))
    segs = segments(labels)
    return {
        "detector": detector,
        "dataset": dataset,
        "series": name,
        "normal_points": normal,
        "false_flags": false_flags,
        "fa_per_1000": 1000.0 * false_flags / max(normal, 1),
        "anomalous_points": len(labels) - normal,
        "true_flags": sum(f and l for f, l in zip(flags, labels)),
        "segments": len(segs),
        "segments_hit": sum(any(flags[a:b]) for a, b in segs),
        "pr_auc": pr_auc(scores, labels),
    }


def summarise(results):
    groups = {}
    for r in results:
        groups.setdefault((r["detector"], r["dataset"]), []).append(r)
    lines = [
        "| detector | data set | series | false flags / 1,000 normal: median | worst (series) "
        "| flag recall (pooled) | segments hit | mean PR-AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (det, ds), rs in sorted(groups.items()):
        fa = [r["fa_per_1000"] for r in rs]
        worst = max(rs, key=lambda r: r["fa_per_1000"])
        anomalous = sum(r["anomalous_points"] for r in rs)
        recall = sum(r["true_flags"] for r in rs) / anomalous if anomalous else float("nan")
        segs = sum(r["segments"] for r in rs)
        hit = sum(r["segments_hit"] for r in rs)
        aucs = [r["pr_auc"] for r in rs if r["pr_auc"] is not None]
        mean_auc = statistics.mean(aucs) if aucs else float("nan")
        lines.append(
            f"| {det} | {ds} | {len(rs)} | {statistics.median(fa):.1f} | "
            f"{worst['fa_per_1000']:.1f} ({os.path.basename(worst['series'])}) | "
            f"{recall:.3f} | {hit}/{segs} | {mean_auc:.3f} |"
        )
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kpiwatch", default=os.path.join(ROOT, "target", "release", "kpiwatch"))
    p.add_argument("--detectors", default="zscore,uniad")
    p.add_argument("--datasets", default="nab,yahoo_a1,lab", help="nab, yahoo_a1, lab (comma-separated)")
    p.add_argument("--csv-dir", action="append", default=[], metavar="LABEL=DIR",
                   help="also every labelled CSV of DIR, reported as data set LABEL")
    p.add_argument("--extra", action="append", default=[], metavar="DETECTOR=ARGS",
                   help="extra arguments for one detector, e.g. zscore='--history 512'")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", help="write every series' figures here")
    args = p.parse_args()
    if not os.path.exists(args.kpiwatch):
        sys.exit(f"{args.kpiwatch} not found: run `cargo build --release` first")
    extra = {d: [] for d in args.detectors.split(",")}
    for e in args.extra:
        det, _, rest = e.partition("=")
        extra.setdefault(det, []).extend(rest.split())
    with tempfile.TemporaryDirectory() as tmp:
        series = []
        wanted = args.datasets.split(",") if args.datasets else []
        if "nab" in wanted:
            series += nab_series(tmp)
        if "yahoo_a1" in wanted:
            series += yahoo_series()
        if "lab" in wanted:
            series += lab_series()
        for spec in args.csv_dir:
            label, _, directory = spec.partition("=")
            series += dir_series(directory, label)
        jobs = [(d, *s) for d in args.detectors.split(",") for s in series]
        results = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = [
                pool.submit(measure, args.kpiwatch, d, ds, n, path, extra.get(d, []))
                for d, ds, n, path in jobs
            ]
            for i, f in enumerate(concurrent.futures.as_completed(futures), 1):
                results.append(f.result())
                if sys.stderr.isatty() or i == len(jobs):
                    end = "\n" if i == len(jobs) else ""
                    print(f"\r{i}/{len(jobs)} runs done", end=end, file=sys.stderr, flush=True)
    print(summarise(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(sorted(results, key=lambda r: (r["detector"], r["dataset"], r["series"])), f, indent=1)


if __name__ == "__main__":
    main()
