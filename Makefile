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

.PHONY: demo test lint typecheck unit docs bench fuzz clean

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

# `make bench BENCH_ARGS=--quick` for a smoke run; `BENCH_ARGS="--label after"` names
# the JSON file (benchmarks/README.md).
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# The interleaving fuzzer (tests/fuzz): random plans in real sessions on a virtual
# clock, checked against the invariants in tests/fuzz/oracle.py. Runs FUZZ_RUNS
# sessions or FUZZ_MINUTES minutes, whichever comes first; prints runs, runs/s and
# each class of violation with a minimized plan; exits non-zero on any violation.
# e.g. `make fuzz FUZZ_MINUTES=5`, `make fuzz FUZZ_RUNS=1000 FUZZ_SEED=42 FUZZ_JOBS=2`
FUZZ_RUNS ?= 20000
FUZZ_MINUTES ?=
FUZZ_SEED ?=
FUZZ_JOBS ?= 1
fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz --runs $(FUZZ_RUNS) --jobs $(FUZZ_JOBS) \
		$(if $(FUZZ_MINUTES),--minutes $(FUZZ_MINUTES)) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

clean:
	rm -rf .venv .venv-lk-* demo-output .pytest_cache .mypy_cache .ruff_cache
