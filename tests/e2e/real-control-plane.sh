#!/usr/bin/env bash
# `make e2e-real`: the e2e suite against a fresh real Kubernetes control plane on loopback.
#
# Usage: real-control-plane.sh K8S_KIT PYTHON [pytest args...]
#   K8S_KIT  the directory of the control plane's up.sh/down.sh (docs/operations.md)
#   PYTHON   the interpreter of .venv
# Settings (environment):
#   E2E_PORT_BASE  first of the five loopback ports the control plane uses; by default the
#                  first free block of five from 16470 on (16440, the control plane's own
#                  default, is left to a developer's long-lived one)
#
# The control plane gets a state directory of its own (etcd starts empty) and is always
# stopped and removed, whatever the tests do. A control plane that cannot start is a
# failure, never a skip.
set -euo pipefail
K8S_KIT=$1; PYTHON=$2; shift 2
[ -x "$K8S_KIT/up.sh" ] || { echo "e2e-real: no control plane at $K8S_KIT/up.sh" >&2; exit 1; }

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
block_free() { local p; for ((p = $1; p < $1 + 5; p++)); do in_use "$p" && return 1; done; return 0; }
if [ -n "${E2E_PORT_BASE:-}" ]; then
  block_free "$E2E_PORT_BASE" || { echo "e2e-real: a port of $E2E_PORT_BASE..$((E2E_PORT_BASE + 4)) is in use" >&2; exit 1; }
  BASE=$E2E_PORT_BASE
else
  BASE=
  for ((b = 16470; b < 16970; b += 5)); do block_free "$b" && { BASE=$b; break; }; done
  [ -n "$BASE" ] || { echo "e2e-real: no five free ports in 16470..16969" >&2; exit 1; }
fi

export K8S_STATE K8S_PORT_BASE=$BASE
K8S_STATE=$(mktemp -d "${TMPDIR:-/tmp}/migweaver-e2e-real.XXXXXX")
stop() { "$K8S_KIT/down.sh" || true; rm -rf "$K8S_STATE"; }
trap stop EXIT
trap 'exit 130' INT TERM

echo "e2e-real: control plane in $K8S_STATE, ports $BASE..$((BASE + 4))"
if ! "$K8S_KIT/up.sh" > "$K8S_STATE.up.log" 2>&1; then
  cat "$K8S_STATE.up.log" >&2; rm -f "$K8S_STATE.up.log"
  tail -n 20 "$K8S_STATE"/logs/*.log >&2 || true
  echo "e2e-real: the control plane did not start" >&2
  exit 1
fi
rm -f "$K8S_STATE.up.log"
export MIGWEAVER_E2E_KUBECONFIG=$K8S_STATE/kubeconfig KUBECONFIG=$K8S_STATE/kubeconfig
"$PYTHON" -m pytest tests/e2e -p no:cacheprovider -rs "$@"
