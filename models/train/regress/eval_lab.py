"""Evaluates the trained model, KS and MWU on the real lab load-test pairs (held out).

The lab (`kpiwatch-lab`, issue 3) records pairs under tests/data/lab/regress/:
<run>__<route>.csv (timestamp,workload,response_time,throughput,success_rate) and
pairs.csv (pair_id,baseline,current,label,rt_regressed,tps_regressed,sr_regressed).
None of them is ever used for training: the model is trained on simulated pairs only.

    python eval_lab.py --run runs/full [--lab ../../../tests/data/lab/regress] [--out lab_metrics.json]

Each KPI of each pair is one sample; P/R/F1 over all KPI pairs and per KPI. The same
insufficient-data rules as the Rust code apply (>= 20 usable points per window).
"""
import argparse
import csv
import json
import pathlib

import numpy as np
import torch
from scipy import stats

import features
from model import Siamese
import dataset
from train import KPIS, predict, report

torch.set_num_threads(1)
COLS = {"response_time": "rt_regressed", "throughput": "tps_regressed", "success_rate": "sr_regressed"}


def read(path: pathlib.Path) -> dict:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    def col(name):
        return np.array([float(r[name]) if r[name] not in ("", "NaN", "nan") else np.nan for r in rows])
    return {k: col(k) for k in ("timestamp", "workload", *KPIS)}


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/full")
    ap.add_argument("--lab", default=str(pathlib.Path(__file__).resolve().parents[3] / "tests/data/lab/regress"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-workload", action="store_true")
    ap.add_argument("--sim-test", default=None, help="also score this simulated split (e.g. data/test.npz)")
    args = ap.parse_args()
    lab = pathlib.Path(args.lab)
    ckpt = torch.load(pathlib.Path(args.run) / "model.pt")
    model = Siamese(ckpt["hidden"])
    model.load_state_dict(ckpt["state"])
    model.eval()
    nw = args.no_workload or ckpt.get("no_workload", False)
    y, kpi_idx, pred = [], [], {"siamese": [], "ks": [], "mwu": []}
    skipped = 0
    with (lab / "pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    for p in pairs:
        b = read(lab / f"{p['baseline']}.csv")
        c = read(lab / f"{p['current']}.csv")
        for ki, kpi in enumerate(KPIS):
            wb, kb = features.clean(b, kpi)
            wc, kc = features.clean(c, kpi)
            if min(len(kb), len(kc)) < 20 or wb.max() <= 0 or wc.max() <= 0:
                skipped += 1
                continue
            fb, fc = features.pair_features(b, c, kpi)
            if nw:
                fb[:, 0] = 0
                fc[:, 0] = 0
            prob = float(model.head(model.encoder(torch.from_numpy(fb)[None]),
                                    model.encoder(torch.from_numpy(fc)[None]))[0, 1])
            y.append(int(p[COLS[kpi]]))
            kpi_idx.append(ki)
            pred["siamese"].append(int(prob >= 0.5))
            pred["ks"].append(int(stats.ks_2samp(kb, kc).pvalue < 0.05))
            pred["mwu"].append(int(stats.mannwhitneyu(kb, kc, alternative="two-sided").pvalue < 0.05))
    y, kpi_idx = np.array(y), np.array(kpi_idx)
    out = {"pairs": len(pairs), "kpi_pairs": len(y), "regressed": int(y.sum()), "skipped_insufficient": skipped,
           **{m: report(y, np.array(v), kpi_idx) for m, v in pred.items()}}
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
