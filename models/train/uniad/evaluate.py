"""Evaluate Uni-AD (the exported ONNX, via onnxruntime) beside a robust z-score
baseline on the held-out series of ``data.py``.

    python models/train/uniad/evaluate.py [--onnx models/uniad.onnx]

Per series: robust z-score with the series' own median/MAD (as the agent's
normaliser over a long history); Uni-AD score at step t = eq. 7 on the window
ending at t; baseline score = |z_t|. Only steps t >= W-1 are scored, for both.
PR-AUC (average precision) and best F1 (point-wise, best threshold per series)
are averaged over the series that have at least one labelled point in that range.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

import data

REPO = Path(__file__).resolve().parents[3]


def pr_auc_best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    # Group ties so a threshold never splits equal scores.
    last = np.r_[np.diff(s) != 0, True]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1 - y)[last]
    pos = y.sum()
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return ap, float(f1.max())


def uniad_scores(sess: ort.InferenceSession, z: np.ndarray) -> np.ndarray:
    win = data.windows(z[None, :], 1)  # (T-W+1, 1, W)
    out = np.empty(len(win), dtype=np.float64)
    for s in range(0, len(win), 4096):
        x = win[s : s + 4096]
        r = sess.run(None, {"x": x})[0]
        out[s : s + len(x)] = ((x[:, :, -1] - r[:, :, -1]) ** 2).mean(axis=1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", type=Path, default=REPO / "models" / "uniad.onnx")
    ap.add_argument("--json", type=Path, default=None, help="also write per-series results here")
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(args.onnx), opts, providers=["CPUExecutionProvider"])
    results = {}
    for name, series in data.held_out_series(data.data_dir()).items():
        rows = []
        for s in series:
            z = data.robust_z(s.values)
            y = s.labels[data.W - 1 :]
            if y.sum() == 0:
                continue
            u = uniad_scores(sess, z)
            b = np.abs(z[data.W - 1 :]).astype(np.float64)
            ua, uf = pr_auc_best_f1(u, y)
            ba, bf = pr_auc_best_f1(b, y)
            rows.append({"series": s.name, "uniad_pr_auc": ua, "uniad_best_f1": uf,
                         "zscore_pr_auc": ba, "zscore_best_f1": bf})
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "series"}
        results[name] = {"series": len(rows), "mean": mean, "rows": rows}
        print(f"{name}: {len(rows)} labelled held-out series")
        print(f"  Uni-AD  PR-AUC {mean['uniad_pr_auc']:.3f}  best-F1 {mean['uniad_best_f1']:.3f}")
        print(f"  z-score PR-AUC {mean['zscore_pr_auc']:.3f}  best-F1 {mean['zscore_best_f1']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
