"""Exact checks on clients/letterbox.py that mutation testing showed were missing.

Each test pins a behaviour a surviving mutmut mutant changed (`make mutation`, docs/testing.md).
The interpolation check shrinks by 4, where INTER_AREA (the mean of each 4x4 block) and
INTER_LINEAR (the mean of the 2x2 centre) differ; at a factor of exactly 2 the two are equal, so
a test that shrinks by 2 cannot tell which one ran. Expected values come from plain numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from clients.letterbox import Letterbox, resize_nearest


def test_shrinking_averages_whole_blocks():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 16, 3)).astype(np.float32)
    lb = Letterbox.fit((32, 16), target=(8, 8))
    assert lb.resized == (8, 4)
    block_means = img.reshape(8, 4, 4, 4, 3).mean(axis=(1, 3))  # (8, 4, 3): INTER_AREA at an integer factor
    out = lb.apply_image(img, pad_value=-1)
    np.testing.assert_allclose(out[lb.content], block_means, rtol=0, atol=1e-3)
    assert (out[:, :2] == -1).all() and (out[:, 6:] == -1).all()


def test_enlarging_is_bilinear_not_area():
    img = np.array([[0, 40], [80, 120]], np.float32)
    lb = Letterbox.fit((2, 2), target=(4, 4))
    # pixel-centre bilinear: rows/cols at source coordinates -0.25, 0.25, 0.75, 1.25 (clamped)
    expected = np.array([[0, 10, 30, 40], [20, 30, 50, 60], [60, 70, 90, 100], [80, 90, 110, 120]], np.float32)
    np.testing.assert_allclose(lb.apply_image(img), expected, rtol=0, atol=1e-4)


def test_single_channel_images_and_maps_keep_their_channel_axis():
    img = np.arange(64 * 48, dtype=np.float32).reshape(64, 48, 1)
    lb = Letterbox.fit((64, 48), target=(16, 16))
    out = lb.apply_image(img)
    assert out.shape == (16, 16, 1)
    np.testing.assert_allclose(out[lb.content][..., 0], img[..., 0].reshape(16, 4, 12, 4).mean(axis=(1, 3)), atol=1e-2)
    back = lb.invert_map(np.ones((16, 16, 1), np.float32))
    assert back.shape == (64, 48, 1) and np.allclose(back, 1)


def test_resize_nearest_keeps_channels():
    arr = np.arange(2 * 2 * 3).reshape(2, 2, 3)
    out = resize_nearest(arr, (4, 2))
    assert out.shape == (4, 2, 3)
    assert out[:, :, 1].tolist() == [[1, 4], [1, 4], [7, 10], [7, 10]]


def test_invert_map_of_five_channels_equals_each_channel_alone():
    rng = np.random.default_rng(1)
    lb = Letterbox.fit((20, 30), target=(16, 16))
    maps = rng.random((16, 16, 5), dtype=np.float32)
    back = lb.invert_map(maps)
    for c in range(5):
        np.testing.assert_allclose(back[..., c], lb.invert_map(maps[..., c]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fields, message", [
    (dict(original=(0, 4)), "letterbox sizes must be positive"),
    (dict(original=(4, 0)), "letterbox sizes must be positive"),
    (dict(resized=(0, 4)), "letterbox sizes must be positive"),
    (dict(resized=(4, 0)), "letterbox sizes must be positive"),
    (dict(offset=(-1, 0)), r"content \(4, 4\) at \(-1, 0\) does not fit in \(8, 8\)"),
    (dict(offset=(0, -1)), "does not fit"),
    (dict(offset=(5, 0)), "does not fit"),
    (dict(offset=(0, 5)), "does not fit"),
])
def test_inconsistent_geometry_is_refused(fields, message):
    good = dict(scale=1.0, offset=(2, 2), original=(4, 4), resized=(4, 4), padded=(8, 8))
    Letterbox(**good)
    Letterbox(**{**good, "offset": (4, 4)})  # touching the far edges still fits
    with pytest.raises(ValueError, match=message):
        Letterbox(**{**good, **fields})


def test_fit_refuses_bad_targets_and_strides_with_their_message():
    with pytest.raises(ValueError, match=r"^Letterbox\.fit needs exactly one of target=\(H, W\) or stride=N$"):
        Letterbox.fit((10, 10), target=(8, 8), stride=8)
    for target in [(0, 8), (8, 0)]:
        with pytest.raises(ValueError, match=rf"letterbox target must be positive, got {target[0]}x{target[1]}"):
            Letterbox.fit((10, 10), target=target)
    with pytest.raises(ValueError, match="stride must be positive, got 0"):
        Letterbox.fit((10, 10), stride=0)


@pytest.mark.parametrize("call, what, hw", [
    ("apply_image", "image", "10x20"), ("apply_labels", "label map", "10x20"),
    ("invert_labels", "label map", "32x32"), ("invert_map", "map", "32x32"),
])
def test_shape_errors_name_what_was_wrong(call, what, hw):
    lb = Letterbox.fit((10, 20), target=(32, 32))
    with pytest.raises(ValueError, match=rf"^{what} has shape \(3, 3\), expected {hw} \(H, W\[, C\]\)$"):
        getattr(lb, call)(np.zeros((3, 3), np.uint8))


def test_image_padding_defaults_to_zero():
    lb = Letterbox.fit((2, 4), target=(4, 4))
    out = lb.apply_image(np.full((2, 4), 9, np.uint8))
    assert out[lb.content].tolist() == [[9] * 4] * 2
    assert out[0].tolist() == [0] * 4 and out[3].tolist() == [0] * 4
