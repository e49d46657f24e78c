# The two commands of the README:  make demo  (main job on the bundled real sample)  and  make test.
# make demo DEMO_ARGS="--sample woodbox"  plays the rendered sample instead (selfi-ros demo --help).
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export AMENT_PREFIX_PATH := $(VENV)

.PHONY: setup demo test bench clean

setup:
	@bash scripts/setup.sh

DEMO_ARGS ?=
demo: setup
	$(VENV)/bin/selfi-ros demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q test

# quick CPU run by default (~10-15 min on 2 cores, results in build/bench/results); e.g.
# make bench BENCH_ARGS="--full"  |  BENCH_ARGS="--only query --device cuda"  (see benchmarks/run_all.py --help)
BENCH_ARGS ?=
bench: setup
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf build install log .pytest_cache
