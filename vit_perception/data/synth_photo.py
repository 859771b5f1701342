"""Harder synthetic frames (`synth --style photo`): flat marks that differ only in shape.

Every class is drawn from the same colour / grey, size, aspect and rotation distributions, so
only the outline tells classes apart. Marks are pasted on random crops of photographs (the ones
scikit-image bundles in its wheel; none are downloaded) or on OpenCV textures (smooth noise,
stripes, checkers), beside distractor shapes that are no class (bars, blobs, scribbles).
A mark's longer side is 3-30% of the frame's shorter side (log-uniform). Lighting (gain, gamma,
colour cast) drifts within a scene, and each scene has its own blur (none, Gaussian or motion).

`PhotoScene.render(i) -> (rgb [H, W, 3] uint8, boxes [n, 4] xyxy px, labels [n])`, like
`synth.SyntheticScene`; boxes are the tight bounds of each mark's visible pixels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

log = logging.getLogger(__name__)

# class names, one shape each (outlines in unit coordinates, see _shape_ops)
PHOTO_CLASSES = ["disc", "square", "triangle", "star", "cross", "ring", "hexagon", "arrow",
                 "crescent", "tee"]
# scikit-image photographs shipped inside its wheel (no pooch download needed)
PHOTOGRAPHS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "grass", "gravel",
               "coins", "clock", "moon", "hubble_deep_field"]
SCALE_RANGE = (0.03, 0.30)  # a mark's longer side / the frame's shorter side
MIN_SIDE = 8  # px: smaller marks (tiny frames) are drawn at this size
# mixed: photographs (65%) and textures; plain: one flat grey level per scene, a control that
# leaves the marks' shapes (and their random colours) the only structure in a frame
BACKGROUNDS = ("mixed", "plain")


def photo_class_names(num_classes: int) -> list[str]:
    """Names of the first `num_classes` shape classes (1..10), in library order."""
    if not 1 <= num_classes <= len(PHOTO_CLASSES):
        raise ValueError(f"--classes must be 1..{len(PHOTO_CLASSES)} for --style photo, "
                         f"got {num_classes}")
    return PHOTO_CLASSES[:num_classes]


@lru_cache(maxsize=1)
def photographs() -> tuple[np.ndarray, ...]:
    """The bundled scikit-image photographs as RGB uint8 (greys replicated); may be empty."""
    try:
        import skimage.data as skdata
    except ImportError:
        log.warning("scikit-image is not installed: --style photo uses textured backgrounds only")
        return ()
    out = []
    for name in PHOTOGRAPHS:
        try:
            img = np.asarray(getattr(skdata, name)())
        except Exception as exc:  # noqa: BLE001 - a missing file must not stop the others
            log.warning("skimage.data.%s unavailable (%s): skipped", name, exc)
            continue
        if img.dtype != np.uint8:
            img = (img.astype(np.float32) * (255.0 / max(float(img.max()), 1.0))).astype(np.uint8)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.ascontiguousarray(img[..., :3]))
    return tuple(out)


# ---------------------------------------------------------------- shapes


def _circle(cx: float, cy: float, r: float, n: int = 48) -> np.ndarray:
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)


def _regular(n: int, r: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    a = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _shape_ops(shape: str) -> list[tuple[np.ndarray, int]]:
    """A shape as polygons in [-1, 1]^2, each filled with 255 (add) or 0 (cut), in order."""
    if shape == "disc":
        return [(_circle(0, 0, 1), 255)]
    if shape == "square":
        return [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)]
    if shape == "triangle":
        return [(np.array([[0, -1], [1, 1], [-1, 1]], float), 255)]
    if shape == "star":
        a = -math.pi / 2 + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return [(np.stack([r * np.cos(a), r * np.sin(a)], 1), 255)]
    if shape == "cross":
        t = 0.33
        return [(np.array([[-t, -1], [t, -1], [t, 1], [-t, 1]], float), 255),
                (np.array([[-1, -t], [1, -t], [1, t], [-1, t]], float), 255)]
    if shape == "ring":
        return [(_circle(0, 0, 1), 255), (_circle(0, 0, 0.55), 0)]
    if shape == "hexagon":
        return [(_regular(6, 1.0, 0.0), 255)]
    if shape == "arrow":
        return [(np.array([[-1, -0.3], [0.15, -0.3], [0.15, -0.85], [1, 0], [0.15, 0.85],
                           [0.15, 0.3], [-1, 0.3]], float), 255)]
    if shape == "crescent":
        return [(_circle(0, 0, 1), 255), (_circle(0.45, -0.25, 0.8), 0)]
    if shape == "tee":
        return [(np.array([[-1, -1], [1, -1], [1, -0.45], [0.28, -0.45], [0.28, 1],
                           [-0.28, 1], [-0.28, -0.45], [-1, -0.45]], float), 255)]
    raise ValueError(f"unknown shape {shape!r}")


def _distractor_ops(rng: np.random.Generator) -> list[tuple[np.ndarray, int]]:
    """A shape that is no class: a long bar, a lumpy blob or a thick scribble."""
    kind = int(rng.integers(3))
    if kind == 0:  # bar, aspect 3-7
        t = 1.0 / rng.uniform(3, 7)
        return [(np.array([[-1, -t], [1, -t], [1, t], [-1, t]], float), 255)]
    if kind == 1:  # blob: a circle with low-frequency lumps
        a = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        r = 0.7 + sum(rng.uniform(0.1, 0.2) * np.cos(k * a + rng.uniform(0, 6.3))
                      for k in (2, 3, 5))
        r = r / r.max()
        return [(np.stack([r * np.cos(a), r * np.sin(a)], 1), 255)]
    # scribble: a thick open polyline through random points
    pts = rng.uniform(-1, 1, (int(rng.integers(3, 6)), 2))
    return [(pts, -1)]


def _rasterise(ops, w: float, h: float, angle: float) -> np.ndarray:
    """Mask (uint8, anti-aliased) of `ops` scaled to `w x h`, rotated by `angle` (rad); the
    canvas just holds the rotated shape."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    half = np.array([w / 2, h / 2])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ rot.T
    cw = max(2, int(math.ceil(2 * np.abs(corners[:, 0]).max())) + 2)
    ch = max(2, int(math.ceil(2 * np.abs(corners[:, 1]).max())) + 2)
    mask = np.zeros((ch, cw), np.uint8)
    sh = 4
    for poly, value in ops:
        p = (poly * half) @ rot.T + np.array([cw / 2, ch / 2])
        ip = np.round(p * (1 << sh)).astype(np.int32)
        if value < 0:  # thick polyline
            th = max(2, int(round(0.18 * min(w, h))))
            cv2.polylines(mask, [ip], False, 255, th, cv2.LINE_AA, sh)
        else:
            cv2.fillPoly(mask, [ip], value, cv2.LINE_AA, sh)
    return mask


def _appearance(rng: np.random.Generator, mask: np.ndarray, color: np.ndarray) -> np.ndarray:
    """RGB float `[h, w, 3]`: `color` with a random shading gradient and fine grain."""
    h, w = mask.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    g = ((x / max(w, 1) - 0.5) * math.cos(a) + (y / max(h, 1) - 0.5) * math.sin(a))
    shade = 1 + rng.uniform(0.1, 0.5) * g
    rgb = color[None, None, :] * shade[..., None]
    rgb = rgb + rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    if rng.random() < 0.5:  # a darker or lighter rim
        edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        rgb = rgb * (1 - rng.uniform(-0.3, 0.5) * edge[..., None].astype(np.float32) / 255)
    return np.clip(rgb, 0, 255).astype(np.float32)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    """The one colour distribution of every mark and distractor: a grey or a random colour."""
    if rng.random() < 0.4:
        return np.full(3, rng.uniform(15, 240), np.float32)
    return rng.uniform(15, 240, 3).astype(np.float32)


# ---------------------------------------------------------------- backgrounds


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Multi-octave value noise in [0, 1], `[h, w]` float32."""
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for cells, amp in ((4, 1.0), (12, 0.5), (40, 0.25)):
        small = rng.random((max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w))),
                           dtype=np.float32)
        out += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
    return np.clip(out / total, 0, 1)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured `[h, w, 3]` float background: smooth noise, stripes or a checker, rotated."""
    c0, c1 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    kind = int(rng.integers(3))
    if kind == 0:
        t = _smooth_noise(rng, h, w)
    else:
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, math.pi)
        period = rng.uniform(8, 0.25 * max(h, w))
        u = (x * math.cos(a) + y * math.sin(a)) / period
        if kind == 1:  # stripes, sinusoidal or hard
            t = 0.5 + 0.5 * np.sin(2 * math.pi * u)
            if rng.random() < 0.5:
                t = (t > 0.5).astype(np.float32)
        else:  # checker
            v = (-x * math.sin(a) + y * math.cos(a)) / period
            t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
            t = cv2.GaussianBlur(t, (0, 0), 0.7)
        t = 0.8 * t + 0.2 * _smooth_noise(rng, h, w)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return img.astype(np.float32)


