#!/usr/bin/env bash
# The real kubelet tier (`make e2e-node`): a fresh control plane in a temporary K8S_STATE,
# a real kubelet node on it, tests/e2e_node against both; both are always stopped.
#
# Usage: tests/e2e_node/run.sh KIT [PYTEST ARGS...]
#   KIT  the directory of the Kubernetes test kit (its up.sh, down.sh and node/up-node.sh)
# Needs root (the node runs containers). K8S_PORT_BASE picks the control plane's ports
# (default: the kit's); E2E_NODE the node's name (default kit-node-1). The node's state
# directory is purged at the end except its cache of downloads and the image, kept in
# E2E_NODE_CACHE (default ~/.cache/migweaver) so that the next run starts warm.
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=$(cd "${1:?usage: run.sh KIT [PYTEST ARGS...]}" && pwd)
shift

# The kubelet's device plugin directory is the host's fixed /var/lib/kubelet/device-plugins:
# any agent started on this host (another test run's, with the default directory) would
# register there and take the node's nvidia.com/gpu from ours, and the kubelet wipes the
# directory when it starts. So the whole run happens in a mount namespace of its own, where
# that path is a directory of this run; nothing outside sees our kubelet or our sockets.
if [ -z "${E2E_NODE_PRIVATE_MOUNTS:-}" ] && command -v unshare >/dev/null; then
  E2E_NODE_PRIVATE_MOUNTS=1 exec unshare --mount --propagation private "$0" "$KIT" "$@"
fi
if [ -n "${E2E_NODE_PRIVATE_MOUNTS:-}" ]; then
  PLUGINS=$(mktemp -d "${TMPDIR:-/tmp}/migweaver-e2e-plugins.XXXXXX")
  mkdir -p /var/lib/kubelet/device-plugins
  mount --bind "$PLUGINS" /var/lib/kubelet/device-plugins
  echo "e2e-node: /var/lib/kubelet/device-plugins is $PLUGINS for this run only"
fi
NODE=${E2E_NODE:-kit-node-1}
PYTHON=${PYTHON:-.venv/bin/python}

K8S_STATE=$(mktemp -d "${TMPDIR:-/tmp}/migweaver-e2e-node.XXXXXX")
export K8S_STATE
K8S_NODE_STATE=${E2E_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/migweaver}/e2e-node-$NODE
export K8S_NODE_STATE
stop_all() {
  "$KIT/node/down-node.sh" "$NODE" --purge || true
  "$KIT/down.sh" || true
  rm -rf "$K8S_STATE"   # our own temporary directory (the node's state is elsewhere)
  if [ -n "${PLUGINS:-}" ]; then umount /var/lib/kubelet/device-plugins && rm -rf "$PLUGINS"; fi
}
trap stop_all EXIT

start=$(date +%s)
"$KIT/up.sh" >/dev/null
eval "$("$KIT/up.sh" --env)"
# A cold start builds the node's image, which fails now and then under load ("file changed
# as we read it"): up to three tries from a purged state; a warm cache skips that step.
for try in 1 2 3; do
  "$KIT/node/up-node.sh" "$NODE" >/dev/null && break
  [ "$try" -lt 3 ] || { echo "e2e-node: the node did not start"; exit 1; }
  echo "e2e-node: the node did not start (try $try); again from a purged state"
  "$KIT/node/down-node.sh" "$NODE" --purge || true
done
echo "e2e-node: control plane and node $NODE up in $(($(date +%s) - start)) s"

export MIGWEAVER_E2E_NODE=$NODE MIGWEAVER_E2E_NODE_KIT=$KIT/node MIGWEAVER_E2E_NODE_STATE=$K8S_NODE_STATE
status=0
"$PYTHON" -m pytest tests/e2e_node -p no:cacheprovider -rs "$@" || status=$?
echo "e2e-node: tier took $(($(date +%s) - start)) s (exit $status)"
exit $status
