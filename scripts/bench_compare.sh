#!/usr/bin/env bash
# Compares the speed of two commits in one run: builds both in release mode (one shared
# target directory, so dependencies build once), then runs each benchmark alternately,
# base then head, ROUNDS times, each pinned to the same core, and prints the medians and
# the head/base ratios. For refactors that must not move the figures of BENCHMARKS.md.
#
#   bash scripts/bench_compare.sh BASE_REV [HEAD_REV]     (HEAD_REV default: HEAD)
#
# Environment: ROUNDS (default 2), CORE (default 1), OUT (default /tmp/kpiwatch-bench),
# BENCHES (default "cycle uniad adsketch regress").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

base=${1:?usage: bench_compare.sh BASE_REV [HEAD_REV]}
head=${2:-HEAD}
rounds=${ROUNDS:-2}
benches=${BENCHES:-cycle uniad adsketch regress}
core=${CORE:-1}
out=${OUT:-/tmp/kpiwatch-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$out/target}
mkdir -p "$out"

# The benches and their criterion filters: the figures BENCHMARKS.md reports.
uniad_filter='uniad_n8/native/(1|64)$|uniad_n38/native/64$|detector_n8/plain'
regress_filter='T(60|300)/native/batch1$'
criterion_args=(--warm-up-time 1 --measurement-time 3)

build() { # rev -> prints "name path" per bench executable
  local rev=$1 dir="$out/src-$1"
  if [ ! -d "$dir" ]; then
    git worktree add -f "$dir" "$rev" -q
  fi
  (cd "$dir" && cargo bench --no-run --bench cycle --bench uniad --bench adsketch --bench regress \
    --message-format=json 2>/dev/null) |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])'
}

declare -A exe
for rev in "$base" "$head"; do
  echo "== building $rev" >&2
  while read -r name path; do exe["$rev/$name"]=$path; done < <(build "$rev")
done

run() { # rev bench args... ; output to $out/<round>-<rev>-<bench>.txt
  local rev=$1 bench=$2 round=$3
  shift 3
  local dir="$out/src-$rev"
  (cd "$dir" && taskset -c "$core" "${exe[$rev/$bench]}" --bench "$@") \
    > "$out/$round-$(echo "$rev" | tr / _)-$bench.txt" 2>&1
}

for round in $(seq 1 "$rounds"); do
  for rev in "$base" "$head"; do
    echo "== round $round: $rev" >&2
    for bench in $benches; do
      case $bench in
        cycle) run "$rev" cycle "$round" ;;
        uniad) run "$rev" uniad "$round" "${criterion_args[@]}" "$uniad_filter" ;;
        adsketch) run "$rev" adsketch "$round" "${criterion_args[@]}" ;;
        regress) run "$rev" regress "$round" "${criterion_args[@]}" "$regress_filter" ;;
      esac
    done
  done
done

python3 - "$out" "$base" "$head" "$rounds" "$benches" <<'EOF'
import re, statistics, sys
out, base, head, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
benches = sys.argv[5].split()
unit = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}

def figures(rev, bench, rnd):
    text = open(f"{out}/{rnd}-{rev.replace('/', '_')}-{bench}.txt").read()
    got = {}
    if bench == "cycle":
        m = re.search(r"warm-up cycle.*wall ([\d.]+) s, cpu ([\d.]+) s", text)
        got["cycle warm-up CPU (s)"] = float(m.group(2))
        m = re.search(r"steady cycle.*wall mean ([\d.]+) s.*cpu ([\d.]+) s/cycle, peak RSS ([\d.]+) MB", text)
        got["cycle steady CPU (s)"] = float(m.group(2))
        got["cycle peak RSS (MB)"] = float(m.group(3))
        return got
    # criterion: "name\n   time:   [lo mid hi]" (the name may share the line)
    for m in re.finditer(r"(\S+)\s+time:\s+\[\S+ \S+ ([\d.]+) (\S+) \S+ \S+\]", text):
        got[f"{bench} {m.group(1)} (µs)"] = float(m.group(2)) * unit[m.group(3)]
    return got

rows = {}
for rev in (base, head):
    for bench in benches:
        for rnd in range(1, rounds + 1):
            for k, v in figures(rev, bench, rnd).items():
                rows.setdefault(k, {}).setdefault(rev, []).append(v)
print(f"| figure | {base} | {head} | {head} / {base} |")
print("|---|---:|---:|---:|")
for k, by_rev in rows.items():
    b, h = (statistics.median(by_rev.get(r, [float("nan")])) for r in (base, head))
    print(f"| {k} | {b:.4g} | {h:.4g} | {h / b:.3f} |")
EOF
