# `make test` works on a fresh machine: it creates .venv, installs the package with its test extra
# (torch + torchvision, the parity reference, come from local disk) and runs the suite.
# `make demo` installs the package alone (no torch), then trains, evaluates and draws on the CPU
# into demo_output/ (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEMO_OUTPUT ?= demo_output

.PHONY: test install demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The package with its test extra.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The package alone: what the demo and the scripts need (an install with the test extra has it too).
$(RUNTIME_STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME_STAMP)

install: $(STAMP)

# Two pytest-xdist workers (much of a test's time is single-threaded compiling); each module runs
# whole on one worker, so its module fixtures (the parity references) are computed once.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=20 tests

demo: $(RUNTIME_STAMP)
	$(PY) scripts/demo.py --output $(DEMO_OUTPUT)

clean:
	rm -rf $(VENV) build *.egg-info
