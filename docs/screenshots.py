"""Make every screenshot of ``docs/guide.md`` by driving the real review window offscreen.

    .venv/bin/python docs/screenshots.py                 # all shots into docs/images/
    .venv/bin/python docs/screenshots.py --only 09-box-tool.png   # just these shots (and the steps they need)
    .venv/bin/python docs/screenshots.py --keymap        # print the keyboard map (Markdown)
    .venv/bin/python docs/screenshots.py --check-guide   # exit 1 if the guide's keymap is stale

Shots 01-09 are of the shipped real frames, ``resources/demo/polypgen`` (24 PolypGen
frames with their expert masks, Kvasir-SEG layout, CC BY 4.0; see its README): it steps
through them, jumps to the worst frame, paints a correction with real mouse events on the
canvas, sets review states, runs the export dialog and the fine-tune dialog, jumps to the most
uncertain unreviewed frame (J) and drags a box with the Box tool (LiteMedSAM, on PyTorch here).
Propagation needs a video, so shot 10 opens the shipped synthetic clip
(``resources/demo/demo_clip.mp4``), drags a box there too, propagates that frame's mask
forward and stops the run after a few frames. Each shot grabs the window or dialog with
``QWidget.grab()``. The model is the shipped default
(``models/default.json``) when it exists, else ``--weights``, else the newest
``models/*.safetensors`` checkpoint. User folders (settings, projects, cache) are redirected to
a temporary folder, so the run never touches the user's own projects or recent files.

Every PNG is written with zlib level 9 and, when still over ``--max-kb``, downscaled and
reduced to a 256-colour palette until it fits.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
KEYMAP_BEGIN, KEYMAP_END = "<!-- keymap:begin -->", "<!-- keymap:end -->"

POLYPGEN = ROOT / "resources" / "demo" / "polypgen"  # shots 01-09: real frames with expert masks
CLIP = ROOT / "resources" / "demo" / "demo_clip.mp4"  # shot 10: propagation needs a video

# name -> what the guide says it shows (also the order of the shots)
SHOTS: dict[str, str] = {
    "01-window.png": "the window after stepping through the first of the 24 PolypGen demo frames",
    "02-outline-threshold.png": "outline mode with ground truth, threshold raised",
    "03-worst-disagreement.png": "timeline filled by Predict all, jumped to the worst frame (W), "
                                 "disagreement colours (D)",
    "04-correct-brush.png": "a brush stroke, a polygon and an eraser stroke made with the mouse",
    "05-review-states.png": "frames accepted / corrected / flagged, markers on the timeline",
    "06-export-dialog.png": "the export dialog after a finished export",
    "07-finetune-dialog.png": "the fine-tune dialog after a finished run (loss and before/after)",
    "08-uncertainty.png": "the uncertainty curve on the timeline, J jumped to the most uncertain unreviewed frame",
    "09-box-tool.png": "a box dragged around the polyp with the Box tool (S), LiteMedSAM's mask in it",
    "10-propagate.png": "on the synthetic demo clip, a box dragged on a frame and Propagate forward "
                        "(Ctrl+Shift+Right) from it, stopped after a few frames; propagated frames and "
                        "their drift on the timeline, Shift+J at the worst drift",
}
# Shots 01..07 are one chain on the PolypGen frames (each step uses what the previous ones did);
# 08 and 09 need only those frames open; 10 opens the demo clip and boxes a frame of its own.
CHAIN = ["01-window.png", "02-outline-threshold.png", "03-worst-disagreement.png", "04-correct-brush.png",
         "05-review-states.png", "06-export-dialog.png", "07-finetune-dialog.png"]


@dataclass
class Result:
    written: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # shot -> the name of the source open in it
    notes: list[str] = field(default_factory=list)
    boxed: int | None = None  # the PolypGen frame the Box tool segmented (shot 09)
    box_pixels: int = 0  # its mask's size after the box
    export: Path | None = None  # the export dialog's folder (shot 06)
    propagate_from: int | None = None  # the demo clip's frame boxed and propagated from (shot 10)
    propagated: list[int] = field(default_factory=list)  # frames still PROPAGATED after the run


# ---- helpers ---------------------------------------------------------------------------------
VERBOSE = os.environ.get("PV_DOCS_VERBOSE") == "1"


def _pump(ms: int) -> None:
    """Run the event loop for ``ms`` ms. (A QEventLoop releases the GIL while it sleeps, so
    the window's Python worker threads make progress; a busy processEvents loop would not.)"""
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    if VERBOSE:
        print(f"[{time.strftime('%H:%M:%S')}] waiting for {what}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        _pump(20)


def save_png(widget: Any, path: Path, max_kb: int = 290) -> Path:
    """Grab ``widget`` and write a compact PNG (zlib 9; smaller and palettised if needed)."""
    import cv2
    import numpy as np
    from PIL import Image
    from PySide6.QtGui import QImage

    img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    rgb = np.frombuffer(img.constBits(), np.uint8, img.bytesPerLine() * h).reshape(h, img.bytesPerLine())
    rgb = rgb[:, : w * 3].reshape(h, w, 3).copy()
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = 1.0
    while True:
        out = rgb if scale == 1.0 else cv2.resize(rgb, (round(w * scale), round(h * scale)),
                                                    interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(path), cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if path.stat().st_size <= max_kb * 1024:
            return path
        # A palette keeps the UI text crisp (octree keeps the overlay colours true).
        Image.fromarray(out).quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
        if path.stat().st_size <= max_kb * 1024:
            return path
        if scale < 0.5:  # smaller would be unreadable: keep it and say so
            print(f"screenshots: warning: {path.name} is {path.stat().st_size // 1024} KB "
                  f"(over {max_kb} KB) even at half size", file=sys.stderr)
            return path
        scale *= 0.85


def keymap_rows(window: Any) -> list[tuple[str, str]]:
    """(shortcuts, action) rows of the live window: the table Help > Keys shows
    (:func:`polypviewer.ui.actions.window_keymap_rows`, read from the real QActions)."""
    from polypviewer.ui.actions import window_keymap_rows

    return window_keymap_rows(window)


def keymap_markdown(window: Any) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| Keys | Action |", "|---|---|"]
    lines += [f"| {cell(k)} | {cell(t)} |" if "mouse" in k.lower() else f"| `{cell(k)}` | {cell(t)} |"
              for k, t in keymap_rows(window)]
    return "\n".join(lines)


def _pick_weights(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    from polypviewer.nets.weights import default_weights

    try:
        path = default_weights()
    except Exception as exc:  # noqa: BLE001 - a broken default.json: say so, fall back below
        print(f"screenshots: default weights unusable ({exc})", file=sys.stderr)
        path = None
    if path is not None:
        return str(path)
    found = sorted((ROOT / "models").glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    return str(found[0]) if found else None


def _isolate_user_dirs(base: Path) -> None:
    for var, sub in (("POLYPVIEWER_CONFIG", "config"), ("POLYPVIEWER_CACHE", "cache"),
                     ("POLYPVIEWER_PROJECTS", "projects")):
        os.environ[var] = str(base / sub)


# ---- the tour --------------------------------------------------------------------------------
class Tour:
    """Drives one MainWindow through the guide's steps; each ``shot`` grabs a widget."""

    def __init__(self, out: Path, work: Path, *, frames: int, timeout: float, max_kb: int,
                 predictor: Any = None, weights: str | None = None, finetune_steps: int = 6,
                 finetune_size: int | None = None, full_timeline: bool = True,
                 finetune_base: str | None = None, accept: int = 6, only: set[str] | None = None,
                 propagate_frames: int = 8) -> None:
        self.out, self.work, self.frames, self.timeout, self.max_kb = out, work, frames, timeout, max_kb
        self.predictor, self.weights = predictor, weights
        self.finetune_steps, self.finetune_size, self.full_timeline = finetune_steps, finetune_size, full_timeline
        self.finetune_base, self.accept = finetune_base, accept
        self.only = set(SHOTS) if only is None else set(only)
        self.propagate_frames = propagate_frames
        self.result = Result()
        self.win: Any = None
        self.worst = 0  # the frame W jumped to
        self.corrected = 0  # the frame painted on

    # -- plumbing --
    def shot(self, name: str, widget: Any = None) -> None:
        if name not in self.only:
            return
        _pump(60)  # let queued repaints land
        self.result.written[name] = save_png(widget or self.win, self.out / name, self.max_kb)
        self.result.sources[name] = Path(self.win.source["path"]).name

    def wait_shown(self, index: int) -> None:
        w = self.win
        _wait(lambda: w.index == index and w.predictions.cached(index) is not None
              and w._shown_frame == (w.frames.generation, index)
              and w.annotation.editor.frame == index, self.timeout, f"frame {index} with its prediction")

    def go(self, index: int) -> None:
        self.win.go_to(index)
        self.wait_shown(index)

    def key(self, key: Any, modifier: Any = None) -> None:
        """A real key press on the canvas, reaching the window-wide shortcuts."""
        from PySide6.QtCore import Qt
        from PySide6.QtTest import QTest

        QTest.keyClick(self.win.canvas.viewport(), key, modifier or Qt.KeyboardModifier.NoModifier)
        _pump(30)

    def drag(self, pts: list[tuple[float, float]], right: bool = False) -> None:
        """Press, move through ``pts`` (image pixels) and release, with real mouse events."""
        from PySide6.QtCore import QPointF, Qt
        from PySide6.QtTest import QTest

        vp, canvas = self.win.canvas.viewport(), self.win.canvas
        button = Qt.MouseButton.RightButton if right else Qt.MouseButton.LeftButton
        pos = [canvas.mapFromScene(QPointF(x, y)) for x, y in pts]
        QTest.mousePress(vp, button, Qt.KeyboardModifier.NoModifier, pos[0])
        for p in pos[1:]:
            QTest.mouseMove(vp, p)
        QTest.mouseRelease(vp, button, Qt.KeyboardModifier.NoModifier, pos[-1])
        _pump(150)  # the window re-scores edited frames on a short timer

    # -- steps --
    def open(self) -> None:
        from polypviewer.ui.app import make_app
        from polypviewer.ui.main_window import MainWindow

        make_app()
        win = self.win = MainWindow(load_default_model=False)
        win.resize(1440, 900)
        win.show()
        if self.predictor is not None:
            win.load_model(predictor=self.predictor)
        elif self.weights:
            win.load_model(None, self.weights)
        else:
            self.result.notes.append("no trained weights found: lite_pranet with random weights (masks are noise)")
            win.load_model("lite_pranet", allow_random=True)
        _wait(lambda: not win.predictions.loading_model, self.timeout, "the model to load")
        if win.predictions.info is None:
            raise RuntimeError(f"the model did not load: {win.errors[-1] if win.errors else 'no reason given'}")
        if VERBOSE:
            print(f"model: {win.predictions.info}", file=sys.stderr)

    def open_source(self, path: Path) -> None:
        win = self.win
        win.open_path(path)
        _wait(lambda: win.source is not None and Path(win.source["path"]).resolve() == path.resolve(),
              self.timeout, f"{path} to open")
        self.wait_shown(0)

    def step_through(self) -> None:
        from PySide6.QtCore import Qt

        for i in range(1, min(self.frames, self.win.n)):
            self.key(Qt.Key.Key_Right)
            self.wait_shown(i)
        self.shot("01-window.png")

    def outline_threshold(self) -> None:
        from PySide6.QtCore import Qt

        self.key(Qt.Key.Key_O)  # outline mode
        for _ in range(2):
            self.key(Qt.Key.Key_Up, Qt.KeyboardModifier.ControlModifier)  # threshold +0.05 each
        self.wait_shown(self.win.index)
        _pump(400)  # the window re-scores the other frames once the threshold rests (150 ms)
        self.shot("02-outline-threshold.png")
        self.key(Qt.Key.Key_O)
        for _ in range(2):
            self.key(Qt.Key.Key_Down, Qt.KeyboardModifier.ControlModifier)

    def worst_frame(self) -> None:
        from PySide6.QtCore import Qt

        w = self.win
        last = w.n if self.full_timeline else min(self.frames, w.n)
        if self.full_timeline:
            self.key(Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)  # predict the whole source
        _wait(lambda: all(w.predictions.cached(i) is not None for i in range(last)), self.timeout,
              f"predictions of frames 0..{last - 1}")
        _wait(lambda: all(i in w.review.scores.area for i in range(last))
              or w.timeline.next_worst(w.index, 1) is not None, self.timeout, "the timeline to fill")
        self.key(Qt.Key.Key_Home)
        self.wait_shown(0)
        self.key(Qt.Key.Key_W)  # next worst frame
        _wait(lambda: w.predictions.cached(w.index) is not None and w._shown_frame == (w.frames.generation, w.index),
              self.timeout, "the worst frame")
        self.worst = w.index
        self.key(Qt.Key.Key_D)  # disagreement colours
        self.wait_shown(self.worst)
        self.shot("03-worst-disagreement.png")
        self.key(Qt.Key.Key_D)

    def correct(self) -> None:
        import numpy as np
        from PySide6.QtCore import QPointF, Qt
        from PySide6.QtTest import QTest

        from polypviewer.core.masks import largest_component

        w, ed = self.win, self.win.annotation
        target = 1 if self.worst == 0 else self.worst
        self.go(target)
        h, wd = w.frames.get(target).frame.shape[:2]
        gt = w.frames.get(target).gt
        # Paint where the ground truth says polyp when there is one (a plausible correction).
        if gt is not None and gt.any():
            ys, xs = np.nonzero(gt)
            cy, cx, ry, rx = ys.mean(), xs.mean(), max(4, np.ptp(ys) / 3), max(4, np.ptp(xs) / 3)
        else:
            cy, cx, ry, rx = h * 0.5, wd * 0.5, h * 0.08, wd * 0.08
        self.key(Qt.Key.Key_B)
        self.drag([(cx - rx, cy - ry), (cx, cy), (cx + rx, cy + ry * 0.5), (cx + rx * 0.5, cy + ry)])
        # A polygon by four clicks, closed with Enter: a diamond inside the polyp.
        self.key(Qt.Key.Key_P)
        for px, py in ((cx, cy - 1.4 * ry), (cx + 1.4 * rx, cy), (cx, cy + 1.4 * ry), (cx - 1.4 * rx, cy)):
            self.drag([(px, py)])
        self.key(Qt.Key.Key_Return)
        # Erase across the model's largest false-positive blob (prediction outside the truth).
        fp = w.predictions.cached(target) >= w.threshold
        if gt is not None:
            fp &= ~gt
        if fp.any():
            ys, xs = np.nonzero(largest_component(fp))
            self.key(Qt.Key.Key_E)
            self.drag([(float(x) + 0.5, float(y) + 0.5) for x, y in
                       zip(np.linspace(xs.min(), xs.max(), 6), np.linspace(ys.mean(), ys.mean(), 6), strict=True)])
        self.key(Qt.Key.Key_B)
        # hover so the brush outline shows in the shot
        QTest.mouseMove(w.canvas.viewport(), w.canvas.mapFromScene(QPointF(cx + rx * 1.6, cy - ry * 1.2)))
        _wait(lambda: ed.session.get(target) is not None, self.timeout, "the corrected frame")
        self.corrected = target
        self.shot("04-correct-brush.png")

    def review_states(self) -> None:
        from PySide6.QtCore import Qt

        w, ed = self.win, self.win.annotation
        from polypviewer.core.edits import ReviewState

        accepted = [f for f in range(w.n) if f != self.corrected][:self.accept]
        for f in accepted:
            self.go(f)
            self.key(Qt.Key.Key_A)
        flag = next(f for f in range(w.n - 1, -1, -1) if f not in accepted and f != self.corrected)
        if self.full_timeline:
            self.go(flag)
            self.key(Qt.Key.Key_X)
        self.go(self.corrected)
        got = {f: ed.session.state(f) for f in accepted + [self.corrected]}
        if any(s != ReviewState.ACCEPTED for f, s in got.items() if f in accepted) \
                or got[self.corrected] != ReviewState.CORRECTED:
            raise RuntimeError(f"review states not as expected: {got}")
        self.key(Qt.Key.Key_S, Qt.KeyboardModifier.ControlModifier)  # fold the journal into the file
        self.shot("05-review-states.png")

    def export(self) -> None:
        ed = self.win.annotation
        dlg = ed.open_export_dialog()
        # the folder is named after the source, as a reviewer would name it
        out = self.result.export = self.work / "export" / f"{Path(self.win.source['path']).stem}-kvasir"
        dlg.out_edit.setText(str(out))
        done: list[Any] = []
        dlg.exported.connect(done.append)
        dlg.export_failed.connect(lambda m: done.append(RuntimeError(m)))
        if not dlg.start():
            raise RuntimeError(f"export did not start: {dlg.status.text()}")
        _wait(lambda: bool(done), self.timeout, "the export")
        if isinstance(done[0], Exception):
            raise done[0]
        self.shot("06-export-dialog.png", dlg)
        dlg.close()

    def finetune(self) -> None:
        ed = self.win.annotation
        dlg = ed.open_finetune_dialog()
        if self.finetune_base:
            dlg.base_edit.setText(self.finetune_base)
        if not dlg.base_edit.text():
            raise RuntimeError("fine-tune: no base checkpoint (load weights first)")
        dlg.out_edit.setText(str(self.work / "finetuned.safetensors"))
        dlg.holdout.setValue(0.34)
        dlg.epochs.setValue(max(1, self.finetune_steps))
        dlg.max_steps.setValue(self.finetune_steps)
        if self.finetune_size:
            dlg.input_size.setValue(self.finetune_size)
        done: list[Any] = []
        dlg.finished_run.connect(done.append)
        dlg.run_failed.connect(lambda m: done.append(RuntimeError(m)))
        if not dlg.start():
            raise RuntimeError(f"fine-tune did not start: {dlg.status.text()}")
        _wait(lambda: bool(done), self.timeout * 3, "the fine-tune run")
        if isinstance(done[0], Exception) or done[0] is None:
            raise RuntimeError(f"fine-tune failed: {done[0] or dlg.status.text()}")
        self.shot("07-finetune-dialog.png", dlg)
        dlg.close()

    def uncertainty(self) -> None:
        from PySide6.QtCore import Qt

        w = self.win
        w.activateWindow()  # a dialog closed just before (fine-tune): the window-wide shortcuts need it active
        _pump(60)
        last = w.n if self.full_timeline else min(self.frames, w.n)
        if self.full_timeline and not all(w.predictions.cached(i) is not None for i in range(last)):
            self.key(Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)  # rank the whole source
        _wait(lambda: all(w.predictions.cached(i) is not None for i in range(last))
              and all(i in w.uncertainties() for i in range(last)), self.timeout,
              f"the uncertainty of frames 0..{last - 1}")
        self.key(Qt.Key.Key_Home)
        self.wait_shown(0)
        self.key(Qt.Key.Key_J)  # the most uncertain unreviewed frame
        _wait(lambda: w.predictions.cached(w.index) is not None and w._shown_frame == (w.frames.generation, w.index),
              self.timeout, "the most uncertain frame")
        if self.full_timeline and w._uncertain_target is None:
            raise RuntimeError("J found no unreviewed frame to go to")
        self.shot("08-uncertainty.png")

    def drag_box(self, start: int) -> int:
        """Select the Box tool (S) on the first unreviewed, unedited frame from ``start`` on whose
        ground truth has a polyp, drag a box around that polyp (its extent and a 6 % margin, as
        a reviewer would) and wait for LiteMedSAM's mask; returns the frame (still in Box)."""
        import numpy as np
        from PySide6.QtCore import Qt

        from polypviewer.core.edits import ReviewState

        w, ed = self.win, self.win.annotation
        # The screenshot's LiteMedSAM runs on PyTorch: the app's default (OpenVINO when it agrees)
        # converts the encoder on first use, minutes on a loaded CPU, into the temporary cache.
        ed.prompts.worker.backend = "torch"
        target = None
        for f in list(range(start, w.n)) + list(range(start)):  # from ``start`` on
            if ed.session.get(f) is not None or ed.session.state(f) != ReviewState.UNREVIEWED:
                continue
            self.go(f)
            gt = w.frames.get(f).gt
            if gt is not None and gt.any():
                target = f
                break
        if target is None:
            raise RuntimeError("Box tool: no unreviewed frame with a polyp in its ground truth")
        self.key(Qt.Key.Key_S)  # the Box tool: embeds the shown frame (and the next) in the background
        _wait(lambda: target in ed.prompts.embedded_frames, self.timeout * 3, "LiteMedSAM's embedding")
        ys, xs = np.nonzero(w.frames.get(target).gt)
        mx, my = 0.06 * (np.ptp(xs) + 1), 0.06 * (np.ptp(ys) + 1)
        x0, y0, x1, y1 = xs.min() - mx, ys.min() - my, xs.max() + 1 + mx, ys.max() + 1 + my
        self.drag([(x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2), (x1, y1)])
        _wait(lambda: ed.session.state(target) == ReviewState.CORRECTED, self.timeout, "the box's mask")
        return target

    def box_tool(self) -> None:
        from PySide6.QtCore import Qt

        ed = self.win.annotation
        target = self.result.boxed = self.drag_box(self.win.index)  # from the shown frame (J's) on
        self.result.box_pixels = int(ed.session.mask(target).sum())
        _pump(400)  # the window re-scores the edited frame and the panel follows on a short timer
        self.shot("09-box-tool.png")
        self.key(Qt.Key.Key_Escape)  # back to Navigate

    def propagate(self) -> None:
        from PySide6.QtCore import Qt

        w, prop = self.win, self.win.annotation.propagation
        self.open_source(CLIP)  # propagation carries a mask through a video
        start = self.result.propagate_from = self.drag_box(0)
        self.key(Qt.Key.Key_Escape)  # back to Navigate
        ctrl_shift = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
        self.key(Qt.Key.Key_Right, ctrl_shift)  # Propagate forward from this frame
        if prop.running is None and not prop.done_frames:
            raise RuntimeError(f"propagation from frame {start} did not start: "
                               f"{w.errors[-1] if w.errors else 'no reason given'}")
        _wait(lambda: prop.running is None or len(prop.done_frames) >= self.propagate_frames, self.timeout * 3,
              f"{self.propagate_frames} propagated frames")
        self.key(Qt.Key.Key_Down, ctrl_shift)  # Stop propagation
        _wait(lambda: prop.running is None, self.timeout, "the propagation to stop")
        self.result.propagated = sorted(prop.propagated_drift())
        if not self.result.propagated:
            raise RuntimeError(f"propagation made no frame ({prop.last_stop})")
        self.key(Qt.Key.Key_J, Qt.KeyboardModifier.ShiftModifier)  # the worst drift
        _wait(lambda: w.index in prop.done_frames and w._shown_frame == (w.frames.generation, w.index)
              and w.annotation.editor.frame == w.index and w.predictions.cached(w.index) is not None,
              self.timeout, "the frame with the worst drift and the model's prediction of it")
        _pump(400)  # the metrics panel follows the prediction on a short timer
        self.shot("10-propagate.png")

    def run(self, keymap_only: bool = False) -> Result:
        try:
            self.open()
            if keymap_only:
                return self.result
            steps = [self.step_through, self.outline_threshold, self.worst_frame, self.correct,
                     self.review_states, self.export, self.finetune]
            wanted = [i for i, name in enumerate(CHAIN) if name in self.only]
            if wanted or self.only & {"08-uncertainty.png", "09-box-tool.png"}:
                self.open_source(POLYPGEN)
            for step in steps[: max(wanted) + 1 if wanted else 0]:
                step()
            if "08-uncertainty.png" in self.only:
                self.uncertainty()
            if "09-box-tool.png" in self.only:
                self.box_tool()
            if "10-propagate.png" in self.only:
                self.propagate()
            return self.result
        finally:
            if self.win is not None and not keymap_only:
                self.win.shutdown()
                self.win.close()


def make_screenshots(out: Path, *, frames: int = 6, predictor: Any = None, weights: str | None = None,
                     timeout: float = 120.0, max_kb: int = 290, finetune_steps: int = 6,
                     finetune_size: int | None = None, full_timeline: bool = True,
                     finetune_base: str | None = None, accept: int = 6, work: Path | None = None,
                     only: list[str] | None = None, propagate_frames: int = 8) -> Result:
    """Run the whole tour; returns the written files. ``predictor`` (an engine Predictor)
    replaces the shipped model (tests use a tiny one); ``finetune_base`` the fine-tune dialog's
    base checkpoint (default: the weights the window runs); ``accept`` how many frames are
    marked accepted; ``full_timeline`` predicts the whole source (Ctrl+R) and flags its last frame;
    ``only`` the shots to write (default: all; the steps they need still run);
    ``propagate_frames`` after how many propagated frames the propagation shot stops the run."""
    if only is not None and (unknown := sorted(set(only) - set(SHOTS))):
        raise ValueError(f"unknown screenshot(s) {', '.join(unknown)}; known: {', '.join(SHOTS)}")
    work = Path(work or tempfile.mkdtemp(prefix="pv-docs-"))
    _isolate_user_dirs(work)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    weights = None if predictor is not None else _pick_weights(weights)
    tour = Tour(Path(out), work, frames=frames, timeout=timeout, max_kb=max_kb, predictor=predictor,
                weights=weights, finetune_steps=finetune_steps, finetune_size=finetune_size,
                full_timeline=full_timeline, finetune_base=finetune_base, accept=accept,
                only=None if only is None else set(only), propagate_frames=propagate_frames)
    return tour.run()


def window_keymap() -> str:
    """The keyboard map of a freshly built window, as a Markdown table."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    _isolate_user_dirs(Path(tempfile.mkdtemp(prefix="pv-docs-")))
    from polypviewer.ui.app import make_app
    from polypviewer.ui.main_window import MainWindow

    make_app()
    win = MainWindow(load_default_model=False)
    try:
        return keymap_markdown(win)
    finally:
        win.shutdown()
        win.close()


def guide_keymap(text: str) -> str:
    """The keymap table between the markers of the guide."""
    start, end = text.index(KEYMAP_BEGIN) + len(KEYMAP_BEGIN), text.index(KEYMAP_END)
    return text[start:end].strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images", help="where the PNGs go")
    p.add_argument("--weights", help="checkpoint to show (default: models/default.json's, else the newest)")
    p.add_argument("--frames", type=int, default=6, help="frames to step through before the first shot")
    p.add_argument("--finetune-steps", type=int, default=6, help="optimiser steps of the fine-tune shot")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per waited step")
    p.add_argument("--max-kb", type=int, default=200, help="largest PNG size")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=list(SHOTS),
                   help="write only these shots (default: all); the steps they depend on still run")
    p.add_argument("--keymap", action="store_true", help="print the keyboard map and exit")
    p.add_argument("--check-guide", action="store_true", help="exit 1 when docs/guide.md's keymap is stale")
    p.add_argument("--update-guide", action="store_true", help="rewrite the keymap table in docs/guide.md")
    args = p.parse_args(argv)
    if args.keymap or args.check_guide or args.update_guide:
        table = window_keymap()
        if args.keymap:
            print(table)
        if args.update_guide:
            text = GUIDE.read_text(encoding="utf-8")
            start, end = text.index(KEYMAP_BEGIN) + len(KEYMAP_BEGIN), text.index(KEYMAP_END)
            GUIDE.write_text(text[:start] + "\n" + table + "\n" + text[end:], encoding="utf-8")
        if args.check_guide and guide_keymap(GUIDE.read_text(encoding="utf-8")) != table:
            print("docs/guide.md: the keyboard map differs from the app's; run "
                  "`docs/screenshots.py --update-guide`", file=sys.stderr)
            return 1
        return 0
    t0 = time.monotonic()
    res = make_screenshots(args.out, frames=args.frames, weights=args.weights, timeout=args.timeout,
                           max_kb=args.max_kb, finetune_steps=args.finetune_steps, only=args.only)
    for name, path in res.written.items():
        print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
              f"{path.stat().st_size / 1024:.0f} KB — {SHOTS.get(name, '')}")
    for note in res.notes:
        print(f"note: {note}")
    print(f"{len(res.written)} screenshots in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
