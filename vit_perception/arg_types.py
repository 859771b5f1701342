"""argparse ``type=`` functions that refuse impossible values with a message naming them.

    parser.add_argument("--frames", type=positive_int)
    parser.add_argument("--size", type=image_size)   # "640x480" -> (640, 480)

argparse turns the ``ArgumentTypeError`` into ``vit-perception CMD: error: argument --frames:
...`` and exit code 2, before anything runs.
"""

from __future__ import annotations

import argparse
import math

MIN_SIDE = 32  # the smallest model input side any backbone runs (ViT patch 16, Swin stride 32)


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, not {text!r}") from exc
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {text!r}")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def positive_float(text: str) -> float:
    value = float(_number(text, float))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def image_size(text: str, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """``"WxH"`` -> ``(W, H)``, each side at least ``min_side`` pixels."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 640x480, not {text!r}") from exc
    if w < min_side or h < min_side:
        raise argparse.ArgumentTypeError(
            f"{text}: each side must be at least {min_side} pixels")
    return w, h
