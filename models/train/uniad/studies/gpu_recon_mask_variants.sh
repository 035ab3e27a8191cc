#!/usr/bin/env bash
# Four Uni-AD variants on the GPU, each selected by detection quality on the selection
# entities (data.VAL_*): plain reconstruction or last-step masking (--mask-last), spike
# augmentation 0.5 or 0.9 (seed 7, lab data, no segment augmentation). Not how the
# shipped model is trained (CPU, segment augmentation: models/uniad.md); what these runs
# chose and when: ../STUDIES.md. Checkpoints and logs are packed into $OUT/uniad2.tgz.
#   run from the repository root; datasets in $KPIWATCH_DATA (default .gpu_data)
set -u
export PYTHONUNBUFFERED=1 KPIWATCH_DATA=${KPIWATCH_DATA:-$PWD/.gpu_data}
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
W=/tmp/work; mkdir -p $W/uniad
T0=$(date +%s)
(cd models/train/uniad
 for v in recon-0.5 recon-0.9 mask-0.5 mask-0.9; do
   f="--spike-prob ${v#*-}"; [[ $v == mask-* ]] && f="$f --mask-last"
   timeout 540 python3 train.py --out $W/uniad/$v --seed 7 --device cuda --epochs 40 --patience 4 \
     --synthetic-entities 800 --lab-repeat 4 --threads 1 --max-minutes 6.5 $f > $W/uniad/$v.log 2>&1 &
 done; wait)
echo "all done after $(( $(date +%s) - T0 )) s" > $W/timing.txt
tar czf "$OUT/uniad2.tgz" -C $W uniad timing.txt
grep -h "best" $W/uniad/*.log; tail -n 2 $W/uniad/*.log; cat $W/timing.txt
