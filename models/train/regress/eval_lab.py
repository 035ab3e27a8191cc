"""P/R/F1 of the trained model, KS and MWU on the real lab load-test pairs.

The lab pairs (tests/data/lab/regress/) are split by current run (labdata.py): the
**test** split (68 pairs, 204 KPI pairs) is never trained on nor used for model
selection; it is the figure to report. `--split train|val|all` exists for diagnosis only.

    python eval_lab.py --run runs/full [--split test] [--out lab_metrics.json] [--pairs]

Each KPI of each pair is one sample; P/R/F1 over all KPI pairs and per KPI. The same
insufficient-data rules as the Rust code apply (>= 20 usable points per window).
KS and MWU: scipy two-sided tests, alpha = 0.05, on the raw KPI values of the windows.
"""
import argparse
import json
import pathlib

import numpy as np
import torch
from scipy import stats

import dataset
import labdata
from model import Siamese
from train import predict, report

torch.set_num_threads(1)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/full")
    ap.add_argument("--lab", default=str(labdata.LAB))
    ap.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-workload", action="store_true")
    ap.add_argument("--pairs", action="store_true", help="print every KPI pair with its probability")
    ap.add_argument("--sim-test", default=None, help="also score this simulated split (e.g. data/test.npz)")
    args = ap.parse_args()
    ckpt = torch.load(pathlib.Path(args.run) / "model.pt")
    model = Siamese(ckpt["hidden"])
    model.load_state_dict(ckpt["state"])
    model.eval()
    nw = args.no_workload or ckpt.get("no_workload", False)
    d = labdata.load(args.split, pathlib.Path(args.lab))
    y, k = d["label"], d["kpi"]
    p = predict(model, d["b"], d["c"], nw)
    pred = {
        "siamese": (p >= 0.5).astype(int),
        "ks": np.array([int(stats.ks_2samp(a, b).pvalue < 0.05) for a, b in zip(d["raw_b"], d["raw_c"])]),
        "mwu": np.array([int(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue < 0.05)
                         for a, b in zip(d["raw_b"], d["raw_c"])]),
    }
    out = {"split": args.split, "pairs": len(set(d["pair"].tolist())), "kpi_pairs": len(y),
           "regressed": int(y.sum()), "skipped_insufficient": d["skipped"],
           **{m: report(y, v, k) for m, v in pred.items()}}
    if args.pairs:
        for i in range(len(y)):
            flag = "" if pred["siamese"][i] == y[i] else "  <-- wrong"
            print(f"{d['pair_id'][i]} {d['route'][i]:9s} {labdata.KPIS[k[i]]:14s} y={y[i]} p={p[i]:.3f}{flag}")
    if args.sim_test:
        te = dataset.load(pathlib.Path(args.sim_test))
        pt = predict(model, te["b"], te["c"], nw)
        out["simulated_test"] = report(te["label"], (pt >= 0.5).astype(int), te["kpi"])
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
