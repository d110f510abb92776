# The two commands of README.md. Both set up .venv/ first (skipping finished steps).
PY := .venv/bin/python

.PHONY: setup demo test

setup:
	bash tools/setup_env.sh

demo: setup
	$(PY) tools/demo/run_demo.py

test: setup
	$(PY) -m pytest tests
