"""Model input normalisation; mirrors src/detect/regress/features.rs exactly.

Both windows of a pair are scaled with the *baseline's* statistics, so that "higher at
the same load" survives scaling, and KPI units are relative ("percent-like") so that a
15% slowdown looks the same for a 5 ms and a 500 ms route:
  workload:      w / max(baseline workload)
  response_time: ln(k / m_b) / ln(1.1)            (one unit = 10% slower than the baseline median)
  throughput:    (k - m_b) / (0.1 * m_b)          (one unit = 10% of the baseline median)
  success_rate:  (k - m_b) / 0.005                (one unit = half a percentage point)
with m_b the baseline median of the KPI (floored at 1e-9 for the ratios), every KPI value
clamped to [-50, 50]. Rows where workload or the KPI is NaN are dropped before (as the
Rust prepare step does). A window longer than MAX_STEPS rows is then reduced to at most
MAX_STEPS steps by averaging consecutive groups of k = ceil(T / MAX_STEPS) rows (the last
group may be shorter): load tests are sampled at 1-5 s, so this is one more sampling
interval, and it bounds the LSTM's cost.
"""
import math

import numpy as np

CLAMP = 50.0
MAX_STEPS = 120
FLOOR = 1e-9


def scale_kpi(kpi: str, k: np.ndarray, base: np.ndarray) -> np.ndarray:
    m = float(np.median(base))
    if kpi == "response_time":
        m = max(m, FLOOR)
        v = np.log(np.maximum(k, FLOOR) / m) / math.log(1.1)
    elif kpi == "throughput":
        v = (k - m) / max(0.1 * abs(m), FLOOR)
    else:
        v = (k - m) / 0.005
    return np.clip(v, -CLAMP, CLAMP)


def downsample(x: np.ndarray, max_steps: int = MAX_STEPS) -> np.ndarray:
    """Means of consecutive groups of ceil(T / max_steps) rows."""
    t = len(x)
    if t <= max_steps:
        return x
    k = -(-t // max_steps)
    return np.stack([x[i: i + k].mean(axis=0) for i in range(0, t, k)])


def clean(window: dict, kpi: str) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(window["workload"], dtype=np.float64)
    k = np.asarray(window[kpi], dtype=np.float64)
    keep = ~(np.isnan(w) | np.isnan(k))
    return w[keep], k[keep]


def pair_features(baseline: dict, current: dict, kpi: str) -> tuple[np.ndarray, np.ndarray]:
    """[T_b, 2] and [T_c, 2] float32 arrays (workload, kpi)."""
    wb, kb = clean(baseline, kpi)
    wc, kc = clean(current, kpi)
    w_scale = max(float(wb.max()), 1e-12)

    def seq(w, k):
        return downsample(np.stack([w / w_scale, scale_kpi(kpi, k, kb)], axis=1)).astype(np.float32)

    return seq(wb, kb), seq(wc, kc)
