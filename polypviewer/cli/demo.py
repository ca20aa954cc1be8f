"""``polypviewer demo``: the app on the built-in demo clip with the shipped default model.

``--real`` opens the real colonoscopy clip from ``../shared/data`` instead (when present).
``--screenshot FILE [--frames N]`` is the smoke mode (see ``polypviewer gui``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from polypviewer.cli import UserError
from polypviewer.cli.gui import add_window_options, launch

REAL_CLIP = Path("video") / "colonoscopy_clip_384.mp4"


def demo_clip() -> Path:
    """The demo clip shipped in ``resources/demo/``."""
    from polypviewer.core.paths import resources_dir

    return resources_dir() / "demo" / "demo_clip.mp4"


def shared_data() -> Path | None:
    """``$POLYPVIEWER_SHARED_DATA``, else ``../shared/data`` beside the project or the current folder."""
    env = os.environ.get("POLYPVIEWER_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[3] / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), None)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--real", action="store_true",
                        help="open the real colonoscopy clip from ../shared/data instead of the demo clip")
    add_window_options(parser)


def run(args: argparse.Namespace) -> int:
    if args.real:
        root = shared_data()
        if root is None or not (root / REAL_CLIP).is_file():
            raise UserError("--real needs ../shared/data/video/colonoscopy_clip_384.mp4 beside the project "
                            "(or POLYPVIEWER_SHARED_DATA pointing to the data folder)")
        path = root / REAL_CLIP
    else:
        path = demo_clip()
        if not path.is_file():
            raise UserError(f"{path}: the demo clip is not installed (reinstall polypviewer, or use --real)")
    return launch(path, args)
