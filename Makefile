# Two commands from a fresh clone: `make demo` and `make test`.
# Each creates its virtualenv and installs what it needs on first use.
#
# `make test LIVEKIT_AGENTS=1.4.6` runs the test suite against that livekit-agents
# release in its own virtualenv (.venv-lk-1.4.6); lint and type checks run on the
# default (latest tested) environment only.
PYTHON ?= python3
LIVEKIT_AGENTS ?=

# bash with pipefail: a failing command piped into a progress filter still fails the target
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

ifeq ($(LIVEKIT_AGENTS),)
VENV ?= .venv
EXTRAS := dev
LIVEKIT_PIN :=
INSTALL_SIZE := about 125 packages, 930 MB (livekit-agents, onnxruntime, piper, pocketsphinx, matplotlib, mkdocs, mypy...)
else
VENV ?= .venv-lk-$(LIVEKIT_AGENTS)
EXTRAS := test
# livekit-agents 1.4.x imports httpx, which its openai dependency no longer brings
LIVEKIT_PIN := livekit-agents==$(LIVEKIT_AGENTS) httpx
INSTALL_SIZE := about 80 packages, 360 MB
endif

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit docs docs-serve bench fuzz clean

# pip's own output is long (a line or two per package): PIP_PROGRESS condenses it to a
# count while resolving, the downloads of 1 MB or more, builds and the install step;
# anything else (warnings, errors) passes through, but for the warning about an index
# location that does not exist (some machines' pip configuration names local indexes).
# Python reads and writes it line by line (mawk would hold lines back).
define PIP_PROGRESS_PY
import re, sys
quiet = re.compile(r"\s*(Looking in|Requirement already satisfied|Obtaining|Downloading|Using cached"
    r"|Installing (build|backend)|Checking if|Getting requirements|Preparing|Building wheels"
    r"|Created wheel|Stored in|Attempting uninstall|Found existing|Uninstalling|Successfully"
    r"|Building (editable|wheel) for .*finished|WARNING: Location .* is ignored: it is neither)")
seen = 0
for line in sys.stdin:
    line = line.rstrip("\n")
    if line.startswith(("Collecting ", "Processing ")):
        seen += 1
        if seen % 20 == 0:
            print(f"  resolved {seen} packages...")
    elif m := re.match(r"\s*Downloading (\S+?)-(\S+?)-\S* \(([\d.]+) MB\)$$", line):
        print(f"  downloading {m[1]} {m[2]} ({m[3]} MB)")
    elif m := re.match(r"\s*Building (editable|wheel) for (\S+) .*started", line):
        print(f"  building {m[2]}...")
    elif line.startswith("Installing collected packages: "):
        n = line.count(",") + 1
        print(f"  installing {n} packages (unpacking; the longest step, often a minute)...")
    elif line.startswith("Successfully installed "):
        print(f"  installed {len(line.split()) - 2} packages")
    elif not quiet.match(line):
        print(line)
endef
export PIP_PROGRESS_PY
PIP_PROGRESS := $(PYTHON) -u -c "$$PIP_PROGRESS_PY"

$(STAMP): pyproject.toml constraints.txt
	@echo "==> Setting up $(VENV) (first run only): livekit-async-tools[$(EXTRAS)] $(LIVEKIT_PIN)"
	@echo "    $(INSTALL_SIZE); 1-3 minutes on a fast connection."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@grep -v -E '^(livekit-|opentelemetry-)' constraints.txt > $(VENV)/constraints.txt
	@PYTHONUNBUFFERED=1 $(BIN)/python -m pip install --progress-bar off \
		-c $(if $(LIVEKIT_AGENTS),$(VENV)/constraints.txt,constraints.txt) \
		-e '.[$(EXTRAS)]' $(LIVEKIT_PIN) 2>&1 | $(PIP_PROGRESS)
	@touch $(STAMP)
	@echo "==> $(VENV) is ready ($$(du -sh $(VENV) | cut -f1))."

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

# Build the site and serve it at http://localhost:$(DOCS_PORT) (Ctrl-C stops it).
DOCS_PORT ?= 8000
docs-serve: docs
	@echo "Serving site/ at http://localhost:$(DOCS_PORT) (Ctrl-C to stop)"
	$(BIN)/python -m http.server --directory site $(DOCS_PORT)

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
