"""The scoring protocol shared by checkpoint selection (``selection.py``), the held-out
evaluation (``evaluate.py``) and the studies (``studies/``): which steps are scored, and
the agent's score over last-step reconstruction errors.

* Scored steps of an entity of T points: t >= max(W - 1, T // 4).
* The agent's default score (``scale=None``): the paper's plain eq. 7, the mean over
  metrics of the squared errors at the last step.
* ``SCALED``, the agent's rule with ``scale_errors: true`` (``src/detect/uniad/scale.rs``):
  each metric's squared error at the last step divided by its median over up to 64
  windows spread evenly over the entity's history (floor 0.01), then the mean over
  metrics. Why it is an option and not the default: ``STUDIES.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import data

FIT_WINDOWS, ERROR_SCALE_FLOOR = 64, 0.01  # src/detect/uniad/scale.rs

# A float32 (batch, N, W) array to its reconstruction (onnxruntime or PyTorch).
Reconstruct = Callable[[np.ndarray], np.ndarray]


def onnx_reconstruct(path: Path) -> Reconstruct:
    """The ONNX model at ``path`` in onnxruntime, one thread on the CPU."""
    import onnxruntime as ort  # here: selection.py (PyTorch only) need not load it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})[0]


def last_step_errors(z: np.ndarray, reconstruct: Reconstruct) -> np.ndarray:
    """(T-W+1, N) squared errors at the last step of the window ending at each t >= W - 1
    of a normalised (N, T) entity."""
    win = data.windows(z, 1)  # (T-W+1, N, W)
    out = np.empty(win.shape[:2], dtype=np.float64)
    for s in range(0, len(win), 4096):
        x = win[s : s + 4096]
        out[s : s + len(x)] = (x[:, :, -1] - reconstruct(x)[:, :, -1]) ** 2
    return out


def first_scored(t: int) -> int:
    """First scored step of an entity of ``t`` points (steps before it are history)."""
    return max(data.W - 1, t // 4)


def fit_windows(avail: int) -> list[int]:
    """Indices of up to FIT_WINDOWS of ``avail`` windows spread evenly, the last one
    included (the agent's ``fit_window_ends``)."""
    count = min(avail, FIT_WINDOWS)
    if count == 1:
        return [0]
    return [(i * (avail - 1) + (count - 1) // 2) // (count - 1) for i in range(count)]


@dataclass(frozen=True)
class Scale:
    """A rule for each metric's error scale: a percentile (``None``: the mean) of its
    errors over the windows of ``fit_windows``, floored."""

    percentile: float | None
    floor: float

    def of(self, err: np.ndarray) -> np.ndarray:
        fit = err[fit_windows(len(err))]
        stat = fit.mean(axis=0) if self.percentile is None else np.percentile(fit, self.percentile, axis=0)
        return np.maximum(stat, self.floor)


SCALED = Scale(50.0, ERROR_SCALE_FLOOR)  # the median


def uniad_scores(err: np.ndarray, scale: Scale | None = None) -> np.ndarray:
    """Score per window from its ``(windows, N)`` last-step squared errors; ``scale=None``
    is the paper's plain eq. 7 (the agent's default)."""
    if scale is not None:
        err = err / scale.of(err)
    return err.mean(axis=1)


def zscore_scores(z: np.ndarray) -> np.ndarray:
    """The robust z-score detector on a normalised ``(N, T)`` entity: |z|, max over metrics."""
    return np.abs(z).max(axis=0).astype(np.float64)
