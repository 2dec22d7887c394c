"""Letterbox geometry and its inverse: hypothesis over sizes 1x1 .. 2000x3000, any aspect ratio.

Geometry is checked on sizes alone (no arrays), so it can range over huge images cheaply; the
pixel round trips use arrays and fewer, smaller examples, plus a handful of large ones.
"""

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from clients.contract import Resize
from clients.letterbox import Letterbox, resize_nearest

sides = st.integers(1, 3000)
sizes = st.tuples(sides, sides).filter(lambda hw: min(hw) <= 2000)  # up to 2000x3000 either way
targets = st.tuples(st.integers(1, 1024), st.integers(1, 1024))
strides = st.sampled_from([1, 2, 8, 14, 16, 32, 64])


def check_geometry(lb: Letterbox) -> None:
    (h, w), (rh, rw), (ph, pw), (top, left) = lb.original, lb.resized, lb.padded, lb.offset
    assert 1 <= rh <= ph and 1 <= rw <= pw
    # Centred, exact integer offsets; the content lies inside the canvas.
    assert (top, left) == ((ph - rh) // 2, (pw - rw) // 2)
    rows, cols = lb.content
    assert (rows.stop - rows.start, cols.stop - cols.start) == (rh, rw)
    assert rows.stop <= ph and cols.stop <= pw


@settings(max_examples=400, deadline=None)
@given(sizes, targets)
def test_fixed_target_geometry(orig, target):
    lb = Letterbox.fit(orig, target=target)
    check_geometry(lb)
    (h, w), (rh, rw), (th, tw) = orig, lb.resized, target
    assert lb.padded == target
    # The limiting side fills the target exactly; the other keeps the aspect ratio to <= half a
    # pixel (or is clamped to 1 pixel / the target).
    assert rh == th or rw == tw
    s = min(th / h, tw / w)
    assert lb.scale == pytest.approx(s, rel=1e-12)
    assert abs(rh - h * s) <= 0.5 + 1e-9 or rh in (1, th)
    assert abs(rw - w * s) <= 0.5 + 1e-9 or rw in (1, tw)


@settings(max_examples=300, deadline=None)
@given(sizes, strides, st.one_of(st.none(), st.integers(1, 4000)))
def test_stride_geometry(orig, stride, max_side):
    lb = Letterbox.fit(orig, stride=stride, max_side=max_side)
    check_geometry(lb)
    (ph, pw), (rh, rw) = lb.padded, lb.resized
    assert ph % stride == 0 and pw % stride == 0
    assert 0 <= ph - rh < stride and 0 <= pw - rw < stride
    if max_side is None or max(orig) <= max_side:
        assert lb.resized == tuple(orig) and lb.scale == 1.0  # pad only
    else:
        assert max(lb.resized) == max_side


def random_labels(rng, hw, classes=20):
    return rng.integers(0, classes, size=hw, dtype=np.uint8)


@settings(max_examples=60, deadline=None)
@given(st.tuples(st.integers(1, 300), st.integers(1, 300)), st.integers(0, 400), st.integers(0, 400),
       st.integers(0, 2**32 - 1))
def test_label_round_trip_exact_without_downscaling(orig, extra_h, extra_w, seed):
    rng = np.random.default_rng(seed)
    target = (orig[0] + extra_h, orig[1] + extra_w)  # never smaller: no downscaling
    lb = Letterbox.fit(orig, target=target)
    labels = random_labels(rng, orig)
    forward = lb.apply_labels(labels)
    assert forward.shape == target
    assert np.array_equal(lb.invert_labels(forward), labels)


@settings(max_examples=40, deadline=None)
@given(st.tuples(st.integers(1, 400), st.integers(1, 400)), targets, st.integers(0, 2**32 - 1))
def test_padding_is_ignore_and_inverse_shape(orig, target, seed):
    rng = np.random.default_rng(seed)
    lb = Letterbox.fit(orig, target=target)
    labels = random_labels(rng, orig)  # ids < 20: 255 can only come from padding
    forward = lb.apply_labels(labels, ignore_index=255)
    pad = np.ones(forward.shape, bool)
    pad[lb.content] = False
    assert (forward[pad] == 255).all()
    assert (forward[lb.content] != 255).all()
    back = lb.invert_labels(forward)
    assert back.shape == orig
    assert (back != 255).all()  # the crop removes every padded pixel, even after downscaling
    assert set(np.unique(back)) <= set(np.unique(labels))


@settings(max_examples=30, deadline=None)
@given(st.tuples(st.integers(1, 300), st.integers(1, 300)), strides, st.integers(0, 2**32 - 1))
def test_stride_round_trip_exact(orig, stride, seed):
    rng = np.random.default_rng(seed)
    lb = Letterbox.fit(orig, stride=stride)
    labels = random_labels(rng, orig)
    assert np.array_equal(lb.invert_labels(lb.apply_labels(labels)), labels)
    depth = rng.random(orig, dtype=np.float32)
    padded = np.zeros(lb.padded, np.float32)
    padded[lb.content] = depth
    assert np.array_equal(lb.invert_map(padded), depth)  # no resize: the crop is exact


def centre_rule(src: int, dst: int) -> np.ndarray:
    """Source index of each destination pixel by the pixel-centre rule, in plain floats: an
    oracle independent of resize_nearest's integer maths (exact for sizes this small)."""
    return np.floor((np.arange(dst) + 0.5) * src / dst).astype(np.int64)


@settings(max_examples=60, deadline=None)
@given(st.tuples(st.integers(2, 500), st.integers(2, 500)), st.floats(0.05, 0.95), st.floats(0.05, 0.95),
       st.integers(0, 2**32 - 1))
def test_label_inverse_after_shrinking_follows_the_pixel_centre_rule(orig, fh, fw, seed):
    target = (max(1, int(orig[0] * fh)), max(1, int(orig[1] * fw)))  # smaller on both sides
    lb = Letterbox.fit(orig, target=target)
    labels = random_labels(np.random.default_rng(seed), orig)
    back = lb.invert_labels(lb.apply_labels(labels))
    (h, w), (rh, rw) = orig, lb.resized
    rows = centre_rule(h, rh)[centre_rule(rh, h)]  # original row -> network row -> original row
    cols = centre_rule(w, rw)[centre_rule(rw, w)]
    assert np.array_equal(back, labels[np.ix_(rows, cols)])


def test_shrunk_label_blocks_come_back_in_place():
    # 4x6 blocks of 50x50 px, each its own class, shrunk 5x: away from the block borders (one
    # network pixel = 5 px) every pixel gets its own block's class back; a shifted or flipped
    # inverse would move whole blocks.
    classes = np.arange(24, dtype=np.uint8).reshape(4, 6)
    labels = np.kron(classes, np.ones((50, 50), np.uint8))  # (200, 300)
    lb = Letterbox.fit(labels.shape, target=(40, 64))  # resized 40x60, padded 2 columns each side
    assert lb.resized == (40, 60) and lb.offset == (0, 2)
    back = lb.invert_labels(lb.apply_labels(labels))
    y, x = np.mgrid[0:200, 0:300]
    interior = (np.minimum(y % 50, 49 - y % 50) >= 5) & (np.minimum(x % 50, 49 - x % 50) >= 5)
    assert np.array_equal(back[interior], labels[interior])
    assert np.mean(back == labels) > 0.9


@pytest.mark.parametrize("orig,target", [((2000, 3000), (2000, 3008)), ((3000, 2000), (3100, 2100)),
                                         ((1, 3000), (7, 3001)), ((2000, 1), (2000, 5)), ((1, 1), (1024, 768))])
def test_large_and_degenerate_round_trips(orig, target):
    rng = np.random.default_rng(0)
    labels = random_labels(rng, orig, classes=200)
    lb = Letterbox.fit(orig, target=target)
    assert np.array_equal(lb.invert_labels(lb.apply_labels(labels)), labels)


def test_int32_labels_past_255_classes():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 1000, size=(37, 53)).astype(np.int32)
    lb = Letterbox.fit(labels.shape, target=(100, 100))
    forward = lb.apply_labels(labels, ignore_index=255)
    assert forward.dtype == np.int32
    assert np.array_equal(lb.invert_labels(forward), labels)


