# Two entry points (see README): `make demo` runs the main job on the sample data,
# `make test` runs the test suite. Both create .venv and install what they need.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: install demo test sample-data bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	# torch first, pinned to the CPU wheel, so no dependency can pull a CUDA build.
	$(BIN)/pip install "torch==2.13.0"
	$(BIN)/pip install -e ".[test]"
	# torchattacks declares torchvision without importing it: --no-deps keeps torch intact.
	$(BIN)/pip install --no-deps "torchattacks==3.5.1"
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
