"""Train Uni-AD (CPU by default, ``--device cuda`` on a GPU). Seeded; writes the best
checkpoint, optionally every epoch's weights, and a JSON training log.

    nice -n 10 python models/train/uniad/train.py --out models/train/uniad/out

Corpus (``data.build_corpus``): Yahoo A1 + NAB series (N = 1 entities) minus the
held-out and selection lists in ``data.py``, synthetic multivariate entities (N from 1
to 40) and the lab's training scenarios. Windows of one batch share N; 25% of the
windows (random, per N) are the validation split. The checkpoint kept is the epoch with
the best detection criterion on the selection entities (``selection.py``; ``--select
loss``: the validation Huber loss); training stops after ``--patience`` + 1 epochs
without improvement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import data
import selection
from model import UniAD


def batches(by_n: dict[int, np.ndarray], size: int, rng: np.random.Generator, shuffle: bool):
    plan = []
    for n, arr in by_n.items():
        idx = rng.permutation(len(arr)) if shuffle else np.arange(len(arr))
        for s in range(0, len(arr), size):
            plan.append((n, idx[s : s + size]))
    if shuffle:
        rng.shuffle(plan)
    for n, idx in plan:
        yield torch.from_numpy(by_n[n][idx])


def corrupt(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Denoising augmentation: 1-3 spikes of 4-12 robust sigmas on random (metric, step)
    cells of a fraction ``prob`` of the windows, a third of them on the last step (the
    one eq. 7 scores). The target stays the clean window, so the model learns not to
    copy an outlier into its reconstruction, at the step scored or after it.
    """
    if prob <= 0:
        return x
    b, n, w = x.shape
    out = x.clone()
    hit = torch.rand(b, generator=gen) < prob
    count = torch.randint(1, 4, (b,), generator=gen)
    m = torch.randint(0, n, (b, 3), generator=gen)
    last = torch.rand(b, 3, generator=gen) < 1 / 3
    t = torch.where(last, torch.full((b, 3), w - 1), torch.randint(0, w, (b, 3), generator=gen))
    sign = torch.where(torch.rand(b, 3, generator=gen) < 0.5, 1.0, -1.0)
    amp = sign * (4.0 + 8.0 * torch.rand(b, 3, generator=gen))
    use = hit[:, None] & (torch.arange(3)[None, :] < count[:, None])
    rows = torch.arange(b)[:, None].expand(b, 3)
    out.index_put_((rows[use], m[use], t[use]), amp[use], accumulate=True)
    return out


