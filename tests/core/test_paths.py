"""polypviewer's environment variables are read in core/paths.py only."""

from __future__ import annotations

import re
from pathlib import Path

from polypviewer.core import paths


def test_projects_dir_follows_its_variable_and_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_PROJECTS", str(tmp_path / "p" / "q"))
    assert paths.projects_dir() == tmp_path / "p" / "q" and (tmp_path / "p" / "q").is_dir()
    monkeypatch.delenv("POLYPVIEWER_PROJECTS")
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(tmp_path / "cfg"))
    assert paths.projects_dir() == tmp_path / "cfg" / "projects"


def test_shared_data_dir_takes_the_variable_only_when_it_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYPVIEWER_SHARED_DATA", str(tmp_path))
    assert paths.shared_data_dir() == tmp_path
    monkeypatch.setenv("POLYPVIEWER_SHARED_DATA", str(tmp_path / "missing"))
    found = paths.shared_data_dir()
    assert found != tmp_path / "missing" and (found is None or Path(found).is_dir())


def test_shared_data_default_names_where_it_looks_when_the_data_is_absent(tmp_path, monkeypatch):
    """The benchmarks' --data default: the folder found, else the first place looked (so their
    "not found" message names it), never None."""
    monkeypatch.setenv("POLYPVIEWER_SHARED_DATA", str(tmp_path))
    assert paths.shared_data_default() == tmp_path
    monkeypatch.setenv("POLYPVIEWER_SHARED_DATA", str(tmp_path / "missing"))
    found = paths.shared_data_dir()
    assert paths.shared_data_default() == (found if found is not None else tmp_path / "missing")


def test_no_other_module_reads_polypviewers_variables():
    root = Path(paths.__file__).resolve().parents[1]
    read = re.compile(r"""(environ\.get\(|environ\[|getenv\()\s*["']POLYPVIEWER_""")
    readers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                     if p.name != "paths.py" and read.search(p.read_text(encoding="utf-8")))
    assert readers == []
