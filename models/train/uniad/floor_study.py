"""Round 2 of the scaled score's floor (protocol: tests/data/lab-replica/README.md):
each candidate floor of the per-metric error scale, and the plain eq. 7, on the lab
entities that are no longer a test set, with the shipped model.

    .venv-uniad/bin/python models/train/uniad/floor_study.py

Two groups: the 15 labelled selection/training lab entities (``data.VAL_LAB`` +
``data.TRAIN_LAB``) and the 36 labelled entities of the held-out scenarios' original
recording and replicates s101, s102. Criterion: the mean of the two groups' mean PR-AUC.
Never reads the fresh replicates (``data.LAB_FRESH``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import data
import scoring

REPO = Path(__file__).resolve().parents[3]
FLOORS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]


def main() -> None:
    reconstruct = scoring.onnx_reconstruct(REPO / "models" / "uniad.onnx")
    groups = {
        "selection+training (15)": data.load_lab(data.VAL_LAB + data.TRAIN_LAB),
        "held-out scenarios (36)": data.load_lab(data.HELD_OUT_LAB) + data.load_lab_replicas(data.LAB_REPLICA_CHOICE),
    }
    candidates: list[float | None] = [*FLOORS, None]
    table: dict[str, dict[str, float]] = {}
    for group, entities in groups.items():
        per: dict[str, list[float]] = {}
        for e in entities:
            z = data.normalise_entity(e.values)
            s = scoring.first_scored(z.shape[1])
            y = e.labels[s:]
            if y.sum() == 0:
                continue
            err = scoring.last_step_errors(z, reconstruct)
            for f in candidates:
                name = "plain" if f is None else f"floor {f}"
                u = scoring.uniad_scores(err, scale=f is not None, floor=f or scoring.ERROR_SCALE_FLOOR)
                per.setdefault(name, []).append(data.pr_auc_best_f1(u[s - (data.W - 1):], y)[0])
            per.setdefault("zscore", []).append(data.pr_auc_best_f1(scoring.zscore_scores(z[:, s:]), y)[0])
        for name, v in per.items():
            table.setdefault(name, {})[group] = float(np.mean(v))
        print(f"{group}: {len(per['zscore'])} labelled entities")
    print(f"{'score':12s} " + " ".join(f"{g:>24s}" for g in groups) + f" {'criterion':>10s}")
    for name, row in table.items():
        print(f"{name:12s} " + " ".join(f"{row[g]:24.3f}" for g in groups) + f" {np.mean(list(row.values())):10.4f}")


if __name__ == "__main__":
    main()
