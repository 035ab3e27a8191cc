"""Export a trained Uni-AD checkpoint to ONNX and write golden vectors.

    python models/train/uniad/export.py --ckpt models/train/uniad/out/uniad.pt

Writes ``models/uniad.onnx`` (input ``x`` of shape ``[batch, n, 64]``, output
``recon`` of the same shape; ``batch`` and ``n`` symbolic) and
``models/golden/uniad_golden.json``: for N in {1, 3, 8, 38} and batch 2, the
input, PyTorch's reconstruction and the eq. 7 scores, after checking that
onnxruntime agrees with PyTorch within 1e-5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import data
from model import UniAD, load_checkpoint, score_last_step

REPO = Path(__file__).resolve().parents[3]
GOLDEN_NS = (1, 3, 8, 38)
GOLDEN_BATCH = 2


def load(ckpt: Path, hidden: int) -> UniAD:
    return load_checkpoint(ckpt, w=data.W, h=hidden)


def export(model: UniAD, path: Path, opset: int, exporter: str) -> None:
    example = torch.randn(3, 5, data.W)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=65536)
        n = torch.export.Dim("n", min=1, max=4096)
        torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["recon"],
                          opset_version=opset, dynamo=True,
                          dynamic_shapes={"x": {0: batch, 1: n}}, external_data=False)
    else:
        torch.onnx.export(model, (example,), str(path), input_names=["x"], output_names=["recon"],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={"x": {0: "batch", 1: "n"}, "recon": {0: "batch", 1: "n"}})
    m = onnx.load(str(path))
    onnx.checker.check_model(m)


def write_wrong_shape(path: Path) -> None:
    """A valid ONNX model with the wrong signature (``[batch, n, 64] -> [batch, n, 32]``),
    for the Rust test that a wrong-shape model fails at load with a clear message."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((data.W, 32), 0.01, dtype=np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["recon"])],
        "wrong_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n", data.W])],
        [helper.make_tensor_value_info("recon", TensorProto.FLOAT, ["batch", "n", 32])],
        initializer=[weight],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def golden_inputs(seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for n in GOLDEN_NS:
        wins = []
        for _ in range(GOLDEN_BATCH):
            ent = data.normalise_entity(data.synthetic_entity(rng, n, 400))
            start = int(rng.integers(0, 400 - data.W))
            wins.append(ent[:, start : start + data.W])
        x = np.stack(wins).astype(np.float32)
        x[-1, 0, -1] += 6.0  # an obvious spike at the last step of one entity
        out[n] = x
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--hidden", type=int, default=8)
    ap.add_argument("--onnx", type=Path, default=REPO / "models" / "uniad.onnx")
    ap.add_argument("--golden", type=Path, default=REPO / "models" / "golden" / "uniad_golden.json")
    ap.add_argument("--opset", type=int, default=18)
    ap.add_argument("--exporter", choices=["dynamo", "legacy"], default="dynamo")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    model = load(args.ckpt, args.hidden)
    export(model, args.onnx, args.opset, args.exporter)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(args.onnx), opts, providers=["CPUExecutionProvider"])
    cases = []
    worst = 0.0
    for n, x in golden_inputs(args.seed).items():
        with torch.no_grad():
            recon = model(torch.from_numpy(x))
            score = score_last_step(torch.from_numpy(x), recon).numpy()
        recon = recon.numpy()
        got = sess.run(None, {"x": x})[0]
        worst = max(worst, float(np.abs(got - recon).max()))
        cases.append({"n": n, "batch": GOLDEN_BATCH, "input": x.ravel().tolist(),
                      "output": recon.ravel().tolist(), "score": score.tolist()})
    if worst > 1e-5:
        raise SystemExit(f"onnxruntime disagrees with torch by {worst:.2e}")
    args.golden.parent.mkdir(parents=True, exist_ok=True)
    doc = {"w": data.W, "generator": "models/train/uniad/export.py", "seed": args.seed,
           "tolerance": 1e-4, "ort_vs_torch_max_abs": worst, "cases": cases}
    args.golden.write_text(json.dumps(doc, separators=(",", ":")))
    write_wrong_shape(args.golden.parent / "uniad_wrong_shape.onnx")
    size = args.onnx.stat().st_size
    print(f"wrote {args.onnx} ({size} bytes), {args.golden}; ort vs torch max abs {worst:.2e}")


if __name__ == "__main__":
    main()
