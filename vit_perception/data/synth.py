"""Synthetic "lab" bags: shaded coloured objects moving over textured backgrounds.

Each bag is a sequence of scenes (a background the camera pans over slowly, and a few objects
drifting, scaling and bouncing). Images go on /camera/image_raw (rgb8 Image or JPEG
CompressedImage, frame_id camera_optical_frame, 30 Hz stamps), ground truth as a
Detection2DArray with the same header on /labels, and one /vision_info message whose
database_location names the class list. `classes.txt` (sorted names, the order `read_frames`
uses by default) is written inside the bag directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vit_perception.data.synth_photo import PhotoScene, photo_class_names

FRAME_ID = "camera_optical_frame"
START_NS = 1_700_000_000 * 1_000_000_000
RATE_HZ = 30.0
STYLES = ("lab", "photo")

# name, RGB colour, shape
CLASS_LIBRARY: list[tuple[str, tuple[int, int, int], str]] = [
    ("red_cube", (210, 40, 35), "cube"),
    ("green_ball", (40, 185, 60), "ball"),
    ("blue_cylinder", (40, 80, 215), "cylinder"),
    ("yellow_cone", (235, 205, 40), "cone"),
    ("purple_ring", (150, 60, 190), "ring"),
    ("orange_star", (245, 130, 30), "star"),
    ("cyan_cross", (40, 200, 210), "cross"),
    ("white_pyramid", (225, 225, 220), "pyramid"),
]


def class_names(num_classes: int, style: str = "lab") -> list[str]:
    """Names of the first `num_classes` synthetic classes of `style`, in library order."""
    if style == "photo":
        return photo_class_names(num_classes)
    if not 1 <= num_classes <= len(CLASS_LIBRARY):
        raise ValueError(f"--classes must be 1..{len(CLASS_LIBRARY)}, got {num_classes}")
    return [c[0] for c in CLASS_LIBRARY[:num_classes]]


# ---------------------------------------------------------------- sprites


def _shade(color, factor) -> np.ndarray:
    """Colour scaled by a `[h, w]` (or scalar) factor -> float RGB."""
    return np.clip(np.asarray(color, np.float32) * np.asarray(factor, np.float32)[..., None], 0,
                   255)


def _grid(w: int, h: int):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return (x + 0.5) / w * 2 - 1, (y + 0.5) / h * 2 - 1


def _sprite(shape: str, color, w: int, h: int, light: float) -> tuple[np.ndarray, np.ndarray]:
    """RGB float `[h, w, 3]` and alpha `[h, w]` of one object filling its `w x h` box."""
    u, v = _grid(w, h)
    mask = np.zeros((h, w), np.uint8)
    sh = 16  # sub-pixel bits for cv2 drawing
    s = float(1 << sh)

    def pts(p):
        return (np.asarray(p, np.float32) * s).astype(np.int32)

    if shape == "ball":
        r2 = u * u + v * v
        nz = np.sqrt(np.clip(1 - r2, 0, 1))
        lx, ly = math.cos(light) * 0.6, math.sin(light) * 0.6
        lz = math.sqrt(1 - lx * lx - ly * ly)
        diff = np.clip(u * lx + v * ly + nz * lz, 0, 1)
        spec = np.clip(u * lx + v * ly + nz * lz, 0, 1) ** 24
        rgb = _shade(color, 0.25 + 0.8 * diff) + 120 * spec[..., None]
        cv2.ellipse(mask, (int(w / 2 * s), int(h / 2 * s)), (int((w / 2 - .5) * s),
                    int((h / 2 - .5) * s)), 0, 0, 360, 255, -1, cv2.LINE_AA, sh)
    elif shape in ("cube", "pyramid"):
        d = 0.3
        rgb = np.zeros((h, w, 3), np.float32)
        if shape == "cube":
            faces = [
                ([(0, d * h), ((1 - d) * w, d * h), ((1 - d) * w, h), (0, h)], 0.85),
                ([(0, d * h), (d * w, 0), (w, 0), ((1 - d) * w, d * h)], 1.15),
                ([((1 - d) * w, d * h), (w, 0), (w, (1 - d) * h), ((1 - d) * w, h)], 0.55),
            ]
        else:
            apex = (0.55 * w, 0)
            faces = [
                ([apex, (0, 0.8 * h), (0.65 * w, h)], 1.0),
                ([apex, (0.65 * w, h), (w, 0.75 * h)], 0.6),
            ]
        canvas = np.zeros((h, w), np.uint8)
        for i, (poly, f) in enumerate(faces):
            canvas[:] = 0
            cv2.fillPoly(canvas, [pts(poly)], 255, cv2.LINE_AA, sh)
            a = canvas.astype(np.float32)[..., None] / 255
            tex = _shade(color, f * (0.9 + 0.1 * v + 0.05 * i))
            rgb = rgb * (1 - a) + tex * a
            mask = np.maximum(mask, canvas)
        for poly, _ in faces:
            cv2.polylines(rgb, [pts(poly)], True, (20, 20, 20), 1, cv2.LINE_AA, sh)
    elif shape in ("cylinder", "cone"):
        shade_x = 0.35 + 0.75 * np.clip(np.cos((u - 0.35 * math.cos(light)) * 1.4), 0, 1)
        rgb = _shade(color, shade_x)
        e = max(2.0, 0.12 * h)
        if shape == "cylinder":
            cv2.rectangle(mask, (0, int(e * s)), (int(w * s), int((h - e) * s)), 255, -1,
                          cv2.LINE_AA, sh)
            cv2.ellipse(mask, (int(w / 2 * s), int((h - e) * s)), (int(w / 2 * s), int(e * s)),
                        0, 0, 360, 255, -1, cv2.LINE_AA, sh)
            top = np.zeros_like(mask)
            cv2.ellipse(top, (int(w / 2 * s), int(e * s)), (int((w / 2 - .5) * s),
                        int((e - .5) * s)), 0, 0, 360, 255, -1, cv2.LINE_AA, sh)
            a = top.astype(np.float32)[..., None] / 255
            rgb = rgb * (1 - a) + _shade(color, np.full((h, w), 1.2)) * a
            mask = np.maximum(mask, top)
            cv2.ellipse(rgb, (int(w / 2 * s), int(e * s)), (int((w / 2 - 1) * s),
                        int((e - 1) * s)), 0, 0, 360, (30, 30, 30), 1, cv2.LINE_AA, sh)
        else:
            cv2.fillPoly(mask, [pts([(w / 2, 0), (w, h - e), (0, h - e)])], 255, cv2.LINE_AA,
                         sh)
            cv2.ellipse(mask, (int(w / 2 * s), int((h - e) * s)), (int(w / 2 * s), int(e * s)),
                        0, 0, 180, 255, -1, cv2.LINE_AA, sh)
    elif shape == "ring":
        r = np.sqrt(u * u + v * v)
        tube = np.clip(1 - np.abs(r - 0.72) / 0.28, 0, 1)
        rgb = _shade(color, 0.3 + 0.9 * np.sqrt(tube) * (0.8 + 0.2 * np.cos(
            np.arctan2(v, u) - light)))
        mask = (np.clip((0.28 - np.abs(r - 0.72)) * min(w, h) / 2, 0, 1) * 255).astype(np.uint8)
    elif shape == "star":
        poly = []
        for k in range(10):
            ang = -math.pi / 2 + k * math.pi / 5
            rad = 1.0 if k % 2 == 0 else 0.45
            poly.append((w / 2 + rad * w / 2 * math.cos(ang), h / 2 + rad * h / 2 * math.sin(ang)))
        poly = np.asarray(poly)
        poly[:, 0] = (poly[:, 0] - poly[:, 0].min()) / np.ptp(poly[:, 0]) * (w - 1) + 0.5
        poly[:, 1] = (poly[:, 1] - poly[:, 1].min()) / np.ptp(poly[:, 1]) * (h - 1) + 0.5
        cv2.fillPoly(mask, [pts(poly)], 255, cv2.LINE_AA, sh)
        rgb = _shade(color, 0.7 + 0.35 * (-u * math.cos(light) - v * math.sin(light)))
        cv2.polylines(rgb, [pts(poly)], True, (60, 30, 10), 1, cv2.LINE_AA, sh)
    elif shape == "cross":
        t = 0.34
        cv2.rectangle(mask, (int((0.5 - t / 2) * w * s), 0), (int((0.5 + t / 2) * w * s),
                      int(h * s)), 255, -1, cv2.LINE_AA, sh)
        cv2.rectangle(mask, (0, int((0.5 - t / 2) * h * s)), (int(w * s),
                      int((0.5 + t / 2) * h * s)), 255, -1, cv2.LINE_AA, sh)
        rgb = _shade(color, 0.75 + 0.3 * (-u * math.cos(light) - v * math.sin(light)))
    else:
        raise ValueError(f"unknown shape {shape}")
    alpha = mask.astype(np.float32) / 255
    # dark outline: a thin band at the alpha edge
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    rgb = rgb * (1 - 0.5 * edge[..., None].astype(np.float32) / 255)
    return rgb.astype(np.float32), alpha


# ---------------------------------------------------------------- backgrounds


def _smooth_noise(rng, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.random((max(2, h // cells), max(2, w // cells)), dtype=np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _background(rng, h: int, w: int) -> np.ndarray:
    """A textured `[h, w, 3]` uint8 background: gradient, tiles or clutter, all with noise."""
    kind = rng.integers(3)
    c0, c1 = rng.integers(40, 200, 3), rng.integers(40, 200, 3)
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    vert = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    mix = (ramp * rng.uniform(0.3, 1) + vert * rng.uniform(0, 0.7)).clip(0, 1)
    img = c0 * (1 - mix) + c1 * mix
    img = img * (0.75 + 0.5 * _smooth_noise(rng, h, w, 48)[..., None])
    if kind == 1:  # floor tiles with grout
        tile = int(rng.integers(28, 90))
        palette = rng.integers(60, 200, (4, 3)).astype(np.float32)
        ty, tx = np.mgrid[0:h, 0:w] // tile
        img = 0.45 * img + 0.55 * palette[(tx + 2 * ty) % 4]
        grout = ((np.mgrid[0:h, 0:w] % tile) < 2).any(axis=0)
        img[grout] *= 0.55
    elif kind == 2:  # clutter: muted lines and boxes that are no class
        img = img.astype(np.float32)
        for _ in range(int(rng.integers(15, 40))):
            col = tuple(float(c) for c in rng.integers(50, 170, 3))
            p = rng.integers(0, [w, h, w, h])
            if rng.random() < 0.5:
                cv2.line(img, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), col,
                         int(rng.integers(1, 6)), cv2.LINE_AA)
            else:
                x, y = int(p[0]), int(p[1])
                cv2.rectangle(img, (x, y), (x + int(rng.integers(8, 60)),
                              y + int(rng.integers(8, 60))), col, -1)
        img = cv2.GaussianBlur(img, (0, 0), 1.2)
    img = img + rng.normal(0, 6, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- scene


@dataclass
class _Object:
    cls: int
    color: np.ndarray
    aspect: float  # w / h
    size: float  # height in px
    x: float
    y: float
    vx: float
    vy: float
    grow: float
    phase: float
    light: float


class SyntheticScene:
    """Frames of one synthetic stream: `render(i) -> (rgb [H,W,3] uint8, boxes [n,4], labels)`."""

    def __init__(self, width: int = 640, height: int = 480, num_classes: int = 4, seed: int = 0,
                 objects_per_frame: tuple[int, int] = (1, 4), scene_length: tuple[int, int] =
                 (60, 120)):
        self.w, self.h = width, height
        self.names = class_names(num_classes)
        self.rng = np.random.default_rng(seed)
        self.objects_per_frame = objects_per_frame
        self.scene_length = scene_length
        self.margin = max(16, min(width, height) // 8)
        self.min_size = 24.0
        self.max_size = max(self.min_size + 8, min(width, height) * 0.32)
        self._scene_end = -1
        self._noise = [self.rng.normal(0, 3, (height, width, 3)).astype(np.int16)
                       for _ in range(3)]

    def _new_scene(self, start: int) -> None:
        rng = self.rng
        m = self.margin
        self._bg = _background(rng, self.h + 2 * m, self.w + 2 * m)
        self._pan = (rng.uniform(0.2, 1.0) * m, rng.uniform(0.2, 1.0) * m,
                     rng.uniform(0.01, 0.04), rng.uniform(0.01, 0.04), rng.uniform(0, 6.28))
        self._scene_start = start
        self._scene_end = start + int(rng.integers(*self.scene_length))
        lo, hi = self.objects_per_frame
        n = int(rng.integers(lo, hi + 1))
        self._objects = []
        for _ in range(n):
            cls = int(rng.integers(len(self.names)))
            base = np.asarray(CLASS_LIBRARY[cls][1], np.float32)
            color = np.clip(base * rng.uniform(0.8, 1.15) + rng.normal(0, 10, 3), 0, 255)
            shape = CLASS_LIBRARY[cls][2]
            aspect = {"cylinder": 0.6, "cone": 0.8}.get(shape, 1.0) * rng.uniform(0.85, 1.15)
            size = float(np.exp(rng.uniform(np.log(self.min_size * 1.15), np.log(self.max_size))))
            self._objects.append(_Object(
                cls=cls, color=color, aspect=aspect, size=size,
                x=rng.uniform(0, self.w - size * aspect), y=rng.uniform(0, self.h - size),
                vx=rng.normal(0, 2.5), vy=rng.normal(0, 1.8), grow=rng.uniform(0, 0.25),
                phase=rng.uniform(0, 6.28), light=rng.uniform(0, 6.28)))

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame `i` (call in increasing order): RGB image, boxes xyxy px, class indices."""
        if i >= self._scene_end:
            self._new_scene(i)
        t = i - self._scene_start
        ax, ay, fx, fy, ph = self._pan
        ox = int(round(self.margin + ax * math.sin(fx * t + ph)))
        oy = int(round(self.margin + ay * math.sin(fy * t + 2 * ph)))
        frame = self._bg[oy:oy + self.h, ox:ox + self.w].astype(np.float32)
        boxes, labels = [], []
        for ob in self._objects:
            ob.x += ob.vx
            ob.y += ob.vy
            hgt = float(np.clip(ob.size * (1 + ob.grow * math.sin(0.05 * t + ob.phase)),
                                self.min_size, self.max_size))
            wid = max(self.min_size * 0.6, hgt * ob.aspect)
            if ob.x < -0.3 * wid or ob.x + wid > self.w + 0.3 * wid:
                ob.vx = -ob.vx
                ob.x = float(np.clip(ob.x, -0.3 * wid, self.w - 0.7 * wid))
            if ob.y < -0.3 * hgt or ob.y + hgt > self.h + 0.3 * hgt:
                ob.vy = -ob.vy
                ob.y = float(np.clip(ob.y, -0.3 * hgt, self.h - 0.7 * hgt))
            x0, y0 = int(round(ob.x)), int(round(ob.y))
            wi, hi = int(round(wid)), int(round(hgt))
            rgb, alpha = _sprite(CLASS_LIBRARY[ob.cls][2], ob.color, wi, hi, ob.light + 0.01 * t)
            # clip the sprite to the frame
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + wi, self.w), min(y0 + hi, self.h)
            if cx1 - cx0 < 8 or cy1 - cy0 < 8:
                continue
            sub_a = alpha[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0, None]
            sub = rgb[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            region = frame[cy0:cy1, cx0:cx1]
            region *= 1 - sub_a
            region += sub * sub_a
            boxes.append((cx0, cy0, cx1, cy1))
            labels.append(ob.cls)
        out = frame.astype(np.int16)
        out += self._noise[i % len(self._noise)]
        image = np.clip(out, 0, 255).astype(np.uint8)
        return (image, np.asarray(boxes, np.float64).reshape(-1, 4),
                np.asarray(labels, np.int64))


def stamp_ns(i: int, rate_hz: float = RATE_HZ) -> int:
    """Header stamp of synthetic frame `i`."""
    return START_NS + int(round(i * 1e9 / rate_hz))


def write_synthetic_bag(
    out: str | Path,
    frames: int = 300,
    seed: int = 0,
    size: tuple[int, int] = (640, 480),
    storage: str = "mcap",
    num_classes: int = 4,
    compressed: bool = False,
    objects_per_frame: tuple[int, int] = (1, 4),
    image_topic: str = "/camera/image_raw",
    labels_topic: str = "/labels",
    style: str = "lab",
    scene_length: tuple[int, int] | None = None,
    background: str = "mixed",
    scale: tuple[float, float] | None = None,
) -> Path:
    """Write a synthetic bag to `out` (a new directory); returns its path.

    `size` is (width, height). Also writes `out/classes.txt` (sorted class names). `style`:
    "lab" (coloured objects, `SyntheticScene`) or "photo" (marks that differ only in shape on
    photographs and textures, `synth_photo.PhotoScene`). `scene_length`: (min, max) frames of
    one scene, both included (default: the style's, 60-120 lab, 5-20 photo). `background`
    (photo style only): "mixed" (photographs and textures) or "plain" (flat grey, a control).
    `scale` (photo style only): (min, max) of a mark's longer side over the frame's shorter side
    (default 0.03-0.30).
    """
    from vit_perception.data.bag_writer import BagWriter

    out = Path(out)
    width, height = size
    scene: SyntheticScene | PhotoScene
    if scene_length is not None and not 1 <= scene_length[0] <= scene_length[1]:
        raise ValueError(f"scene length must be 1 <= MIN <= MAX frames, got {scene_length}")
    if background != "mixed" and style != "photo":
        raise ValueError(f"background {background!r} is for the photo style only")
    if scale is not None and style != "photo":
        raise ValueError("a mark scale is for the photo style only")
    if style == "lab":
        scene = SyntheticScene(width, height, num_classes, seed, objects_per_frame,
                               *([(scene_length[0], scene_length[1] + 1)] if scene_length
                                 else []))
    elif style == "photo":
        scene = PhotoScene(width, height, num_classes, seed, objects_per_frame,
                           *([scene_length] if scene_length else []), background=background,
                           **({"scale": scale} if scale else {}))
    else:
        raise ValueError(f"unknown synth style {style!r} (expected one of {', '.join(STYLES)})")
    names = scene.names
    with BagWriter(out, storage) as bag:
        bag.write_vision_info("/vision_info", stamp_ns(0), FRAME_ID, f"synthetic {style} objects",
                              "classes.txt:" + ",".join(sorted(names)), 1)
        for i in range(frames):
            image, boxes, labels = scene.render(i)
            stamp = stamp_ns(i)
            bag.write_image(image_topic, stamp, FRAME_ID, image, compressed=compressed)
            bag.write_detections(labels_topic, stamp, FRAME_ID, boxes,
                                 [names[k] for k in labels])
    (out / "classes.txt").write_text("".join(n + "\n" for n in sorted(names)))
    return out
