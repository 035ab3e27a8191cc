#!/usr/bin/env bash
# Second GPU call (after gpu_train.sh): Uni-AD variants with checkpoint selection by
# detection quality on the selection entities (data.VAL_*), and three more seeds of the
# DynamicRegress recipe of gpu_train.sh's h32-full run (the shipped model is the seed
# with the best selection F1; every seed's test F1 is reported).
# History for Uni-AD: its part trained the model shipped before 3a4ee20. The shipped
# Uni-AD is trained on the CPU (segment augmentation; command in models/uniad.md).
set -u
export PYTHONUNBUFFERED=1 KPIWATCH_DATA=${KPIWATCH_DATA:-$PWD/.gpu_data}
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
W=/tmp/work; mkdir -p $W/uniad $W/regress/data $W/regress/runs
T0=$(date +%s)
(cd models/train/uniad
 for v in recon-0.5 recon-0.9 mask-0.5 mask-0.9; do
   f="--spike-prob ${v#*-}"; [[ $v == mask-* ]] && f="$f --mask-last"
   timeout 540 python3 train.py --out $W/uniad/$v --seed 7 --device cuda --epochs 40 --patience 4 \
     --synthetic-entities 800 --lab-repeat 4 --threads 1 --max-minutes 6.5 $f > $W/uniad/$v.log 2>&1 &
 done; wait) &
(cd models/train/regress
 for s in train_labeled train_unlabeled val test; do
   python3 dataset.py --out $W/regress/data --scale 2 --only $s > $W/regress/data_$s.log 2>&1 &
 done; wait
 for seed in 1 2 3; do
   timeout 500 python3 train.py --data $W/regress/data --out $W/regress/runs/h32-full-s$seed --hidden 32 --seed $seed \
     --epochs1 20 --epochs2 10 --device cuda --max-minutes 7 --lab-weight 4 > $W/regress/runs/h32-full-s$seed.log 2>&1 &
 done; wait) &
wait
echo "all done after $(( $(date +%s) - T0 )) s" > $W/timing.txt
tar czf "$OUT/uniad2.tgz" -C $W uniad timing.txt
tar czf "$OUT/regress2.tgz" -C $W/regress runs
grep -h "best" $W/uniad/*.log; tail -n 2 $W/uniad/*.log; grep -h "lab_test" -A 3 $W/regress/runs/*.log | head; cat $W/timing.txt
