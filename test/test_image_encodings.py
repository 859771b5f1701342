"""image_encodings: every encoding against an independent reference, layouts, error kinds."""

from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from vit_perception.image_encodings import (
    ERROR_KINDS,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image_fields,
)

H, W = 6, 8


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def msg(encoding, array_, step=None, is_bigendian=0, data=None):
    """Message fields for a packed [H, W(, C)] array (rows padded when step is larger)."""
    h, w = array_.shape[:2]
    row = array_.reshape(h, -1).view(np.uint8)
    if step is None:
        step = row.shape[1]
    padded = np.full((h, step), 0xAB, np.uint8)
    padded[:, : row.shape[1]] = row
    return dict(
        encoding=encoding,
        height=h,
        width=w,
        step=step,
        is_bigendian=is_bigendian,
        data=padded.tobytes() if data is None else data,
    )


def decode(fields):
    return image_to_rgb(**fields)


def gray3(g):
    return np.repeat(g[..., None], 3, axis=2)


# ---- the plain colour and mono encodings -----------------------------------------------------


def test_rgb8_is_zero_copy(rgb):
    fields = msg("rgb8", rgb)
    out = decode(fields)
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(fields["data"], np.uint8))
    assert not out.flags.writeable  # a view of the message's immutable bytes


def test_rgb8_padded_rows_are_a_strided_view(rgb):
    fields = msg("rgb8", rgb, step=W * 3 + 5)
    out = decode(fields)
    np.testing.assert_array_equal(out, rgb)
    assert np.shares_memory(out, np.frombuffer(fields["data"], np.uint8))


@pytest.mark.parametrize("step_pad", [0, 3])
def test_channel_orders(rgb, rng, step_pad):
    alpha = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)
    cases = {
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], alpha], axis=2),
        "8UC3": rgb[..., ::-1],  # read as bgr8 (cv_bridge's cvtColorForDisplay guess)
        "8UC4": np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }
    for encoding, packed in cases.items():
        step = packed.shape[1] * packed.shape[2] + step_pad
        np.testing.assert_array_equal(decode(msg(encoding, packed, step)), rgb, err_msg=encoding)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8(rng, encoding):
    g = rng.integers(0, 256, (H, W), dtype=np.uint8)
    np.testing.assert_array_equal(decode(msg(encoding, g, step=W + 2)), gray3(g))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("big", [0, 1])
