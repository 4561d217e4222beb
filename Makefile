# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch is only needed to export the embedding backbone to ONNX.
TORCH ?= torch==2.13.0

.PHONY: install backend build demo serve test test-unit clean

$(VENV)/.installed: pyproject.toml
	scripts/install-build-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[export,local,dev]"
	touch $@

# Triton's native onnxruntime backend, built once into ~/.cache/model-selector; sources from
# $(TRITON_BACKEND_SOURCES) when set, else the pinned commits on GitHub.
backend: $(VENV)/.installed
	$(BIN)/model-selector build-backend > /dev/null

install: backend

build: install
	$(BIN)/model-selector build

demo: install
	$(BIN)/model-selector demo

serve: build
	$(BIN)/model-selector serve

# Two tiers: the unit tests (no build, no server; under a minute) stop at the first failure; then the
# integration tests, which build their own repository (with --holdout, under build/) and serve it.
test: install
	$(BIN)/python -m pytest -m "not integration" -x
	$(BIN)/python -m pytest -m integration

test-unit: install
	$(BIN)/python -m pytest -m "not integration"

clean:
	rm -rf $(VENV) model_repository build dist
