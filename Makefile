# insta-select: set up, demo, test. Everything lives in .venv at the repository root.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is not pinned by the package; this is the CPU build used here (override for CUDA, e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
DEMO_INSTRUCTION ?= Suppose the premise is true. Can we infer that the hypothesis is true? Yes, no, or maybe?
DEMO_INSTRUCTION_2 ?= Read the two sentences and say whether they mean the same thing

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
# The timing line: the first select does one-time work (templates parsed, pool embedded, the
# embedder exported to ONNX); a new instruction afterwards is embedded without importing torch.
demo: setup
	@t0=$$(date +%s%N); $(VENV)/bin/insta select --pool p3:t0-train -k 5 --instruction "$(DEMO_INSTRUCTION)"; \
	t1=$$(date +%s%N); $(VENV)/bin/insta select --pool p3:t0-train -k 5 --json -q \
	  --instruction "$(DEMO_INSTRUCTION_2) ($$t1)" > /dev/null; t2=$$(date +%s%N); \
	awk -v a=$$t0 -v b=$$t1 -v c=$$t2 'BEGIN { printf "timing: this select %.1f s (first run: one-time work included); another, never-seen instruction %.2f s\n", (b - a) / 1e9, (c - b) / 1e9 }'

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .insta-cache .pytest_cache
