"""The ``polypviewer`` command.

With no sub-command it starts the GUI; with one it runs a headless tool. Each tool is a
module ``polypviewer.cli.<module>`` exposing ``configure(parser)`` and ``run(args) -> int``.
Modules are imported lazily so ``polypviewer --help`` does not import torch or Qt.

Exit status: 0 success, 1 the run was not clean (some items failed, or the source had
problems: see :class:`Report`), 2 usage error. A user error is one line on stderr
(``polypviewer: error: ...``), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from polypviewer import __version__
from polypviewer.core.errors import PolypviewerError

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("predict", "segment an image, folder, Kvasir dataset or video"),
    "eval": ("evaluate", "score predicted masks against ground truth"),
    "extract": ("extract", "write chosen video frames as PNG for annotation"),
    "propagate": ("propagate", "carry a reviewed mask through the next frames (optical flow + network)"),
    "segment-boxes": ("segment_boxes", "masks from boxes (Kvasir-SEG bboxes.json) with LiteMedSAM"),
    "train": ("train", "train a network on a Kvasir-layout dataset"),
    "finetune": ("finetune", "fine-tune on corrected masks and prove it on held-out frames"),
    "info": ("info", "list the registered networks and available weights"),
    "bench": ("bench", "measure inference speed (baseline vs best path) and end-to-end"),
    "engines": ("engines", "measure the engines here and cache what --backend auto runs"),
    "demo": ("demo", "open the app on the built-in demo clip with the default model"),
    "gui": ("gui", "open the review app (the default with no sub-command)"),
}


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2 unless given."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def refuse_existing_output(folder: Path, overwrite: bool,
                           hint: str = "pass --overwrite to write into it anyway") -> None:
    """Refuse an output folder that already holds files (``io.export.check_destination``)
    unless ``--overwrite``: one :class:`UserError` line naming it, before any work starts."""
    if overwrite:
        return
    from polypviewer.io.export import ExportError, check_destination

    try:
        check_destination(folder)
    except ExportError as exc:
        raise UserError(f"{exc} ({hint})") from None


class Report:
    """How ``predict``, ``extract`` and ``eval`` report what went wrong without stopping.

    Each problem (a source problem found when it opened, a frame or file that failed) is one
    line on stderr, ``polypviewer <command>: <file>: <reason>``, and the run goes on;
    :meth:`note` prints a line that does not count. :meth:`finish` prints how many problems
    there were and returns the exit status: 0 when none, 1 when the run was not clean.
    """

    def __init__(self, command: str) -> None:
        self.command = command
        self.count = 0

    def problem(self, line: str) -> None:
        self.count += 1
        self.note(line)

    __call__ = problem

    def note(self, line: str) -> None:
        print(f"polypviewer {self.command}: {' '.join(str(line).split())}", file=sys.stderr, flush=True)

    def source(self, src: object) -> None:
        """Every problem the source opener found (``src.problems``), one line each."""
        for line in getattr(src, "problems", None) or []:
            self.problem(line)

    def finish(self) -> int:
        if not self.count:
            return 0
        self.note(f"{self.count} problem(s) reported above; the run was not clean (exit status 1)")
        return 1


def _available() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_) in COMMANDS.items():
        if importlib.util.find_spec(f"polypviewer.cli.{module}") is not None:
            found[name] = (module, help_)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polypviewer",
        description="Polyp segmentation review: with no command, opens the app on PATH (optional).",
    )
    parser.add_argument("--version", action="version", version=f"polypviewer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        importlib.import_module(f"polypviewer.cli.{module}").configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `polypviewer` and `polypviewer PATH` open the GUI.
    if not argv or (argv[0] not in COMMANDS and not argv[0].startswith("-")):
        argv = ["gui", *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    module = importlib.import_module(f"polypviewer.cli.{args._module}")
    try:
        return int(module.run(args) or 0)
    except UserError as exc:
        print(f"polypviewer: error: {exc}", file=sys.stderr)
        return exc.status
    except PolypviewerError as exc:
        print(f"polypviewer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("polypviewer: interrupted", file=sys.stderr)
        return 130
