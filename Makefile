# Every target installs what it needs into .venv first, so a fresh clone needs only Python >= 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck imports unit crds clean help

help:
	@echo "make demo   - show migweaver on a simulated fleet (the README's first command)"
	@echo "make test   - lint, type-check, import layering and the whole test suite"
	@echo "make crds   - regenerate crds/ from the models in migweaver/core"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/migweaver catalog --model A100-SXM4-80GB
	@echo
	$(BIN)/migweaver check-config manifests/device-config.yaml

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

test: lint typecheck imports unit

crds: $(STAMP)
	$(BIN)/migweaver crds --output-dir crds

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
