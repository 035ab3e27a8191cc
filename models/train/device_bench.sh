#!/usr/bin/env bash
# Speed figures on the GPU machine's quiet CPU (its 16 cores idle but one, pinned with
# taskset): tract (the release bench binaries built here with `cargo bench --no-run`,
# stripped, carried in .gpu_bench/) and, in the same session, PyTorch eager and
# onnxruntime with the same weights, all single thread. The bench binaries find the
# models through the build-time CARGO_MANIFEST_DIR, hence the /work/main link.
set -eu
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bench_out}; mkdir -p "$OUT"
mkdir -p /work; [ -e /work/main ] || ln -s "$PWD" /work/main
cd /work/main
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400 > "$OUT/cpu.txt"
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'onnxruntime', onnxruntime.__version__)" >> "$OUT/cpu.txt"
P="taskset -c 5"
(cd models/train/uniad && $P python3 bench.py --no-tract --json "$OUT/uniad_py.json") 2>&1 | tee "$OUT/uniad_py.log"
$P ./.gpu_bench/uniad_bench --bench --warm-up-time 1 --measurement-time 3 2>&1 | grep -E "^uniad|time:" | tee "$OUT/uniad_tract.log"
mkdir -p /tmp/r && cp models/train/regress/regress.pt /tmp/r/model.pt
$P ./.gpu_bench/regress_bench --bench 2>&1 | grep -E "^regress|time:|thrpt:" | tee "$OUT/regress_tract.log"
(cd models/train/regress && $P python3 bench_torch.py --run /tmp/r) 2>&1 | tee "$OUT/regress_torch.json"
