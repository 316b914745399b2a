"""Turning untrusted uploaded bytes into a model-ready image, or a clear refusal.

Students upload whatever they find: huge files, non-images, animated GIFs, 16-bit PNGs, images with
alpha. Everything is checked before decoding (byte size), while decoding (Pillow's decompression-
bomb guard, pixel count) and after (mode conversion to the dataset's channels, resizing).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_BYTES = 5 * 2**20
MAX_PIXELS = 16_000_000
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")


class UploadError(ValueError):
    """The upload cannot be used; the message says why in words a student understands."""


def image_from_bytes(data: bytes, size: tuple[int, int], channels: int) -> np.ndarray:
    """Decode ``data`` to a uint8 ``[H, W, channels]`` array of the given (H, W) size.

    Colour becomes grayscale for MNIST-like models and grayscale becomes RGB for CIFAR; alpha is
    composited on black (MNIST's background); animations use their first frame; 16-bit images are
    scaled to 8 bits.
    """
    if not isinstance(data, (bytes, bytearray)) or len(data) == 0:
        raise UploadError("the file is empty")
    if len(data) > MAX_BYTES:
        raise UploadError(f"the file is {len(data) / 2**20:.1f} MB; the limit is {MAX_BYTES // 2**20} MB")
    if channels not in (1, 3):
        raise UploadError("channels must be 1 or 3")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in ALLOWED_FORMATS:
                raise UploadError(f"{img.format} images are not accepted; use PNG or JPEG")
            if img.width * img.height > MAX_PIXELS:
                raise UploadError(f"the image is {img.width}x{img.height} pixels; the limit is "
                                  f"{MAX_PIXELS // 1_000_000} megapixels")
            img.seek(0)  # first frame of an animation
            img.load()
    except UploadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise UploadError(f"this is not an image we can read ({type(exc).__name__})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise UploadError(f"the image is corrupt or truncated ({exc})") from None
    return _to_array(img, size, channels)


def _to_array(img, size: tuple[int, int], channels: int) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.max() > 0 else 1.0
        img = Image.fromarray((arr / top * 255).astype(np.uint8), "L")
    if "A" in img.getbands() or img.mode == "P":
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, rgba)
    img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr
