"""Shared fixtures. Real data is read from ../shared/data (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


# --- a Kvasir-layout set that every clone has ------------------------------------------------
# Tests that need "some frames with ground truth" (not real data's statistics) use frames of
# the shipped synthetic clip (resources/demo, exact masks), so they run without ../shared.
DEMO_EVERY = 5  # frames 0, 5, ..., 55 of the 60-frame clip: 12 frames, the polyp growing
DEMO_SPLIT = {"train": 8, "val": 4}  # split.json: the first 8 stems train, the last 4 val


@pytest.fixture(scope="session")
def demo_set(tmp_path_factory) -> Path:
    """A read-only Kvasir-layout folder made from the shipped demo clip: ``images/*.png``
    (lossless, 384x384 RGB), ``masks/*.png`` (0/255, the clip's exact ground truth) and a
    ``split.json`` (``train``, ``val``) like ../shared/data's. Copy it (``kvasir_copy``)
    before changing anything in it."""
    import json

    import cv2

    from polypviewer.io.demo_asset import shipped_demo
    from polypviewer.io.sources import open_source

    root = tmp_path_factory.mktemp("demo-kvasir")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    stems = []
    with open_source(shipped_demo()) as src:
        for i in range(0, len(src), DEMO_EVERY):
            stem = src.name(i)
            mask = src.mask(i)
            assert mask is not None and mask.any(), f"demo frame {i} has no polyp"
            cv2.imwrite(str(root / "images" / f"{stem}.png"), cv2.cvtColor(src.frame(i), cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask.astype(np.uint8) * 255)
            stems.append(stem)
    n_train = DEMO_SPLIT["train"]
    (root / "split.json").write_text(json.dumps({"train": stems[:n_train], "val": stems[n_train:]}))
    return root


@pytest.fixture
def kvasir_copy(demo_set, tmp_path):
    """Factory: ``kvasir_copy(n)`` -> ``(root, stems)``, a writable Kvasir-layout folder under
    tmp_path holding the first ``n`` frames of ``demo_set`` (``link=True``: symbolic links)."""
    import shutil

    def make(n: int, *, link: bool = False, name: str | None = None) -> tuple[Path, list[str]]:
        stems = sorted(p.stem for p in (demo_set / "images").iterdir())[:n]
        assert len(stems) == n, f"demo_set has only {len(stems)} frames"
        root = tmp_path / (name or f"kvasir{n}")
        for sub in ("images", "masks"):
            (root / sub).mkdir(parents=True)
            for s in stems:
                src = demo_set / sub / f"{s}.png"
                if link:
                    (root / sub / src.name).symlink_to(src)
                else:
                    shutil.copy(src, root / sub)
        return root, stems

    return make
