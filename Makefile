# Quick start: `make demo` (a real search on the embedded synthetic data) and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -u train_nas.py -c demo.yml

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo_output
