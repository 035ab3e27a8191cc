"""Scoring variants of Uni-AD on the lab entities that are NOT held out (the selection
scenario and the training scenarios, whose labels never reach training). Never run on
the held-out entities. Its results, and which model they were measured with:
``../STUDIES.md``.

    .venv-uniad/bin/python models/train/uniad/studies/scoring_variants.py [--onnx FILE]

``--onnx``: the model to score (default ``models/uniad.onnx``, the shipped one).

Prints, per variant, the mean PR-AUC over the 15 labelled entities (and per set), next
to the robust z-score; then each metric's median squared error at the last step (why
plain eq. 7 is dominated by noisy metrics), and one fault where the reconstruction
follows a sustained shift. Variants:

* ``plain``: eq. 7, the mean over metrics of the squared errors (the agent's default);
* ``last2``, ``last4``: the mean over the last 2 / 4 steps of the window as well;
* ``scaled median floor F``: each metric's error divided by its median over up to 64
  history windows (the agent's rule with ``scale_errors: true``, ``scoring.SCALED``)
  floored at F, then the mean (the agent uses F = 0.01);
* ``scaled mean`` / ``scaled p75``: the same with the mean or the 75th percentile;
* ``plain max``, ``scaled max``, ``scaled top2``: the largest (or the mean of the two
  largest) per-metric term instead of the mean over metrics, as the z-score detector
  aggregates.

It also prints the mean per scenario of plain, the scaled score and the z-score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/train/uniad

import data  # noqa: E402
import scoring  # noqa: E402
from scoring import Reconstruct  # noqa: E402

REPO = Path(__file__).resolve().parents[4]


def window_errors(reconstruct: Reconstruct, z: np.ndarray) -> np.ndarray:
    """(T-W+1, N, W) squared errors of every window of a normalised (N, T) entity."""
    win = data.windows(z, 1)
    return ((win - reconstruct(win)) ** 2).astype(np.float64)


def scaled(rule: scoring.Scale, agg=np.mean):
    """Last-step errors divided by ``rule``'s per-metric scales, then ``agg`` over metrics."""
    def score(err: np.ndarray) -> np.ndarray:
        last = err[:, :, -1]
        return agg(last / rule.of(last), axis=1)
    return score


VARIANTS = {
    "plain": lambda e: e[:, :, -1].mean(axis=1),
    "last2": lambda e: e[:, :, -2:].mean(axis=(1, 2)),
    "last4": lambda e: e[:, :, -4:].mean(axis=(1, 2)),
    **{f"scaled median floor {f}": scaled(scoring.Scale(50.0, f)) for f in (0.01, 0.05, 0.2)},
    "scaled mean floor 0.01": scaled(scoring.Scale(None, 0.01)),
    "scaled p75 floor 0.01": scaled(scoring.Scale(75.0, 0.01)),
    "plain max": lambda e: e[:, :, -1].max(axis=1),
    "scaled max": scaled(scoring.SCALED, np.max),
    "scaled top2": scaled(scoring.SCALED, lambda a, axis: np.sort(a, axis=axis)[:, -2:].mean(axis=axis)),
}
SCALED = "scaled median floor 0.01"  # scoring.SCALED, the agent's scale_errors: true


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", type=Path, default=REPO / "models" / "uniad.onnx")
    args = ap.parse_args()
    reconstruct = scoring.onnx_reconstruct(args.onnx)
    sets = {"lab_selection": data.VAL_LAB, "lab_train": data.TRAIN_LAB}
    every: dict[str, list[float]] = {v: [] for v in [*VARIANTS, "zscore"]}
    by_scenario: dict[str, dict[str, list[float]]] = {}
    medians: dict[str, list[float]] = {}
    for set_name, scenarios in sets.items():
        per: dict[str, list[float]] = {v: [] for v in every}
        for e in data.load_lab(scenarios):
            z = data.normalise_entity(e.values)
            s = scoring.first_scored(z.shape[1])
            y = e.labels[s:]
            err = window_errors(reconstruct, z)
            for metric, m in zip(e.metrics, np.median(err[:, :, -1], axis=0)):
                medians.setdefault(metric, []).append(float(m))
            if y.sum() == 0:
                continue
            for name, f in VARIANTS.items():
                per[name].append(data.pr_auc_best_f1(f(err)[s - (data.W - 1):], y)[0])
            per["zscore"].append(data.pr_auc_best_f1(scoring.zscore_scores(z[:, s:]), y)[0])
            scenario = by_scenario.setdefault(e.name.split("/")[1], {k: [] for k in ("plain", SCALED, "zscore")})
            for k in scenario:
                scenario[k].append(per[k][-1])
        for name, v in per.items():
            every[name] += v
        print(f"{set_name}: {len(per['zscore'])} labelled entities")
    print(f"{'variant':28s} {'all':>6s}")
    for name, v in every.items():
        print(f"{name:28s} {np.mean(v):6.3f}")
    print(f"per scenario (mean PR-AUC): {'plain':>6s} {'scaled':>6s} {'zscore':>6s}")
    for name, v in by_scenario.items():
        print(f"  {name:24s} " + " ".join(f"{np.mean(x):6.3f}" for x in v.values()))
    print("median squared error at the last step, per metric (median over entities):")
    for metric, v in medians.items():
        print(f"  {metric:18s} {np.median(v):.4f}")
    drift_example(reconstruct)


def drift_example(reconstruct: Reconstruct) -> None:
    """The model following a sustained shift: the training scenario's errors/home, its
    error ratio (z) and the reconstruction of the last step over the labelled fault."""
    e = next(e for e in data.load_lab(["errors"]) if e.name.endswith("/home"))
    z = data.normalise_entity(e.values)
    m = e.metrics.index("error_ratio")
    recon = reconstruct(data.windows(z, 1))[:, m, -1]
    fault = np.flatnonzero(e.labels)
    np.set_printoptions(precision=1, suppress=True, linewidth=200)
    print(f"{e.name} error_ratio, steps {fault[0]}..{fault[-1]} (labelled):")
    print("  z     ", z[m, fault])
    print("  recon ", recon[fault - (data.W - 1)])


if __name__ == "__main__":
    main()
