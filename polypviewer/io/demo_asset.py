"""A synthetic colonoscopy clip with exact ground truth, owned by the project (the demo).

The real fixtures cannot be shipped, so ``polypviewer demo`` plays a procedural clip instead.
Each frame is rendered from a small scene model, with numpy and OpenCV only and a fixed seed,
so the same call always gives the same frames and masks:

* The camera looks down a tube of radius 1 (the colon). A pixel at image radius ``r`` from
  the lumen centre sees the wall at depth ``z = f / r``; ``(angle, depth)`` index a mucosa
  texture (band-passed noise: colour mottling, a blood-vessel network) that is fixed to the
  wall, so it streams outward as the camera advances.
* Haustral folds are ridges every ``FOLD_PERIOD`` in depth, warped by noise so no two are
  alike: the side facing the camera is lit, the far side falls into shadow.
* Light comes from the camera: brightness falls with depth (a dark lumen), the red channel
  least (shadows go red-brown as in real mucosa). Optics add a radial vignette and the round
  field of view with black corners; wet mucosa gives small white specular glints.
* The camera drifts (the lumen centre wanders), rolls and advances; it sees one sessile
  polyp fixed to the wall, which therefore moves across the frame and grows as it nears.
  The polyp is a dome with its own paler, finer texture, shaded from the camera (bright near
  face, a shadow crescent on the lumen side, a specular spot), with a soft edge.
* The ground-truth mask is exactly the polyp's footprint on the wall (``d <= 1`` in the
  polyp's own coordinates), inside the field of view.

``generate_demo(out_dir)`` writes ``demo_clip.mp4`` (MPEG-4 part 2, ``mp4v``) and
``demo_clip_masks/demo_clip_<i:06d>.png`` (0/255), the sidecar layout
:class:`polypviewer.io.sources.VideoSource` reads. Regenerate the shipped asset with::

    python -m polypviewer.io.demo_asset resources/demo --overwrite
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from polypviewer.core.errors import PolypviewerError
from polypviewer.core.paths import resources_dir
from polypviewer.io.video import quiet_ffmpeg

__all__ = ["DemoScene", "DemoAsset", "DemoError", "generate_demo", "render_frame",
           "shipped_demo", "DEMO_STEM"]

DEMO_STEM = "demo_clip"
FOLD_PERIOD = 0.85    # depth between haustral folds, in tube radii
LENS_K = 0.46         # equidistant fisheye: image radius (widths) = LENS_K * angle off axis
TEX_SIZE = 512        # texture map: angle x depth texels, square on the wall
TEX_DEPTH = 2 * np.pi  # depth the texture map spans before it repeats (isotropic texels)


class DemoError(PolypviewerError):
    """The demo clip cannot be written or read back."""


@dataclass(frozen=True)
class DemoAsset:
    video: Path
    masks_dir: Path
    n_frames: int
    fps: float


def _noise(rng: np.random.Generator, shape: tuple[int, int], lo: float, hi: float) -> np.ndarray:
    """Periodic band-passed noise (spatial frequencies lo..hi cycles per map), zero mean, std 1."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None] * shape[0]
    fx = np.fft.rfftfreq(shape[1])[None, :] * shape[1]
    f = np.hypot(fy, fx)
    sigma = 0.5 * np.log(hi / lo)  # most energy between lo and hi, little beyond
    band = np.exp(-0.5 * (np.log(np.maximum(f, 1e-6) / np.sqrt(lo * hi)) / sigma) ** 2)
    band[0, 0] = 0.0
    out = np.fft.irfft2(np.fft.rfft2(white) * band, s=shape)
    noise: np.ndarray = ((out - out.mean()) / (out.std() + 1e-12)).astype(np.float32)
    return noise


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class DemoScene:
    """The scene model; ``render(i)`` gives frame ``i`` as (RGB uint8, mask bool)."""

    def __init__(self, n_frames: int = 60, size: tuple[int, int] = (384, 384), seed: int = 0) -> None:
        if n_frames < 1 or min(size) < 32:
            raise ValueError(f"need at least one frame of at least 32x32 pixels, got {n_frames} "
                             f"frames of {size[1]}x{size[0]}")
        self.n_frames, self.size, self.seed = n_frames, (int(size[0]), int(size[1])), seed
        rng = np.random.default_rng(seed)
        shape = (TEX_SIZE, TEX_SIZE)  # rows: angle, columns: depth
        self.tex_colour = _noise(rng, shape, 3, 12)
        self.tex_fine = _noise(rng, shape, 20, 60)
        vessels = np.abs(_noise(rng, shape, 8, 24))
        self.tex_vessel = np.exp(-(vessels / 0.14) ** 2).astype(np.float32)
        self.tex_glint = _noise(rng, shape, 25, 70)
        self.fold_warp = _noise(rng, shape, 1.0, 3.0)
        self.tex_polyp = _noise(rng, (128, 128), 12, 40)
        self.polyp_edge = rng.standard_normal(5) * 0.05  # low-order boundary wobble
        self.phase = rng.uniform(0, 2 * np.pi, 6)
        self.polyp_angle = float(rng.uniform(0, 2 * np.pi))

    # -- camera path --------------------------------------------------------------------
    def camera(self, i: int) -> tuple[float, float, float, float]:
        """(lumen centre x, y in image widths/heights, roll in radians, depth travelled)."""
        t = i / max(self.n_frames - 1, 1)
        p = self.phase
        cx = 0.5 + 0.10 * np.sin(2 * np.pi * 0.8 * t + p[0]) + 0.04 * np.sin(2 * np.pi * 2.1 * t + p[1])
        cy = 0.47 + 0.08 * np.sin(2 * np.pi * 0.6 * t + p[2]) + 0.03 * np.sin(2 * np.pi * 1.7 * t + p[3])
        roll = 0.75 * np.sin(2 * np.pi * 0.5 * t + p[4])
        travel = 1.05 * t + 0.06 * np.sin(2 * np.pi * 1.3 * t + p[5])
        return float(cx), float(cy), float(roll), float(travel)

    def _sample(self, tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Bilinear texture look-up at (angle-texel, depth-texel), wrapping both ways."""
        n_u, n_v = tex.shape
        return cv2.remap(tex, (v % n_v).astype(np.float32), (u % n_u).astype(np.float32),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)

    # -- rendering ----------------------------------------------------------------------
    def render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range 0..{self.n_frames - 1}")
        h, w = self.size
        cx, cy, roll, travel = self.camera(i)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        dx, dy = xs / w - cx, (ys - cy * h) / w  # image widths from the lumen centre
        r = np.hypot(dx, dy) + 1e-4
        off_axis = np.minimum(r / LENS_K, 1.5)  # wide-angle (fisheye) scope optics
        z = np.minimum(1.0 / np.tan(off_axis), 9.0)  # depth of the wall this pixel sees
        theta = np.arctan2(dy, dx) + roll
        u = theta / (2 * np.pi) * TEX_SIZE
        v = (z + travel) / TEX_DEPTH * TEX_SIZE

        # Haustral folds: ridges in (warped) depth; lit on the near side, shadowed behind.
        warp = self._sample(self.fold_warp, u, v * 0.35)
        phase = ((z + travel + 0.3 * FOLD_PERIOD * warp) / FOLD_PERIOD) % 1.0
        ridge = np.exp(-((phase - 0.48) / 0.1) ** 2)
        behind = _smoothstep(0.5, 0.55, phase) * _smoothstep(0.8, 0.6, phase)
        near = np.clip(2.5 / z, 0, 1)
        fold_light = 1.0 + 0.5 * ridge - 0.6 * behind * near

        # Light from the camera falls off with depth (tone-mapped): the lumen is dark.
        falloff = 1.0 - np.exp(-1.1 * (0.85 / z) ** 1.3)

        # Mucosa albedo: salmon to red mottling, finer grain, a darker vessel network; far
        # away the texture is faded rather than aliased.
        far = _smoothstep(1.2, 3.5, z)
        mottle = self._sample(self.tex_colour, u, v) * (1 - 0.6 * far)
        grain = self._sample(self.tex_fine, u, v) * (1 - far)
        vessel = self._sample(self.tex_vessel, u, v) * (1 - far)
        pink = np.array([0.96, 0.58, 0.46], np.float32)
        red = np.array([0.84, 0.34, 0.26], np.float32)
        mix = np.clip(0.45 + 0.16 * mottle, 0, 1)[..., None]
        albedo = pink * (1 - mix) + red * mix
        albedo = albedo * (1 + 0.06 * grain[..., None])
        albedo = albedo * (1 - 0.22 * vessel[..., None] * np.array([0.4, 1.0, 0.9], np.float32))
        shade = falloff * fold_light

        # The polyp, fixed on the wall, drawn over the mucosa.
        p = self._polyp(theta, z, travel, dx, dy, falloff)
        a = p["alpha"][..., None]
        albedo = albedo * (1 - a) + p["albedo"] * a
        shade = (shade * (1 - p["alpha"]) + p["light"] * p["alpha"]) * (1 - 0.5 * p["shadow"])

        # Red scatters under the surface, so shadows keep their red: lower gamma for red.
        gamma = np.array([0.8, 1.25, 1.35], np.float32)
        rgb = albedo * np.power(np.clip(shade, 0, None)[..., None], gamma)

        # Wet glints: small white blobs where lit folds face the camera, and the polyp's.
        g_src = self._sample(self.tex_glint, u + 6 * roll, v + 4 * travel)
        lit = np.clip(2.5 * (falloff * fold_light - 0.4), 0, 1) * (0.25 + ridge)
        glint = _smoothstep(2.3, 2.9, g_src) * np.clip(lit, 0, 1)
        glint = np.maximum(glint * (1 - p["alpha"]), p["spec"])
        glint = glint + 0.35 * cv2.GaussianBlur(glint, (0, 0), 2.5)  # bloom
        rgb = rgb + glint[..., None] * np.array([1.0, 0.97, 0.93], np.float32) * 1.3

        # Optics: a soft vignette and the scope's round field of view with black corners.
        rc = np.hypot(xs / w - 0.5, ys / h - 0.5)
        fov = rc <= 0.555
        soft_fov = _smoothstep(0.56, 0.55, rc)
        rgb = rgb * ((1 - 0.35 * rc ** 2 / 0.25) * soft_fov)[..., None]
        img = cv2.GaussianBlur(np.clip(rgb * 255.0, 0, 255), (0, 0), 0.6)
        noise = np.random.default_rng((self.seed, i)).normal(0, 1.5, img.shape)
        img = np.clip(img + noise * soft_fov[..., None], 0, 255).astype(np.uint8)
        return img, p["mask"] & fov

    def _polyp(self, theta: np.ndarray, z: np.ndarray, travel: float, dx: np.ndarray, dy: np.ndarray,
               falloff: np.ndarray) -> dict[str, np.ndarray]:
        """Footprint mask, blend alpha, albedo, lighting, specular and cast shadow."""
        zp = 2.3 - travel  # fixed on the wall: nears the camera as it advances
        radius = 0.4       # tube radii
        d_ang = (theta - self.polyp_angle + np.pi) % (2 * np.pi) - np.pi
        # Seen obliquely through the fisheye, a disc on the wall is squashed along depth by
        # 1 / ((1 + z^2) * angle); a dome looks rounder than that, so undo part of it.
        squash = 1.0 / ((1 + zp * zp) * np.arctan(1.0 / max(zp, 0.05)))
        ex, ey = d_ang / radius, (z - zp) / (radius * squash ** -0.55)
        phi = np.arctan2(ey, ex)
        k = np.arange(2, 2 + len(self.polyp_edge))[:, None, None]
        wobble = 1 + np.tensordot(self.polyp_edge, np.cos(k * phi[None] + k), axes=1)
        d = np.hypot(ex, ey) / wobble
        mask = d <= 1.0
        alpha = _smoothstep(1.0, 0.8, d)
        out: dict[str, np.ndarray] = {"mask": mask, "alpha": alpha}

        # Dome height in pixels and its normal; the light is at the camera, so the face
        # towards the image border (nearer the camera) is lit, the lumen side is dark.
        r_px = max(float(np.sqrt(mask.sum() / np.pi)), 1.0)
        height = np.sqrt(np.clip(1 - d * d, 0, 1)) * 0.7 * r_px
        gy, gx = np.gradient(height)
        n = np.stack([-gx, -gy, np.ones_like(height)], axis=-1)
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        if mask.any():
            c = np.array([dx[mask].mean(), dy[mask].mean()], np.float32)
        else:
            c = np.array([np.cos(self.polyp_angle), np.sin(self.polyp_angle)], np.float32)
        outward = c / (np.linalg.norm(c) + 1e-6)
        light = np.array([0.7 * outward[0], 0.7 * outward[1], 1.0], np.float32)
        light /= np.linalg.norm(light)
        lambert = np.clip(n @ light, 0, 1)
        halfway = light + np.array([0, 0, 1], np.float32)
        halfway /= np.linalg.norm(halfway)
        out["spec"] = (np.clip(n @ halfway, 0, 1) ** 400 * 1.2 * alpha).astype(np.float32)
        lit = falloff * 1.15  # the polyp stands out of the wall: a little nearer the light
        out["light"] = lit * (0.55 + 0.7 * lambert ** 2)

        # Paler, finer-grained than the mucosa around it.
        tex = self._sample(self.tex_polyp, ex * 40 + 64, ey * 40 + 64)
        base = np.array([0.98, 0.64, 0.52], np.float32)
        out["albedo"] = base * (1 + 0.05 * tex[..., None])

        # A crescent of cast shadow just outside the footprint, on the lumen side.
        off = np.stack([dx - c[0], dy - c[1]], axis=-1)
        cos_side = -(off @ outward) / (np.linalg.norm(off, axis=-1) + 1e-6)
        ring = np.exp(-((d - 1.1) / 0.12) ** 2) * (d > 1.0)
        out["shadow"] = (ring * np.clip(cos_side, 0, 1)).astype(np.float32)
        return out


def render_frame(i: int, *, n_frames: int = 60, size: tuple[int, int] = (384, 384),
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``i`` of the demo clip as (RGB uint8 (H, W, 3), mask bool (H, W)); ``size`` is (H, W)."""
    return DemoScene(n_frames, size, seed).render(i)


def _mask_name(i: int) -> str:
    return f"{DEMO_STEM}_{i:06d}.png"


def _foreign_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(f.name for f in folder.iterdir()
                  if not (f.is_file() and f.name.startswith(DEMO_STEM + "_") and f.suffix == ".png"))


def _remove_partial(tmp_video: Path, tmp_masks: Path) -> None:
    tmp_video.unlink(missing_ok=True)
    if tmp_masks.is_dir():
        shutil.rmtree(tmp_masks)


def generate_demo(out_dir: str | Path, n_frames: int = 60, size: tuple[int, int] = (384, 384),
                  fps: float = 12, *, seed: int = 0, overwrite: bool = False) -> DemoAsset:
    """Render the demo clip into ``out_dir``: ``demo_clip.mp4`` and ``demo_clip_masks/``.

    ``size`` is (height, width). Existing output is kept unless ``overwrite``, and even then
    a mask folder holding anything but demo masks is refused. Everything is written under
    temporary names and moved into place at the end; the video is read back first, and a
    clip that does not decode to ``n_frames`` frames of the right size raises
    :class:`DemoError`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video, masks_dir = out_dir / f"{DEMO_STEM}.mp4", out_dir / f"{DEMO_STEM}_masks"
    if not overwrite:
        for existing in (video, masks_dir):
            if existing.exists():
                raise DemoError("already exists; pass overwrite=True (--overwrite) to replace it",
                                existing)
    foreign = _foreign_files(masks_dir)
    if foreign:
        raise DemoError(f"holds files that are not demo masks ({', '.join(foreign[:3])}); "
                        "not replacing it", masks_dir)
    scene = DemoScene(n_frames, size, seed)
    h, w = scene.size
    tmp_video = out_dir / f".{DEMO_STEM}.partial.mp4"
    tmp_masks = out_dir / f".{DEMO_STEM}_masks.partial"
    _remove_partial(tmp_video, tmp_masks)  # only ever our own leftovers (hidden names)
    try:
        tmp_masks.mkdir()
        quiet_ffmpeg()
        writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter.fourcc(*"mp4v"), float(fps),
                                 (w, h))
        if not writer.isOpened():
            raise DemoError("OpenCV cannot write MPEG-4 (mp4v) video here", tmp_video)
        try:
            for i in range(n_frames):
                img, mask = scene.render(i)
                writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * np.uint8(255))
                if not ok:
                    raise DemoError("cannot encode a mask as PNG", tmp_masks / _mask_name(i))
                (tmp_masks / _mask_name(i)).write_bytes(buf.tobytes())
        finally:
            writer.release()
        count = count_frames(tmp_video, (h, w))
        if count != n_frames:
            raise DemoError(f"wrote {n_frames} frames but {count} decode back", tmp_video)
        if masks_dir.is_dir():
            shutil.rmtree(masks_dir)  # checked above: nothing in it but demo masks
        tmp_masks.rename(masks_dir)
        tmp_video.replace(video)
    except BaseException:
        _remove_partial(tmp_video, tmp_masks)
        raise
    return DemoAsset(video=video, masks_dir=masks_dir, n_frames=n_frames, fps=float(fps))


def count_frames(video: Path, size: tuple[int, int] | None = None) -> int:
    """Frames that actually decode (not the header's claim); checks their (H, W) if given."""
    quiet_ffmpeg()
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DemoError("cannot open video", video)
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if size is not None and frame.shape[:2] != tuple(size):
                raise DemoError(f"frame {n} is {frame.shape[1]}x{frame.shape[0]}, expected "
                                f"{size[1]}x{size[0]}", video)
            n += 1
    finally:
        cap.release()
    return n


def shipped_demo() -> Path:
    """The demo clip shipped in ``resources/demo/`` (its masks sit beside it)."""
    path = resources_dir() / "demo" / f"{DEMO_STEM}.mp4"
    if not path.is_file():
        raise DemoError("the built-in demo clip is missing from this installation", path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m polypviewer.io.demo_asset",
                                 description="Render the synthetic demo clip and its masks.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--size", default="384x384", help="WxH")
    ap.add_argument("--fps", type=float, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    try:
        asset = generate_demo(args.out_dir, args.frames, (h, w), args.fps, seed=args.seed,
                              overwrite=args.overwrite)
    except PolypviewerError as exc:
        print(f"demo_asset: error: {exc}")
        return 2
    size_kb = asset.video.stat().st_size / 1024
    print(f"wrote {asset.video} ({asset.n_frames} frames, {w}x{h}, {asset.fps:g} fps, "
          f"{size_kb:.0f} KiB) and {asset.masks_dir}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
