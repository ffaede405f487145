# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: demo test lint format data clean reproduce report

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Installed once per change of the project's metadata; torch first, from the pinned builds.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch torchvision
	$(PIP) install --quiet -c constraints.txt -e ".[test,train,vision]"
	$(BIN)/dyrelu build-kernels
	touch $@

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Fashion-MNIST from Debian's package when it is missing and apt-get is available.
data:
	@if [ -f "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
		echo "Fashion-MNIST found in $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		apt-get install -y dataset-fashion-mnist || { apt-get update && apt-get install -y dataset-fashion-mnist; }; \
	else \
		echo "Fashion-MNIST is missing: install Debian's package dataset-fashion-mnist, or pass --data-dir to dyrelu"; \
	fi

DEMO_ARGS ?=
demo: $(VENV)/.installed data
	$(BIN)/dyrelu demo --data-dir $(FMNIST_DIR) $(DEMO_ARGS)

# The recipe study and the comparison grids behind REPRODUCTION.md (hours on 2 cores; resumable: rerun to continue).
reproduce: $(VENV)/.installed data
	$(BIN)/dyrelu compare --claims R1 --jobs 2 --data-dir $(FMNIST_DIR) --runs-dir runs/recipe
	$(BIN)/dyrelu compare --jobs 2 --data-dir $(FMNIST_DIR)
	$(BIN)/dyrelu keypoints grid --jobs 2
	$(BIN)/dyrelu report --readme README.md

report: $(VENV)/.installed
	$(BIN)/dyrelu report --readme README.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
