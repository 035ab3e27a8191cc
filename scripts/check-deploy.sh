#!/usr/bin/env bash
# Checks every deployment artefact with the tools users have; exits non-zero on any
# failure. Run from anywhere: `bash scripts/check-deploy.sh`.
#
#   promtool check rules / test rules     deploy/rules/
#   kubectl kustomize (offline)           deploy/, deploy/prometheus-operator/
#   deploy_lint.py                        kubernetes-validate, Helm v4 render/lint/schema,
#                                         dashboards, PromQL metric names, copies in sync,
#                                         and a self-test that known-bad changes are caught
#   check-jsonschema                      values.yaml passes, every bad values file fails
#   hadolint                              Dockerfile
#   kpiwatch check-config                 the configs the manifests and the chart ship
#
# Python tools go into .venv-deploy (pinned: scripts/requirements-deploy.txt).
# Needs promtool (Debian package `prometheus`) and kubectl (for its built-in kustomize;
# without kubectl, deploy_lint.py's own renderer of the kustomizations is used and the
# script says so). KPIWATCH_BIN names the agent binary (default target/debug/kpiwatch,
# built when missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv-deploy"
REQ="$ROOT/scripts/requirements-deploy.txt"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failures=0

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }

# --- tools ------------------------------------------------------------------------------
step "Python tools (.venv-deploy)"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
if ! cmp -s "$REQ" "$VENV/.requirements"; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/.requirements"
fi
PY="$VENV/bin/python"
echo "ok"

if ! command -v promtool >/dev/null; then
  echo "promtool not found: apt-get install prometheus (or scripts/install-deps.sh)" >&2
  exit 1
fi

# --- alert rules -------------------------------------------------------------------------
step "promtool check rules"
promtool check rules deploy/rules/*.yml || fail "promtool check rules"

step "promtool test rules"
promtool test rules deploy/rules/tests/*.yml || fail "promtool test rules"

# --- manifests ---------------------------------------------------------------------------
step "kustomize render of deploy/ and deploy/prometheus-operator/"
if command -v kubectl >/dev/null; then
  kubectl kustomize deploy > "$WORK/deploy.yaml" || fail "kubectl kustomize deploy/"
  kubectl kustomize deploy/prometheus-operator > "$WORK/deploy-operator.yaml" \
    || fail "kubectl kustomize deploy/prometheus-operator/"
  # Keep the fallback renderer honest: it must agree with kubectl's.
  "$PY" scripts/deploy_lint.py kustomize deploy/prometheus-operator > "$WORK/fallback.yaml"
  "$PY" - "$WORK/deploy-operator.yaml" "$WORK/fallback.yaml" <<'PYEOF' || fail "fallback kustomize renderer disagrees with kubectl"
import sys, yaml
key = lambda d: (d["kind"], d["metadata"]["name"])
a, b = (sorted((d for d in yaml.safe_load_all(open(p)) if d), key=key) for p in sys.argv[1:3])
sys.exit(0 if a == b else 1)
PYEOF
else
  echo "kubectl not found: rendering the kustomizations with deploy_lint.py's own renderer"
  "$PY" scripts/deploy_lint.py kustomize deploy > "$WORK/deploy.yaml" || fail "render deploy/"
  "$PY" scripts/deploy_lint.py kustomize deploy/prometheus-operator > "$WORK/deploy-operator.yaml" \
    || fail "render deploy/prometheus-operator/"
fi
grep -c '^kind:' "$WORK/deploy.yaml" "$WORK/deploy-operator.yaml" || true

step "deploy_lint.py (schemas, Helm, dashboards, PromQL, copies)"
"$PY" scripts/deploy_lint.py check "$WORK/deploy.yaml" "$WORK/deploy-operator.yaml" \
  --configs-out "$WORK/configs" --bad-values-out "$WORK/bad-values" || fail "deploy_lint.py"

step "deploy_lint.py selftest (each known-bad change must be caught)"
"$PY" scripts/deploy_lint.py selftest || fail "deploy_lint.py selftest"

step "check-jsonschema: values.yaml passes"
"$VENV/bin/check-jsonschema" --schemafile helm/kpiwatch/values.schema.json helm/kpiwatch/values.yaml \
  || fail "values.yaml does not match values.schema.json"

step "check-jsonschema: every bad values file (merged over values.yaml) fails"
shopt -s nullglob
bad=("$WORK"/bad-values/*.yaml)
if [[ ${#bad[@]} -eq 0 ]]; then
  fail "no bad values files were produced"
fi
for f in "${bad[@]}"; do
  if "$VENV/bin/check-jsonschema" --schemafile helm/kpiwatch/values.schema.json "$f" > "$WORK/out.txt" 2>&1; then
    fail "$(basename "$f") was accepted by check-jsonschema"
  else
    echo "rejected as expected: $(basename "$f"): $(grep -m1 -F '::$' "$WORK/out.txt" | sed 's/^.*::\$/$/')"
  fi
done

# --- image -------------------------------------------------------------------------------
step "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile && echo ok || fail "hadolint"
for path in config/kpiwatch.example.yaml; do
  [[ -e "$path" ]] || fail "Dockerfile copies $path, which does not exist"
done

# --- shipped configs ---------------------------------------------------------------------
step "kpiwatch check-config on the shipped configs"
BIN="${KPIWATCH_BIN:-$ROOT/target/debug/kpiwatch}"
if [[ ! -x "$BIN" ]]; then
  cargo build --quiet --bin kpiwatch || fail "cargo build --bin kpiwatch"
fi
configs=("$WORK"/configs/*.yaml config/kpiwatch.example.yaml)
for cfg in "${configs[@]}"; do
  if NODE_NAME=node-1 "$BIN" check-config "$cfg"; then
    echo "valid: $(basename "$cfg")"
  else
    fail "kpiwatch check-config $(basename "$cfg")"
  fi
done

echo
if [[ $failures -gt 0 ]]; then
  echo "check-deploy: $failures check(s) failed"
  exit 1
fi
echo "check-deploy: all checks passed"
