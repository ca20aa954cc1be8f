"""Prompted segmentation with LiteMedSAM: a frame's embedding once, then a mask per box or click.

``PromptSegmenter.embed(frame)`` runs the image encoder (the expensive part) and returns an
:class:`Embedding`; ``segment(embedding, box=...)`` or ``segment(embedding, point=...)`` runs
the prompt encoder and mask decoder and returns a boolean mask at the frame's own size. The
preprocessing is MedSAM-Lite's reference one (``CVPR24_LiteMedSAM_infer.py``): the long side
resized to 256 with ``cv2.INTER_AREA`` (the other rounded), min-max normalised over the whole
resized image, zero-padded bottom/right to 256x256; prompts are scaled by the same factor; the
256x256 logits are cropped to the unpadded part, resized bilinearly to the frame and
thresholded at probability 0.5. :class:`EmbeddingCache` keeps embeddings per key (a frame)
within a byte bound, thread-safe, so a prompt on a cached frame runs only the decoder.

On OpenVINO each part (the image encoder, the one-box decoder) runs in fp32 or, on a CPU that
computes bf16 natively, bf16, chosen by ``backend="auto"`` only when it **agrees with fp32**
(:data:`PRECISION_AGREEMENT`: on jittered ground-truth boxes of the shipped PolypGen frames,
mean Dice against the fp32 masks > 0.98 and the ground-truth Dice lower by less than 0.005;
:func:`check_precision`, :func:`choose_precisions`). The choice is measured once per machine,
engine version and weights and cached under ``cache_dir()/engine-choice``.

A click becomes a prompt in one of two ways (:func:`click_box` and ``point=``); which one the
app uses is :data:`CLICK_MODE`, chosen by ``benchmarks/bench_medsam.py --select-click`` on
training frames (never the test splits).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from polypviewer.core import masks as core_masks
from polypviewer.core.errors import PolypviewerError

__all__ = ["Embedding", "PromptSegmenter", "EmbeddingCache", "PromptError", "Box", "preprocess", "merge",
           "MERGE_MODES", "frame_prompt", "scale_box", "click_box", "jitter_box", "region_boxes", "OpenVINOPart",
           "CLICK_MODE",
           "CLICK_MARGIN", "DEFAULT_CACHE_BYTES", "PRECISION_AGREEMENT", "PrecisionCheck", "check_precision",
           "choose_precisions", "CANDIDATES", "upsample_logits"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels (inclusive corners)
SIZE = 256
DEFAULT_CACHE_BYTES = 256 << 20  # 64 embeddings of 4 MiB
# How a click becomes a prompt: "box" = the box of the default model's region under the click
# (or nearest to it) widened by CLICK_MARGIN of its size; "point" = a foreground point prompt.
# Chosen on Kvasir-SEG / CVC-ClinicDB train frames by benchmarks/bench_medsam.py --select-click.
CLICK_MODE = "box"
CLICK_MARGIN = 0.1
MIN_REGION = 16  # px: a ground-truth region smaller than this gets no box (Kvasir's stray corner pixel)
# The bar a lower precision must meet against fp32 to be chosen by ``auto`` (the same rule the
# benchmark applies on Kvasir-SEG TRAIN frames): mean per-frame Dice of its masks against the
# fp32 masks above ``dice_vs_fp32``, and the mean ground-truth Dice lower by less than ``gt_dice_drop``.
PRECISION_AGREEMENT = {"dice_vs_fp32": 0.98, "gt_dice_drop": 0.005}
# (encoder, decoder) precisions ``auto`` may run, fastest first; fp32/fp32 is the reference.
CANDIDATES: tuple[tuple[str, str], ...] = (("bf16", "bf16"), ("bf16", "fp32"), ("fp32", "bf16"))
CHOICE_FOLDER = "engine-choice"


class PromptError(PolypviewerError):
    """A prompt that cannot be used (a box outside the frame, an empty box...)."""


@dataclass(frozen=True)
class Embedding:
    """One frame's image embedding and the geometry to map prompts and masks."""

    tensor: torch.Tensor  # (1, 256, 64, 64) float32
    size: tuple[int, int]  # the frame's (H, W)
    new_size: tuple[int, int]  # (h, w) of the resized frame inside the padded 256x256 input

    @property
    def scale(self) -> float:
        return SIZE / max(self.size)

    @property
    def nbytes(self) -> int:
        return int(self.tensor.numel() * self.tensor.element_size())


