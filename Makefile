# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch is only needed to export the embedding backbone to ONNX.
TORCH ?= torch==2.13.0

.PHONY: install backend build demo serve test clean

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

# The tests build their own repository (with --holdout, under build/); model_repository/ is the one to serve.
test: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) model_repository/*/1/*.onnx* model_repository/*/1/tokenizer.json \
	       model_repository/decision/1/router.yaml model_repository/decision/1/selectors.json \
	       model_repository/manifest.json build/test_repository build/holdout_repository
