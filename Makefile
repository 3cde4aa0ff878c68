# Two commands for users: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_output
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: install demo test test-fast benchmark-speed benchmark-stages benchmark-quality clean

$(STAMP): requirements.txt requirements-test.txt requirements-label.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt -r requirements-test.txt
	$(PIP) install -q -r requirements-label.txt -c requirements.txt && $(PIP) install -q --no-deps $$(sed -n 's/^#nodeps //p' requirements-label.txt)
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m monai_ext demo --output_dir $(DEMO_DIR)

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

benchmark-speed: $(STAMP)
	$(PY) scripts/benchmark_speed.py

benchmark-stages: $(STAMP)
	$(PY) scripts/benchmark_stages.py all

benchmark-quality: $(STAMP)
	$(PY) scripts/benchmark_quality.py all

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
