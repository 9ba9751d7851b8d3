# Two commands set everything up on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := fuse3 libfuse3-dev pkg-config attr python3-venv gcc python3-dev
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: bootstrap system-deps demo test bench clean

bootstrap: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

demo: bootstrap
	$(VENV)/bin/artifactfs demo

test: bootstrap
	$(VENV)/bin/pytest

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	touch $@

# Full sizes, 3 runs per cell (~17-20 min on 2 cores); `make bench BENCH_ARGS=--quick` for a smoke run.
# Writes bench/results.md.
bench: bootstrap $(BENCH_STAMP)
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
