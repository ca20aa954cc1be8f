# Two commands do all the set-up: `make demo` and `make test` (both create .venv if needed).
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.polypviewer-installed

.PHONY: venv test demo bench package clean

venv: $(STAMP)

# Re-runs only when pyproject.toml changes, so a second `make test` installs nothing.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

test: venv
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

demo: venv
	$(BIN)/polypviewer demo

bench: venv
	$(BIN)/polypviewer bench

# One-folder desktop bundle (dist/polypviewer/) on the CPU build of torch.
package: venv
	$(BIN)/python -m pip install -q "pyinstaller>=6"
	$(BIN)/pyinstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller packaging/polypviewer.spec

clean:
	rm -rf $(VENV) build dist *.egg-info
