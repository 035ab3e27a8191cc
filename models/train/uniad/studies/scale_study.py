"""Per-metric error scales for Uni-AD's scaled score (``scale_errors: true``), compared
with the plain eq. 7 on lab entities that are no longer a test set, with the shipped
model. Its protocols and results: ``../STUDIES.md``.

    .venv-uniad/bin/python models/train/uniad/studies/scale_study.py [--study floor|statistic]

Two groups: the 15 labelled selection/training lab entities (``data.VAL_LAB`` +
``data.TRAIN_LAB``) and labelled entities of the held-out scenarios: the original
recording (``data.HELD_OUT_LAB``) with the replicates ``data.LAB_S101_S102``
(``--study floor``, 36 entities) or with ``data.LAB_S101_S102`` and
``data.LAB_S103_S104`` (``--study statistic``, the default, 60 entities).
Criterion: the mean of the two groups' mean PR-AUC.

* ``--study floor``: the median of each metric's history errors, floor in {0.01, 0.02,
  0.05, 0.1, 0.2, 0.5};
* ``--study statistic``: the statistic (median, 75th and 90th percentile, mean) x floor
  in {0.01, 0.05, 0.2}.

Both also print the plain eq. 7 and the robust z-score. Neither reads the replicates
that test their choice (``floor``: ``data.LAB_S103_S104``; ``statistic``:
``data.LAB_S105_S106``), nor ``data.LAB_S107_S108``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/train/uniad

import data  # noqa: E402
import scoring  # noqa: E402

REPO = Path(__file__).resolve().parents[4]
STATISTICS = {"median": 50.0, "p75": 75.0, "p90": 90.0, "mean": None}


def candidates(study: str) -> dict[str, scoring.Scale | None]:
    """Name -> scale rule (None: plain eq. 7) of a study's candidates."""
    if study == "floor":
        rules = {f"floor {f}": scoring.Scale(50.0, f) for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)}
    else:
        rules = {
            f"{name} floor {f}": scoring.Scale(q, f)
            for name, q in STATISTICS.items()
            for f in (0.01, 0.05, 0.2)
        }
    return {**rules, "plain": None}


def groups(study: str) -> dict[str, list[data.Entity]]:
    replicates = data.LAB_S101_S102 + (data.LAB_S103_S104 if study == "statistic" else [])
    held_out = data.load_lab(data.HELD_OUT_LAB) + data.load_lab_replicas(replicates)
    return {
        "selection+training": data.load_lab(data.VAL_LAB + data.TRAIN_LAB),
        "held-out scenarios": held_out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", choices=("floor", "statistic"), default="statistic")
    args = ap.parse_args()
    reconstruct = scoring.onnx_reconstruct(REPO / "models" / "uniad.onnx")
    rules = candidates(args.study)
    table: dict[str, dict[str, float]] = {}
    for group, entities in groups(args.study).items():
        per: dict[str, list[float]] = {}
        for e in entities:
            z = data.normalise_entity(e.values)
            s = scoring.first_scored(z.shape[1])
            y = e.labels[s:]
            if y.sum() == 0:
                continue
            err = scoring.last_step_errors(z, reconstruct)
            for name, rule in rules.items():
                u = scoring.uniad_scores(err, rule)
                per.setdefault(name, []).append(data.pr_auc_best_f1(u[s - (data.W - 1):], y)[0])
            per.setdefault("zscore", []).append(data.pr_auc_best_f1(scoring.zscore_scores(z[:, s:]), y)[0])
        for name, v in per.items():
            table.setdefault(name, {})[group] = float(np.mean(v))
        print(f"{group}: {len(per['zscore'])} labelled entities")
    print(f"{'score':20s} {'selection+training':>20s} {'held-out scenarios':>20s} {'criterion':>10s}")
    for name, row in table.items():
        print(f"{name:20s} " + " ".join(f"{v:20.3f}" for v in row.values()) + f" {np.mean(list(row.values())):10.4f}")


if __name__ == "__main__":
    main()
