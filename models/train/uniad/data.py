"""Training corpus for Uni-AD: real series, synthetic entities, windows.

Everything here is plain numpy. An *entity* is a float32 array of shape
``(N, T)``: N metrics over T steps, each metric robust-z-scored with the
statistics of its own series (``robust_stats``: the agent's ``RobustStats::fit``,
``src/normalize.rs``), gaps filled and values clipped as the agent builds the
model's input (``robust_z``: ``push_window`` in ``src/detect/uniad/detector.rs``).

Held-out entities (``HELD_OUT_*``) are never read by training: they are the
evaluation set of ``evaluate.py`` and of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

W = 64
# src/normalize.rs
MAD_TO_SIGMA = 1.4826  # the MAD estimates sigma for Gaussian data
MEAN_AD_TO_SIGMA = 1.2533  # the mean absolute deviation estimates sigma
# When the MAD is 0: quantiles of |x - median| and their value for a standard Gaussian.
DEVIATION_QUANTILES = ((0.8, 1.2815515655446), (0.98, 2.3263478740408))
RELATIVE_SCALE_FLOOR = 1e-2  # scale >= this * |median| ...
ABSOLUTE_SCALE_FLOOR = 1e-3  # ... and >= this
# src/detect/uniad/detector.rs: the model's inputs are clipped to +-Z_CLIP
Z_CLIP = 1000.0

# Yahoo A1: every fifth series (real_5, real_10, ..., real_65) is held out.
HELD_OUT_YAHOO = [f"real_{i}.csv" for i in range(5, 68, 5)]
# NAB: series from every labelled category are held out.
HELD_OUT_NAB = [
    "artificialWithAnomaly/art_daily_jumpsup.csv",
    "artificialWithAnomaly/art_increase_spike_density.csv",
    "realAdExchange/exchange-2_cpc_results.csv",
    "realAdExchange/exchange-3_cpm_results.csv",
    "realTraffic/TravelTime_387.csv",
    "realTraffic/occupancy_t4013.csv",
    "realTraffic/speed_7578.csv",
    "realTweets/Twitter_volume_AAPL.csv",
    "realTweets/Twitter_volume_UPS.csv",
]
# Selection entities: labelled series kept out of training too, used only to choose the
# checkpoint (epoch) and the variant by detection quality (train.py), never for the
# reported evaluation.
VAL_YAHOO = [f"real_{i}.csv" for i in range(2, 68, 5)]
VAL_NAB = [
    "artificialWithAnomaly/art_daily_jumpsdown.csv",
    "artificialWithAnomaly/art_load_balancer_spikes.csv",
    "realAdExchange/exchange-4_cpc_results.csv",
    "realTraffic/occupancy_6005.csv",
    "realTraffic/speed_t4013.csv",
    "realTweets/Twitter_volume_GOOG.csv",
]

# Lab multivariate recordings (tests/data/lab/anomaly/<scenario>/<route>.csv, one entity
# per route, 11-12 metrics): whole scenarios are held out, so that no recording of the
# same run (shared host metrics, same load) is seen in training.
LAB_DIR = Path(__file__).resolve().parents[3] / "tests" / "data" / "lab" / "anomaly"
HELD_OUT_LAB = ["mixed", "cpu", "concurrency"]
# Replicates of the held-out scenarios (the same scenario files played with other seeds):
# tests/data/lab-replica/s<seed>/anomaly/<scenario>/ (how they were recorded: its
# README.md). Nothing in training or selection reads them. Named by their seeds; which
# of them informed which scoring choice, and which tested it: STUDIES.md.
LAB_REPLICA_DIR = LAB_DIR.parents[1] / "lab-replica"
LAB_S101_S102 = ["s101", "s102"]
LAB_S103_S104 = ["s103", "s104"]
LAB_S105_S106 = ["s105", "s106"]
LAB_S107_S108 = ["s107", "s108"]
VAL_LAB = ["dependency"]
TRAIN_LAB = ["latency", "errors", "memory"]


def data_dir() -> Path:
    """Datasets root: ``KPIWATCH_DATA`` or ``../shared/datasets`` from the repo root."""
    env = os.environ.get("KPIWATCH_DATA")
    if env:
        root = Path(env)
    else:
        repo = Path(__file__).resolve().parents[3]
        root = repo.parent / "shared" / "datasets"
    if not (root / "yahoo_a1").is_dir() or not (root / "nab").is_dir():
        raise SystemExit(
            f"datasets not found under {root} (expected yahoo_a1/ and nab/); "
            "set KPIWATCH_DATA to the folder that holds them"
        )
    return root


def robust_stats(x: np.ndarray) -> tuple[float, float, int]:
    """``(median, scale, count)`` of the finite values of one series, as the agent's
    ``RobustStats::fit`` (``src/normalize.rs``).

    * NaN and infinities are left out; ``count`` is the number of finite values;
    * median: the middle value, the mean of the two middle ones when the count is even;
    * scale: ``1.4826 * MAD``; when that is exactly 0 (more than half the points equal
      the median: a mostly flat series), the 0.8 quantile of ``|x - median|`` / 1.2816,
      then its 0.98 quantile / 2.3263 (linear interpolation, numpy's default), then
      ``1.2533 *`` the mean absolute deviation from the median, the first that is
      positive; then at least ``1e-2 * |median|`` and at least ``1e-3`` (a constant
      series gets that floor, so z = 0 on it, never a division by zero; a deviation
      under 1 % of the level is at most one sigma);
    * no finite value: ``(0.0, 1.0, 0)``, the agent's ``RobustStats::IDENTITY``.
    """
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0, 0
    med = float(np.median(v))
    dev = np.abs(v - med)
    scale = MAD_TO_SIGMA * float(np.median(dev))
    for q, gaussian in DEVIATION_QUANTILES:
        if scale == 0.0:
            scale = float(np.quantile(dev, q)) / gaussian
    if scale == 0.0:
        scale = MEAN_AD_TO_SIGMA * float(np.mean(dev))
    return med, max(scale, RELATIVE_SCALE_FLOOR * abs(med), ABSOLUTE_SCALE_FLOOR), int(v.size)


def zscore(x: np.ndarray, median: float, scale: float) -> np.ndarray:
    """``(x - median) / scale`` elementwise, float64 (``RobustStats::z``; NaN stays NaN)."""
    return (np.asarray(x, dtype=np.float64) - median) / scale


def robust_z(x: np.ndarray) -> np.ndarray:
    """One series as the model's input, float32: z-scored with ``robust_stats`` of the
    whole series; a gap (NaN or infinite) takes the last finite value before it, leading
    gaps the first finite value (the median when there is none); clipped to
    ``+-Z_CLIP``. The agent fills gaps the same way within each 64-step window, so the
    two differ only for a window that starts inside a gap."""
    v = np.asarray(x, dtype=np.float64)
    med, scale, _ = robust_stats(v)
    finite = np.isfinite(v)
    if not finite.any():
        filled = np.full(v.shape, med)
    else:
        idx = np.where(finite, np.arange(len(v)), -1)
        np.maximum.accumulate(idx, out=idx)
        idx[idx < 0] = int(np.argmax(finite))  # leading gaps: the first finite value
        filled = v[idx]
    z = zscore(filled, med, scale).astype(np.float32)
    return np.clip(z, -np.float32(Z_CLIP), np.float32(Z_CLIP))


@dataclass
class Series:
    name: str
    values: np.ndarray  # raw values, float64
    labels: np.ndarray  # 0/1 per point


def load_yahoo(root: Path, names: list[str] | None = None) -> list[Series]:
    out = []
    files = sorted((root / "yahoo_a1").glob("real_*.csv"))
    for f in files:
        if names is not None and f.name not in names:
            continue
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh))
        v = np.array([float(r["value"]) for r in rows])
        y = np.array([int(r["is_anomaly"]) for r in rows])
        out.append(Series(f"yahoo_a1/{f.name}", v, y))
    return out


def _parse_ts(s: str) -> datetime:
    return datetime.strptime(s.split(".")[0], "%Y-%m-%d %H:%M:%S")


def load_nab(root: Path, names: list[str] | None = None) -> list[Series]:
    with open(root / "nab" / "combined_windows.json") as fh:
        windows = json.load(fh)
    out = []
    for rel in sorted(windows):
        if names is not None and rel not in names:
            continue
        path = root / "nab" / "data" / rel
        if not path.exists():
            continue
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        ts = [_parse_ts(r["timestamp"]) for r in rows]
        v = np.array([float(r["value"]) for r in rows])
        y = np.zeros(len(rows), dtype=np.int64)
        for start, end in windows[rel]:
            a, b = _parse_ts(start), _parse_ts(end)
            for i, t in enumerate(ts):
                if a <= t <= b:
                    y[i] = 1
        out.append(Series(f"nab/{rel}", v, y))
    return out


@dataclass
class Entity:
    name: str
    values: np.ndarray  # raw (N, T), float64, NaN for gaps
    labels: np.ndarray  # 0/1 per step
    metrics: list[str]


def load_lab(scenarios: list[str], lab: Path = LAB_DIR) -> list[Entity]:
    out = []
    for sc in scenarios:
        for f in sorted((lab / sc).glob("*.csv")):
            with open(f, newline="") as fh:
                rows = list(csv.DictReader(fh))
            cols = [c for c in rows[0] if c not in ("timestamp", "label")]
            v = np.array([[float(r[c]) if r[c] not in ("", "NaN", "nan") else np.nan for r in rows]
                          for c in cols])
            y = np.array([int(float(r["label"])) for r in rows])
            out.append(Entity(f"lab/{sc}/{f.stem}", v, y, cols))
    return out


def load_lab_replicas(seeds: list[str], root: Path = LAB_REPLICA_DIR) -> list[Entity]:
    """The held-out scenarios' replicates ``seeds`` (``s101``, ...), named
    ``lab-replica/s<seed>/<scenario>/<route>``."""
    out = []
    for seed in seeds:
        seed_dir = root / seed
        if not seed_dir.is_dir():
            raise SystemExit(f"{seed_dir} not found (record it: tests/data/lab-replica/README.md)")
        for e in load_lab(HELD_OUT_LAB, seed_dir / "anomaly"):
            e.name = f"lab-replica/{seed}/{e.name[len('lab/'):]}"
            out.append(e)
    return out


def training_series(root: Path) -> list[Series]:
    """All Yahoo A1 and NAB series except the held-out and the selection ones."""
    ys = [s for s in load_yahoo(root) if Path(s.name).name not in HELD_OUT_YAHOO + VAL_YAHOO]
    ns = [s for s in load_nab(root) if s.name[len("nab/"):] not in HELD_OUT_NAB + VAL_NAB]
    return ys + ns


def pr_auc_best_f1(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Average precision and best point-wise F1 (ties never split by a threshold)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.diff(s) != 0, True]
    tp = np.cumsum(y)[last]
    fp = np.cumsum(1 - y)[last]
    pos = y.sum()
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return ap, float(f1.max())


def held_out_series(root: Path) -> dict[str, list[Series]]:
    return {
        "yahoo_a1": load_yahoo(root, HELD_OUT_YAHOO),
        "nab": load_nab(root, HELD_OUT_NAB),
    }


def synthetic_entity(rng: np.random.Generator, n: int, t: int) -> np.ndarray:
    """One synthetic entity with ``n`` metrics over ``t`` steps (raw, not normalised).

    Metrics come in groups that share a latent load signal (daily/weekly-like
    seasonality + trend + random walk), each metric a scaled, shifted, possibly
    lagged or inverted copy plus its own noise; level shifts and occasional
    spikes hit whole groups or single metrics, so the model sees both
    correlated and independent behaviour.
    """
    steps = np.arange(t, dtype=np.float64)
    out = np.empty((n, t))
    groups = max(1, int(rng.integers(1, max(2, n // 3 + 2))))
    assign = rng.integers(0, groups, size=n)
    latents = []
    for _ in range(groups):
        period = float(rng.choice([24, 48, 96, 144, 288])) * rng.uniform(0.8, 1.2)
        amp = rng.uniform(0.0, 2.0)
        season = amp * np.sin(2 * np.pi * steps / period + rng.uniform(0, 2 * np.pi))
        if rng.random() < 0.5:
            season += 0.5 * amp * np.sin(4 * np.pi * steps / period + rng.uniform(0, 6.3))
        if rng.random() < 0.2:  # square-ish wave (batch jobs)
            season = amp * np.sign(season)
        trend = rng.normal(0, 1.0) * steps / t
        walk = np.cumsum(rng.normal(0, rng.uniform(0, 0.05), size=t))
        lat = season + trend + walk
        for _ in range(int(rng.poisson(0.7))):  # group-wide level shifts
            at = int(rng.integers(0, t))
            lat[at:] += rng.normal(0, 1.5)
        latents.append(lat)
    for i in range(n):
        lat = latents[assign[i]]
        lag = int(rng.integers(0, 4))
        base = np.roll(lat, lag)
        sign = -1.0 if rng.random() < 0.15 else 1.0
        noise_sd = rng.uniform(0.02, 0.8)
        x = sign * rng.uniform(0.5, 2.0) * base + rng.normal(0, noise_sd, size=t)
        if rng.random() < 0.1:  # counters clamped at zero / quantised metrics
            x = np.round(np.maximum(x, x.min() + 0.5 * (x.max() - x.min())), 1)
        for _ in range(int(rng.poisson(0.3))):
            at = int(rng.integers(0, t))
            x[at:] += rng.normal(0, 2.0)
        x = x * rng.uniform(0.1, 1000) + rng.uniform(-100, 1000)
        out[i] = x
    return out


def normalise_entity(raw: np.ndarray) -> np.ndarray:
    return np.stack([robust_z(row) for row in raw])


def windows(entity: np.ndarray, stride: int, w: int = W) -> np.ndarray:
    """Sliding windows ``(count, N, w)`` of a normalised ``(N, T)`` entity."""
    n, t = entity.shape
    if t < w:
        return np.empty((0, n, w), dtype=np.float32)
    starts = range(0, t - w + 1, stride)
    return np.stack([entity[:, s : s + w] for s in starts]).astype(np.float32)


def build_corpus(root: Path, seed: int, synthetic_entities: int, real_stride: int,
                 synth_stride: int, synth_len: int, max_windows_per_series: int,
                 lab_repeat: int = 0) -> dict[int, np.ndarray]:
    """Windows grouped by metric count N: ``{N: array (count, N, W)}``.

    ``lab_repeat`` > 0 adds the training lab entities (``TRAIN_LAB``), every window
    (stride 1) that many times, each copy with its metrics in another random order.
    """
    rng = np.random.default_rng(seed)
    by_n: dict[int, list[np.ndarray]] = {}
    if lab_repeat > 0:
        for e in load_lab(TRAIN_LAB):
            win = windows(normalise_entity(e.values), 1)
            for _ in range(lab_repeat):
                by_n.setdefault(win.shape[1], []).append(win[:, rng.permutation(win.shape[1])])
    for s in training_series(root):
        win = windows(robust_z(s.values)[None, :], real_stride)
        if len(win) > max_windows_per_series:
            win = win[rng.choice(len(win), max_windows_per_series, replace=False)]
        by_n.setdefault(1, []).append(win)
    for _ in range(synthetic_entities):
        n = int(rng.integers(1, 41))
        ent = normalise_entity(synthetic_entity(rng, n, synth_len))
        by_n.setdefault(n, []).append(windows(ent, synth_stride))
    return {n: np.concatenate(v) for n, v in by_n.items()}
