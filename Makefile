# Quick start: `make demo` and `make test`; each sets up or reuses .venv (tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: env test demo bench demo-det demo-seg

env:
	@bash tools/setup_env.sh

test: env
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: env
	$(PY) tools/benchmark.py --models a2mamba_n a2mamba_t

bench: env
	$(PY) tools/benchmark.py

# Real nuclei with instance masks, extracted from the stardist wheel on PyPI (never committed).
NUCLEI := data/nuclei/annotations/instances_val.json
$(NUCLEI): tools/prepare_nuclei_demo.py | env
	$(PY) tools/prepare_nuclei_demo.py --out data/nuclei

# Cascade Mask R-CNN + A2Mamba-N on the nuclei, on CPU: trains, then reports COCO bbox/segm AP.
demo-det: env $(NUCLEI)
	$(PY) tools/train.py configs/mmdet/cascade-mask-rcnn_a2mamba-n_fpn_nuclei-demo.py --work-dir work_dirs/demo-det

# UperNet + A2Mamba-N on the nuclei (nucleus vs background), on CPU: trains, then reports mIoU.
demo-seg: env $(NUCLEI)
	$(PY) tools/train.py configs/mmseg/upernet_a2mamba-n_nuclei-demo.py --work-dir work_dirs/demo-seg