def test_mono16_scales_like_cv_bridge(rng, encoding, big):
    # cv_bridge: GRAY2RGB, then convertTo(CV_8U, 255/65535), i.e. round(x / 257).
    x = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    x[0, :4] = [0, 128, 129, 65535]  # around the rounding edges
    packed = x.astype(">u2" if big else "<u2")
    expected = ((x.astype(np.int64) + 128) // 257).astype(np.uint8)
    out = decode(msg(encoding, packed, step=W * 2 + 4, is_bigendian=big))
    np.testing.assert_array_equal(out, gray3(expected))
    assert list(expected[0, :4]) == [0, 0, 1, 255]


def test_mono16_passthrough_is_native_endian(rng):
    x = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    for big, packed in ((0, x.astype("<u2")), (1, x.astype(">u2"))):
        fields = msg("mono16", packed, is_bigendian=big)
        out = image_to_array(**fields)
        assert out.dtype == np.uint16 and out.dtype.isnative
        np.testing.assert_array_equal(out, x)
    # Native order and no padding: a view of the message data.
    fields = msg("mono16", x.astype("=u2"), is_bigendian=int(np.little_endian is False))
    assert np.shares_memory(image_to_array(**fields), np.frombuffer(fields["data"], np.uint8))


# ---- YUV 4:2:2 -------------------------------------------------------------------------------


def yuv422_reference(y, u, v):
    """OpenCV's YUV422 -> RGB (BT.601 limited range, 20-bit fixed point), written out in numpy.

    y [H, W], u/v [H, W/2] uint8; the constants are OpenCV's ITUR_BT_601_* coefficients.
    """
    cy, cub, cug, cvg, cvr, shift = 1220542, 2116026, -409993, -852492, 1673527, 20
    half = 1 << (shift - 1)
    yy = np.maximum(0, y.astype(np.int64) - 16) * cy
    uu = np.repeat(u.astype(np.int64) - 128, 2, axis=1)
    vv = np.repeat(v.astype(np.int64) - 128, 2, axis=1)
    r = (yy + half + cvr * vv) >> shift
    g = (yy + half + cvg * vv + cug * uu) >> shift
    b = (yy + half + cub * uu) >> shift
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "encoding,order",
    [("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")],
)
def test_yuv422(rng, encoding, order):
    y = rng.integers(0, 256, (H, W), dtype=np.uint8)
    u = rng.integers(0, 256, (H, W // 2), dtype=np.uint8)
    v = rng.integers(0, 256, (H, W // 2), dtype=np.uint8)
    packed = np.empty((H, W, 2), np.uint8)
    chroma = np.stack([u, v], axis=2).reshape(H, W)  # U0 V0 U1 V1 ... one per pixel
    if order == "uyvy":  # U0 Y0 V0 Y1
        packed[..., 0], packed[..., 1] = chroma, y
    else:  # Y0 U0 Y1 V0
        packed[..., 0], packed[..., 1] = y, chroma
    out = decode(msg(encoding, packed, step=W * 2 + 6))
    np.testing.assert_array_equal(out, yuv422_reference(y, u, v))


@pytest.mark.parametrize("width", [7, 3, 1])
@pytest.mark.parametrize("encoding,order", [("yuv422", "uyvy"), ("yuyv", "yuyv")])
def test_yuv422_odd_width(rng, encoding, order, width):
    """The full pairs decode as at an even width; the odd last pixel borrows the V sample of the
    pair to its left (128 when there is none), as the module docstring says."""
    pairs = width // 2
    y = rng.integers(0, 256, (H, width + 1), dtype=np.uint8)
    u = rng.integers(0, 256, (H, pairs + 1), dtype=np.uint8)
    v = rng.integers(0, 256, (H, pairs + 1), dtype=np.uint8)
    if pairs == 0:
        v[:, -1] = 128
    else:
        v[:, -1] = v[:, -2]
    chroma = np.stack([u, v], axis=2).reshape(H, 2 * (pairs + 1))[:, :width]
    packed = np.empty((H, width, 2), np.uint8)
    if order == "uyvy":
        packed[..., 0], packed[..., 1] = chroma, y[:, :width]
    else:
        packed[..., 0], packed[..., 1] = y[:, :width], chroma
    y[:, width] = y[:, width - 1]  # the borrowed pixel repeats the last Y (cropped anyway)
    expected = yuv422_reference(y, u, v)[:, :width]
    out = decode(msg(encoding, packed, step=width * 2 + 2))
    assert out.shape == (H, width, 3)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("encoding", ["rgb16", "bgr16", "rgba16", "bgra16"])
@pytest.mark.parametrize("big", [0, 1])
def test_16_bit_colour_scales_like_cv_bridge(rng, encoding, big):
    """cv_bridge: the colour conversion, then convertTo(CV_8U, 255/65535) = round(x / 257)."""
    c = 4 if encoding.endswith("a16") else 3
    x = rng.integers(0, 65536, (H, W, c), dtype=np.uint16)
    x[0, 0, :3] = [128, 129, 65535]  # around the rounding edges
    rgb16 = x[..., :3] if encoding.startswith("rgb") else x[..., 2::-1]
    expected = ((rgb16.astype(np.int64) + 128) // 257).astype(np.uint8)
    packed = x.astype(">u2" if big else "<u2")
    out = decode(msg(encoding, packed, step=W * c * 2 + 4, is_bigendian=big))
    np.testing.assert_array_equal(out, expected)


def test_yuv422_round_trip_of_a_flat_colour():
    rgb = np.empty((4, 8, 3), np.uint8)
    rgb[:] = (200, 120, 40)
    uyvy = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)
    out = decode(msg("yuv422", uyvy))
    assert np.abs(out.astype(int) - rgb).max() <= 3


# ---- Bayer -----------------------------------------------------------------------------------

# The ROS pattern names the 2x2 block at (0, 0); cv_bridge's codes (cv_bridge.cpp).
BAYER = {
    "bayer_rggb8": ("RGGB", cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": ("BGGR", cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": ("GBRG", cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": ("GRBG", cv2.COLOR_BayerGB2RGB),
}


def mosaic(rgb, pattern):
    """Sample an RGB image through a Bayer filter whose top-left 2x2 block reads `pattern`."""
    out = np.empty(rgb.shape[:2], np.uint8)
    for i, letter in enumerate(pattern):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(letter)]
    return out


@pytest.mark.parametrize("encoding", sorted(BAYER))
def test_bayer_recovers_the_true_colours(encoding):
    # Physical check, independent of OpenCV's naming: a flat colour seen through the named
    # filter must demosaic back to that colour (away from the border).
    pattern, _ = BAYER[encoding]
    rgb = np.empty((10, 12, 3), np.uint8)
    rgb[:] = (210, 90, 30)
    out = decode(msg(encoding, mosaic(rgb, pattern), step=12 + 4))
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])


@pytest.mark.parametrize("encoding", sorted(BAYER))
def test_bayer_matches_cv_bridge_code(rng, encoding):
    pattern, code = BAYER[encoding]
    yy, xx = np.mgrid[0:24, 0:32]
    smooth = np.stack([xx * 7, yy * 9, (xx + yy) * 4], axis=2).clip(0, 255).astype(np.uint8)
    raw = mosaic(smooth, pattern)
    out = decode(msg(encoding, raw))
    np.testing.assert_array_equal(out, cv2.cvtColor(raw, code))  # bilinear, exactly
    # A smooth image demosaics close to itself: the pattern mapping is right.
    err = np.abs(out[2:-2, 2:-2].astype(int) - smooth[2:-2, 2:-2])
    assert err.max() <= 10


# ---- data containers, publishing, compressed --------------------------------------------------


def test_data_containers(rgb):
    raw = rgb.tobytes()
    for data in (
        raw,
        bytearray(raw),
        memoryview(raw),
        array.array("B", raw),
        np.frombuffer(raw, np.uint8),
        list(raw),
    ):
        fields = msg("rgb8", rgb, data=data)
        np.testing.assert_array_equal(decode(fields), rgb, err_msg=type(data).__name__)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_publish_round_trip(rgb, encoding):
    fields = rgb_to_image_fields(rgb, encoding)
    assert isinstance(fields["data"], bytes)
    assert fields["step"] * fields["height"] == len(fields["data"])
    np.testing.assert_array_equal(decode(fields), rgb)


def test_publish_mono(rng, rgb):
    g = rng.integers(0, 256, (H, W), dtype=np.uint8)
    fields = rgb_to_image_fields(g, "mono8")
    assert fields["step"] == W
    np.testing.assert_array_equal(image_to_array(**fields), g)
    gray = image_to_array(**rgb_to_image_fields(rgb, "mono8"))
    np.testing.assert_array_equal(gray, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    with pytest.raises(ValueError):
        rgb_to_image_fields(rgb, "yuv422")


def test_png_round_trip_is_exact(rgb):
    fmt, data = rgb_to_compressed(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8" and isinstance(data, bytes)
    np.testing.assert_array_equal(compressed_to_rgb(fmt, data), rgb)


def test_jpeg_matches_cv_bridge_path():
    yy, xx = np.mgrid[0:64, 0:80]
    rgb = np.stack([xx * 3, yy * 3, 255 - xx * 2], axis=2).astype(np.uint8)
    fmt, data = rgb_to_compressed(rgb, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8"
    out = compressed_to_rgb(fmt, data)
    # cv_bridge: imdecode(IMREAD_ANYCOLOR) -> BGR -> COLOR_BGR2RGB.
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR)
    np.testing.assert_array_equal(out, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert np.abs(out.astype(int) - rgb).mean() < 2.0


def test_mono_and_16bit_png(rng):
    g = rng.integers(0, 256, (H, W), dtype=np.uint8)
    _, png = cv2.imencode(".png", g)
    np.testing.assert_array_equal(compressed_to_rgb("mono8; png compressed", png), gray3(g))
    x = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    _, png16 = cv2.imencode(".png", x)
    expected = ((x.astype(np.int64) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(
        compressed_to_rgb("16UC1; png compressed", png16), gray3(expected)
    )


# ---- errors ----------------------------------------------------------------------------------


def kind_of(fn, *args, **kwargs):
    with pytest.raises(ImageDecodeError) as info:
        fn(*args, **kwargs)
    assert info.value.kind in ERROR_KINDS
    return info.value.kind


def test_error_kinds(rgb):
    good = msg("rgb8", rgb)
    assert kind_of(decode, {**good, "encoding": "32FC1"}) == "unsupported_encoding"
    assert kind_of(decode, {**good, "encoding": "nv12"}) == "unsupported_encoding"
    assert kind_of(decode, {**good, "data": good["data"][:-1]}) == "truncated_data"
    assert kind_of(decode, {**good, "data": b""}) == "truncated_data"
    assert kind_of(decode, {**good, "step": W * 3 - 1}) == "step_mismatch"
    assert kind_of(decode, {**good, "data": good["data"] + b"\0" * 24}) == "step_mismatch"
    mono16 = msg("mono16", np.zeros((H, W), np.uint16))
    assert kind_of(decode, {**mono16, "step": W * 2 + 1}) == "step_mismatch"
    assert kind_of(decode, {**good, "width": 0, "step": 0, "data": b""}) == "bad_size"
    assert kind_of(decode, {**good, "height": 0}) == "bad_size"
    assert kind_of(decode, {**good, "height": 20000, "width": 4, "step": 12}) == "bad_size"
    assert (
        kind_of(decode, {**good, "height": 16384, "width": 16384, "step": 16384 * 3}) == "bad_size"
    )  # 768 MB
    assert kind_of(decode, msg("bayer_rggb8", np.zeros((1, 4), np.uint8))) == "bad_size"


def test_corrupt_compressed(rgb):
    _, jpeg = rgb_to_compressed(np.tile(rgb, (8, 8, 1)), "jpeg")
    assert kind_of(compressed_to_rgb, "jpeg", b"not an image at all") == "corrupt_compressed"
    assert kind_of(compressed_to_rgb, "jpeg", b"") == "corrupt_compressed"
    assert kind_of(compressed_to_rgb, "jpeg", jpeg[: len(jpeg) // 2]) == "corrupt_compressed"
    _, png = rgb_to_compressed(rgb, "png")
    assert kind_of(compressed_to_rgb, "png", png[: len(png) // 2]) == "corrupt_compressed"


def test_supported_encodings_all_decode(rng):
    for encoding in SUPPORTED_ENCODINGS:
        if encoding in ("mono16", "16UC1"):
            packed = rng.integers(0, 65536, (4, 6), dtype=np.uint16)
        elif encoding.endswith("16"):
            c = 4 if encoding.endswith("a16") else 3
            packed = rng.integers(0, 65536, (4, 6, c), dtype=np.uint16)
        else:
            channels = {"rgb": 3, "bgr": 3, "8UC3": 3, "yuv": 2, "uyv": 2, "yuy": 2}
            c = next((v for k, v in channels.items() if encoding.startswith(k)), 1)
            c = 4 if encoding in ("rgba8", "bgra8", "8UC4") else c
            packed = rng.integers(0, 256, (4, 6, c) if c > 1 else (4, 6), dtype=np.uint8)
        out = decode(msg(encoding, packed))
        assert out.shape == (4, 6, 3) and out.dtype == np.uint8, encoding
