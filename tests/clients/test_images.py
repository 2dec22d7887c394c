"""load_image on what users have: formats, grayscale, RGBA, 16-bit, EXIF rotation, bad files."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from clients.images import ImageError, find_images, load_image


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(31, 47, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_formats_round_trip_as_rgb(tmp_path, rgb, ext):
    path = tmp_path / f"x{ext}"
    Image.fromarray(rgb).save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (31, 47, 3)
    assert np.array_equal(out, rgb)


def test_jpeg_and_bytes_and_bgr_files(tmp_path):
    # Smooth, channel-distinct content (JPEG keeps it): red ramps across, green down, blue flat.
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.dstack([xx * 4, yy * 5, np.full_like(xx, 40)]).astype(np.uint8)
    path = tmp_path / "x.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100])
    out = load_image(path.read_bytes())
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 3  # RGB order: swapped channels would be ~80 off


def test_grayscale_rgba_palette_and_16bit(tmp_path, rgb):
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    assert out.shape == (31, 47, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))

    rgba = np.dstack([rgb, np.full(gray.shape, 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png"), rgb)  # alpha dropped, colour untouched

    # Palette PNG: every pixel is its palette entry's colour, never the index as a grey level.
    palette = np.array([[250, 10, 10], [10, 240, 20], [0, 0, 255], [77, 77, 77], [3, 200, 180]], np.uint8)
    index = rgb[..., 0] % len(palette)
    im = Image.fromarray(index, "P")
    im.putpalette(palette.flatten().tolist())
    im.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P"
    assert np.array_equal(load_image(tmp_path / "p.png"), palette[index])

    deep = gray.astype(np.uint16) * 256 + 200  # 16-bit grey: the high byte is the 8-bit value
    Image.fromarray(deep).save(tmp_path / "d16.png")
    out = load_image(tmp_path / "d16.png")
    assert out.dtype == np.uint8 and np.array_equal(out[..., 1], gray)

    deep_rgb = rgb.astype(np.uint16) * 257  # 16-bit colour (cv2 writes it BGR)
    cv2.imwrite(str(tmp_path / "c16.png"), cv2.cvtColor(deep_rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(load_image(tmp_path / "c16.png"), rgb)


def test_exif_orientation_is_applied(tmp_path):
    # A 20x40 (h x w) image, left half black and right half white, tagged "rotate 90 CW"
    # (orientation 6): viewers show it 40 tall and 20 wide, with white at the bottom.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, 20:] = 255
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    im.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)
    assert out[:15].mean() < 30 and out[25:].mean() > 225


def test_bad_files_raise_image_error_naming_the_file(tmp_path, rgb):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        load_image(empty)

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg at all" * 10)
    with pytest.raises(ImageError, match=r"junk\.jpg: not a readable image"):
        load_image(junk)

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpg: corrupt or truncated"):
        load_image(truncated)

    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)

    big = tmp_path / "big.png"
    Image.fromarray(rgb).save(big)
    with pytest.raises(ImageError, match=r"big\.png: 47x31 .* above the limit"):
        load_image(big, max_pixels=1000)

    Image.fromarray(rgb[..., 0].astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ImageError, match="floating-point"):
        load_image(tmp_path / "f.tif")


def _png_claiming(tmp_path, side: int) -> bytes:
    """A valid PNG header that claims side x side pixels, with one pixel of data."""
    import zlib

    Image.new("L", (1, 1)).save(tmp_path / "tiny.png")
    data = bytearray((tmp_path / "tiny.png").read_bytes())
    data[16:24] = side.to_bytes(4, "big") * 2  # IHDR width, height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # IHDR CRC
    return bytes(data)


@pytest.mark.filterwarnings("error")  # nothing may leak as a warning: each outcome is the image's error
def test_pixel_limit_is_checked_before_decoding(tmp_path):
    # The limit must trigger from the header alone, without allocating the claimed pixels.
    with pytest.raises(ImageError, match=r"huge\.png: 12000x12000 = 144\.0 Mpx is above the limit"):
        load_image(_png_claiming(tmp_path, 12000), name="huge.png")
    with pytest.raises(ImageError, match=r"bomb\.png: too large"):  # past PIL's own bomb guard
        load_image(_png_claiming(tmp_path, 100000), name="bomb.png", max_pixels=10**12)
    # Between PIL's warning threshold (~89 Mpx) and its refusal: the warning is the image's reason.
    with pytest.raises(ImageError, match=r"warned\.png: too large: above the image library's decompression-bomb"):
        load_image(_png_claiming(tmp_path, 10000), name="warned.png", max_pixels=10**12)


def test_library_warnings_are_reasons_or_log_lines_never_stderr(tmp_path, caplog, recwarn):
    # A palette PNG with byte transparency: PIL warns while converting; the pixels are fine.
    index = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    im = Image.fromarray(index, "P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    im.save(tmp_path / "t.png", transparency=bytes([0, 128, 255]))  # partial alpha: kept as bytes
    with Image.open(tmp_path / "t.png") as check:
        assert isinstance(check.info["transparency"], bytes)
    with caplog.at_level("WARNING", logger="clients.images"):
        out = load_image(tmp_path / "t.png")
    assert out[0, :3].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]  # alpha dropped, colours kept
    assert [str(w.message) for w in recwarn] == []  # nothing for the warnings machinery to print
    (record,) = caplog.records  # one line, naming the file
    assert record.getMessage().startswith(f"{tmp_path / 't.png'}: Palette images with Transparency")


def test_find_images(tmp_path, rgb):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "notes.txt", "sub/c.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images([tmp_path])] == ["a.JPG", "b.png"]
    assert [p.name for p in find_images([tmp_path], recursive=True)] == ["a.JPG", "b.png", "c.png"]
    assert find_images([tmp_path / "notes.txt"]) == [tmp_path / "notes.txt"]  # explicit files are kept
