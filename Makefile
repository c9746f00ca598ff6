# One command to set up and run the default sweep, one to set up and run the tests.
# Both create .venv with the CPU build of torch (pinned, so pip never pulls a CUDA build).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-quick lint docs browser graphviz slurm image-tools autocircuit clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	HF_HUB_OFFLINE=1 $(PY) -m sweep

lint: setup
	$(VENV)/bin/ruff check sweep tests bench
	$(VENV)/bin/ruff format --check sweep tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mkdocs build --strict -q

# docs/ as a site in site/ (a broken link or anchor is an error); `mkdocs serve` to browse.
docs: setup
	$(VENV)/bin/mkdocs build --strict

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=60

# The inner loop (about 3 minutes here): lint, the pure planning and config tests, and the
# checks against independent references (TransformerLens' patching, the hooked EAP and
# edge references, path patching), without the system tests (subprocesses, Ray, SLURM,
# S3, resume after kills) that `make test` adds.
QUICK = tests/test_config.py tests/test_plan.py tests/test_imports.py tests/test_packaging.py tests/test_errors.py \
	tests/test_readme_names.py tests/edges/test_graph.py tests/edges/test_edge_plan.py \
	tests/edges/test_eap.py tests/edges/test_edge_patching.py tests/edges/test_path_patching.py \
	tests/edges/test_circuit_forward.py tests/engine/test_cells.py \
	tests/engine/test_patching_vs_transformerlens.py tests/results/test_analysis.py \
	tests/store/test_store.py tests/runners/test_contract.py tests/tasks/test_tasks.py \
	tests/interventions/test_interventions.py tests/interventions/test_atp.py
test-quick: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" $(QUICK)

# Chromium for the HTML page's screenshot test (it is skipped without): Debian's package.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)

# Graphviz's dot, which draws an edge store's top edges (skipped without): Debian's package.
graphviz:
	command -v dot >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz)

# A real SLURM for tests/runners/test_slurm.py (skipped without): Debian's slurm-wlm and
# munge. Nothing is started here: the test starts its own daemons and stops them by pid.
slurm:
	command -v slurmctld >/dev/null && command -v munged >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  slurm-wlm munge)

# buildah and debootstrap for tests/runners/test_image.py, which builds cluster/Dockerfile
# (skipped without): Debian's packages.
image-tools:
	command -v buildah >/dev/null && command -v debootstrap >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  buildah debootstrap)

# auto-circuit for bench/autocircuit_speed.py, in a venv of its own (.bench-ac): it needs
# transformer-lens 2, which cannot sit beside patchsweep's 4. torch pinned as in setup.
AC_VENV ?= .bench-ac
autocircuit: $(AC_VENV)/.installed

$(AC_VENV)/.installed:
	$(PYTHON) -m venv $(AC_VENV)
	$(AC_VENV)/bin/pip install -q "$(TORCH)"
	$(AC_VENV)/bin/pip install -q "$(TORCH)" auto-circuit==1.0.1 "transformer-lens==2.18.0" \
	  "numpy<2" "pyarrow<20"
	touch $@

clean:
	rm -rf $(VENV) $(AC_VENV) outputs .pytest_cache .mypy_cache .ruff_cache
