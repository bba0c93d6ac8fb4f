# Every target bootstraps the virtualenv first, so `make train export` works on a fresh clone.
# Settings (override on the command line, e.g. `make export VERSION=3`):
PYTHON      ?= python3.11
VENV        ?= .venv
PY          := $(VENV)/bin/python
MODELS_DIR  ?= models
ARTIFACTS   ?= artifacts
EPOCHS      ?=
LIMIT       ?=
VERSION     ?=
GRPC_PORT   ?= 8500
REST_PORT   ?= 8501
GATEWAY_PORT ?= 8000
USERS       ?= 32
SPAWN_RATE  ?= 32
DURATION    ?= 60s
TARGET      ?= gateway
PYTEST_ARGS ?=

# California housing offline: the shared StatLib archive beside the checkout, when present.
HOUSING_DATA ?= $(wildcard ../shared/data/cal_housing.tgz)
export HOUSING_DATA
TRAIN_FLAGS := $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(LIMIT),--limit $(LIMIT))
MODELSERVER_FLAGS := --model_config_file serving/models.config --models_root $(MODELS_DIR) \
	--port $(GRPC_PORT) --rest_api_port $(REST_PORT) \
	--enable_batching --batching_parameters_file serving/batching.config \
	--monitoring_config_file serving/monitoring.config \
	--allow_version_labels_for_unavailable_models

.PHONY: venv train export test lint clean modelserver serve gateway bench bench-modelserver \
	bench-gateway loadtest loadtest-ui reliability container-test up down logs protos \
	audit fuzz

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# Trains both models; writes artifacts/<model>/{metrics.json,learning_curves.png,model.keras}.
train: venv
	$(PY) -m training train --artifacts-dir $(ARTIFACTS) $(TRAIN_FLAGS)

# Exports the trained models as versioned SavedModels under models/<model>/<version>/.
export: venv
	$(PY) -m training export --artifacts-dir $(ARTIFACTS) --models-dir $(MODELS_DIR) \
		$(if $(VERSION),--version $(VERSION))

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Regenerates the TensorFlow-free descriptor set of TF Serving's protos.
protos: venv
	$(PY) -m serving.protos.build

modelserver: venv
	$(PY) -m serving.modelserver $(MODELSERVER_FLAGS)

serve: venv
	$(PY) -m serving.stack --models-dir $(MODELS_DIR) --grpc-port $(GRPC_PORT) \
		--rest-port $(REST_PORT) --gateway-port $(GATEWAY_PORT)

bench: bench-modelserver bench-gateway

bench-modelserver: venv
	$(PY) -m tests.bench.modelserver --models-dir $(MODELS_DIR)

bench-gateway: venv
	$(PY) -m tests.bench.gateway --models-dir $(MODELS_DIR)

loadtest: venv
	$(PY) -m tests.load.run --users $(USERS) --spawn-rate $(SPAWN_RATE) \
		--duration $(DURATION) --target $(TARGET) --models-dir $(MODELS_DIR)

loadtest-ui: venv
	$(VENV)/bin/locust -f tests/load/locustfile.py --class-picker

# Dependency audit with pip-audit (policy in docs/security.md); "audit skipped" when offline.
audit: venv
	bash tests/security/audit.sh

# Schema-driven fuzzing of the gateway (schemathesis), the full run: FUZZ_CASES generated cases.
FUZZ_CASES ?= 1200
fuzz: venv
	SECURITY_FUZZ_CASES=$(FUZZ_CASES) $(PY) -m pytest tests/security/test_fuzz_openapi.py -s $(PYTEST_ARGS)

reliability: venv
	$(PY) -m tests.reliability.run

container-test: venv
	bash docker/container-test.sh

up:
	bash docker/compose.sh up

down:
	bash docker/compose.sh down

logs:
	bash docker/compose.sh logs

clean:
	rm -rf $(ARTIFACTS) reports .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