def test_resize_nearest_is_pixel_centred():
    # 2 -> 4 duplicates each pixel; 4 -> 2 picks the second of each pair (centre at 1.0 + 0.5 -> 1).
    a = np.array([[1, 2]], np.uint8)
    assert resize_nearest(a, (1, 4)).tolist() == [[1, 1, 2, 2]]
    assert resize_nearest(np.array([[1, 2, 3, 4]], np.uint8), (1, 2)).tolist() == [[2, 4]]


def test_apply_image_interpolation_and_pad_value():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, size=(120, 80, 3), dtype=np.uint8)
    shrink = Letterbox.fit(img.shape[:2], target=(60, 60))
    out = shrink.apply_image(img, pad_value=114)
    assert out.shape == (60, 60, 3)
    expected = cv2.resize(img, (40, 60), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out[shrink.content], expected)
    pad = np.ones((60, 60), bool)
    pad[shrink.content] = False
    assert (out[pad] == 114).all()
    grow = Letterbox.fit(img.shape[:2], target=(240, 300))
    expected = cv2.resize(img, (160, 240), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(grow.apply_image(img)[grow.content], expected)


def test_invert_map_is_bilinear_and_keeps_channels():
    rng = np.random.default_rng(3)
    lb = Letterbox.fit((50, 70), target=(64, 64))
    padded = rng.random((64, 64), dtype=np.float32)
    expected = cv2.resize(padded[lb.content], (70, 50), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(lb.invert_map(padded), expected)
    logits = rng.random((64, 64, 7), dtype=np.float32)  # more channels than one cv2 call takes
    back = lb.invert_map(logits)
    assert back.shape == (50, 70, 7)
    assert np.array_equal(back[..., 5], cv2.resize(logits[lb.content][..., 5], (70, 50)))


def test_for_resize_and_errors():
    assert Letterbox.for_resize((10, 20), Resize("letterbox", 32, 32)).padded == (32, 32)
    assert Letterbox.for_resize((10, 20), Resize("stride", stride=8)).padded == (16, 24)
    with pytest.raises(ValueError, match="exactly one"):
        Letterbox.fit((10, 10))
    with pytest.raises(ValueError, match="empty image"):
        Letterbox.fit((0, 10), target=(8, 8))
    lb = Letterbox.fit((10, 20), target=(32, 32))
    with pytest.raises(ValueError, match="expected 10x20"):
        lb.apply_image(np.zeros((20, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="expected 32x32"):
        lb.invert_labels(np.zeros((10, 20), np.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        lb.apply_labels(np.zeros((10, 20), np.int8), ignore_index=255)
