# Two commands from a fresh clone: `make demo` and `make test`.
# Each creates its virtualenv and installs what it needs on first use.
#
# `make test LIVEKIT_AGENTS=1.4.6` runs the test suite against that livekit-agents
# release in its own virtualenv (.venv-lk-1.4.6); lint and type checks run on the
# default (latest tested) environment only.
PYTHON ?= python3
LIVEKIT_AGENTS ?=

ifeq ($(LIVEKIT_AGENTS),)
VENV ?= .venv
EXTRAS := dev
LIVEKIT_PIN :=
else
VENV ?= .venv-lk-$(LIVEKIT_AGENTS)
EXTRAS := test
# livekit-agents 1.4.x imports httpx, which its openai dependency no longer brings
LIVEKIT_PIN := livekit-agents==$(LIVEKIT_AGENTS) httpx
endif

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit docs bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	grep -v '^livekit-' constraints.txt > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --quiet \
		-c $(if $(LIVEKIT_AGENTS),$(VENV)/constraints.txt,constraints.txt) \
		-e '.[$(EXTRAS)]' $(LIVEKIT_PIN)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/voice_call.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -c "import livekit.agents as a; print('livekit-agents', a.__version__)"
	$(BIN)/python -m pytest

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

ifeq ($(LIVEKIT_AGENTS),)
test: lint typecheck docs unit
else
test: unit
endif

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf .venv .venv-lk-* demo-output .pytest_cache .mypy_cache .ruff_cache
