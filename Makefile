# segdet — the two set-up commands of a fresh clone are `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# pytest-xdist workers of `make test`: one a core (tests/conftest.py gives each its share of the torch threads)
TEST_WORKERS ?= 2
# What `make install` installs: the versions the suite last passed with, pinned (`make constraints` refreshes it
# after a green `make test`). `pip install segdet` alone gets pyproject.toml's ranges; CONSTRAINTS= does here too.
CONSTRAINTS ?= constraints.txt

.PHONY: help install constraints quickstart test test-fast bench bench-quick soak qgis-plugin clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(wildcard $(CONSTRAINTS))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(wildcard $(CONSTRAINTS)),-c $(CONSTRAINTS)) -e '.[dev,sweep,mlflow,export,geo,serve]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install segdet with its test tools and optional extras (idempotent)

constraints: install  ## after a green `make test`: pin constraints.txt to what .venv holds (pip freeze, segdet left out)
	{ echo "# The versions the test suite last passed with: make install installs them (pip -c). Refreshed by"; \
	  echo "# make constraints; pyproject.toml keeps the ranges a plain pip install resolves."; \
	  $(PY) -m pip freeze --exclude-editable --exclude segdet; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	touch $(STAMP)

quickstart: install  ## train SAM on generated data (experiment=quickstart), evaluate it, show where the figures are
	$(VENV)/bin/segdet train task=sam experiment=quickstart hydra.run.dir=outputs/quickstart/train
	$(VENV)/bin/segdet eval task=sam ckpt=outputs/quickstart/train/checkpoints/best.pt hydra.run.dir=outputs/quickstart/eval
	@echo "figures: outputs/quickstart/train/plots/  metrics: outputs/quickstart/eval/metrics.json"
	@echo "tensorboard: $(VENV)/bin/tensorboard --logdir outputs/quickstart"

test: install  ## run the whole test suite (under 10 minutes on 2 cores)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=25

test-fast: install  ## the inner loop: every test not marked slow (under 3 minutes on 2 cores)
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadscope

bench: install  ## segdet against the usual alternatives, side by side (table + outputs/bench/latest.json)
	$(PY) -m benchmarks

bench-quick: install  ## every bench row at tiny sizes (minutes; checks the harness, not the figures; not in `test`)
	$(PY) -m benchmarks --quick --threads 2 --out outputs/bench/quick.json

soak: install  ## train the smoke models for many epochs, and 8 clients on segdet annotate for a minute; fails on errors or memory growing >5% (not in `test`)
	$(PY) -m benchmarks.soak
	$(PY) -m benchmarks.soak_annotate

qgis-plugin:  ## the QGIS plugin as dist/segdet_qgis.zip (QGIS: Plugins > Manage and Install Plugins > Install from ZIP)
	@mkdir -p dist
	$(PYTHON) -c "import pathlib, zipfile; files = [p for p in sorted(pathlib.Path('segdet_qgis').rglob('*')) if p.is_file() and '__pycache__' not in p.parts]; z = zipfile.ZipFile('dist/segdet_qgis.zip', 'w', zipfile.ZIP_DEFLATED); [z.write(p) for p in files]; z.close()"
	@echo "wrote dist/segdet_qgis.zip"

clean:  ## remove run outputs (keeps .venv)
	rm -rf outputs/*/ .pytest_cache
