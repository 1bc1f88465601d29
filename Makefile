# Two set-up commands on a fresh machine: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLIP_VENV ?= .venv-clip
# The CPU build of torch; pinned here (not in pyproject) so Jetson and CUDA users keep their own torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test demo bench-core bench-kernels bench-int8 bench-backends bench-stream bench-peer clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# open_clip needs torchvision, which cannot sit beside torch 2.13.0 (see tests/requirements-clip.txt).
$(CLIP_VENV)/.installed: tests/requirements-clip.txt pyproject.toml
	$(PYTHON) -m venv $(CLIP_VENV)
	$(CLIP_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLIP_VENV)/bin/python -m pip install --quiet -r tests/requirements-clip.txt
	$(CLIP_VENV)/bin/python -m pip install --quiet -c tests/requirements-clip.txt -e ".[test,clip]"
	touch $@

# The whole suite in .venv, then the optional CLIP matcher in an environment of its own (below).
test: $(VENV)/.installed $(CLIP_VENV)/.installed
	$(PY) -m pytest -q -ra
	$(CLIP_VENV)/bin/python -m pytest -q -ra tests/model/test_clip_matcher.py

demo: $(VENV)/.installed
	$(PY) examples/demo_elpv.py

# Result tables of the README (slow; not part of `make test`).
bench-core: $(VENV)/.installed
	$(PY) benchmarks/bench_core.py --out benchmarks/results/core.md

bench-kernels: $(VENV)/.installed
	$(PY) benchmarks/bench_kernels.py --out benchmarks/results/kernels_cpu.md

bench-int8: $(VENV)/.installed
	$(PY) benchmarks/bench_int8.py

bench-backends: $(VENV)/.installed
	$(PY) benchmarks/bench_backends.py

bench-stream: $(VENV)/.installed
	$(PY) benchmarks/bench_stream.py --out benchmarks/results/stream.md

clean:
	rm -rf $(VENV) $(PEER_VENV) $(CLIP_VENV) build *.egg-info .pytest_cache

# Peer comparison with anomalib's PatchCore (slow; not part of `make test`), in an environment of its own:
# anomalib needs torchvision, which needs torch 2.14.1, while .venv has torch 2.13.0. pyproject.toml asks
# only torch>=2.1, so edgecmg installs on top without --no-deps; requirements-peer.txt is passed again as
# constraints (-c) so that resolving edgecmg's extras can never move torch off 2.14.1.
PEER_PYTHON ?= python3.11
PEER_VENV ?= .venv-peer

$(PEER_VENV)/.installed: benchmarks/requirements-peer.txt pyproject.toml
	$(PEER_PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEER_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements-peer.txt
	$(PEER_VENV)/bin/python -m pip install --quiet -c benchmarks/requirements-peer.txt -e ".[text,onnx]"
	touch $@

bench-peer: $(PEER_VENV)/.installed
	$(PEER_VENV)/bin/python benchmarks/bench_peer.py --out benchmarks/results/peer.md
