"""preprocess/postprocess driven by the contract, with hand-made output tensors (no server)."""

import numpy as np
import pytest

from clients.contract import ModelContract, Resize
from clients.letterbox import Letterbox
from clients.pipeline import check_image, normalise, postprocess, preprocess


def seg(**kw) -> ModelContract:
    fields = dict(name="seg", task="segmentation", resize=Resize("letterbox", 48, 64), num_classes=5,
                  pad_value=114, output_kind="labels")
    fields.update(kw)
    return ModelContract(**fields)


def rng_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_preprocess_uint8_letterbox_batch():
    images = [rng_image(30, 40, 1), rng_image(100, 20, 2), rng_image(48, 64, 3)]
    batch, transforms = preprocess(images, seg())
    assert batch.shape == (3, 48, 64, 3) and batch.dtype == np.uint8
    for img, t, x in zip(images, transforms, batch):
        assert t == Letterbox.fit(img.shape[:2], target=(48, 64))
        assert np.array_equal(x, t.apply_image(img, 114))


def test_preprocess_float32_is_normalised_nchw():
    c = seg(input_dtype="float32")
    img = rng_image(20, 30)
    batch, (t,) = preprocess([img], c)
    assert batch.shape == (1, 3, 48, 64) and batch.dtype == np.float32
    raw = t.apply_image(img, 114)
    y, x = t.offset[0] + 3, t.offset[1] + 4
    for ch in range(3):
        want = (raw[y, x, ch] / 255.0 - c.mean[ch]) / c.std[ch]
        assert batch[0, ch, y, x] == pytest.approx(want, abs=1e-5)
    pad = (114 / 255.0 - c.mean[0]) / c.std[0]
    assert batch[0, 0, 0, 0] == pytest.approx(pad, abs=1e-5)  # padding normalised like a pixel
    assert np.array_equal(batch, normalise(raw[None], c))


def test_grayscale_accepted_and_bad_images_rejected():
    gray = np.full((10, 12), 77, np.uint8)
    assert check_image(gray).shape == (10, 12, 3)
    for bad in (np.zeros((10, 12, 3), np.float32), np.zeros((10, 12, 4), np.uint8),
                np.zeros((10, 12, 1), np.uint8), np.zeros((0, 12, 3), np.uint8), np.zeros(5, np.uint8)):
        with pytest.raises(ValueError, match="expected uint8 RGB"):
            check_image(bad, "photo.jpg")
    with pytest.raises(ValueError, match="load_image"):
        check_image("photo.jpg")


def test_stride_mode_batches_only_equal_padded_sizes():
    c = ModelContract(name="d", task="depth", resize=Resize("stride", stride=16), output_kind="depth")
    batch, ts = preprocess([rng_image(30, 40), rng_image(32, 33)], c)  # both pad to 32x48
    assert batch.shape == (2, 32, 48, 3) and ts[0].padded == ts[1].padded
    with pytest.raises(ValueError, match="one per request"):
        preprocess([rng_image(30, 40), rng_image(70, 40)], c)
    big, (t,) = preprocess([rng_image(300, 100)], c, max_side=64)
    assert t.resized == (64, 21) and big.shape == (1, 64, 32, 3)


def test_labels_and_confidence_invert_to_original_size():
    c = seg(output_kind="labels+confidence")
    gts = [np.random.default_rng(i).integers(0, 5, size=hw, dtype=np.uint8) for i, hw in enumerate([(30, 40), (48, 10)])]
    _, ts = preprocess([rng_image(*g.shape) for g in gts], c)
    labels = np.stack([t.apply_labels(g) for t, g in zip(ts, gts)])  # what a perfect model answers
    confidence = np.full(labels.shape, 0.75, np.float32)
    preds = postprocess({"labels": labels, "confidence": confidence}, ts, c)
    for p, g in zip(preds, gts):
        assert np.array_equal(p.labels, g)  # enlarged only: the inverse is exact
        assert p.confidence.shape == g.shape and np.allclose(p.confidence, 0.75)
        assert p.depth is None and p.shape == g.shape


def test_logits_only_are_argmaxed_at_network_resolution():
    c = seg(output_kind="logits")
    gt = np.random.default_rng(4).integers(0, 5, size=(20, 30), dtype=np.uint8)
    _, (t,) = preprocess([rng_image(20, 30)], c)
    net = t.apply_labels(gt, ignore_index=0)
    logits = np.eye(5, dtype=np.float32)[net].transpose(2, 0, 1)[None]  # (1, C, H, W) one-hot
    (p,) = postprocess({"logits": logits}, [t], c)
    assert np.array_equal(p.labels, gt)
    assert p.logits.shape == (5, 20, 30)
    assert np.array_equal(p.logits.argmax(0), gt)


def test_depth_scaled_to_metres_and_alpha_to_unit_range():
    d = ModelContract(name="d", task="depth", resize=Resize("stride", stride=8), output_kind="depth", depth_scale=0.5)
    _, (t,) = preprocess([rng_image(13, 21)], d)
    out = np.zeros((1,) + t.padded, np.float32)
    out[0][t.content] = 4.0  # padding holds 0: it must be cropped away
    (p,) = postprocess({"depth": out}, [t], d)
    assert p.depth.shape == (13, 21) and np.all(p.depth == 2.0)

    m = ModelContract(name="m", task="matting", resize=Resize("letterbox", 32, 32), output_kind="alpha",
                      alpha_range="0-255")
    _, (t,) = preprocess([rng_image(40, 16)], m)
    alpha = np.zeros((1, 32, 32), np.uint8)
    alpha[0][t.content] = 255
    (p,) = postprocess({"alpha": alpha}, [t], m)
    assert p.alpha.dtype == np.float32 and p.alpha.shape == (40, 16) and np.all(p.alpha == 1.0)


def test_postprocess_rejects_wrong_outputs():
    c = seg()
    _, ts = preprocess([rng_image(10, 10)], c)
    with pytest.raises(ValueError, match="'labels' is missing"):
        postprocess({"depth": np.zeros((1, 48, 64), np.float32)}, ts, c)
    with pytest.raises(ValueError, match=r"shape \(1, 32, 32\), expected \(1, 48, 64\)"):
        postprocess({"labels": np.zeros((1, 32, 32), np.uint8)}, ts, c)


def test_labels_invert_to_their_places_after_shrinking():
    # Stride mode shrinking a 240x160 image to max_side 48 (5x): a perfect model's labels come back
    # at 240x160 with every block interior in place (a wrong crop or offset would move blocks).
    c = ModelContract(name="s", task="segmentation", resize=Resize("stride", stride=20), num_classes=6,
                      output_kind="labels")
    gt = np.kron(np.arange(6, dtype=np.uint8).reshape(3, 2), np.ones((80, 80), np.uint8))  # (240, 160)
    _, (t,) = preprocess([rng_image(240, 160)], c, max_side=48)
    assert t.resized == (48, 32) and t.padded == (60, 40) and t.offset == (6, 4)  # padded around
    (p,) = postprocess({"labels": t.apply_labels(gt)[None]}, [t], c)
    y, x = np.mgrid[0:240, 0:160]
    interior = (np.minimum(y % 80, 79 - y % 80) >= 5) & (np.minimum(x % 80, 79 - x % 80) >= 5)
    assert p.labels.shape == gt.shape and np.array_equal(p.labels[interior], gt[interior])
