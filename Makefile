# The README's two commands: `make demo` and `make test`.
# Both create .venv when it is missing and reinstall only when a requirements file changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DATA := data/synthetic
DEMO_OUTPUT := results/demo

.PHONY: demo test venv

$(VENV)/.runtime-installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(PY) -m pip install --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.dev-installed

test: $(VENV)/.dev-installed
	$(PY) -m pytest

demo: $(VENV)/.runtime-installed
	$(PY) demo.py --data_folder $(DEMO_DATA) --output_folder $(DEMO_OUTPUT)
