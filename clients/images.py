"""Load what users actually have as an RGB uint8 HxWx3 array, or fail with a per-image error.

PNG/JPEG/BMP/TIFF/WebP; grayscale -> 3 channels; alpha dropped; 16-bit scaled to 8-bit;
EXIF orientation applied; a pixel-count limit checked from the header before decoding.
What the image library warns about never reaches stderr: a decompression-bomb warning makes the
image fail (ImageError naming the file and the warning), other warnings (corrupt EXIF, odd
palettes: the pixels are fine) are logged once, naming the file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# 64 Mpx (8192x8192): far above any model input, below PIL's decompression-bomb threshold
# (Image.MAX_IMAGE_PIXELS, ~89 Mpx: it warns above, which fails the image, and refuses above twice
# that), which caps how high max_pixels can usefully go.
DEFAULT_MAX_PIXELS = 8192 * 8192

Source = Union[str, os.PathLike, bytes]
log = logging.getLogger(__name__)
# warnings.catch_warnings swaps process-wide state, so captures take turns. Only the cheap steps
# run under it (header parsing, EXIF, mode conversion); the pixel decode itself runs outside.
_WARNINGS_LOCK = threading.Lock()


class ImageError(ValueError):
    """One image that cannot be used; the message names it and says why."""


def _read_bytes(source: Source, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{name}: file not found") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a directory, not an image") from None
        except OSError as exc:
            raise ImageError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    return data


def _to_rgb8(im: Image.Image, name: str) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB."""
    mode = im.mode
    if mode.startswith("I"):  # 16-bit ("I;16*") or 32-bit int grayscale: keep the high byte
        arr = np.asarray(im).astype(np.int64)
        gray = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
    elif mode == "F":
        raise ImageError(f"{name}: floating-point images are not supported; save it as 8- or 16-bit")
    elif mode in ("L", "1", "LA", "La"):  # grayscale (alpha dropped)
        gray = np.asarray(im.convert("L"))
    else:  # RGB, RGBA (alpha dropped, not composited), P, CMYK, YCbCr, ...
        return np.ascontiguousarray(np.asarray(im.convert("RGB") if mode != "RGB" else im))
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


@contextlib.contextmanager
def _captured(caught: list) -> Iterator[None]:
    """Collect the warnings raised inside into `caught` instead of printing them."""
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            caught.extend(records)


def _settle(caught: list, name: str) -> None:
    """What PIL warned about while reading `name`: a decompression bomb is an ImageError, anything
    else one log line naming the file; warnings from elsewhere are passed on untouched."""
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            raise ImageError(f"{name}: too large: above the image library's decompression-bomb threshold "
                             f"({w.message}); downscale it first")
    for w in caught:
        if "PIL" in Path(w.filename).parts or w.filename == __file__:  # PIL's, or PIL's blaming its caller
            log.warning("%s: %s", name, w.message)
        else:  # another thread's warning, caught while the lock was held: hand it back
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def load_image(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS, name: Optional[str] = None) -> np.ndarray:
    """Decode a file path or encoded bytes into an RGB uint8 (H, W, 3) array.

    Raises ImageError (naming the file) for a missing, empty, corrupt, unsupported or
    too-large image; never returns a partial image.
    """
    name = name or (f"<{len(source)} bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source))
    data = _read_bytes(source, name)
    caught: list = []
    try:
        with _captured(caught):
            im = Image.open(io.BytesIO(data))  # lazy: reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: too large ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (unknown format or corrupt header)") from None
    except Exception as exc:  # PIL raises many types for unreadable data
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError(
            f"{name}: {w}x{h} = {w * h / 1e6:.1f} Mpx is above the limit of {max_pixels / 1e6:.1f} Mpx; "
            "downscale it or raise max_pixels (--max-pixels)"
        )
    if w < 1 or h < 1:
        raise ImageError(f"{name}: image has no pixels ({w}x{h})")
    _settle(caught, name)
    caught.clear()
    try:
        with _captured(caught):
            # The decode is inside too: TIFF and EXIF tags are read lazily, and their warnings
            # ("Tag data larger than file") surface here. The lock serialises decoding between
            # threads, the price of warnings that never leak to stderr.
            im.load()
            # EXIF orientation 2..8 (phone photos) -> upright pixels, as every viewer shows them.
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb8(im, name)
        _settle(caught, name)
        return rgb
    except ImageError:
        raise
    except Exception as exc:  # truncated/corrupt data surfaces only while decoding
        raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


def find_images(inputs: Iterable[Source], recursive: bool = False) -> list[Path]:
    """Files given explicitly are kept as they are (whatever their extension); folders
    contribute their image files (by extension), sorted, descending only with `recursive`."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(sorted(p for p in path.glob(pattern)
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            found.append(path)  # a missing file is reported per image by load_image
    return found
