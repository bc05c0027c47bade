# ceed_vla_ros on a machine without ROS 2: everything lives in a virtual environment in the repo.
#   make test   set up what is missing (venv, pinned dependencies, msg/ build, package), run the tests
#   make install  only the set-up part
#   make lint     ruff over the tree (make test runs it first)
#   make test ROS_DISTRO=jazzy   the same on ROS 2 Jazzy's wheels, in .venv-jazzy (default: kilted, .venv)
# A second run reuses the environment and rebuilds only what changed.

# A sourced ROS 2 install exports ROS_DISTRO (e.g. humble): that is not a choice of wheels, so only
# a value given on the command line (or with `make -e`) picks the distribution here.
ifneq ($(filter environment,$(origin ROS_DISTRO)),)
ROS_DISTRO    := kilted
endif
ROS_DISTRO    ?= kilted
ifeq ($(ROS_DISTRO),kilted)
VENV          ?= .venv
REQUIREMENTS  := requirements.txt
else ifeq ($(ROS_DISTRO),jazzy)
VENV          ?= .venv-jazzy
REQUIREMENTS  := requirements-jazzy.txt
else
$(error ROS_DISTRO=$(ROS_DISTRO): the PyPI wheels here are kilted (default) or jazzy)
endif
PYTHON        ?= python3
TORCH_VERSION := 2.13.0
PY            := $(VENV)/bin/python
PIP           := $(PY) -m pip --disable-pip-version-check
DEPS_STAMP    := $(VENV)/.ceed-deps-installed
PKG_STAMP     := $(VENV)/.ceed-package-installed
PACKAGE_SOURCES := $(shell find ceed_vla_ros msg srv src launch config models -type f \
                     -not -name '*.pyc' -not -path '*/__pycache__/*' 2>/dev/null) \
                   CMakeLists.txt setup.py package.xml pyproject.toml
PYTEST_ARGS   ?=

# The ROS wheels' bootstrapper re-executes python once with LD_LIBRARY_PATH naming its venv's libraries
# and marks that in _ROS_WHEELS_BOOTSTRAP_COMPLETE. Started from such a process (say, a tool in the
# other distribution's venv), the marker would skip this venv's bootstrap and the inherited path would
# load the other distribution's libraries: drop both then.
ifneq ($(_ROS_WHEELS_BOOTSTRAP_COMPLETE),)
unexport _ROS_WHEELS_BOOTSTRAP_COMPLETE
unexport LD_LIBRARY_PATH
endif

# Tests talk over real DDS: keep discovery on this machine and give each run its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MUJOCO_GL ?= egl

.PHONY: install lint test demo bench clean distclean

install: $(PKG_STAMP)

$(DEPS_STAMP): $(REQUIREMENTS) requirements-core.txt
	@test -x $(PY) || { echo "== creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "== installing torch==$(TORCH_VERSION) (CPU build) first, then $(REQUIREMENTS)"
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q -r $(REQUIREMENTS)
	@touch $@

$(PKG_STAMP): $(DEPS_STAMP) $(PACKAGE_SOURCES)
	@echo "== building msg/ and installing ceed_vla_ros into $(VENV) (ROS 2 $(ROS_DISTRO))"
	$(PIP) install -q --no-build-isolation --no-deps .
	@touch $@

# ruff (settings in pyproject.toml): pyflakes, pycodestyle, import order, bugbear; part of make test.
lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check --no-cache .

test: $(PKG_STAMP) lint
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(shuf -i 1-100 -n 1)} $(VENV)/bin/pytest $(PYTEST_ARGS)

# The sim suite on the shipped distilled checkpoint: a few episodes with live progress.
# A captioned video of the episodes: make demo DEMO_ARGS="--episodes 3 --video demo.mp4 --video demo.gif"
DEMO_ARGS ?=
demo: $(PKG_STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(shuf -i 1-100 -n 1)} $(VENV)/bin/ceed-vla demo $(DEMO_ARGS)

# Every speed figure side by side (decoding, closed loop, ROS pipeline) into results/bench/.
BENCH_ARGS ?=
bench: $(PKG_STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(shuf -i 1-100 -n 1)} $(VENV)/bin/ceed-vla bench-all $(BENCH_ARGS)

clean:
	rm -rf build *.egg-info .venv/.ceed-package-installed .venv-jazzy/.ceed-package-installed

distclean: clean
	rm -rf $(VENV)
