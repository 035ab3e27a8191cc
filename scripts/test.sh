#!/usr/bin/env bash
# The one command that runs every test of kpiwatch (README, CI): installs the system
# prerequisites, checks formatting and lints, runs unit, integration and end-to-end
# tests (real Prometheus, node_exporter and Alertmanager on loopback), and checks the
# deployment artefacts (promtool, manifests, chart, dashboards).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
echo "== deployment checks"
KPIWATCH_BIN="$PWD/target/debug/kpiwatch" bash scripts/check-deploy.sh
echo "== all tests passed"
