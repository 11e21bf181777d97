# Two commands for a newcomer: `make run` and `make test`. The logic lives in scripts/.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench install opensearch-start opensearch-stop

run: $(STAMP)
	scripts/run

test: $(STAMP)
	scripts/test

bench: $(STAMP)
	scripts/bench

install: $(STAMP)

# Reinstall whenever the dependency pins change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

opensearch-start:
	scripts/opensearch-dev start

opensearch-stop:
	scripts/opensearch-dev stop
