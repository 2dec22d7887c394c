"""Result files: label PNGs (8/16-bit), overlays, depth millimetres + preview, alpha."""

import cv2
import numpy as np

from clients.contract import ModelContract, Resize, default_palette
from clients.outputs import depth_millimetres, overlay, write_prediction
from clients.prediction import Prediction


def read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_segmentation_labels_and_overlay(tmp_path):
    c = ModelContract(name="s", task="segmentation", resize=Resize("letterbox", 8, 8), num_classes=3,
                      palette=((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    labels = np.array([[0, 1], [2, 255]], np.uint8)
    image = np.full((2, 2, 3), 100, np.uint8)
    files = write_prediction(Prediction("segmentation", labels=labels), c, tmp_path / "sub" / "cat", image, True)
    assert [f.name for f in files] == ["cat.png", "cat_overlay.png"]
    assert np.array_equal(read(files[0]), labels)
    ov = cv2.cvtColor(read(files[1]), cv2.COLOR_BGR2RGB)
    assert ov[0, 0, 0] > 150 and ov[0, 1, 1] > 150 and ov[1, 0, 2] > 150  # tinted by the palette
    assert ov[1, 1].tolist() == [100, 100, 100]  # ignore stays the photo
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files


def test_labels_past_255_classes_are_16_bit(tmp_path):
    c = ModelContract(name="s", task="segmentation", resize=Resize("letterbox", 8, 8), num_classes=300)
    labels = np.array([[0, 299]], np.int32)
    (f,) = write_prediction(Prediction("segmentation", labels=labels), c, tmp_path / "x")
    out = read(f)
    assert out.dtype == np.uint16 and out.tolist() == [[0, 299]]


def test_overlay_uses_default_palette_shape():
    pal = np.asarray(default_palette(4))
    out = overlay(np.zeros((3, 3, 3), np.uint8), np.full((3, 3), 3, np.uint8), pal)
    assert out.shape == (3, 3, 3) and out.dtype == np.uint8


def test_depth_png_is_millimetres_with_preview(tmp_path):
    c = ModelContract(name="d", task="depth", resize=Resize("stride", stride=8), output_kind="depth")
    depth = np.array([[0.5, 2.25], [0.0, np.nan]], np.float32)
    files = write_prediction(Prediction("depth", depth=depth), c, tmp_path / "room")
    assert [f.name for f in files] == ["room.png", "room_preview.png"]
    mm = read(files[0])
    assert mm.dtype == np.uint16 and mm.tolist() == [[500, 2250], [0, 0]]  # 0 = no depth
    preview = read(files[1])
    assert preview.shape == (2, 2, 3) and preview[0, 0].sum() > preview[0, 1].sum()  # near is brighter
    rel = depth_millimetres(np.array([[1.0, 3.0]], np.float32), relative=True)
    assert rel.tolist() == [[1, 65535]]


def test_alpha_png(tmp_path):
    c = ModelContract(name="m", task="matting", resize=Resize("letterbox", 8, 8), output_kind="alpha")
    alpha = np.array([[0.0, 0.5, 1.0, 1.2]], np.float32)
    (f,) = write_prediction(Prediction("matting", alpha=alpha), c, tmp_path / "a")
    assert read(f).tolist() == [[0, 128, 255, 255]]