def _photo_crop(rng: np.random.Generator, photo: np.ndarray, h: int, w: int) -> np.ndarray:
    """A random crop (35-100% of the photograph's largest fitting window), flipped at random,
    resized to `[h, w, 3]` float; grey photographs get a random tint."""
    ph, pw = photo.shape[:2]
    aspect = w / h
    fit_w = min(pw, ph * aspect)
    cw = fit_w * rng.uniform(0.35, 1.0)
    chh = cw / aspect
    x0 = rng.uniform(0, pw - cw)
    y0 = rng.uniform(0, ph - chh)
    crop = photo[int(y0):int(y0 + chh) + 1, int(x0):int(x0 + cw) + 1]
    img = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if np.ptp(photo[..., 0].astype(np.int16) - photo[..., 1]) == 0:  # grey
        img = img * rng.uniform(0.75, 1.15, 3).astype(np.float32)
    return np.ascontiguousarray(img)


def _blur_kernel(rng: np.random.Generator) -> np.ndarray | float | None:
    """A scene's blur: None, a Gaussian sigma, or a motion-blur line kernel."""
    r = rng.random()
    if r < 0.4:
        return None
    if r < 0.75:
        return float(rng.uniform(0.5, 2.0))
    n = int(rng.integers(3, 9))
    k = np.zeros((n, n), np.float32)
    a = rng.uniform(0, math.pi)
    c = (n - 1) / 2
    cv2.line(k, (int(round(c - c * math.cos(a))), int(round(c - c * math.sin(a)))),
             (int(round(c + c * math.cos(a))), int(round(c + c * math.sin(a)))), 1.0, 1)
    return k / k.sum()


# ---------------------------------------------------------------- scene


@dataclass
class _Mark:
    cls: int  # -1: distractor
    ops: list
    color: np.ndarray
    side: float  # longer side in px
    aspect: float
    angle: float
    spin: float
    x: float  # centre
    y: float
    vx: float
    vy: float
    grow: float
    phase: float
    seed: int


