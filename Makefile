# Two entry points (see README): `make demo` runs the main job on the sample data,
# `make test` runs the test suite. Both create .venv and install what they need.
#
# torch is installed first, on its own, so that no dependency can pull another (CUDA) build:
#   TORCH_VERSION    the torch release to install (default 2.13.0)
#   TORCH_INDEX_URL  the index to take it from; empty (default) uses pip's configured indexes,
#                    where a local CPU wheel is found. On a machine with only the public index use
#                    TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU-only wheel.
# After the other dependencies are installed the Makefile checks that torch is still that build.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
EXTRAS ?= test,docs,dicom-codecs
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
TORCH_PIN := $(VENV)/torch-pin.txt

.PHONY: install demo test sample-data bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	# torch first, pinned, from TORCH_INDEX_URL when set, so no dependency can pull a CUDA build.
	$(BIN)/pip install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--index-url "$(TORCH_INDEX_URL)")
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(TORCH_PIN)
	# the exact torch build (local tag included) is a constraint: pip fails rather than replace it.
	$(BIN)/pip install -c $(TORCH_PIN) -e ".[$(EXTRAS)]"
	# torchattacks declares torchvision without importing it: --no-deps keeps torch intact.
	$(BIN)/pip install --no-deps "torchattacks==3.5.1"
	# the privacy extra for its tests (DP-SGD, tests/core/defenses/test_sidp.py): opacus declares a bare
	# torch, so it goes in with --no-deps (same range as pyproject's privacy extra) and its one
	# dependency not already installed, opt-einsum, on its own.
	$(BIN)/pip install -c $(TORCH_PIN) "opt-einsum>=3.3"
	$(BIN)/pip install --no-deps "opacus>=1.5,<1.7"
	$(BIN)/python -c "import sys, torch; want = open('$(TORCH_PIN)').read().strip().split('==')[1]; \
		sys.exit(0 if torch.__version__ == want else f'torch changed during install: {want} -> {torch.__version__}')"
	touch $(STAMP)

install: $(STAMP)

sample-data: install
	$(BIN)/python -m sample_data.generate --out sample_data/generated

demo: sample-data
	$(BIN)/medrobust sensitivity \
		--model bundles/mammogram_perturbation_sensitivity \
		--data sample_data/generated/mammo \
		--labels sample_data/generated/mammo/labels.csv \
		--out runs/demo
	@echo "Report: runs/demo/report.md"

test: install
	$(BIN)/python -m pytest -q -ra

bench: install
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs sample_data/generated
