"""JPEG helpers shared by the stages (frames and crops travel as JPEG).

Images are RGB ``uint8`` NumPy arrays of shape ``(height, width, 3)``
everywhere in Vigil; these two functions are the only place that turns them
into bytes and back.

Decoding is bounded: ``decode_jpeg`` refuses bytes beyond ``max_bytes`` and
images whose header declares more than ``max_pixels`` before any pixel is
decoded (Pillow's ``Image.open`` reads the header only), so a small file that
would decode to gigabytes (a decompression bomb) costs nothing. Pillow's own
guard, ``Image.MAX_IMAGE_PIXELS``, is set to ``IMAGE_PIXELS_CEILING``, above
which no setting may put a cap: it covers any other decoding path too.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from runtime.settings import IMAGE_PIXELS_CEILING

Image.MAX_IMAGE_PIXELS = IMAGE_PIXELS_CEILING


class ImageTooLarge(ValueError):
    """The bytes, or the pixels their header declares, exceed the cap: refused without decoding."""


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode an RGB ``uint8`` HxWx3 array (or an HxW greyscale one) as JPEG."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"encode_jpeg: expected a uint8 numpy array, got {type(image).__name__} {getattr(image, 'dtype', '')}")
    if image.ndim == 3 and image.shape[2] == 3:
        mode = "RGB"
    elif image.ndim == 2:
        mode = "L"
    else:
        raise ValueError(f"encode_jpeg: expected shape (H, W, 3) or (H, W), got {image.shape}")
    if not 1 <= quality <= 100:
        raise ValueError(f"encode_jpeg: quality must be within 1..100, got {quality}")
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode=mode).save(out, format="JPEG", quality=int(quality))
    return out.getvalue()


def decode_jpeg(data: bytes, *, max_pixels: int = IMAGE_PIXELS_CEILING, max_bytes: int | None = None) -> np.ndarray:
    """Decode JPEG (or any image Pillow reads) bytes to an RGB ``uint8`` HxWx3 array.

    Raises ``ImageTooLarge`` when ``data`` is longer than ``max_bytes`` or its header declares more than
    ``max_pixels`` pixels (checked before decoding), ``ValueError`` when the bytes are not a readable image.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageTooLarge(f"decode_jpeg: {len(data)} bytes, more than the {max_bytes} allowed")
    try:
        with Image.open(io.BytesIO(data)) as img:  # lazy: the header only
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"decode_jpeg: the header declares {width} x {height} = {width * height} pixels, "
                                    f"more than the {max_pixels} allowed; not decoded")
            img.load()
            rgb = img.convert("RGB") if img.mode != "RGB" else img
            return np.asarray(rgb, dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:  # past twice Pillow's ceiling: refused by Image.open itself
        raise ImageTooLarge(f"decode_jpeg: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"decode_jpeg: not a readable image ({len(data)} bytes): {exc}") from exc
