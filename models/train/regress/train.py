"""Trains DynamicRegress on the simulated KPI pairs (CPU, minutes).

Paper options (§III): weighted cross-entropy normal:regression = 1:2, noise + time-shift
augmentation of regression pairs, pseudo-labels with confidence >= 0.7 on the unlabeled
pairs, Adam. Ablation switches: --no-workload (workload channel zeroed in training and
test), --no-aug, --no-weight (1:1), --no-pseudo.

Schedule: --epochs1 supervised epochs, then pseudo-labelling of the unlabeled set with
the best model so far, then --epochs2 epochs on labeled + pseudo-labeled pairs. The
checkpoint with the best validation F1 is kept and evaluated on the held-out test set,
together with KS and MWU (scipy, alpha = 0.05) on the same KPI pairs.

    nice -n 10 python train.py --data data --out runs/full
"""
import argparse
import json
import pathlib
import time

import numpy as np
import torch
from scipy import stats
from torch import nn

import dataset
import labdata
from model import Siamese

torch.set_num_threads(1)
KPIS = ("response_time", "throughput", "success_rate")


def prf(y, p):
    y, p = np.asarray(y), np.asarray(p)
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    pr = tp / (tp + fp) if tp + fp else 0.0
    rc = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * pr * rc / (pr + rc) if pr + rc else 0.0
    return {"precision": round(pr, 4), "recall": round(rc, 4), "f1": round(f1, 4), "tp": tp, "fp": fp, "fn": fn}


def report(y, pred, kpi):
    out = {"all": prf(y, pred)}
    for i, k in enumerate(KPIS):
        m = kpi == i
        out[k] = prf(y[m], pred[m])
    return out


DEVICE = torch.device("cpu")


def pad(seqs, no_workload):
    lens = torch.tensor([len(s) for s in seqs])
    x = torch.zeros(len(seqs), int(lens.max()), 2)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.from_numpy(s)
    if no_workload:
        x[:, :, 0] = 0
    return x.to(DEVICE), lens.to(DEVICE)


