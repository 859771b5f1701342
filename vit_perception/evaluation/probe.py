"""Feature quality of a backbone on a labelled bag, without training a detector.

Three numbers in 0-1 (DINO's evaluations, on the robot's own objects):

- ``knn_accuracy``: each ground-truth box becomes one object feature (the backbone's patch
  features averaged over the box, each patch weighted by the fraction of its cell the box
  covers, so boxes smaller than a patch still get one); frames are split into a train and a test
  part (first / last frames: no frame, and few scenes, lands on both sides); each test object
  takes the class of a cosine k-NN vote over the train objects (k = 20, votes weighted by
  ``exp(similarity / 0.07)`` as DINO's ``eval_knn`` does).
- ``linear_accuracy``: multinomial logistic regression (torch, L-BFGS, L2 chosen on the last
  quarter of the train frames) on the same split.
- ``attention_in_box``: the fraction of the [CLS] attention (mean over heads, renormalised over
  the patches) that falls inside the union of the frame's ground-truth boxes, averaged over the
  frames that have boxes. Attention spread evenly would score the boxes' share of the frame
  (``box_area_fraction``, printed beside it).

Two more, off the issue's list (``crop_size`` > 0): ``knn_accuracy_crop`` and
``linear_accuracy_crop``, the same classifiers on each box's own image embedding: a square crop
``CROP_CONTEXT`` times the box's longer side around its centre, resized to ``crop_size`` and
passed through the backbone alone, its [CLS] token (Swin: mean feature) taken, as DINO's k-NN
evaluation embeds whole images. Box pooling asks whether the dense patch grid holds the object;
the crop asks whether the backbone can tell the objects apart at all, wherever its patch grid
falls. A mark smaller than a patch can fail the first and pass the second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

KNN_K = 20
KNN_TEMPERATURE = 0.07
WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the linear probe's L2, chosen on train frames
CROP_CONTEXT = 2.0  # crop side / box's longer side: the object and as much of its surroundings


# ---------------------------------------------------------------- geometry


def cell_overlap(lo: float, hi: float, cells: int, cell: float) -> np.ndarray:
    """Fraction of each of ``cells`` 1-D cells of size ``cell`` that ``[lo, hi)`` covers."""
    edges = np.arange(cells + 1, dtype=np.float64) * cell
    return np.clip(np.minimum(hi, edges[1:]) - np.maximum(lo, edges[:-1]), 0, None) / cell


def box_weights(box: np.ndarray, grid: tuple[int, int], cell: tuple[float, float]) -> np.ndarray:
    """``[h, w]`` fraction of each feature cell covered by an xyxy box in input pixels.

    ``grid`` is (rows, cols); ``cell`` the cell size (height, width) in input pixels.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.outer(cell_overlap(y1, y2, grid[0], cell[0]), cell_overlap(x1, x2, grid[1], cell[1]))


