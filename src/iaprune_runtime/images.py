"""Image files (PNG, JPEG, BMP, GIF, TIFF, WebP, ... via Pillow) as MNIST-style grayscale samples,
or as RGB samples for a model trained on a folder of colour images.

Pillow is optional: deploy imports it only when an image is read, so bundles of .npy inputs need
torch and numpy alone. An image becomes what the model saw in training: one grayscale channel,
a light drawing on a dark background, resized to the model's input size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .files import first_line

LIGHT_BACKGROUND = 127  # a border median above this is a light background (dark-on-light image)
BORDER_FRACTION = 0.1  # the border band examined: this fraction of the shorter side (>= 1 pixel)
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# Images above this many pixels (once a JPEG's reduced decoding is chosen) are refused: well
# below Pillow's decompression-bomb limit (~89 M), far above any photo a digit comes from.
MAX_PIXELS = 2**24  # 16.8 M, e.g. 4096 x 4096
PIXELS_ENV = "IAPRUNE_MAX_PIXELS"  # raises (or lowers) it for every reader
KEEP = 2  # a decoded image keeps at least KEEP times the target size before the final resize


class ImageSupportMissing(ImportError):
    """An image was given but Pillow, which deploy reads images with, is not installed."""


def pixel_limit(given: int | None = None) -> int:
    """The largest image (in pixels) read: `given` (--max-pixels), else $IAPRUNE_MAX_PIXELS,
    else MAX_PIXELS."""
    if given is not None:
        return given
    text = os.environ.get(PIXELS_ENV)
    if not text:
        return MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"${PIXELS_ENV} must be a positive whole number of pixels, got {text!r}")
    return int(text)


def check_pixels(path: str | os.PathLike, size: tuple[int, int], limit: int) -> None:
    """Refuse a (width, height) image above `limit` pixels before it is decoded."""
    if size[0] * size[1] > limit:
        raise ValueError(f"{path}: {size[0]}x{size[1]} image, above the limit of {limit:,} "
                         f"pixels (raise it with --max-pixels N or ${PIXELS_ENV})")


def draft(image, size: tuple[int, int] | None) -> None:
    """Ask a JPEG decoder for a 1/2, 1/4 or 1/8 scale still at least KEEP x `size` (h, w)
    on both sides (rotated or not); other formats ignore it."""
    if size is not None:
        side = KEEP * max(size)
        image.draft(None, (side, side))


def shrink_factor(height: int, width: int, size: tuple[int, int]) -> int:
    """The box-averaging factor of shrink: the largest that keeps KEEP x `size` (h, w); when
    the image is whole blocks of the target (700 = 25 x 28), the largest of those that keeps
    the blocks whole, so the final area resize gives the full image's block means."""
    most = min(height // (KEEP * size[0]), width // (KEEP * size[1]))
    if height % size[0] or width % size[1]:
        return max(most, 1)
    blocks = (height // size[0], width // size[1])
    return max((f for f in range(1, most + 1) if blocks[0] % f == 0 and blocks[1] % f == 0),
               default=1)


def shrink(image, size: tuple[int, int] | None):
    """`image` box-averaged by shrink_factor (at least KEEP x `size` (h, w) stays), so the
    final area resize reads a small array; the same area average up to rounding."""
    if size is None:
        return image
    factor = shrink_factor(image.height, image.width, size)
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # a mode Pillow cannot reduce: read it at full size
        return image


def load_pixels(path: str | os.PathLike, size: tuple[int, int] | None = None,
                max_pixels: int | None = None) -> np.ndarray:
    """Decode an image file with Pillow to (height, width, channels) uint8.

    Channels: 1 (grayscale), 3 (RGB) or 4 (RGBA, for images with transparency). 16-bit
    grayscale keeps its high byte; EXIF rotation (phone photos) is applied; animations give
    their first frame. With a target `size` (h, w) a large image is decoded reduced (JPEG) or
    box-averaged (others) to a few times that size; above `max_pixels` (pixel_limit) it is
    refused before decoding.
    """
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise ImageSupportMissing(f"{path}: reading images needs Pillow: pip install pillow "
                                  f"(.npy arrays need nothing more)") from None
    limit = pixel_limit(max_pixels)
    try:
        with warnings.catch_warnings():  # our own pixel limit replaces Pillow's bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                draft(opened, size)
                check_pixels(path, opened.size, limit)
                image = _normal(ImageOps.exif_transpose(opened))
                return _array(shrink(image, size))
    except Image.UnidentifiedImageError:
        raise ValueError(f"{path}: not an image Pillow can read, nor a .npy array") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: cannot decode the image ({first_line(exc)})") from None


def _normal(image):
    """A decoded Pillow image in one of the modes _array reads: 16/32-bit grayscale and L as
    they are, anything else RGBA (with transparency) or RGB (palettes expanded)."""
    if image.mode in ("I", "F", "L") or image.mode.startswith("I;16"):
        return image
    alpha = image.mode in ALPHA_MODES or "transparency" in image.info
    return image.convert("RGBA" if alpha else "RGB")


def _array(image) -> np.ndarray:
    """(height, width, channels) uint8 of a _normal image (see load_pixels)."""
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)[..., None]
    if image.mode in ("RGB", "RGBA"):
        return np.asarray(image, dtype=np.uint8)
    # 16-bit (or 32-bit) grayscale: Pillow's convert("L") would clip at 255
    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return (values.astype(np.uint32) >> 8).astype(np.uint8)[..., None]


def to_gray(image: np.ndarray) -> np.ndarray:
    """(h, w, channels) uint8 -> (h, w) uint8: ITU-R 601 luma for colour.

    Transparent pixels take a background that contrasts with what is drawn: black behind light
    strokes (MNIST's look), white behind dark ones (a black digit drawn on a transparent canvas).
    """
    channels = image.shape[2]
    values = image.astype(np.float64)
    if channels in (3, 4):
        gray = values[..., 0] * 0.299 + values[..., 1] * 0.587 + values[..., 2] * 0.114
    else:
        gray = values[..., 0]
    if channels in (2, 4):
        alpha = values[..., -1] / 255.0
        ink = (gray * alpha).sum() / max(alpha.sum(), 1e-12)  # mean brightness of the drawing
        background = 255.0 if ink < 128 else 0.0
        gray = gray * alpha + background * (1.0 - alpha)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def has_light_background(gray: np.ndarray) -> bool:
    """Whether the border of a (h, w) uint8 image is mostly light: a dark drawing on light paper,
    the opposite of MNIST's light digit on black."""
    h, w = gray.shape
    k = max(1, int(min(h, w) * BORDER_FRACTION))
    border = np.concatenate([gray[:k].ravel(), gray[-k:].ravel(),
                             gray[:, :k].ravel(), gray[:, -k:].ravel()])
    return float(np.median(border)) > LIGHT_BACKGROUND


def resize(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a (h, w) uint8 image: area averaging when shrinking, bilinear when enlarging."""
    if gray.shape == size:
        return gray
    t = torch.from_numpy(gray.astype(np.float32))[None, None]  # (1, 1, h, w)
    if gray.shape[0] >= size[0] and gray.shape[1] >= size[1]:
        out = F.interpolate(t, size=size, mode="area")
    else:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return out[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def channels(image, gray: bool, size: tuple[int, int]) -> np.ndarray:
    """A Pillow image as (C, H, W) uint8, the way image folders are read in training: palettes
    through RGBA, then L (gray) or RGB (alpha dropped), resized (bilinear) to size (w, h)."""
    from PIL import Image

    if image.mode == "P":  # through RGBA: Pillow's way for palettes with transparency
        image = image.convert("RGBA")
    image = image.convert("L" if gray else "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[None] if gray else arr.transpose(2, 0, 1)


def read_rgb(path: str | os.PathLike, size: tuple[int, int], max_pixels: int | None = None
             ) -> np.ndarray:
    """An image file as (3, h, w) uint8 RGB for a model of colour images, size (h, w): decoded,
    converted and resized exactly as its training folder was; images above `max_pixels`
    (pixel_limit) are refused before they are decoded."""
    try:
        from PIL import Image
    except ImportError:
        raise ImageSupportMissing(f"{path}: reading images needs Pillow: pip install pillow "
                                  f"(.npy arrays need nothing more)") from None
    try:
        with Image.open(path) as image:
            check_pixels(path, image.size, pixel_limit(max_pixels))
            image.load()
            return channels(image, False, (size[1], size[0]))
    except Image.UnidentifiedImageError:
        raise ValueError(f"{path}: not an image Pillow can read, nor a .npy array") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot decode the image ({first_line(exc)})") from None


def read_image(path: str | os.PathLike, size: tuple[int, int], invert: bool | None = None,
               max_pixels: int | None = None) -> tuple[np.ndarray, str | None]:
    """An image file as a (size) uint8 grayscale image, light drawing on dark, and a note.

    invert=None inverts when the background is light (the note says so), True always inverts,
    False never does. Images above `max_pixels` (pixel_limit) are refused.
    """
    path = Path(path)
    gray = to_gray(load_pixels(path, size, max_pixels))
    note = None
    if invert is None:
        invert = has_light_background(gray)
        if invert:
            note = (f"{path}: light background, so the image was inverted to a light drawing on "
                    f"black as in training (--no-invert keeps it as it is)")
    if invert:
        gray = 255 - gray
    return resize(gray, size), note
