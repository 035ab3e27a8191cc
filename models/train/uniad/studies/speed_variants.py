"""Where does tract spend its time in Uni-AD? Exports timing variants of the shipped
model into DIR/<variant>/models/uniad.onnx, for `time_speed_variants.sh` (same folder).

    python models/train/uniad/studies/speed_variants.py --out .gpu_bench/variants   # from the repository root

Variants (only `shipped` and `attn3d` compute the shipped function; the others remove
one kind of operation, to attribute its cost — their outputs are not meaningful):
  shipped   the committed models/uniad.onnx graph (re-exported from uniad.pt)
  attn3d    heads folded into the batch dimension: 3-D MatMuls instead of 4-D (same numbers)
  noattn    attention replaced by o(v(x)) (no QK^T, no softmax, no PV)
  relu      GELU (Erf) replaced by ReLU
  noln      LayerNorm replaced by identity
  flat2d    every dense layer applied to a 2-D (batch*N, d) view: 2-D MatMuls (same numbers)
  flat2d_attn3d  both rewrites (same numbers)
"""
import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # models/train/uniad

import data  # noqa: E402
import model as M  # noqa: E402
from export import export  # noqa: E402


def attn3d_forward(self, x):
    b, n, d = x.shape[0], x.shape[1], x.shape[2]
    q = self.q(x).reshape(b, n, self.heads, self.hd).transpose(1, 2).reshape(b * self.heads, n, self.hd)
    k = self.k(x).reshape(b, n, self.heads, self.hd).permute(0, 2, 3, 1).reshape(b * self.heads, self.hd, n)
    v = self.v(x).reshape(b, n, self.heads, self.hd).transpose(1, 2).reshape(b * self.heads, n, self.hd)
    s = torch.matmul(q, k) * self.scale
    e = torch.exp(torch.clamp(s, -M.SCORE_CLAMP, M.SCORE_CLAMP))
    p = e / torch.sum(e, dim=-1, keepdim=True)
    out = torch.matmul(p, v).reshape(b, self.heads, n, self.hd).transpose(1, 2).reshape(b, n, d)
    return self.o(out)


class Flat(nn.Module):
    """nn.Linear on a (rows, d) view of the input (same numbers)."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        shape = x.shape
        y = self.lin(x.reshape(-1, shape[-1]))
        return y.reshape(*shape[:-1], y.shape[-1])


def flatten_linears(m: nn.Module):
    for name, child in list(m.named_children()):
        if isinstance(child, nn.Linear):
            setattr(m, name, Flat(child))
        else:
            flatten_linears(child)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--only", default=None, help="comma-separated variants")
    ap.add_argument("--ckpt", type=Path, default=Path(__file__).resolve().parents[1] / "uniad.pt")
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(4, 8, data.W)
    names = ("shipped", "attn3d", "noattn", "relu", "noln", "flat2d", "flat2d_attn3d")
    for name in args.only.split(",") if args.only else names:
        m = M.load_checkpoint(args.ckpt, w=data.W)
        ref = m(x)
        if name.startswith("flat2d"):
            flatten_linears(m)
        if name.endswith("attn3d"):
            for mod in m.modules():
                if isinstance(mod, M.Attention):
                    mod.forward = attn3d_forward.__get__(mod)
        if name in ("attn3d", "flat2d", "flat2d_attn3d"):
            assert torch.allclose(m(x), ref, atol=1e-5), f"{name} must compute the same function"
        elif name == "noattn":
            for mod in m.modules():
                if isinstance(mod, M.Attention):
                    mod.forward = (lambda self, x: self.o(self.v(x))).__get__(mod)
        elif name == "relu":
            for mod in m.modules():
                if isinstance(mod, M.Layer):
                    mod.ff[1] = nn.ReLU()
        elif name == "noln":
            for mod in m.modules():
                if isinstance(mod, M.Layer):
                    mod.norm1, mod.norm2 = nn.Identity(), nn.Identity()
        path = args.out / name / "models" / "uniad.onnx"
        export(m.eval(), path, 18, "dynamo")
        print(name, path, path.stat().st_size)


if __name__ == "__main__":
    main()