def union_coverage(boxes: np.ndarray, grid: tuple[int, int], cell: tuple[float, float],
                   input_hw: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` fraction of each cell inside the union of ``boxes`` (xyxy, input pixels)."""
    import cv2

    ph, pw = int(round(grid[0] * cell[0])), int(round(grid[1] * cell[1]))
    mask = np.zeros((max(ph, input_hw[0]), max(pw, input_hw[1])), np.float32)
    for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
        mask[int(max(0, round(y1))):int(round(y2)), int(max(0, round(x1))):int(round(x2))] = 1
    return cv2.resize(mask[:ph, :pw], (grid[1], grid[0]), interpolation=cv2.INTER_AREA)


def pool_box_features(features: Tensor, boxes: np.ndarray, cell: tuple[float, float]
                      ) -> Tensor:
    """``features [C, h, w]`` -> ``[n, C]``, one coverage-weighted mean per xyxy box."""
    c, h, w = features.shape
    if len(boxes) == 0:
        return features.new_zeros(0, c)
    weights = np.stack([box_weights(b, (h, w), cell) for b in boxes])  # [n, h, w]
    wt = torch.as_tensor(weights, dtype=features.dtype, device=features.device).flatten(1)
    total = wt.sum(1, keepdim=True)
    return (wt @ features.flatten(1).T) / total.clamp(min=1e-12)


def box_crops(image: np.ndarray, boxes: np.ndarray, size: int,
              context: float = CROP_CONTEXT) -> np.ndarray:
    """``[n, size, size, C]`` square crops of ``image [H, W, C]``, one per xyxy box (frame
    pixels): ``context`` times the box's longer side (whole pixels), centred on the box, the
    frame's edge pixels repeated where the square leaves the frame."""
    import cv2

    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, image.shape[2]), image.dtype)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        side = max(2, int(round(context * max(x2 - x1, y2 - y1))))
        x0, y0 = int(round((x1 + x2 - side) / 2)), int(round((y1 + y2 - side) / 2))
        pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
        src = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
        cut = src[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(cut, (size, size), interpolation=interp).reshape(size, size, -1)
    return out


def attention_fraction(attention: Tensor, coverage: np.ndarray) -> float:
    """Share of a ``[heads, h, w]`` (or ``[h, w]``) attention map inside ``coverage [h, w]``."""
    att = attention.float()
    if att.ndim == 3:
        att = att.mean(0)
    att = att.clamp(min=0)
    total = float(att.sum())
    if total <= 0:
        return 0.0
    return float((att * torch.as_tensor(coverage, dtype=att.dtype)).sum()) / total


# ---------------------------------------------------------------- classifiers


@contextmanager
def _one_thread() -> Iterator[None]:
    """Small matrices on one thread: two OpenMP threads on a busy CPU made the probe's
    L-BFGS fits 100x slower (28 s against 0.2 s, measured), never faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def split_by_frame(frame_ids: np.ndarray, test_fraction: float = 0.5
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (train, test) masks over objects: the last ``test_fraction`` of the distinct
    frames (in frame order) are the test part, so one frame's objects never sit on both sides."""
    frames = np.unique(frame_ids)
    if len(frames) < 2:
        raise ValueError(f"need objects in at least 2 frames to split, got {len(frames)}")
    n_test = min(len(frames) - 1, max(1, int(round(len(frames) * test_fraction))))
    test_frames = frames[len(frames) - n_test:]
    test = np.isin(frame_ids, test_frames)
    return ~test, test


def knn_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                 k: int = KNN_K, temperature: float = KNN_TEMPERATURE) -> float:
    """Accuracy of a cosine k-NN classifier (DINO's weighted vote) on ``test_x [m, C]``."""
    if len(test_x) == 0 or len(train_x) == 0:
        raise ValueError("k-NN needs train and test objects")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    a, b = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    correct = 0
    with _one_thread():
        for start in range(0, len(b), 1024):
            sim = b[start:start + 1024] @ a.T  # [m, n]
            top, idx = sim.topk(min(k, len(a)), dim=1)
            votes = torch.zeros(len(top), num_classes)
            votes.scatter_add_(1, train_y[idx], (top / temperature).exp())
            correct += int((votes.argmax(1) == test_y[start:start + 1024]).sum())
    return correct / len(b)


def _fit_logistic(x: Tensor, y: Tensor, num_classes: int, weight_decay: float,
                  iterations: int) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression (L-BFGS, L2 on the weights): ``(w [C, K], b [K])``."""
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], lr=1.0, max_iter=iterations,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + bias, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), bias.detach()


def linear_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                    weight_decay: float | None = None, train_frames: np.ndarray | None = None,
                    iterations: int = 200) -> float:
    """Accuracy of a logistic-regression probe (features standardised on the train part).

    ``weight_decay`` None: picked from ``WEIGHT_DECAYS`` by accuracy on the last quarter of the
    train frames (``train_frames``: the frame of each train object, default one frame each),
    then the probe is refitted on the whole train part with it.
    """
    if len(test_x) == 0 or len(train_x) == 0:
        raise ValueError("the linear probe needs train and test objects")
    with _one_thread():
        return _linear_accuracy(train_x, train_y, test_x, test_y, weight_decay, train_frames,
                                iterations)


def _linear_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                     weight_decay: float | None, train_frames: np.ndarray | None,
                     iterations: int) -> float:
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    x = train_x.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)
    x, xt = (x - mean) / std, (test_x.double() - mean) / std
    if weight_decay is None:
        frames = np.arange(len(x)) if train_frames is None else np.asarray(train_frames)
        weight_decay = WEIGHT_DECAYS[len(WEIGHT_DECAYS) // 2]
        if len(np.unique(frames)) >= 4:
            fit, val = (torch.as_tensor(m) for m in split_by_frame(frames, 0.25))
            scores = []
            for wd in WEIGHT_DECAYS:
                w, b = _fit_logistic(x[fit], train_y[fit], num_classes, wd, iterations)
                scores.append(float(((x[val] @ w + b).argmax(1) == train_y[val]).double()
                                    .mean()))
            weight_decay = WEIGHT_DECAYS[int(np.argmax(scores))]
    w, b = _fit_logistic(x, train_y, num_classes, weight_decay, iterations)
    return float(((xt @ w + b).argmax(1) == test_y).double().mean())


# ---------------------------------------------------------------- the probe


@dataclass
class ProbeSample:
    """One frame kept for the figure: input-size image, boxes, features, attention."""

    index: int
    image: np.ndarray  # [H, W, 3] uint8, the model input (letterboxed)
    boxes: np.ndarray  # [n, 4] xyxy in input pixels
    names: list[str]
    features: np.ndarray  # [C, h, w]
    attention: np.ndarray  # [heads, h, w]


@dataclass
class ProbeResult:
    knn_accuracy: float
    linear_accuracy: float
    attention_in_box: float
    box_area_fraction: float  # what evenly spread attention would score
    objects: int
    train_objects: int
    test_objects: int
    frames: int
    classes: list[str]
    unseen_test_objects: int = 0  # test objects of a class with no train object
    samples: list[ProbeSample] = field(default_factory=list, repr=False)
    knn_accuracy_crop: float | None = None  # the same on each box's crop embedding
    linear_accuracy_crop: float | None = None
    # the pooled box features [objects, C] and each object's frame ordinal (probe --reference)
    pooled: Tensor | None = field(default=None, repr=False)
    frame_ids: np.ndarray | None = field(default=None, repr=False)

    def metrics(self) -> dict[str, float]:
        """The JSON the ``probe`` command writes."""
        out = {"knn_accuracy": self.knn_accuracy, "linear_accuracy": self.linear_accuracy,
               "attention_in_box": self.attention_in_box}
        if self.knn_accuracy_crop is not None and self.linear_accuracy_crop is not None:
            out.update(knn_accuracy_crop=self.knn_accuracy_crop,
                       linear_accuracy_crop=self.linear_accuracy_crop)
        return out


@dataclass
class _Batch:
    indices: list[int] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    names: list[list[str]] = field(default_factory=list)


class FeatureCollector:
    """Runs ``backbone`` over labelled frames, keeping one pooled feature per box and the
    attention share of each frame (``add(frame)`` then ``result()``); with ``crop_size`` > 0
    also each box's crop embedding (``box_crops``)."""

    def __init__(self, backbone: torch.nn.Module, input_size: tuple[int, int],
                 mean, std, device: str = "cpu", batch_size: int = 8,
                 keep: Iterable[int] = (), crop_size: int = 0):
        self.backbone = backbone.eval().to(device)
        self.input_size = input_size
        from vit_perception.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

        self.mean = tuple(mean) if mean is not None else IMAGENET_MEAN
        self.std = tuple(std) if std is not None else IMAGENET_STD
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.keep = set(keep)
        self.crop_size = int(crop_size)
        self.crop_feats: list[Tensor] = []
        self.feats: list[Tensor] = []
        self.labels: list[np.ndarray] = []
        self.frame_ids: list[np.ndarray] = []
        self.attention: list[float] = []
        self.coverage: list[float] = []
        self.samples: list[ProbeSample] = []
        self.frames = 0
        self._batch = _Batch()

    def add(self, ordinal: int, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
            names: list[str]) -> None:
        b = self._batch
        b.indices.append(ordinal)
        b.images.append(image)
        b.boxes.append(np.asarray(boxes, np.float64).reshape(-1, 4))
        b.labels.append(np.asarray(labels, np.int64))
        b.names.append(list(names))
        if len(b.images) >= self.batch_size:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        from vit_perception.models.preprocess import preprocess

        b, self._batch = self._batch, _Batch()
        if not b.images:
            return
        w, h = self.input_size
        x, boxes_lb = preprocess(b.images, w, h, self.mean, self.std, self.device)
        out = self.backbone(x)
        feats, att = out["features"].float().cpu(), out["attention"].float().cpu()
        ph, pw = out.get("padded_size", (h, w))
        grid = (feats.shape[-2], feats.shape[-1])
        cell = (ph / grid[0], pw / grid[1])
        for j, idx in enumerate(b.indices):
            self.frames += 1
            boxes = np.asarray(boxes_lb[j].to_input(b.boxes[j]), np.float64)
            if len(boxes):
                self.feats.append(pool_box_features(feats[j], boxes, cell))
                self.labels.append(b.labels[j])
                self.frame_ids.append(np.full(len(boxes), idx))
                cov = union_coverage(boxes, grid, cell, (h, w))
                self.attention.append(attention_fraction(att[j], cov))
                self.coverage.append(float(cov.mean()))
            if idx in self.keep:
                img = _denormalise(x[j].cpu(), self.mean, self.std)
                self.samples.append(ProbeSample(idx, img, boxes, b.names[j],
                                                feats[j].numpy(), att[j].numpy()))
        if self.crop_size > 0:
            crops = [box_crops(img, bx, self.crop_size) for img, bx in zip(b.images, b.boxes)
                     if len(bx)]
            if crops:
                self.crop_feats.append(self._embed(np.concatenate(crops)))

    def _embed(self, crops: np.ndarray) -> Tensor:
        """``[n, C]`` backbone embeddings ([CLS]) of ``crops [n, s, s, 3]`` uint8 RGB."""
        from vit_perception.models.preprocess import preprocess

        out = []
        for start in range(0, len(crops), 64):
            x, _ = preprocess(list(crops[start:start + 64]), self.crop_size, self.crop_size,
                              self.mean, self.std, self.device)
            out.append(self.backbone(x)["embedding"].float().cpu())
        return torch.cat(out)

    def pooled(self) -> tuple[Tensor, np.ndarray]:
        """(pooled box features ``[objects, C]``, each object's frame ordinal)."""
        self.flush()
        if not self.feats:
            raise ValueError("no labelled boxes found: the probe needs ground-truth boxes")
        return torch.cat(self.feats), np.concatenate(self.frame_ids)

    def result(self, classes: list[str], test_fraction: float = 0.5) -> ProbeResult:
        x, fid = self.pooled()
        y = torch.as_tensor(np.concatenate(self.labels))
        train, test = split_by_frame(fid, test_fraction)
        tr, te = torch.as_tensor(train), torch.as_tensor(test)
        knn_crop = linear_crop = None
        if self.crop_feats:
            xc = torch.cat(self.crop_feats)
            knn_crop = knn_accuracy(xc[tr], y[tr], xc[te], y[te])
            linear_crop = linear_accuracy(xc[tr], y[tr], xc[te], y[te], train_frames=fid[train])
        return ProbeResult(
            knn_accuracy=knn_accuracy(x[tr], y[tr], x[te], y[te]),
            linear_accuracy=linear_accuracy(x[tr], y[tr], x[te], y[te],
                                            train_frames=fid[train]),
            attention_in_box=float(np.mean(self.attention)),
            box_area_fraction=float(np.mean(self.coverage)),
            objects=len(x), train_objects=int(train.sum()), test_objects=int(test.sum()),
            frames=self.frames, classes=classes,
            unseen_test_objects=int((~torch.isin(y[te], y[tr])).sum()),
            samples=sorted(self.samples, key=lambda s: s.index),
            knn_accuracy_crop=knn_crop, linear_accuracy_crop=linear_crop, pooled=x,
            frame_ids=fid)


def _denormalise(x: Tensor, mean, std) -> np.ndarray:
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return ((x * s + m) * 255).clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


def probe_frames(backbone: torch.nn.Module, frames: Iterable, classes: list[str],
                 input_size: tuple[int, int], mean, std, *, device: str = "cpu",
                 batch_size: int = 8, test_fraction: float = 0.5, keep: Iterable[int] = (),
                 progress: Callable[[int], None] | None = None, crop_size: int = 0
                 ) -> ProbeResult:
    """Probe ``backbone`` (a module returning ``features``/``attention``) on labelled frames
    (``data.bags.Frame`` objects; unlabelled ones are skipped). ``keep``: ordinals of frames
    to keep as figure samples; ``progress(n)`` is called once per frame; ``crop_size`` > 0
    adds the crop-embedding probes (``knn_accuracy_crop``, ``linear_accuracy_crop``)."""
    return collect_features(backbone, frames, input_size, mean, std, device=device,
                            batch_size=batch_size, keep=keep, progress=progress,
                            crop_size=crop_size).result(classes, test_fraction)


def collect_features(backbone: torch.nn.Module, frames: Iterable, input_size: tuple[int, int],
                     mean, std, *, device: str = "cpu", batch_size: int = 8,
                     keep: Iterable[int] = (), progress: Callable[[int], None] | None = None,
                     crop_size: int = 0) -> FeatureCollector:
    """``backbone`` run over the labelled ``frames``: the ``FeatureCollector``, for
    ``result()`` (the probes) or ``pooled()`` (the box features alone); both run its last
    batch."""
    collector = FeatureCollector(backbone, input_size, mean, std, device, batch_size, keep,
                                 crop_size)
    for ordinal, frame in enumerate(frames):
        if frame.labelled:
            collector.add(ordinal, frame.image, frame.boxes, frame.labels, frame.class_names)
        if progress is not None:
            progress(1)
    return collector
