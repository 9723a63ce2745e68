# sdmesh — developer entry points. `make demo` and `make test` work on a fresh Debian 12
# machine (root or sudo): they install what is missing and are quick when nothing is.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make

# Debian packages: building libvirt-python, and the tools the tests drive.
APT_BUILD := python3-venv python3-dev gcc pkg-config libvirt-dev

.PHONY: all deps demo test lint typecheck unit bench clean distclean

all: deps

deps: $(STAMPS)/apt $(BIN)/.installed

$(STAMPS)/apt: Makefile scripts/apt-ensure
	@mkdir -p $(STAMPS)
	scripts/apt-ensure $(APT_BUILD)
	@touch $@

$(BIN)/.installed: setup.cfg pyproject.toml $(STAMPS)/apt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

demo: deps
	@scripts/demo

lint: deps
	$(BIN)/ruff check sdmesh tests bench
	$(BIN)/ruff format --check sdmesh tests bench

typecheck: deps
	$(BIN)/mypy

unit: deps
	$(BIN)/pytest -q tests/unit

test: deps lint typecheck
	$(BIN)/pytest -q -ra

bench: deps
	$(BIN)/python bench/language_parse.py

clean:
	rm -rf $(STAMPS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
