"""Queueing-model load-test simulator for DynamicRegress training data.

A load test drives a service with a closed loop of virtual users (VUs): each VU sends a
request, waits for the response, thinks for Z seconds, and sends again. The service has
`servers` parallel workers of mean service time S (finite capacity c/S requests/s).

Per time step the simulator solves the closed-loop operating point for the current
number of VUs N (Little's law, X·(R+Z) = N) with an M/M/c-style queueing delay
(Sakasegawa's approximation), so that latency grows as utilisation nears 1 and
throughput saturates at c/S. Requests slower than the timeout fail; on top of that the
service has a base error rate. The latency follows load with a small lag (the queue
needs time to build), and the measurements are noisy: Poisson request counts per
sampling interval, binomial failures, log-normal latency noise.

A *pair* is (baseline test, current test) of the same interface (service parameters).
Normal pairs differ only in load profile, duration, sampling and noise (the paper's
Fig. 1(b)). Regression pairs differ by a degradation of the service: slower service,
fewer workers (earlier saturation), more errors or a shorter timeout, from subtle to gross.

Labels are per KPI and counterfactual: the current load profile is replayed, noise-free,
on the baseline service and on the current service; a KPI regressed when the degraded
service is clearly worse on the same load (response time ≥ +10%, throughput ≤ −5%,
success rate ≤ −0.5 points, means over the window). Changes inside an ambiguity band
(+3..+10%, −2..−5%, −0.2..−0.5 points) get label -1 ("ambiguous": kept out of the
labeled sets, used as unlabeled data).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.signal import lfilter

KPIS = ("response_time", "throughput", "success_rate")

# label thresholds (regressed) and ambiguity band starts
RT_REG, RT_AMB = 1.10, 1.03
TPS_REG, TPS_AMB = 0.95, 0.98
SR_REG, SR_AMB = 0.005, 0.002


@dataclasses.dataclass
class Service:
    service_time: float  # S, seconds
    servers: int  # c
    think: float  # Z, seconds
    timeout: float  # seconds
    base_error: float  # fraction of requests failing regardless of load
    delay: float = 0.0  # fixed added latency (s) that holds no worker (a sleep, a slow downstream)

    def knee(self) -> float:
        """VUs at which the service saturates (c·(S+Z)/S)."""
        return self.servers * (self.service_time + self.think) / self.service_time


def random_service(rng: np.random.Generator) -> Service:
    s = float(np.exp(rng.uniform(np.log(0.005), np.log(0.5))))
    return Service(
        service_time=s,
        servers=int(rng.integers(2, 65)),
        think=float(rng.uniform(0.2, 3.0)),
        timeout=float(max(rng.uniform(1.0, 10.0), 8 * s)),
        base_error=float(rng.choice([0.0, rng.uniform(0.0, 0.01)])),
    )


def degrade(svc: Service, rng: np.random.Generator) -> tuple[Service, str]:
    """One or two degradations, subtle to gross."""
    kinds = ["slower", "capacity", "errors", "timeout", "delay"]
    chosen = rng.choice(kinds, size=int(rng.choice([1, 1, 1, 2])), replace=False)
    d = dataclasses.replace(svc)
    for k in chosen:
        if k == "slower":
            d.service_time *= float(np.exp(rng.uniform(np.log(1.15), np.log(3.0))))
        elif k == "capacity":
            d.servers = max(1, int(round(d.servers * rng.uniform(0.3, 0.8))))
        elif k == "errors":
            d.base_error = min(0.5, d.base_error + float(np.exp(rng.uniform(np.log(0.006), np.log(0.15)))))
        elif k == "timeout":
            d.timeout *= float(rng.uniform(0.15, 0.6))
        elif k == "delay":
            # fixed added latency (lab: latency_ms, jitter_ms, dependency_delay_ms), 0.3-10x S
            d.delay += d.service_time * float(np.exp(rng.uniform(np.log(0.3), np.log(10.0))))
    return d, "+".join(sorted(chosen))


def load_profile(rng: np.random.Generator, n: int, peak: float) -> np.ndarray:
    """VUs per step: linear / logarithmic ramp, steps, plateau, ramp-hold-down."""
    t = np.linspace(0.0, 1.0, n)
    kind = rng.integers(0, 5)
    if kind == 0:
        u = t
    elif kind == 1:
        k = rng.uniform(5, 50)
        u = np.log1p(k * t) / np.log1p(k)
    elif kind == 2:
        steps = int(rng.integers(3, 8))
        u = np.ceil(np.maximum(t, 1e-9) * steps) / steps
    elif kind == 3:
        ramp = rng.uniform(0.05, 0.3)
        u = np.minimum(1.0, t / ramp)
    else:
        a, b = sorted(rng.uniform(0.1, 0.9, size=2))
        u = np.where(t < a, t / a, np.where(t < b, 1.0, np.maximum(0.1, (1 - t) / (1 - b))))
    start = rng.uniform(0.0, 0.2)
    return np.maximum(1.0, peak * (start + (1 - start) * u))


def operating_point(n_users: np.ndarray, svc: Service) -> tuple[np.ndarray, np.ndarray]:
    """Throughput X and mean response time R for each VU count (vectorised bisection)."""
    s, c, z = svc.service_time, svc.servers, svc.think
    cap = c / s
    expo = math.sqrt(2 * (c + 1)) - 1

    def resp(x):
        rho = np.clip(x / cap, 0, 1 - 1e-9)
        return s + s * rho**expo / (c * (1 - rho)) + svc.delay

    lo = np.zeros_like(n_users)
    hi = np.full_like(n_users, cap * (1 - 1e-9))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        f = mid * (resp(mid) + z) - n_users
        lo = np.where(f < 0, mid, lo)
        hi = np.where(f < 0, hi, mid)
    x = 0.5 * (lo + hi)
    return x, resp(x)


def expected_kpis(users: np.ndarray, svc: Service) -> dict[str, np.ndarray]:
    """Noise-free KPIs on a VU profile (also used for the counterfactual labels)."""
    x, r = operating_point(users, svc)
    # The queue builds with a lag: first-order filter on R (time constant ~3 steps).
    lagged, _ = lfilter([1 / 3], [1, -2 / 3], r, zi=[2 / 3 * r[0]])
    # Exponential tail of response times: share slower than the timeout fails.
    p_timeout = np.exp(-svc.timeout / np.maximum(lagged, 1e-9))
    ok = (1 - svc.base_error) * (1 - p_timeout)
    rt = np.minimum(lagged, svc.timeout)
    return {"response_time": rt, "throughput": x * ok, "success_rate": ok, "workload": users}


def run_test(rng: np.random.Generator, svc: Service, users: np.ndarray, dt: float) -> dict[str, np.ndarray]:
    """A noisy load test: per sample, Poisson request counts over dt seconds."""
    e = expected_kpis(users, svc)
    sent = rng.poisson(np.maximum(e["throughput"] / np.maximum(e["success_rate"], 1e-9), 0) * dt)
    okn = rng.binomial(sent, np.clip(e["success_rate"], 0, 1))
    sr = np.where(sent > 0, okn / np.maximum(sent, 1), 1.0)
    tps = okn / dt
    sigma = rng.uniform(0.03, 0.12)
    rt = e["response_time"] * np.exp(rng.normal(0, sigma, users.shape) - sigma**2 / 2)
    # mean of fewer requests is noisier
    rt *= 1 + rng.normal(0, 1, users.shape) * 0.3 / np.sqrt(np.maximum(sent, 1))
    rt = np.maximum(rt, 1e-4)
    return {"timestamp": np.arange(len(users)) * dt, "workload": users.astype(float),
            "response_time": rt, "throughput": tps, "success_rate": sr}


def trailing_mean(x: np.ndarray, k: int) -> np.ndarray:
    c = np.cumsum(np.r_[0.0, x])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(0, i - k)
    return (c[i] - c[lo]) / (i - lo)


def label_pair(users_cur: np.ndarray, base: Service, cur: Service) -> dict[str, int]:
    """Counterfactual per-KPI labels: 1 regressed, 0 normal, -1 ambiguous."""
    a = expected_kpis(users_cur, base)
    b = expected_kpis(users_cur, cur)
    rt = b["response_time"].mean() / a["response_time"].mean()
    tps = b["throughput"].mean() / a["throughput"].mean()
    sr = a["success_rate"].mean() - b["success_rate"].mean()

    def lab(reg, amb):
        return 1 if reg else (-1 if amb else 0)

    return {"response_time": lab(rt >= RT_REG, rt > RT_AMB),
            "throughput": lab(tps <= TPS_REG, tps < TPS_AMB),
            "success_rate": lab(sr >= SR_REG, sr > SR_AMB)}


def make_pair(rng: np.random.Generator, regression: bool, svc: Service | None = None) -> dict:
    svc = svc or random_service(rng)
    knee = svc.knee()

    def one_profile():
        # 20..400 samples, log-uniform: short smoke tests (the lab's are 25-45 s) to long soaks
        n = int(np.exp(rng.uniform(np.log(20), np.log(401))))
        dt = float(rng.choice([1.0, 1.0, 2.0, 5.0]))
        peak = knee * float(np.exp(rng.uniform(np.log(0.15), np.log(2.0))))
        return load_profile(rng, n, peak), dt

    ub, dtb = one_profile()
    if regression and rng.random() < 0.5:
        # same load profile as the baseline (a re-run), new noise
        uc, dtc = ub.copy(), dtb
    else:
        uc, dtc = one_profile()
    cur_svc = dataclasses.replace(svc)
    if rng.random() < 0.5:
        # Environment drift between the two tests (another host load, warmer caches, a
        # faster build): the lab's later runs are up to ~20% faster than its baselines.
        # Mostly faster, at most +3% slower, so it stays below the labels' ambiguity band.
        cur_svc.service_time *= float(np.exp(rng.uniform(np.log(0.75), np.log(1.03))))
    cur_svc, kind = degrade(cur_svc, rng) if regression else (cur_svc, "none")
    base = run_test(rng, svc, ub, dtb)
    cur = run_test(rng, cur_svc, uc, dtc)
    if rng.random() < 0.6:
        # Prometheus-style rate windows: trailing means over k samples (the lab: 5 s at 1 s)
        k = int(rng.integers(2, 7))
        for t in (base, cur):
            for key in KPIS:
                t[key] = trailing_mean(t[key], k)
    labels = label_pair(uc, svc, cur_svc)
    return {"baseline": base, "current": cur, "labels": labels, "degradation": kind}
