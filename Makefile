# faxrelay: `make run` starts the whole system, `make test` runs every test. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pinned dependencies with their hashes: requirements.lock is what production runs (the image
# installs it), requirements-dev.lock adds the embedded servers, the development tools and the
# tracing extra (so its tests run) at the same versions. `make lock` regenerates both after a
# change to the dependencies in pyproject.toml.
LOCKS := requirements.lock requirements-dev.lock

.PHONY: install run run-sandbox test lint format bench clean lock

$(STAMP): pyproject.toml $(LOCKS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e '.[embedded,sandbox,dev,otel]'
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/faxrelay up $(ARGS)

run-sandbox: $(STAMP)
	$(BIN)/faxrelay up --sandbox $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The chaos soak's minutes of load in `make bench` (README "Chaos soak"; 10 for the full run).
CHAOS_MINUTES ?= 3
# The retention soak's faxes in `make bench` (bench/README.md "soak": the full run is longer).
SOAK_FAXES ?= 2000

bench: $(STAMP)
	$(BIN)/python -m bench.ingest
	$(BIN)/python -m bench.archive
	$(BIN)/python -m bench.headofline
	$(BIN)/python -m bench.poll
	$(BIN)/python -m bench.failover
	$(BIN)/python -m bench.chaos --minutes $(CHAOS_MINUTES)
	$(BIN)/python -m bench.soak --faxes $(SOAK_FAXES)

# pip-tools in a venv of its own; resolved against the public index only (local pip configuration
# is ignored), so the hashes are the published ones. Existing pins are kept where they still fit;
# `make lock LOCK_ARGS=--upgrade` moves everything to the newest allowed versions.
LOCK_TOOLS := $(VENV)/lock-tools
PIP_COMPILE = env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null \
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
	$(LOCK_ARGS)

lock:
	test -x $(LOCK_TOOLS)/bin/pip-compile || \
		($(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install --quiet pip-tools)
	$(PIP_COMPILE) --output-file=requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra embedded --extra dev --extra otel --constraint requirements.lock \
		--output-file=requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
