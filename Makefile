# The commands of README.md. Each sets up its environment first (skipping finished steps).
#   make demo       the demo, in the newest environment (.venv/); make demo SEED=1: another seed
#   make test       lint (ruff, pyproject.toml) and the whole suite in the newest environment
#                   (.venv/), then the suite of OLDEST_TESTS in the oldest one (.venv-oldest/,
#                   torch 2.1.2); .ci/run runs it
#   make test-fast  the newest environment's suite without the tests marked slow (tool
#                   subprocesses, training runs, the demo)
PY := .venv/bin/python
OLDEST_PY := .venv-oldest/bin/python
# What the oldest environment runs: what can differ with the torch version. Registration and
# the version checks; reading and converting checkpoints (checkpoint/); the model's math, its
# fast path and its equivalence with the transformers port; every config; exact resume. The
# tools end to end (the demo, inference, the tools' errors and output, the converter's
# command, export, analysis) run in the newest environment only.
OLDEST_TESTS := tests/test_registration.py tests/test_versions.py tests/test_imports.py \
	tests/checkpoint tests/models tests/configs tests/training

.PHONY: setup setup-oldest demo test test-fast test-newest test-oldest lint

setup:
	bash tools/setup_env.sh newest

setup-oldest:
	bash tools/setup_env.sh oldest

demo: setup
	$(PY) tools/demo/run_demo.py $(if $(SEED),--seed $(SEED))

test: test-newest test-oldest

lint: setup
	$(PY) -m ruff check .

test-fast: lint
	$(PY) -m pytest -m "not slow" tests

test-newest: lint
	$(PY) -m pytest tests

test-oldest: setup-oldest
	$(OLDEST_PY) -m pytest $(OLDEST_TESTS)
