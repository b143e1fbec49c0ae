# OneSource: `make demo` and `make test` are the two commands; both set up .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed
WEBPKG := web/node_modules/.package-lock.json
PYTEST := $(BIN)/python -m pytest

.DEFAULT_GOAL := help
.PHONY: help setup demo test test-fast test-slow bench lint constraints clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

# Bytecode is compiled at install (uv does not by default, and PYTHONDONTWRITEBYTECODE keeps Python from
# caching it): without it every `onesource` command compiles its imports from source, over a second of CPU.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$$(grep '^uv==' constraints.txt)"
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt -e '.[test]'
	$(BIN)/python -m compileall -q -j 0 examples core ingest onesource connectors schemas quality lakehouse sharing metrics portal bench
	touch $(STAMP)

# Swagger UI, ReDoc and the scripts of GX's Data Docs, served and copied from here: no page needs a CDN.
$(WEBPKG): web/package.json web/package-lock.json
	cd web && npm ci --silent
	touch $(WEBPKG)

setup: $(STAMP) $(WEBPKG) ## create .venv and install every pinned dependency (Python from PyPI, browser assets from npm)

demo: $(STAMP) $(WEBPKG) ## build the demo city (12 departments) and load it through Airflow, end to end
	$(BIN)/onesource demo $(ARGS)

test: $(STAMP) $(WEBPKG) lint ## every test: lint, fast ones, then slow ones (real Airflow, PostgreSQL, MariaDB, psql, PgJDBC, chromium)
	$(PYTEST) -n 2 -m "not slow" tests
	scripts/system-deps.sh
	$(PYTEST) -m slow tests

test-fast: $(STAMP) $(WEBPKG) ## the fast tier only (no Airflow runs, no database servers)
	$(PYTEST) -n 2 -m "not slow" tests

test-slow: $(STAMP) $(WEBPKG) ## the slow tier only
	scripts/system-deps.sh
	$(PYTEST) -m slow tests

bench: $(STAMP) ## benchmarks: ratios against raw DuckDB on the same data, median of several runs
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP) ## ruff, the layer contract (imports run down: pyproject.toml [tool.importlinter]), mypy (strict on core/, schemas/, connectors/, lakehouse/, ingest/, quality/)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

constraints: ## re-pin constraints.txt from the current .venv
	{ head -2 constraints.txt; $(UV) pip freeze --python $(BIN)/python | grep -v -E '^(-e |onesource|pip==|setuptools==|wheel==)'; } > constraints.new && mv constraints.new constraints.txt

clean: ## remove .venv, web/node_modules and the default home (.onesource/)
	rm -rf $(VENV) web/node_modules .onesource
