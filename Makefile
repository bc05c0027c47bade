# ceed_vla_ros on a machine without ROS 2: everything lives in a virtual environment in the repo.
#   make test   set up what is missing (venv, pinned dependencies, msg/ build, package), run the tests
#   make install  only the set-up part
# A second run reuses the environment and rebuilds only what changed.

VENV          ?= .venv
PYTHON        ?= python3
TORCH_VERSION := 2.13.0
PY            := $(VENV)/bin/python
PIP           := $(PY) -m pip --disable-pip-version-check
DEPS_STAMP    := $(VENV)/.ceed-deps-installed
PKG_STAMP     := $(VENV)/.ceed-package-installed
PACKAGE_SOURCES := $(shell find ceed_vla_ros msg srv launch config models -type f \
                     -not -name '*.pyc' -not -path '*/__pycache__/*' 2>/dev/null) \
                   CMakeLists.txt setup.py package.xml pyproject.toml
PYTEST_ARGS   ?=

# Tests talk over real DDS: keep discovery on this machine and give each run its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MUJOCO_GL ?= egl

.PHONY: install test demo bench clean distclean

install: $(PKG_STAMP)

$(DEPS_STAMP): requirements.txt requirements-core.txt
	@test -x $(PY) || { echo "== creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "== installing torch==$(TORCH_VERSION) (CPU build) first, then requirements.txt"
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -r requirements.txt
	@touch $@

$(PKG_STAMP): $(DEPS_STAMP) $(PACKAGE_SOURCES)
	@echo "== building msg/ and installing ceed_vla_ros into $(VENV)"
	$(PIP) install -q --no-build-isolation --no-deps .
	@touch $@

test: $(PKG_STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(shuf -i 1-100 -n 1)} $(VENV)/bin/pytest $(PYTEST_ARGS)

# The sim suite on the shipped distilled checkpoint: a few episodes with live progress.
DEMO_ARGS ?=
demo: $(PKG_STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(shuf -i 1-100 -n 1)} $(VENV)/bin/ceed-vla demo $(DEMO_ARGS)

# Every speed figure side by side (decoding, closed loop, ROS pipeline) into results/bench/.
BENCH_ARGS ?=
bench: $(PKG_STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(shuf -i 1-100 -n 1)} $(VENV)/bin/ceed-vla bench-all $(BENCH_ARGS)

clean:
	rm -rf build *.egg-info $(PKG_STAMP)

distclean: clean
	rm -rf $(VENV)
