# The README's two commands: `make demo` and `make test`.
# Both create .venv when it is missing and reinstall only when a requirements file changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DATA := data/synthetic
DEMO_OUTPUT := results/demo

.PHONY: demo test venv browser bench bench-gpu sweep

$(VENV)/.runtime-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(PY) -m pip install --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.dev-installed

# The format and the lint (ruff.toml), then the tests.
test: $(VENV)/.dev-installed browser
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m pytest

# The listening report's test opens report.html in Debian's Chromium. Installed here when
# possible (root with apt-get); elsewhere that one test is skipped (and fails under CI=true).
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# DEMO_FLAGS adds demo.py's options, for example DEMO_FLAGS="--second_family ecapa".
DEMO_FLAGS ?=
demo: $(VENV)/.runtime-installed
	$(PY) demo.py --data_folder $(DEMO_DATA) --output_folder $(DEMO_OUTPUT) $(DEMO_FLAGS)

# Where the time of an L-MAC step goes (benchmark.py): the demo's width for every classifier family,
# and the published CNN14.
bench: $(VENV)/.runtime-installed
	for family in cnn14 conv2d ecapa vit; do $(PY) benchmark.py --config demo --classifier_family $$family || exit 1; done
	$(PY) benchmark.py --config published --iterations 2

# The published configuration on a CUDA GPU in bf16: clips per second for training and evaluation.
bench-gpu: $(VENV)/.runtime-installed
	$(PY) benchmark.py --config published --device cuda --precision bf16

# How robust the interpretations are (not in CI; hours on 2 cores): classifier + L-MAC + comparison over 5 seeds
# for CNN14 and ECAPA-TDNN (sweep.py), on the validation fold (where settings are chosen), then the test fold.
sweep: $(VENV)/.runtime-installed
	$(PY) sweep.py --fold valid
	$(PY) sweep.py --fold test
