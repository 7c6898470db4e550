# Two self-sufficient entry points: `make demo` and `make test`. Each creates .venv with
# everything it needs (first time: about 2 minutes of downloads from PyPI), then runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/demo
TEST_WORKERS ?= 3  # pytest-xdist processes; 3 keeps 2 cores busy while tests wait on subprocesses.

.PHONY: demo test bench claims clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m sms_jax.main --config=configs/mnist1d.py --workdir=$(WORKDIR)

test: $(BIN)/.installed
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile

bench: $(BIN)/.installed
	$(BIN)/python bench/bench_step.py

claims: $(BIN)/.installed  # The papers' claims on 10 fresh seeds (bench/CLAIMS.md); about an hour on 2 cores.
	$(BIN)/python bench/claims.py

clean:
	rm -rf $(VENV) runs
