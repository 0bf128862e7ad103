# Every target installs what it needs into .venv first, so a fresh clone needs only Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test e2e-real lint typecheck imports unit crds bench bench-operator proto clean help prometheus e2e-node image image-offline image-check version

help:
	@echo "make demo   - show migweaver on a simulated fleet (the README's first command)"
	@echo "make test   - lint, type-check, import layering and the whole test suite"
	@echo "make e2e-real - the e2e suite against a fresh real control plane (K8S_KIT, E2E_PORT_BASE)"
	@echo "make crds   - regenerate crds/, manifests/crds/ and the chart's crds/ from the models"
	@echo "make proto  - regenerate the kubelet device plugin API code from its .proto"
	@echo "make bench  - run the benchmarks and write docs/benchmarks.md"
	@echo "make e2e-node - pods on a real kubelet node (needs root and the test kit, K8S_KIT)"
	@echo "make image  - build the container image with docker, podman or buildah (docs/installation.md)"
	@echo "make bench-operator - only the operator's section of docs/benchmarks.md"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A day of a 32-GPU fleet under the real planner and agent on fake GPUs, then the same day
# under HAMi's legacy dynamic-MIG rules for comparison (docs/simulator.md).
demo: $(STAMP)
	$(BIN)/migweaver simulate examples/scenarios/mixed-day.yaml --compare hami-legacy

# Only the source folders that exist: git does not keep an empty one in a fresh clone.
LINT_DIRS := $(wildcard migweaver tests benchmarks)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest

test: lint typecheck imports prometheus unit

# Prometheus and promtool (Debian's `prometheus`): `make test` checks the shipped alert
# rules with promtool and tests/e2e/test_prometheus_e2e.py scrapes migweaver with a real
# server. CI (CI=true) installs the package where it is missing; elsewhere those tests
# are skipped with the reason when it is not installed.
prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ -n "$$CI" ] && command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; \
	else echo "prometheus/promtool not installed: their tests are skipped (apt-get install prometheus)"; fi

# The Kubernetes test kit (a real control plane on loopback, and a real kubelet node): the
# one beside this repository in CI, or K8S_KIT=DIR (docs/operations.md). Used by e2e-real,
# e2e-node and the operator benchmark.
REPO_ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
K8S_KIT ?= $(abspath $(REPO_ROOT)/../shared/k8s)

# The e2e suite against the kit's real control plane, started fresh in a temporary state
# directory on free ports (E2E_PORT_BASE to choose them) and always stopped.
e2e-real: $(STAMP)
	tests/e2e/real-control-plane.sh $(K8S_KIT) $(BIN)/python

# Not part of `make test`: a few minutes, and times depend on the machine.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	K8S_KIT=$(K8S_KIT) $(BIN)/python -m benchmarks.write_report docs/benchmarks.md

# The real kubelet tier (tests/e2e_node, docs/operations.md): a fresh control plane in a
# temporary directory, a real kubelet node on it, the agent as its device plugin; both are
# stopped whatever happens. Not part of `make test`: it needs root and the test kit
# (K8S_KIT). PYTEST_ARGS=-k... selects.
e2e-node: $(STAMP)
	tests/e2e_node/run.sh $(K8S_KIT) $(PYTEST_ARGS)

# The operator against the emulator and a real control plane (started from the test kit
# of K8S_KIT when it is there, benchmarks/control_plane.py): its section only.
bench-operator: $(STAMP)
	K8S_KIT=$(K8S_KIT) $(BIN)/python -m benchmarks.write_report docs/benchmarks.md --operator-only

# Three times: kustomize reads no file outside manifests/ and Helm none outside the chart, so
# manifests/crds/ and charts/migweaver/crds/ hold copies (tests/unit/project/test_manifests.py
# and test_chart.py check that all are the same).
crds: $(STAMP)
	$(BIN)/migweaver crds --output-dir crds
	$(BIN)/migweaver crds --output-dir manifests/crds
	$(BIN)/migweaver crds --output-dir charts/migweaver/crds

# The kubelet device plugin API (v1beta1). Run from the repository root so the generated
# modules import each other as migweaver.agent.deviceplugin.api_pb2; the exact command is
# repeated in tests/unit/test_deviceplugin_proto.py, which checks the checked-in files.
PROTO := migweaver/agent/deviceplugin/api.proto
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis

