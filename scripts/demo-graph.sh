#!/usr/bin/env bash
# Live demo of the service graph (docs/graph.md): the lab's nine-service shop calling
# itself over HTTP on loopback (each service its own `kpiwatch-lab serve` process), a
# small load, a real Prometheus scraping the services and kpiwatch, and kpiwatch scoring
# each service's latency and error ratio with a graph read from the services'
# Tempo-shaped edge metrics. Every 90 s a fault moves to another service (a slow
# database, failing payments, a slow cache, then a quiet spell); the live summary shows
# which service kpiwatch ranks as the probable origin and which it marks as symptoms.
# Ctrl-C stops everything it started.
#
# Ports (override with env): PROM_PORT=19190 KPIWATCH_PORT=19947, services from
# MESH_PORT=19200 on (nine ports).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
PROM_PORT="${PROM_PORT:-19190}"
KPIWATCH_PORT="${KPIWATCH_PORT:-19947}"
MESH_PORT="${MESH_PORT:-19200}"
DEMO="$ROOT/.demo-graph"
SERVICES=(frontend catalog recommendation cart checkout payment shipping cache database)

bash scripts/install-deps.sh
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "demo-graph: $tool is needed (apt-get install $tool)" >&2; exit 1; }
done
echo "== building kpiwatch and the lab (release; the first build takes a few minutes)"
cargo build --release --quiet --bin kpiwatch
cargo build --release --quiet --features lab --bin kpiwatch-lab
BIN="$ROOT/target/release/kpiwatch"
LAB="$ROOT/target/release/kpiwatch-lab"

declare -A PORT
for i in "${!SERVICES[@]}"; do PORT[${SERVICES[$i]}]=$((MESH_PORT + i)); done
for port in "$PROM_PORT" "$KPIWATCH_PORT" "${PORT[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "demo-graph: port $port is in use; set PROM_PORT, KPIWATCH_PORT or MESH_PORT." >&2
    exit 1
  fi
done

rm -rf "$DEMO" && mkdir -p "$DEMO/prometheus-data"
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "== stopping the demo"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  pkill -P "$$" 2>/dev/null || true
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs were in $DEMO/*.log"
}
trap cleanup INT TERM EXIT

# The mesh file every service reads: the shop's topology (as the lab's recordings store
# it) and each service's address.
addresses=""
for s in "${SERVICES[@]}"; do addresses+="\"$s\": \"127.0.0.1:${PORT[$s]}\","; done
python3 - "$DEMO/mesh.json" "{${addresses%,}}" <<'PY'
import json, sys
manifest = json.load(open("tests/data/lab-mesh/s31/mesh/mesh-shop/manifest.json"))
json.dump({"topology": manifest["topology"], "addresses": json.loads(sys.argv[2]), "seed": 1},
          open(sys.argv[1], "w"), indent=1)
PY
targets=""
for s in "${SERVICES[@]}"; do targets+="'127.0.0.1:${PORT[$s]}', "; done
cat >"$DEMO/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ['$ROOT/deploy/rules/kpiwatch.rules.yml']
scrape_configs:
  - job_name: shop
    static_configs: [{targets: [${targets%, }]}]
  - job_name: kpiwatch
    honor_labels: true
    static_configs: [{targets: ['127.0.0.1:$KPIWATCH_PORT']}]
YAML
cat >"$DEMO/kpiwatch.yaml" <<YAML
prometheus:
  url: http://127.0.0.1:$PROM_PORT
server:
  listen: 127.0.0.1:$KPIWATCH_PORT
groups:
  - name: shop
    interval: 2s
    step: 1s
    window: 16
    history: 4m
    entity_labels: [service]
    metrics:
      latency_p95_ms: '1000 * histogram_quantile(0.95, sum by (service, le) (rate(lab_service_request_duration_seconds_bucket[10s])))'
      error_ratio: 'sum by (service) (rate(lab_service_requests_total{code=~"5.."}[10s])) / sum by (service) (rate(lab_service_requests_total[10s])) or 0 * sum by (service) (rate(lab_service_requests_total[10s]))'
    gates:
      latency_p95_ms: {direction: up, min_relative_deviation: 0.2}
      error_ratio: {direction: up, min_deviation: 0.02}
    detectors:
      zscore: {}
    graph:
      query: 'sum by (client, server) (rate(traces_service_graph_request_total[10s]))'
YAML
"$BIN" check-config "$DEMO/kpiwatch.yaml" >/dev/null

echo "== starting the shop, Prometheus and kpiwatch"
for s in "${SERVICES[@]}"; do
  "$LAB" serve --service "$s" --mesh "$DEMO/mesh.json" >"$DEMO/$s.log" 2>&1 &
  pids+=($!)
done
prometheus --config.file="$DEMO/prometheus.yml" --storage.tsdb.path="$DEMO/prometheus-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$DEMO/prometheus.log" 2>&1 &
pids+=($!)
"$BIN" run --config "$DEMO/kpiwatch.yaml" >"$DEMO/kpiwatch.log" 2>&1 &
pids+=($!)
# Six users: request, think 100 ms, repeat.
for _ in 1 2 3 4 5 6; do
  (while :; do curl -s -o /dev/null "http://127.0.0.1:${PORT[frontend]}/api/shop" || true; sleep 0.1; done) &
done

fault() { # fault SERVICE JSON
  curl -s -o /dev/null -X PUT -H 'content-type: application/json' -d "$2" \
    "http://127.0.0.1:${PORT[$1]}/admin/faults" || true
}
cat >"$DEMO/summary.py" <<'PY'
import json, sys
try:
    result = json.load(sys.stdin).get("data", {}).get("result", [])
except ValueError:  # Prometheus not answering yet
    result = []
cells = []
for r in result:
    m = r["metric"]
    cause = " <- " + m["cause"] if "cause" in m else ""
    cells.append(m.get("service", "?") + cause)
print(", ".join(sorted(cells)) or "-")
PY
query() {
  curl -s --get "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode "query=$1" |
    python3 "$DEMO/summary.py"
}

cat <<EOF

Prometheus: http://127.0.0.1:$PROM_PORT   kpiwatch: http://127.0.0.1:$KPIWATCH_PORT/metrics
Try in Prometheus: kpiwatch_rootcause_rank, kpiwatch_symptom, ALERTS{alertname="KpiwatchProbableRootCause"}
The first 90 s warm up (the z-score needs about 86 points of history). Ctrl-C stops.

EOF
for _ in $(seq 60); do
  curl -sf -o /dev/null "http://127.0.0.1:$PROM_PORT/-/ready" && break
  sleep 1
done
faults=(
  'database [{"latency_ms":40}]'
  'payment [{"error_rate":0.3}]'
  'cache [{"latency_ms":30}]'
  'none []'
)
start=$SECONDS
current="none"
while :; do
  slot=$(( (SECONDS - start) / 90 ))
  if (( slot > 0 )); then
    set -- ${faults[$(( (slot - 1) % ${#faults[@]} ))]}
    if [[ "$1" != "$current" ]]; then
      [[ "$current" != none ]] && fault "$current" '[]'
      current="$1"
      [[ "$current" != none ]] && fault "$current" "$2"
      echo "-- $(date +%T) fault now: $current $2"
    fi
  fi
  printf '%s  origin (rank): %s\n            symptoms: %s\n' "$(date +%T)" \
    "$(query 'kpiwatch_rootcause_rank{group="shop"} == 1')" \
    "$(query 'kpiwatch_symptom{group="shop"}')"
  sleep 10
done
