#!/usr/bin/env bash
# Records a real machine through a real Prometheus, for the false-alarm study
# (docs/false-alarms.md): node_exporter scraped every 5 s, nothing injected.
#
#   scripts/record_node.sh start DIR      # starts node_exporter :19100 and Prometheus :19090
#   scripts/record_node.sh export DIR OUT.csv   # the recorded range, one column per metric
#   scripts/record_node.sh stop DIR
#
# The CSV is one entity (this machine) with a `label` column of zeros: every point is
# normal by construction, so every flag is a false alarm.
set -euo pipefail
cmd=${1:?start|export|stop}; dir=${2:?directory}
case "$cmd" in
start)
  mkdir -p "$dir/tsdb"
  cat >"$dir/prometheus.yml" <<YML
global: {scrape_interval: 5s, evaluation_interval: 5s}
scrape_configs:
  - job_name: node
    static_configs: [{targets: ["127.0.0.1:19100"]}]
YML
  prometheus-node-exporter --web.listen-address=127.0.0.1:19100 >"$dir/node.log" 2>&1 &
  echo $! >"$dir/node.pid"
  prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
    --web.listen-address=127.0.0.1:19090 >"$dir/prometheus.log" 2>&1 &
  echo $! >"$dir/prometheus.pid"
  date -u +%s >"$dir/start"
  echo "recording into $dir (started $(date -u))";;
stop)
  for p in prometheus node; do kill "$(cat "$dir/$p.pid")" 2>/dev/null || true; done;;
export)
  out=${3:?OUT.csv}
  python3 - "$dir" "$out" <<'PY'
import json, sys, urllib.parse, urllib.request
d, out = sys.argv[1], sys.argv[2]
start = int(open(f"{d}/start").read()) + 60
end = int(json.load(urllib.request.urlopen("http://127.0.0.1:19090/api/v1/query?query=time()"))["data"]["result"][0])
queries = {
  "cpu_busy": 'sum(rate(node_cpu_seconds_total{mode!="idle"}[30s]))',
  "load1": "node_load1",
  "mem_available_bytes": "node_memory_MemAvailable_bytes",
  "disk_written_bytes": "sum(rate(node_disk_written_bytes_total[30s]))",
  "net_received_bytes": 'sum(rate(node_network_receive_bytes_total{device!="lo"}[30s]))',
  "context_switches": "rate(node_context_switches_total[30s])",
  "procs_running": "node_procs_running",
}
cols = {}
for name, q in queries.items():
  values = {}
  for lo in range(start, end, 5 * 10000):
    hi = min(end, lo + 5 * 9999)
    url = "http://127.0.0.1:19090/api/v1/query_range?" + urllib.parse.urlencode(
      {"query": q, "start": lo, "end": hi, "step": "5s"})
    res = json.load(urllib.request.urlopen(url))["data"]["result"]
    for t, v in (res[0]["values"] if res else []):
      values[int(float(t))] = v
  cols[name] = values
stamps = sorted(set().union(*[set(v) for v in cols.values()]))
with open(out, "w") as f:
  f.write("timestamp," + ",".join(queries) + ",label\n")
  for t in stamps:
    f.write(f"{t}," + ",".join(cols[n].get(t, "NaN") for n in queries) + ",0\n")
print(f"{out}: {len(stamps)} rows, {len(queries)} metrics")
PY
  ;;
*) echo "unknown command $cmd" >&2; exit 2;;
esac
