# Two entry points that work on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test lint format bench bench-full bench-gpu distill-curve native-check study-cpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/mobileattn run

test: $(STAMP_TEST)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	TRITON_INTERPRET=1 $(BIN)/python -m pytest

lint: $(STAMP_TEST)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP_TEST)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The quick sweep (N = 1024 and MobileI2V's 2760); bench-full: every size in bench/conftest.py.
bench: $(STAMP_TEST)
	$(BIN)/python -m pytest bench --benchmark-only --bench-sizes 1024,2760 --benchmark-columns=min,median,iqr,rounds

bench-full: $(STAMP_TEST)
	$(BIN)/python -m pytest bench --benchmark-only

# Block distillation error vs steps (bench/results/distill-curve.json): where it plateaus.
distill-curve: $(STAMP_RUN)
	$(BIN)/python -m study.distill_curve

# Native vs block-wise distilled hybrids (bench/results/native-check.json); RUN=a run folder.
native-check: $(STAMP_RUN)
	$(BIN)/python -m study.native_check --run $(RUN)

# The committed three-teacher report (bench/results/study-cpu/; the config file sets
# top_k 0: every teacher's chosen pair and MobileI2V's recipe, no front neighbours).
study-cpu: $(STAMP_RUN)
	$(BIN)/mobileattn run --teachers 3 --config bench/results/study-cpu-config.json --out bench/results/study-cpu

bench-gpu: $(STAMP_RUN)
	$(BIN)/python -m bench.gpu

clean:
	rm -rf $(VENV) results .pytest_cache .benchmarks build *.egg-info
