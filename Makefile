# The two commands of README.md. Each sets up its environment first (skipping finished steps).
#   make demo   the demo, in the newest environment (.venv/)
#   make test   the whole suite in the newest environment (.venv/), then the suite of
#               OLDEST_TESTS in the oldest one (.venv-oldest/, torch 2.1.2); .ci/run runs it
PY := .venv/bin/python
OLDEST_PY := .venv-oldest/bin/python
# What the oldest environment runs: registration, the version checks and the install files;
# loading (checkpoint/, the inferencers), resume, the training hooks and CPU mixed precision
# (engine/); the model, its fast paths and its equivalence with the transformers port; every
# config; the quick demo; the converters and the tools' errors. Left to the newest environment:
# the README checks, the property tests, attention maps, the benchmark, the FLOP counter, ONNX
# export, the port comparison, the demo's progress line and picture, the tools' output.
OLDEST_TESTS := tests/test_registration.py tests/test_versions.py tests/test_install_files.py \
	tests/checkpoint tests/engine tests/configs tests/models/test_cvt.py \
	tests/models/test_equivalence.py tests/models/test_ops.py tests/tools/test_demo.py \
	tests/tools/test_infer.py tests/tools/test_model_converter.py tests/tools/test_tool_errors.py

.PHONY: setup setup-oldest demo test test-newest test-oldest

setup:
	bash tools/setup_env.sh newest

setup-oldest:
	bash tools/setup_env.sh oldest

demo: setup
	$(PY) tools/demo/run_demo.py

test: test-newest test-oldest

test-newest: setup
	$(PY) -m pytest tests

test-oldest: setup-oldest
	$(OLDEST_PY) -m pytest $(OLDEST_TESTS)
