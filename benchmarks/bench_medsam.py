"""Box (and click) to mask with LiteMedSAM on real frames, beside the default model.

Test mode (the default): on ``kvasir-seg`` test 100 and ``cvc-clinicdb-612`` test 62 (each
set's ``split.json``), every frame is embedded once (``engine.prompting.PromptSegmenter``)
and prompted with

- ``gt_box``: one box per ground-truth region (8-connected, at least ``MIN_REGION`` px: Kvasir
  masks carry a stray corner pixel), the union of their masks scored against the mask;
- ``jitter_box``: the same boxes with each side moved by a uniform draw in ±10 % of the box's
  width / height (numpy ``default_rng(seed)``, drawn in the order frames run: the two sets
  alternate), clipped to the frame;

and the default model (``models/default.json`` through ``engine.Predictor``, as the app runs
it) predicts the same frame. Dice is ``core.metrics.scores``. Times: embedding per frame and
prompt-to-mask per box from the cached embedding (decoder + resize + threshold), and the
default model's per-frame prediction in the same run as the baseline the ratios use (the
machine is shared: absolute numbers move with its load, ratios much less).

``--select-click`` instead measures the two ways a click can become a prompt on TRAINING frames
(never the test splits): ``point`` (a foreground point at the ground-truth region's most
interior pixel) and ``model_box`` (the box of the default model's region under that point,
widened by ``--margin`` of its size; ``engine.prompting.click_box``), and reports which wins.

``--timing`` times, in interleaved rounds on ``--limit`` frames of each set, the embedding on
torch fp32 and on OpenVINO fp32 (the app's default), prompt-to-mask from a cached embedding (a
box: prompt encoder + decoder + resize + threshold) and the default model's prediction of the
same frame (the baseline of the ratios), and counts the embedding's FLOPs.

``--precision`` judges OpenVINO bf16 (for the image encoder and/or the one-box decoder) against
fp32 on Kvasir-SEG TRAIN frames (``--limit`` spread evenly; never the test split) with the
engine's own rule (``engine.prompting.check_precision`` / ``PRECISION_AGREEMENT``: jittered
ground-truth boxes, Dice vs the fp32 masks > 0.98 and ground-truth Dice lower by < 0.005), and
times, interleaved in the same rounds, the app's path before this change (fp32 encoder, fp32
decoder, logits upsampled to the frame with torch) against the path ``auto`` now picks (the
agreeing precisions, OpenVINO upsampling replaced by OpenCV's), with each step on its own.

Results go to ``--json`` after every frame, so an interrupted run still reports what ran.

    .venv/bin/python benchmarks/bench_medsam.py [--limit N] [--json benchmarks/results/medsam.json]
    .venv/bin/python benchmarks/bench_medsam.py --select-click --limit 4 --json benchmarks/results/medsam-click.json
    .venv/bin/python benchmarks/bench_medsam.py --timing --limit 3 --rounds 3 \
        --json benchmarks/results/medsam-timing.json
    .venv/bin/python benchmarks/bench_medsam.py --precision --limit 20 --rounds 3 \
        --json benchmarks/results/medsam-precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from polypviewer.core.paths import shared_data_default

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_default()
SETS = {"kvasir-seg": ".jpg", "cvc-clinicdb-612": ".png"}
MIN_REGION = 16  # px: smaller ground-truth regions get no box (the stray corner pixel)


def gt_boxes(gt: np.ndarray) -> list[tuple[int, int, int, int]]:
    from polypviewer.core.masks import components

    comp = components(gt)
    return [b for b, a in zip(comp.boxes, comp.areas, strict=True) if a >= MIN_REGION]


def interior_point(gt: np.ndarray) -> tuple[int, int]:
    """The ground-truth pixel farthest from the background (of its largest region)."""
    from polypviewer.core.masks import largest_component

    m = largest_component(gt).astype(np.uint8)
    d = cv2.distanceTransform(np.pad(m, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(x), int(y)


def cpu_info() -> dict:
    flags = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = set(re.findall(r"\b(amx_bf16|avx512_bf16|avx512f|avx2)\b", text))
        model = re.search(r"model name\s*:\s*(.*)", text)
    except OSError:
        model = None
    import torch

    return {"model": model.group(1) if model else platform.processor(), "flags": sorted(flags),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg())}


def write(path: Path | None, report: dict) -> None:
    if path is not None:
        from polypviewer.core.fileio import atomic_write

        atomic_write(path, (json.dumps(report, indent=1) + "\n").encode())


def frames(data: Path, name: str, split: str, limit: int | None):
    stems = [str(s) for s in json.loads((data / name / "split.json").read_text())[split]]
    if limit:
        stems = stems[:limit] if split == "test" else \
            [stems[i] for i in np.linspace(0, len(stems) - 1, limit).round().astype(int)]
    return stems


def summarise(rows: list[dict], keys: list[str]) -> dict:
    out: dict = {"frames": len(rows)}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        if vals:
            out[f"{k}_dice_mean"] = float(np.mean(vals))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--sets", nargs="+", default=list(SETS))
    p.add_argument("--limit", type=int, default=None, help="first N test frames per set (train: N spread evenly)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jitter", type=float, default=0.1)
    p.add_argument("--margin", type=float, default=None, help="click box margin (default: engine's)")
    p.add_argument("--select-click", action="store_true")
    p.add_argument("--timing", action="store_true")
    p.add_argument("--precision", action="store_true", help="bf16 vs fp32 on kvasir-seg TRAIN frames, and timing")
    p.add_argument("--time-frames", type=int, default=4, help="--precision: frames of the timed rounds")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    if not a.data.is_dir():
        print(f"{a.data}: data folder not found", file=sys.stderr)
        return 2
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from polypviewer.core.metrics import scores
    from polypviewer.engine.inference import Predictor
    from polypviewer.engine.prompting import CLICK_MARGIN, PromptSegmenter, click_box, jitter_box
    from polypviewer.io.images import read_image, read_mask

    margin = CLICK_MARGIN if a.margin is None else a.margin
    if a.timing:
        return timing(a)
    if a.precision:
        return precision(a)
    seg = PromptSegmenter.create(backend="torch")  # the reference arithmetic (OpenVINO fp32 agrees: tests)
    pred = Predictor.create()
    report: dict = {
        "what": "select-click (train frames)" if a.select_click else "LiteMedSAM box prompts (test splits)",
        "command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *(argv or sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_info(),
        "default_model": {k: pred.info.get(k) for k in ("model", "version", "backend", "precision", "device")},
        "seed": a.seed, "jitter": a.jitter, "min_region": MIN_REGION, "margin": margin,
        "note": "machine shared with other jobs: absolute times move with its load; ratios are against the "
                "default model's per-frame prediction measured in the same run",
        "sets": {},
    }
    rng = np.random.default_rng(a.seed)
    rc = 0
    split = "train" if a.select_click else "test"
    lists = {name: frames(a.data, name, split, a.limit) for name in a.sets}
    for name in a.sets:
        report["sets"][name] = {"split": split, "rows": []}
    # The sets alternate (k0, c0, k1, c1, ...), so a run stopped early has scored both.
    order = [(name, lists[name][i]) for i in range(max(map(len, lists.values())))
             for name in a.sets if i < len(lists[name])]
    for name, stem in order:
        ext = SETS[name]
        rows: list[dict] = report["sets"][name]["rows"]
        row: dict = {"stem": stem}
        try:
            img = read_image(a.data / name / "images" / f"{stem}{ext}")
            gt = read_mask(a.data / name / "masks" / f"{stem}{ext}")
        except Exception as exc:  # noqa: BLE001 - one bad frame is named and skipped
            print(f"{name}/{stem}: {exc}", file=sys.stderr)
            rc = 1
            continue
        t = time.perf_counter()
        emb = seg.embed(img)
        row["embed_s"] = time.perf_counter() - t
        t = time.perf_counter()
        prob = pred.predict([img])[0]
        row["default_s"] = time.perf_counter() - t
        model_mask = pred.mask(prob)
        row["default"] = scores(model_mask, gt)["dice"]
        boxes = gt_boxes(gt)
        row["boxes"] = len(boxes)
        if a.select_click:
            x, y = interior_point(gt)
            row["point"] = scores(seg.segment(emb, point=(x, y)), gt)["dice"]
            row["model_box"] = scores(seg.segment(emb, box=click_box(model_mask, x, y, margin)), gt)["dice"]
        elif boxes:
            t = time.perf_counter()
            masks = [seg.segment(emb, box=b) for b in boxes]
            row["prompt_s"] = (time.perf_counter() - t) / len(boxes)
            row["gt_box"] = scores(np.any(masks, axis=0), gt)["dice"]
            jit = [jitter_box(b, a.jitter, rng, gt.shape) for b in boxes]
            row["jitter_box"] = scores(seg.segment_boxes(emb, jit), gt)["dice"]
        rows.append(row)
        keys = ["point", "model_box", "default"] if a.select_click else ["gt_box", "jitter_box", "default"]
        print(name, stem, " ".join(f"{k}={row[k]:.3f}" for k in keys if k in row),
              f"embed={row['embed_s']:.2f}s", flush=True)
        s = summarise(rows, keys)
        for k in ("embed_s", "default_s", "prompt_s"):
            v = [r[k] for r in rows if k in r]
            if v:
                s[f"{k}_median"] = float(np.median(v))
        if "embed_s_median" in s:
            s["embed_vs_default"] = s["embed_s_median"] / s["default_s_median"]
        if "prompt_s_median" in s:
            s["prompt_vs_default"] = s["prompt_s_median"] / s["default_s_median"]
        report["sets"][name]["summary"] = s
        report["cpu"]["load_average_end"] = list(os.getloadavg())
        write(a.json, report)
    if a.select_click:
        pts = [r["point"] for s in report["sets"].values() for r in s["rows"]]
        bxs = [r["model_box"] for s in report["sets"].values() for r in s["rows"]]
        report["click_choice"] = {"point_mean": float(np.mean(pts)), "model_box_mean": float(np.mean(bxs)),
                                  "better": "box" if np.mean(bxs) >= np.mean(pts) else "point"}
        print("click:", report["click_choice"])
    for name, s in report["sets"].items():
        print(name, json.dumps(s.get("summary", {})))
    write(a.json, report)
    return rc


def timing(a: argparse.Namespace) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from polypviewer.engine.inference import Predictor
    from polypviewer.engine.prompting import PromptSegmenter, preprocess
    from polypviewer.io.images import read_image, read_mask

    t = time.perf_counter()
    ov = PromptSegmenter.create(backend="openvino")
    build_s = time.perf_counter() - t
    ref = PromptSegmenter(ov.model)  # the same network on torch
    pred = Predictor.create()
    imgs = []
    for name in a.sets:
        for stem in frames(a.data, name, "test", a.limit or 3):
            ext = SETS[name]
            imgs.append((f"{name}/{stem}", read_image(a.data / name / "images" / f"{stem}{ext}"),
                         gt_boxes(read_mask(a.data / name / "masks" / f"{stem}{ext}"))))
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        ref.model.embed(torch.from_numpy(preprocess(imgs[0][1])[0])[None])
    times: dict[str, list[float]] = {"embed_torch_s": [], "embed_openvino_s": [], "prompt_s": [], "default_s": []}
    for _ in range(a.rounds):
        for _name, img, boxes in imgs:
            for key, fn in (("default_s", lambda img=img: pred.predict([img])),
                            ("embed_torch_s", lambda img=img: ref.embed(img)),
                            ("embed_openvino_s", lambda img=img: ov.embed(img))):
                t = time.perf_counter()
                out = fn()
                times[key].append(time.perf_counter() - t)
            for b in boxes[:1]:
                t = time.perf_counter()
                ov.segment(out, box=b)
                times["prompt_s"].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items() if v}
    report = {
        "what": "LiteMedSAM timing (interleaved rounds)",
        "command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_info(),
        "frames": [n for n, _, _ in imgs], "rounds": a.rounds, "openvino_build_s": build_s, "why": ov.why,
        "embed_gflop": fc.get_total_flops() / 1e9, "median": med,
        "vs_default": {k: v / med["default_s"] for k, v in med.items()},
        "openvino_speedup": med["embed_torch_s"] / med["embed_openvino_s"],
        "note": "machine shared with other jobs: absolute times move with its load; the ratios are within one run",
        "times": times,
    }
    report["cpu"]["load_average_end"] = list(os.getloadavg())
    print(json.dumps({k: report[k] for k in ("median", "vs_default", "openvino_speedup", "embed_gflop", "why")}))
    write(a.json, report)
    return 0


def _macs(module, *inputs) -> float:
    """Multiply-accumulates of the convolutions and linear layers of one forward pass (hooks)."""
    import torch

    total = [0]

    def hook(mod, _inp, out):
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        elif isinstance(mod, torch.nn.ConvTranspose2d):
            total[0] += _inp[0].numel() * mod.kernel_size[0] * mod.kernel_size[1] * mod.out_channels
        elif isinstance(mod, torch.nn.Linear):
            total[0] += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(hook) for m in module.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear))]
    with torch.inference_mode():
        module(*inputs)
    for h in hooks:
        h.remove()
    return float(total[0])


def precision(a: argparse.Namespace) -> int:
    import torch

    from polypviewer.engine.prompting import (
        CANDIDATES,
        PRECISION_AGREEMENT,
        PromptSegmenter,
        _DecoderHead,
        check_precision,
        choose_precisions,
        preprocess,
        region_boxes,
        scale_box,
        upsample_logits,
    )
    from polypviewer.io.images import read_image, read_mask

    name = "kvasir-seg"
    t = time.perf_counter()
    ov = PromptSegmenter.create(backend="openvino", precision="fp32")
    build_s = time.perf_counter() - t
    parts = {"fp32": (ov.encoder, ov.decoder),
             "bf16": (ov.encoder.with_precision("bf16"), ov.decoder.with_precision("bf16"))}
    stems = frames(a.data, name, "train", a.limit or 20)
    data = [(read_image(a.data / name / "images" / f"{s}.jpg"), read_mask(a.data / name / "masks" / f"{s}.jpg"))
            for s in stems]
    x = torch.rand(1, 3, 256, 256)
    emb0 = torch.randn(1, 256, 64, 64)
    gmac = {"encoder": _macs(ov.model.image_encoder, x) / 1e9,
            "decoder_one_box": _macs(_DecoderHead(ov.model), emb0, torch.tensor([[40.0, 50.0, 180.0, 200.0]])) / 1e9}
    report: dict = {
        "what": "LiteMedSAM on OpenVINO: bf16 vs fp32 (kvasir-seg TRAIN frames) and before/after timing",
        "command": "python " + " ".join([f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_info(),
        "frames": [f"{name}/{s}" for s in stems], "openvino_build_s": build_s, "rule": PRECISION_AGREEMENT,
        "gmac": gmac, "gflop": {k: 2 * v for k, v in gmac.items()},
        "note": "machine loaded by a training run at higher priority (this ran under nice -n 19): absolute "
                "times move with its load; compare the before/after ratios, measured in the same rounds",
    }
    t = time.perf_counter()
    checks = check_precision(parts, data, jitter=a.jitter, seed=a.seed)
    pair, why = choose_precisions(checks)
    report["accuracy_s"] = time.perf_counter() - t
    report["checks"] = {f"{e}/{d}": k.as_dict() for (e, d), k in checks.items()}
    report["chosen"] = {"encoder": pair[0], "decoder": pair[1], "why": why}
    print(json.dumps(report["checks"]), "->", pair, why, flush=True)
    write(a.json, report)

    # Timing: each step alone, and the whole before/after paths, interleaved in every round.
    enc_new, dec_new = parts[pair[0]][0], parts[pair[1]][1]
    timed = data[: a.time_frames]
    times: dict[str, list[float]] = {}

    def clock(key: str, fn):  # wall time, and the CPU time of all this process's threads
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.setdefault(key, []).append(time.perf_counter() - t0)
        times.setdefault(key.replace("_s", "_cpu_s"), []).append(time.process_time() - c0)
        return out

    for _ in range(a.rounds):
        for img, gt in timed:
            size = gt.shape
            boxes = region_boxes(gt)[:1] or [(0, 0, size[1] - 1, size[0] - 1)]
            xin, new_size = clock("preprocess_s", lambda img=img: preprocess(img))
            e32 = clock("encoder_fp32_s", lambda xin=xin: parts["fp32"][0](xin[None]))
            clock("encoder_bf16_s", lambda xin=xin: parts["bf16"][0](xin[None]))
            b = np.asarray([scale_box(boxes[0], size)], np.float32) * (256 / max(size))
            low = clock("decoder_fp32_s", lambda b=b, e32=e32: parts["fp32"][1](e32, b))
            clock("decoder_bf16_s", lambda b=b, e32=e32: parts["bf16"][1](e32, b))
            nh, nw = new_size

            def torch_up(low=low, nh=nh, nw=nw, size=size):
                up = torch.nn.functional.interpolate(torch.from_numpy(low)[:, :, :nh, :nw], size=size,
                                                     mode="bilinear", align_corners=False)
                return up[:, 0].numpy() > 0

            clock("upsample_torch_s", torch_up)
            clock("upsample_opencv_s", lambda low=low, ns=new_size, size=size: upsample_logits(low[:, 0], ns, size) > 0)

            # embedding = preprocess + encoder; prompt = decoder + upsample + threshold (cached embedding)
            e_old = clock("before_embedding_s", lambda img=img: parts["fp32"][0](preprocess(img)[0][None]))
            e_new = clock("after_embedding_s", lambda img=img: enc_new(preprocess(img)[0][None]))
            clock("before_prompt_s", lambda e=e_old, b=b, nh=nh, nw=nw, size=size: torch.nn.functional.interpolate(
                torch.from_numpy(parts["fp32"][1](e, b))[:, :, :nh, :nw], size=size, mode="bilinear",
                align_corners=False)[:, 0].numpy() > 0)
            clock("after_prompt_s", lambda e=e_new, b=b, ns=new_size, size=size:
                  upsample_logits(dec_new(e, b)[:, 0], ns, size) > 0)
        report["median"] = {k: float(np.median(v)) for k, v in times.items()}
        report["times"] = times
        report["cpu"]["load_average_end"] = list(os.getloadavg())
        write(a.json, report)
    med = report["median"]
    report["speedup"] = {"embedding": med["before_embedding_s"] / med["after_embedding_s"],
                         "embedding_cpu": med["before_embedding_cpu_s"] / med["after_embedding_cpu_s"],
                         "prompt_cpu": med["before_prompt_cpu_s"] / med["after_prompt_cpu_s"],
                         "prompt": med["before_prompt_s"] / med["after_prompt_s"],
                         "encoder_bf16_vs_fp32": med["encoder_fp32_s"] / med["encoder_bf16_s"],
                         "decoder_bf16_vs_fp32": med["decoder_fp32_s"] / med["decoder_bf16_s"],
                         "upsample_opencv_vs_torch": med["upsample_torch_s"] / med["upsample_opencv_s"]}
    report["candidates"] = [f"{e}/{d}" for e, d in CANDIDATES]
    print(json.dumps({"median": med, "speedup": report["speedup"]}, indent=1))
    write(a.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
