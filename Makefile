# Everything a fresh machine needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS := dev,data,plot,progress,cache,test,docs

.PHONY: install demo test test-accelerator lint format docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/svmjax demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright

# Two workers (CI has 2 cores); a test file stays on one worker, so a module's fixtures
# (the 8-device child process, the CLI runs) are set up once. WORKERS=0 runs serially.
WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile

# The tests whose meaning changes on an accelerator, on the device JAX picks, stopped after
# ACCEL_DEADLINE seconds; summary.txt and junit.xml in ACCEL_OUT. Without make or a venv:
# PYTHONPATH=$PWD python3 tests/run_accelerator.py --out DIR
ACCEL_OUT ?= results/accelerator
ACCEL_DEADLINE ?= 300
test-accelerator: $(STAMP)
	$(BIN)/python tests/run_accelerator.py --out $(ACCEL_OUT) --deadline $(ACCEL_DEADLINE)

# The documentation site into site/ (git-ignored); any warning, e.g. a broken link, fails.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis results site dist
