"""Exports a trained DynamicRegress model to ONNX (encoder + head) and writes golden vectors.

    python export.py --run runs/full            # from models/train/regress/

Writes (repository paths):
  models/regress_encoder.onnx   x [batch, T, 2] -> z [batch, H]   (batch, T symbolic)
  models/regress_head.onnx      z1, z2 [batch, H] -> p [batch, 2] (softmax; column 1 = P(regression))
  models/golden/regress_golden.json     encoder/head inputs and PyTorch outputs
  models/golden/regress_pair<i>_{baseline,current}.csv + expected probabilities in the JSON:
      raw load tests (the lab's CSV format) -> features -> model, so the Rust test also
      checks that features.rs matches features.py.
Checks onnxruntime against PyTorch before writing anything golden.
"""
import argparse
import json
import pathlib

import numpy as np
import onnxruntime as ort
import torch

import features
import simulate
from model import Siamese

torch.set_num_threads(1)
ROOT = pathlib.Path(__file__).resolve().parents[3]
MODELS = ROOT / "models"
GOLDEN = MODELS / "golden"


def export(model: Siamese, hidden: int):
    enc, head = model.encoder.eval(), model.head.eval()
    x = torch.randn(2, 17, 2)
    torch.onnx.export(enc, (x,), MODELS / "regress_encoder.onnx", input_names=["x"], output_names=["z"],
                      dynamic_axes={"x": {0: "batch", 1: "T"}, "z": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    z = torch.randn(3, hidden)
    torch.onnx.export(head, (z, z), MODELS / "regress_head.onnx", input_names=["z1", "z2"], output_names=["p"],
                      dynamic_axes={"z1": {0: "batch"}, "z2": {0: "batch"}, "p": {0: "batch"}},
                      opset_version=17, dynamo=False)


def write_csv(path: pathlib.Path, t: dict):
    cols = ("timestamp", "workload", "response_time", "throughput", "success_rate")
    rows = [",".join(repr(float(t[c][i])) for c in cols) for i in range(len(t["timestamp"]))]
    path.write_text(",".join(cols) + "\n" + "\n".join(rows) + "\n")


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/full")
    args = ap.parse_args()
    ckpt = torch.load(pathlib.Path(args.run) / "model.pt")
    hidden = ckpt["hidden"]
    model = Siamese(hidden)
    model.load_state_dict(ckpt["state"])
    model.eval()
    export(model, hidden)

    enc_s = ort.InferenceSession(str(MODELS / "regress_encoder.onnx"))
    head_s = ort.InferenceSession(str(MODELS / "regress_head.onnx"))
    rng = np.random.default_rng(7)
    golden = {"hidden": hidden, "encoder": [], "head": {}, "pairs": []}
    worst = 0.0
    # Encoder cases: a batch of equal-length sequences, batch 1 of several lengths.
    for batch, t in ((4, 50), (1, 7), (1, 300), (3, 60)):
        x = np.concatenate([rng.uniform(0, 1.2, (batch, t, 1)), rng.normal(0, 2, (batch, t, 1))], axis=2)
        x = x.astype(np.float32)
        z = model.encoder(torch.from_numpy(x)).numpy()
        zo = enc_s.run(None, {"x": x})[0]
        worst = max(worst, float(np.abs(z - zo).max()))
        golden["encoder"].append({"batch": batch, "len": t, "x": x.ravel().tolist(), "z": z.ravel().tolist()})
    z1 = rng.normal(0, 0.5, (5, hidden)).astype(np.float32)
    z2 = rng.normal(0, 0.5, (5, hidden)).astype(np.float32)
    p = model.head(torch.from_numpy(z1), torch.from_numpy(z2)).numpy()
    po = head_s.run(None, {"z1": z1, "z2": z2})[0]
    worst = max(worst, float(np.abs(p - po).max()))
    golden["head"] = {"batch": 5, "z1": z1.ravel().tolist(), "z2": z2.ravel().tolist(), "p": p.ravel().tolist()}
    # End-to-end pairs from the simulator (fresh seed: not in any data split).
    prng = np.random.default_rng(99)
    for i, regression in enumerate((False, True, True, False)):
        pair = simulate.make_pair(prng, regression)
        write_csv(GOLDEN / f"regress_pair{i}_baseline.csv", pair["baseline"])
        write_csv(GOLDEN / f"regress_pair{i}_current.csv", pair["current"])
        probs = {}
        for kpi in simulate.KPIS:
            b, c = features.pair_features(pair["baseline"], pair["current"], kpi)
            zb = model.encoder(torch.from_numpy(b)[None])
            zc = model.encoder(torch.from_numpy(c)[None])
            probs[kpi] = float(model.head(zb, zc)[0, 1])
        golden["pairs"].append({"id": i, "degradation": pair["degradation"], "labels": pair["labels"],
                                "probability": probs})
    golden["onnxruntime_max_abs_diff"] = worst
    assert worst < 1e-4, f"onnxruntime disagrees with torch by {worst}"
    (GOLDEN / "regress_golden.json").write_text(json.dumps(golden) + "\n")
    print(f"exported H={hidden}; onnxruntime vs torch max |diff| = {worst:.2e}")
    for g in golden["pairs"]:
        print(g)


if __name__ == "__main__":
    main()
