# insta-select: set up, demo, test. Everything lives in .venv at the repository root.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is not pinned by the package; this is the CPU build used here (override for CUDA, e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
DEMO_INSTRUCTION ?= Suppose the premise is true. Can we infer that the hypothesis is true? Yes, no, or maybe?

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The embedded default: the T0 training pool of P3 (promptsource templates fetched with pip
# on first use), the packaged all-MiniLM-L6-v2, and a natural-language-inference instruction.
demo: setup
	$(VENV)/bin/insta select --pool p3:t0-train -k 5 --instruction "$(DEMO_INSTRUCTION)"

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .insta-cache .pytest_cache
