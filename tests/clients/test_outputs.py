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
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in files)  # readable by other users (e.g. a web server)


def test_labels_past_255_classes_are_16_bit(tmp_path):
    c = ModelContract(name="s", task="segmentation", resize=Resize("letterbox", 8, 8), num_classes=300)
    labels = np.array([[0, 299]], np.int32)
    (f,) = write_prediction(Prediction("segmentation", labels=labels), c, tmp_path / "x")
    out = read(f)
    assert out.dtype == np.uint16 and out.tolist() == [[0, 299]]


def test_default_palette_overlay_values(tmp_path):
    # The VOC colours, written out (not derived from the code under test): background black,
    # then (128,0,0), (0,128,0), (128,128,0), (0,0,128), ...
    assert default_palette(6) == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128))
    pal = np.asarray(default_palette(4))
    image = np.full((2, 3, 3), 200, np.uint8)
    labels = np.array([[0, 1, 2], [3, 255, 4]], np.uint8)  # 255 (ignore) and 4 (past the palette) stay the photo
    out = overlay(image, labels, pal)
    # Half and half: 0.5 * 200 + 0.5 * 128 = 164, 0.5 * 200 + 0.5 * 0 = 100.
    assert out.tolist() == [[[100, 100, 100], [164, 100, 100], [100, 164, 100]],
                            [[164, 164, 100], [200, 200, 200], [200, 200, 200]]]
    # A contract without a palette gets the same colours in the written overlay (RGB order kept).
    c = ModelContract(name="s", task="segmentation", resize=Resize("letterbox", 8, 8), num_classes=4)
    files = write_prediction(Prediction("segmentation", labels=np.array([[1, 2], [3, 0]], np.uint8)), c,
                             tmp_path / "v", np.full((2, 2, 3), 200, np.uint8), True)
    rgb = cv2.cvtColor(read(files[1]), cv2.COLOR_BGR2RGB)
    assert rgb.tolist() == [[[164, 100, 100], [100, 164, 100]], [[164, 164, 100], [100, 100, 100]]]


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


def test_disparity_png_is_stretched_and_its_preview_keeps_near_bright(tmp_path):
    # A disparity model (MiDaS, DPT, Depth Anything): large values are near, and there is no unit.
    c = ModelContract(name="d", task="depth", resize=Resize("stride", stride=8), output_kind="depth",
                      depth_kind="disparity")
    disparity = np.array([[4.0, 1.0], [2.0, 1.0]], np.float32)  # (0, 0) is the nearest pixel
    files = write_prediction(Prediction("depth", depth=disparity, depth_kind="disparity"), c, tmp_path / "room")
    stretched = read(files[0])
    assert stretched.dtype == np.uint16 and stretched[0, 0] == 65535 and stretched[0, 1] == 1  # not "4 mm"
    preview = read(files[1]).astype(int)
    assert preview[0, 0].sum() > preview[1, 0].sum() > preview[0, 1].sum()  # near is brighter


def test_postprocess_says_which_depth_kind_it_returns():
    from clients.pipeline import postprocess, preprocess

    c = ModelContract(name="d", task="depth", resize=Resize("letterbox", 8, 8), output_kind="depth",
                      depth_kind="disparity")
    batch, transforms = preprocess([np.zeros((8, 8, 3), np.uint8)], c)
    (pred,) = postprocess({"depth": np.ones((1, 8, 8), np.float32)}, transforms, c)
    assert pred.depth_kind == "disparity"


def test_alpha_png(tmp_path):
    c = ModelContract(name="m", task="matting", resize=Resize("letterbox", 8, 8), output_kind="alpha")
    alpha = np.array([[0.0, 0.5, 1.0, 1.2]], np.float32)
    (f,) = write_prediction(Prediction("matting", alpha=alpha), c, tmp_path / "a")
    assert read(f).tolist() == [[0, 128, 255, 255]]
