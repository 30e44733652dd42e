# diffvox_jax: `make demo` (the main job) and `make test` (the test suite) build the environment from nothing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := ffmpeg festival festvox-kallpc16k festvox-kdlpc16k festvox-italp16k fluidsynth fluid-soundfont-gm
TEST_DEBIAN_PACKAGES := chromium  # renders the listening pages in the tests (headless)
PYTEST_ARGS ?=

.PHONY: demo test lint system-deps venv clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

venv: system-deps $(STAMP)

# Debian packages: ffmpeg (MUSDB .stem.mp4, museval), Festival + FluidSynth (synthetic songs); `make test` adds
# TEST_DEBIAN_PACKAGES.
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES) $(EXTRA_DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else echo "Debian packages missing:$$missing (run as root, or: sudo apt-get install$$missing)"; fi; \
	fi

# Tests run in one process per core (at most 4), a test file per process (module fixtures are built once).
test: EXTRA_DEBIAN_PACKAGES = $(TEST_DEBIAN_PACKAGES)
test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadfile $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/diffvox demo --out demo_out

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf demo_out .pytest_cache
