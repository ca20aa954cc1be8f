"""``polypviewer demo``: the app with the shipped default model on the shipped demo frames.

By default it opens ``resources/demo/polypgen/``: 24 real PolypGen colonoscopy frames with
expert masks (CC BY 4.0, see its README), so the Dice and the disagreement view mean
something without any other data. ``--clip`` opens the synthetic demo video instead (a video
path with exact masks, but the model does not find its rendered polyp), ``--real`` the real
colonoscopy clip from ``../shared/data`` (when present; it has no masks).
``--screenshot FILE [--frames N]`` is the smoke mode (see ``polypviewer gui``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polypviewer.cli import UserError
from polypviewer.cli.gui import add_window_options, launch

REAL_CLIP = Path("video") / "colonoscopy_clip_384.mp4"


def demo_clip() -> Path:
    """The synthetic demo clip shipped in ``resources/demo/``."""
    from polypviewer.core.paths import resources_dir

    return resources_dir() / "demo" / "demo_clip.mp4"


def demo_frames() -> Path:
    """The real PolypGen frames shipped in ``resources/demo/polypgen/`` (Kvasir layout)."""
    from polypviewer.core.paths import resources_dir

    return resources_dir() / "demo" / "polypgen"


def shared_data() -> Path | None:
    """``$POLYPVIEWER_SHARED_DATA``, else ``../shared/data`` beside the project or the current folder."""
    from polypviewer.core.paths import shared_data_dir

    return shared_data_dir()


def configure(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--clip", action="store_true",
                       help="open the synthetic demo video instead of the shipped PolypGen frames")
    which.add_argument("--real", action="store_true",
                       help="open the real colonoscopy clip from ../shared/data instead of the shipped frames")
    add_window_options(parser)


def demo_source(args: argparse.Namespace) -> Path:
    """What ``demo`` opens for these options (a one-line UserError when it is missing)."""
    if args.real:
        root = shared_data()
        if root is None or not (root / REAL_CLIP).is_file():
            raise UserError("--real needs ../shared/data/video/colonoscopy_clip_384.mp4 beside the project "
                            "(or POLYPVIEWER_SHARED_DATA pointing to the data folder)")
        return root / REAL_CLIP
    if args.clip:
        path = demo_clip()
        if not path.is_file():
            raise UserError(f"{path}: the demo clip is not installed (reinstall polypviewer)")
        return path
    path = demo_frames()
    if not (path / "images").is_dir() or not (path / "masks").is_dir():
        raise UserError(f"{path}: the demo frames are not installed (reinstall polypviewer, or use --clip)")
    return path


def run(args: argparse.Namespace) -> int:
    return launch(demo_source(args), args)
