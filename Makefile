# Two commands do all the set-up on a fresh machine:
#   make run    set up and start the app on http://127.0.0.1:8501
#   make test   set up (with dev tools) and run lint, type checks and the tests not marked slow
#   (make slow runs the slow ones, make test-all both; CI runs make test then make slow)
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8501
PYTEST_ARGS ?=

.PHONY: run test test-all slow setup setup-dev lint typecheck fast bench zoo screenshots clean

setup:
	scripts/setup.sh

setup-dev:
	scripts/setup.sh --dev

run: setup
	$(PY) -m streamlit run serve.py --server.headless true --server.address $(HOST) --server.port $(PORT)

lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup-dev
	$(VENV)/bin/mypy

test: setup-dev lint typecheck
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

slow: setup-dev
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-all: test slow

fast: setup-dev
	$(PY) -m pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

zoo: setup
	$(PY) -m core zoo build

# refresh docs/screenshots/ from the real default zoo in ./workspace
screenshots: setup-dev
	$(PY) -m core zoo build
	MIXMERGE_SCREENSHOTS=$(CURDIR)/docs/screenshots MIXMERGE_SCREENSHOT_WORKSPACE=$(CURDIR)/workspace \
		$(PY) -m pytest -q tests/app/test_browser.py -k "home or every_page"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
