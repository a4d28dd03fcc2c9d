# export -> patch -> serve -> call, one target each. `make help` lists them.
PYTHON_SYSTEM ?= python3
VENV          := .venv
PY            := $(VENV)/bin/python
STAMP         := $(VENV)/.installed-$(shell sha1sum requirements.lock | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help install train models serve stop status soak test test-fast fuzz lint bench image \
	deploy-test clean

# Debian packages a target needs, installed by the target itself when missing (root).
IMAGE_APT       := debootstrap podman runc
DEPLOY_TEST_APT := $(IMAGE_APT) catatonit haproxy
apt_install = dpkg -s $(1) >/dev/null 2>&1 || { apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(1); }

help:  ## list the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install: $(STAMP)  ## build .venv with the exact pinned environment (requirements.lock)

# The project itself goes in editable, built with the lock's setuptools (no build isolation, so
# nothing unpinned is fetched), and compat/paddle_vision_serving_compat.pth goes into
# site-packages: it activates the compatibility fixes in every process of the venv.
$(STAMP): requirements.lock pyproject.toml compat/paddle_vision_serving_compat.pth
	test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==25.3
	$(PY) -m pip install --quiet --no-deps -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	cp compat/paddle_vision_serving_compat.pth "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
	rm -f $(VENV)/.installed-* && touch $@

train: install  ## generate the synthetic datasets and retrain both default models (long)
	$(PY) -m train

models: install  ## export + patch the default models into build/serving/ (again only if inputs changed)
	$(PY) -m serving prepare

serve: models  ## start both services in the background; returns once each answered a prediction
	$(PY) -m serving start

stop:  ## stop everything `make serve` started
	@test -x $(PY) && $(PY) -m serving stop || true

status:  ## show what is running, with endpoints
	$(PY) -m serving status

soak: install  ## 20,000 requests at concurrency 32 against the running services (make serve first)
	$(PY) -m bench.soak --requests 20000 --concurrency 32

bench: models  ## serving vs in-process vs upstream reference (build/bench/), then every engine side by side (build/bench-engines/)
	$(PY) -m bench
	$(PY) -m bench.engines

test: install  ## lint + the whole test suite (what CI runs)
	$(PY) -m ruff check .
	$(PY) -m pytest

test-fast: install  ## lint + the unit tests only (no training, export or services; under a minute)
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow and not service and not integration and not deploy" -q

image:  ## the service image, no registry: debootstrap base + deploy/image/Containerfile (podman)
	@$(call apt_install,$(IMAGE_APT))
	$(PYTHON_SYSTEM) -m deploy.image

deploy-test: install models image  ## run the image as deploy/k8s says: pod, drain, replicas behind haproxy
	@$(call apt_install,$(DEPLOY_TEST_APT))
	$(PY) -m pytest -m deploy tests/test_deploy_image.py tests/test_deploy_scaleout.py

fuzz: install  ## long fuzz pass: HTTP parsers and image decoder, 20,000 inputs per target (minutes)
	$(PY) -m pytest tests/test_fuzz.py -q --hypothesis-profile=fuzz

lint: install  ## ruff
	$(PY) -m ruff check .

clean: stop  ## remove built serving folders and logs (keeps .venv and the shipped models)
	rm -rf build