def augment(b, c, rng):
    """Noise and a small time shift of a regression pair (paper §III-B)."""
    c = c + rng.normal(0, 0.05, c.shape).astype(np.float32)
    b = b + rng.normal(0, 0.02, b.shape).astype(np.float32)
    for which in (0, 1):
        s = (b, c)[which]
        k = int(rng.integers(1, max(2, len(s) // 10)))
        s = s[k:] if rng.random() < 0.5 else s[:-k]
        if which == 0:
            b = s
        else:
            c = s
    return b, c


def batches(items, bs, rng):
    """Shuffled batches of similar length (less padding)."""
    idx = rng.permutation(len(items))
    chunks = [idx[i: i + bs * 20] for i in range(0, len(idx), bs * 20)]
    out = []
    for ch in chunks:
        ch = sorted(ch, key=lambda j: max(len(items[j][0]), len(items[j][1])))
        out += [ch[i: i + bs] for i in range(0, len(ch), bs)]
    rng.shuffle(out)
    return out


@torch.no_grad()
def predict(model, b, c, no_workload, bs=256):
    model.eval()
    probs = []
    order = np.argsort([max(len(x), len(y)) for x, y in zip(b, c)])
    res = np.zeros(len(b))
    for i in range(0, len(order), bs):
        ids = order[i: i + bs]
        xb, lb = pad([b[j] for j in ids], no_workload)
        xc, lc = pad([c[j] for j in ids], no_workload)
        p = torch.softmax(model.logits(xb, lb, xc, lc), -1)[:, 1].cpu().numpy()
        res[ids] = p
    probs.append(res)
    return res


def stat_baselines(data):
    out = {}
    for name, fn in (("ks", lambda x, y: stats.ks_2samp(x, y).pvalue),
                     ("mwu", lambda x, y: stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)):
        pred = np.array([1 if fn(x, y) < 0.05 else 0 for x, y in zip(data["raw_b"], data["raw_c"])])
        out[name] = report(data["label"], pred, data["kpi"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--out", default="runs/full")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs1", type=int, default=8)
    ap.add_argument("--epochs2", type=int, default=4)
    ap.add_argument("--bs", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-workload", action="store_true")
    ap.add_argument("--no-aug", action="store_true")
    ap.add_argument("--no-weight", action="store_true")
    ap.add_argument("--no-pseudo", action="store_true")
    ap.add_argument("--baselines", action="store_true", help="also evaluate KS and MWU")
    ap.add_argument("--lab-weight", type=int, default=0,
                    help="add the lab's training pairs (labdata.py, split by current run) this many times per "
                         "epoch; model selection then averages simulated-val F1 and lab-val F1 (0 = simulator only)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--max-minutes", type=float, default=0,
                    help="wall-clock budget: the supervised phase ends at 60%% of it, training at 100%%")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    data = pathlib.Path(args.data)
    tr = dataset.load(data / "train_labeled.npz")
    un = dataset.load(data / "train_unlabeled.npz")
    va = dataset.load(data / "val.npz")
    te = dataset.load(data / "test.npz")
    nw = args.no_workload
    global DEVICE
    DEVICE = torch.device(args.device)
    lab_tr = labdata.load("train", drop_invisible=True) if args.lab_weight else None
    lab_va = labdata.load("val") if args.lab_weight else None
    lab_te = labdata.load("test")

    model = Siamese(args.hidden).to(DEVICE)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    weight = torch.tensor([1.0, 1.0 if args.no_weight else 2.0]).to(DEVICE)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    labeled = list(zip(tr["b"], tr["c"], tr["label"]))
    if lab_tr is not None:
        labeled += list(zip(lab_tr["b"], lab_tr["c"], lab_tr["label"].tolist())) * args.lab_weight
    pseudo = []
    best = (-1.0, None)
    log = []
    t0 = time.time()
    total = args.epochs1 + (0 if args.no_pseudo else args.epochs2)
    budget = args.max_minutes * 60
    phase2_at = args.epochs1
    for epoch in range(total):
        elapsed = time.time() - t0
        if budget and elapsed > budget:
            log.append({"stopped_by_budget_after_epochs": epoch})
            break
        if budget and epoch < args.epochs1 and elapsed > 0.6 * budget and not args.no_pseudo and best[1]:
            phase2_at = epoch
        if epoch == phase2_at and not args.no_pseudo:
            model.load_state_dict(best[1])
            p = predict(model, un["b"], un["c"], nw)
            conf = np.maximum(p, 1 - p) >= 0.7
            pseudo = [(un["b"][j], un["c"][j], int(p[j] >= 0.5)) for j in np.where(conf)[0]]
            log.append({"pseudo_labels": len(pseudo), "pseudo_regressed": sum(x[2] for x in pseudo),
                        "unlabeled": len(p)})
        items = labeled + pseudo
        if not args.no_aug:
            items = items + [augment(b, c, rng) + (1,) for b, c, y in items if y == 1 for _ in range(2)]
        model.train()
        tot = 0.0
        for ids in batches(items, args.bs, rng):
            xb, lb = pad([items[j][0] for j in ids], nw)
            xc, lc = pad([items[j][1] for j in ids], nw)
            y = torch.tensor([int(items[j][2]) for j in ids]).to(DEVICE)
            loss = loss_fn(model.logits(xb, lb, xc, lc), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += float(loss.detach()) * len(ids)
        pv = predict(model, va["b"], va["c"], nw)
        f1 = sim_f1 = prf(va["label"], (pv >= 0.5).astype(int))["f1"]
        entry = {"epoch": epoch, "loss": round(tot / len(items), 4), "val_f1": f1}
        if lab_va is not None:
            pl = predict(model, lab_va["b"], lab_va["c"], nw)
            lab_f1 = prf(lab_va["label"], (pl >= 0.5).astype(int))["f1"]
            f1 = round((sim_f1 + lab_f1) / 2, 4)
            entry.update({"lab_val_f1": lab_f1, "select_f1": f1})
        log.append({**entry, "items": len(items), "elapsed_s": round(time.time() - t0, 1)})
        print(log[-1], flush=True)
        if f1 > best[0]:
            best = (f1, {k: v.clone() for k, v in model.state_dict().items()})
            torch.save({"state": {k: v.cpu() for k, v in best[1].items()}, "hidden": args.hidden,
                        "no_workload": nw}, out / "model.pt")
    model.load_state_dict(best[1])
    pt = predict(model, te["b"], te["c"], nw)
    plt = predict(model, lab_te["b"], lab_te["c"], nw)
    result = {"args": vars(args), "train_seconds": round(time.time() - t0, 1), "best_val_f1": best[0],
              "test": report(te["label"], (pt >= 0.5).astype(int), te["kpi"]),
              "test_pairs": len(te["label"]), "test_regressed": int(te["label"].sum()),
              "lab_test": report(lab_te["label"], (plt >= 0.5).astype(int), lab_te["kpi"]), "log": log}
    if args.baselines:
        result["baselines"] = stat_baselines(te)
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()}, "hidden": args.hidden,
                "no_workload": nw}, out / "model.pt")
    print(json.dumps({k: result[k] for k in ("test", "lab_test", "train_seconds")}, indent=1))
    if args.baselines:
        print(json.dumps(result["baselines"], indent=1))


if __name__ == "__main__":
    main()
