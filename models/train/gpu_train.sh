#!/usr/bin/env bash
# One call on the GPU machine (H100, 16 cores): trains Uni-AD and the DynamicRegress
# variants concurrently, each under a wall-clock cap, and packs checkpoints + logs into
# $OUT (export, golden vectors and evaluation then run locally with the pinned venvs).
#   run from the repository root; datasets in $KPIWATCH_DATA (default .gpu_data)
# Its DynamicRegress run h32-full is the shipped model's recipe (models/regress.md); its
# Uni-AD part is not the shipped Uni-AD recipe (CPU, segment augmentation: models/uniad.md).
# What each part found: models/train/{uniad,regress}/STUDIES.md.
set -u
export PYTHONUNBUFFERED=1 KPIWATCH_DATA=${KPIWATCH_DATA:-$PWD/.gpu_data}
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
W=/tmp/work; mkdir -p $W/uniad $W/regress/data $W/regress/runs
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > $W/env.txt
python3 -c "import torch, numpy, scipy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'scipy', scipy.__version__)" >> $W/env.txt
nproc >> $W/env.txt
T0=$(date +%s)

# --- Uni-AD (main run, seed 7, and a seed-8 repeat for the spread) ---
(cd models/train/uniad && for seed in 7 8; do
   timeout 540 python3 train.py --out $W/uniad/s$seed --seed $seed --device cuda --epochs 40 --patience 3 \
     --synthetic-entities 800 --lab-repeat 4 --threads 1 --max-minutes 7 > $W/uniad/s$seed.log 2>&1 &
 done; wait) &

# --- DynamicRegress: data (4 splits in parallel), then 12 runs in parallel ---
(cd models/train/regress
 for s in train_labeled train_unlabeled val test; do
   python3 dataset.py --out $W/regress/data --scale 2 --only $s > $W/regress/data_$s.log 2>&1 &
 done; wait
 echo "data done after $(( $(date +%s) - T0 )) s" >> $W/regress/timing.log
 LEFT=$(( 520 - ($(date +%s) - T0) ))
 MIN=$(python3 -c "print(round(($LEFT - 40) / 60, 2))")
 for h in 32 64; do
   for v in full nolab no-workload no-aug no-weight no-pseudo; do
     case $v in
       full) f="--lab-weight 4 --baselines";; nolab) f="--lab-weight 0";;
       *) f="--lab-weight 4 --$v";;
     esac
     timeout $LEFT python3 train.py --data $W/regress/data --out $W/regress/runs/h$h-$v --hidden $h \
       --epochs1 20 --epochs2 10 --device cuda --max-minutes $MIN $f > $W/regress/runs/h$h-$v.log 2>&1 &
   done
 done; wait
 echo "train done after $(( $(date +%s) - T0 )) s" >> $W/regress/timing.log) &
wait
echo "all done after $(( $(date +%s) - T0 )) s" >> $W/env.txt
tar czf "$OUT/uniad.tgz" -C $W uniad
tar czf "$OUT/regress.tgz" -C $W/regress runs timing.log $(cd $W/regress && ls data_*.log)
cp $W/env.txt "$OUT/env.txt"
tail -n 3 $W/uniad/*.log $W/regress/runs/*.log
