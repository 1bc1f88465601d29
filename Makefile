# Two set-up commands on a fresh machine: `make demo` and `make test`. Each creates .venv on first use.
.DELETE_ON_ERROR:  # a recipe that fails leaves no .installed stamp behind
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLIP_VENV ?= .venv-clip
COMMA := ,
# The CPU build of torch; pinned here (not in pyproject) so Jetson and CUDA users keep their own torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv test test-oldest demo bench-core bench-kernels bench-int8 bench-backends bench-stream bench-soak bench-eval bench-robustness bench-cpu-use bench-startup bench-peer clean

# Space each step needs, checked before it starts (tools/need_space.py): an environment's own size plus
# what pip unpacks on the way; a test run's temporary folders (only failed tests' are kept).
$(VENV)/.installed: pyproject.toml Makefile
	@$(PYTHON) tools/need_space.py 4 "$(VENV) (torch and edgecmg's dependencies)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# Environments with a torch of their own (torchvision 0.29.1 needs torch 2.14.1, .venv has 2.13.0).
# $(call side-venv,DIR,REQUIREMENTS,EXTRAS,GB): the pinned requirements first, then edgecmg on top with
# them as constraints (-c), so that resolving edgecmg's extras can never move torch. pyproject.toml
# asks only torch>=2.5.0a0, so no --no-deps is needed.
SIDE_PYTHON ?= $(PYTHON)
define side-venv
	@$(PYTHON) tools/need_space.py $(4) "$(1) (a torch of its own)"
	$(SIDE_PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -r $(2)
	$(1)/bin/python -m pip install --quiet -c $(2) -e ".[$(3)]"
	touch $(1)/.installed
endef

# The optional CLIP matcher's tests: open_clip needs torchvision (see tests/requirements-clip.txt).
$(CLIP_VENV)/.installed: tests/requirements-clip.txt pyproject.toml
	$(call side-venv,$(CLIP_VENV),tests/requirements-clip.txt,test$(COMMA)clip,8)

# The whole suite in .venv, then the optional CLIP matcher in .venv-clip (a torch of its own, above).
# The pytest command, not `python -m pytest`: that would put the repository root on sys.path, where
# kernels/ hides Hugging Face's `kernels` package, which transformers imports (see edgecmg/model/text.py).
test: $(VENV)/.installed $(CLIP_VENV)/.installed
	@$(PY) tools/need_space.py 3 "the test run"
	$(VENV)/bin/pytest -q -ra
	$(CLIP_VENV)/bin/pytest -q -ra tests/model/test_clip_matcher.py

# The suite on the oldest stack edgecmg is checked on (tests/requirements-oldest.txt; slow to build, not
# part of `make test`). Triton 3.4 goes in without its dependencies: torch 2.5.1 pins 3.1.0, which
# edgecmg refuses (kernels/_common.py), and 3.4 runs the kernels beside it.
PYTHON310 ?= python3.10
OLDEST_VENV ?= .venv-oldest

$(OLDEST_VENV)/.installed: override SIDE_PYTHON = $(PYTHON310)
$(OLDEST_VENV)/.installed: tests/requirements-oldest.txt pyproject.toml Makefile
	@$(PYTHON310) -c "import sys; sys.exit(sys.version_info[:2] != (3, 10))" 2>/dev/null || \
		{ echo "test-oldest needs Python 3.10: PYTHON310=/path/to/python3.10 make test-oldest"; exit 2; }
	$(call side-venv,$(OLDEST_VENV),tests/requirements-oldest.txt,text$(COMMA)onnx$(COMMA)demo,7)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --no-deps "triton==3.4.0"

test-oldest: $(OLDEST_VENV)/.installed
	@$(OLDEST_VENV)/bin/python tools/need_space.py 3 "the test run"
	$(OLDEST_VENV)/bin/pytest -q -ra

demo: $(VENV)/.installed
	$(PY) examples/demo_elpv.py

# Result tables of the README (slow; not part of `make test`).
bench-core: $(VENV)/.installed
	$(PY) benchmarks/bench_core.py --out benchmarks/results/core.md --seeds 3

bench-kernels: $(VENV)/.installed
	$(PY) benchmarks/bench_kernels.py --device cpu --out benchmarks/results/kernels_cpu.md

bench-int8: $(VENV)/.installed
	$(PY) benchmarks/bench_int8.py

bench-backends: $(VENV)/.installed
	$(PY) benchmarks/bench_backends.py

bench-stream: $(VENV)/.installed
	$(PY) benchmarks/bench_stream.py --out benchmarks/results/stream.md

bench-soak: $(VENV)/.installed
	$(PY) benchmarks/bench_soak.py --out benchmarks/results/soak.md

# The README's `eval --out` walkthrough: its figures and docs/eval_*_kolektor.png.
bench-eval: $(VENV)/.installed
	$(PY) benchmarks/bench_eval.py

bench-robustness: $(VENV)/.installed
	$(PY) benchmarks/bench_robustness.py

# The README's "CPU use between frames": spin-waiting threads, alone and beside busy processes.
bench-cpu-use: $(VENV)/.installed
	$(PY) benchmarks/bench_cpu_use.py

bench-startup: $(VENV)/.installed
	$(PY) benchmarks/bench_startup.py

clean:
	rm -rf $(VENV) $(PEER_VENV) $(CLIP_VENV) $(OLDEST_VENV) build *.egg-info .pytest_cache

# Peer comparison with anomalib's PatchCore (slow; not part of `make test`), in an environment of its own:
# anomalib needs torchvision (see side-venv above).
PEER_VENV ?= .venv-peer

$(PEER_VENV)/.installed: benchmarks/requirements-peer.txt pyproject.toml
	$(call side-venv,$(PEER_VENV),benchmarks/requirements-peer.txt,text$(COMMA)onnx,9)

bench-peer: $(PEER_VENV)/.installed
	$(PEER_VENV)/bin/python benchmarks/bench_peer.py --out benchmarks/results/peer.md
