# p4q-export: `make demo` and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/p4q-export
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FASHION := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
# the glyph corpus's fonts and CLDR names: the one list is p4q_export/data/glyph_packages.txt
GLYPH_PKGS := $(shell sed -e 's/\#.*//' p4q_export/data/glyph_packages.txt | awk 'NF {print $$1}')
PYTEST_ARGS ?=
# test files run in parallel, one per core up to 4 (a file's fixtures stay in one worker)
PYTEST_PARALLEL ?= -n $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 ))) --dist loadfile
# errors only: one line per setup step (pip's warnings about a machine's own index settings are noise here)
PIP_QUIET := -qq --disable-pip-version-check --root-user-action=ignore
BENCH_SCALE_ARGS ?=

.PHONY: setup demo pretrain test test-full test-all bench bench-scale bench-families battery lint clean

setup: $(STAMP)

# System packages: the offline Fashion-MNIST (Debian), OpenSSH (the remote-bench test runs a real sshd),
# and the glyph corpus's fonts + CLDR names.
$(STAMP): pyproject.toml p4q_export/data/glyph_packages.txt
	@if [ ! -f $(FASHION) ] || ! command -v /usr/sbin/sshd >/dev/null; then \
		echo "installing system packages (dataset-fashion-mnist, openssh)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist openssh-server openssh-client >/dev/null; \
	fi
	@if ! dpkg -s $(GLYPH_PKGS) >/dev/null 2>&1; then \
		echo "installing the glyph corpus's fonts and CLDR names (p4q_export/data/glyph_packages.txt)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $(GLYPH_PKGS) >/dev/null; \
	fi
	@test -x $(PY) || { echo "creating $(VENV)"; python3 -m venv $(VENV); }
	@echo "installing p4q-export and its dependencies into $(VENV) (a few minutes the first time)"
	@$(PY) -m pip install $(PIP_QUIET) --upgrade pip
	@$(PY) -m pip install $(PIP_QUIET) -e '.[dev,fp16]'
	@touch $(STAMP)

demo: setup
	@PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

# Redo the test beds' pretraining (~10 + ~8 min on 2 cores) into out/pretrain/ and say whether this
# machine reproduces the shipped beds bit for bit; train on yours with --set model=out/pretrain/testbed.
pretrain: setup
	$(CLI) pretrain --recipe recipes/testbed-pretrain.yaml --out out/pretrain/testbed
	$(CLI) pretrain --recipe recipes/glyphs-pretrain.yaml --out out/pretrain/glyphs
	$(PY) scripts/ship_testbeds.py --check testbed=out/pretrain/testbed glyphs=out/pretrain/glyphs

# Every tier but `slow` and `full` (second proofs and end-to-end reproductions, about 8 min more):
# make test-full runs those, make test-all both. The tensorrt and gpu tests skip where there is none.
test: setup lint
	@echo "tests: pytest -m 'not slow and not full' (make test-full runs the rest; the slowest 15 are listed at the end)"
	@$(VENV)/bin/pytest -q -rs --durations=15 -m "not slow and not full" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-full: setup
	@$(VENV)/bin/pytest -q -rs --durations=15 -m "slow or full" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-all: setup lint
	@$(VENV)/bin/pytest -q -rs --durations=15 $(PYTEST_PARALLEL) $(PYTEST_ARGS)

bench: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m benchmarks.make_bench

# ViT-B-32 train + eval on a synthetic ImageNet folder: a few minutes on a CPU, the full recipe on a GPU
# (make bench-scale BENCH_SCALE_ARGS="--device cuda --amp").
bench-scale: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m benchmarks.scale $(BENCH_SCALE_ARGS)

# The supported-tower matrix at full size (ViT-B-16, EVA02-B-16, MobileCLIP-B, MobileCLIP2-S0, RN50,
# convnext_base): export, validate and ORT latency per family; ~10 min on 2 cores.
bench-families: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m benchmarks.families

# ~120 wrong inputs across every command, each run as a user runs it: exit 2, one line, nothing
# written or lost (about 5 min on 2 cores)
battery: setup
	$(PY) scripts/bad_input_battery.py

lint: setup
	@echo "lint: ruff"
	@$(VENV)/bin/ruff check p4q_export benchmarks tests scripts

clean:
	rm -rf out build *.egg-info .pytest_cache
