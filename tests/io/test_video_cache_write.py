"""The video index cache is written by core.fileio: never through a link, umask modes."""

from __future__ import annotations

import os
import stat

from polypviewer.io import video as V


def test_cache_write_never_follows_a_link(numbered_video, tmp_path):
    cache = V._cache_file(numbered_video)
    cache.parent.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # The old writer's predictable temporary name, and the cache name itself.
    planted = [cache.with_suffix(f".{os.getpid()}.tmp"), cache]
    for link in planted:
        link.unlink(missing_ok=True)
        link.symlink_to(victim)
    try:
        index = V.load_index(numbered_video)
        assert index.count == 120
        assert victim.read_text() == "precious"
        assert all(p.is_symlink() for p in planted), "links are left alone, not replaced"
    finally:
        for link in planted:
            link.unlink(missing_ok=True)


def test_cache_file_mode_follows_the_umask(numbered_video):
    cache = V._cache_file(numbered_video)
    cache.unlink(missing_ok=True)
    old = os.umask(0o022)
    try:
        V.load_index(numbered_video)
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o644
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".polypviewer-tmp-")]
