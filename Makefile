# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: venv demo test test-slow bench lint clean

venv: $(STAMP)

# torch first and pinned: `pip install torch==2.13.0` takes the local CPU build, so nothing
# pulls gigabytes of CUDA wheels onto a CPU machine.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[plot,dev]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/inkfuse demo --out runs/demo

test: venv
	INKFUSE_DATA=$${INKFUSE_DATA:-$(SHARED_DATA)} $(PY) -m pytest -q

test-slow: venv
	INKFUSE_DATA=$${INKFUSE_DATA:-$(SHARED_DATA)} $(PY) -m pytest -q -m slow

bench: venv
	INKFUSE_DATA=$${INKFUSE_DATA:-$(SHARED_DATA)} $(PY) benchmarks/throughput.py

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
