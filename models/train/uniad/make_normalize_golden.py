"""Golden pairs for the robust z-score normaliser: the training side's ``data.robust_stats``
and ``data.zscore`` on a few series, for ``tests/it/normalize_golden.rs``, which checks
that the agent's ``RobustStats::fit`` / ``RobustStats::z`` (``src/normalize.rs``) give the
same median, scale, count and z-scores (relative tolerance 1e-9).

Writes ``models/golden/normalize_flat.json``. Needs numpy only; run from the repository
root (deterministic: the same file every run with the pinned numpy):

    python models/train/uniad/make_normalize_golden.py

The series stress the scale's fallbacks: flat and constant series (the relative floor),
mostly-zero series and steps (MAD = 0: higher quantiles of the absolute deviations, then
the mean absolute deviation), gaps (NaN values are
left out of the fit and give a NaN z; written as ``null``), a series with no finite value
(the identity statistics, where the agent's ``fit`` returns ``None``), and ordinary noisy
series for reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import data

REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "models" / "golden" / "normalize_flat.json"


def series() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261124)
    noisy = rng.normal(50.0, 3.0, 200)
    gaps = rng.normal(-2.0, 0.5, 120)
    gaps[[0, 1, 2, 40, 41, 77, 119]] = np.nan
    bursts = np.zeros(150)
    bursts[[10, 11, 60, 61, 62, 130]] = [3.0, 5.0, 1.0, 8.0, 2.0, 4.0]
    step = np.r_[np.full(120, 10.0), np.full(80, 14.0)]
    noisy_step = np.r_[rng.normal(100.0, 1.0, 90), rng.normal(130.0, 1.0, 60)]
    return {
        "flat": np.full(64, 5.0),
        "flat_large_level": np.full(100, 4200.0),
        "flat_negative_level": np.full(33, -250.0),
        "flat_with_rounding_noise": 250.0 + rng.choice([-1e-6, 0.0, 1e-6], 96),
        "flat_with_one_spike": np.r_[np.full(63, 1.0), [9.0]],
        "constant_zero": np.zeros(64),
        "mostly_zero_bursts": bursts,
        "idle_with_frequent_bursts": np.r_[np.zeros(90), rng.uniform(5.0, 50.0, 10)],
        "few_levels": np.r_[np.full(140, 3.0), np.full(50, 4.0), np.full(10, 5.0)],
        "step": step,
        "noisy_step": noisy_step,
        "nan_gaps": gaps,
        "flat_with_gaps": np.r_[[np.nan], np.full(30, 0.25), [np.nan, np.nan], np.full(30, 0.25)],
        "all_nan": np.full(8, np.nan),
        "normal_noisy": noisy,
        "even_count": np.array([4.0, 1.0, 3.0, 2.0]),
        "single_outlier": np.array([1.0, 2.0, 3.0, 4.0, 100.0]),
        "tiny_spread": 1e-4 * rng.normal(0.0, 1.0, 50),
    }


def opt(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def main() -> None:
    cases = []
    for name, x in series().items():
        med, scale, count = data.robust_stats(x)
        cases.append({
            "name": name,
            "values": [opt(v) for v in x],
            "median": med,
            "scale": scale,
            "count": count,
            "z": [opt(v) for v in data.zscore(x, med, scale)],
        })
    doc = {
        "generator": "models/train/uniad/make_normalize_golden.py",
        "numpy": np.__version__,
        "rule": "median and scale of the finite values; scale = 1.4826 MAD, or when that is 0 the "
                "first positive of q0.8(|x - median|) / 1.2816, q0.98(|x - median|) / 2.3263, "
                "1.2533 mean |x - median|; at least max(1e-2 |median|, 1e-3); z = (x - median) / scale; "
                "count 0: median 0, scale 1 (identity); null = NaN",
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{OUT.relative_to(REPO)}: {len(cases)} series")


if __name__ == "__main__":
    main()
