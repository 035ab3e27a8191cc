"""Uni-AD (He, Chen, Huang): a Transformer/Base-layer autoencoder over metric tokens.

Input ``x`` is ``(batch, N, W)``: each of the N metrics of an entity is one token
whose features are its W normalised values. There is no positional encoding, so
the model is permutation-equivariant over metrics and accepts any N.

Encoder (two branches over the same input, concatenated, eq. 4):
  * Transformer branch: modified encoder layers ``W -> 32 -> 16`` (for W = 64),
    then ``Linear(16, H)``;
  * Base branch: the same layers with self-attention replaced by a
    position-wise dense layer, then ``Linear(16, H)``.
Decoder: Base layers ``2H -> 16 -> 32`` (multiples of H nearest to the encoder
sizes, mirrored), then ``Linear(32, W)``.

Attention is written by hand (separate Q/K/V projections, MatMul, softmax,
MatMul) because ``nn.MultiheadAttention`` does not export with a symbolic N.
The softmax exponentiates scores clamped to [-30, 30] without subtracting the
row maximum: identical to softmax whenever scores are in that range (they are,
after LayerNorm), and it avoids tract's slow ReduceMax/Softmax on short rows.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCORE_CLAMP = 30.0


def encoder_sizes(w: int, layers: int = 2) -> list[int]:
    """Layer l outputs the power of two nearest above ``w / 2^(l+1)``."""
    sizes = []
    for layer in range(layers):
        target = w / 2 ** (layer + 1)
        sizes.append(2 ** math.ceil(math.log2(max(target, 1.0))))
    return sizes


def decoder_sizes(enc: list[int], h: int) -> list[int]:
    """Multiples of H nearest to the encoder sizes, mirrored (at least H)."""
    return [max(h, h * round(s / h)) for s in reversed(enc)]


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads != 0:
            raise ValueError(f"model size {d} is not a multiple of {heads} heads")
        self.heads = heads
        self.hd = d // heads
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)
        self.scale = 1.0 / math.sqrt(self.hd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape[0], x.shape[1], x.shape[2]
        q = self.q(x).reshape(b, n, self.heads, self.hd).transpose(1, 2)
        k = self.k(x).reshape(b, n, self.heads, self.hd).permute(0, 2, 3, 1)
        v = self.v(x).reshape(b, n, self.heads, self.hd).transpose(1, 2)
        s = torch.matmul(q, k) * self.scale  # (b, heads, n, n)
        e = torch.exp(torch.clamp(s, -SCORE_CLAMP, SCORE_CLAMP))
        p = e / torch.sum(e, dim=-1, keepdim=True)
        out = torch.matmul(p, v).transpose(1, 2).reshape(b, n, d)
        return self.o(out)


class Layer(nn.Module):
    """Modified Transformer encoder layer (``attention=True``) or Base layer.

    ``x = LN(x + mix(x))``; ``y = Dense_{d_in -> d_out}(x)``;
    ``y = LN(y + FF(y))`` with a GELU feed-forward of width ``2 d_out``.
    ``mix`` is multi-head self-attention across metrics (Transformer) or a
    position-wise dense layer (Base).
    """

    def __init__(self, d_in: int, d_out: int, attention: bool, heads: int, dropout: float):
        super().__init__()
        self.mix = Attention(d_in, heads) if attention else nn.Linear(d_in, d_in)
        self.norm1 = nn.LayerNorm(d_in)
        self.reduce = nn.Linear(d_in, d_out)
        self.ff = nn.Sequential(
            nn.Linear(d_out, 2 * d_out), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d_out, d_out)
        )
        self.norm2 = nn.LayerNorm(d_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.mix(x)))
        y = self.reduce(x)
        return self.norm2(y + self.drop(self.ff(y)))


class UniAD(nn.Module):
    """``mask_last``: the input's last step is zeroed inside the graph, so the output at
    the last step (the one eq. 7 scores) is predicted from the 63 steps before it instead
    of reconstructed from a window that contains it (see README: a well-trained plain
    autoencoder learns to copy the scored point, anomaly included). Same interface."""

    def __init__(self, w: int = 64, h: int = 8, heads: int = 4, dropout: float = 0.2, mask_last: bool = False):
        super().__init__()
        self.w, self.h = w, h
        self.mask_last = mask_last
        in_mask = torch.ones(w)
        if mask_last:
            in_mask[-1] = 0.0
        self.register_buffer("in_mask", in_mask)
        enc = encoder_sizes(w)
        dims = [w] + enc
        self.trans = nn.Sequential(
            *[Layer(dims[i], dims[i + 1], True, heads, dropout) for i in range(len(enc))],
            nn.Linear(enc[-1], h),
        )
        self.base = nn.Sequential(
            *[Layer(dims[i], dims[i + 1], False, heads, dropout) for i in range(len(enc))],
            nn.Linear(enc[-1], h),
        )
        dec = decoder_sizes(enc, h)
        ddims = [2 * h] + dec
        self.decoder = nn.Sequential(
            *[Layer(ddims[i], ddims[i + 1], False, heads, dropout) for i in range(len(dec))],
            nn.Linear(dec[-1], w),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask_last:
            x = x * self.in_mask
        z = torch.cat([self.trans(x), self.base(x)], dim=-1)
        return self.decoder(z)

    def config(self) -> dict:
        return {"w": self.w, "h": self.h, "mask_last": self.mask_last}


def load_checkpoint(path, w: int = 64, h: int = 8) -> "UniAD":
    """A state dict written by train.py (the ``in_mask`` buffer tells the variant)."""
    sd = torch.load(path, map_location="cpu")
    mask_last = "in_mask" in sd and float(sd["in_mask"][-1]) == 0.0
    model = UniAD(w=w, h=h, mask_last=mask_last)
    if "in_mask" not in sd:  # checkpoints from before the buffer existed
        sd = {**sd, "in_mask": model.in_mask}
    model.load_state_dict(sd)
    return model.eval()


def score_last_step(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Eq. 7: mean over metrics of the squared error at the window's last step."""
    return ((x[..., -1] - recon[..., -1]) ** 2).mean(dim=-1)
