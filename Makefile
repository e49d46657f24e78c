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

# quick CPU run by default (~10-15 min on 2 cores, results in build/bench/results); e.g.
# make bench BENCH_ARGS="--full"  |  BENCH_ARGS="--only query --device cuda"  (see benchmarks/run_all.py --help)
BENCH_ARGS ?=
bench: setup
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf build install log .pytest_cache
