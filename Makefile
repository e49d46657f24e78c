# The two commands of the README:  make demo  (main job on the bundled sample)  and  make test.
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export AMENT_PREFIX_PATH := $(VENV)

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/selfi-ros demo

test: setup
	$(PY) -m pytest -q test

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf build install log .pytest_cache
