"""Reference values for the Rust KS / Mann-Whitney U tests (src/detect/regress/stats.rs).

Writes models/golden/regress_stats.json with scipy's two-sided results (method="auto"
for both tests, which is what the Rust code mirrors) and kstwobign survival values for
the asymptotic KS branch. Run from the repository root:

    .venv-regress/bin/python models/train/regress/make_stats_fixtures.py
"""
import json
import pathlib

import numpy as np
import scipy
from scipy import stats

rng = np.random.default_rng(20261123)
cases = []


def add(name, x, y):
    x = [float(v) for v in x]
    y = [float(v) for v in y]
    ks = stats.ks_2samp(x, y, method="auto")
    mw = stats.mannwhitneyu(x, y, alternative="two-sided", method="auto")
    cases.append({"name": name, "x": x, "y": y,
                  "ks_statistic": float(ks.statistic), "ks_p": float(ks.pvalue),
                  "mwu_statistic": float(mw.statistic), "mwu_p": float(mw.pvalue)})


add("tiny_exact", [1.1, 2.3, 0.4, 5.0, 3.3], [2.2, 6.1, 7.4, 4.4, 8.0, 9.1])
add("tiny_separated", [1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11])
add("small_vs_large_exact_mwu", rng.normal(0, 1, 6), rng.normal(0.8, 1, 40))
add("equal_sizes", rng.normal(0, 1, 50), rng.normal(0.3, 1, 50))
add("unequal_sizes", rng.normal(0, 1, 120), rng.normal(0.2, 1.3, 77))
add("shifted_strongly", rng.normal(0, 1, 300), rng.normal(1.5, 1, 280))
add("same_distribution", rng.exponential(1, 300), rng.exponential(1, 300))
add("ties_rounded", np.round(rng.normal(0, 1, 90), 1), np.round(rng.normal(0.1, 1, 70), 1))
add("success_rate_like", np.minimum(1, np.round(1 - rng.exponential(0.01, 200), 3)),
    np.minimum(1, np.round(1 - rng.exponential(0.02, 150), 3)))
add("long_windows", rng.gamma(2, 0.1, 1200), rng.gamma(2, 0.105, 900))
add("coprime_sizes", rng.uniform(0, 1, 97), rng.uniform(0.05, 1, 89))

xs = [0.05, 0.3, 0.6, 0.9, 0.99, 1.0, 1.2, 1.5, 2.0, 3.0]
kstwobign = [[x, float(stats.kstwobign.sf(x))] for x in xs]

out = pathlib.Path(__file__).resolve().parents[2] / "golden" / "regress_stats.json"
out.write_text(json.dumps({"scipy": scipy.__version__, "cases": cases,
                           "kstwobign": kstwobign}, indent=1) + "\n")
print(f"wrote {out} ({len(cases)} cases, scipy {scipy.__version__})")
