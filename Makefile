# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv when missing and installs sitekit with its dev extra once;
# the stamp file keeps reruns fast and is refreshed when setup.cfg/pyproject.toml change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sitekit-installed

.PHONY: demo test lint bench install clean docs

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sitekit demo --out demo_output

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -n 2 --timeout=900 -q

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit $$?; done

clean:
	rm -rf $(VENV) demo_output .pytest_cache docs/_build docs/auto_examples docs/api docs/sg_execution_times.rst

# The documentation site (Sphinx): warnings are errors and the gallery examples are executed.
docs: $(STAMP)
	MPLBACKEND=Agg $(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html
