"""Checkpoint selection for Uni-AD: detection quality on labelled entities that are not
held out, with the scaled score (``scoring.SCALED``). ``train.py`` keeps the epoch with
the best criterion; run alone, this prints the same figures for saved checkpoints:

    python models/train/uniad/selection.py out/epoch1.pt out/epoch2.pt ...

Sets (lists in ``data.py``; the protocol of ``scoring.py``):

* ``yahoo_a1``, ``nab``: the selection series (N = 1), never trained on;
* ``lab_selection``: the lab scenario ``dependency``, never trained on;
* ``lab_train``: the lab training scenarios (``latency``, ``errors``, ``memory``); their
  values reach training (unsupervised, with ``--lab-repeat`` > 0), their labels never.
  They are the only non-held-out lab entities whose faults are sustained shifts of one
  or two metrics, the case the model handles worst (``models/uniad.md``).

Criterion: the mean over the four sets of the mean PR-AUC of the scaled score (the
agent's ``scale_errors: true`` option), reported as ``uniad``; it is the criterion that
chose the shipped checkpoint, so ``train.py`` reproduces it (``STUDIES.md``). Each set
also reports the paper's plain eq. 7, the agent's default, as ``uniad_plain``, and the
robust z-score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

import data
import scoring
from model import UniAD

Entities = list[tuple[str, np.ndarray, np.ndarray]]  # (name, normalised (N, T), labels)


def load_sets(root: Path) -> dict[str, Entities]:
    series = {"yahoo_a1": data.load_yahoo(root, data.VAL_YAHOO), "nab": data.load_nab(root, data.VAL_NAB)}
    out: dict[str, Entities] = {
        k: [(s.name, data.normalise_entity(s.values[None, :]), s.labels) for s in v] for k, v in series.items()
    }
    for k, scenarios in (("lab_selection", data.VAL_LAB), ("lab_train", data.TRAIN_LAB)):
        out[k] = [(e.name, data.normalise_entity(e.values), e.labels) for e in data.load_lab(scenarios)]
    return out


def reconstruct_with(model: nn.Module) -> scoring.Reconstruct:
    """``model`` as a numpy (batch, N, W) -> reconstruction function, no gradients."""
    dev = next(model.parameters()).device

    def reconstruct(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x).to(dev)).cpu().numpy()

    return reconstruct


def quality(model: nn.Module, sets: dict[str, Entities]) -> dict:
    """{set: {uniad, uniad_plain, zscore}: mean PR-AUC, ..., "criterion": float}."""
    model.eval()
    reconstruct = reconstruct_with(model)
    out: dict = {}
    for name, ents in sets.items():
        aps: dict[str, list[float]] = {"uniad": [], "uniad_plain": [], "zscore": []}
        for _, z, labels in ents:
            s = scoring.first_scored(z.shape[1])
            y = labels[s:]
            if y.sum() == 0:
                continue
            err = scoring.last_step_errors(z, reconstruct)
            off = s - (data.W - 1)
            # "uniad" (the criterion) is the scaled score; "uniad_plain" the agent's default.
            aps["uniad"].append(data.pr_auc_best_f1(scoring.uniad_scores(err, scoring.SCALED)[off:], y)[0])
            aps["uniad_plain"].append(data.pr_auc_best_f1(scoring.uniad_scores(err, None)[off:], y)[0])
            aps["zscore"].append(data.pr_auc_best_f1(scoring.zscore_scores(z[:, s:]), y)[0])
        out[name] = {k: round(float(np.mean(v)), 4) for k, v in aps.items()}
    out["criterion"] = float(np.mean([out[k]["uniad"] for k in sets]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", type=Path, nargs="+")
    ap.add_argument("--hidden", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sets = load_sets(data.data_dir())
    for ckpt in args.checkpoints:
        model = UniAD(w=data.W, h=args.hidden)
        model.load_state_dict(torch.load(ckpt, map_location="cpu"))
        q = quality(model, sets)
        print(json.dumps({"checkpoint": str(ckpt), **q}), flush=True)


if __name__ == "__main__":
    main()
