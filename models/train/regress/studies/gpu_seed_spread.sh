#!/usr/bin/env bash
# Seed spread of the shipped DynamicRegress recipe on the GPU: seeds 1, 2 and 3 of
# gpu_train.sh's h32-full run (hidden 32, --lab-weight 4, 20 + 10 epochs); each run's
# lab test split lands in its log (results: ../results/lab_test_h32-full-s<seed>.json;
# figures and how they were used: ../STUDIES.md). Checkpoints and logs are packed into
# $OUT/regress_seeds.tgz.
#   run from the repository root; datasets in $KPIWATCH_DATA (default .gpu_data)
set -u
export PYTHONUNBUFFERED=1 KPIWATCH_DATA=${KPIWATCH_DATA:-$PWD/.gpu_data}
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
W=/tmp/work; mkdir -p $W/regress/data $W/regress/runs
T0=$(date +%s)
(cd models/train/regress
 for s in train_labeled train_unlabeled val test; do
   python3 dataset.py --out $W/regress/data --scale 2 --only $s > $W/regress/data_$s.log 2>&1 &
 done; wait
 for seed in 1 2 3; do
   timeout 500 python3 train.py --data $W/regress/data --out $W/regress/runs/h32-full-s$seed --hidden 32 --seed $seed \
     --epochs1 20 --epochs2 10 --device cuda --max-minutes 7 --lab-weight 4 > $W/regress/runs/h32-full-s$seed.log 2>&1 &
 done; wait)
echo "all done after $(( $(date +%s) - T0 )) s" > $W/regress/timing.txt
tar czf "$OUT/regress_seeds.tgz" -C $W/regress runs timing.txt
grep -h "lab_test" -A 3 $W/regress/runs/*.log | head; cat $W/regress/timing.txt
