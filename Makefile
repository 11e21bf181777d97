# Two commands for a newcomer: `make run` and `make test`. The logic lives in scripts/.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test bench guarantees install opensearch-start opensearch-stop

run: $(STAMP)
	scripts/run

test: $(STAMP)
	scripts/test

bench: $(STAMP)
	scripts/bench

# docs/guarantees.md from build/fault-reports.json (what `make test` wrote); runs the fault tests first when
# that file is missing or of another commit.
guarantees: $(STAMP)
	.venv/bin/python scripts/guarantees

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
