# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: venv demo test test-slow test-browser play-bench bench lint clean

venv: $(STAMP)

# torch first and pinned: `pip install torch==2.13.0` takes the local CPU build, so nothing
# pulls gigabytes of CUDA wheels onto a CPU machine.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[plot,dev,play,browser]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/inkfuse demo --out runs/demo

test: venv
	INKFUSE_DATA=$${INKFUSE_DATA:-$(SHARED_DATA)} $(PY) -m pytest -q

test-slow: venv
	INKFUSE_DATA=$${INKFUSE_DATA:-$(SHARED_DATA)} $(PY) -m pytest -q -m slow

# The playground in a real browser: Debian's Chromium and ChromeDriver (installed here if
# missing; needs root or sudo), driven by Selenium. `make test` runs it too where they exist.
test-browser: venv
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $$(command -v sudo) apt-get update -q && $$(command -v sudo) apt-get install -y -q chromium chromium-driver; }
	INKFUSE_DATA=$${INKFUSE_DATA:-$(SHARED_DATA)} $(PY) -m pytest -q tests/play

# 8 browsers' worth of clients generating at once against the demo run (after `make demo`)
play-bench: venv
	$(PY) benchmarks/play_load.py runs/demo

# About 80 minutes on the 2-core CPU, most of it the two 10-minute trainings and their sampling;
# run it on an idle machine. diffusers (the `bench` extra) is installed on first use, with torch
# pinned so that pip keeps the local CPU build.
bench: venv
	$(PY) -c 'import diffusers' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]' torch==2.13.0
	INKFUSE_DATA=$${INKFUSE_DATA:-$(SHARED_DATA)} $(PY) benchmarks/throughput.py
	$(PY) benchmarks/layers.py
	INKFUSE_DATA=$${INKFUSE_DATA:-$(SHARED_DATA)} $(PY) benchmarks/vs_diffusers.py all

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
