"""Rounds 2 and 3 of the scaled score's choice (protocol: tests/data/lab-replica/README.md):
each candidate per-metric error scale, and the plain eq. 7, on the lab entities that are
no longer a test set, with the shipped model.

    .venv-uniad/bin/python models/train/uniad/scale_study.py [--round 2|3]

Two groups: the 15 labelled selection/training lab entities (``data.VAL_LAB`` +
``data.TRAIN_LAB``) and the labelled entities of the held-out scenarios that have been
looked at (round 2: the original recording and replicates s101, s102, 36 entities;
round 3: s103, s104 as well, 60). Criterion: the mean of the two groups' mean PR-AUC.
Round 2 varied the floor of the median; round 3 the statistic (median, 75th and 90th
percentile, mean) and the floor. Never reads the replicates recorded to test a round's
choice after it (round 2: ``data.LAB_FRESH``; round 3: ``data.LAB_FRESH3``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import data
import scoring

REPO = Path(__file__).resolve().parents[3]
STATISTICS = {"median": 50.0, "p75": 75.0, "p90": 90.0, "mean": None}


def candidates(round_: int) -> dict[str, scoring.Scale | None]:
    """Name -> scale rule (None: plain eq. 7) of a round's candidates."""
    if round_ == 2:
        rules = {f"floor {f}": scoring.Scale(50.0, f) for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)}
    else:
        rules = {
            f"{name} floor {f}": scoring.Scale(q, f)
            for name, q in STATISTICS.items()
            for f in (0.01, 0.05, 0.2)
        }
    return {**rules, "plain": None}


def groups(round_: int) -> dict[str, list[data.Entity]]:
    looked_at = data.LAB_REPLICA_CHOICE + (data.LAB_FRESH if round_ == 3 else [])
    held_out = data.load_lab(data.HELD_OUT_LAB) + data.load_lab_replicas(looked_at)
    return {
        "selection+training": data.load_lab(data.VAL_LAB + data.TRAIN_LAB),
        "held-out scenarios": held_out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--round", type=int, choices=(2, 3), default=3, dest="round_")
    args = ap.parse_args()
    reconstruct = scoring.onnx_reconstruct(REPO / "models" / "uniad.onnx")
    rules = candidates(args.round_)
    table: dict[str, dict[str, float]] = {}
    for group, entities in groups(args.round_).items():
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
