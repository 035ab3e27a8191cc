"""PyTorch timings of the same weights as benches/regress.rs, single thread.

    python bench_torch.py --run runs/full       # prints ms per KPI pair

Same cases: encode the current window (T steps) + head with a cached baseline embedding,
T in {300, 60}, batch in {1, 32}; the median of repeated runs.
"""
import argparse
import json
import pathlib
import time

import numpy as np
import torch

from model import Siamese

torch.set_num_threads(1)


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/full")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    ckpt = torch.load(pathlib.Path(args.run) / "model.pt")
    model = Siamese(ckpt["hidden"])
    model.load_state_dict(ckpt["state"])
    model.eval()
    out = {}
    for t in (300, 60):
        for batch in (1, 32):
            x = torch.randn(batch, t, 2)
            zb = torch.randn(batch, ckpt["hidden"])
            times = []
            end = time.perf_counter() + args.seconds
            while time.perf_counter() < end or len(times) < 10:
                s = time.perf_counter()
                model.head(zb, model.encoder(x))
                times.append(time.perf_counter() - s)
            ms = float(np.median(times)) * 1e3
            out[f"T{t}/batch{batch}"] = {"ms_per_call": round(ms, 4), "ms_per_pair": round(ms / batch, 4)}
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), **out}, indent=1))


if __name__ == "__main__":
    main()
