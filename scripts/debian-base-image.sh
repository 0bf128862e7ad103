#!/usr/bin/env bash
# Makes a base image for `make image` from Debian packages alone, for a machine that
# reaches a Debian mirror but no container registry (docs/installation.md, "Offline").
#
#   scripts/debian-base-image.sh ENGINE NAME [SUITE]
#
# ENGINE is docker, podman or buildah (with any global options, quoted: "podman
# --storage-driver vfs"); NAME the image to create, e.g. localhost/migweaver-base:bookworm.
# The root filesystem is Debian's minbase variant plus python3 and python3-venv, made by
# mmdebstrap (apt-get install mmdebstrap); run as root. Its Python is the suite's
# (bookworm: 3.11), so build with BASE_PYTHON_VERSION set to it.
set -euo pipefail

engine=${1:?usage: $0 ENGINE NAME [SUITE]}
name=${2:?usage: $0 ENGINE NAME [SUITE]}
suite=${3:-bookworm}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v mmdebstrap >/dev/null || { echo "$0: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
# --mode=root: no user namespaces needed (many CI sandboxes have none).
mmdebstrap --mode=root --variant=minbase --include=python3,python3-venv \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  "$suite" "$work/rootfs.tar"

case "$engine" in
  *buildah*)
    container=$($engine from scratch)
    $engine add "$container" "$work/rootfs.tar" /
    $engine config --cmd /usr/bin/python3 "$container"
    $engine commit --rm "$container" "$name"
    ;;
  *)
    $engine import --change 'CMD ["/usr/bin/python3"]' "$work/rootfs.tar" "$name"
    ;;
esac
echo "made $name from Debian $suite"
