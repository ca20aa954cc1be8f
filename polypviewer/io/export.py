"""Export frames and masks in Kvasir-SEG layout, and verify an export.

Layout written (and checked by :func:`verify_export`)::

    out_dir/images/<name>.png|.jpg     RGB frame
    out_dir/masks/<name>.png|.jpg      single channel, 0 = background, 255 = polyp
    out_dir/bboxes.json                {"<name>": {"height", "width", "bbox": [{"label": "polyp",
                                        "xmin", "ymin", "xmax", "ymax"}, ...]}}   (Kvasir-SEG's
                                        kavsir_bboxes.json format; one box per 8-connected
                                        region, inclusive pixel coordinates)
    out_dir/stats.csv                  optional per-frame columns (e.g. correction effort)

Every file is written by :mod:`polypviewer.core.fileio` (a temporary in its own folder,
fsynced, renamed into place), and an image and its mask as one pair: both are written in
full before either is moved into place, so a full disk or an interrupted export never leaves
a half-written file nor an image without its mask. A non-empty ``out_dir`` is refused
unless ``overwrite=True``; even then only the files being exported are replaced, nothing
else is deleted, and an existing ``bboxes.json`` / ``stats.csv`` is merged, not dropped (an
unreadable one is refused, not replaced). Symbolic links in the export folder
(``images/``, ``masks/``, ``bboxes.json``, ``stats.csv``, an image or a mask) are never
read or written through: the export, or that item, is refused in one line.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from polypviewer.core.errors import PolypviewerError
from polypviewer.core.fileio import (
    TMP_PREFIX,
    atomic_write,
    atomic_write_all,
    describe_exception,
    remove_stale_temporaries,
)
from polypviewer.core.masks import bboxes as mask_bboxes
from polypviewer.core.masks import binarise, to_mask8
from polypviewer.io.images import (
    decode_file,
    encode_image,
    ensure_rgb8,
    first_by_stem,
    is_image_file,
    natural_key,
)

if TYPE_CHECKING:
    from polypviewer.io.sources import FrameSource

__all__ = ["ExportError", "ExportReport", "SourceItems", "VerifyReport", "check_destination", "export_kvasir",
           "verify_export", "kvasir_bbox_entry"]

_FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg"}
_BAD_NAME = re.compile(r'[\x00-\x1f<>:"/\\|?*]')


class ExportError(PolypviewerError):
    """The export as a whole cannot go ahead (e.g. the folder is not empty)."""


@dataclass
class VerifyReport:
    """What :func:`verify_export` found. ``summary`` is one line for the user."""

    out_dir: Path
    pairs: int = 0
    problems: list[str] = field(default_factory=list)
    lossy_masks: int = 0  # JPEG masks (valid, but only binary after thresholding at 127)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        if self.ok:
            kind = "JPEG (lossy, binarise > 127)" if self.lossy_masks else "0/255 PNG"
            return (f"verified {self.out_dir}: {self.pairs} image/mask pairs with identical names, "
                    f"masks single-channel {kind}, sizes match, bboxes.json consistent")
        return (f"verification of {self.out_dir} found {len(self.problems)} problem(s); "
                f"first: {self.problems[0]}")


@dataclass
class ExportReport:
    """What :func:`export_kvasir` did: names written, one line per failed item, verification."""

    out_dir: Path
    written: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    verify: VerifyReport | None = None
    jpeg_changed_pixels: int = 0  # mask pixels whose class JPEG compression flipped

    @property
    def ok(self) -> bool:
        return not self.errors and (self.verify is None or self.verify.ok)

    @property
    def summary(self) -> str:
        total = len(self.written) + len(self.errors)
        line = f"exported {len(self.written)} of {total} item(s) to {self.out_dir}"
        if self.errors:
            line += f" ({len(self.errors)} failed)"
        if self.jpeg_changed_pixels:
            line += f"; JPEG masks changed {self.jpeg_changed_pixels} pixel(s) after > 127 thresholding"
        if self.verify is not None:
            line += "; " + self.verify.summary
        return line


def kvasir_bbox_entry(mask: np.ndarray) -> dict[str, Any]:
    """The ``bboxes.json`` entry for one mask (Kvasir-SEG's format)."""
    m = np.asarray(mask, dtype=bool)
    boxes = [{"label": "polyp", "xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}
             for x0, y0, x1, y1 in mask_bboxes(m)]
    return {"height": int(m.shape[0]), "width": int(m.shape[1]), "bbox": boxes}


class SourceItems:
    """Iterate ``(name, frame, mask)`` over ``indices`` of a frame source, for export.

    Unlike a generator it survives a bad item: ``next()`` raises that item's error and the
    following call moves on to the next index, so the exporter can name it and go on.
    ``masks`` overrides the source's ground truth per index (e.g. corrected masks).
    """

    def __init__(self, source: FrameSource, indices: Sequence[int] | None = None, *,
                 masks: Mapping[int, np.ndarray] | None = None, require_mask: bool = True) -> None:
        self.source = source
        self.indices = list(range(len(source)) if indices is None else indices)
        self.masks = masks or {}
        self.require_mask = require_mask
        self._pos = 0

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        return self

    def __len__(self) -> int:
        return len(self.indices)

    def __next__(self) -> tuple[str, np.ndarray, np.ndarray | None]:
        if self._pos >= len(self.indices):
            raise StopIteration
        i = self.indices[self._pos]
        self._pos += 1
        name = self.source.name(i)
        frame = self.source.frame(i)
        mask = self.masks.get(i)
        if mask is None:
            mask = self.source.mask(i)
        if mask is None and self.require_mask:
            raise ExportError(f"frame {name} has no mask to export", self.source.path)
        return name, frame, mask


def _check_name(name: str) -> str:
    name = str(name)
    if not name or name in (".", "..") or name.startswith(".") or _BAD_NAME.search(name) or name != name.strip():
        raise ExportError("invalid item name for a file (empty, hidden, or has / \\ : * ? \" < > |)", repr(name))
    return name


def check_destination(out_dir: Path) -> None:
    """Raise :class:`ExportError` unless ``out_dir`` is absent or an empty folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError("export destination exists and is not a folder", out_dir)
    if out_dir.is_dir() and any(not p.name.startswith(TMP_PREFIX) for p in out_dir.iterdir()):
        raise ExportError("export folder is not empty; choose an empty folder or allow overwriting", out_dir)


def _refuse_links(out_dir: Path) -> None:
    """The export writes into these; a link would send the writes (and the merge's reads)
    somewhere else, so it is refused before anything is written."""
    for p in (out_dir / "images", out_dir / "masks", out_dir / "bboxes.json", out_dir / "stats.csv"):
        if p.is_symlink():
            raise ExportError("is a symbolic link; an export never reads or writes through links "
                              "(replace it with a real folder or file, or choose another folder)", p)


def _read_json(path: Path) -> dict[str, Any]:
    """An existing ``bboxes.json`` to merge into ({} when there is none); refused when it
    cannot be read, so a file the user may have edited is never replaced by a fresh one."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ExportError(f"cannot merge into it ({describe_exception(exc)}); "
                          "fix or move it, or choose another folder", path) from None
    if not isinstance(data, dict):
        raise ExportError("cannot merge into it (not a JSON object of per-image entries); "
                          "fix or move it, or choose another folder", path)
    return data


def _read_csv(path: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """An existing ``stats.csv``'s columns and rows by name; refused when unreadable."""
    if not path.exists():
        return [], {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [c for c in (reader.fieldnames or []) if c != "name"]
            return columns, {r["name"]: r for r in reader if r.get("name")}
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ExportError(f"cannot merge into it ({describe_exception(exc)}); "
                          "fix or move it, or choose another folder", path) from None


def _write_json(path: Path, data: dict[str, Any], entries: dict[str, Any]) -> None:
    data = {**data, **entries}
    ordered = {k: data[k] for k in sorted(data, key=natural_key)}
    atomic_write(path, json.dumps(ordered, indent=1) + "\n")


def _write_csv(path: Path, old: tuple[list[str], dict[str, dict[str, Any]]],
               rows: dict[str, dict[str, Any]]) -> None:
    columns, existing = list(old[0]), dict(old[1])
    for row in rows.values():
        columns += [str(k) for k in row if str(k) not in columns and k != "name"]
    existing.update(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["name", *columns], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for name in sorted(existing, key=natural_key):
        writer.writerow({"name": name, **{str(k): v for k, v in existing[name].items()}})
    atomic_write(path, buf.getvalue())


def export_kvasir(
    out_dir: str | Path,
    items: Iterable[tuple[str, np.ndarray, np.ndarray]],
    *,
    mask_format: str = "png",
    image_format: str = "png",
    overwrite: bool = False,
    stats: Mapping[str, Mapping[str, object]] | None = None,
    jpeg_quality: int = 95,
    verify: bool = True,
    on_progress: Callable[[int, str], None] | None = None,
) -> ExportReport:
    """Write ``items`` = ``(name, image_rgb, mask)`` in Kvasir-SEG layout under ``out_dir``.

    ``image_rgb`` is ``(H, W, 3) uint8`` RGB (grey / RGBA / 16-bit are converted); ``mask``
    anything :func:`~polypviewer.core.masks.binarise` accepts, of the image's size.
    ``mask_format`` / ``image_format``: ``"png"`` (default, lossless) or ``"jpg"`` (like the
    original Kvasir-SEG; JPEG masks are single channel but lossy). ``stats`` adds columns to
    ``stats.csv`` per name. A bad item is one line in ``report.errors`` and the export goes
    on; a non-empty ``out_dir`` raises :class:`ExportError` unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    try:
        mask_ext, image_ext = _FORMATS[mask_format.lower()], _FORMATS[image_format.lower()]
    except KeyError:
        raise ExportError(f"unknown format (mask {mask_format!r}, image {image_format!r}); use png or jpg") from None
    if not overwrite:
        check_destination(out_dir)
    _refuse_links(out_dir)
    old_boxes = _read_json(out_dir / "bboxes.json")
    old_stats = _read_csv(out_dir / "stats.csv") if stats else ([], {})
    img_dir, mask_dir = out_dir / "images", out_dir / "masks"
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create export folder ({exc.strerror or exc})", out_dir) from None
    for folder in (out_dir, img_dir, mask_dir):
        remove_stale_temporaries(folder)

    report = ExportReport(out_dir)
    boxes: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    it = iter(items)
    while True:
        try:
            name, image, mask = next(it)
        except StopIteration:
            break
        except (PolypviewerError, OSError, ValueError) as exc:
            report.errors.append(str(exc))
            continue
        try:
            name = _check_name(name)
            if name in seen:
                raise ExportError("duplicate name in this export; item skipped", name)
            if mask is None:
                raise ExportError("no mask to export", name)
            rgb = ensure_rgb8(image)
            m = binarise(mask)
            if m.shape != rgb.shape[:2]:
                raise ExportError(f"mask size {m.shape[1]}x{m.shape[0]} differs from image size "
                                  f"{rgb.shape[1]}x{rgb.shape[0]}", name)
            mask_bytes = encode_image(to_mask8(m), mask_ext, jpeg_quality=100)
            if mask_ext == ".jpg":
                # What a reader will get back (> 127) is what bboxes.json must describe.
                decoded = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
                if decoded is None:
                    raise ExportError("the JPEG mask just encoded cannot be decoded back", name)
                back = binarise(decoded)
                report.jpeg_changed_pixels += int(np.count_nonzero(back != m))
                m = back
            # One pair: both in full before either is in place (a full disk leaves neither).
            atomic_write_all([(img_dir / (name + image_ext), encode_image(rgb, image_ext, jpeg_quality=jpeg_quality)),
                              (mask_dir / (name + mask_ext), mask_bytes)], overwrite=overwrite)
        except (PolypviewerError, OSError, ValueError, TypeError) as exc:
            msg = str(exc)
            report.errors.append(msg if isinstance(exc, PolypviewerError) else f"{name}: {msg}")
            continue
        seen.add(name)
        boxes[name] = kvasir_bbox_entry(m)
        report.written.append(name)
        if on_progress is not None:
            on_progress(len(report.written), name)

    # A failure here (full disk) is an OutputError naming the file; every pair written is whole.
    if boxes or not (out_dir / "bboxes.json").exists():
        _write_json(out_dir / "bboxes.json", old_boxes, boxes)
    if stats:
        _write_csv(out_dir / "stats.csv", old_stats, {n: dict(stats[n]) for n in report.written if n in stats})
    if verify:
        report.verify = verify_export(out_dir)
    return report


def _pair(folder: Path, problems: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if not folder.is_dir():
        problems.append(f"{folder}: missing")
        return out
    files = sorted((p for p in folder.iterdir() if p.is_file() and is_image_file(p)),
                   key=lambda p: natural_key(p.name))
    return first_by_stem(files, problems)


def verify_export(out_dir: str | Path) -> VerifyReport:
    """Re-read an export and check it: every image has a mask of the same name and vice
    versa, masks are single-channel 8-bit and binary (0/255; JPEG masks are accepted as
    lossy), sizes match, and ``bboxes.json`` has the right size and boxes for every pair."""
    out_dir = Path(out_dir)
    report = VerifyReport(out_dir)
    problems = report.problems
    images = _pair(out_dir / "images", problems)
    masks = _pair(out_dir / "masks", problems)
    for stem in images.keys() - masks.keys():
        problems.append(f"{images[stem]}: no mask with the same name")
    for stem in masks.keys() - images.keys():
        problems.append(f"{masks[stem]}: mask without an image")
    box_file = out_dir / "bboxes.json"
    try:
        boxes = json.loads(box_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        boxes = None
        problems.append(f"{box_file}: missing")
    except (OSError, ValueError) as exc:
        boxes = None
        problems.append(f"{box_file}: unreadable ({exc})")
    for stem in sorted(images.keys() & masks.keys(), key=natural_key):
        mpath = masks[stem]
        try:
            img = decode_file(images[stem])
            raw = decode_file(mpath)
        except PolypviewerError as exc:
            problems.append(str(exc))
            continue
        if raw.ndim != 2:
            problems.append(f"{mpath}: mask has {raw.shape[2]} channels, expected 1")
            continue
        if raw.dtype != np.uint8:
            problems.append(f"{mpath}: mask is {raw.dtype}, expected 8-bit")
            continue
        if mpath.suffix.lower() in (".jpg", ".jpeg"):
            report.lossy_masks += 1
        elif np.count_nonzero((raw != 0) & (raw != 255)):
            problems.append(f"{mpath}: mask is not binary (values other than 0 and 255)")
            continue
        if raw.shape != img.shape[:2]:
            problems.append(f"{mpath}: mask size {raw.shape[1]}x{raw.shape[0]} differs from image size "
                            f"{img.shape[1]}x{img.shape[0]}")
            continue
        if boxes is not None:
            expected = kvasir_bbox_entry(binarise(raw))
            if boxes.get(stem) != expected:
                problems.append(f"{box_file}: entry for {stem} missing or does not match its mask")
                continue
        report.pairs += 1
    return report
