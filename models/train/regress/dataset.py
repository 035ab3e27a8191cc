"""Builds the simulated DynamicRegress data sets (KPI pairs) and caches them as .npz.

Splits (disjoint seeds, so disjoint services and noise):
  train_labeled   labeled pairs for supervised training
  train_unlabeled pairs whose labels are hidden (pseudo-labelling; ambiguous KPI pairs too)
  val             early model selection
  test            held-out simulated test set (never trained on)
Each KPI of each pair is one sample: (baseline seq, current seq, label, kpi index).
Regression pairs are ~25% of pairs (per KPI fewer: a degradation need not hit every KPI).

    python dataset.py --out data/        # ~1-2 minutes on one core
"""
import argparse
import pathlib

import numpy as np

import features
import simulate

SPLITS = {  # name: (seed, pairs)
    "train_labeled": (1, 1600),
    "train_unlabeled": (2, 1200),
    "val": (3, 300),
    "test": (4, 800),
}
REG_SHARE = 0.25


def build(seed: int, n_pairs: int, keep_ambiguous: bool):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_pairs):
        pair = simulate.make_pair(rng, rng.random() < REG_SHARE)
        for ki, kpi in enumerate(simulate.KPIS):
            label = pair["labels"][kpi]
            if label < 0 and not keep_ambiguous:
                continue
            b, c = features.pair_features(pair["baseline"], pair["current"], kpi)
            raw = {k: (pair["baseline"][k], pair["current"][k]) for k in ("workload", kpi)}
            samples.append((b, c, label, ki, i, raw))
    return samples


def save(samples, path: pathlib.Path):
    arrays = {}
    for j, (b, c, label, ki, pid, raw) in enumerate(samples):
        arrays[f"b{j}"] = b
        arrays[f"c{j}"] = c
        arrays[f"rb{j}"] = raw[simulate.KPIS[ki]][0]
        arrays[f"rc{j}"] = raw[simulate.KPIS[ki]][1]
    arrays["label"] = np.array([s[2] for s in samples], dtype=np.int64)
    arrays["kpi"] = np.array([s[3] for s in samples], dtype=np.int64)
    arrays["pair"] = np.array([s[4] for s in samples], dtype=np.int64)
    np.savez_compressed(path, **arrays)


def load(path: pathlib.Path):
    z = np.load(path)
    n = len(z["label"])
    b = [z[f"b{j}"] for j in range(n)]
    c = [z[f"c{j}"] for j in range(n)]
    return {
        "b": b,
        "c": c,
        "raw_b": [z[f"rb{j}"] for j in range(n)],
        "raw_c": [z[f"rc{j}"] for j in range(n)],
        "label": z["label"], "kpi": z["kpi"], "pair": z["pair"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="data")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every split's pair count")
    ap.add_argument("--only", default=None, help="build this split only (to run the four in parallel)")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (seed, n) in SPLITS.items():
        if args.only and name != args.only:
            continue
        s = build(seed, max(1, int(round(n * args.scale))), keep_ambiguous=(name == "train_unlabeled"))
        save(s, out / f"{name}.npz")
        labels = np.array([x[2] for x in s])
        print(f"{name}: {len(s)} KPI pairs, {int((labels == 1).sum())} regressed, "
              f"{int((labels == 0).sum())} normal, {int((labels < 0).sum())} ambiguous")


if __name__ == "__main__":
    main()
