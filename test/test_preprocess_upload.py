"""The GPU preprocessing path's upload buffers (run on the CPU with ordinary memory) and the
model-dtype output of ``preprocess``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_perception.models.preprocess import PinnedUploader, preprocess


def test_uploader_reuses_one_buffer_per_batch_shape():
    rng = np.random.default_rng(0)
    up = PinnedUploader("cpu", max_buffers=2)
    assert up.pin is False  # page-locked memory only for CUDA
    a = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    b = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    first = up.upload(a).clone()
    second = up.upload(b)
    assert up.allocations == 1  # same (B, H, W): the buffer was reused
    assert torch.equal(first, torch.from_numpy(np.stack(a)))
    assert torch.equal(second, torch.from_numpy(np.stack(b)))
    up.upload(a[:1])
    up.upload([rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)])
    assert up.allocations == 3 and len(up._buffers) == 2  # the oldest shape was let go
    up.upload(b)
    assert up.allocations == 4


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_preprocess_writes_the_model_dtype(dtype):
    frame = np.random.default_rng(1).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    ref, lbs = preprocess([frame], (160, 128))
    for frames in ([frame], [torch.from_numpy(frame).float()]):  # OpenCV and torch paths
        got, got_lbs = preprocess(frames, (160, 128), dtype=dtype)
        assert got.dtype == dtype and got_lbs == lbs
        # one rounding step of the dtype at the largest normalised value (|x| < 2.7), plus the
        # OpenCV-vs-torch grey level (0.018) for the torch path
        assert float((got.float() - ref).abs().max()) <= 2.7 * float(torch.finfo(dtype).eps) \
            + 0.02


def test_without_opencv_cpu_frames_take_the_torch_path(monkeypatch):
    from vit_perception.models import preprocess as pre

    frames = [np.random.default_rng(2).integers(0, 256, (120, 200, 3), dtype=np.uint8)]
    with_cv2, lbs = preprocess(frames, (160, 128))
    monkeypatch.setattr(pre, "have_opencv", lambda: False)
    without, lbs2 = preprocess(frames, (160, 128))
    assert lbs == lbs2 and not torch.equal(with_cv2, without)  # really the other path
    one_level = 1.0 / (255 * 0.224)
    assert float((with_cv2 - without).abs().max()) <= one_level + 1e-5
