"""Annotate > Model versions lists every shipped version of a network (the default marked),
so an earlier shipped model stays one click away after the default changes."""

from __future__ import annotations

import json

import pytest
from PySide6.QtWidgets import QMenu
from torch import nn

from polypviewer.nets.weights import Preprocessing, WeightRecord, save_checkpoint
from polypviewer.ui.model_versions import ModelVersions

PREP = Preprocessing(64, "RGB", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _record(folder, stem: str) -> WeightRecord:
    path = folder / f"{stem}.safetensors"
    digest = save_checkpoint(path, nn.Conv2d(3, 1, 1), model_name="lite_pranet", preprocessing=PREP)
    rec = WeightRecord(path, digest, "lite_pranet", PREP, {})
    rec.to_card(folder / f"{stem}.json")
    return rec


@pytest.fixture
def models_folder(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr("polypviewer.core.paths.models_dir", lambda: folder)
    return folder


def test_every_shipped_version_is_listed_and_loads(qtbot, models_folder):
    old, new = _record(models_folder, "lite_pranet"), _record(models_folder, "lite_pranet_v2")
    (models_folder / "default.json").write_text(json.dumps({"weights": "lite_pranet_v2.safetensors"}))
    (models_folder / "broken.json").write_text("{}")  # left out, not fatal
    loaded: list[str] = []
    versions = ModelVersions(QMenu(), loaded.append)
    versions.list_shipped()
    labels = [a.text() for a in versions.menu.actions()]
    assert labels == [f"lite_pranet: lite_pranet {old.version} (shipped)",
                      f"lite_pranet_v2: lite_pranet {new.version} (shipped, default)"]
    assert versions.menu.isEnabled()
    versions.menu.actions()[0].trigger()
    assert loaded == [str(old.file)]
    versions.list_shipped()  # listed once
    assert len(versions.menu.actions()) == 2


def test_no_shipped_models_leaves_the_menu_disabled(qtbot, models_folder):
    versions = ModelVersions(QMenu(), lambda p: None)
    versions.list_shipped()
    assert versions.versions == {} and not versions.menu.isEnabled()
