"""Shared fixtures. Real data is read from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("POLYPVIEWER_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (expected ../shared/data beside the project; "
                    "set POLYPVIEWER_SHARED_DATA to point elsewhere)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _need(SHARED_DATA)


@pytest.fixture(scope="session")
def endotect(shared_data: Path) -> Path:
    return _need(shared_data / "endotect")


@pytest.fixture(scope="session")
def cvc(shared_data: Path) -> Path:
    return _need(shared_data / "cvc-clinicdb")


@pytest.fixture(scope="session")
def negatives(shared_data: Path) -> Path:
    return _need(shared_data / "negatives")


@pytest.fixture(scope="session")
def h264_clip(shared_data: Path) -> Path:
    return _need(shared_data / "video" / "colonoscopy_clip_sidebyside_h264.mp4")


@pytest.fixture(scope="session")
def clip384(shared_data: Path) -> Path:
    return _need(shared_data / "video" / "colonoscopy_clip_384.mp4")


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory, monkeypatch):
    """Tests never touch the real user's cache or settings."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("POLYPVIEWER_CACHE", str(base / "user-cache"))
    monkeypatch.setenv("POLYPVIEWER_CONFIG", str(base / "user-config"))