class PhotoScene:
    """Frames of one photo-style stream: `render(i) -> (rgb, boxes [n, 4] xyxy, labels [n])`."""

    def __init__(self, width: int = 640, height: int = 480, num_classes: int = 10, seed: int = 0,
                 objects_per_frame: tuple[int, int] = (1, 4), scene_length: tuple[int, int] =
                 (5, 20), distractors: tuple[int, int] = (0, 3), background: str = "mixed",
                 scale: tuple[float, float] = SCALE_RANGE):
        if background not in BACKGROUNDS:
            raise ValueError(f"unknown photo background {background!r} (expected one of "
                             f"{', '.join(BACKGROUNDS)})")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"mark scale must be 0 < MIN <= MAX <= 1 (a mark's longer side over "
                             f"the frame's shorter side), got {scale[0]:g}-{scale[1]:g}")
        self.background = background
        self.w, self.h = width, height
        self.names = photo_class_names(num_classes)
        self.rng = np.random.default_rng(seed)
        self.objects_per_frame = objects_per_frame
        self.scene_length = scene_length
        self.distractors = distractors
        self.margin = max(8, min(width, height) // 10)
        short = min(width, height)
        self.min_side = max(float(MIN_SIDE), scale[0] * short)
        self.max_side = max(self.min_side + 1, scale[1] * short)
        self.photos = photographs() if background == "mixed" else ()  # plain: none drawn
        self._scene_end = -1
        self._noise = [self.rng.normal(0, 3, (height, width, 3)).astype(np.float32)
                       for _ in range(3)]

    # -- scene set-up
    def _new_mark(self, cls: int) -> _Mark:
        rng = self.rng
        side = float(np.exp(rng.uniform(math.log(self.min_side), math.log(self.max_side))))
        ops = _shape_ops(self.names[cls]) if cls >= 0 else _distractor_ops(rng)
        x, y = rng.uniform(0, self.w), rng.uniform(0, self.h)
        color = _random_color(rng)
        # a mark as bright as the background around it would be invisible: push it darker
        # or lighter (the rule looks at the background only, never at the class)
        m, r = self.margin, int(side) // 2
        cy, cx = int(y) + m, int(x) + m
        around = self._bg[max(0, cy - r):cy + r + 1, max(0, cx - r):cx + r + 1]
        if around.size and abs(float(color.mean()) - float(around.mean())) < 35:
            color = (color * 0.35 if around.mean() > 127 else color + (255 - color) * 0.65
                     ).astype(np.float32)
        return _Mark(
            cls=cls, ops=ops, color=color, side=side,
            aspect=float(np.exp(rng.uniform(-0.25, 0.25))), angle=rng.uniform(-0.5, 0.5),
            spin=rng.normal(0, 0.01), x=x, y=y,
            vx=rng.normal(0, 0.006 * self.w), vy=rng.normal(0, 0.006 * self.h),
            grow=rng.uniform(0, 0.2), phase=rng.uniform(0, 6.28), seed=int(rng.integers(2**31)))

    def _new_scene(self, start: int) -> None:
        rng = self.rng
        m = self.margin
        bh, bw = self.h + 2 * m, self.w + 2 * m
        if self.background == "plain":  # a control: one flat grey level, nothing to learn there
            self._bg = np.full((bh, bw, 3), rng.uniform(40, 215), np.float32)
        elif self.photos and rng.random() < 0.65:
            photo = self.photos[int(rng.integers(len(self.photos)))]
            self._bg = _photo_crop(rng, photo, bh, bw)
        else:
            self._bg = _texture(rng, bh, bw)
        self._pan = (rng.uniform(0, 1) * m, rng.uniform(0, 1) * m, rng.uniform(0.02, 0.08),
                     rng.uniform(0.02, 0.08), rng.uniform(0, 6.28))
        # lighting: gain, gamma, colour cast at the scene's start and end (linear drift)
        self._light = [(rng.uniform(0.6, 1.35), rng.uniform(0.7, 1.4),
                        rng.uniform(0.85, 1.15, 3).astype(np.float32)) for _ in range(2)]
        self._blur = _blur_kernel(rng)
        self._scene_start = start
        self._scene_end = start + int(rng.integers(self.scene_length[0],
                                                   self.scene_length[1] + 1))
        lo, hi = self.distractors
        self._marks = [self._new_mark(-1) for _ in range(int(rng.integers(lo, hi + 1)))]
        lo, hi = self.objects_per_frame
        for _ in range(int(rng.integers(lo, hi + 1))):
            self._marks.append(self._new_mark(int(rng.integers(len(self.names)))))

    # -- drawing
    def _paste(self, frame: np.ndarray, mark: _Mark, t: int) -> tuple[int, int, int, int] | None:
        side = float(np.clip(mark.side * (1 + mark.grow * math.sin(0.1 * t + mark.phase)),
                             self.min_side, self.max_side))
        w, h = (side, side / mark.aspect) if mark.aspect >= 1 else (side * mark.aspect, side)
        mask = _rasterise(mark.ops, w, h, mark.angle + mark.spin * t)
        rgb = _appearance(np.random.default_rng(mark.seed), mask, mark.color)
        mh, mw = mask.shape
        x0, y0 = int(round(mark.x - mw / 2)), int(round(mark.y - mh / 2))
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + mw, self.w), min(y0 + mh, self.h)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        sub_m = mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        a = sub_m.astype(np.float32)[..., None] / 255
        region = frame[cy0:cy1, cx0:cx1]
        region *= 1 - a
        region += rgb[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] * a
        ys, xs = np.nonzero(sub_m >= 128)
        if len(xs) < 0.5 * (mask >= 128).sum() or len(xs) == 0:
            return None  # mostly outside the frame: not labelled
        box = (cx0 + int(xs.min()), cy0 + int(ys.min()), cx0 + int(xs.max()) + 1,
               cy0 + int(ys.max()) + 1)
        if box[2] - box[0] < MIN_SIDE // 2 or box[3] - box[1] < MIN_SIDE // 2:
            return None
        return box

    def _move(self, mark: _Mark) -> None:
        mark.x += mark.vx
        mark.y += mark.vy
        if not 0 <= mark.x <= self.w:
            mark.vx = -mark.vx
            mark.x = float(np.clip(mark.x, 0, self.w))
        if not 0 <= mark.y <= self.h:
            mark.vy = -mark.vy
            mark.y = float(np.clip(mark.y, 0, self.h))

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame `i` (call in increasing order): RGB image, boxes xyxy px, class indices."""
        if i >= self._scene_end:
            self._new_scene(i)
        t = i - self._scene_start
        ax, ay, fx, fy, ph = self._pan
        ox = int(round(self.margin + ax * math.sin(fx * t + ph)))
        oy = int(round(self.margin + ay * math.sin(fy * t + 2 * ph)))
        frame = self._bg[oy:oy + self.h, ox:ox + self.w].copy()
        boxes, labels = [], []
        for mark in self._marks:
            self._move(mark)
            box = self._paste(frame, mark, t)
            if box is not None and mark.cls >= 0:
                boxes.append(box)
                labels.append(mark.cls)
        # lighting drifts linearly from the scene's first to its last setting
        f = t / max(1, self._scene_end - self._scene_start - 1)
        (g0, gm0, c0), (g1, gm1, c1) = self._light
        gain, gamma, cast = g0 + f * (g1 - g0), gm0 + f * (gm1 - gm0), c0 + f * (c1 - c0)
        frame = 255.0 * (np.clip(frame, 0, 255) / 255.0) ** gamma * gain * cast
        if isinstance(self._blur, float):
            frame = cv2.GaussianBlur(frame, (0, 0), self._blur)
        elif self._blur is not None:
            frame = cv2.filter2D(frame, -1, self._blur)
        frame += self._noise[i % len(self._noise)]
        image = np.clip(frame, 0, 255).astype(np.uint8)
        return (image, np.asarray(boxes, np.float64).reshape(-1, 4),
                np.asarray(labels, np.int64))
