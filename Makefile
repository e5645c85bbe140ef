# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap what they need.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt constraints.txt | sha1sum | cut -c1-12)

.PHONY: demo test bench stack airflow stop clean postgres-binaries erase

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt -c constraints.txt
	@rm -f $(VENV)/.installed-*; touch $@

postgres-binaries:
	@bash scripts/ensure_postgres.sh

demo: $(STAMP) postgres-binaries   ## the main job end to end on embedded defaults
	PYTHONPATH=plugins:. $(PY) -m devstack.demo

test: $(STAMP) postgres-binaries   ## the whole test suite
	$(PY) -m pytest

bench: $(STAMP) postgres-binaries  ## benchmarks (see bench/README.md)
	PYTHONPATH=plugins:. $(PY) -m bench $(ARGS)

stack: $(STAMP) postgres-binaries  ## start Postgres and the sandboxes, leave them running
	PYTHONPATH=plugins:. $(PY) -m devstack.stack

airflow: $(STAMP) postgres-binaries ## a real Airflow (scheduler, dag-processor, triggerer, API server) on the local stack
	PYTHONPATH=plugins:. $(PY) -m devstack.stack airflow

erase: $(STAMP)                    ## erase EMAIL from the warehouse (docs/security.md); DRY_RUN=1 only reports
	@test -n "$(EMAIL)" || { echo "usage: make erase EMAIL=person@example.com [DRY_RUN=1]"; exit 2; }
	PYTHONPATH=plugins:. $(PY) -m ecomsync.privacy erase "$(EMAIL)" $(if $(DRY_RUN),--dry-run)

stop:
	PYTHONPATH=plugins:. $(PY) -m devstack.stack down

clean: stop
	rm -rf .local
