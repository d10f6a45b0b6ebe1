"""Image decoding for the host data sources: file or bytes -> uint8 [H, W, 3] RGB, EXIF-oriented.

A file that is missing, unreadable, truncated or not an image raises `BrokenImageError`, which names
the file and the problem; sources pass it on so that the loading pipeline can skip and log it.
"""

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class BrokenImageError(Exception):
    """An image file that cannot be used: missing, unreadable, truncated, not an image, wrong size.

    Attributes:
      path: the image file (or a description of where the bytes came from).
      reason: what is wrong with it, in words.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"broken image {path}: {reason}")
        self.path = str(path)
        self.reason = reason


def decode_image(data: bytes, path: str = "<bytes>") -> np.ndarray:
    """Decodes encoded image bytes (JPEG, PNG, ...) to uint8 [H, W, 3] RGB.

    EXIF orientation is applied, so H, W are the size a viewer shows. Grayscale (8 or 16 bit),
    grayscale+alpha, RGBA, CMYK and palette images become RGB; alpha is dropped (palette
    transparency included).
    `path` only names the source in the error message.
    """
    if not data:
        raise BrokenImageError(path, "cannot decode: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            # load() forces the full decode here, so truncated files fail now, not later.
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16"):
                # 16-bit grayscale: Pillow's convert("RGB") clips to 255 instead of rescaling.
                gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            if image.mode == "P":
                # Palette images may carry transparency; going through RGBA keeps their colours right.
                image = image.convert("RGBA")
            rgb = image.convert("RGB")
    except UnidentifiedImageError:
        # Pillow's message names its in-memory buffer (<_io.BytesIO object at 0x...>), not the file.
        raise BrokenImageError(
            path, "cannot decode: not an image file (none of the formats Pillow reads: JPEG, PNG, WebP, TIFF, BMP, ...)"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise BrokenImageError(path, f"cannot decode: {error}") from error
    return np.asarray(rgb, dtype=np.uint8)


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """Reads an image file's bytes; a missing or unreadable file raises `BrokenImageError`."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise BrokenImageError(str(path), f"cannot read file: {error.strerror or error}") from error


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Reads and decodes an image file to uint8 [H, W, 3] RGB, EXIF-oriented."""
    return decode_image(read_image_bytes(path), str(path))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file as a viewer shows it (EXIF orientation applied), without decoding pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(ImageOps.ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError) as error:
        raise BrokenImageError(str(path), f"cannot open: {error}") from error
    # Orientations 5-8 rotate by 90 degrees, which swaps the sides.
    if orientation in (5, 6, 7, 8):
        return width, height
    return height, width
