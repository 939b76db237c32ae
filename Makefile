# lshcore: `make demo` and `make test` are the two commands a new user needs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv demo test lint typecheck format bench clean

# The venv holds the project (editable) with every extra, pinned by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/lshcore demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# benchmarks (minutes; results and their commands go to benchmarks/results/)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_hashing.py --threads 1 --out benchmarks/results/hashing

lint: $(STAMP)
	$(BIN)/ruff check lshcore kernels plugins adapters memory tests benchmarks examples
	$(BIN)/ruff format --check lshcore kernels plugins adapters memory tests benchmarks examples
	$(MAKE) typecheck

# mypy over every folder of the package: package-dir maps kernels/, plugins/, adapters/
# and memory/ into lshcore.*, which mypy cannot follow, so check a tree of symlinks
# laid out as the installed package.
TYPECHECK := build/typecheck
typecheck: $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/lshcore
	for f in lshcore/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK)/lshcore/; done
	for d in kernels plugins adapters memory; do ln -s "$(CURDIR)/$$d" $(TYPECHECK)/lshcore/$$d; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p lshcore

format: $(STAMP)
	$(BIN)/ruff format lshcore kernels plugins adapters memory tests benchmarks examples
	$(BIN)/ruff check --fix lshcore kernels plugins adapters memory tests benchmarks examples

clean:
	rm -rf $(VENV) build *.egg-info
