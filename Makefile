# Every command of the README is a target here: `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The torch and torchvision to install when $(VENV) has no torch; one already there is kept, whatever
# its build (CUDA, ROCm, CPU), and pip adds the torchvision built for it. Choose another build:
# `make install TORCH="torch torchvision --index-url https://download.pytorch.org/whl/cpu"` (CPU
# only: 1.2 GB instead of 6). The default is the pair cached on this project's build machines.
# A CPU torch needs a CPU torchvision: the registry's torchvision is built against CUDA torch and
# fails at import next to a CPU torch (`operator torchvision::nms does not exist`).
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Pinning the installed torch makes pip pick the torchvision built for it instead of replacing torch.
TORCH_VERSION = $(BIN)/python -c "from importlib.metadata import version; print(version('torch'))"
KEEP_TORCH = "torch==$$($(TORCH_VERSION))"

.DEFAULT_GOAL := help
.PHONY: help install train inspect inspect-demo test test-other-cpu test-both-cpus test-slow gpu-check tensorboard sample bench bench-run bench-data config-reference clean

help: ## Show this list
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(TORCH_VERSION) >/dev/null 2>&1 || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e . $(KEEP_TORCH)
	@$(BIN)/python -c "import torchvision" 2>/dev/null || { echo "torchvision does not load with torch $$($(TORCH_VERSION)): \
	install the torchvision built for that torch (a CPU torch takes torchvision from PyTorch's CPU index), e.g. \
	make install TORCH=\"torch torchvision --index-url https://download.pytorch.org/whl/cpu\" in a new venv"; exit 1; }
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e ".[dev]" $(KEEP_TORCH)
	touch $(DEV_STAMP)

install: $(DEV_STAMP) ## Create .venv (if missing) and install the project with its dev tools (TORCH=... picks the torch build)

train: $(STAMP) ## Train the demo experiment on the committed Fashion-MNIST sample
	$(BIN)/python -m src.train experiment=demo
	@echo "(make train installed the runtime only: serve, export to ONNX, audit, shards, timm bodies, mlflow/wandb and optuna need their extras; make install adds them all)"

inspect: $(STAMP) ## See how the demo's CNN works on its data, before training (outputs/inspect/runs/)
	$(BIN)/python -m src.inspect experiment=demo

inspect-demo: $(STAMP) ## The same from the latest demo checkpoint (run `make train` first)
	$(BIN)/python -m src.inspect ckpt_path=$$(ls -td outputs/train/runs/*/ | head -1)checkpoints/best.ckpt

# Two pytest processes, one test file each at a time (a module's shared runs stay in one process), each with
# half the cores for torch (tests/conftest.py): what keeps CI within its 20 minutes (docs/testing.md).
PYTEST_PARALLEL := -n 2 --dist loadfile
test: $(DEV_STAMP) ## Run the test suite (CI runs this)
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

# IFC_NATIVE_BF16 makes the bf16 probe answer as the other kind of CPU: the tests marked `precision` (those
# whose results depend on what `auto` picks) run again as that CPU would run them. Only those: the whole
# suite twice no longer fits CI's 20 minutes (7 min a pass on 2 cores), and on a CPU without native bf16
# emulated bf16 is 10-25x slower. `make test-both-cpus` is the whole suite both ways, run before a merge lands.
OTHER_CPU = $(BIN)/python -c "import sys; from src.core.hardware import has_native_bf16; print(0 if has_native_bf16('cpu') else 1)"
test-other-cpu: $(DEV_STAMP) ## Run the precision tests as the other kind of CPU would (native bf16 or not); CI runs it after `make test`
	@other=$$($(OTHER_CPU)); echo "the precision tests as on a CPU $$([ $$other = 1 ] && echo with || echo without) native bf16 (IFC_NATIVE_BF16=$$other)"; \
	IFC_NATIVE_BF16=$$other $(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "precision and not slow"

# On a CPU without native bf16 the second pass is only the precision tests (emulated bf16 is too slow).
test-both-cpus: test ## The whole suite as this CPU and as a CPU without native bf16 (before merging; ~15 min on 2 cores)
	@if [ "$$($(OTHER_CPU))" = 0 ]; then IFC_NATIVE_BF16=0 $(BIN)/python -m pytest $(PYTEST_PARALLEL); else $(MAKE) test-other-cpu; fi

test-slow: $(DEV_STAMP) ## Run the slow tests too
	$(BIN)/python -m pytest $(PYTEST_PARALLEL) -m "slow or not slow"

# No install step: on a machine without CUDA it stops at once (one line, exit 2), before any pip run.
gpu-check: ## On one CUDA GPU: the GPU tests, then ResNet50 speeds per data path (benchmarks/gpu-check-<date>.json)
	@test -x $(BIN)/python || { echo "no $(BIN): run make install first" >&2; exit 2; }
	@$(BIN)/python scripts/gpu_check.py

tensorboard: $(STAMP) ## Open TensorBoard on every run under outputs/
	$(BIN)/tensorboard --logdir outputs

sample: $(STAMP) ## Rebuild data/fashion-mnist-sample from Debian's dataset-fashion-mnist
	rm -rf data/fashion-mnist-sample
	$(BIN)/python scripts/make_fashion_mnist_folder.py data/fashion-mnist-sample --per-class 500

BENCH_DATA := data/fashion-mnist-full data/fashion-mnist-jpeg400
SEED_DATA := data/fashion-mnist-seed440

data/fashion-mnist-full: | $(STAMP)
	$(BIN)/python scripts/make_fashion_mnist_folder.py $@.tmp && mv $@.tmp $@

data/fashion-mnist-jpeg400: | $(STAMP)
	$(BIN)/python scripts/make_fashion_mnist_folder.py $@.tmp --per-class 300 --image-size 400 --format jpeg && mv $@.tmp $@

$(SEED_DATA): | $(STAMP)
	$(BIN)/python scripts/make_fashion_mnist_folder.py $@.tmp --per-class 44 --image-size 400 --format jpeg && mv $@.tmp $@

bench-data: $(BENCH_DATA) $(SEED_DATA) ## Write the benchmark folders (all 60,000 PNGs; 3,000 and 440 400x400 JPEGs)

bench-run: $(STAMP) $(SEED_DATA) ## Whole src.train runs: the fastai-comparison recipe (both data paths), then the seed's ResNet50 at 300 px
	$(BIN)/python -m src.bench bench=fastai_recipe
	$(BIN)/python -m src.bench bench=seed_recipe

bench: $(STAMP) $(BENCH_DATA) ## Benchmark training speed against the bare-loop floor and the data pipeline
	$(BIN)/python -m src.bench bench=resnet18_64
	$(BIN)/python -m src.bench bench=resnet50_224

config-reference: $(STAMP) ## Regenerate docs/configuration-reference.md from conf/ (every key, default, meaning)
	$(BIN)/python scripts/make_config_reference.py

clean: ## Remove runs under outputs/ (keeps the venv)
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
