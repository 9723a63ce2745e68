# sdmesh — developer entry points. `make demo` and `make test` work on a fresh Debian 12
# machine (root or sudo): they install what is missing and are quick when nothing is.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make

# Debian packages: building libvirt-python, and the tools the tests drive.
APT_BUILD := python3-venv python3-dev gcc pkg-config libvirt-dev
# Real guests under qemu:///system for tests/e2e (root only; skipped elsewhere).
APT_E2E := libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils tini lvm2
# The dashboard's browser test: Playwright drives Debian's chromium (no browser download).
APT_UI := chromium
# Multi-host tests: agents in network namespaces, faults with nft, Serf as the baseline.
APT_MESH := iproute2 nftables serf

.PHONY: all deps demo demo-single test lint typecheck unit bench clean distclean e2e-host smoke-guest \
	install-service

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

# Five agents on loopback: a pool spread, a host killed, the pool healed, terminated (~15 s).
demo: deps
	@scripts/demo

# One host, no mesh: the description language and `sdmesh run`.
demo-single: deps
	@scripts/demo-single

PY_SCRIPTS := scripts/build-guest scripts/smoke-guest

lint: deps
	$(BIN)/ruff check sdmesh tests bench $(PY_SCRIPTS)
	$(BIN)/ruff format --check sdmesh tests bench $(PY_SCRIPTS)

typecheck: deps
	$(BIN)/mypy

unit: deps
	$(BIN)/pytest -q tests/unit

# libvirtd answering and the tiny guest built; idempotent, ~0.3 s once done.
e2e-host: deps
	@if [ "$$(id -u)" = 0 ]; then \
	  scripts/apt-ensure $(APT_E2E) $(APT_MESH) $(APT_UI) && scripts/start-libvirtd && \
	  scripts/build-guest --publish; \
	else echo "e2e-host: not root: tests/e2e will skip"; fi

smoke-guest: e2e-host
	scripts/smoke-guest

test: deps lint typecheck e2e-host
	$(BIN)/pytest -q -ra

bench: deps e2e-host
	$(BIN)/python bench/language_parse.py
	$(BIN)/python bench/transport_seal.py
	$(BIN)/python bench/membership_sim.py
	$(BIN)/python bench/libvirt_raw_vs_driver.py
	$(BIN)/python bench/run_test_driver.py
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/python bench/run_real_guests.py; fi

# The agent as a systemd service, running this checkout's sdmesh.
install-service: deps
	install -d /etc/sdmesh
	sed "s#/usr/local/bin/sdmesh#$(abspath $(BIN))/sdmesh#" agents/sdmesh.service \
	  > /etc/systemd/system/sdmesh.service
	sed "s#/usr/local/bin/sdmesh-fence-guard#$(abspath $(BIN))/sdmesh-fence-guard#" \
	  agents/sdmesh-fence-guard.service > /etc/systemd/system/sdmesh-fence-guard.service
	test -f /etc/sdmesh/sdmesh.toml || install -m 0644 agents/sdmesh.toml /etc/sdmesh/sdmesh.toml
	@systemctl daemon-reload 2>/dev/null || echo "install-service: systemd is not running here"
	@echo "edit /etc/sdmesh/sdmesh.toml, add /etc/sdmesh/cluster.key (sdmesh keygen), then:"
	@echo "  systemctl enable --now sdmesh-fence-guard sdmesh"

clean:
	rm -rf $(STAMPS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
