"""Fingerprint of what goes into the bundle, so a check can tell a stale bundle from a broken one.

The spec writes ``polypviewer-build.json`` (this fingerprint, the git commit, the build time)
into the bundle; ``tests/test_packaging.py`` recomputes the fingerprint from the checkout.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE_NAME = "polypviewer-build.json"
# (folder, file patterns) that the spec bundles from the checkout.
SOURCES = (("polypviewer", ("*.py",)), ("resources", ("*",)), ("models", ("*.safetensors", "*.json", "*.md")))


def source_files(root: Path = ROOT) -> list[Path]:
    """The bundled files of the checkout (Python caches excluded), sorted."""
    out = []
    for folder, patterns in SOURCES:
        for f in sorted((root / folder).rglob("*")):
            if (f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
                    and any(fnmatch.fnmatch(f.name, p) for p in patterns)):
                out.append(f)
    return out


def fingerprint(root: Path = ROOT) -> str:
    """sha256 over the relative paths and contents of ``source_files``."""
    h = hashlib.sha256()
    for f in source_files(root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def stage(out_dir: Path, root: Path = ROOT) -> Path:
    """Copy ``source_files`` into ``out_dir`` (emptied first) and return it.

    The spec bundles resources/ and models/ from this copy and fingerprints it, so weights
    rewritten by a training run during the (long) build cannot make the record lie."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for f in source_files(root):
        dest = out_dir / f.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest)
    return out_dir


def write(out_dir: Path, root: Path = ROOT) -> Path:
    """Write the build record (fingerprint of ``root``) into ``out_dir`` and return its path."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    record = {"fingerprint": fingerprint(root), "git_commit": commit,
              "built_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE_NAME
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path
