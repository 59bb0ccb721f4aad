# Quick start: `make demo` (main job) and `make test` (test suite). Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build that lies on this project's machines; override e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

.PHONY: setup data demo test zoo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian's dataset-fashion-mnist package (needs root); skipped when present.
data:
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then echo "Fashion-MNIST: $(FASHION_MNIST)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set MOBILENETS_DATA"; fi

zoo: setup
	$(VENV)/bin/mobilenets zoo

# Main job: train on Fashion-MNIST for a few minutes, then report test accuracy, per-class accuracy and plots.
# A narrow V3-small-minimal at 28 px is the fastest accurate choice on a 2-core CPU (docs/training.md).
DEMO_MODEL ?= mobilenet_v3_small_minimal
# Two minutes of training, whatever the machine's speed (--time-budget; 100 epochs is only an upper bound).
DEMO_ARGS ?= --width-mult 0.5 --time-budget 2 --epochs 100 --batch-size 128 --threads 1
DEMO_OUT ?= runs/demo
demo: setup data
	$(VENV)/bin/mobilenets train --model $(DEMO_MODEL) $(DEMO_ARGS) --output $(DEMO_OUT) --overwrite
	$(VENV)/bin/mobilenets evaluate $(DEMO_OUT) --threads 1 --confusion $(DEMO_OUT)/confusion_test.png
	@echo "plots: $(DEMO_OUT)/curves.png $(DEMO_OUT)/confusion_test.png; metrics: $(DEMO_OUT)/metrics.jsonl; model: $(DEMO_OUT)/best.safetensors"

# PYTEST_ARGS narrows a run, e.g. make test PYTEST_ARGS='-k openvino'
PYTEST_ARGS ?=
test: setup data
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
