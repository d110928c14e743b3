# Every target sets up what it needs: `make train` or `make test` work on a fresh clone.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/movielens/ml-100k
TRITON_DIR ?= .triton
# The tritonserver binary comes from this wheel; a new release is a deliberate change.
PYTRITON_VERSION ?= 0.7.0
# Every dependency (all extras) with its hashes; `make lock` regenerates it from pyproject.toml.
LOCK ?= requirements.lock
# The server image's dependencies only (no extras), at the versions of $(LOCK), with hashes.
SERVER_LOCK ?= requirements-server.lock
UV ?= $(firstword $(wildcard $(VENV)/bin/uv) uv)
LOCAL_INDEXES ?= --find-links /opt/wheels --extra-index-url file:///opt/pypi/simple --extra-index-url file:///opt/pypi-more/simple
PYTEST_ARGS ?=
SERVE_ARGS ?=
# make loadtest: against a stack started on loopback, or TARGET=host:port (KNOWN_USERS=first-last there).
USERS ?= 32
SPAWN_RATE ?= 8
DURATION ?= 60s
SWEEP ?= 1,8,32,64
TARGET ?=
KNOWN_USERS ?= 1-943
# Extra flags for python -m loadtest, e.g. LOADTEST_ARGS=--profile (py-spy the server during the run).
LOADTEST_ARGS ?=

.PHONY: setup serve protos train export triton test test-fast lint bench-quality bench-export bench-serving bench-triton loadtest loadtest-sweep rollout bench-rollout retrain bench-feedback-loop bench-int8 lock bench-security certs clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# Exactly the locked versions, each checked against its hash; then the project itself.
	$(PY) -m pip install --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --no-deps -e .
	# Only the tritonserver binary and its backends are used from this wheel; its own Python
	# package pins numpy<2, so it goes into a folder of its own, without dependencies.
	$(PY) -m pip install --no-deps --target $(TRITON_DIR) nvidia-pytriton==$(PYTRITON_VERSION)
	touch $@

# Re-resolve every dependency (all extras) with hashes after pyproject.toml changed. Needs only
# uv (pip install uv), not the venv, so a fresh clone can run it; commit the result.
lock:
	$(UV) pip compile pyproject.toml --all-extras --generate-hashes --python-version 3.11 \
		--index-strategy unsafe-best-match $(LOCAL_INDEXES) --no-header -o $(LOCK)
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 -c $(LOCK) \
		--index-strategy unsafe-best-match $(LOCAL_INDEXES) --no-header -o $(SERVER_LOCK)

# The main job: build what is missing (train on the default data, export), then Triton + the gRPC server.
serve: setup serving_bundle
	$(PY) -m server $(SERVE_ARGS)

# The committed stubs in protos/recsys come from the .proto files; tests/test_protos.py fails if stale.
# The *_pb2_grpc.pyi (typed stubs and servicers, for mypy) come from mypy-protobuf's plugin.
protos: setup
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos --grpc_python_out=protos \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=protos \
		protos/recsys/v1/recommender.proto protos/recsys/admin/v1/admin.proto

serving_bundle: | var/mlflow.db
	$(MAKE) export

train: setup
	$(PY) -m training.train --data $(DATA)

# Models come from the MLflow registry; train once if nothing is registered yet.
var/mlflow.db:
	$(MAKE) train

export: setup var/mlflow.db
	$(PY) -m export --out model_repository --bundle serving_bundle

triton: export
	$(PY) -m server.triton --model-repository model_repository

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Config in pyproject.toml ([tool.ruff], [tool.mypy]: strict for clients/ and server/).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench-quality: setup
	$(PY) -m loadtest.benches.quality --data $(DATA)
	$(PY) -m loadtest.benches.folds --data $(DATA) --jobs 2
	$(PY) -m loadtest.benches.folds --synthetic-items 10000 --folds 3 --jobs 2 --out reports/quality-synthetic.json

bench-export: setup var/mlflow.db
	$(PY) -m loadtest.benches.export_variants

# BENCH_ARGS="--catalog synthetic-60k" for the 60k-item catalogue (built once under var/catalogs/).
bench-serving: setup serving_bundle
	$(PY) -m loadtest.benches.serving $(BENCH_ARGS)

# Per-model throughput/latency through Triton, batching on and off (a tritonclient stand-in for perf_analyzer).
bench-triton: setup serving_bundle
	$(PY) -m loadtest.benches.triton_perf $(BENCH_ARGS)

# Size and latency of the catalogue-sized graphs (RBM, item scorer) fp32 vs int8 at 60k items.
bench-int8: setup
	$(PY) -m loadtest.benches.int8_scale $(BENCH_ARGS)

# The abuse corpus (bad, malformed, amplifying requests) and the auth matrix over TLS against a
# real Triton and server -> reports/security.json. Any server setting as a flag: BENCH_ARGS="--bundle DIR".
bench-security: setup serving_bundle
	$(PY) -m loadtest.benches.security $(BENCH_ARGS)

# A private CA plus server and client certificates for local TLS/mTLS trials (var/certs).
certs: setup
	$(PY) -m server.devcerts var/certs

LOADTEST_TARGET = $(if $(TARGET),--target $(TARGET) --known-users $(KNOWN_USERS))

loadtest: setup serving_bundle
	$(PY) -m loadtest --users $(USERS) --spawn-rate $(SPAWN_RATE) --duration $(DURATION) $(LOADTEST_TARGET) $(LOADTEST_ARGS)

loadtest-sweep: setup serving_bundle
	$(PY) -m loadtest --sweep $(SWEEP) --duration $(DURATION) $(LOADTEST_TARGET) $(LOADTEST_ARGS)

# Ship the newest exported bundle to a running `make serve` (its admin service on loopback):
# shadow -> canary -> full -> retire, rolled back by the server if a guardrail trips.
ADMIN ?= 127.0.0.1:50052
ROLLOUT_ARGS ?= --shadow-s 30 --canary-s 30 --canary-percent 10
rollout: setup
	$(PY) -m clients rollout --admin $(ADMIN) ship serving_bundle $(ROLLOUT_ARGS)

# Two bundles rolled through a loaded stack (good, then a bad one rolled back) -> reports/rollout.json.
bench-rollout: setup
	$(PY) -m loadtest.benches.rollout --data $(DATA) $(BENCH_ARGS)

# Retrain from stored feedback against a running stack: train -> gate -> export -> rollout through
# the admin service (ADMIN, ROLLOUT_ARGS as for `make rollout`). A failed gate (exit 3) stops here
# with nothing exported or rolled. STORE=redis://HOST:PORT/0 for a shared Valkey.
STORE ?= sqlite:///$(CURDIR)/var/feedback.sqlite
retrain: setup var/mlflow.db
	$(PY) -m training.retrain --feedback $(STORE) --data $(DATA)
	$(PY) -m clients rollout --admin $(ADMIN) ship serving_bundle $(ROLLOUT_ARGS)

# Valkey + Triton + two replicas, u1.test replayed as feedback, retrain, roll out, measure:
# writes reports/feedback_loop.json (and feedback_loop_details.json).
bench-feedback-loop: setup
	$(PY) -m loadtest.benches.feedback_loop --data $(DATA) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TRITON_DIR) var reports serving_bundle
	find model_repository -mindepth 1 ! -name README.md -exec rm -rf {} +