def add_segments(x: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    """Denoising augmentation for sustained faults: in a fraction ``prob`` of the windows,
    one metric leaves its level for the last L steps (L uniform in 2..W/2) by 3-10 robust
    sigmas, up or down. The target stays the clean window, so the model learns to
    reconstruct a metric that departs alone at the end of the window at its earlier
    level, and eq. 7 keeps scoring the fault for as long as it stays in the window's
    second half, instead of fading as the model starts to follow the new level.
    Metric-group level shifts in the synthetic data stay normal (they are not corrupted).
    Only windows of N >= 2 metrics: a lone series has no other metric to tell a fault's
    shift from a normal change of regime, so it is left to follow its new level.
    """
    b, n, w = x.shape
    if prob <= 0 or n < 2:
        return x
    hit = torch.rand(b, generator=gen) < prob
    if not hit.any():
        return x
    out = x.clone()
    m = torch.randint(0, n, (b,), generator=gen)
    length = torch.randint(2, w // 2 + 1, (b,), generator=gen)
    sign = torch.where(torch.rand(b, generator=gen) < 0.5, 1.0, -1.0)
    amp = sign * (3.0 + 7.0 * torch.rand(b, generator=gen))
    steps = torch.arange(w)[None, :]
    mask = (steps >= (w - length)[:, None]) & hit[:, None]  # (b, w)
    rows = torch.arange(b)
    out[rows, m, :] += mask.to(x.dtype) * amp[:, None]
    return out


def split(by_n: dict[int, np.ndarray], frac: float, rng: np.random.Generator):
    train, val = {}, {}
    for n, arr in by_n.items():
        perm = rng.permutation(len(arr))
        k = int(round(len(arr) * frac))
        if len(arr) >= 4 and k > 0:
            val[n] = arr[perm[:k]]
            train[n] = arr[perm[k:]]
        else:
            train[n] = arr
    return train, val


def evaluate(model: nn.Module, by_n, loss_fn, size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    rng = np.random.default_rng(0)
    with torch.no_grad():
        dev = next(model.parameters()).device
        for x in batches(by_n, size, rng, shuffle=False):
            x = x.to(dev)
            total += loss_fn(model(x), x).item() * x.numel()
            count += x.numel()
    return total / max(count, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--hidden", type=int, default=8, help="hidden size H")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--patience", type=int, default=1)
    ap.add_argument("--spike-prob", type=float, default=0.5,
                    help="fraction of training windows given synthetic spikes (denoising); 0 = plain autoencoder")
    ap.add_argument("--segment-prob", type=float, default=0.0,
                    help="fraction of training windows (N >= 2 only) where one metric shifts level over"
                         " its last 2..W/2 steps (denoising for sustained faults); 0 = off")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this checkpoint (fine-tuning) instead of random weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--lab-repeat", type=int, default=4,
                    help="copies of every training lab window (data.TRAIN_LAB, stride 1); 0 = no lab data")
    ap.add_argument("--max-minutes", type=float, default=0, help="stop after the epoch that passes this budget")
    ap.add_argument("--mask-last", action="store_true",
                    help="zero the input's last step inside the model (predict the scored step; see model.py)")
    ap.add_argument("--select", choices=("detection", "loss"), default="detection",
                    help="checkpoint / early-stopping criterion: the scaled score's PR-AUC on the selection "
                         "entities (selection.py) or the Huber loss on the 25%% validation windows")
    ap.add_argument("--keep-epochs", action="store_true",
                    help="also save every epoch's weights as epochK.pt (to compare scores afterwards)")
    ap.add_argument("--synthetic-entities", type=int, default=400)
    ap.add_argument("--synth-len", type=int, default=1200)
    ap.add_argument("--synth-stride", type=int, default=16)
    ap.add_argument("--real-stride", type=int, default=4)
    ap.add_argument("--max-windows-per-series", type=int, default=1500)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    root = data.data_dir()
    t0 = time.time()
    corpus = data.build_corpus(root, args.seed, args.synthetic_entities, args.real_stride,
                               args.synth_stride, args.synth_len, args.max_windows_per_series,
                               args.lab_repeat)
    train, val = split(corpus, 0.25, rng)
    n_train = sum(len(v) for v in train.values())
    n_val = sum(len(v) for v in val.values())
    print(f"corpus: {n_train} train / {n_val} val windows, N in {sorted(corpus)[:3]}..{max(corpus)}"
          f" ({time.time() - t0:.1f}s)", flush=True)

    dev = torch.device(args.device)
    model = UniAD(w=data.W, h=args.hidden, heads=args.heads, dropout=args.dropout,
                  mask_last=args.mask_last).to(dev)
    if args.init is not None:
        model.load_state_dict(torch.load(args.init, map_location=dev))
    sel = selection.load_sets(root) if args.select == "detection" else None
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.SmoothL1Loss(beta=1.0)  # eq. 5-6: Huber with delta 1
    args.out.mkdir(parents=True, exist_ok=True)
    best, best_epoch, history, bad = -float("inf"), -1, [], 0
    best_loss = float("inf")
    if args.init is not None and sel is not None:
        # Fine-tuning must beat its starting point on the selection entities to be saved.
        q = selection.quality(model, sel)
        best = q["criterion"]
        history.append({"epoch": 0, "init": str(args.init), "selection_pr_auc": q})
        print(json.dumps(history[-1]), flush=True)
    t_train = time.time()
    for epoch in range(args.epochs):
        model.train()
        run, steps = 0.0, 0
        for x in batches(train, args.batch, rng, shuffle=True):
            opt.zero_grad()
            xc = add_segments(corrupt(x, args.spike_prob, gen), args.segment_prob, gen)
            x, xc = x.to(dev), xc.to(dev)
            loss = loss_fn(model(xc), x)
            loss.backward()
            opt.step()
            run += loss.item()
            steps += 1
        v = evaluate(model, val, loss_fn, 512)
        entry = {"epoch": epoch + 1, "train_loss": run / max(steps, 1), "val_loss": v}
        if sel is not None:
            q = selection.quality(model, sel)
            entry["selection_pr_auc"] = q
            crit = q["criterion"]
        else:
            crit = -v
        entry["elapsed_s"] = round(time.time() - t_train, 1)
        history.append(entry)
        print(json.dumps(history[-1]), flush=True)
        if args.keep_epochs:
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.out / f"epoch{epoch + 1}.pt")
        if crit > best + 1e-5:
            best, best_epoch, bad, best_loss = crit, epoch + 1, 0, v
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, args.out / "uniad.pt")
        else:
            bad += 1
            if bad > args.patience:
                break
        if args.max_minutes and time.time() - t_train > args.max_minutes * 60:
            history[-1]["stopped_by_budget"] = True
            break
    log = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "params": params,
        "train_windows": n_train,
        "val_windows": n_val,
        "select": args.select,
        "best_criterion": best,
        "best_val_loss": best_loss,
        "best_epoch": best_epoch,
        "selection_entities": {"yahoo_a1": data.VAL_YAHOO, "nab": data.VAL_NAB, "lab_selection": data.VAL_LAB,
                               "lab_train": data.TRAIN_LAB},
        "history": history,
        "train_time_s": round(time.time() - t_train, 1),
        "torch": torch.__version__,
        "held_out": {"yahoo_a1": data.HELD_OUT_YAHOO, "nab": data.HELD_OUT_NAB, "lab": data.HELD_OUT_LAB},
        "train_lab": data.TRAIN_LAB if args.lab_repeat else [],
    }
    (args.out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"best {args.select} criterion {best:.5f} (val loss {best_loss:.5f}) at epoch {best_epoch}; "
          f"{params} parameters", flush=True)


if __name__ == "__main__":
    main()
