# Two set-up commands on a fresh machine: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; pinned here (not in pyproject) so Jetson and CUDA users keep their own torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test demo bench-core bench-kernels bench-int8 clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q -ra

demo: $(VENV)/.installed
	$(PY) examples/demo_elpv.py

# Result tables of the README (slow; not part of `make test`).
bench-core: $(VENV)/.installed
	$(PY) benchmarks/bench_core.py --out benchmarks/results/core.md

bench-kernels: $(VENV)/.installed
	$(PY) benchmarks/bench_kernels.py --out benchmarks/results/kernels_cpu.md

bench-int8: $(VENV)/.installed
	$(PY) benchmarks/bench_int8.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
