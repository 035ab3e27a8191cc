"""Evaluate Uni-AD (the exported ONNX, via onnxruntime) beside the robust z-score
detector and ADSketch on the held-out entities of ``data.py``.

    python models/train/uniad/evaluate.py [--onnx models/uniad.onnx] [--kpiwatch target/release/kpiwatch]

Held-out sets: Yahoo A1 and NAB series (N = 1) and the lab's multivariate entities of
the held-out scenarios (``lab``: ``data.HELD_OUT_LAB``; 11-12 metrics each). Per entity,
every metric is robust-z-scored with its own statistics (``data.robust_stats``, as the
agent's normaliser over a long history). ``lab_s101_s102``, ``lab_s103_s104``,
``lab_s105_s106``, ``lab_s107_s108``: the same three scenarios recorded again with those
seeds (``data.LAB_S101_S102`` ..., ``tests/data/lab-replica/``; which of them had been
looked at before which choice: ``STUDIES.md``). With more than one lab set asked for,
the pooled mean over their entities is printed too, with per-entity wins against the
z-score and per-scenario means.
Scored steps: t >= s with s = max(W - 1, T // 4), the same for all detectors;
steps before s are ADSketch's normal history ``T_n``.

* Uni-AD (``uniad``): eq. 7 on the window ending at t, as the agent scores by default:
  the paper's plain mean over metrics of the squared errors at the last step.
  ``uniad_scaled``: the agent with ``scale_errors: true`` (``src/detect/uniad/scale.rs``,
  ``scoring.SCALED``): each metric's squared error at the last step divided by its
  median over up to 64 windows spread evenly over the entity's history (floor 0.01),
  then the mean over metrics.
* robust z-score: |z_t|; for N > 1 the max over metrics.
* ADSketch: ``kpiwatch detect adsketch --train rows[0, s) --test rows[s, T) --m 15 --p 99``
  (fixed parameters, not tuned per series), score column (1.0 = threshold; 0 where the
  CLI gives none); for N > 1 it runs per metric and the score is the max over metrics.

PR-AUC (average precision) and best point-wise F1 per entity, averaged over the
entities with at least one labelled point among the scored steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import data
import scoring

REPO = Path(__file__).resolve().parents[3]
ADS_M, ADS_P = 15, 99.0
# The held-out lab sets: the original recording and its replicates, pooled when asked for together.
LAB_HELD_OUT = ("lab", "lab_s101_s102", "lab_s103_s104", "lab_s105_s106", "lab_s107_s108")


pr_auc_best_f1 = data.pr_auc_best_f1


def adsketch_scores(exe: Path, values: np.ndarray, split: int, tmp: Path) -> np.ndarray | None:
    """ADSketch score per step of rows[split:] of one raw series; None when it fails."""
    v = np.asarray(values, dtype=np.float64)
    if np.isnan(v).any():  # gaps: carry the last value (the CLI wants numbers)
        idx = np.where(~np.isnan(v), np.arange(len(v)), 0)
        np.maximum.accumulate(idx, out=idx)
        v = v[idx]
        v = np.nan_to_num(v, nan=0.0)
    for name, part in (("train", v[:split]), ("test", v[split:])):
        with open(tmp / f"{name}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value"])
            w.writerows((i, repr(float(x))) for i, x in enumerate(part))
    r = subprocess.run([str(exe), "detect", "adsketch", "--train", str(tmp / "train.csv"), "--test",
                        str(tmp / "test.csv"), "--m", str(ADS_M), "--p", str(ADS_P), "--out",
                        str(tmp / "out.csv"), "--log-level", "error"], capture_output=True, text=True)
    if r.returncode != 0:
        return None
    with open(tmp / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([float(x["score"]) if x["score"] not in ("", "NaN") else 0.0 for x in rows])


def entities(name: str, root: Path):
    """(name, raw (N, T), labels) of one held-out set."""
    # lab_selection / lab_train: the lab entities that are not held out (their labels
    # never reach training; lab_train's values do, unsupervised), for diagnosis only.
    lab_sets = {"lab": data.HELD_OUT_LAB, "lab_selection": data.VAL_LAB, "lab_train": data.TRAIN_LAB}
    replicas = {"lab_s101_s102": data.LAB_S101_S102, "lab_s103_s104": data.LAB_S103_S104,
                "lab_s105_s106": data.LAB_S105_S106, "lab_s107_s108": data.LAB_S107_S108}
    if name in lab_sets or name in replicas:
        found = data.load_lab_replicas(replicas[name]) if name in replicas else data.load_lab(lab_sets[name])
        for e in found:
            yield e.name, e.values, e.labels
    else:
        for s in data.held_out_series(root)[name]:
            yield s.name, s.values[None, :], s.labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", type=Path, default=REPO / "models" / "uniad.onnx")
    ap.add_argument("--kpiwatch", type=Path, default=REPO / "target" / "release" / "kpiwatch",
                    help="kpiwatch binary for ADSketch (cargo build --release); missing = no ADSketch column")
    ap.add_argument("--sets", default=",".join(("yahoo_a1", "nab", *LAB_HELD_OUT)),
                    help="comma-separated: yahoo_a1, nab, lab (held out), lab_s101_s102, lab_s103_s104, "
                         "lab_s105_s106, lab_s107_s108 (replicates of the held-out lab scenarios, by "
                         "seed), lab_selection, lab_train")
    ap.add_argument("--json", type=Path, default=None, help="also write per-entity results here")
    args = ap.parse_args()
    reconstruct = scoring.onnx_reconstruct(args.onnx)
    use_ads = args.kpiwatch.exists()
    root = data.data_dir()
    results = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for set_name in args.sets.split(","):
            rows = []
            for name, raw, labels in entities(set_name, root):
                z = data.normalise_entity(raw)
                t = z.shape[1]
                s = scoring.first_scored(t)
                y = labels[s:]
                if y.sum() == 0:
                    continue
                row = {"entity": name, "n": int(z.shape[0]), "scored_steps": int(len(y)),
                       "anomalous_steps": int(y.sum())}
                # One inference per entity; both scores of the window ending at each t.
                err = scoring.last_step_errors(z, reconstruct)
                u = scoring.uniad_scores(err)[s - (data.W - 1):]
                us = scoring.uniad_scores(err, scoring.SCALED)[s - (data.W - 1):]
                b = scoring.zscore_scores(z[:, s:])
                row["uniad_pr_auc"], row["uniad_best_f1"] = pr_auc_best_f1(u, y)
                row["uniad_scaled_pr_auc"], row["uniad_scaled_best_f1"] = pr_auc_best_f1(us, y)
                row["zscore_pr_auc"], row["zscore_best_f1"] = pr_auc_best_f1(b, y)
                if use_ads:
                    per = [adsketch_scores(args.kpiwatch, raw[i], s, tmp) for i in range(raw.shape[0])]
                    ok = [p for p in per if p is not None]
                    row["adsketch_failed_metrics"] = len(per) - len(ok)
                    a = np.max(np.stack(ok), axis=0) if ok else np.zeros(len(y))
                    row["adsketch_pr_auc"], row["adsketch_best_f1"] = pr_auc_best_f1(a, y)
                rows.append(row)
            keys = [k for k in rows[0] if k.endswith("_pr_auc") or k.endswith("_best_f1")]
            mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
            results[set_name] = {"entities": len(rows), "mean": mean, "rows": rows}
            print(f"{set_name}: {len(rows)} labelled entities")
            for det in ("uniad", "uniad_scaled", "zscore", "adsketch"):
                if f"{det}_pr_auc" in mean:
                    print(f"  {det:12s} PR-AUC {mean[det + '_pr_auc']:.3f}  best-F1 {mean[det + '_best_f1']:.3f}")
    pooled = [k for k in LAB_HELD_OUT if k in results]
    if len(pooled) > 1:
        # The replicates sample the same scenarios: the pooled mean is the held-out lab
        # figure over more entities.
        rows = [r for k in pooled for r in results[k]["rows"]]
        print(f"{' + '.join(pooled)}: {len(rows)} labelled entities")
        for det in ("uniad", "uniad_scaled", "zscore", "adsketch"):
            if f"{det}_pr_auc" in rows[0]:
                print(f"  {det:12s} PR-AUC {np.mean([r[det + '_pr_auc'] for r in rows]):.3f}"
                      f"  best-F1 {np.mean([r[det + '_best_f1'] for r in rows]):.3f}")
        # Paired per entity: how often each Uni-AD score beats the z-score's PR-AUC.
        for det in ("uniad", "uniad_scaled"):
            d = np.array([r[det + "_pr_auc"] - r["zscore_pr_auc"] for r in rows])
            print(f"  {det} vs zscore per entity: {int((d > 0).sum())} higher, "
                  f"{int((d < 0).sum())} lower, {int((d == 0).sum())} equal")
        # Per scenario (entity names end in <scenario>/<route>).
        scenarios = sorted({r["entity"].split("/")[-2] for r in rows})
        for sc in scenarios:
            of = [r for r in rows if r["entity"].split("/")[-2] == sc]
            means = ", ".join(f"{det} {np.mean([r[det + '_pr_auc'] for r in of]):.3f}"
                              for det in ("uniad", "uniad_scaled", "zscore"))
            print(f"  {sc} ({len(of)}): PR-AUC {means}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