def preprocess(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB ``(H, W, 3)`` uint8 -> the ``(3, 256, 256)`` float32 input and the unpadded (h, w)."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] < 3 or img.shape[0] < 1 or img.shape[1] < 1:
        raise PromptError(f"expected an RGB frame (H, W, 3), got shape {img.shape}")
    img = img[:, :, :3]
    h, w = img.shape[:2]
    scale = SIZE / max(h, w)
    nw, nh = int(w * scale + 0.5), int(h * scale + 0.5)
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA).astype(np.float32)
    lo, hi = float(small.min()), float(small.max())
    small = (small - lo) / max(hi - lo, 1e-8)
    out = np.zeros((SIZE, SIZE, 3), np.float32)
    out[:nh, :nw] = small
    return np.ascontiguousarray(out.transpose(2, 0, 1)), (nh, nw)


def scale_box(box: Sequence[float], size: tuple[int, int]) -> Box:
    """A frame box checked against the frame (clipped to it; an empty or outside box is an error)."""
    if len(box) != 4:
        raise PromptError(f"a box has 4 numbers (x0, y0, x1, y1), got {len(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
        raise PromptError(f"box {list(box)} has a non-finite coordinate")
    h, w = size
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        raise PromptError(f"box {list(box)} lies outside the {w}x{h} frame")
    x0, y0 = max(x0, 0.0), max(y0, 0.0)
    x1, y1 = min(x1, w - 1.0), min(y1, h - 1.0)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise PromptError(f"box {list(box)} is smaller than 2x2 pixels inside the frame")
    return (x0, y0, x1, y1)


class _DecoderHead(torch.nn.Module):
    """Prompt encoder + mask decoder for one box: (embedding, box (1, 4) at 256 px) -> logits."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.model.decode(embedding, boxes=boxes)[0]  # type: ignore[no-any-return]


class OpenVINOPart:
    """A part of LiteMedSAM converted to OpenVINO, compiled in fp32 (the same numbers as torch)
    or bf16 (``precision``; judged by :func:`check_precision`, not here). The converted model
    (fp32 IR) is cached under ``cache_dir()/openvino`` keyed by the part, the weights' sha256 and
    OpenVINO's version; a fresh conversion is checked in fp32 against torch on fixed inputs and
    refused (a :class:`PromptError`; ``auto`` then runs torch) when it differs by more than
    :data:`AGREEMENT` (relative L2). Inputs are fixed-shape, so nothing recompiles per prompt."""

    AGREEMENT = 1e-3

    def __init__(self, part: str, module: Any, examples: tuple[torch.Tensor, ...], digest: str,
                 cache_root: Path | None = None, precision: str = "fp32") -> None:
        import openvino as ov

        from polypviewer.engine.backends.openvino import _save_ir, openvino_version

        if precision not in ("fp32", "bf16"):
            raise PromptError(f"unknown OpenVINO precision {precision!r}; choose fp32 or bf16")
        self.part = part
        core = ov.Core()
        xml = None
        model = None
        self._blobs: Path | None = None
        if cache_root is not None:
            folder = cache_root / "openvino"
            folder.mkdir(parents=True, exist_ok=True)
            self._blobs = folder / "blobs"
            xml = folder / f"litemedsam-{part}-{digest[:16]}-{SIZE}-fp32-ov{openvino_version()}.xml"
            if xml.exists() and xml.with_suffix(".bin").exists():
                try:
                    model = core.read_model(str(xml))
                except Exception:  # noqa: BLE001 - a damaged cache entry is converted again
                    model = None
        self.cache_hit = model is not None
        if model is None:
            with torch.no_grad():
                traced = torch.jit.trace(module.eval(), examples, check_trace=False, strict=False)
                model = ov.convert_model(traced, example_input=examples,
                                         input=[tuple(e.shape) for e in examples])
        self._core, self._model = core, model
        self.precision = "fp32"
        self._compile("fp32" if not self.cache_hit else precision)
        if not self.cache_hit:
            with torch.inference_mode():
                ref = module(*examples).numpy()
            got = self(*(e.numpy() for e in examples))
            err = float(np.linalg.norm(got - ref) / max(float(np.linalg.norm(ref)), 1e-12))
            if err > self.AGREEMENT:
                raise PromptError(f"OpenVINO's LiteMedSAM {part} differs from torch's (relative error {err:.2g})")
            if xml is not None:
                _save_ir(model, xml)
            if precision != "fp32":
                self._compile(precision)

    def _compile(self, precision: str) -> None:
        hint = {"fp32": "f32", "bf16": "bf16"}[precision]
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if self._blobs is not None:
            # One blob folder per precision: OpenVINO 2026.4's blob key leaves the precision
            # hint out, so a bf16 compile of this IR loaded the fp32 blob, and inference on it
            # crashed the process (a segmentation fault, measured on an AMX Xeon).
            config["CACHE_DIR"] = str(self._blobs / hint)
        self.compiled = self._core.compile_model(self._model, "CPU", config)
        self._request = self.compiled.create_infer_request()
        self.precision = precision

    def with_precision(self, precision: str) -> OpenVINOPart:
        """The same converted part compiled in ``precision`` (self when it already is)."""
        if precision == self.precision:
            return self
        other = object.__new__(OpenVINOPart)
        other.part, other.cache_hit, other._blobs = self.part, self.cache_hit, self._blobs
        other._core, other._model = self._core, self._model
        other._compile(precision)
        return other

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        self._request.infer({i: np.ascontiguousarray(x, dtype=np.float32) for i, x in enumerate(inputs)})
        return np.array(self._request.get_output_tensor(0).data, copy=True)


def _last_line(exc: BaseException) -> str:
    """OpenVINO's errors nest "Exception from <source file>" lines; the last line says why."""
    from polypviewer.core.errors import describe_exception

    lines = [line for line in str(exc).splitlines() if line.strip()]
    return describe_exception(type(exc)(lines[-1]) if lines else exc, limit=160)


def upsample_logits(low: np.ndarray, new_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """``(N, 256, 256)`` low-resolution logits -> ``(N, H, W)`` float32 at the frame's size: the
    unpadded ``new_size`` part resized bilinearly (half-pixel centres, as torch's
    ``interpolate(align_corners=False)``) with OpenCV, one map at a time."""
    nh, nw = new_size
    h, w = size
    out = np.empty((low.shape[0], h, w), np.float32)
    for i in range(low.shape[0]):
        out[i] = cv2.resize(np.ascontiguousarray(low[i, :nh, :nw], dtype=np.float32), (w, h),
                            interpolation=cv2.INTER_LINEAR)
    return out


class PromptSegmenter:
    """LiteMedSAM behind two calls: :meth:`embed` (per frame) and :meth:`segment` (per prompt).

    The image encoder and the one-box decoder run on OpenVINO when it is installed
    (``backend="auto"``: fp32, or bf16 for a part where it agrees with fp32, see
    :func:`choose_precisions`) or on torch (``backend="torch"``); point prompts run on torch.
    Thread-safe: one lock serialises the network."""

    def __init__(self, model: Any, *, device: str = "cpu", encoder: Any = None, decoder: Any = None) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.encoder = encoder  # an OpenVINOPart, or None: torch
        self.decoder = decoder  # an OpenVINOPart for one box, or None: torch
        self.backend = "openvino" if encoder is not None else "torch"
        self.precision = (getattr(encoder, "precision", "fp32"), getattr(decoder, "precision", "fp32"))
        self.why = ""
        self.check: dict[str, Any] | None = None  # the agreement measured for a lower precision
        self._lock = threading.Lock()

    @classmethod
    def create(cls, weights: str | None = None, *, device: str = "cpu", backend: str = "auto",
               precision: str = "auto", cache_root: Path | None = None,
               check_frames: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> PromptSegmenter:
        """The published LiteMedSAM weights (``nets.litemedsam.load_litemedsam``). ``backend``:
        ``auto`` (OpenVINO when it is installed and agrees, else torch), ``openvino`` (an error
        when it cannot) or ``torch``. ``precision`` (OpenVINO only): ``auto`` (bf16 for a part
        only where it agrees with fp32 on ``check_frames``, default the shipped PolypGen frames
        with their masks; measured once and cached), ``fp32`` or ``bf16`` (both parts, unchecked)."""
        from polypviewer.nets.litemedsam import WEIGHTS_SHA256, load_litemedsam

        if backend not in ("auto", "torch", "openvino"):
            raise PromptError(f"unknown backend {backend!r}; choose auto, torch or openvino")
        if precision not in ("auto", "fp32", "bf16"):
            raise PromptError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")
        model = load_litemedsam(weights)
        encoder, decoder, why = None, None, "torch: asked for"
        check = None
        if backend != "torch" and device == "cpu":
            try:
                from polypviewer.core.paths import cache_dir
                from polypviewer.nets.weights import sha256_file

                digest = WEIGHTS_SHA256 if weights is None else sha256_file(weights)
                root = cache_root or cache_dir()
                rng = np.random.default_rng(0)
                image = torch.from_numpy(rng.random((1, 3, SIZE, SIZE), dtype=np.float32))
                encoder = OpenVINOPart("encoder", model.image_encoder, (image,), digest, root)
                emb = torch.from_numpy(rng.standard_normal((1, 256, 64, 64), dtype=np.float32))
                box = torch.tensor([[40.0, 50.0, 180.0, 200.0]])
                decoder = OpenVINOPart("decoder", _DecoderHead(model), (emb, box), digest, root)
                hit = encoder.cache_hit and decoder.cache_hit
                how = "cached" if hit else "converted, checked"
            except Exception as exc:  # noqa: BLE001 - no or broken OpenVINO: torch runs the same network
                if backend == "openvino":
                    raise PromptError(f"OpenVINO cannot run LiteMedSAM's encoder ({' '.join(str(exc).split())})") \
                        from None
                encoder = decoder = None
                why = f"torch: OpenVINO unavailable ({type(exc).__name__})"
            else:
                pair, reason = ("fp32", "fp32"), "fp32 asked for"
                if precision == "bf16":
                    pair, reason = ("bf16", "bf16"), "bf16 asked for (not checked)"
                elif precision == "auto":
                    pair, reason, check = _auto_precisions(model, encoder, decoder, digest, root, check_frames)
                try:
                    encoder, decoder = encoder.with_precision(pair[0]), decoder.with_precision(pair[1])
                except Exception as exc:  # noqa: BLE001 - asked for a precision this CPU's OpenVINO cannot run
                    raise PromptError(f"OpenVINO cannot run LiteMedSAM in {pair[0]} here "
                                      f"({_last_line(exc)})") from None
                why = f"openvino: encoder {pair[0]}, decoder {pair[1]} ({how}; {reason})"
        seg = cls(model, device=device, encoder=encoder, decoder=decoder)
        seg.why = why
        seg.check = check
        return seg

    def embed(self, image: np.ndarray) -> Embedding:
        x, new_size = preprocess(image)
        h, w = np.asarray(image).shape[:2]
        with self._lock, torch.inference_mode():
            if self.encoder is not None:
                t = torch.from_numpy(self.encoder(x[None]))
            else:
                t = self.model.embed(torch.from_numpy(x)[None].to(self.device))
        return Embedding(t.float().cpu(), (int(h), int(w)), new_size)

    def low_logits(self, emb: Embedding, boxes: Sequence[Sequence[float]] | None = None,
                   point: tuple[float, float] | None = None) -> np.ndarray:
        """``(N, 256, 256)`` float32 logits at the network's resolution: one per box, or one for the point."""
        s = emb.scale
        with self._lock, torch.inference_mode():
            e = emb.tensor.to(self.device)
            if boxes is not None:
                b = np.asarray([scale_box(bx, emb.size) for bx in boxes], dtype=np.float32).reshape(-1, 4) * s
                if self.decoder is not None:  # one box per call (its input is (1, 4))
                    en = e.numpy()
                    return np.asarray(np.concatenate([self.decoder(en, b[i:i + 1]) for i in range(len(b))])[:, 0],
                                      dtype=np.float32)
                low, _ = self.model.decode(e, boxes=torch.from_numpy(b).to(self.device))
            elif point is not None:
                x, y = float(point[0]), float(point[1])
                h, w = emb.size
                if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                    raise PromptError(f"point ({x:g}, {y:g}) lies outside the {w}x{h} frame")
                coords = torch.tensor([[[x * s, y * s]]], dtype=torch.float32, device=self.device)
                labels = torch.ones((1, 1), dtype=torch.float32, device=self.device)
                low, _ = self.model.decode(e, points=(coords, labels))
            else:
                raise PromptError("a prompt needs a box or a point")
            return np.asarray(low[:, 0].float().cpu().numpy(), dtype=np.float32)

    def logits(self, emb: Embedding, boxes: Sequence[Sequence[float]] | None = None,
               point: tuple[float, float] | None = None) -> np.ndarray:
        """``(N, H, W)`` float32 logits at frame size: one per box, or one for the point."""
        return upsample_logits(self.low_logits(emb, boxes=boxes, point=point), emb.new_size, emb.size)

    def segment(self, emb: Embedding, box: Sequence[float] | None = None,
                point: tuple[float, float] | None = None) -> np.ndarray:
        """Boolean ``(H, W)`` mask for one box or one foreground point (probability > 0.5)."""
        lg = self.logits(emb, boxes=[box]) if box is not None else self.logits(emb, point=point)
        return np.asarray(lg[0] > 0)

    def segment_boxes(self, emb: Embedding, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """The union of the masks of several boxes on one frame."""
        if not boxes:
            return np.zeros(emb.size, bool)
        return np.asarray((self.logits(emb, boxes=boxes) > 0).any(axis=0))


# ---------------------------------------------------------------- lower precision, only where it agrees
@dataclass(frozen=True)
class PrecisionCheck:
    """How a (encoder, decoder) precision pair's masks compare with fp32's on the same prompts."""

    frames: int
    dice_vs_fp32: float  # mean per-frame Dice of its masks against the fp32 masks
    dice_vs_fp32_min: float
    gt_dice_fp32: float  # mean per-frame Dice against the ground truth, fp32
    gt_dice: float  # the same for this pair

    @property
    def gt_dice_drop(self) -> float:
        return self.gt_dice_fp32 - self.gt_dice

    @property
    def agrees(self) -> bool:
        """:data:`PRECISION_AGREEMENT`: Dice vs fp32 > 0.98 and ground-truth Dice drop < 0.005."""
        return (self.frames > 0 and self.dice_vs_fp32 > PRECISION_AGREEMENT["dice_vs_fp32"]
                and self.gt_dice_drop < PRECISION_AGREEMENT["gt_dice_drop"])

    def as_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "dice_vs_fp32": round(self.dice_vs_fp32, 5),
                "dice_vs_fp32_min": round(self.dice_vs_fp32_min, 5), "gt_dice_fp32": round(self.gt_dice_fp32, 5),
                "gt_dice": round(self.gt_dice, 5), "gt_dice_drop": round(self.gt_dice_drop, 5),
                "agrees": self.agrees}

    @classmethod
    def from_masks(cls, ref: Sequence[np.ndarray], got: Sequence[np.ndarray],
                   gts: Sequence[np.ndarray]) -> PrecisionCheck:
        from polypviewer.core.metrics import scores

        vs = [float(scores(g, r)["dice"]) for g, r in zip(got, ref, strict=True)]
        gr = [float(scores(r, t)["dice"]) for r, t in zip(ref, gts, strict=True)]
        gg = [float(scores(g, t)["dice"]) for g, t in zip(got, gts, strict=True)]
        if not vs:
            return cls(0, 0.0, 0.0, 0.0, 0.0)
        return cls(len(vs), float(np.mean(vs)), float(np.min(vs)), float(np.mean(gr)), float(np.mean(gg)))


def region_boxes(mask: np.ndarray, min_area: int = MIN_REGION) -> list[tuple[int, int, int, int]]:
    """One box (inclusive x0, y0, x1, y1) per 8-connected region of at least ``min_area`` px."""
    return core_masks.bboxes(np.asarray(mask, dtype=bool), min_area)


def check_precision(parts: dict[str, tuple[Any, Any]], frames: Sequence[tuple[np.ndarray, np.ndarray]],
                    *, jitter: float = 0.1, seed: int = 0) -> dict[tuple[str, str], PrecisionCheck]:
    """Score precision pairs against fp32 on real frames with their masks: every ground-truth
    region's box, jittered by ±``jitter`` of its size (numpy ``default_rng(seed)``, the same boxes
    for every pair), the union of its masks. ``parts``: precision -> (encoder, decoder)
    :class:`OpenVINOPart` (``"fp32"`` required); returns a check per pair of :data:`CANDIDATES`
    whose precisions are in ``parts``."""
    pairs = [c for c in CANDIDATES if c[0] in parts and c[1] in parts]
    rng = np.random.default_rng(seed)
    ref: list[np.ndarray] = []
    got: dict[tuple[str, str], list[np.ndarray]] = {c: [] for c in pairs}
    gts: list[np.ndarray] = []
    for image, gt in frames:
        gt = np.asarray(gt, dtype=bool)
        boxes = [jitter_box(b, jitter, rng, gt.shape) for b in region_boxes(gt)]
        if not boxes:
            continue
        x, new_size = preprocess(image)
        embs = {p: Embedding(torch.from_numpy(parts[p][0](x[None])), gt.shape, new_size)
                for p in {p for c in [("fp32", "fp32"), *pairs] for p in c[:1]}}

        def masks(enc: str, dec: str, embs: dict[str, Embedding] = embs, boxes: list[Box] = boxes) -> np.ndarray:
            seg = PromptSegmenter.__new__(PromptSegmenter)
            seg.decoder, seg._lock, seg.device = parts[dec][1], threading.Lock(), torch.device("cpu")
            return seg.segment_boxes(embs[enc], boxes)

        ref.append(masks("fp32", "fp32"))
        for c in pairs:
            got[c].append(masks(*c))
        gts.append(gt)
    return {c: PrecisionCheck.from_masks(ref, got[c], gts) for c in pairs}


def choose_precisions(checks: dict[tuple[str, str], PrecisionCheck]) -> tuple[tuple[str, str], str]:
    """The first of :data:`CANDIDATES` (fastest first) whose check agrees with fp32, else fp32
    for both; with the reason in words."""
    for c in CANDIDATES:
        chk = checks.get(c)
        if chk is not None and chk.agrees:
            return c, (f"agrees with fp32 on {chk.frames} frames: Dice {chk.dice_vs_fp32:.3f} vs fp32, "
                       f"ground-truth Dice {chk.gt_dice_drop:+.4f} lower")
    if not checks:
        return ("fp32", "fp32"), "no lower precision to check"
    return ("fp32", "fp32"), "no lower precision agrees with fp32 (" + "; ".join(
        f"{e}/{d}: Dice {k.dice_vs_fp32:.3f} vs fp32, ground truth {k.gt_dice_drop:+.4f} lower"
        for (e, d), k in checks.items()) + ")"


def shipped_check_frames() -> list[tuple[np.ndarray, np.ndarray]]:
    """The agreement frames: the PolypGen frames ``engine.selection.reference_frames`` scores
    (every third of the 24 shipped in ``resources/demo/polypgen``) with their expert masks."""
    from polypviewer.core.paths import resources_dir
    from polypviewer.io.sources import open_source

    folder = resources_dir() / "demo" / "polypgen"
    if not folder.is_dir():
        return []
    with open_source(folder) as src:
        return [(src.frame(i), np.asarray(src.mask(i), dtype=bool)) for i in range(len(src)) if i % 3 == 2]


def _auto_precisions(model: Any, encoder: OpenVINOPart, decoder: OpenVINOPart, digest: str, root: Path,
                     frames: Sequence[tuple[np.ndarray, np.ndarray]] | None
                     ) -> tuple[tuple[str, str], str, dict[str, Any] | None]:
    """``precision="auto"``: fp32 unless the CPU computes bf16 natively and a bf16 pair agrees
    with fp32 (:func:`choose_precisions`); measured once per machine, engine version and weights
    and cached as JSON under ``root/engine-choice``."""
    import datetime
    import json

    from polypviewer.core.fileio import atomic_write
    from polypviewer.engine.policy import cpu_has_native_bf16
    from polypviewer.engine.selection import machine

    if not cpu_has_native_bf16():
        return ("fp32", "fp32"), "this CPU has no native bf16", None
    here = machine()
    path = root / CHOICE_FOLDER / f"litemedsam-{digest[:16]}-{SIZE}-prompt.json"
    if frames is None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("machine") == here:
                pair = (str(data["encoder"]), str(data["decoder"]))
                if pair in CANDIDATES or pair == ("fp32", "fp32"):
                    return pair, str(data["why"]) + " (measured " + str(data.get("when", "")) + ")", data.get("checks")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable choice is measured again
        frames = shipped_check_frames()
        save = True
    else:
        save = False  # the caller's own frames: not the cached measurement
    if not frames:
        return ("fp32", "fp32"), "no frames to check a lower precision on", None
    try:
        low = (encoder.with_precision("bf16"), decoder.with_precision("bf16"))
    except Exception as exc:  # noqa: BLE001 - e.g. oneDNN capped below bf16: fp32 still runs
        return ("fp32", "fp32"), f"OpenVINO cannot compile bf16 here ({_last_line(exc)})", None
    parts = {"fp32": (encoder, decoder), "bf16": low}
    checks = check_precision(parts, frames)
    pair, why = choose_precisions(checks)
    report = {f"{e}/{d}": k.as_dict() for (e, d), k in checks.items()}
    if save:
        try:
            atomic_write(path, json.dumps({"encoder": pair[0], "decoder": pair[1], "why": why, "checks": report,
                                           "machine": here, "when": datetime.datetime.now(
                                               datetime.timezone.utc).isoformat(timespec="seconds")},
                                          indent=1) + "\n")
        except Exception:  # noqa: BLE001 - an unwritable cache only means measuring again next time
            pass
    return pair, why, report


def frame_prompt(seg: PromptSegmenter, cache: EmbeddingCache | None = None,
                 key: Callable[[int], Hashable] = lambda i: i
                 ) -> Callable[[int, np.ndarray, Sequence[float]], np.ndarray]:
    """``prompt(i, frame, box) -> mask`` for :class:`~polypviewer.engine.propagation.Propagation`:
    frame ``i`` is embedded once, however many of its regions prompt. With ``cache`` the
    embedding is looked up and kept there under ``key(i)`` (the window shares the Box tool's,
    so frames it embedded ahead are not embedded again, and propagated frames answer a box at
    once); without, only the last frame's embedding is kept."""
    last: list[tuple[Hashable, Embedding]] = []

    def prompt(i: int, frame: np.ndarray, box: Sequence[float]) -> np.ndarray:
        k = key(i)
        if not last or last[0][0] != k:
            emb = seg.embed(frame) if cache is None else cache.get_or_compute(k, lambda: seg.embed(frame))
            last[:] = [(k, emb)]
        return seg.segment(last[0][1], box=box)

    return prompt


class EmbeddingCache:
    """Embeddings by key (e.g. (source, frame)), least recently used first out, within ``max_bytes``.

    Thread-safe. :meth:`get_or_compute` computes outside the lock, so a slow embedding never
    blocks a reader of another key."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Hashable, Embedding] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    @property
    def nbytes(self) -> int:
        with self._lock:
            return self._bytes

    def get(self, key: Hashable) -> Embedding | None:
        with self._lock:
            emb = self._items.get(key)
            if emb is not None:
                self._items.move_to_end(key)
            return emb

    def put(self, key: Hashable, emb: Embedding) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if emb.nbytes > self.max_bytes:
                return
            self._items[key] = emb
            self._bytes += emb.nbytes
            while self._bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes

    def get_or_compute(self, key: Hashable, compute: Callable[[], Embedding]) -> Embedding:
        emb = self.get(key)
        if emb is None:
            emb = compute()
            self.put(key, emb)
        return emb

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def click_box(region_mask: np.ndarray | None, x: float, y: float, margin: float = CLICK_MARGIN,
              fallback: float = 0.15) -> Box:
    """The prompt box for a click at (x, y): the box of ``region_mask``'s region under the click
    (the nearest region when the click is on none) widened by ``margin`` of its size each side;
    with no region at all, a square of ``fallback`` of the frame's short side around the click."""
    if region_mask is None or not np.asarray(region_mask).any():
        if region_mask is None:
            raise PromptError("a click box needs the frame's size (no mask given)")
        h, w = np.asarray(region_mask).shape[:2]
        r = fallback * min(h, w)
        return (max(0.0, x - r), max(0.0, y - r), min(w - 1.0, x + r), min(h - 1.0, y + r))
    m = np.asarray(region_mask, dtype=bool)
    h, w = m.shape
    comp = core_masks.components(m)
    xi, yi = int(round(min(max(x, 0), w - 1))), int(round(min(max(y, 0), h - 1)))
    k = int(comp.labels[yi, xi])
    if k == 0:  # nearest region by distance to its box
        def dist(b: tuple[int, int, int, int]) -> float:
            dx = max(b[0] - x, 0.0, x - b[2])
            dy = max(b[1] - y, 0.0, y - b[3])
            return float(np.hypot(dx, dy))
        k = 1 + int(np.argmin([dist(b) for b in comp.boxes]))
    x0, y0, x1, y1 = comp.boxes[k - 1]
    mx, my = margin * (x1 - x0 + 1), margin * (y1 - y0 + 1)
    bx0, by0, bx1, by1 = x0 - mx, y0 - my, x1 + mx, y1 + my
    # A region one pixel wide or tall still gets a box a prompt accepts (2x2 px at least).
    if bx1 - bx0 < 2:
        bx0, bx1 = (x0 + x1) / 2 - 1, (x0 + x1) / 2 + 1
    if by1 - by0 < 2:
        by0, by1 = (y0 + y1) / 2 - 1, (y0 + y1) / 2 + 1
    return (max(0.0, bx0), max(0.0, by0), min(w - 1.0, bx1), min(h - 1.0, by1))


def jitter_box(box: Sequence[float], frac: float, rng: np.random.Generator, size: tuple[int, int]) -> Box:
    """Each side moved by a uniform draw in ±``frac`` of the box's width (x) or height (y),
    clipped to the frame (the benchmark's "imprecise user" box)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    d = rng.uniform(-frac, frac, size=4) * np.array([bw, bh, bw, bh])
    h, w = size
    nx0, ny0 = min(max(x0 + d[0], 0.0), w - 1.0), min(max(y0 + d[1], 0.0), h - 1.0)
    nx1, ny1 = min(max(x1 + d[2], 0.0), w - 1.0), min(max(y1 + d[3], 0.0), h - 1.0)
    if nx1 - nx0 < 2:
        nx0, nx1 = x0, x1
    if ny1 - ny0 < 2:
        ny0, ny1 = y0, y1
    return (nx0, ny0, nx1, ny1)


MERGE_MODES = ("replace", "add", "remove")


def merge(current: np.ndarray, new: np.ndarray, box: Sequence[float], mode: str) -> np.ndarray:
    """A frame's mask after a prompt's mask ``new`` came back for ``box``: ``replace`` clears the
    box and puts ``new`` there (outside the box only ``new``'s pixels are added), ``add`` is the
    union, ``remove`` takes ``new``'s pixels away. Returns a new array."""
    cur = np.asarray(current, dtype=bool)
    nm = np.asarray(new, dtype=bool)
    if cur.shape != nm.shape:
        raise PromptError(f"prompt mask {nm.shape} does not fit the frame's {cur.shape}")
    if mode == "add":
        return np.asarray(cur | nm)
    if mode == "remove":
        return np.asarray(cur & ~nm)
    if mode != "replace":
        raise PromptError(f"unknown merge mode {mode!r}; choose from {', '.join(MERGE_MODES)}")
    out = cur.copy()
    h, w = cur.shape
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(w - 1, int(np.ceil(box[2]))), min(h - 1, int(np.ceil(box[3])))
    out[y0:y1 + 1, x0:x1 + 1] = False
    return np.asarray(out | nm)
