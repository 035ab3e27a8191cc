"""Uni-AD speed: tract (the Rust bench) beside PyTorch eager and onnxruntime,
single thread, W = 64, same weights, in one run.

    python models/train/uniad/bench.py            # runs `cargo bench --bench uniad` too
    python models/train/uniad/bench.py --no-tract # Python side only

Prints microseconds per entity window for N in {8, 38} and batch in {1, 64, 512},
and the ratio tract / onnxruntime. tract's figures are read from criterion's
``target/criterion/uniad_n{N}/tract_{mode}/{batch}/new/estimates.json`` (mean).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

import data
from model import load_checkpoint

REPO = Path(__file__).resolve().parents[3]
NS = (8, 38)
BATCHES = (1, 64, 512)


def best_of(fn, budget_s: float = 1.5, repeats: int = 5) -> float:
    """Median over `repeats` rounds of the mean time per call, in seconds."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    calls = max(1, int(budget_s / repeats / one))
    rounds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - t0) / calls)
    return float(np.median(rounds))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", type=Path, default=REPO / "models" / "uniad.onnx")
    ap.add_argument("--ckpt", type=Path, default=Path(__file__).parent / "uniad.pt")
    ap.add_argument("--no-tract", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--cargo-profile", default="bench",
                    help="cargo profile for the tract bench (bench = release; dev = quick indicative run)")
    args = ap.parse_args()

    torch.set_num_threads(1)
    model = load_checkpoint(args.ckpt, w=data.W)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(args.onnx), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    for n in NS:
        for b in BATCHES:
            x = rng.uniform(-3, 3, size=(b, n, data.W)).astype(np.float32)
            xt = torch.from_numpy(x)
            with torch.inference_mode():
                t_torch = best_of(lambda: model(xt))
            t_ort = best_of(lambda: sess.run(None, {"x": x}))
            results[f"n{n}_b{b}"] = {"torch_us": t_torch / b * 1e6, "ort_us": t_ort / b * 1e6}
            print(f"n={n:2} batch={b:3}: torch {t_torch / b * 1e6:8.1f} us/window, "
                  f"onnxruntime {t_ort / b * 1e6:8.1f} us/window", flush=True)

    if not args.no_tract:
        env = dict(os.environ)
        subprocess.run(["cargo", "bench", "--profile", args.cargo_profile, "--bench", "uniad", "--", "--warm-up-time", "1",
                        "--measurement-time", "3"], cwd=REPO, check=True, env=env)
        for n in NS:
            for b in BATCHES:
                row = results[f"n{n}_b{b}"]
                for mode in ("symbolic", "bucketed"):
                    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
                    est = target / "criterion" / f"uniad_n{n}" / f"tract_{mode}" / str(b) / "new" / "estimates.json"
                    mean_ns = json.loads(est.read_text())["mean"]["point_estimate"]
                    row[f"tract_{mode}_us"] = mean_ns / b / 1e3
        print("\n| N | batch | tract symbolic | tract bucketed | onnxruntime | torch eager | best tract / ort |")
        print("|---|---|---|---|---|---|---|")
        for n in NS:
            for b in BATCHES:
                r = results[f"n{n}_b{b}"]
                best = min(r["tract_symbolic_us"], r["tract_bucketed_us"])
                print(f"| {n} | {b} | {r['tract_symbolic_us']:.1f} | {r['tract_bucketed_us']:.1f} | "
                      f"{r['ort_us']:.1f} | {r['torch_us']:.1f} | {best / r['ort_us']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
