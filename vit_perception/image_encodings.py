"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

The conversions follow the ROS 2 cv_bridge (`imgmsg_to_cv2(msg, "rgb8")`, which ends in the C++
`toCvCopyImpl`) step for step, so a frame decodes to the same pixels here as with cv_bridge.
Codes are from `getConversionCodes()` / `toCvCopyImpl()` / `matFromImage()` in
ros-perception/vision_opencv `cv_bridge/src/cv_bridge.cpp`:

    encoding               cv_bridge path to rgb8                      note
    rgb8                   copy (same encoding)                        zero-copy view here
    bgr8                   cv::COLOR_BGR2RGB
    rgba8 / bgra8          cv::COLOR_RGBA2RGB / cv::COLOR_BGRA2RGB
    mono8                  cv::COLOR_GRAY2RGB
    mono16                 cv::COLOR_GRAY2RGB, then convertTo(CV_8U, 255/65535)  (round to nearest)
    rgb16                  convertTo(CV_8U, 255/65535)
    bgr16                  cv::COLOR_BGR2RGB, then convertTo(CV_8U, 255/65535)
    rgba16 / bgra16        cv::COLOR_RGBA2RGB / cv::COLOR_BGRA2RGB, then the same scaling
    yuv422 (= uyvy)        cv::COLOR_YUV2RGB_UYVY                      BT.601 limited range
    yuv422_yuy2 (= yuyv)   cv::COLOR_YUV2RGB_YUY2
    bayer_rggb8            cv::COLOR_BayerBG2RGB   OpenCV names the pattern of the 2x2 block that
    bayer_bggr8            cv::COLOR_BayerRG2RGB   starts at pixel (1, 1), so its letters are the
    bayer_gbrg8            cv::COLOR_BayerGR2RGB   ROS ones shifted by one; bilinear demosaicing
    bayer_grbg8            cv::COLOR_BayerGB2RGB   (the cvtColor default, not VNG/EA)

16-bit data whose `is_bigendian` differs from this machine is byte-swapped first (cv_bridge's
`matFromImage` does the same). The generic names `8UC1`, `8UC3`, `8UC4` and `16UC1` decode with
`image_to_array`; cv_bridge's `imgmsg_to_cv2(msg, "rgb8")` refuses them ("not a color format").
`image_to_rgb` reads `16UC1` as mono16, as cv_bridge's `cvtColorForDisplay` does. For the 8-bit
ones `cvtColorForDisplay` compares against "CV_8UC1", "CV_8UC3", "CV_8UC4", names no ROS message
carries, so it refuses them too; here they read as mono8, bgr8 and bgra8 (OpenCV's channel
order), a choice of this package and not cv_bridge behaviour.

yuv422 (uyvy, yuyv) at an odd width: a row holds `2 * width` bytes, so the last pixel has its Y
and one chroma sample but no partner. OpenCV's converters accept only even widths (OpenCV 5
asserts it; cv_bridge on OpenCV 4 returns an image whose last column it reads from past the
pair). Here the last pixel takes the missing chroma sample from the pair to its left (neutral
128 for a one-pixel-wide image); every other pixel equals cv_bridge's.

CompressedImage follows cv_bridge's `toCvCopy(CompressedImage, "rgb8")`: `cv::imdecode` gives
BGR, then `cv::COLOR_BGR2RGB`. Single-channel (mono) and 16-bit PNGs, which cv_bridge cannot turn
into rgb8, are expanded the same way as mono8 / mono16 messages.

Every failure raises `ImageDecodeError` with a `kind` from `ERROR_KINDS`, so a node can count
bad input by kind and drop it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

MAX_SIDE = 16384
MAX_BYTES = 256 * 1024 * 1024

ERROR_KINDS = (
    "unsupported_encoding",
    "truncated_data",
    "step_mismatch",
    "bad_size",
    "corrupt_compressed",
)


