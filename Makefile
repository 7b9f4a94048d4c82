# Two entry points, both from a fresh machine with only Python 3.11:
#   make run   set up .venv and run the bundled example end to end
#   make test  set up .venv and run the whole test suite
PYTHON ?= python3.11
VENV := .venv
# checkov lives in its own venv: it downgrades packages dvc needs.
CHECKOV := .tools/checkov/bin/checkov
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DISABLE_DEEPCHECKS_ANONYMOUS_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: run test setup lint bench clean docs figures

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

$(CHECKOV):
	$(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet checkov==3.3.30
	touch $@

run: setup
	$(BIN)/mlops run

# Chromium renders the report in tests/test_report.py; installed only as root,
# otherwise that one test is skipped.
.tools/chromium.stamp:
	@if command -v chromium >/dev/null; then mkdir -p .tools && touch $@; \
	elif [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	    fonts-noto-color-emoji && mkdir -p .tools && touch $@; \
	else echo "chromium is missing (not root): the report render test will skip"; fi

# Three workers on two cores: a fifth of the suite's worker time is spent
# waiting (servers under load, retries, act), which a third worker fills
# (bench/README.md#test-suite).
test: setup $(CHECKOV) .tools/chromium.stamp
	$(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder --durations=40

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy runner stages

# docs/spec-reference.md from schema/mlops.schema.json (tests/test_docs.py checks it).
docs: setup
	$(BIN)/python -m runner.specdoc

# README.md's reliability table, from the rows the last test run recorded
# (.mlops/figures.json; tests/figures.py).
figures: setup
	$(BIN)/python -m tests.figures

bench: setup
	$(BIN)/python bench/bench_cli.py

clean:
	rm -rf $(VENV) .mlops artifacts dvc.lock