# --- the container image (docs/installation.md) ------------------------------------------------
# The version is written once, in migweaver/__init__.py: the package, the image tag and the
# chart carry it (tests/unit/project/test_chart.py keeps the chart and manifests level).
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' migweaver/__init__.py)
IMAGE   ?= ghcr.io/migweaver/migweaver
# The first engine that works: a docker whose daemon answers, else podman, else buildah.
ENGINE  ?= $(shell if docker info >/dev/null 2>&1; then echo docker; \
             elif command -v podman >/dev/null 2>&1; then echo podman; \
             elif command -v buildah >/dev/null 2>&1; then echo buildah; fi)
# Extra engine options, e.g. ENGINE_FLAGS="--storage-driver vfs" where overlayfs is missing.
ENGINE_FLAGS ?=
BUILD_FLAGS  ?=
# BASE_IMAGE= another base (the Dockerfile's default: a pinned python slim image);
# BASE_PYTHON= its Python interpreter. WHEELHOUSE=1 puts every dependency's wheel into the
# build context (downloaded here for BASE_PYTHON_VERSION) so the build needs no network.
BASE_IMAGE ?=
BASE_PYTHON ?= python3
BASE_PYTHON_VERSION ?= 3.12
WHEELHOUSE ?=
IMAGE_CONTEXT := build/image

version:
	@echo $(VERSION)

image: $(STAMP)
	@test -n "$(ENGINE)" || { echo "make image: no docker daemon, podman or buildah found" >&2; exit 1; }
	rm -rf $(IMAGE_CONTEXT)
	$(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $(IMAGE_CONTEXT)/wheels .
	$(if $(WHEELHOUSE),$(BIN)/python -m pip download --quiet --dest $(IMAGE_CONTEXT)/wheels \
	  --only-binary=:all: --python-version $(BASE_PYTHON_VERSION) \
	  $(IMAGE_CONTEXT)/wheels/migweaver-$(VERSION)-py3-none-any.whl)
	$(ENGINE) $(ENGINE_FLAGS) build $(BUILD_FLAGS) \
	  -f Dockerfile -t $(IMAGE):$(VERSION) \
	  $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	  --build-arg PYTHON=$(BASE_PYTHON) \
	  $(if $(WHEELHOUSE),--build-arg PIP_OPTIONS=--no-index) \
	  --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
	  $(IMAGE_CONTEXT)
	@echo "built $(IMAGE):$(VERSION) with $(ENGINE)"

# `migweaver version` and `migweaver agent --help` inside the built image. RUN_FLAGS: e.g.
# "--isolation chroot" for buildah where the sandbox forbids an OCI runtime's setrlimit.
RUN_FLAGS ?=
image-check:
ifeq ($(ENGINE),buildah)
	c=$$(buildah $(ENGINE_FLAGS) from --pull-never $(IMAGE):$(VERSION)) && \
	  { buildah $(ENGINE_FLAGS) run $(RUN_FLAGS) $$c -- migweaver version && \
	    buildah $(ENGINE_FLAGS) run $(RUN_FLAGS) $$c -- migweaver agent --help >/dev/null; \
	    rc=$$?; buildah $(ENGINE_FLAGS) rm $$c >/dev/null; exit $$rc; }
else
	$(ENGINE) $(ENGINE_FLAGS) run --rm $(RUN_FLAGS) $(IMAGE):$(VERSION) version
	$(ENGINE) $(ENGINE_FLAGS) run --rm $(RUN_FLAGS) $(IMAGE):$(VERSION) agent --help >/dev/null
endif
	@echo "$(IMAGE):$(VERSION) runs migweaver version and migweaver agent --help"

# Without any container registry: a base made from Debian packages (mmdebstrap), every
# wheel in the build context, then `migweaver version` run inside the image. Needs root.
DEBIAN_SUITE ?= bookworm
DEBIAN_BASE  ?= localhost/migweaver-base:$(DEBIAN_SUITE)
# The suite's python3: bookworm 3.11, trixie 3.13.
DEBIAN_PYTHON ?= 3.11
image-offline: $(STAMP)
	scripts/debian-base-image.sh "$(ENGINE) $(ENGINE_FLAGS)" $(DEBIAN_BASE) $(DEBIAN_SUITE)
	$(MAKE) image BASE_IMAGE=$(DEBIAN_BASE) BASE_PYTHON_VERSION=$(DEBIAN_PYTHON) WHEELHOUSE=1
	$(MAKE) image-check
