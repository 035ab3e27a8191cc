#!/usr/bin/env bash
# The live demo (README's first command): a real Prometheus on loopback scraping
# node_exporter and kpiwatch, a small CPU workload that comes and goes, and kpiwatch
# scoring the node with the node-exporter preset. Prints where to look and a live
# summary of the scores. Ctrl-C stops everything it started.
#
# One minute in, a second node_exporter starts (a new entity): Uni-AD scores it once
# it has one window of points, with no training step.
#
# Ports (override with env): PROM_PORT=19090 NODE_PORT=19100 LATE_NODE_PORT=19101
# KPIWATCH_PORT=19847.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
PROM_PORT="${PROM_PORT:-19090}"
NODE_PORT="${NODE_PORT:-19100}"
LATE_NODE_PORT="${LATE_NODE_PORT:-19101}"
KPIWATCH_PORT="${KPIWATCH_PORT:-19847}"
DEMO="$ROOT/.demo"

bash scripts/install-deps.sh
echo "== building kpiwatch (release; the first build takes a few minutes)"
cargo build --release --quiet --bin kpiwatch
BIN="$ROOT/target/release/kpiwatch"

for port in "$PROM_PORT" "$NODE_PORT" "$LATE_NODE_PORT" "$KPIWATCH_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo: port $port is in use; set PROM_PORT/NODE_PORT/LATE_NODE_PORT/KPIWATCH_PORT to free ports." >&2
    exit 1
  fi
done

rm -rf "$DEMO" && mkdir -p "$DEMO/prometheus-data" "$DEMO/state"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping the demo"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # The workload loop has children of its own.
  pkill -P "$$" 2>/dev/null || true
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs were in $DEMO/*.log"
}
trap cleanup INT TERM EXIT

cat >"$DEMO/prometheus.yml" <<YAML
global:
  scrape_interval: 2s
  evaluation_interval: 2s
scrape_configs:
  - job_name: node
    # The second target is down until the demo starts it one minute in.
    static_configs: [{targets: ['127.0.0.1:$NODE_PORT', '127.0.0.1:$LATE_NODE_PORT']}]
  - job_name: kpiwatch
    # kpiwatch re-exports its entities' labels (instance, job, ...): keep them.
    honor_labels: true
    static_configs: [{targets: ['127.0.0.1:$KPIWATCH_PORT']}]
YAML

prometheus-node-exporter --web.listen-address="127.0.0.1:$NODE_PORT" >"$DEMO/node_exporter.log" 2>&1 &
pids+=($!)
prometheus --config.file="$DEMO/prometheus.yml" --storage.tsdb.path="$DEMO/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$DEMO/prometheus.log" 2>&1 &
pids+=($!)

# The workload: 20 s of CPU burn every 60 s, so that cpu_busy_ratio and load1 move.
( while true; do sleep 40; timeout 20 sha256sum /dev/zero >/dev/null 2>&1 || true; done ) &
pids+=($!)

for _ in $(seq 1 60); do
  curl -fs "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null 2>&1 && break
  sleep 0.5
done

PROMETHEUS_URL="http://127.0.0.1:$PROM_PORT" KPIWATCH_LISTEN="127.0.0.1:$KPIWATCH_PORT" \
KPIWATCH_STATE_DIR="$DEMO/state" KPIWATCH_INTERVAL=10s KPIWATCH_STEP=2s KPIWATCH_HISTORY=30m \
  "$BIN" run --config config/presets/node-exporter.yaml >"$DEMO/kpiwatch.log" 2>&1 &
pids+=($!)

cat <<TXT

== kpiwatch demo is running (Ctrl-C stops everything)
  Prometheus   http://127.0.0.1:$PROM_PORT/graph?g0.expr=kpiwatch_anomaly_score
  kpiwatch     http://127.0.0.1:$KPIWATCH_PORT/metrics   (ready: /-/ready)
  node_exporter http://127.0.0.1:$NODE_PORT/metrics
  logs         $DEMO/{prometheus,node_exporter,kpiwatch}.log
  A CPU burn runs 20 s in every 60 s. Uni-AD scores once a full window (64 steps of
  2 s) is there, after ~2.5 min; the z-score after ~3 min, once each node's history
  (86 steps) can calibrate its thresholds.
  At 60 s a second node (127.0.0.1:$LATE_NODE_PORT) appears: the same shared Uni-AD
  model scores it once it has one window of points (~2 min later), no training.

TXT

started=$(date +%s)
late_started=""
while true; do
  sleep 10
  if [[ -z "$late_started" && $(( $(date +%s) - started )) -ge 60 ]]; then
    prometheus-node-exporter --web.listen-address="127.0.0.1:$LATE_NODE_PORT" \
      >"$DEMO/late_node_exporter.log" 2>&1 &
    pids+=($!)
    late_started=$(date +%s)
    echo "== a new node appears: 127.0.0.1:$LATE_NODE_PORT (watch for its uniad score)"
  fi
  if ! kill -0 "${pids[3]}" 2>/dev/null; then
    echo "demo: kpiwatch exited; last log lines:" >&2; tail -20 "$DEMO/kpiwatch.log" >&2; exit 1
  fi
  curl -fsG "http://127.0.0.1:$PROM_PORT/api/v1/query" \
    --data-urlencode 'query=kpiwatch_anomaly_score or on() vector(-1)' 2>/dev/null |
  python3 -c '
import json, sys, time
elapsed = int(sys.argv[1])
try:
    res = json.load(sys.stdin)["data"]["result"]
except Exception:
    print(f"[{elapsed:4d}s] Prometheus not answering yet"); sys.exit()
series = [r for r in res if "detector" in r["metric"]]
if not series:
    print(f"[{elapsed:4d}s] waiting for the first scores (warm-up)"); sys.exit()
for r in series:
    m, v = r["metric"], float(r["value"][1])
    flag = "ANOMALY" if v > 1 else "ok"
    inst, det = m.get("instance", "?"), m["detector"]
    print(f"[{elapsed:4d}s] {inst} {det}: anomaly_score={v:6.2f} {flag}")
' "$(( $(date +%s) - started ))"
done
