# Quick start: `make demo` and `make test`; each sets up or reuses .venv (tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: env test demo bench

env:
	@bash tools/setup_env.sh

test: env
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: env
	$(PY) tools/benchmark.py --models a2mamba_n a2mamba_t

bench: env
	$(PY) tools/benchmark.py
