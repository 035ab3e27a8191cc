#!/usr/bin/env bash
# The one command that runs every test of kpiwatch (README, CI): installs the system
# prerequisites, checks formatting and lints, runs unit, integration and end-to-end
# tests (real Prometheus, node_exporter and Alertmanager on loopback), smoke-runs the
# benches (smallest cases, see benches/support.rs), and checks the deployment artefacts
# (promtool, manifests, chart, dashboards). Prints each step's wall time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
  local name=$1
  shift
  echo "== $name"
  local t0=$SECONDS
  "$@"
  echo "== $name: $((SECONDS - t0)) s"
}

step "install prerequisites" bash scripts/install-deps.sh
step "cargo fmt --check" cargo fmt --check
# The agent alone (no lab: the feature must not be needed), then with the lab's
# binary and tests.
step "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings
step "cargo clippy --all-targets --features lab -- -D warnings" \
  cargo clippy --all-targets --features lab -- -D warnings
step "cargo test --all-targets --features lab" cargo test --all-targets --features lab
step "deployment checks" env KPIWATCH_BIN="$PWD/target/debug/kpiwatch" bash scripts/check-deploy.sh
echo "== all tests passed in $SECONDS s"