class ImageDecodeError(ValueError):
    """An image message that cannot be decoded; `kind` is one of `ERROR_KINDS`."""

    def __init__(self, kind: str, message: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ImageDecodeError kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class _Layout:
    dtype: str  # numpy dtype of one channel, without byte order
    channels: int
    to_rgb: int | None  # cv2 conversion code to RGB; None: already RGB
    scale16: bool = False  # 16-bit data scaled to 8 bits (cv_bridge's convertTo 255/65535)


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout("u1", 3, None),
    "bgr8": _Layout("u1", 3, cv2.COLOR_BGR2RGB),
    "rgba8": _Layout("u1", 4, cv2.COLOR_RGBA2RGB),
    "bgra8": _Layout("u1", 4, cv2.COLOR_BGRA2RGB),
    "mono8": _Layout("u1", 1, cv2.COLOR_GRAY2RGB),
    "mono16": _Layout("u2", 1, cv2.COLOR_GRAY2RGB, scale16=True),
    "rgb16": _Layout("u2", 3, None, scale16=True),
    "bgr16": _Layout("u2", 3, cv2.COLOR_BGR2RGB, scale16=True),
    "rgba16": _Layout("u2", 4, cv2.COLOR_RGBA2RGB, scale16=True),
    "bgra16": _Layout("u2", 4, cv2.COLOR_BGRA2RGB, scale16=True),
    "yuv422": _Layout("u1", 2, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": _Layout("u1", 2, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": _Layout("u1", 2, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": _Layout("u1", 2, cv2.COLOR_YUV2RGB_YUY2),
    "bayer_rggb8": _Layout("u1", 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": _Layout("u1", 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": _Layout("u1", 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": _Layout("u1", 1, cv2.COLOR_BayerGB2RGB),
    # Generic OpenCV-type names: cv_bridge's cvtColorForDisplay reading for image_to_rgb.
    "8UC1": _Layout("u1", 1, cv2.COLOR_GRAY2RGB),
    "8UC3": _Layout("u1", 3, cv2.COLOR_BGR2RGB),
    "8UC4": _Layout("u1", 4, cv2.COLOR_BGRA2RGB),
    "16UC1": _Layout("u2", 1, cv2.COLOR_GRAY2RGB, scale16=True),
}

SUPPORTED_ENCODINGS = tuple(_LAYOUTS)
_YUV422 = {"yuv422", "uyvy", "yuv422_yuy2", "yuyv"}
_NATIVE_BIG = sys.byteorder == "big"


def _as_bytes_array(data) -> np.ndarray:
    """Flat uint8 view of a message's data (bytes, bytearray, memoryview, array, ndarray)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = data.view(np.uint8) if data.flags.c_contiguous else data.astype(np.uint8)
        return data.reshape(-1)
    if isinstance(data, list | tuple):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageDecodeError("bad_size", f"image is {width}x{height}")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ImageDecodeError("bad_size", f"image is {width}x{height}, over {MAX_SIDE} a side")


def image_to_array(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: int | bool,
    data,
) -> np.ndarray:
    """The message's pixels in their own layout, like `imgmsg_to_cv2(msg, "passthrough")`.

    Returns `[height, width]` for one channel, else `[height, width, channels]`, of uint8 or
    native-endian uint16. Where the data needs no byte swap the result is a view of `data`
    (zero-copy, read-only when `data` is `bytes`, possibly strided when `step` has padding);
    it keeps `data` alive. Raises `ImageDecodeError`.
    """
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageDecodeError("unsupported_encoding", f"encoding {encoding!r} is not supported")
    height, width, step = int(height), int(width), int(step)
    _check_size(height, width)
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    if step < row_bytes or step % itemsize:
        raise ImageDecodeError(
            "step_mismatch",
            f"step {step} for {width} px of {encoding} (a row needs {row_bytes} bytes"
            + (f", in whole {itemsize}-byte units)" if itemsize > 1 else ")"),
        )
    size = height * step
    if size > MAX_BYTES:
        raise ImageDecodeError("bad_size", f"{size} bytes is over the {MAX_BYTES} byte limit")
    buf = _as_bytes_array(data)
    if buf.size < size:
        raise ImageDecodeError("truncated_data", f"{buf.size} bytes, need height*step = {size}")
    if buf.size > size:
        raise ImageDecodeError(
            "step_mismatch", f"{buf.size} bytes, but height*step = {height}*{step} = {size}"
        )
    if encoding.startswith("bayer_") and (width < 2 or height < 2):
        raise ImageDecodeError("bad_size", f"{encoding} needs at least 2x2 pixels")
    swap = itemsize > 1 and bool(is_bigendian) != _NATIVE_BIG
    dtype = np.dtype(layout.dtype).newbyteorder(">" if bool(is_bigendian) else "<")
    if itemsize == 1:
        dtype = np.dtype(np.uint8)
    shape: tuple[int, ...] = (height, width, layout.channels)
    strides: tuple[int, ...] = (step, layout.channels * itemsize, itemsize)
    if layout.channels == 1:
        shape, strides = shape[:2], strides[:2]
    view = np.ndarray(shape, dtype=dtype, buffer=buf, strides=strides)
    if swap:
        return view.astype(dtype.newbyteorder("="))  # a native-endian copy, as cv_bridge makes
    if itemsize > 1:
        view = view.view(dtype.newbyteorder("="))
    return view


def _scale16(image: np.ndarray) -> np.ndarray:
    """uint16 -> uint8 as cv_bridge's `convertTo(CV_8U, 255/65535)`: round(x / 257)."""
    return cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)


def image_to_rgb(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: int | bool,
    data,
) -> np.ndarray:
    """A sensor_msgs/Image's fields as `[height, width, 3]` uint8 RGB.

    Equal to the ROS 2 cv_bridge's `imgmsg_to_cv2(msg, "rgb8")` (table in the module
    docstring). For rgb8 the result is a read-only view of `data` (no copy); copy it before
    writing. Raises `ImageDecodeError`.
    """
    array = image_to_array(encoding, height, width, step, is_bigendian, data)
    layout = _LAYOUTS[encoding]
    if layout.scale16:
        array = _scale16(array)
    if layout.to_rgb is None:
        return array
    if encoding in _YUV422 and array.shape[1] % 2:
        return _odd_yuv422_to_rgb(array, layout.to_rgb)
    try:
        return cv2.cvtColor(array, layout.to_rgb)
    except cv2.error as exc:  # shapes OpenCV refuses that the checks above did not catch
        raise ImageDecodeError("bad_size", f"OpenCV cannot convert {encoding}: {exc}") from exc


def _odd_yuv422_to_rgb(array: np.ndarray, code: int) -> np.ndarray:
    """yuv422 `[H, W, 2]` with odd W: pad one pixel whose chroma byte repeats the missing
    sample of the last full pair (128 when there is none), convert, crop (module docstring)."""
    h, w = array.shape[:2]
    padded = np.empty((h, w + 1, 2), np.uint8)
    padded[:, :w] = array
    uyvy = code == cv2.COLOR_YUV2RGB_UYVY
    # A pair is two pixels of two bytes: UYVY (U, Y0) (V, Y1), YUYV (Y0, U) (Y1, V); the odd
    # last pixel holds (U, Y) or (Y, U) and the pad pixel gets (V, Y) or (Y, V).
    if uyvy:
        padded[:, w, 0] = array[:, w - 2, 0] if w >= 3 else 128  # V of the last full pair
        padded[:, w, 1] = array[:, w - 1, 1]  # Y of the last pixel again
    else:
        padded[:, w, 0] = array[:, w - 1, 0]
        padded[:, w, 1] = array[:, w - 2, 1] if w >= 3 else 128
    return np.ascontiguousarray(cv2.cvtColor(padded, code)[:, :w])


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> dict:
    """Fields for a sensor_msgs/Image from an RGB frame (or a `[H, W]` mono8 image).

    Returns `dict(height, width, encoding, is_bigendian, step, data)` with `data` as `bytes`
    (assigning bytes to `msg.data` is far faster than assigning an array).
    Encodings: rgb8, bgr8, rgba8, bgra8, mono8.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {rgb.dtype}")
    out: np.ndarray
    if rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 1):
        mono = rgb.reshape(rgb.shape[:2])
        if encoding != "mono8":
            raise ValueError(f"a single-channel image publishes as mono8, not {encoding!r}")
        out = mono
    elif rgb.ndim == 3 and rgb.shape[2] == 3:
        codes = {
            "rgb8": None,
            "bgr8": cv2.COLOR_RGB2BGR,
            "rgba8": cv2.COLOR_RGB2RGBA,
            "bgra8": cv2.COLOR_RGB2BGRA,
            "mono8": cv2.COLOR_RGB2GRAY,
        }
        if encoding not in codes:
            raise ValueError(f"cannot publish RGB as {encoding!r}; use one of {list(codes)}")
        code = codes[encoding]
        out = rgb if code is None else cv2.cvtColor(rgb, code)
    else:
        raise ValueError(f"expected [H, W, 3] RGB or [H, W] mono, got shape {rgb.shape}")
    height, width = int(out.shape[0]), int(out.shape[1])
    channels = 1 if out.ndim == 2 else int(out.shape[2])
    return {
        "height": int(height),
        "width": int(width),
        "encoding": encoding,
        "is_bigendian": 0,
        "step": int(width * channels),
        "data": np.ascontiguousarray(out).tobytes(),
    }


def _jpeg_truncated(buf: np.ndarray) -> bool:
    """True for JPEG data without its end-of-image marker (libjpeg pads those with grey)."""
    if buf.size < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return False
    tail = buf[-64:].tobytes()
    return b"\xff\xd9" not in tail


def compressed_to_rgb(format: str, data) -> np.ndarray:  # noqa: A002 - the message field's name
    """A sensor_msgs/CompressedImage (JPEG or PNG) as `[H, W, 3]` uint8 RGB.

    `format` is the message's format string ("jpeg", "png", "rgb8; jpeg compressed bgr8", ...);
    the codec is detected from the data, so it is informational. Colour images match cv_bridge
    (`imdecode` then BGR2RGB); mono images expand to grey RGB, 16-bit ones scaled to 8 bits as
    for mono16. Raises `ImageDecodeError` (`corrupt_compressed`, `bad_size`).
    """
    buf = _as_bytes_array(data)
    if buf.size == 0:
        raise ImageDecodeError("corrupt_compressed", f"empty {format or 'compressed'} image")
    if buf.size > MAX_BYTES:
        raise ImageDecodeError("bad_size", f"{buf.size} bytes is over the {MAX_BYTES} limit")
    if _jpeg_truncated(buf):
        raise ImageDecodeError("corrupt_compressed", "JPEG data ends without its EOI marker")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageDecodeError("corrupt_compressed", f"cannot decode {format!r}: {exc}") from exc
    if image is None or image.size == 0:
        raise ImageDecodeError("corrupt_compressed", f"cannot decode {format!r} data")
    _check_size(image.shape[0], image.shape[1])
    if image.dtype == np.uint16:
        image = _scale16(image)
    elif image.dtype != np.uint8:
        raise ImageDecodeError("corrupt_compressed", f"unexpected pixel type {image.dtype}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    codes = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    if channels not in codes:
        raise ImageDecodeError("corrupt_compressed", f"unexpected channel count {channels}")
    return cv2.cvtColor(image, codes[channels])


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """Encode an RGB frame for a sensor_msgs/CompressedImage: `(format, data)`.

    `fmt` is "jpeg" (quality 1-100) or "png"; the format string is the one
    compressed_image_transport writes ("rgb8; jpeg compressed bgr8").
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] uint8 RGB, got {rgb.shape} {rgb.dtype}")
    fmt = fmt.lower()
    params: Sequence[int]
    if fmt in ("jpeg", "jpg"):
        fmt, ext = "jpeg", ".jpg"
        params = [cv2.IMWRITE_JPEG_QUALITY, int(np.clip(quality, 1, 100))]
    elif fmt == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]
    else:
        raise ValueError(f"unsupported compressed format {fmt!r}; use 'jpeg' or 'png'")
    ok, encoded = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode {fmt}")
    return f"rgb8; {fmt} compressed bgr8", encoded.tobytes()
