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

# PaddleDetection 2.x's own code for tests/test_paddledet_interop.py, in a folder of its own: its package is
# also called ppdet, so it must never be importable in this project's own process.
PADDLEDET := $(VENV)/paddledet
PADDLEDET_STAMP := $(PADDLEDET)/.installed

$(PADDLEDET_STAMP): requirements-paddledet.txt $(STAMP)
	rm -rf $(PADDLEDET)
	$(PY) -m pip install --quiet --no-deps --target $(PADDLEDET) -r requirements-paddledet.txt
	@touch $(PADDLEDET_STAMP)

DEMO_DATA := dataset/demo_faces_96
DEMO_TABLE := dataset/latency_demo_96_network.txt

demo: $(STAMP)
	@test -f $(DEMO_DATA)/wider_face_split/wider_face_val_bbx_gt.txt || \
		$(PY) tools/make_synthetic_widerface.py --out $(DEMO_DATA) --size 96 --train 800 --val 300 --scenes empty,portraits \
			--clutter none
	$(PY) tools/build_latency_table.py -c demo.yml --out $(DEMO_TABLE)
	@# the limit: the 45th percentile of the space as this machine's table prices it (see demo.yml)
	@LIMIT=$$($(PY) tools/price_arch.py -c demo.yml --quantile 0.45) && \
		echo "latency limit: $$LIMIT us (admits 45% of the space on this machine)" && \
		echo "$(PY) -u train_nas.py -c demo.yml -o Constraint.max_constraint=$$LIMIT" && \
		$(PY) -u train_nas.py -c demo.yml -o Constraint.max_constraint=$$LIMIT

test: $(STAMP) $(PADDLEDET_STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo_output
