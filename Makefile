# ganinv: one entry point for set-up, the main job, the tests and the benchmarks.
#   make demo    restore a generated face under simulated inpainting (offline, CPU is fine)
#   make test    the whole test suite (what CI runs)
#   make bench   the CPU-sized benchmark suite -> benchmarks/out/
# Each target bootstraps .venv on first use. An importable torch is kept as it is; otherwise the
# CPU build torch==$(TORCH_PIN) is installed, with numpy (torch warns when the kernels' build imports it without).

PYTHON     ?= python3
VENV       ?= .venv
TORCH_PIN  ?= 2.13.0
EXTRAS     ?= test
BIN        := $(VENV)/bin
comma      := ,
STAMP      := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: venv demo test bench nvcc-check doctor clean

venv: $(STAMP)

$(STAMP): setup.py $(wildcard csrc/*.cpp csrc/*.h csrc/*.cu)
	@set -e; \
	if [ ! -x $(BIN)/python ]; then \
	  echo "ganinv: creating $(VENV)"; $(PYTHON) -m venv $(VENV); \
	  host=$$($(PYTHON) -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null || true); \
	  if [ -n "$$host" ]; then \
	    echo "ganinv: sharing the torch already installed in $$host"; \
	    echo "$$host" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_ganinv_host_torch.pth"; \
	  fi; \
	fi; \
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=70' wheel; \
	if $(BIN)/python -c 'import torch' >/dev/null 2>&1; then \
	  echo "ganinv: using torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
	  echo "ganinv: installing torch==$(TORCH_PIN) (CPU build)"; \
	  $(BIN)/python -m pip install -q torch==$(TORCH_PIN) numpy; \
	fi; \
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[$(EXTRAS)]'; \
	touch $(STAMP)

demo:
	@$(MAKE) --no-print-directory venv
	$(BIN)/ganinv-run --network random-64 --target seed:7 --simulate \
	    --degradation inpaint:mode=center,size=0.4 --latent-space w+ --steps 200 \
	    --outdir out/demo --overwrite

# The tests also cover face alignment, so they install the [align] extra (dlib-bin, face-recognition-models).
test:
	@$(MAKE) --no-print-directory venv EXTRAS=test,align
	@bash csrc/nvcc_check.sh
	GANINV_PLUGINS_STRICT=1 $(BIN)/python -m pytest tests -q -ra

bench: venv
	mkdir -p benchmarks/out
	$(BIN)/python -m pytest benchmarks -q --benchmark-only \
	    --benchmark-json=benchmarks/out/cpu.json

doctor: venv
	$(BIN)/ganinv-run --doctor

nvcc-check:
	@bash csrc/nvcc_check.sh

clean:
	rm -rf build out benchmarks/out *.egg-info ganinv_core/*.so
