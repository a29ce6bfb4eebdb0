# Entry points. `make pipeline` and `make test` are the README's two fresh-machine commands.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: help setup setup-dev params data raw-data pipeline repro trained-model exps test test-fast lint mutation monitor serve bench-serving images

help:
	@echo "make pipeline   install the pipeline's requirements, then run the DVC pipeline (dvc repro)"
	@echo "make test       install what the tests need (apt + pip; apt only as root or with sudo), then run every"
	@echo "                test tier whose tools are present; the end of the output lists the skipped tiers"
	@echo "make test-fast  run the tests that are not marked slow"
	@echo "make trained-model  the committed model for the trained-model test tier: dvc pull, else dvc repro (~15 min),"
	@echo "                then checked byte for byte against dvc.lock"
	@echo "make params     recompose params.yaml from conf/ (after editing conf/ by hand)"
	@echo "make exps       dvc exp show with the columns a sweep is compared by (docs/experiments.md)"
	@echo "make data       (re)import the raw CoLA files from data.source into data/raw, versioned by data/raw.dvc"
	@echo "make serve      serve artifacts/bundle on http://127.0.0.1:8000 (page, /docs, /metrics)"
	@echo "make images     build the API and Lambda images with podman (docker/podman-setup.sh first)"
	@echo "make bench-serving  HTTP load benchmark of the serving app (needs wrk)"
	@echo "make monitor    drift report: prediction logs vs the training data (reports/monitor/report.html)"
	@echo "make lint       every pre-commit hook on every file (ruff, format, mypy, actionlint, shellcheck, ...)"
	@echo "make mutation   mutation testing of the release gates and input guards (mutation.toml; hours: a pytest run per mutant)"

# The pins first (requirements.txt), then the project itself as an editable package (pyproject.toml), so that
# `python -m cola...`, `python -m scripts...` and `cola-serve` import it from any directory.
setup:
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .

setup-dev:
	PYTHON=$(PYTHON) bash .ci/install.sh

params:
	$(PYTHON) -m cola.config

# Explicit re-import from data.source (local copy or the Hub); a new version shows in `git diff data/raw.dvc`.
data:
	$(PYTHON) -m stages.get_data

# What the pipeline needs: data/raw as recorded in data/raw.dvc, from the workspace, the DVC remote or the source.
raw-data:
	@[ -d data/raw ] || dvc pull -q data/raw.dvc 2>/dev/null || $(PYTHON) -m stages.get_data

# Then `dvc push` to the default remote (a folder under ~/.cache, .dvc/config), so that `make trained-model` and
# `dvc pull` in another clone on this machine get the outputs without training.
pipeline: setup raw-data
	dvc repro
	dvc push

repro:
	dvc repro

# The committed model (every output of export_onnx and the stages before it, as dvc.lock records them) for the
# trained-model test tier: pulled from the default DVC remote, or reproduced where the remote lacks it. Either way
# it must then match dvc.lock and the committed reports byte for byte: the pipeline reproduces bit for bit across
# CPUs (docs/pipeline.md), so a difference is a reproducibility bug, or a dvc.lock that was not committed.
trained-model: raw-data
	dvc pull --with-deps export_onnx || dvc repro export_onnx
	@dvc status --with-deps --quiet export_onnx || { dvc status --with-deps export_onnx; \
	  echo "make trained-model: the workspace does not match dvc.lock (above)"; exit 1; }
	@git diff --exit-code --stat -- dvc.lock reports/train reports/export || { \
	  echo "make trained-model: the reproduced model differs from the committed one (dvc.lock, reports/; above)"; exit 1; }

# `dvc exp show` lists every param and metric (too many columns to read); these are the ones a sweep is compared by:
# what was varied, validation MCC at argmax (the choice, docs/experiments.md), with the tuned threshold, test MCC
# (reported, never used to choose) and the served MCC.
EXP_COLUMNS := Experiment|State|model\.(lr|pooling|layer_lr_decay|tune_threshold)$$|train\.(label_smoothing|max_epochs|trainer\.max_epochs)$$|^epoch$$|best_val_mcc|val_mcc_at_threshold|decision_threshold|^mcc|mcc_argmax|served\.mcc$$
exps:
	dvc exp show --drop '.*' --keep '$(EXP_COLUMNS)' --sort-by reports/train/metrics.json:best_val_mcc $(ARGS)

# Tiers whose tools are missing are skipped and listed; COLA_REQUIRE_ALL_TIERS=1 (.ci/run) makes that a failure.
test: setup-dev
	$(PYTHON) -m pytest

test-fast:
	$(PYTHON) -m pytest -m "not slow"

lint:
	$(PYTHON) -m pre_commit run --all-files --show-diff-on-failure

# One pytest run per mutant of the functions listed in mutation.toml (cosmic-ray, .venv-tools/cosmic-ray from
# `make setup-dev`); fails when a module keeps less than mutation.toml's min_score. Weekly in .github/workflows/mutation.yml.
MUTATION_REPORT ?= docs/mutation.md
mutation:
	$(PYTHON) -m scripts.mutation --write $(MUTATION_REPORT) $(ARGS)

monitor:
	$(PYTHON) -m stages.monitor

serve:
	COLA_BUNDLE_DIR=artifacts/bundle $(PYTHON) -m app --port 8000

bench-serving:
	$(PYTHON) -m scripts.bench_serving --bundle artifacts/bundle --out reports/serving/bench.json

images:
	bash docker/fetch-wheels.sh
	podman build -f docker/Dockerfile -t cola-api .
	podman build -f docker/Dockerfile.lambda -t cola-lambda .
