# Two commands do all set-up on a fresh clone: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test lint venv clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e '.[test]'
	@# pip byte-compiles the 5 GB of packages on one core; compileall uses them all (40 s less on 2 cores),
	@# and leaves out the packages' own test suites, which nothing here imports (a third of the work).
	@# Like pip, it skips files that do not compile (torch ships some for newer Pythons), hence the `|| true`.
	$(BIN)/python -m compileall -qq -j 0 -x '/tests?/|/testing/_internal/' $(VENV)/lib || true
	touch $(STAMP)

venv: $(STAMP)

# Four minutes of training at most: the default's 120 kimg where the CPU is as fast as the one it was chosen on;
# on a slower one the run ends where the four minutes do, checkpointed, and its last line says how to go on.
train: $(STAMP)
	$(BIN)/ganforge train --preset default --out runs --minutes 4

# The tests run one thread each (tests/conftest.py), so one worker per core (at most 8: each imports torch)
# takes the suite from ~8.5 to ~5.5 minutes on 2 cores. A plain `pytest ...` runs one at a time.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --maxprocesses 8

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean-venv:
	rm -rf $(VENV)
