# da3-ros developer entry points. On a fresh Debian 12 / Ubuntu machine with Python 3.11:
#   make demo     build the venv (first time only) and run the demo
#   make test     build the venv (first time only) and run every test (what CI runs)
# Override the venv location with VENV=/some/path (e.g. to test a from-scratch build).

VENV ?= .venv
PYTHON ?= python3
ARGS ?=

PY := $(VENV)/bin/python
PIP := $(PY) -m pip
REQ := requirements
REQ_FILES := $(wildcard $(REQ)/*.txt)
INTERFACE_SRCS := $(shell find msg scripts/interfaces -type f 2>/dev/null) scripts/build_interfaces.sh

# Environment for everything run from the venv: ROS 2 from the pip wheels, loopback-only discovery,
# few threads on small machines.
RUN_ENV := VIRTUAL_ENV=$(abspath $(VENV)) \
	AMENT_PREFIX_PATH=$(abspath $(VENV))$(if $(AMENT_PREFIX_PATH),:$(AMENT_PREFIX_PATH)) \
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	FASTDDS_DEFAULT_PROFILES_FILE=$${FASTDDS_DEFAULT_PROFILES_FILE:-$(CURDIR)/config/fastdds_local_large_data.xml} \
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=$${MKL_NUM_THREADS:-2} \
	PATH=$(abspath $(VENV))/bin:$$PATH

.PHONY: .venv venv test test-fast lint demo clean-venv help
.DEFAULT_GOAL := help

help:
	@echo "make demo    - set up .venv if needed, then run the demo (ARGS='...' passes arguments)"
	@echo "make test    - set up .venv if needed, then run all tests (fast + slow)"
	@echo "make test-fast - tests not marked slow"
	@echo "make lint    - ruff check"
	@echo "make .venv   - create/update the venv only (VENV=path to build elsewhere)"

# --- the venv, in three stamped steps: requirements -> ROS interfaces -> the project itself ---------
.venv venv: $(VENV)/.stamp-project

$(VENV)/.stamp-reqs: $(REQ_FILES) scripts/check_system.sh
	@scripts/check_system.sh "$(PYTHON)"
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || \
	  { echo "error: $(VENV) is not a Python 3.11 venv; remove it and re-run"; exit 1; }
	$(PIP) install --no-input -r $(REQ)/torch.txt
	$(PIP) install --no-input -r $(REQ)/core.txt -r $(REQ)/ros.txt -r $(REQ)/dev.txt -r $(REQ)/train.txt \
	  -r $(REQ)/deploy.txt -r $(REQ)/mapping.txt \
	  -c $(REQ)/torch.txt -c $(REQ)/reference.txt
	$(PIP) install --no-input --no-deps -r $(REQ)/reference.txt -r $(REQ)/nodeps.txt
	@touch $@

$(VENV)/.stamp-interfaces: $(VENV)/.stamp-reqs $(INTERFACE_SRCS)
	scripts/build_interfaces.sh $(VENV)
	@touch $@

# Editable install: the `da3` console script in $(VENV)/bin (it replaces the reference package's `da3`),
# da3_core and da3_ros importable from the checkout.
# An editable install does not copy data_files, so scripts/venv_prefix.py lays the venv out as colcon
# --symlink-install would: the ament index entry, share/da3_ros/{package.xml,launch/*,config/*} as file links and
# lib/da3_ros/<executable> links, so that `ros2 run` / `ros2 launch da3_ros ...` work once launch is installed.
$(VENV)/.stamp-project: $(VENV)/.stamp-interfaces Makefile setup.py setup.cfg package.xml resource/da3_ros scripts/venv_prefix.py $(wildcard launch config launch/* config/*)
	$(PIP) install --no-input --no-deps --no-build-isolation -e .
	$(PY) scripts/venv_prefix.py $(VENV)
	@touch $@

# --- everyday targets --------------------------------------------------------------------------------
test: $(VENV)/.stamp-project
	$(RUN_ENV) $(PY) -m pytest

test-fast: $(VENV)/.stamp-project
	$(RUN_ENV) $(PY) -m pytest -m "not slow"

lint: $(VENV)/.stamp-reqs
	$(PY) -m ruff check .

demo: $(VENV)/.stamp-project
	$(RUN_ENV) $(PY) -m da3_ros.demo $(ARGS)

clean-venv:
	rm -rf $(VENV)
