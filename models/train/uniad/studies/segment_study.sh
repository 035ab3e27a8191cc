#!/usr/bin/env bash
# Segment augmentation on / off and lab data on / off (seed 7, early stopping), then
# segments on / off with lab data for seeds 8 and 9 (3 epochs each); every epoch's
# weights and the committed uniad.pt scored by selection.py (non-held-out entities
# only). CPU, about 25 s per epoch on 2 cores, about 25 minutes in all. Its recorded
# output: segment_study.jsonl (the shipped checkpoint is seed7-lab-seg0.5's epoch 1;
# ../STUDIES.md).
#
#   bash models/train/uniad/studies/segment_study.sh [OUT_DIR]     # default /tmp/uniad-study
set -euo pipefail
cd "$(dirname "$0")/.."   # models/train/uniad: train.py, selection.py
PY=${PY:-../../../.venv-uniad/bin/python}
OUT=${1:-/tmp/uniad-study}
common=(--patience 4 --synthetic-entities 800 --spike-prob 0.9 --threads 2 --keep-epochs)
run() {
    local dir=$OUT/$1
    shift
    mkdir -p "$dir"
    nice -n 5 "$PY" train.py --out "$dir" "${common[@]}" "$@" > "$dir/log.txt" 2>&1
}
run seed7-lab-seg0 --seed 7 --epochs 40 --lab-repeat 4 --segment-prob 0
run seed7-lab-seg0.5 --seed 7 --epochs 40 --lab-repeat 4 --segment-prob 0.5   # shipped: its epoch 1
run seed7-nolab-seg0 --seed 7 --epochs 40 --lab-repeat 0 --segment-prob 0
run seed7-nolab-seg0.5 --seed 7 --epochs 40 --lab-repeat 0 --segment-prob 0.5
for seed in 8 9; do
    run "seed$seed-lab-seg0" --seed "$seed" --epochs 3 --lab-repeat 4 --segment-prob 0
    run "seed$seed-lab-seg0.5" --seed "$seed" --epochs 3 --lab-repeat 4 --segment-prob 0.5
done
"$PY" selection.py "$OUT"/*/epoch*.pt uniad.pt | tee "$OUT/selection.jsonl"
