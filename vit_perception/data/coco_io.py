"""Bag frames <-> an image folder with COCO JSON, for labelling in CVAT or Label Studio.

`extract_frames` writes `OUT/images/frame_<index>.png` and `OUT/annotations.json` (images,
categories, and the bag's labels as annotations when it has any; each image records its
`ros_stamp_ns` and `frame_id`). `coco_to_bag` is the way back: a labelled COCO JSON and its image
folder become a bag with /camera/image_raw and /labels (plus `classes.txt` in category order)
that `read_frames` and the trainer read like any recorded bag.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from vit_perception.data.bags import read_frames


def _change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference (0-255) of two frames at 64x48."""
    def small(x):
        return cv2.resize(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), (64, 48),
                          interpolation=cv2.INTER_AREA).astype(np.float32)
    return float(np.abs(small(a) - small(b)).mean())


def extract_frames(bag: str | Path, out_dir: str | Path, image_topic: str = "/camera/image_raw",
                   labels_topic: str | None = "/labels", every: int = 1,
                   min_change: float | None = None, image_format: str = "png",
                   classes=None) -> Path:
    """Every `every`-th frame (or, with `min_change`, each frame whose mean grey-level change
    from the last kept one exceeds it) to `out_dir/images`; returns the COCO JSON path.

    `out_dir` appears only when the whole bag was read (a truncated bag raises `BagError` and
    leaves nothing); it must not exist, or be an empty folder.
    """
    from vit_perception.outputs import staged_output

    final = Path(out_dir)
    with staged_output(final) as staged:
        _extract_into(staged, bag, image_topic, labels_topic, every, min_change, image_format,
                      classes)
    return final / "annotations.json"


def _extract_into(out_dir: Path, bag, image_topic, labels_topic, every, min_change,
                  image_format, classes) -> None:
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True)
    stream = read_frames(bag, image_topic, labels_topic, classes=classes)
    images, annotations = [], []
    last = None
    for frame in stream:
        if min_change is not None:
            if last is not None and _change(frame.image, last) <= min_change:
                continue
            last = frame.image
        elif frame.index % max(1, every):
            continue
        name = f"frame_{frame.index:06d}.{image_format}"
        if not cv2.imwrite(str(img_dir / name), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{img_dir / name}: could not write the image")
        image_id = len(images) + 1
        h, w = frame.image.shape[:2]
        images.append({"id": image_id, "file_name": f"images/{name}", "width": w, "height": h,
                       "ros_stamp_ns": frame.stamp_ns, "frame_id": frame.frame_id})
        if frame.labelled:
            for (x1, y1, x2, y2), k in zip(frame.boxes, frame.labels):
                bw, bh = float(x2 - x1), float(y2 - y1)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": int(k) + 1,
                                    "bbox": [float(x1), float(y1), bw, bh],
                                    "area": bw * bh, "iscrowd": 0})
    coco = {
        "info": {"description": f"frames of {bag} ({image_topic})"},
        "images": images,
        "categories": [{"id": i + 1, "name": n, "supercategory": ""}
                       for i, n in enumerate(stream.classes)],
        "annotations": annotations,
    }
    (out_dir / "annotations.json").write_text(json.dumps(coco, indent=1) + "\n")


def coco_to_bag(coco_json: str | Path, out_bag: str | Path, image_dir: str | Path | None = None,
                storage: str = "mcap", compressed: bool = False,
                image_topic: str = "/camera/image_raw", labels_topic: str = "/labels",
                frame_id: str = "camera_optical_frame", rate_hz: float = 30.0) -> Path:
    """A labelled COCO JSON + its images as a training bag; returns the bag path.

    Image paths are `file_name` relative to `image_dir` (default: the JSON's folder; the
    basename under `image_dir/images` is tried too, as CVAT exports it); a `file_name` that is
    absolute or climbs out with `..` is refused, and no read leaves `image_dir`. Stamps are the
    images' `ros_stamp_ns` when present, else 30 Hz from 1.7e9 s. Crowd annotations are skipped.
    The bag appears only when every image was written (any error leaves nothing).
    """
    from vit_perception.outputs import staged_output

    coco_json = Path(coco_json)
    try:
        coco = json.loads(coco_json.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{coco_json}: not valid JSON ({exc})") from exc
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{coco_json}: not a COCO file (no 'images' list)")
    base = Path(image_dir) if image_dir else coco_json.parent
    _refuse_escaping_names(coco_json, coco["images"])
    final = Path(out_bag)
    with staged_output(final) as staged:
        _write_coco_bag(coco, coco_json, staged, base, storage, compressed, image_topic,
                        labels_topic, frame_id, rate_hz)
    return final


def _refuse_escaping_names(coco_json: Path, images: list) -> None:
    """`ValueError` naming every `file_name` that is absolute or contains `..`."""
    bad = [str(im.get("file_name")) for im in images
           if not isinstance(im.get("file_name"), str) or not im["file_name"]
           or Path(im["file_name"]).is_absolute() or ".." in Path(im["file_name"]).parts
           or "\\" in im["file_name"] and ".." in im["file_name"].split("\\")]
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (f" and {len(bad) - 5} more"
                                                       if len(bad) > 5 else "")
        raise ValueError(f"{coco_json}: image file_name {shown} is absolute or leaves the image "
                         "folder (..); file names must be relative paths inside it")


def _find_image(base: Path, file_name: str) -> Path | None:
    """The first candidate path of `file_name` that exists and resolves inside `base`."""
    root = base.resolve()
    for p in (base / file_name, base / "images" / Path(file_name).name,
              base / Path(file_name).name):
        if p.is_file() and p.resolve().is_relative_to(root):
            return p
    return None


def _write_coco_bag(coco: dict, coco_json: Path, out_bag: Path, base: Path, storage: str,
                    compressed: bool, image_topic: str, labels_topic: str, frame_id: str,
                    rate_hz: float) -> None:
    from vit_perception.data.bag_writer import BagWriter
    from vit_perception.data.synth import START_NS

    cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
    names = {c["id"]: str(c["name"]) for c in cats}
    anns: dict[int, list] = {}
    for a in coco.get("annotations", []):
        if not a.get("iscrowd", 0):
            anns.setdefault(a["image_id"], []).append(a)
    used = set()
    with BagWriter(out_bag, storage) as w:
        for i, im in enumerate(sorted(coco["images"], key=lambda x: x["id"])):
            path = _find_image(base, im["file_name"])
            if path is None:
                raise FileNotFoundError(f"{coco_json}: image {im['file_name']} not found "
                                        f"under {base}")
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"cannot read image {path}")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            stamp = int(im.get("ros_stamp_ns") or START_NS + round(i * 1e9 / rate_hz))
            if stamp in used:
                raise ValueError(f"{coco_json}: two images share stamp {stamp}")
            used.add(stamp)
            fid = str(im.get("frame_id") or frame_id)
            boxes, labels = [], []
            for a in anns.get(im["id"], []):
                x, y, bw, bh = (float(v) for v in a["bbox"])
                if bw <= 0 or bh <= 0:
                    continue
                boxes.append((x, y, x + bw, y + bh))
                labels.append(names[a["category_id"]])
            w.write_image(image_topic, stamp, fid, rgb, compressed=compressed)
            w.write_detections(labels_topic, stamp, fid, np.asarray(boxes).reshape(-1, 4), labels)
    (out_bag / "classes.txt").write_text("".join(n + "\n" for n in names.values()))
