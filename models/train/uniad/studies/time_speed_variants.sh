#!/usr/bin/env bash
# Attributes tract's Uni-AD time to operation kinds: the release bench binary (carried in
# .gpu_bench/) runs on each graph variant written by speed_variants.py (same folder)
# (the binary reads /work/main/models/uniad.onnx, so /work/main points at each variant),
# N = 8, bucketed plans, beside onnxruntime on the same file; one pinned core.
#   run from the repository root: bash models/train/uniad/studies/time_speed_variants.sh
set -eu
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/speed_out}; mkdir -p "$OUT"
R=$PWD; mkdir -p /work
for v in ${VARIANTS:-shipped attn3d noattn relu noln flat2d flat2d_attn3d}; do
  ln -sfn "$R/.gpu_bench/variants/$v" /work/main
  echo "== $v"
  taskset -c 5 "$R/.gpu_bench/uniad_bench" --bench --warm-up-time 1 --measurement-time 3 'uniad_n8/tract_bucketed' 2>&1 | grep -E "time:" 
  taskset -c 5 python3 - "$R/.gpu_bench/variants/$v/models/uniad.onnx" <<'PY'
import sys, time, numpy as np, onnxruntime as ort
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], o, providers=["CPUExecutionProvider"])
for b in (1, 64, 512):
    x = np.random.default_rng(0).uniform(-3, 3, (b, 8, 64)).astype(np.float32)
    s.run(None, {"x": x}); n = max(3, int(0.5 / max(1e-6, (lambda t: (s.run(None, {"x": x}), time.perf_counter() - t)[1])(time.perf_counter()))))
    r = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n): s.run(None, {"x": x})
        r.append((time.perf_counter() - t) / n)
    print(f"ort b={b}: {np.median(r) / b * 1e6:.1f} us/window")
PY
done 2>&1 | tee "$OUT/speed_variants.log"
