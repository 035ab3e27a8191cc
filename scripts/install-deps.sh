#!/usr/bin/env bash
# Installs what kpiwatch's demo and tests need on Debian/Ubuntu, only when missing:
# prometheus (with promtool), prometheus-node-exporter, prometheus-alertmanager,
# victoria-metrics (the second backend tests/e2e.rs runs against), and chromium
# (headless: tests/adsketch.rs renders the pattern catalog page).
# Idempotent; uses sudo when not root; never prompts (CI has no stdin).
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: everything present."
  exit 0
fi
# Unique package names.
mapfile -t pkgs < <(printf '%s\n' "${need[@]}" | sort -u)
echo "install-deps: installing ${pkgs[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install-deps: not root and no sudo; install ${pkgs[*]} yourself." >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Debian's postinst scripts try to start services; in containers without systemd that
# fails harmlessly, but policy-rc.d keeps them from grabbing ports where it would not.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" </dev/null
# Services started by the packages would hold 9090/9093/9100/8428; kpiwatch's tests and demo
# use their own ports, so these can keep running, but say so.
echo "install-deps: done."
